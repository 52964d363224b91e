/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc store with a tier: watermarks, eviction order (oldest last-selected step first),
 * SPILLED -> LOADING -> RESIDENT, a failed restore becoming a miss, units freed or selected
 * while their I/O runs, and extents handed back for release. The I/O is simulated.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "store.h"

#define SLOTS 8u

struct fx {
	struct sp_seq_desc seqs[2];
	_Atomic uint64_t units[256];
	_Atomic uint64_t epoch;
	struct store *s;
	uint32_t row, gen;
};

/* 1 layer x 1 head, 8 slots; evict above 6 used down to 4. One sequence of 32 blocks. */
static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct store_opts o = {
	    .geom = {.n_layers = 1,
		     .n_kv_heads = 1,
		     .head_dim = 8,
		     .block_tokens = 4,
		     .dtype_bytes = 2,
		     .unit_bytes = 128},
	    .max_seqs = 2,
	    .unit_words_cap = 256,
	    .n_slots = SLOTS,
	    .units_ctl_off = 4096,
	    .tiered = true,
	    .high_slots = 6,
	    .low_slots = 4,
	};

	assert_non_null(f);
	o.seqs = f->seqs;
	o.units = f->units;
	o.client_epoch = &f->epoch;
	assert_int_equal(store_open(&o, &f->s), 0);
	assert_int_equal(store_seq_open(f->s, 1, 32, &f->row, &f->gen), 0);
	/* The client has finished every step the tests lease at: leases never hold a slot. */
	atomic_store(&f->epoch, 1000);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	store_free(f->s);
	free(f);
	return 0;
}

static struct store_unit_id uid(struct fx *f, uint32_t b)
{
	return (struct store_unit_id){f->row, f->gen, 0, 0, b};
}

static enum sp_unit_state state_of(struct fx *f, uint32_t b)
{
	struct store_unit_id u = uid(f, b);
	enum sp_unit_state st;
	uint32_t slot, gen;

	assert_int_equal(store_unit_lookup(f->s, &u, &st, &slot, &gen), 0);
	return st;
}

/* Blocks [0, n) allocated and committed at step 10 + block. */
static void fill(struct fx *f, uint32_t n)
{
	for (uint32_t b = 0; b < n; b++) {
		struct store_unit_id u = uid(f, b);
		uint32_t slot, gen;
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), 0);
		assert_int_equal(store_unit_commit(f->s, &u, 10 + b, &slot, &gen), 0);
	}
}

/* Evict what the watermarks want, the writes succeeding at extents 100 + i. */
static uint32_t evict(struct fx *f, struct store_io *io)
{
	uint32_t dropped, k = store_evict_pick(f->s, store_evict_want(f->s), io, 16, &dropped);

	for (uint32_t i = 0; i < k; i++) {
		io[i].res = 0;
		io[i].extent = 100 + io[i].block;
	}
	return store_evict_done(f->s, io, k) + dropped;
}

static void test_evict_oldest_first(void **state)
{
	struct fx *f = *state;
	struct store_io io[16];
	struct store_unit_id u = uid(f, 0);
	uint32_t slot, gen;

	fill(f, 6);
	assert_int_equal(store_evict_want(f->s), 0); /* at the high mark, not above */
	fill(f, 0);
	u = uid(f, 6);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), 0);
	assert_int_equal(store_unit_commit(f->s, &u, 1, &slot, &gen), 0); /* oldest step */
	/* Block 2 selected by a Forecast: newest. */
	u = uid(f, 2);
	assert_int_equal(store_unit_forecast(f->s, &u, 50, &slot, &gen), 0);
	assert_int_equal(store_evict_want(f->s), 3);
	assert_int_equal(evict(f, io), 3);
	assert_int_equal(state_of(f, 6), SP_UNIT_SPILLED);
	assert_int_equal(state_of(f, 0), SP_UNIT_SPILLED);
	assert_int_equal(state_of(f, 1), SP_UNIT_SPILLED);
	assert_int_equal(state_of(f, 2), SP_UNIT_RESIDENT);
	assert_int_equal(state_of(f, 3), SP_UNIT_RESIDENT);
	assert_int_equal(store_evict_want(f->s), 0);
}

static void test_restore_and_clean_drop(void **state)
{
	struct fx *f = *state;
	struct store_io io[16];
	struct store_unit_id u = uid(f, 0);
	struct store_stats st;
	uint32_t slot, gen, gen0;

	fill(f, 7);
	assert_int_equal(store_unit_lookup(f->s, &u, &(enum sp_unit_state){0}, &slot, &gen0), 0);
	assert_int_equal(evict(f, io), 3);
	/* A Forecast of a spilled unit: LOADING without a slot, then a slot, then RESIDENT. */
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), -EINPROGRESS);
	assert_int_equal(state_of(f, 0), SP_UNIT_LOADING);
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), -EINPROGRESS);
	assert_int_equal(store_load_queued(f->s), 1);
	assert_int_equal(store_load_pick(f->s, io, 16), 1);
	assert_int_equal(io[0].block, 0);
	assert_int_equal(io[0].extent, 100);
	assert_int_equal(io[0].gen, gen0);
	io[0].res = 0;
	assert_int_equal(store_load_done(f->s, io, 1), 0);
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), 0);
	assert_int_equal(gen, gen0);
	/* Restored and unchanged: evicting it again needs no write. */
	fill(f, 0);
	store_get_stats(f->s, &st);
	assert_int_equal(st.extents, 3);
	assert_int_equal(st.units_spilled, 2);
}

static void test_failed_restore_is_a_miss(void **state)
{
	struct fx *f = *state;
	struct store_io io[16];
	struct store_unit_id u = uid(f, 0);
	uint64_t ext[8];
	uint32_t slot, gen;
	struct store_stats st;

	fill(f, 7);
	assert_int_equal(evict(f, io), 3);
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), -EINPROGRESS);
	assert_int_equal(store_load_pick(f->s, io, 16), 1);
	io[0].res = -EBADMSG;
	assert_int_equal(store_load_done(f->s, io, 1), 1);
	assert_int_equal(state_of(f, 0), SP_UNIT_EMPTY);
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), -ENOENT);
	assert_int_equal(store_ext_take(f->s, ext, 8), 1);
	assert_int_equal(ext[0], 100);
	store_get_stats(f->s, &st);
	assert_int_equal(st.units_lost, 1);
	assert_int_equal(st.units_loading, 0);
}

static void test_freed_during_io(void **state)
{
	struct fx *f = *state;
	struct store_io io[16], lio[4];
	struct store_unit_id u = uid(f, 0);
	uint32_t dropped, slot, gen, k;
	struct store_stats st;
	uint64_t ext[8];

	fill(f, 7);
	k = store_evict_pick(f->s, store_evict_want(f->s), io, 16, &dropped);
	assert_int_equal(k, 3);
	/* Block 0 freed while its write runs: its new extent is released, not recorded. */
	assert_int_equal(store_unit_free(f->s, &u, &slot, &gen), 0);
	for (uint32_t i = 0; i < k; i++) {
		io[i].res = 0;
		io[i].extent = 100 + io[i].block;
	}
	assert_int_equal(store_evict_done(f->s, io, k), 2);
	assert_int_equal(store_ext_take(f->s, ext, 8), 1);
	assert_int_equal(ext[0], 100);
	/* Block 1 freed while its restore reads into a slot: the slot waits for the read. */
	u = uid(f, 1);
	assert_int_equal(store_unit_forecast(f->s, &u, 60, &slot, &gen), -EINPROGRESS);
	assert_int_equal(store_load_pick(f->s, lio, 4), 1);
	assert_int_equal(store_unit_free(f->s, &u, &slot, &gen), 0);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_free + st.slots_deferred, SLOTS - 5); /* 4 resident + 1 */
	lio[0].res = 0;
	assert_int_equal(store_load_done(f->s, lio, 1), 0);
	assert_int_equal(state_of(f, 1), SP_UNIT_EMPTY);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_free + st.slots_deferred, SLOTS - 4);
}

/*
 * Two batches in flight: the second pick (cap 1 per batch, forced by the watermark) never
 * takes a unit of the first, want counts the first as going, and a write that failed leaves
 * its unit pickable again.
 */
static void test_batches_in_flight(void **state)
{
	struct fx *f = *state;
	struct store_io a[16], b[16], c[16];
	uint32_t dropped, ka, kb, kc;

	fill(f, 8); /* 8 used, high 6, low 4: want 4 */
	assert_int_equal(store_evict_want(f->s), 4);
	ka = store_evict_pick(f->s, store_evict_want(f->s), a, 2, &dropped);
	assert_int_equal(ka, 2);
	assert_int_equal(store_evict_want(f->s), 2); /* two are on their way */
	kb = store_evict_pick(f->s, store_evict_want(f->s), b, 16, &dropped);
	assert_int_equal(kb, 2);
	for (uint32_t i = 0; i < ka; i++)
		for (uint32_t j = 0; j < kb; j++)
			assert_int_not_equal(a[i].slot, b[j].slot);
	assert_int_equal(store_evict_want(f->s), 0);
	assert_int_equal(store_evict_pick(f->s, 4, c, 16, &dropped), 4); /* the other four */
	for (uint32_t i = 0; i < 4; i++) {
		c[i].res = -EIO; /* never written: they stay RESIDENT and pickable */
		b[i % 2].res = 0;
		b[i % 2].extent = 200 + b[i % 2].block;
	}
	assert_int_equal(store_evict_done(f->s, c, 4), 0);
	assert_int_equal(store_evict_done(f->s, b, kb), 2);
	/* the first batch failed: its units count again */
	for (uint32_t i = 0; i < ka; i++)
		a[i].res = -ENOSPC;
	assert_int_equal(store_evict_done(f->s, a, ka), 0);
	assert_int_equal(store_evict_want(f->s), 0); /* 6 used: at the high mark again */
	kc = store_evict_pick(f->s, 2, c, 16, &dropped);
	assert_int_equal(kc, 2);
	assert_int_equal(c[0].slot, a[0].slot); /* oldest first, as before */
	assert_int_equal(state_of(f, b[0].block), SP_UNIT_SPILLED);
}

/*
 * No slot free while the watermarks see nothing to do (half the slots wait for the client's
 * epoch): a refused allocation makes eviction free what it asked for.
 */
static void test_refused_alloc_drives_eviction(void **state)
{
	struct fx *f = *state;
	struct store_io io[16];
	struct store_unit_id u;
	uint32_t slot, gen;

	fill(f, 8);
	assert_int_equal(evict(f, io), 4); /* 4 used: blocks 4..7 */
	fill(f, 0);
	for (uint32_t b = 8; b < 12; b++) { /* leased far ahead, then freed: deferred slots */
		u = uid(f, b);
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), 0);
		assert_int_equal(store_unit_commit(f->s, &u, 5000, &slot, &gen), 0);
		assert_int_equal(store_unit_free(f->s, &u, &slot, &gen), 0);
	}
	assert_int_equal(store_evict_want(f->s), 0);
	u = uid(f, 12);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), -EAGAIN);
	u = uid(f, 13);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), -EAGAIN);
	assert_int_equal(store_evict_want(f->s), 2);
	assert_int_equal(evict(f, io), 2);
	for (uint32_t b = 12; b < 14; b++) {
		u = uid(f, b);
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), 0);
	}
	assert_int_equal(store_evict_want(f->s), 0);
}

static void test_full_arena_waits_or_refuses(void **state)
{
	struct fx *f = *state;
	struct store_unit_id u = uid(f, 8);
	uint32_t slot, gen;

	fill(f, 8);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), -EAGAIN);
	store_set_degraded(f->s, true);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &gen), -ENOSPC);
	store_set_degraded(f->s, false);
	/* Cancelled restores go back to SPILLED. */
	{
		struct store_io io[16];
		store_set_degraded(f->s, false);
		assert_int_equal(evict(f, io), 4);
		u = uid(f, 0);
		fill(f, 0);
		assert_int_equal(store_unit_forecast(f->s, &u, 70, &slot, &gen), -EINPROGRESS);
		assert_int_equal(store_load_cancel(f->s), 1);
		assert_int_equal(state_of(f, 0), SP_UNIT_SPILLED);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_evict_oldest_first, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore_and_clean_drop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_restore_is_a_miss, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_freed_during_io, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batches_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_alloc_drives_eviction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_arena_waits_or_refuses, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
