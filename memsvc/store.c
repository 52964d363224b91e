/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One session's block index and slot allocator. The shared tables are written only here, with
 * release stores so a client that loads with acquire sees a whole row or word; the private
 * arrays are the authority (the client can read but never write ctl, still we never trust a
 * value we can keep ourselves).
 */
#include "store_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int store_open(const struct store_opts *o, struct store **out)
{
	struct store *s;

	*out = NULL;
	if (!o->max_seqs || !o->unit_words_cap || !o->n_slots || o->n_slots >= SP_UNIT_SLOT_NONE ||
	    !o->seqs || !o->units || !o->client_epoch || !o->geom.n_layers || !o->geom.n_kv_heads)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->units_per_block_row = o->geom.n_layers * o->geom.n_kv_heads;
	s->row_gen = calloc(o->max_seqs, sizeof(*s->row_gen));
	s->row_open = calloc(o->max_seqs, sizeof(*s->row_open));
	s->row_word = calloc(o->max_seqs, sizeof(*s->row_word));
	s->row_blocks = calloc(o->max_seqs, sizeof(*s->row_blocks));
	s->ext = calloc(o->max_seqs, sizeof(*s->ext));
	s->slot_state = calloc(o->n_slots, sizeof(*s->slot_state));
	s->slot_lease = calloc(o->n_slots, sizeof(*s->slot_lease));
	s->free_stack = malloc((size_t)o->n_slots * sizeof(*s->free_stack));
	s->deferred = malloc((size_t)o->n_slots * sizeof(*s->deferred));
	if (o->tiered) {
		s->word_ext = malloc(o->unit_words_cap * sizeof(*s->word_ext));
		s->word_step = calloc(o->unit_words_cap, sizeof(*s->word_step));
		s->slot_word = calloc(o->n_slots, sizeof(*s->slot_word));
		s->slot_writing = calloc(o->n_slots, sizeof(*s->slot_writing));
		s->cand = malloc((size_t)o->n_slots * 2 * sizeof(*s->cand));
		s->clean = malloc((size_t)o->n_slots * 2 * sizeof(*s->clean));
		if (s->word_ext)
			for (uint64_t i = 0; i < o->unit_words_cap; i++)
				s->word_ext[i] = STORE_EXTENT_NONE;
	}
	if (!s->row_gen || !s->row_open || !s->row_word || !s->row_blocks || !s->ext ||
	    !s->slot_state || !s->slot_lease || !s->free_stack || !s->deferred ||
	    (o->tiered &&
	     (!s->word_ext || !s->word_step || !s->slot_word || !s->slot_writing || !s->cand ||
	      !s->clean))) {
		store_free(s);
		return -ENOMEM;
	}
	/* Lowest slot on top of the stack: allocation order is predictable for tests and tools. */
	for (uint32_t i = 0; i < o->n_slots; i++)
		s->free_stack[i] = o->n_slots - 1 - i;
	s->n_free = o->n_slots;
	memset(o->seqs, 0, (size_t)o->max_seqs * sizeof(*o->seqs));
	for (uint64_t i = 0; i < o->unit_words_cap; i++)
		atomic_store_explicit(&o->units[i],
				      sp_unit_word(SP_UNIT_SLOT_NONE, 0, SP_UNIT_EMPTY),
				      memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	*out = s;
	return 0;
}

void store_free(struct store *s)
{
	if (!s)
		return;
	free(s->row_gen);
	free(s->row_open);
	free(s->row_word);
	free(s->row_blocks);
	free(s->ext);
	free(s->slot_state);
	free(s->slot_lease);
	free(s->free_stack);
	free(s->deferred);
	free(s->word_ext);
	free(s->word_step);
	free(s->slot_word);
	free(s->slot_writing);
	free(s->loadq);
	free(s->ext_free);
	free(s->cand);
	free(s->clean);
	free(s);
}

/* ---- slots ------------------------------------------------------------------------------- */

uint64_t store_client_epoch(const struct store *s)
{
	/* Acquire: the client's reads of the slots it retired happen before its epoch store. */
	return atomic_load_explicit(s->o.client_epoch, memory_order_acquire);
}

uint32_t store_reclaim(struct store *s)
{
	uint64_t epoch = store_client_epoch(s);
	uint32_t kept = 0, freed = 0;

	for (uint32_t i = 0; i < s->n_deferred; i++) {
		uint32_t slot = s->deferred[i];
		if (epoch >= s->slot_lease[slot]) {
			s->slot_state[slot] = SLOT_FREE;
			s->slot_lease[slot] = 0;
			s->free_stack[s->n_free++] = slot;
			freed++;
		} else {
			s->deferred[kept++] = slot;
		}
	}
	s->n_deferred = kept;
	return freed;
}

int store_slot_get(struct store *s, uint32_t *slot)
{
	if (!s->n_free && s->n_deferred)
		store_reclaim(s);
	if (!s->n_free && s->o.tiered)
		store_drop_clean(s, 1);
	if (!s->n_free) {
		if (!s->o.tiered || s->degraded)
			return -ENOSPC;
		/* eviction frees at least this many, past the low watermark if it must */
		if (s->alloc_short < UINT32_MAX)
			s->alloc_short++;
		return -EAGAIN;
	}
	s->alloc_short = 0;
	*slot = s->free_stack[--s->n_free];
	s->slot_state[*slot] = SLOT_USED;
	s->slot_lease[*slot] = 0;
	return 0;
}

/* Give a slot back: at once, or after the client epoch passes its last lease. */
void store_slot_put(struct store *s, uint32_t slot)
{
	if (slot >= s->o.n_slots || s->slot_state[slot] != SLOT_USED)
		return; /* invariant: only used slots come back; never double-free */
	if (store_client_epoch(s) >= s->slot_lease[slot]) {
		s->slot_state[slot] = SLOT_FREE;
		s->slot_lease[slot] = 0;
		s->free_stack[s->n_free++] = slot;
	} else {
		s->slot_state[slot] = SLOT_DEFERRED;
		s->deferred[s->n_deferred++] = slot;
	}
}

void store_slot_lease(struct store *s, uint32_t slot, uint64_t step)
{
	if (step > s->slot_lease[slot])
		s->slot_lease[slot] = step;
}

static uint32_t next_gen(struct store *s)
{
	s->gen_counter = (s->gen_counter + 1) & 0xffffffu;
	if (!s->gen_counter)
		s->gen_counter = 1;
	return s->gen_counter;
}

/* ---- sequences --------------------------------------------------------------------------- */

/* First-fit over the sorted extents of open rows; returns the gap's start or -ENOSPC. */
static int words_find(const struct store *s, uint64_t need, uint64_t *start, uint32_t *pos)
{
	uint64_t at = 0;
	uint32_t i;

	for (i = 0; i < s->n_ext; i++) {
		if (s->ext[i].start - at >= need)
			break;
		at = s->ext[i].start + s->ext[i].len;
	}
	if (i == s->n_ext && s->o.unit_words_cap - at < need)
		return -ENOSPC;
	*start = at;
	*pos = i;
	return 0;
}

static void words_insert(struct store *s, uint32_t pos, uint64_t start, uint64_t len, uint32_t row)
{
	memmove(&s->ext[pos + 1], &s->ext[pos], (s->n_ext - pos) * sizeof(*s->ext));
	s->ext[pos] = (struct extent){.start = start, .len = len, .row = row};
	s->n_ext++;
}

static void words_remove(struct store *s, uint32_t row)
{
	for (uint32_t i = 0; i < s->n_ext; i++) {
		if (s->ext[i].row != row)
			continue;
		memmove(&s->ext[i], &s->ext[i + 1], (s->n_ext - i - 1) * sizeof(*s->ext));
		s->n_ext--;
		return;
	}
}

int store_seq_open(struct store *s, uint64_t user_key, uint32_t max_blocks, uint32_t *seq_index,
		   uint32_t *seq_gen)
{
	uint64_t need = (uint64_t)s->units_per_block_row * max_blocks;
	uint64_t start;
	uint32_t row, pos;
	struct sp_seq_desc *d;

	if (!max_blocks || need > s->o.unit_words_cap)
		return max_blocks ? -ENOSPC : -EINVAL;
	for (row = 0; row < s->o.max_seqs && s->row_open[row]; row++)
		;
	if (row == s->o.max_seqs)
		return -ENOSPC;
	if (words_find(s, need, &start, &pos))
		return -ENOSPC;
	words_insert(s, pos, start, need, row);
	for (uint64_t i = 0; i < need; i++)
		atomic_store_explicit(&s->o.units[start + i],
				      sp_unit_word(SP_UNIT_SLOT_NONE, 0, SP_UNIT_EMPTY),
				      memory_order_relaxed);
	s->row_open[row] = 1;
	s->row_word[row] = start;
	s->row_blocks[row] = max_blocks;
	s->row_gen[row] = s->row_gen[row] + 1 ? s->row_gen[row] + 1 : 1;
	s->words_used += need;
	d = &s->o.seqs[row];
	d->state = SP_SEQ_OPEN;
	d->max_blocks = max_blocks;
	d->units_off = s->o.units_ctl_off + start * sizeof(uint64_t);
	d->user_key = user_key;
	/* Release: the row and its EMPTY words are visible before the new generation. */
	atomic_store_explicit(&d->gen, s->row_gen[row], memory_order_release);
	*seq_index = row;
	*seq_gen = s->row_gen[row];
	return 0;
}

static int row_check(const struct store *s, uint32_t seq_index, uint32_t seq_gen)
{
	if (seq_index >= s->o.max_seqs)
		return -EINVAL;
	if (!s->row_open[seq_index] || s->row_gen[seq_index] != seq_gen)
		return -ESTALE;
	return 0;
}

/* Drop one unit word to EMPTY, returning its slot; keeps the generation for readers. */
static void word_clear(struct store *s, _Atomic uint64_t *w)
{
	uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
	enum sp_unit_state st = sp_unit_word_state(old);
	uint32_t slot = sp_unit_word_slot(old);

	if (st == SP_UNIT_EMPTY)
		return;
	atomic_store_explicit(w,
			      sp_unit_word(SP_UNIT_SLOT_NONE, sp_unit_word_gen(old), SP_UNIT_EMPTY),
			      memory_order_release);
	if (s->o.tiered)
		store_word_ext_drop(s, (uint64_t)(w - s->o.units));
	switch (st) {
	case SP_UNIT_ALLOCATED:
		s->n_allocated--;
		break;
	case SP_UNIT_RESIDENT:
		s->n_resident--;
		break;
	case SP_UNIT_SPILLED:
		s->n_spilled--;
		return; /* no slot */
	case SP_UNIT_LOADING:
		s->n_loading--;
		return; /* a slot in SLOT_LOADING returns in store_load_done, after the read */
	default:
		break;
	}
	store_slot_put(s, slot);
}

int store_seq_close(struct store *s, uint32_t seq_index, uint32_t seq_gen)
{
	int r = row_check(s, seq_index, seq_gen);
	uint64_t n;
	struct sp_seq_desc *d;

	if (r)
		return r;
	d = &s->o.seqs[seq_index];
	n = (uint64_t)s->units_per_block_row * s->row_blocks[seq_index];
	s->row_gen[seq_index] = s->row_gen[seq_index] + 1 ? s->row_gen[seq_index] + 1 : 1;
	/* Release: a reader that sees the new generation knows the old handle is dead. */
	atomic_store_explicit(&d->gen, s->row_gen[seq_index], memory_order_release);
	d->state = SP_SEQ_FREE;
	for (uint64_t i = 0; i < n; i++)
		word_clear(s, &s->o.units[s->row_word[seq_index] + i]);
	words_remove(s, seq_index);
	s->words_used -= n;
	s->row_open[seq_index] = 0;
	return 0;
}

/* ---- units ------------------------------------------------------------------------------- */

static int unit_word(struct store *s, const struct store_unit_id *u, _Atomic uint64_t **w)
{
	int r = row_check(s, u->seq_index, u->seq_gen);
	uint64_t idx;

	if (r)
		return r;
	if (u->layer >= s->o.geom.n_layers || u->head >= s->o.geom.n_kv_heads ||
	    u->block >= s->row_blocks[u->seq_index])
		return -EINVAL;
	idx = ((uint64_t)u->layer * s->o.geom.n_kv_heads + u->head) * s->row_blocks[u->seq_index] +
	      u->block;
	*w = &s->o.units[s->row_word[u->seq_index] + idx];
	return 0;
}

static void out_word(uint64_t w, uint32_t *slot, uint32_t *gen)
{
	enum sp_unit_state st = sp_unit_word_state(w);

	*slot = (st == SP_UNIT_ALLOCATED || st == SP_UNIT_RESIDENT) ? sp_unit_word_slot(w)
								    : SP_UNIT_SLOT_NONE;
	*gen = sp_unit_word_gen(w);
}

int store_unit_alloc(struct store *s, const struct store_unit_id *u, uint32_t *slot, uint32_t *gen)
{
	_Atomic uint64_t *w;
	uint64_t old;
	uint32_t sl;
	int r = unit_word(s, u, &w);

	*slot = SP_UNIT_SLOT_NONE;
	*gen = 0;
	if (r)
		return r;
	old = atomic_load_explicit(w, memory_order_relaxed);
	if (sp_unit_word_state(old) != SP_UNIT_EMPTY) {
		out_word(old, slot, gen);
		return -EEXIST;
	}
	r = store_slot_get(s, &sl);
	if (r)
		return r;
	*slot = sl;
	*gen = next_gen(s);
	if (s->o.tiered) {
		s->slot_word[sl] = (uint64_t)(w - s->o.units);
		s->word_step[w - s->o.units] = 0;
	}
	atomic_store_explicit(w, sp_unit_word(sl, *gen, SP_UNIT_ALLOCATED), memory_order_release);
	s->n_allocated++;
	return 0;
}

int store_unit_commit(struct store *s, const struct store_unit_id *u, uint64_t step, uint32_t *slot,
		      uint32_t *gen)
{
	_Atomic uint64_t *w;
	uint64_t old;
	int r = unit_word(s, u, &w);

	*slot = SP_UNIT_SLOT_NONE;
	*gen = 0;
	if (r)
		return r;
	old = atomic_load_explicit(w, memory_order_relaxed);
	out_word(old, slot, gen);
	switch (sp_unit_word_state(old)) {
	case SP_UNIT_ALLOCATED:
		break;
	case SP_UNIT_EMPTY:
		return -ENOENT;
	default:
		return -EEXIST;
	}
	store_slot_lease(s, *slot, step);
	if (s->o.tiered)
		s->word_step[w - s->o.units] = step;
	atomic_store_explicit(w, sp_unit_word(*slot, *gen, SP_UNIT_RESIDENT), memory_order_release);
	s->n_allocated--;
	s->n_resident++;
	return 0;
}

int store_unit_free(struct store *s, const struct store_unit_id *u, uint32_t *slot, uint32_t *gen)
{
	_Atomic uint64_t *w;
	uint64_t old;
	int r = unit_word(s, u, &w);

	*slot = SP_UNIT_SLOT_NONE;
	*gen = 0;
	if (r)
		return r;
	old = atomic_load_explicit(w, memory_order_relaxed);
	*gen = sp_unit_word_gen(old);
	if (sp_unit_word_state(old) == SP_UNIT_EMPTY)
		return -ENOENT;
	word_clear(s, w);
	return 0;
}

/* A Forecast of a SPILLED unit: LOADING without a slot, queued for the tier's owner. */
static int forecast_restore(struct store *s, _Atomic uint64_t *w, uint64_t old)
{
	uint64_t word = (uint64_t)(w - s->o.units);

	if (s->loadq_head + s->loadq_n == s->loadq_cap) {
		if (s->loadq_head) {
			memmove(s->loadq, s->loadq + s->loadq_head, s->loadq_n * sizeof(*s->loadq));
			s->loadq_head = 0;
		} else {
			uint64_t ncap = s->loadq_cap ? s->loadq_cap * 2 : 64;
			uint64_t *p = realloc(s->loadq, ncap * sizeof(*p));
			if (!p)
				return -ENOMEM;
			s->loadq = p;
			s->loadq_cap = ncap;
		}
	}
	s->loadq[s->loadq_head + s->loadq_n++] = word;
	atomic_store_explicit(
	    w, sp_unit_word(SP_UNIT_SLOT_NONE, sp_unit_word_gen(old), SP_UNIT_LOADING),
	    memory_order_release);
	s->n_spilled--;
	s->n_loading++;
	return -EINPROGRESS;
}

int store_unit_forecast(struct store *s, const struct store_unit_id *u, uint64_t step,
			uint32_t *slot, uint32_t *gen)
{
	_Atomic uint64_t *w;
	uint64_t old;
	int r = unit_word(s, u, &w);

	*slot = SP_UNIT_SLOT_NONE;
	*gen = 0;
	if (r)
		return r;
	old = atomic_load_explicit(w, memory_order_relaxed);
	*gen = sp_unit_word_gen(old);
	if (s->o.tiered) {
		enum sp_unit_state st = sp_unit_word_state(old);
		if (st == SP_UNIT_RESIDENT || st == SP_UNIT_SPILLED || st == SP_UNIT_LOADING)
			if (step > s->word_step[w - s->o.units])
				s->word_step[w - s->o.units] = step;
		if (st == SP_UNIT_SPILLED)
			return forecast_restore(s, w, old);
		if (st == SP_UNIT_LOADING)
			return -EINPROGRESS;
	}
	if (sp_unit_word_state(old) != SP_UNIT_RESIDENT)
		return -ENOENT;
	*slot = sp_unit_word_slot(old);
	store_slot_lease(s, *slot, step);
	return 0;
}

int store_unit_lookup(struct store *s, const struct store_unit_id *u, enum sp_unit_state *state,
		      uint32_t *slot, uint32_t *gen)
{
	_Atomic uint64_t *w;
	uint64_t v;
	int r = unit_word(s, u, &w);

	*slot = SP_UNIT_SLOT_NONE;
	*gen = 0;
	if (r)
		return r;
	v = atomic_load_explicit(w, memory_order_relaxed);
	*state = sp_unit_word_state(v);
	out_word(v, slot, gen);
	return 0;
}

void store_get_stats(const struct store *s, struct store_stats *st)
{
	*st = (struct store_stats){
	    .n_slots = s->o.n_slots,
	    .slots_free = s->n_free,
	    .slots_deferred = s->n_deferred,
	    .slots_used = s->o.n_slots - s->n_free - s->n_deferred,
	    .units_allocated = s->n_allocated,
	    .units_resident = s->n_resident,
	    .units_spilled = s->n_spilled,
	    .units_loading = s->n_loading,
	    .extents = s->n_extents,
	    .units_lost = s->lost,
	    .seqs_open = s->n_ext,
	    .unit_words_used = s->words_used,
	    .unit_words_cap = s->o.unit_words_cap,
	};
}
