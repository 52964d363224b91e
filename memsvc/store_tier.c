/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The store's side of the NVMe tier: which units to evict (oldest last-selected step first),
 * which restores get a slot, and what a finished write or read changes. The I/O happens
 * between the pick and the done calls without the lock, so every done call checks that the
 * unit word is still the one it picked: a unit freed or reallocated meanwhile is left alone.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static uint64_t word_load(const struct store *s, uint64_t word)
{
	return atomic_load_explicit(&s->o.units[word], memory_order_relaxed);
}

static void word_set(struct store *s, uint64_t word, uint32_t slot, uint32_t gen,
		     enum sp_unit_state st)
{
	/* Release: a reader that sees the new state sees the slot's bytes (restores). */
	atomic_store_explicit(&s->o.units[word], sp_unit_word(slot, gen, st), memory_order_release);
}

/* Queue an extent for the tier's owner to free. */
static void ext_release(struct store *s, uint64_t e)
{
	if (s->ext_free_n == s->ext_free_cap) {
		uint64_t ncap = s->ext_free_cap ? s->ext_free_cap * 2 : 256;
		uint64_t *p = realloc(s->ext_free, ncap * sizeof(*p));
		if (!p)
			return; /* the extent leaks until the session's tier closes */
		s->ext_free = p;
		s->ext_free_cap = ncap;
	}
	s->ext_free[s->ext_free_n++] = e;
}

void store_word_ext_drop(struct store *s, uint64_t word)
{
	uint64_t e = s->word_ext[word];

	if (e == STORE_EXTENT_NONE)
		return;
	s->word_ext[word] = STORE_EXTENT_NONE;
	s->n_extents--;
	ext_release(s, e);
}

/* The (row, layer, head, block) of a word of an open row. */
static void word_ident(const struct store *s, uint64_t word, struct store_io *io)
{
	uint32_t lo = 0, hi = s->n_ext;
	uint64_t in, lh;

	while (hi - lo > 1) {
		uint32_t mid = (lo + hi) / 2;
		if (s->ext[mid].start <= word)
			lo = mid;
		else
			hi = mid;
	}
	in = word - s->ext[lo].start;
	io->seq = s->ext[lo].row;
	io->block = (uint32_t)(in % s->row_blocks[io->seq]);
	lh = in / s->row_blocks[io->seq];
	io->head = (uint32_t)(lh % s->o.geom.n_kv_heads);
	io->layer = (uint32_t)(lh / s->o.geom.n_kv_heads);
}

static int cand_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	if (x[0] != y[0])
		return x[0] < y[0] ? -1 : 1;
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* RESIDENT units (clean_only: those with an extent) as (step, slot) pairs into out, unsorted. */
static uint32_t candidates(struct store *s, bool clean_only, uint64_t *out)
{
	uint64_t epoch = store_client_epoch(s);
	uint32_t n = 0;

	for (uint32_t slot = 0; slot < s->o.n_slots; slot++) {
		uint64_t word, w;
		/* leased for a step the client has not finished: it may be reading it now; or in
		 * a spill write already */
		if (s->slot_state[slot] != SLOT_USED || s->slot_lease[slot] > epoch ||
		    s->slot_writing[slot])
			continue;
		word = s->slot_word[slot];
		w = word_load(s, word);
		if (sp_unit_word_state(w) != SP_UNIT_RESIDENT || sp_unit_word_slot(w) != slot)
			continue;
		if (clean_only && s->word_ext[word] == STORE_EXTENT_NONE)
			continue;
		out[2 * n] = s->word_step[word];
		out[2 * n + 1] = slot;
		n++;
	}
	return n;
}

/* A RESIDENT unit that is also on disk gives up its slot (the epoch rule still applies). */
static void drop_one(struct store *s, uint32_t slot)
{
	uint64_t word = s->slot_word[slot];
	uint64_t w = word_load(s, word);

	word_set(s, word, SP_UNIT_SLOT_NONE, sp_unit_word_gen(w), SP_UNIT_SPILLED);
	s->n_resident--;
	s->n_spilled++;
	store_slot_put(s, slot);
}

uint32_t store_drop_clean(struct store *s, uint32_t want)
{
	uint32_t n = candidates(s, true, s->clean);

	if (want > n)
		want = n;
	if (want == 1) { /* the common case (an alloc in a full arena): no sort */
		uint32_t best = 0;
		for (uint32_t i = 1; i < n; i++)
			if (s->clean[2 * i] < s->clean[2 * best])
				best = i;
		s->clean[1] = s->clean[2 * best + 1];
	} else {
		qsort(s->clean, n, 2 * sizeof(*s->clean), cand_cmp);
	}
	for (uint32_t i = 0; i < want; i++)
		drop_one(s, (uint32_t)s->clean[2 * i + 1]);
	return want;
}

uint32_t store_evict_want(struct store *s)
{
	uint64_t used, want = 0;

	if (!s->o.tiered)
		return 0;
	used = s->o.n_slots - s->n_free - s->n_deferred;
	if (used > s->o.high_slots && used - s->o.low_slots > s->n_writing)
		want = used - s->o.low_slots - s->n_writing; /* those in flight go when written */
	/* No slot free: queued restores, and allocations refused since the last slot went out
	 * (one larger than what the watermarks free), need that many, less those being written. */
	if (!s->n_free) {
		uint64_t need = s->loadq_n + s->alloc_short;
		if (need > s->n_writing && want < need - s->n_writing)
			want = need - s->n_writing;
	}
	return want > UINT32_MAX ? UINT32_MAX : (uint32_t)want;
}

bool store_evict_scan(struct store *s, uint32_t want)
{
	if (!s->o.tiered || !want || (s->cand_sorted && s->cand_pos + want <= s->cand_n))
		return false;
	s->cand_n = candidates(s, false, s->cand);
	s->cand_pos = 0;
	s->cand_sorted = false;
	return true;
}

void store_evict_sort(struct store *s)
{
	qsort(s->cand, s->cand_n, 2 * sizeof(*s->cand), cand_cmp);
	s->cand_sorted = true;
}

/* Is the cached candidate i still a RESIDENT unit whose step has not moved since the scan? */
static bool cand_valid(struct store *s, uint32_t i)
{
	uint32_t slot = (uint32_t)s->cand[2 * i + 1];
	uint64_t word, w;

	if (s->slot_state[slot] != SLOT_USED || s->slot_lease[slot] > store_client_epoch(s) ||
	    s->slot_writing[slot])
		return false;
	word = s->slot_word[slot];
	w = word_load(s, word);
	return sp_unit_word_state(w) == SP_UNIT_RESIDENT && sp_unit_word_slot(w) == slot &&
	       s->word_step[word] == s->cand[2 * i];
}

uint32_t store_evict_pick(struct store *s, uint32_t want, struct store_io *io, uint32_t cap,
			  uint32_t *dropped)
{
	uint32_t k = 0;

	*dropped = 0;
	if (!s->o.tiered || !want)
		return 0;
	/*
	 * One scan and sort serves several batches: later picks walk the same list, skipping
	 * units freed, restored or selected since (units newer than the scan are not candidates
	 * before it runs out, and they are the newest anyway).
	 */
	if (store_evict_scan(s, want))
		store_evict_sort(s);
	for (; s->cand_pos < s->cand_n && *dropped + k < want && k < cap; s->cand_pos++) {
		uint32_t slot = (uint32_t)s->cand[2 * s->cand_pos + 1];
		uint64_t word = s->slot_word[slot];
		if (!cand_valid(s, s->cand_pos))
			continue;
		if (s->word_ext[word] != STORE_EXTENT_NONE) {
			drop_one(s, slot);
			(*dropped)++;
			continue;
		}
		io[k] = (struct store_io){.word = word,
					  .word_val = word_load(s, word),
					  .step = s->word_step[word],
					  .extent = STORE_EXTENT_NONE,
					  .slot = slot,
					  .gen = sp_unit_word_gen(word_load(s, word))};
		word_ident(s, word, &io[k]);
		s->slot_writing[slot] = 1; /* until store_evict_done: no second pick meanwhile */
		s->n_writing++;
		k++;
	}
	return k;
}

uint32_t store_evict_done(struct store *s, struct store_io *io, uint32_t n)
{
	uint32_t spilled = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct store_io *x = &io[i];
		if (s->slot_writing[x->slot]) {
			s->slot_writing[x->slot] = 0;
			s->n_writing--;
		}
		if (x->res)
			continue; /* stays RESIDENT and dirty; the next pass may try again */
		if (word_load(s, x->word) != x->word_val) {
			/* Freed or reallocated meanwhile: the copy on disk belongs to nobody. */
			ext_release(s, x->extent);
			continue;
		}
		s->word_ext[x->word] = x->extent;
		s->n_extents++;
		if (s->word_step[x->word] != x->step)
			continue; /* selected again while being written: keep it, now clean */
		drop_one(s, x->slot);
		spilled++;
	}
	return spilled;
}

uint64_t store_load_queued(const struct store *s)
{
	return s->loadq_n;
}

uint32_t store_load_pick(struct store *s, struct store_io *io, uint32_t cap)
{
	uint32_t k = 0;

	if (s->loadq_n > s->n_free)
		store_reclaim(s);
	if (s->loadq_n > s->n_free) {
		uint64_t need = s->loadq_n - s->n_free;
		store_drop_clean(s, need > cap ? cap : (uint32_t)need);
	}
	while (s->loadq_n && k < cap) {
		uint64_t word = s->loadq[s->loadq_head];
		uint64_t w = word_load(s, word);
		uint32_t slot;

		if (sp_unit_word_state(w) != SP_UNIT_LOADING ||
		    sp_unit_word_slot(w) != SP_UNIT_SLOT_NONE) {
			s->loadq_head++, s->loadq_n--; /* freed or already picked */
			continue;
		}
		if (!s->n_free)
			break;
		slot = s->free_stack[--s->n_free];
		s->slot_state[slot] = SLOT_LOADING;
		s->slot_lease[slot] = 0;
		s->slot_word[slot] = word;
		word_set(s, word, slot, sp_unit_word_gen(w), SP_UNIT_LOADING);
		io[k] = (struct store_io){
		    .word = word,
		    .word_val = sp_unit_word(slot, sp_unit_word_gen(w), SP_UNIT_LOADING),
		    .extent = s->word_ext[word],
		    .slot = slot,
		    .gen = sp_unit_word_gen(w)};
		word_ident(s, word, &io[k]);
		k++;
		s->loadq_head++, s->loadq_n--;
	}
	if (!s->loadq_n)
		s->loadq_head = 0;
	return k;
}

uint32_t store_load_done(struct store *s, struct store_io *io, uint32_t n)
{
	uint32_t failed = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct store_io *x = &io[i];
		s->slot_state[x->slot] = SLOT_USED;
		if (word_load(s, x->word) != x->word_val) {
			store_slot_put(s, x->slot); /* freed during the read */
			continue;
		}
		s->n_loading--;
		if (!x->res && x->extent != STORE_EXTENT_NONE) {
			word_set(s, x->word, x->slot, x->gen, SP_UNIT_RESIDENT);
			s->n_resident++;
			continue;
		}
		/* Never wrong bytes: a unit that cannot be read back is gone. */
		word_set(s, x->word, SP_UNIT_SLOT_NONE, x->gen, SP_UNIT_EMPTY);
		store_word_ext_drop(s, x->word);
		store_slot_put(s, x->slot);
		s->lost++;
		failed++;
	}
	return failed;
}

uint32_t store_ext_take(struct store *s, uint64_t *out, uint32_t cap)
{
	uint32_t k = s->ext_free_n < cap ? (uint32_t)s->ext_free_n : cap;

	if (!k)
		return 0;
	memcpy(out, s->ext_free + (s->ext_free_n - k), k * sizeof(*out));
	s->ext_free_n -= k;
	return k;
}

void store_set_degraded(struct store *s, bool degraded)
{
	s->degraded = degraded;
}

uint32_t store_load_cancel(struct store *s)
{
	uint32_t k = 0;

	for (uint64_t i = 0; i < s->loadq_n; i++) {
		uint64_t word = s->loadq[s->loadq_head + i];
		uint64_t w = word_load(s, word);
		if (sp_unit_word_state(w) != SP_UNIT_LOADING ||
		    sp_unit_word_slot(w) != SP_UNIT_SLOT_NONE)
			continue;
		word_set(s, word, SP_UNIT_SLOT_NONE, sp_unit_word_gen(w), SP_UNIT_SPILLED);
		s->n_loading--;
		s->n_spilled++;
		k++;
	}
	s->loadq_head = s->loadq_n = 0;
	return k;
}
