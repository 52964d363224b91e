/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-process host KV store: the same arena, slots and residency words as a memsvc session,
 * kept in this process. Used to price the process boundary and by tests that need no daemon.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kvhost.h"

struct inproc_seq {
	uint32_t max_blocks;
	int64_t word_base; /* -1 = free row */
	uint64_t n_words;
};

struct inproc {
	struct kvhost h;
	struct sp_geometry geom;
	uint64_t n_slots;
	uint32_t *free_slots; /* stack */
	uint64_t n_free;
	_Atomic uint64_t *words;
	uint64_t words_cap, words_used;
	struct inproc_seq *seqs;
	uint32_t max_seqs;
};

static struct inproc *to_inproc(struct kvhost *h)
{
	return (struct inproc *)h;
}

static void inproc_close(struct kvhost *h)
{
	struct inproc *p = to_inproc(h);
	if (p->h.arena)
		munmap(p->h.arena, p->h.arena_bytes);
	free(p->free_slots);
	free((void *)p->words);
	free(p->seqs);
	free(p);
}

static int inproc_seq_open(struct kvhost *h, uint64_t key, uint32_t max_blocks, uint32_t *seq,
			   int64_t *word_base)
{
	struct inproc *p = to_inproc(h);
	uint64_t n = (uint64_t)p->geom.n_layers * p->geom.n_kv_heads * max_blocks;

	for (uint32_t i = 0; i < p->max_seqs; i++) {
		if (p->seqs[i].word_base >= 0)
			continue;
		/* Words are handed out bump-style and reclaimed when no sequence is open. */
		if (p->words_used + n > p->words_cap)
			return -ENOSPC;
		p->seqs[i] = (struct inproc_seq){ .max_blocks = max_blocks,
						   .word_base = (int64_t)p->words_used,
						   .n_words = n };
		for (uint64_t w = 0; w < n; w++)
			atomic_store_explicit(&p->words[p->words_used + w],
					      sp_unit_word(SP_UNIT_SLOT_NONE, 0, SP_UNIT_EMPTY),
					      memory_order_relaxed);
		p->words_used += n;
		*seq = i;
		*word_base = p->seqs[i].word_base;
		return 0;
	}
	return -ENOSPC;
}

static _Atomic uint64_t *unit_word(struct inproc *p, uint32_t seq, uint32_t layer, uint32_t head,
				   uint32_t block)
{
	struct inproc_seq *s = &p->seqs[seq];
	uint64_t idx = ((uint64_t)layer * p->geom.n_kv_heads + head) * s->max_blocks + block;
	return &p->words[s->word_base + (int64_t)idx];
}

static int check_unit(struct inproc *p, uint32_t seq, uint32_t layer, uint32_t head,
		      uint32_t block, uint32_t count)
{
	if (seq >= p->max_seqs || p->seqs[seq].word_base < 0)
		return -ESTALE;
	if (layer >= p->geom.n_layers || head >= p->geom.n_kv_heads || count == 0 ||
	    block > p->seqs[seq].max_blocks || count > p->seqs[seq].max_blocks - block)
		return -EINVAL;
	return 0;
}

static void free_seq_slots(struct inproc *p, uint32_t seq)
{
	struct inproc_seq *s = &p->seqs[seq];
	for (uint64_t w = 0; w < s->n_words; w++) {
		uint64_t v = atomic_load_explicit(&p->words[s->word_base + (int64_t)w],
						  memory_order_relaxed);
		enum sp_unit_state st = sp_unit_word_state(v);
		if (st == SP_UNIT_ALLOCATED || st == SP_UNIT_RESIDENT)
			p->free_slots[p->n_free++] = sp_unit_word_slot(v);
		atomic_store_explicit(&p->words[s->word_base + (int64_t)w],
				      sp_unit_word(SP_UNIT_SLOT_NONE, 0, SP_UNIT_EMPTY),
				      memory_order_release);
	}
}

static int inproc_seq_close(struct kvhost *h, uint32_t seq)
{
	struct inproc *p = to_inproc(h);
	if (seq >= p->max_seqs || p->seqs[seq].word_base < 0)
		return -ESTALE;
	free_seq_slots(p, seq);
	p->seqs[seq].word_base = -1;
	for (uint32_t i = 0; i < p->max_seqs; i++)
		if (p->seqs[i].word_base >= 0)
			return 0;
	p->words_used = 0; /* no sequence open: the word pool starts over */
	return 0;
}

static int inproc_alloc(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
			uint32_t block, uint32_t count, int32_t *slots)
{
	struct inproc *p = to_inproc(h);
	int r = check_unit(p, seq, layer, head, block, count);
	if (r)
		return r;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t v = atomic_load_explicit(unit_word(p, seq, layer, head, block + i),
						  memory_order_relaxed);
		if (sp_unit_word_state(v) != SP_UNIT_EMPTY)
			return -EEXIST;
	}
	if (p->n_free < count)
		return -ENOSPC;
	for (uint32_t i = 0; i < count; i++) {
		_Atomic uint64_t *w = unit_word(p, seq, layer, head, block + i);
		uint32_t slot = p->free_slots[--p->n_free];
		uint32_t gen = sp_unit_word_gen(atomic_load_explicit(w, memory_order_relaxed)) + 1;
		atomic_store_explicit(w, sp_unit_word(slot, gen, SP_UNIT_ALLOCATED),
				      memory_order_release);
		slots[i] = (int32_t)slot;
	}
	return 0;
}

static int inproc_commit(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
			 uint32_t block, uint32_t count)
{
	struct inproc *p = to_inproc(h);
	int r = check_unit(p, seq, layer, head, block, count);
	if (r)
		return r;
	for (uint32_t i = 0; i < count; i++) {
		_Atomic uint64_t *w = unit_word(p, seq, layer, head, block + i);
		uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
		if (sp_unit_word_state(v) != SP_UNIT_ALLOCATED)
			return -EINVAL;
		atomic_store_explicit(w, sp_unit_word(sp_unit_word_slot(v), sp_unit_word_gen(v),
						      SP_UNIT_RESIDENT),
				      memory_order_release);
	}
	return 0;
}

static int inproc_alloc_units(struct kvhost *h, const struct kvhost_unit *u, uint32_t n,
			      int32_t *slots)
{
	for (uint32_t i = 0; i < n; i++) {
		int rc = inproc_alloc(h, u[i].seq, u[i].layer, u[i].head, u[i].block, 1, &slots[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int inproc_commit_units(struct kvhost *h, const struct kvhost_unit *u, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		int rc = inproc_commit(h, u[i].seq, u[i].layer, u[i].head, u[i].block, 1);
		if (rc)
			return rc;
	}
	return 0;
}

static int inproc_epoch(struct kvhost *h, uint64_t step)
{
	return 0; /* slots are only freed at sequence close, by this same thread */
}

static int inproc_health(struct kvhost *h)
{
	return 0;
}

static const struct kvhost_ops inproc_ops = {
	.name = "inproc",
	.close = inproc_close,
	.seq_open = inproc_seq_open,
	.seq_close = inproc_seq_close,
	.alloc = inproc_alloc,
	.commit = inproc_commit,
	.alloc_units = inproc_alloc_units,
	.commit_units = inproc_commit_units,
	.epoch = inproc_epoch,
	.health = inproc_health,
};

int kvhost_inproc_open(const struct kvhost_opts *o, struct kvhost **out)
{
	struct inproc *p;

	if (!o || !o->geom.unit_bytes || !o->max_seqs || !o->max_units)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->geom = o->geom;
	p->n_slots = o->arena_bytes / o->geom.unit_bytes;
	p->h.ops = &inproc_ops;
	p->h.unit_bytes = o->geom.unit_bytes;
	p->h.arena_bytes = p->n_slots * o->geom.unit_bytes;
	p->h.arena = mmap(NULL, p->h.arena_bytes ? p->h.arena_bytes : 4096, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->h.arena == MAP_FAILED) {
		p->h.arena = NULL;
		goto out_free;
	}
	p->free_slots = malloc(sizeof(uint32_t) * (p->n_slots ? p->n_slots : 1));
	p->words_cap = o->max_units;
	p->words = calloc(p->words_cap, sizeof(uint64_t));
	p->max_seqs = o->max_seqs;
	p->seqs = calloc(o->max_seqs, sizeof(*p->seqs));
	if (!p->free_slots || !p->words || !p->seqs)
		goto out_free;
	for (uint64_t i = 0; i < p->n_slots; i++)
		p->free_slots[p->n_free++] = (uint32_t)(p->n_slots - 1 - i);
	for (uint32_t i = 0; i < o->max_seqs; i++)
		p->seqs[i].word_base = -1;
	p->h.words = (const uint64_t *)p->words;
	p->h.words_bytes = p->words_cap * sizeof(uint64_t);
	p->h.priv = p;
	*out = &p->h;
	return 0;
out_free:
	inproc_close(&p->h);
	return -ENOMEM;
}
