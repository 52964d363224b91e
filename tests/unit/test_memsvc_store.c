/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc store: sequence rows and unit words, slot allocation, commit, free, generations,
 * stale handles, the epoch rule for deferred slots, and running out of slots, rows and words.
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

struct fx {
	struct sp_seq_desc seqs[4];
	_Atomic uint64_t units[256];
	_Atomic uint64_t epoch;
	struct store *s;
};

/* 2 layers x 2 heads, 8 slots, 4 rows, 256 words. */
static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct store_opts o = {
	    .geom = {.n_layers = 2,
		     .n_kv_heads = 2,
		     .head_dim = 8,
		     .block_tokens = 4,
		     .dtype_bytes = 2,
		     .unit_bytes = 128},
	    .max_seqs = 4,
	    .unit_words_cap = 256,
	    .n_slots = 8,
	    .units_ctl_off = 4096,
	};

	assert_non_null(f);
	o.seqs = f->seqs;
	o.units = f->units;
	o.client_epoch = &f->epoch;
	assert_int_equal(store_open(&o, &f->s), 0);
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

static struct store_unit_id uid(uint32_t idx, uint32_t gen, uint32_t l, uint32_t h, uint32_t b)
{
	return (struct store_unit_id){idx, gen, l, h, b};
}

static void test_open_rejects_bad_opts(void **state)
{
	struct fx *f = *state;
	struct store_opts o = {.geom = {.n_layers = 1, .n_kv_heads = 1},
			       .max_seqs = 1,
			       .unit_words_cap = 1,
			       .n_slots = 0,
			       .seqs = f->seqs,
			       .units = f->units,
			       .client_epoch = &f->epoch};
	struct store *s = (struct store *)1;

	assert_int_equal(store_open(&o, &s), -EINVAL);
	assert_null(s);
	o.n_slots = SP_UNIT_SLOT_NONE;
	assert_int_equal(store_open(&o, &s), -EINVAL);
	store_free(NULL);
}

static void test_seq_open_publishes_row(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen;

	assert_int_equal(store_seq_open(f->s, 77, 10, &idx, &gen), 0);
	assert_int_equal(idx, 0);
	assert_int_not_equal(gen, 0);
	assert_int_equal(atomic_load(&f->seqs[0].gen), gen);
	assert_int_equal(f->seqs[0].state, SP_SEQ_OPEN);
	assert_int_equal(f->seqs[0].max_blocks, 10);
	assert_int_equal(f->seqs[0].user_key, 77);
	assert_int_equal(f->seqs[0].units_off, 4096);
	/* The second sequence's words follow the first's 2*2*10 words. */
	assert_int_equal(store_seq_open(f->s, 78, 5, &idx, &gen), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(f->seqs[1].units_off, 4096 + 40 * 8);
	assert_int_equal(store_seq_open(f->s, 1, 0, &idx, &gen), -EINVAL);
}

static void test_alloc_commit_free_cycle(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, slot, ugen, slot2, ugen2;
	struct store_unit_id u;
	struct store_stats st;
	uint64_t w;

	assert_int_equal(store_seq_open(f->s, 1, 4, &idx, &gen), 0);
	u = uid(idx, gen, 1, 1, 3); /* word (1*2+1)*4+3 = 15 */
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
	assert_true(slot < 8);
	w = atomic_load(&f->units[15]);
	assert_int_equal(sp_unit_word_state(w), SP_UNIT_ALLOCATED);
	assert_int_equal(sp_unit_word_slot(w), slot);
	assert_int_equal(sp_unit_word_gen(w), ugen);
	/* Not readable before commit: forecast is a miss. */
	assert_int_equal(store_unit_forecast(f->s, &u, 1, &slot2, &ugen2), -ENOENT);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot2, &ugen2), -EEXIST);
	assert_int_equal(slot2, slot);
	assert_int_equal(store_unit_commit(f->s, &u, 0, &slot2, &ugen2), 0);
	assert_int_equal(slot2, slot);
	assert_int_equal(sp_unit_word_state(atomic_load(&f->units[15])), SP_UNIT_RESIDENT);
	assert_int_equal(store_unit_commit(f->s, &u, 0, &slot2, &ugen2), -EEXIST);
	assert_int_equal(store_unit_forecast(f->s, &u, 0, &slot2, &ugen2), 0);
	assert_int_equal(slot2, slot);
	store_get_stats(f->s, &st);
	assert_int_equal(st.units_resident, 1);
	assert_int_equal(st.slots_used, 1);
	assert_int_equal(store_unit_free(f->s, &u, &slot2, &ugen2), 0);
	assert_int_equal(sp_unit_word_state(atomic_load(&f->units[15])), SP_UNIT_EMPTY);
	assert_int_equal(store_unit_free(f->s, &u, &slot2, &ugen2), -ENOENT);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_free, 8);
	assert_int_equal(st.units_resident, 0);
	/* A new allocation of the same unit gets a new generation. */
	assert_int_equal(store_unit_alloc(f->s, &u, &slot2, &ugen2), 0);
	assert_int_not_equal(ugen2, ugen);
	/* Commit of an EMPTY unit. */
	u.block = 0;
	assert_int_equal(store_unit_commit(f->s, &u, 0, &slot2, &ugen2), -ENOENT);
}

static void test_bad_ids(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, slot, ugen;
	struct store_unit_id u;

	assert_int_equal(store_seq_open(f->s, 1, 4, &idx, &gen), 0);
	u = uid(idx, gen, 2, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -EINVAL); /* layer */
	assert_int_equal(slot, SP_UNIT_SLOT_NONE);
	u = uid(idx, gen, 0, 2, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -EINVAL); /* head */
	u = uid(idx, gen, 0, 0, 4);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -EINVAL); /* block */
	u = uid(4, gen, 0, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -EINVAL); /* row range */
	u = uid(idx, gen + 1, 0, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ESTALE); /* generation */
	u = uid(1, 1, 0, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ESTALE); /* row not open */
	assert_int_equal(store_seq_close(f->s, 9, gen), -EINVAL);
	assert_int_equal(store_seq_close(f->s, idx, gen + 1), -ESTALE);
}

static void test_stale_after_close_and_reopen(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, idx2, gen2, slot, ugen;
	struct store_unit_id u;
	struct store_stats st;

	assert_int_equal(store_seq_open(f->s, 1, 4, &idx, &gen), 0);
	u = uid(idx, gen, 0, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
	assert_int_equal(store_unit_commit(f->s, &u, 0, &slot, &ugen), 0);
	assert_int_equal(store_seq_close(f->s, idx, gen), 0);
	assert_int_not_equal(atomic_load(&f->seqs[idx].gen), gen);
	assert_int_equal(sp_unit_word_state(atomic_load(&f->units[0])), SP_UNIT_EMPTY);
	assert_int_equal(store_seq_close(f->s, idx, gen), -ESTALE);
	assert_int_equal(store_unit_forecast(f->s, &u, 0, &slot, &ugen), -ESTALE);
	/* The row comes back with another generation; the old handle stays dead. */
	assert_int_equal(store_seq_open(f->s, 2, 4, &idx2, &gen2), 0);
	assert_int_equal(idx2, idx);
	assert_int_not_equal(gen2, gen);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ESTALE);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_free, 8);
	assert_int_equal(st.seqs_open, 1);
}

static void test_arena_full(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, slot, ugen;
	struct store_unit_id u;
	uint8_t seen[8] = {0};

	assert_int_equal(store_seq_open(f->s, 1, 16, &idx, &gen), 0);
	for (uint32_t b = 0; b < 8; b++) {
		u = uid(idx, gen, 0, 0, b);
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
		assert_true(slot < 8);
		assert_int_equal(seen[slot], 0); /* never the same slot twice */
		seen[slot] = 1;
	}
	u = uid(idx, gen, 0, 0, 8);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ENOSPC);
	assert_int_equal(slot, SP_UNIT_SLOT_NONE);
	/* Closing the sequence returns every slot (no leases held). */
	assert_int_equal(store_seq_close(f->s, idx, gen), 0);
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx, &gen), 0);
	u = uid(idx, gen, 1, 1, 15);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
}

static void test_rows_and_words_run_out(void **state)
{
	struct fx *f = *state;
	uint32_t idx[4], gen[4], i2, g2;

	/* 256 words / (2*2) = 64 blocks in all. */
	assert_int_equal(store_seq_open(f->s, 1, 65, &i2, &g2), -ENOSPC);
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx[0], &gen[0]), 0);
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx[1], &gen[1]), 0);
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx[2], &gen[2]), 0);
	assert_int_equal(store_seq_open(f->s, 1, 17, &i2, &g2), -ENOSPC); /* words */
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx[3], &gen[3]), 0);
	assert_int_equal(store_seq_open(f->s, 1, 1, &i2, &g2), -ENOSPC); /* rows */
	/* Free the second extent: a sequence that fits the hole reuses its words. */
	assert_int_equal(store_seq_close(f->s, idx[1], gen[1]), 0);
	assert_int_equal(store_seq_open(f->s, 1, 17, &i2, &g2), -ENOSPC);
	assert_int_equal(store_seq_open(f->s, 1, 16, &i2, &g2), 0);
	assert_int_equal(i2, idx[1]);
	assert_int_equal(f->seqs[i2].units_off, 4096 + 64 * 8);
}

static void test_deferred_free_respects_epoch(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, slot, ugen, s2, g2, leased;
	struct store_unit_id u;
	struct store_stats st;

	atomic_store(&f->epoch, 5);
	assert_int_equal(store_seq_open(f->s, 1, 16, &idx, &gen), 0);
	u = uid(idx, gen, 0, 0, 0);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
	assert_int_equal(store_unit_commit(f->s, &u, 3, &slot, &ugen), 0);	/* lease 3 <= 5 */
	assert_int_equal(store_unit_forecast(f->s, &u, 10, &leased, &ugen), 0); /* lease 10 */
	assert_int_equal(store_unit_free(f->s, &u, &s2, &g2), 0);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_deferred, 1);
	assert_int_equal(st.slots_free, 7);
	/* Fill the rest: the leased slot must not come back while the epoch is < 10. */
	for (uint32_t b = 1; b < 8; b++) {
		u = uid(idx, gen, 0, 0, b);
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
		assert_int_not_equal(slot, leased);
	}
	u = uid(idx, gen, 0, 0, 8);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ENOSPC);
	assert_int_equal(store_reclaim(f->s), 0);
	atomic_store(&f->epoch, 9);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), -ENOSPC);
	atomic_store(&f->epoch, 10);
	assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
	assert_int_equal(slot, leased);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_deferred, 0);
	assert_int_equal(st.slots_free, 0);
}

static void test_close_defers_leased_slots(void **state)
{
	struct fx *f = *state;
	uint32_t idx, gen, slot, ugen;
	struct store_unit_id u;
	struct store_stats st;

	assert_int_equal(store_seq_open(f->s, 1, 8, &idx, &gen), 0);
	for (uint32_t b = 0; b < 4; b++) {
		u = uid(idx, gen, 0, 1, b);
		assert_int_equal(store_unit_alloc(f->s, &u, &slot, &ugen), 0);
		assert_int_equal(store_unit_commit(f->s, &u, b < 2 ? 7 : 0, &slot, &ugen), 0);
	}
	assert_int_equal(store_seq_close(f->s, idx, gen), 0);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_deferred, 2);
	assert_int_equal(st.slots_free, 6);
	atomic_store(&f->epoch, 7);
	assert_int_equal(store_reclaim(f->s), 2);
	store_get_stats(f->s, &st);
	assert_int_equal(st.slots_free, 8);
	assert_int_equal(st.units_resident, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_rejects_bad_opts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seq_open_publishes_row, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_commit_free_cycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_after_close_and_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_arena_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rows_and_words_run_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deferred_free_respects_epoch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_defers_leased_slots, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
