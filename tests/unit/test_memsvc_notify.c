/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-memsvc under a fake systemd: NOTIFY_SOCKET receives READY=1 once the endpoints are
 * up, WATCHDOG=1 at half of WATCHDOG_USEC, and STOPPING=1 on SIGTERM, after which the daemon
 * exits 0. Exits 77 when the daemon is not built.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "memsvc_proc.h"

/* Wait for a datagram containing want; returns true when it came within timeout_ms. */
static bool expect(int fd, const char *want, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char buf[256];

	while (poll(&p, 1, timeout_ms) == 1) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return false;
		buf[n] = '\0';
		if (strstr(buf, want))
			return true;
	}
	return false;
}

static void test_notify(void **state)
{
	char bin[4096], dir[] = "/tmp/sparda-notify-XXXXXX", path[64];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct memsvc_proc *p;
	int fd, status = -1;

	if (memsvc_proc_find_binary(bin, sizeof(bin))) {
		fprintf(stderr, "skip: sparda-memsvc not built\n");
		exit(77);
	}
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notify", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", path, 1);
	setenv("WATCHDOG_USEC", "400000", 1);
	const char *args[] = {"--ram-budget=16M", NULL};
	struct memsvc_proc_opts o = {.binary = bin, .args = args, .capture_stderr = true};
	assert_int_equal(memsvc_proc_start(&o, &p), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	assert_true(expect(fd, "READY=1", 5000));
	assert_true(expect(fd, "WATCHDOG=1", 2000));
	assert_true(expect(fd, "WATCHDOG=1", 2000));
	assert_int_equal(kill(memsvc_proc_pid(p), SIGTERM), 0);
	assert_true(expect(fd, "STOPPING=1", 5000));
	assert_int_equal(memsvc_proc_stop(p, 0, 5000, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	memsvc_proc_free(p);
	close(fd);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_notify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
