/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: tenant isolation and quotas on a real sparda-memsvc with a tenants file. Two
 * tenants (both admit our uid) cannot see each other's units or arena bytes, whatever names
 * they try (foreign handles, guessed handles, stale generations, a wrong token on ZeroMQ);
 * over-quota attaches and too many sequences are refused while the other tenant is fine.
 * Reload on SIGHUP: an added tenant admits attaches, a lowered quota refuses new ones while
 * held data stays, a removed tenant refuses attaches while its open session works on, and a
 * bad file changes nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "memsvc_harness.h"
#include "wire.h"

#define KEY_A 0xaaaaull
#define BLOCKS 4

struct fixture {
	char *dir;
	struct memsvc_proc *p;
};

static struct fixture start(const char *tenants_fmt)
{
	struct fixture f = {.dir = harness_tmpdir()};
	char text[512], *path;

	/* Formats name our uid twice, then a uid that is not ours. */
	snprintf(text, sizeof(text), tenants_fmt, (unsigned)getuid(), (unsigned)getuid(),
		 (unsigned)getuid() + 4242);
	path = harness_write_file(f.dir, "tenants", text);
	const char *args[] = {"--tenants", path, NULL};
	f.p = harness_start(args);
	free(path);
	return f;
}

static void stop(struct fixture *f)
{
	memsvc_proc_free(f->p);
	harness_rmdir(f->dir);
}

/* A writes and commits every unit of one sequence; returns how many. */
static uint32_t fill_seq(struct memclient *a, struct memclient_seq seq, struct memclient_unit *u)
{
	struct memclient_result r[64];
	struct sp_geometry g = harness_geometry();
	uint32_t n = 0;

	for (uint32_t l = 0; l < g.n_layers; l++)
		for (uint32_t h = 0; h < g.n_kv_heads; h++)
			for (uint32_t b = 0; b < BLOCKS; b++)
				u[n++] = (struct memclient_unit){seq, l, h, b};
	assert_int_equal(memclient_alloc(a, u, n, r), 0);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(r[i].status, 0);
		harness_fill(memclient_slot_ptr(a, r[i].slot), memclient_geometry(a)->unit_bytes,
			     KEY_A, &u[i]);
	}
	assert_int_equal(memclient_commit(a, u, n, 1, r), 0);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(r[i].status, 0);
	return n;
}

/* B's whole arena holds none of A's unit bytes. */
static void assert_no_foreign_bytes(struct memclient *b, const struct memclient_unit *u, uint32_t n)
{
	size_t ub = memclient_geometry(b)->unit_bytes;
	void *base;
	size_t bytes;

	memclient_arena(b, &base, &bytes);
	for (size_t off = 0; off + ub <= bytes; off += ub)
		for (uint32_t i = 0; i < n; i++)
			assert_true(harness_check((uint8_t *)base + off, ub, KEY_A, &u[i]) >
				    ub / 2);
}

static void test_isolation(void **state)
{
	struct fixture f = start("alpha uid=%u quota=4M\nbeta uid=%u quota=4M\n");
	struct memclient *a, *b;
	struct memclient_seq sa, sb;
	struct memclient_unit u[64];
	struct memclient_result r[64];
	struct memclient_residency res;
	uint32_t n;

	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 256 << 10, &a), 0);
	assert_int_equal(harness_open(f.p, "beta", SP_WAIT_SLEEP, 256 << 10, &b), 0);
	assert_int_equal(memclient_seq_open(a, 1, BLOCKS, &sa), 0);
	n = fill_seq(a, sa, u);

	/* B names A's sequence before it has any: not open in B's table. */
	assert_int_not_equal(memclient_lookup(b, &u[0], &res), 0);
	assert_int_equal(memclient_forecast_zmq(b, u, n, 2, r), 0);
	for (uint32_t i = 0; i < n; i++)
		assert_int_not_equal(r[i].status, 0);
	assert_int_equal(memclient_forecast(b, u, n, 2, r), 0);
	for (uint32_t i = 0; i < n; i++)
		assert_int_not_equal(r[i].status, 0);

	/* B opens its own sequence (likely the same row number): A's names are B's misses. */
	assert_int_equal(memclient_seq_open(b, 1, BLOCKS, &sb), 0);
	for (uint32_t gen = 0; gen < 4; gen++) {
		for (uint32_t idx = 0; idx < 8; idx++) {
			struct memclient_unit g = {{idx, gen}, 1, 1, 2};
			assert_int_equal(memclient_forecast_zmq(b, &g, 1, 3, r), 0);
			assert_int_not_equal(r[0].status, 0);
		}
	}
	assert_no_foreign_bytes(b, u, n);

	/* A's stale generation after close and reopen is refused. */
	assert_int_equal(memclient_seq_close(a, sa), 0);
	struct memclient_seq sa2;
	assert_int_equal(memclient_seq_open(a, 2, BLOCKS, &sa2), 0);
	assert_int_equal(memclient_forecast_zmq(a, u, 1, 4, r), 0);
	if (sa2.index == sa.index)
		assert_int_equal(r[0].status, -ESTALE);
	else
		assert_int_not_equal(r[0].status, 0);
	assert_int_equal(memclient_alloc(a, u, 1, r), 0);
	assert_int_not_equal(r[0].status, 0);
	assert_int_equal(memclient_seq_close(a, sa), -ESTALE);

	memclient_close(a);
	memclient_close(b);
	stop(&f);
}

static int raw_ping(struct memsvc_proc *p, uint64_t session, const uint8_t *token)
{
	struct wire_request rq = {.protocol_version = SP_PROTOCOL_VERSION,
				  .request_id = 77,
				  .session_id = session,
				  .kind = WIRE_PING};
	struct wire_reply rp;
	void *buf;
	size_t len;
	int rc;

	memcpy(rq.token, token, WIRE_TOKEN_BYTES);
	assert_int_equal(wire_request_pack(&rq, &buf, &len), 0);
	const void *frames[] = {buf};
	assert_int_equal(harness_raw(p, frames, &len, 1, &rp, 3000), 0);
	free(buf);
	assert_int_equal(rp.request_id, 77);
	rc = rp.status;
	wire_reply_fini(&rp);
	return rc;
}

static void test_wrong_token(void **state)
{
	struct fixture f = start("alpha uid=%u quota=4M\nbeta uid=%u quota=4M\n");
	uint8_t ta[MEMCLIENT_TOKEN_BYTES], tb[MEMCLIENT_TOKEN_BYTES];
	struct memclient *a, *b;

	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 128 << 10, &a), 0);
	assert_int_equal(harness_open(f.p, "beta", SP_WAIT_SLEEP, 128 << 10, &b), 0);
	memclient_token(a, ta);
	memclient_token(b, tb);
	assert_int_equal(raw_ping(f.p, memclient_session_id(a), ta), 0);
	assert_int_equal(raw_ping(f.p, memclient_session_id(a), tb), -EPERM);
	ta[3] ^= 0x10;
	assert_int_equal(raw_ping(f.p, memclient_session_id(a), ta), -EPERM);
	assert_int_equal(raw_ping(f.p, memclient_session_id(b) + 1000, tb), -EPERM);
	/* Both sessions still work. */
	assert_int_equal(memclient_ping(a), 0);
	assert_int_equal(memclient_ping(b), 0);
	memclient_close(a);
	memclient_close(b);
	stop(&f);
}

static void test_quotas(void **state)
{
	struct fixture f = start("small uid=%u quota=256K max-seqs=1\nother uid=%u quota=4M\n"
				 "locked uid=%u quota=4M\n");
	struct memclient *s = NULL, *o;
	struct memclient_seq q1, q2;

	assert_int_equal(harness_open(f.p, "small", SP_WAIT_SLEEP, 1 << 20, &s), -EDQUOT);
	assert_null(s);
	assert_int_equal(harness_open(f.p, "small", SP_WAIT_SLEEP, 128 << 10, &s), 0);
	assert_int_equal(memclient_seq_open(s, 1, BLOCKS, &q1), 0);
	assert_int_equal(memclient_seq_open(s, 2, BLOCKS, &q2), -EDQUOT);
	/* The other tenant is unaffected. */
	assert_int_equal(harness_open(f.p, "other", SP_WAIT_SLEEP, 1 << 20, &o), 0);
	assert_int_equal(memclient_seq_open(o, 1, BLOCKS, &q2), 0);
	assert_int_equal(memclient_seq_open(o, 2, BLOCKS, &q2), 0);
	/* An unknown tenant is refused. */
	struct memclient *x = NULL;
	assert_int_not_equal(harness_open(f.p, "nobody", SP_WAIT_SLEEP, 128 << 10, &x), 0);
	assert_null(x);
	/* A tenant that does not admit our uid refuses us. */
	assert_int_equal(harness_open(f.p, "locked", SP_WAIT_SLEEP, 128 << 10, &x), -EACCES);
	assert_null(x);
	memclient_close(s);
	memclient_close(o);
	stop(&f);
}

/* Rewrite the tenants file (same three uid slots as start()). */
static void rewrite(struct fixture *f, const char *tenants_fmt)
{
	char text[512];

	snprintf(text, sizeof(text), tenants_fmt, (unsigned)getuid(), (unsigned)getuid(),
		 (unsigned)getuid() + 4242);
	free(harness_write_file(f->dir, "tenants", text));
}

/* Every unit of u[0..n) still holds what fill_seq wrote. */
static void assert_data_intact(struct memclient *a, const struct memclient_unit *u, uint32_t n)
{
	size_t ub = memclient_geometry(a)->unit_bytes;

	for (uint32_t i = 0; i < n; i++) {
		struct memclient_residency res;
		assert_int_equal(memclient_lookup(a, &u[i], &res), 0);
		assert_int_equal(res.state, SP_UNIT_RESIDENT);
		assert_int_equal(harness_check(memclient_slot_ptr(a, res.slot), ub, KEY_A, &u[i]),
				 0);
	}
}

static void test_reload(void **state)
{
	struct fixture f = start("alpha uid=%u quota=1M\n");
	struct memclient *a, *a2, *x = NULL;
	struct memclient_seq q, q2;
	struct memclient_unit u[64];
	uint32_t n;

	/* A tenant added to the file admits attaches after the reload, not before. */
	assert_int_not_equal(harness_open(f.p, "beta", SP_WAIT_SLEEP, 128 << 10, &x), 0);
	assert_null(x);
	rewrite(&f, "alpha uid=%u quota=1M\nbeta uid=%u quota=1M\n");
	assert_true(harness_reload(f.p, NULL, 0));
	assert_true(harness_log_contains(f.p, "tenants reloaded"));
	assert_int_equal(harness_open(f.p, "beta", SP_WAIT_SLEEP, 128 << 10, &x), 0);
	memclient_close(x);
	x = NULL;

	/* Quota lowered below alpha's use: held data stays, new attaches and seqs are refused. */
	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 256 << 10, &a), 0);
	assert_int_equal(memclient_seq_open(a, 1, BLOCKS, &q), 0);
	n = fill_seq(a, q, u);
	rewrite(&f, "alpha uid=%u quota=128K max-seqs=1\nbeta uid=%u quota=1M\n");
	assert_true(harness_reload(f.p, NULL, 0));
	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 128 << 10, &x), -EDQUOT);
	assert_null(x);
	assert_int_equal(memclient_seq_open(a, 2, BLOCKS, &q2), -EDQUOT);
	assert_data_intact(a, u, n);
	assert_int_equal(harness_stat(a, "tenant.quota_bytes"), 128 << 10);

	/* A bad file is refused whole: alpha's limits and beta stay as they were. */
	rewrite(&f, "alpha uid=%u quota=4M\nbeta uid=%u quota=1M colour=red\n");
	assert_false(harness_reload(f.p, NULL, 0));
	assert_true(harness_log_contains(f.p, "line 2: tenant beta: bad attribute 'colour=red'"));
	assert_int_equal(harness_stat(a, "tenant.quota_bytes"), 128 << 10);
	assert_int_equal(harness_open(f.p, "beta", SP_WAIT_SLEEP, 128 << 10, &x), 0);
	memclient_close(x);
	x = NULL;

	/* alpha removed: new attaches are refused, its open session works on until it closes. */
	rewrite(&f, "beta uid=%u quota=1M\n");
	assert_true(harness_reload(f.p, NULL, 0));
	assert_true(harness_log_contains(f.p, "removed tenants keep their open sessions"));
	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 64 << 10, &x), -EACCES);
	assert_null(x);
	assert_int_equal(memclient_ping(a), 0);
	assert_data_intact(a, u, n);
	assert_int_equal(memclient_seq_close(a, q), 0);
	memclient_close(a);

	/* Back in the file with a larger quota, alpha admits attaches again. */
	rewrite(&f, "alpha uid=%u quota=1M\nbeta uid=%u quota=1M\n");
	assert_true(harness_reload(f.p, NULL, 0));
	assert_int_equal(harness_open(f.p, "alpha", SP_WAIT_SLEEP, 512 << 10, &a2), 0);
	memclient_close(a2);
	stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_isolation),
	    cmocka_unit_test(test_wrong_token),
	    cmocka_unit_test(test_quotas),
	    cmocka_unit_test(test_reload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
