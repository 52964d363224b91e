/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc tenants: the tenants file (good lines, each kind of bad line named in the error), the
 * built-in default tenant, the tcp key list, and the per-tenant limits.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tenant.h"

static const char good[] = "# tenants\n"
			   "\n"
			   "alice uid=1000,1001 quota=1G max-sessions=2 max-seqs=3 max-inflight=4\n"
			   "bob   uid=2000 quota=512M   # trailing comment\n";

static void test_parse_good(void **state)
{
	struct tenant_table *t;
	struct tenant_usage u;
	char err[256] = "";

	assert_int_equal(tenant_table_parse(good, "test", &t, err, sizeof(err)), 0);
	assert_int_equal(tenant_count(t), 2);
	struct tenant *a = tenant_find(t, "alice");
	struct tenant *b = tenant_find(t, "bob");
	assert_non_null(a);
	assert_non_null(b);
	assert_null(tenant_find(t, "carol"));
	assert_string_equal(tenant_name(a), "alice");
	assert_true(tenant_admits_uid(a, 1001));
	assert_false(tenant_admits_uid(a, 2000));
	assert_true(tenant_admits_uid(b, 2000));
	tenant_get_usage(a, &u);
	assert_int_equal(u.quota_bytes, 1ull << 30);
	assert_int_equal(u.max_sessions, 2);
	assert_int_equal(u.max_seqs, 3);
	assert_int_equal(u.max_inflight, 4);
	tenant_get_usage(b, &u);
	assert_int_equal(u.quota_bytes, 512ull << 20);
	assert_int_equal(u.max_sessions, 0);
	tenant_table_free(t);
}

/* Each bad text must be refused and the message must contain the expected words. */
static void test_parse_bad_lines(void **state)
{
	static const struct {
		const char *text, *want1, *want2;
	} cases[] = {
	    {"a uid=1 quota=1G\nb uid=x quota=1G\n", "line 2", "uid=x"},
	    {"a uid=1 quota=lots\n", "line 1", "quota=lots"},
	    {"a uid=1 quota=1G color=red\n", "line 1", "color=red"},
	    {"a uid=1\n", "line 1", "missing quota="},
	    {"a quota=1G\n", "line 1", "missing uid="},
	    {"a uid=1 quota=1G\n\na uid=2 quota=1G\n", "line 3", "duplicate tenant 'a'"},
	    {"bad/name uid=1 quota=1G\n", "line 1", "bad tenant name"},
	    {"a uid=1 quota=1G max-seqs=-1\n", "line 1", "max-seqs=-1"},
	    {"a uid=1 quota=1G max-sessions\n", "line 1", "max-sessions"},
	    {"# nothing\n", "no tenants", "test"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tenant_table *t = (struct tenant_table *)1;
		char err[256] = "";
		int r = tenant_table_parse(cases[i].text, "test", &t, err, sizeof(err));
		if (r != -EINVAL || !strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
			fail_msg("case %zu: r=%d err='%s'", i, r, err);
		assert_null(t);
	}
}

static void test_default_tenant(void **state)
{
	struct tenant_table *t;
	struct tenant_usage u;
	char err[256];

	assert_int_equal(tenant_table_load(NULL, 1234, 4096, &t, err, sizeof(err)), 0);
	assert_int_equal(tenant_count(t), 1);
	struct tenant *d = tenant_find(t, "default");
	assert_non_null(d);
	assert_true(tenant_admits_uid(d, 1234));
	assert_true(tenant_admits_uid(d, 0));
	assert_false(tenant_admits_uid(d, 1235));
	tenant_get_usage(d, &u);
	assert_int_equal(u.quota_bytes, 4096);
	tenant_table_free(t);
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/test_memsvc_tenant_XXXXXX";
	int fd = mkstemp(path);
	struct tenant_table *t;
	char err[512];

	assert_true(fd >= 0);
	assert_int_equal(write(fd, good, strlen(good)), (ssize_t)strlen(good));
	close(fd);
	assert_int_equal(tenant_table_load(path, 1, 0, &t, err, sizeof(err)), 0);
	assert_non_null(tenant_find(t, "bob"));
	tenant_table_free(t);
	unlink(path);
	assert_int_equal(tenant_table_load(path, 1, 0, &t, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));
}

static void test_keys(void **state)
{
	static const char key[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
	struct tenant_table *t;
	char err[256], text[128];

	assert_int_equal(tenant_table_parse(good, "test", &t, err, sizeof(err)), 0);
	snprintf(text, sizeof(text), "alice %s\n", key);
	assert_int_equal(tenant_table_parse_keys(t, text, "keys", err, sizeof(err)), 0);
	assert_ptr_equal(tenant_find_key(t, key), tenant_find(t, "alice"));
	assert_null(tenant_find_key(t, "nope"));
	/* '#' is a z85 character: only a '#' that starts a word begins a comment. */
	static const char hkey[] = "#q:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]y#7";
	snprintf(text, sizeof(text), "bob %s # bob's laptop\n", hkey);
	assert_int_equal(tenant_table_parse_keys(t, text, "keys", err, sizeof(err)), 0);
	assert_ptr_equal(tenant_find_key(t, hkey), tenant_find(t, "bob"));
	snprintf(text, sizeof(text), "alice %s\ncarol %s\n", key, key);
	assert_int_equal(tenant_table_parse_keys(t, text, "keys", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "line 2"));
	assert_non_null(strstr(err, "carol"));
	assert_int_equal(tenant_table_parse_keys(t, "bob short\n", "keys", err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "40 z85"));
	tenant_table_free(t);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/*
 * A reload re-reads the tcp allow-list with the tenants: a new tenant's key admits, a removed
 * tenant's key no longer does, and a key file naming a tenant the new file lacks refuses the
 * whole reload (tenants and keys stay as they were).
 */
static void test_reload_keys(void **state)
{
	static const char k1[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
	static const char k2[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
	char tpath[] = "/tmp/test_memsvc_tenant_t_XXXXXX", kpath[] = "/tmp/test_memsvc_tenant_k_XXXXXX";
	struct tenant_reload rl;
	struct tenant_table *t;
	char err[512], text[256];

	close(mkstemp(tpath));
	close(mkstemp(kpath));
	write_text(tpath, good);
	assert_int_equal(tenant_table_load(tpath, 1, 0, &t, err, sizeof(err)), 0);
	snprintf(text, sizeof(text), "bob %s\n", k1);
	assert_int_equal(tenant_table_parse_keys(t, text, "keys", err, sizeof(err)), 0);
	assert_ptr_equal(tenant_find_key(t, k1), tenant_find(t, "bob"));
	/* bob leaves, carol comes with a key */
	write_text(tpath, "alice uid=1000 quota=1G\ncarol uid=3000 quota=1G\n");
	snprintf(text, sizeof(text), "carol %s\n", k2);
	write_text(kpath, text);
	assert_int_equal(tenant_table_reload(t, tpath, kpath, &rl, err, sizeof(err)), 0);
	assert_int_equal(rl.keys, 1);
	assert_ptr_equal(tenant_find_key(t, k2), tenant_find(t, "carol"));
	assert_null(tenant_find_key(t, k1));
	/* a key file naming bob, who is not in the new file: nothing changes */
	write_text(tpath, "alice uid=1000 quota=1G\n");
	snprintf(text, sizeof(text), "bob %s\n", k1);
	write_text(kpath, text);
	assert_int_equal(tenant_table_reload(t, tpath, kpath, &rl, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, kpath));
	assert_non_null(strstr(err, "bob"));
	assert_non_null(tenant_find(t, "carol"));
	assert_ptr_equal(tenant_find_key(t, k2), tenant_find(t, "carol"));
	/* without a key path the list stays */
	assert_int_equal(tenant_table_reload(t, tpath, NULL, &rl, err, sizeof(err)), 0);
	assert_null(tenant_find(t, "carol"));
	assert_null(tenant_find_key(t, k2)); /* its tenant was removed */
	/* an unreadable key file refuses the reload too */
	unlink(kpath);
	assert_int_equal(tenant_table_reload(t, tpath, kpath, &rl, err, sizeof(err)), -ENOENT);
	tenant_table_free(t);
	unlink(tpath);
}

static void test_limits(void **state)
{
	struct tenant_table *t;
	struct tenant_usage u;
	char err[256];

	assert_int_equal(tenant_table_parse(good, "test", &t, err, sizeof(err)), 0);
	struct tenant *a = tenant_find(t, "alice");
	struct tenant *b = tenant_find(t, "bob");
	/* bytes */
	assert_int_equal(tenant_session_acquire(a, 1ull << 30), 0);
	assert_int_equal(tenant_session_acquire(a, 1), -EDQUOT);
	tenant_session_release(a, 1ull << 30);
	/* sessions: 2 */
	assert_int_equal(tenant_session_acquire(a, 10), 0);
	assert_int_equal(tenant_session_acquire(a, 10), 0);
	assert_int_equal(tenant_session_acquire(a, 10), -EDQUOT);
	/* bob is unaffected by alice's limits */
	assert_int_equal(tenant_session_acquire(b, 512ull << 20), 0);
	assert_int_equal(tenant_session_acquire(b, 1), -EDQUOT);
	/* seqs: 3 */
	for (int i = 0; i < 3; i++)
		assert_int_equal(tenant_seq_acquire(a), 0);
	assert_int_equal(tenant_seq_acquire(a), -EDQUOT);
	tenant_seq_release(a);
	assert_int_equal(tenant_seq_acquire(a), 0);
	/* in-flight: 4 */
	assert_int_equal(tenant_inflight_acquire(a, 3), 0);
	assert_int_equal(tenant_inflight_acquire(a, 2), -EBUSY);
	tenant_inflight_release(a, 3);
	assert_int_equal(tenant_inflight_acquire(a, 4), 0);
	tenant_get_usage(a, &u);
	assert_int_equal(u.sessions, 2);
	assert_int_equal(u.bytes, 20);
	assert_int_equal(u.seqs, 3);
	assert_int_equal(u.inflight, 4);
	assert_int_equal(u.rejected, 4); /* bob's refusal counts on bob */
	tenant_session_release(a, 10);
	tenant_session_release(a, 10);
	tenant_get_usage(a, &u);
	assert_int_equal(u.sessions, 0);
	assert_int_equal(u.bytes, 0);
	tenant_table_free(t);
}

struct hammer {
	struct tenant *tn;
	uint64_t cap, ok, over;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	struct tenant_usage u;

	for (int i = 0; i < 20000; i++) {
		if (tenant_inflight_acquire(h->tn, 1))
			continue;
		h->ok++;
		if ((i & 63) == 0) {
			tenant_get_usage(h->tn, &u);
			h->over += u.inflight > h->cap;
		}
		tenant_inflight_release(h->tn, 1);
	}
	return NULL;
}

/* The lock-free in-flight count under four threads: never past the cap, back to 0. */
static void test_inflight_threads(void **state)
{
	struct tenant_table *t;
	struct hammer h[4];
	pthread_t th[4];
	struct tenant_usage u;
	char err[256];

	assert_int_equal(tenant_table_parse(good, "test", &t, err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){.tn = tenant_find(t, "alice"), .cap = 4};
		assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_true(h[i].ok > 0);
		assert_int_equal(h[i].over, 0);
	}
	tenant_get_usage(tenant_find(t, "alice"), &u);
	assert_int_equal(u.inflight, 0);
	tenant_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good),	   cmocka_unit_test(test_parse_bad_lines),
	    cmocka_unit_test(test_default_tenant), cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_keys),	   cmocka_unit_test(test_reload_keys),
	    cmocka_unit_test(test_limits), cmocka_unit_test(test_inflight_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
