/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc config: defaults, flags, environment, a config file, and refusal of bad values with
 * the key named; derived values (runtime dir, RAM budget) and cross-key rules.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mconfig.h"

static int load(struct mconfig *c, char *err, size_t len, int argc, char **argv)
{
	FILE *out = fopen("/dev/null", "w");
	int r = mconfig_load(c, argc, argv, out, err, len);
	fclose(out);
	return r;
}

static void test_defaults(void **state)
{
	char *argv[] = {"sparda-memsvc", NULL};
	struct mconfig c;
	char err[256] = "";

	unsetenv("SPARDA_METRICS_PORT");
	assert_int_equal(load(&c, err, sizeof(err), 1, argv), 0);
	assert_int_equal(c.metrics_port, 9464);
	assert_int_equal(c.ram_budget, 0);
	assert_int_equal(c.sq_entries, 4096);
	assert_false(c.huge_pages);
	assert_string_equal(c.runtime_dir, "");
	setenv("XDG_RUNTIME_DIR", "/run/user/42", 1);
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), 0);
	assert_string_equal(c.runtime_dir, "/run/user/42/sparda");
	assert_true(c.ram_budget > 0); /* half of MemAvailable */
}

static void test_flags_and_env(void **state)
{
	char *argv[] = {"sparda-memsvc",   "--runtime-dir",	"/tmp/x", "--metrics-port=0",
			"--ram-budget=2G", "--huge-pages=true", NULL};
	struct mconfig c;
	char err[256] = "";

	setenv("SPARDA_MAX_SESSIONS", "7", 1);
	assert_int_equal(load(&c, err, sizeof(err), 6, argv), 0);
	unsetenv("SPARDA_MAX_SESSIONS");
	assert_string_equal(c.runtime_dir, "/tmp/x");
	assert_int_equal(c.metrics_port, 0);
	assert_int_equal(c.ram_budget, 2ull << 30);
	assert_true(c.huge_pages);
	assert_int_equal(c.max_sessions, 7);
}

static void test_bad_values_name_the_key(void **state)
{
	static const char *const bad[][2] = {
	    {"--metrics-port=70000", "metrics-port"}, {"--ram-budget=lots", "ram-budget"},
	    {"--max-sessions=0", "max-sessions"},     {"--log-level=chatty", "log-level"},
	    {"--no-such-key=1", "no-such-key"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *argv[] = {"sparda-memsvc", (char *)bad[i][0], NULL};
		struct mconfig c;
		char err[256] = "";
		int r = load(&c, err, sizeof(err), 2, argv);
		if (r != -EINVAL || !strstr(err, bad[i][1]))
			fail_msg("case %s: r=%d err='%s'", bad[i][0], r, err);
	}
}

static void test_resolve_rules(void **state)
{
	char *argv[] = {"sparda-memsvc", "--sq-entries=1000", "--ram-budget=1G",
			"--runtime-dir=/tmp/y", NULL};
	char *argv2[] = {"sparda-memsvc", "--tcp=tcp://127.0.0.1:7000", "--ram-budget=1G",
			 "--runtime-dir=/tmp/y", NULL};
	struct mconfig c;
	char err[256] = "";

	assert_int_equal(load(&c, err, sizeof(err), 4, argv), 0);
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "sq-entries"));
	assert_int_equal(load(&c, err, sizeof(err), 4, argv2), 0);
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "key tcp"));
}

/* The NVMe tier keys: off by default; watermarks checked; backends by name. */
static void test_spill_keys(void **state)
{
	char *argv[] = {"sparda-memsvc", "--spill-dirs=/a,/b", "--spill-aio=sync",
			"--spill-high-water=0.5", "--spill-low-water=0.6", "--ram-budget=1G",
			"--runtime-dir=/tmp/y", NULL};
	char *argv0[] = {"sparda-memsvc", NULL};
	struct mconfig c;
	char err[256] = "";

	assert_int_equal(load(&c, err, sizeof(err), 1, argv0), 0);
	assert_string_equal(c.spill_dirs, "");
	assert_int_equal(c.spill_aio, 2); /* auto */
	assert_true(c.spill_direct);
	assert_true(c.spill_low_water < c.spill_high_water);
	assert_int_equal(load(&c, err, sizeof(err), 7, argv), 0);
	assert_string_equal(c.spill_dirs, "/a,/b");
	assert_int_equal(c.spill_aio, 1); /* sync */
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "spill-low-water"));
	argv[1] = "--spill-aio=posix";
	assert_int_equal(load(&c, err, sizeof(err), 2, argv), -EINVAL);
	assert_non_null(strstr(err, "spill-aio"));
	/* the header block: 0 (the disk's alignment) or a power of two from 512 to 4K */
	assert_int_equal(c.spill_header_bytes, 0);
	argv[1] = "--spill-header-bytes=1000";
	argv[4] = "--spill-low-water=0.4";
	assert_int_equal(load(&c, err, sizeof(err), 7, argv), 0);
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "spill-header-bytes"));
	argv[1] = "--spill-header-bytes=8K";
	assert_int_equal(load(&c, err, sizeof(err), 2, argv), -EINVAL);
	assert_non_null(strstr(err, "spill-header-bytes"));
	argv[1] = "--spill-header-bytes=1K";
	assert_int_equal(load(&c, err, sizeof(err), 7, argv), 0);
	assert_int_equal(mconfig_resolve(&c, err, sizeof(err)), 0);
	assert_int_equal(c.spill_header_bytes, 1024);
}

static void test_config_file(void **state)
{
	char path[] = "/tmp/test_memsvc_config_XXXXXX";
	int fd = mkstemp(path);
	char arg[64];
	char *argv[] = {"sparda-memsvc", arg, NULL};
	const char *text = "# memsvc\nmax-sessions = 9\nmetrics-port = 12x\n";
	struct mconfig c;
	char err[512] = "";

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	snprintf(arg, sizeof(arg), "--config=%s", path);
	assert_int_equal(load(&c, err, sizeof(err), 2, argv), -EINVAL);
	assert_non_null(strstr(err, "metrics-port"));
	assert_non_null(strstr(err, "line 3"));
	unlink(path);
}

static void test_help_and_dump(void **state)
{
	char *argv[] = {"sparda-memsvc", "--dump-config", NULL};
	char buf[16384] = "";
	struct mconfig c;
	char err[256] = "";
	FILE *out = fmemopen(buf, sizeof(buf) - 1, "w");

	assert_int_equal(mconfig_load(&c, 2, argv, out, err, sizeof(err)), 1);
	fclose(out);
	assert_non_null(strstr(buf, "ram-budget"));
	assert_non_null(strstr(buf, "poll-spin-us"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_flags_and_env),
	    cmocka_unit_test(test_bad_values_name_the_key),
	    cmocka_unit_test(test_resolve_rules),
	    cmocka_unit_test(test_spill_keys),
	    cmocka_unit_test(test_config_file),
	    cmocka_unit_test(test_help_and_dump),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
