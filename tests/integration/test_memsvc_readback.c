/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: a real sparda-memsvc, one client. Units are allocated, written through the
 * arena mapping with a per-unit pattern, committed (ZeroMQ and ring), Forecast back (ring and
 * ZeroMQ) and checked byte for byte, in both wait modes. Misses and stale handles are errors.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "memsvc_harness.h"

#define MAX_BLOCKS 4
#define KEY 0x5eedull

/* Every (layer, head, block) of seq, in index order. */
static uint32_t all_units(struct memclient_seq seq, struct memclient_unit *u)
{
	struct sp_geometry g = harness_geometry();
	uint32_t n = 0;

	for (uint32_t l = 0; l < g.n_layers; l++)
		for (uint32_t h = 0; h < g.n_kv_heads; h++)
			for (uint32_t b = 0; b < MAX_BLOCKS; b++)
				u[n++] = (struct memclient_unit){seq, l, h, b};
	return n;
}

static size_t wrong_bytes(struct memclient *c, const struct memclient_unit *u,
			  const struct memclient_result *r, const uint32_t *slots, uint32_t n)
{
	size_t ub = memclient_geometry(c)->unit_bytes, wrong = 0;

	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(r[i].status, 0);
		assert_int_equal(r[i].slot, slots[i]);
		wrong += harness_check(memclient_slot_ptr(c, r[i].slot), ub, KEY, &u[i]);
	}
	return wrong;
}

static void write_units(struct memclient *c, struct memclient_seq seq, struct memclient_unit *u,
			uint32_t *slots, uint32_t *n_out)
{
	struct memclient_result r[64];
	struct memclient_residency res;
	uint32_t n = all_units(seq, u);
	size_t ub = memclient_geometry(c)->unit_bytes;

	assert_int_equal(memclient_alloc(c, u, n, r), 0);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(r[i].status, 0);
		assert_true(r[i].slot < memclient_n_slots(c));
		for (uint32_t j = 0; j < i; j++)
			assert_int_not_equal(slots[j], r[i].slot);
		slots[i] = r[i].slot;
		assert_int_equal(memclient_lookup(c, &u[i], &res), 0);
		assert_int_equal(res.state, SP_UNIT_ALLOCATED);
		assert_int_equal(res.slot, slots[i]);
		assert_ptr_equal(memclient_unit_ptr(c, &u[i]), memclient_slot_ptr(c, slots[i]));
		harness_fill(memclient_slot_ptr(c, slots[i]), ub, KEY, &u[i]);
	}
	/* A second alloc of a unit that has a slot is refused per unit. */
	assert_int_equal(memclient_alloc(c, u, 1, r), 0);
	assert_int_equal(r[0].status, -EEXIST);
	/* Half committed over ZeroMQ, half over the ring. */
	assert_int_equal(memclient_commit(c, u, n / 2, 1, r), 0);
	for (uint32_t i = 0; i < n / 2; i++)
		assert_int_equal(r[i].status, 0);
	assert_int_equal(memclient_commit_ring(c, u + n / 2, n - n / 2, 1, r + n / 2), 0);
	for (uint32_t i = n / 2; i < n; i++)
		assert_int_equal(r[i].status, 0);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(memclient_lookup(c, &u[i], &res), 0);
		assert_int_equal(res.state, SP_UNIT_RESIDENT);
		assert_int_equal(res.slot, slots[i]);
	}
	*n_out = n;
}

static void readback(enum sp_wait_mode mode)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct memclient_unit u[64], miss;
	struct memclient_result r[64];
	struct memclient_residency res;
	struct memclient_seq seq, empty;
	uint32_t slots[64], n, id;
	struct memclient *c;
	int status;

	assert_int_equal(harness_open(p, NULL, mode, 256 << 10, &c), 0);
	assert_int_equal(memclient_ping(c), 0);
	assert_int_equal(memclient_seq_open(c, 42, MAX_BLOCKS, &seq), 0);
	write_units(c, seq, u, slots, &n);

	/* The raw unit-word pool (what the gather kernel reads) agrees with lookups. */
	const uint64_t *words;
	size_t words_bytes;
	int64_t base;
	memclient_unit_words(c, &words, &words_bytes);
	assert_int_equal(memclient_seq_word_base(c, seq, &base), 0);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t idx = (uint64_t)base +
			       ((uint64_t)u[i].layer * harness_geometry().n_kv_heads + u[i].head) *
				   MAX_BLOCKS +
			       u[i].block;
		assert_true((idx + 1) * 8 <= words_bytes);
		assert_int_equal(sp_unit_word_state(words[idx]), SP_UNIT_RESIDENT);
		assert_int_equal(sp_unit_word_slot(words[idx]), slots[i]);
	}

	memset(r, 0x5a, sizeof(r));
	assert_int_equal(memclient_forecast(c, u, n, 2, r), 0);
	assert_int_equal(wrong_bytes(c, u, r, slots, n), 0);
	memset(r, 0x5a, sizeof(r));
	assert_int_equal(memclient_forecast_zmq(c, u, n, 2, r), 0);
	assert_int_equal(wrong_bytes(c, u, r, slots, n), 0);
	/* Split submit/reap, two requests outstanding at once. */
	assert_int_equal(memclient_forecast_submit(c, u, 5, 3, r, &id), 0);
	uint32_t id2;
	assert_int_equal(memclient_forecast_submit(c, u + 5, n - 5, 3, r + 5, &id2), 0);
	assert_int_equal(memclient_forecast_reap(c, id2, -1), 0);
	assert_int_equal(memclient_forecast_reap(c, id, -1), 0);
	assert_int_equal(memclient_forecast_reap(c, id, -1), -ENOENT);
	assert_int_equal(wrong_bytes(c, u, r, slots, n), 0);

	/* A unit never written is a miss, on both paths. */
	assert_int_equal(memclient_seq_open(c, 43, MAX_BLOCKS, &empty), 0);
	miss = (struct memclient_unit){empty, 1, 1, 2};
	assert_int_equal(memclient_forecast(c, &miss, 1, 4, r), 0);
	assert_int_equal(r[0].status, -ENOENT);
	assert_int_equal(memclient_forecast_zmq(c, &miss, 1, 4, r), 0);
	assert_int_equal(r[0].status, -ENOENT);
	/* Out-of-range ids are refused per unit. */
	miss.block = MAX_BLOCKS;
	assert_int_equal(memclient_forecast(c, &miss, 1, 4, r), 0);
	assert_int_equal(r[0].status, -EINVAL);

	/* After close the handle is stale everywhere. */
	assert_int_equal(memclient_seq_close(c, seq), 0);
	assert_int_equal(memclient_lookup(c, &u[0], &res), -ESTALE);
	assert_null(memclient_unit_ptr(c, &u[0]));
	assert_int_equal(memclient_forecast(c, u, 1, 5, r), 0);
	assert_int_equal(r[0].status, -ESTALE);
	assert_int_equal(memclient_seq_close(c, seq), -ESTALE);
	assert_int_equal(memclient_seq_word_base(c, seq, &base), -ESTALE);
	memclient_epoch_publish(c, 5);

	memclient_close(c);
	assert_int_equal(memsvc_proc_stop(p, SIGTERM, 5000, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	memsvc_proc_free(p);
}

/*
 * The vector area: requests whose units span sequences (one SQE per run), the area full of
 * outstanding requests (the next one goes as one ring entry per unit), a reservation that
 * wraps to the start of the area; every answer checked byte for byte.
 */
static void test_vector_area(void **state)
{
	const char *const args[] = {"--sq-entries=32", NULL}; /* a 32-entry area */
	struct memsvc_proc *p = harness_start(args);
	struct memclient_unit ua[64], ub[64], mix[15], um[64];
	struct memclient_result r[64], r2[64], r3[64];
	uint32_t sa[64], sb[64], smix[15], sm[64], na, nb, id1, id2, id3;
	struct memclient_seq a, b;
	struct memclient *c;

	(void)state;
	assert_int_equal(harness_open(p, NULL, SP_WAIT_POLL, 256 << 10, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, MAX_BLOCKS, &a), 0);
	assert_int_equal(memclient_seq_open(c, 2, MAX_BLOCKS, &b), 0);
	write_units(c, a, ua, sa, &na);
	write_units(c, b, ub, sb, &nb);
	assert_int_equal(na, 16);
	assert_int_equal(memclient_forecasts_vectored(c), 0); /* commits go one entry per unit */

	/* a, then b, then a again: three runs of one request */
	for (uint32_t i = 0; i < 15; i++) {
		mix[i] = i < 5 ? ua[i] : i < 10 ? ub[i] : ua[i];
		smix[i] = i < 5 ? sa[i] : i < 10 ? sb[i] : sa[i];
	}
	memset(r, 0x5a, sizeof(r));
	assert_int_equal(memclient_forecast(c, mix, 15, 2, r), 0);
	assert_int_equal(wrong_bytes(c, mix, r, smix, 15), 0);
	assert_int_equal(memclient_forecasts_vectored(c), 1);

	/* 16 + 16 outstanding fill the area; the third goes per unit */
	assert_int_equal(memclient_forecast_submit(c, ua, 16, 3, r, &id1), 0);
	assert_int_equal(memclient_forecast_submit(c, ub, 16, 3, r2, &id2), 0);
	assert_int_equal(memclient_forecast_submit(c, ua, 8, 3, r3, &id3), 0);
	assert_int_equal(memclient_forecasts_vectored(c), 3);
	assert_int_equal(memclient_forecast_reap(c, id2, -1), 0);
	assert_int_equal(memclient_forecast_reap(c, id3, -1), 0);
	assert_int_equal(memclient_forecast_reap(c, id1, -1), 0);
	assert_int_equal(wrong_bytes(c, ua, r, sa, 16), 0);
	assert_int_equal(wrong_bytes(c, ub, r2, sb, 16), 0);
	assert_int_equal(wrong_bytes(c, ua, r3, sa, 8), 0);

	/* [0, 16) and [16, 24) outstanding, the first reaped: the next 16 wrap to [0, 16) */
	for (uint32_t i = 0; i < 16; i++)
		um[i] = ub[15 - i], sm[i] = sb[15 - i];
	assert_int_equal(memclient_forecast_submit(c, ua, 16, 4, r, &id1), 0);
	assert_int_equal(memclient_forecast_submit(c, ub, 8, 4, r2, &id2), 0);
	assert_int_equal(memclient_forecast_reap(c, id1, -1), 0);
	assert_int_equal(memclient_forecast_submit(c, um, 16, 4, r3, &id3), 0);
	assert_int_equal(memclient_forecasts_vectored(c), 6);
	assert_int_equal(memclient_forecast_reap(c, id3, -1), 0);
	assert_int_equal(memclient_forecast_reap(c, id2, -1), 0);
	assert_int_equal(wrong_bytes(c, ua, r, sa, 16), 0);
	assert_int_equal(wrong_bytes(c, ub, r2, sb, 8), 0);
	assert_int_equal(wrong_bytes(c, um, r3, sm, 16), 0);
	assert_int_equal(memclient_late_completions(c), 0);
	memclient_close(c);

	/* per_unit_forecast: the same answers without the area */
	struct memclient_opts o = {.runtime_dir = memsvc_proc_runtime_dir(p),
				   .client_name = "test",
				   .geom = harness_geometry(),
				   .arena_bytes = 256 << 10,
				   .max_seqs = 8,
				   .wait_mode = SP_WAIT_POLL,
				   .timeout_ms = 3000,
				   .per_unit_forecast = true};
	assert_int_equal(memclient_open(&o, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, MAX_BLOCKS, &a), 0);
	write_units(c, a, ua, sa, &na);
	assert_int_equal(memclient_forecast(c, ua, na, 2, r), 0);
	assert_int_equal(wrong_bytes(c, ua, r, sa, na), 0);
	assert_int_equal(memclient_forecasts_vectored(c), 0);
	memclient_close(c);
	memsvc_proc_free(p);
}

static void test_readback_sleep(void **state)
{
	readback(SP_WAIT_SLEEP);
}

static void test_readback_poll(void **state)
{
	readback(SP_WAIT_POLL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_readback_sleep),
	    cmocka_unit_test(test_readback_poll),
	    cmocka_unit_test(test_vector_area),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
