/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/config: precedence (defaults < file < env < flags), every type and its bounds, bad
 * values refused with a message naming key and source, unknown keys, argv permutation, and
 * --help / --dump-config output (the dump must read back as the same config).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

struct tcfg {
	bool verbose;
	int64_t offset;
	uint64_t workers;
	uint64_t budget;
	double ratio;
	char name[16];
	int mode;
	uint64_t port;
	int64_t nodef;
};

static const char *const modes[] = {"dense", "sparse", "sparda", NULL};

static const struct config_key keys[] = {
    {"verbose", CONFIG_TYPE_BOOL, offsetof(struct tcfg, verbose), 0, "false", 0, 0, NULL,
     "log more"},
    {"offset", CONFIG_TYPE_INT, offsetof(struct tcfg, offset), 0, "-3", -100, 100, NULL,
     "a signed value"},
    {"workers", CONFIG_TYPE_UINT, offsetof(struct tcfg, workers), 0, "4", 1, 64, NULL,
     "worker threads"},
    {"ram-budget", CONFIG_TYPE_SIZE, offsetof(struct tcfg, budget), 0, "1G", 4096, 1099511627776.0,
     NULL, "bytes of RAM"},
    {"ratio", CONFIG_TYPE_DOUBLE, offsetof(struct tcfg, ratio), 0, "0.25", 0, 1, NULL,
     "a fraction"},
    {"name", CONFIG_TYPE_STRING, offsetof(struct tcfg, name), 16, "memsvc", 0, 0, NULL, "a name"},
    {"mode", CONFIG_TYPE_ENUM, offsetof(struct tcfg, mode), 0, "sparda", 0, 0, modes, "run mode"},
    {"metrics.port", CONFIG_TYPE_UINT, offsetof(struct tcfg, port), 0, "9464", 0, 65535, NULL,
     "metrics port"},
    {"nodef", CONFIG_TYPE_INT, offsetof(struct tcfg, nodef), 0, NULL, 0, 0, NULL, "no default"},
};

static const struct config_table table = {
    .program = "tprog",
    .summary = "a test program",
    .keys = keys,
    .n_keys = sizeof(keys) / sizeof(keys[0]),
    .env_prefix = "TCFG_",
};

static char g_path[64];
static char g_err[512];

static void write_file(const char *text)
{
	FILE *f = fopen(g_path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	snprintf(g_path, sizeof(g_path), "/tmp/test_config.%d.conf", (int)getpid());
	unsetenv("TCFG_OFFSET");
	unsetenv("TCFG_WORKERS");
	unsetenv("TCFG_METRICS_PORT");
	unsetenv("TCFG_CONFIG");
	return 0;
}

static int teardown(void **state)
{
	unlink(g_path);
	return 0;
}

/* Run config_load on a NULL-terminated list of arguments. */
static int load(struct tcfg *c, FILE *out, int *npos, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;

	argv[argc++] = "tprog";
	va_start(ap, npos);
	for (char *a; (a = va_arg(ap, char *));)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	memset(c, 0x5a, sizeof(*c));
	g_err[0] = '\0';
	return config_load(&table, c, "TCFG_CONFIG", argc, argv, npos, out, g_err, sizeof(g_err));
}

#define assert_err_names(...)                                                                      \
	do {                                                                                       \
		const char *want_[] = {__VA_ARGS__};                                               \
		for (size_t i_ = 0; i_ < sizeof(want_) / sizeof(want_[0]); i_++)                   \
			if (!strstr(g_err, want_[i_]))                                             \
				fail_msg("error '%s' lacks '%s'", g_err, want_[i_]);               \
	} while (0)

static void test_defaults(void **state)
{
	struct tcfg c;
	int npos = -1;

	assert_int_equal(load(&c, stdout, &npos, NULL), 0);
	assert_int_equal(npos, 0);
	assert_false(c.verbose);
	assert_int_equal(c.offset, -3);
	assert_int_equal(c.workers, 4);
	assert_true(c.budget == 1ull << 30);
	assert_true(c.ratio == 0.25);
	assert_string_equal(c.name, "memsvc");
	assert_int_equal(c.mode, 2);
	assert_int_equal(c.port, 9464);
	assert_int_equal(c.nodef, 0);
}

static void test_precedence(void **state)
{
	struct tcfg c;
	char flag[96];

	write_file("offset = 10\nworkers = 8\nmetrics.port = 100\n");
	snprintf(flag, sizeof(flag), "--config=%s", g_path);
	setenv("TCFG_WORKERS", "16", 1);
	setenv("TCFG_METRICS_PORT", "200", 1);
	assert_int_equal(load(&c, stdout, NULL, flag, "--metrics.port", "300", NULL), 0);
	assert_int_equal(c.offset, 10);	 /* file over default */
	assert_int_equal(c.workers, 16); /* env over file */
	assert_int_equal(c.port, 300);	 /* flag over env */

	/* The file can also come from the config_env variable. */
	setenv("TCFG_CONFIG", g_path, 1);
	unsetenv("TCFG_WORKERS");
	assert_int_equal(load(&c, stdout, NULL, NULL), 0);
	assert_int_equal(c.workers, 8);
	assert_int_equal(c.port, 200);
	unsetenv("TCFG_CONFIG");
	unsetenv("TCFG_METRICS_PORT");
}

static void test_types(void **state)
{
	struct tcfg c;

	assert_int_equal(load(&c, stdout, NULL, "--verbose", "--offset=-100", "--workers", "64",
			      "--ram-budget=1T", "--ratio=1", "--name=x y", "--mode", "dense",
			      NULL),
			 0);
	assert_true(c.verbose);
	assert_int_equal(c.offset, -100);
	assert_int_equal(c.workers, 64);
	assert_true(c.budget == 1ull << 40);
	assert_true(c.ratio == 1.0);
	assert_string_equal(c.name, "x y");
	assert_int_equal(c.mode, 0);
	assert_int_equal(load(&c, stdout, NULL, "--verbose=on", "--no-verbose", NULL), 0);
	assert_false(c.verbose);
	assert_int_equal(load(&c, stdout, NULL, "--verbose=YES", NULL), 0);
	assert_true(c.verbose);
	int npos = -1;
	assert_int_equal(load(&c, stdout, &npos, "--verbose", "false", NULL), 0);
	assert_false(c.verbose);
	assert_int_equal(npos, 0);
	assert_int_equal(load(&c, stdout, &npos, "--verbose", "in.bin", NULL), 0);
	assert_true(c.verbose);
	assert_int_equal(npos, 1);
	assert_int_equal(load(&c, stdout, NULL, "--ram-budget=4096", NULL), 0);
	assert_true(c.budget == 4096);
	assert_int_equal(load(&c, stdout, NULL, "--ram-budget=512MiB", NULL), 0);
	assert_true(c.budget == 512ull << 20);
	assert_int_equal(load(&c, stdout, NULL, "--name=", NULL), 0);
	assert_string_equal(c.name, "");
}

static void test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(config_parse_size("0", &v), 0);
	assert_true(v == 0);
	assert_int_equal(config_parse_size("12k", &v), 0);
	assert_true(v == 12288);
	assert_int_equal(config_parse_size("2M", &v), 0);
	assert_true(v == 2ull << 20);
	assert_int_equal(config_parse_size("5GB", &v), 0);
	assert_true(v == 5ull << 30);
	assert_int_equal(config_parse_size("1TiB", &v), 0);
	assert_true(v == 1ull << 40);
	assert_int_equal(config_parse_size("16777215T", &v), 0);
	assert_int_equal(config_parse_size("16777216T", &v), -ERANGE);
	assert_int_equal(config_parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(config_parse_size("", &v), -EINVAL);
	assert_int_equal(config_parse_size("-1", &v), -EINVAL);
	assert_int_equal(config_parse_size("1.5G", &v), -EINVAL);
	assert_int_equal(config_parse_size("4X", &v), -EINVAL);
	assert_int_equal(config_parse_size("4GG", &v), -EINVAL);
	assert_int_equal(config_parse_size("G", &v), -EINVAL);
}

static void test_bad_values(void **state)
{
	static const struct {
		const char *arg;
		const char *names[2];
	} bad[] = {
	    {"--verbose=maybe", {"key verbose", "flag --verbose"}},
	    {"--offset=101", {"key offset", "out of range"}},
	    {"--offset=12abc", {"key offset", "integer"}},
	    {"--offset=99999999999999999999", {"key offset", "integer"}},
	    {"--workers=-1", {"key workers", "unsigned"}},
	    {"--workers=0", {"key workers", "out of range"}},
	    {"--workers=65", {"key workers", "out of range"}},
	    {"--ram-budget=4095", {"key ram-budget", "out of range"}},
	    {"--ram-budget=2T", {"key ram-budget", "out of range"}},
	    {"--ram-budget=lots", {"key ram-budget", "size"}},
	    {"--ratio=1.5", {"key ratio", "out of range"}},
	    {"--ratio=nan", {"key ratio", "number"}},
	    {"--ratio=", {"key ratio", "number"}},
	    {"--name=0123456789abcdef", {"key name", "longer"}},
	    {"--mode=fast", {"key mode", "dense|sparse|sparda"}},
	    {"--metrics.port=65536", {"key metrics.port", "flag --metrics.port"}},
	};
	struct tcfg c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load(&c, stdout, NULL, bad[i].arg, NULL), -EINVAL);
		assert_err_names(bad[i].names[0], bad[i].names[1]);
	}
	setenv("TCFG_OFFSET", "x", 1);
	assert_int_equal(load(&c, stdout, NULL, NULL), -EINVAL);
	assert_err_names("env TCFG_OFFSET", "key offset");
	unsetenv("TCFG_OFFSET");
	/* A bad default is a bug in the table and is reported as one. */
	struct config_key k = keys[1];
	struct config_table t = table;
	k.def = "1000";
	t.keys = &k;
	t.n_keys = 1;
	assert_int_equal(config_defaults(&t, &c), -EINVAL);
}

static void test_file_syntax(void **state)
{
	struct tcfg c;
	char flag[96];

	snprintf(flag, sizeof(flag), "--config=%s", g_path);
	write_file("# comment\n; also a comment\n\n  offset=7   # trailing\n"
		   "name = \"a # b \\\"q\\\"\"  # comment\n[metrics]\nport = 1234\n[]\n"
		   "ratio = 0.5\nname2_is_not_here = 1\n");
	assert_int_equal(load(&c, stdout, NULL, flag, NULL), -EINVAL);
	assert_err_names("line 10", "unknown key name2_is_not_here", g_path);

	write_file("# comment\n  offset=7   # trailing\nname = \"a # b \\\"q\\\"\"  # c\n"
		   "[metrics]\nport = 1234\n[]\nratio = 0.5\nmode=sparse#not a comment\n");
	assert_int_equal(load(&c, stdout, NULL, flag, NULL), -EINVAL);
	assert_err_names("line 8", "key mode", "sparse#not");

	write_file("# comment\n  offset=7   # trailing\nname = \"a # b \\\"q\\\"\"  # c\n"
		   "[metrics]\nport = 1234\n[]\nratio = 0.5\n");
	assert_int_equal(load(&c, stdout, NULL, flag, NULL), 0);
	assert_int_equal(c.offset, 7);
	assert_string_equal(c.name, "a # b \"q\"");
	assert_int_equal(c.port, 1234);
	assert_true(c.ratio == 0.5);

	static const struct {
		const char *text;
		const char *want;
	} bad[] = {
	    {"offset 7\n", "line 1: expected"},
	    {"\n[metrics\n", "line 2: malformed section"},
	    {"[a b]\n", "bad section name"},
	    {"bad key = 1\n", "bad key name"},
	    {"name = \"open\n", "malformed quoted"},
	    {"name = \"x\" y\n", "malformed quoted"},
	    {"[metrics]\noffset = 1\n", "unknown key metrics.offset"},
	    {"workers = 0\n", "line 1: key workers"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(bad[i].text);
		assert_int_equal(load(&c, stdout, NULL, flag, NULL), -EINVAL);
		assert_err_names(bad[i].want, "file ");
	}
	unlink(g_path);
	assert_int_equal(load(&c, stdout, NULL, flag, NULL), -ENOENT);
	assert_err_names(g_path);
}

static void test_flags_and_positionals(void **state)
{
	struct tcfg c;
	int npos = -1;
	char *argv[] = {"tprog", "in.bin", "--offset", "5", "out.bin", "--", "--not-a-flag", NULL};

	memset(&c, 0, sizeof(c));
	assert_int_equal(
	    config_load(&table, &c, NULL, 7, argv, &npos, stdout, g_err, sizeof(g_err)), 0);
	assert_int_equal(npos, 3);
	assert_string_equal(argv[1], "in.bin");
	assert_string_equal(argv[2], "out.bin");
	assert_string_equal(argv[3], "--not-a-flag");
	assert_int_equal(c.offset, 5);

	assert_int_equal(load(&c, stdout, NULL, "--bogus=1", NULL), -EINVAL);
	assert_err_names("flag --bogus", "unknown key bogus");
	assert_int_equal(load(&c, stdout, NULL, "-x", NULL), -EINVAL);
	assert_err_names("flag -x");
	assert_int_equal(load(&c, stdout, NULL, "--workers", NULL), -EINVAL);
	assert_err_names("flag --workers", "missing value");
	assert_int_equal(load(&c, stdout, NULL, "--workers", "--verbose", NULL), -EINVAL);
	assert_err_names("missing value");
	assert_int_equal(load(&c, stdout, NULL, "--no-workers", NULL), -EINVAL);
	assert_err_names("unknown key no-workers");
	assert_int_equal(load(&c, stdout, NULL, "--config", NULL), -EINVAL);
	assert_err_names("flag --config", "missing value");
}

/* Capture what a load writes to its FILE. */
static char *load_capture(int *ret, const char *arg1, const char *arg2)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct tcfg c;

	assert_non_null(out);
	*ret = load(&c, out, NULL, arg1, arg2, NULL);
	fclose(out);
	return text;
}

static void test_help(void **state)
{
	int ret;
	/* --help wins even over a bad flag. */
	char *text = load_capture(&ret, "--bogus", "--help");

	assert_int_equal(ret, 1);
	for (size_t i = 0; i < table.n_keys; i++) {
		char want[64];
		snprintf(want, sizeof(want), "--%s", keys[i].name);
		assert_non_null(strstr(text, want));
		assert_non_null(strstr(text, keys[i].help));
	}
	assert_non_null(strstr(text, "Usage: tprog"));
	assert_non_null(strstr(text, "env TCFG_METRICS_PORT"));
	assert_non_null(strstr(text, "--mode=dense|sparse|sparda"));
	assert_non_null(strstr(text, "range [4K, 1T]"));
	assert_non_null(strstr(text, "TCFG_CONFIG"));
	assert_non_null(strstr(text, "--dump-config"));
	free(text);
}

static void test_dump_reparses(void **state)
{
	struct tcfg a, b;
	int ret;
	char flag[96];
	char *text = load_capture(&ret, "--name= #tricky\"\\ ", "--dump-config");

	assert_int_equal(ret, 1);
	assert_non_null(strstr(text, "# bytes of RAM\nram-budget = 1G\n"));
	assert_non_null(strstr(text, "mode = sparda\n"));
	write_file(text);
	free(text);

	/* Non-default values of every type survive dump -> file -> load. */
	text = load_capture(&ret, "--ratio=0.1", "--dump-config");
	free(text);
	assert_int_equal(load(&a, stdout, NULL, "--name= #tricky\"\\ ", "--verbose", "--offset=-7",
			      "--workers=9", "--ram-budget=12345", "--ratio=0.1", "--mode=dense",
			      "--metrics.port=1", NULL),
			 0);
	char *dump = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&dump, &len);
	config_dump(&table, &a, out);
	fclose(out);
	write_file(dump);
	free(dump);
	snprintf(flag, sizeof(flag), "--config=%s", g_path);
	assert_int_equal(load(&b, stdout, NULL, flag, NULL), 0);
	assert_int_equal(a.verbose, b.verbose);
	assert_int_equal(a.offset, b.offset);
	assert_int_equal(a.workers, b.workers);
	assert_true(a.budget == b.budget);
	assert_true(a.ratio == b.ratio);
	assert_string_equal(a.name, b.name);
	assert_string_equal(b.name, " #tricky\"\\ ");
	assert_int_equal(a.mode, b.mode);
	assert_int_equal(a.port, b.port);
}

static void test_config_set(void **state)
{
	struct tcfg c;
	char err[128];

	assert_int_equal(config_defaults(&table, &c), 0);
	assert_int_equal(config_set(&table, &c, "workers", "7", "test", err, sizeof(err)), 0);
	assert_int_equal(c.workers, 7);
	assert_int_equal(config_set(&table, &c, "nope", "7", "test", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "test: unknown key nope"));
	assert_int_equal(config_set(&table, &c, "workers", "70", "api", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "api: key workers"));
	assert_int_equal(c.workers, 7); /* a refused value leaves the field alone */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_parse_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_syntax, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_and_positionals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_help, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dump_reparses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_set, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
