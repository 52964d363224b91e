/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/log: level names and parsing, the threshold, the key=value line format (one line per
 * call even when the message holds quotes or newlines), and the rate limiter's suppressed count.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static char g_path[64];
static int g_saved = -1;
static char g_text[8192];

/* Send stderr to a temp file until capture_end. */
static void capture_begin(void)
{
	snprintf(g_path, sizeof(g_path), "/tmp/test_log.%d.txt", (int)getpid());
	int fd = open(g_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	g_saved = dup(STDERR_FILENO);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

static int capture_end(void)
{
	int fd, lines = 0;
	ssize_t n;

	dup2(g_saved, STDERR_FILENO);
	close(g_saved);
	fd = open(g_path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, g_text, sizeof(g_text) - 1);
	close(fd);
	unlink(g_path);
	g_text[n > 0 ? n : 0] = '\0';
	for (char *p = g_text; *p; p++)
		lines += *p == '\n';
	return lines;
}

static void test_levels(void **state)
{
	enum log_level l;

	assert_int_equal(log_level_parse("debug", &l), 0);
	assert_int_equal(l, LOG_LEVEL_DEBUG);
	assert_int_equal(log_level_parse("WARN", &l), 0);
	assert_int_equal(l, LOG_LEVEL_WARN);
	assert_int_equal(log_level_parse("off", &l), 0);
	assert_int_equal(l, LOG_LEVEL_OFF);
	assert_int_equal(log_level_parse("loud", &l), -EINVAL);
	assert_string_equal(log_level_name(LOG_LEVEL_ERROR), "error");
	assert_string_equal(log_level_name((enum log_level)42), "?");
	log_set_level(LOG_LEVEL_WARN);
	assert_int_equal(log_get_level(), LOG_LEVEL_WARN);
}

static void test_line_format(void **state)
{
	log_set_level(LOG_LEVEL_INFO);
	log_set_process("tester");
	capture_begin();
	log_debug("store", "hidden", "k=%d", 1);
	log_info("store", "unit spilled", "seq=%u layer=%u", 3u, 7u);
	log_error("wire", "bad \"quoted\"\nmessage", "path=%s", "/tmp/a\nb");
	log_write(LOG_LEVEL_WARN, NULL, NULL, "%s", "");
	assert_int_equal(capture_end(), 3);
	assert_null(strstr(g_text, "hidden"));
	assert_non_null(strstr(g_text, "level=info proc=tester comp=store msg=\"unit spilled\" "
				       "seq=3 layer=7\n"));
	assert_non_null(strstr(g_text, "level=error proc=tester comp=wire "
				       "msg=\"bad \\\"quoted\\\"\\nmessage\" path=/tmp/a?b\n"));
	assert_non_null(strstr(g_text, "level=warn proc=tester comp=- msg=\"\""));
	assert_int_equal(strncmp(g_text, "ts=", 3), 0);
	log_set_process(NULL);

	/* A message longer than a line is cut, still one line. */
	char big[3000];
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	capture_begin();
	log_info("t", big, "k=%s", big);
	assert_int_equal(capture_end(), 1);
	assert_true(strlen(g_text) <= 1024);
}

static void test_ratelimit(void **state)
{
	static struct log_ratelimit rl;

	log_set_level(LOG_LEVEL_INFO);
	capture_begin();
	for (int i = 0; i < 50; i++)
		log_write_rl(&rl, 60000, LOG_LEVEL_WARN, "hot", "dropping", "i=%d", i);
	assert_int_equal(capture_end(), 1);
	assert_non_null(strstr(g_text, "i=0"));
	assert_int_equal(rl.suppressed, 49);

	/* Once the interval passed, the next line reports how many were suppressed. */
	rl.last_ms -= 120000;
	capture_begin();
	log_write_rl(&rl, 60000, LOG_LEVEL_WARN, "hot", "dropping", "i=%d", 50);
	assert_int_equal(capture_end(), 1);
	assert_non_null(strstr(g_text, "i=50 suppressed=49\n"));
	assert_int_equal(rl.suppressed, 0);

	/* Below the threshold nothing is written or counted. */
	log_set_level(LOG_LEVEL_ERROR);
	capture_begin();
	log_write_rl(&rl, 0, LOG_LEVEL_WARN, "hot", "quiet", "%s", "");
	assert_int_equal(capture_end(), 0);
	log_set_level(LOG_LEVEL_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_levels),
	    cmocka_unit_test(test_line_format),
	    cmocka_unit_test(test_ratelimit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
