/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside the store: the private state shared by store.c (rows, words, slots) and store_tier.c
 * (eviction to and restore from the NVMe tier). Never included outside memsvc/.
 */
#ifndef SPARDA_MEMSVC_STORE_INTERNAL_H
#define SPARDA_MEMSVC_STORE_INTERNAL_H

#include "store.h"

/* SLOT_LOADING: a restore's read targets the slot; only store_load_done gives it back. */
enum slot_state { SLOT_FREE = 0, SLOT_USED = 1, SLOT_DEFERRED = 2, SLOT_LOADING = 3 };

struct extent {
	uint64_t start, len; /* in unit words */
	uint32_t row;
};

struct store {
	struct store_opts o;
	uint32_t units_per_block_row; /* n_layers * n_kv_heads */
	/* rows */
	uint32_t *row_gen;
	uint8_t *row_open;
	uint64_t *row_word;   /* first unit word of the row's sequence */
	uint32_t *row_blocks; /* max_blocks of the sequence */
	struct extent *ext;   /* open rows' word extents, sorted by start */
	uint32_t n_ext;
	/* slots */
	uint8_t *slot_state;
	uint64_t *slot_lease; /* slot reusable once client_epoch >= this */
	uint32_t *free_stack;
	uint32_t n_free;
	uint32_t *deferred;
	uint32_t n_deferred;
	uint32_t gen_counter; /* last unit generation handed out (24 bits, never 0) */
	uint64_t n_allocated, n_resident, n_spilled, n_loading, words_used;
	/* tier (NULL unless o.tiered) */
	uint64_t *word_ext;  /* NVMe extent of a RESIDENT/SPILLED/LOADING unit, or NONE */
	uint64_t *word_step; /* last step a Forecast or commit named the unit */
	uint64_t *slot_word; /* the unit word a used slot belongs to */
	uint8_t *slot_writing; /* picked for a spill write that has not come back (evict_done) */
	uint32_t n_writing;
	uint32_t alloc_short; /* allocs refused -EAGAIN since a slot was last handed out */
	uint64_t *loadq;     /* words LOADING without a slot yet, FIFO from loadq_head */
	uint64_t loadq_head, loadq_n, loadq_cap;
	uint64_t *ext_free; /* extents of dropped units, for the tier's owner to release */
	uint64_t ext_free_n, ext_free_cap;
	uint64_t n_extents, lost;
	bool degraded;	/* the tier is RAM-only for now: a full arena is -ENOSPC again */
	uint64_t *cand; /* eviction list: (step, slot) pairs, oldest first (tier owner only) */
	uint32_t cand_n, cand_pos; /* its length and the next entry to consider */
	bool cand_sorted;
	uint64_t *clean; /* store_drop_clean's scratch (any caller under the lock) */
};

uint64_t store_client_epoch(const struct store *s);
int store_slot_get(struct store *s, uint32_t *slot);
void store_slot_put(struct store *s, uint32_t slot);
void store_slot_lease(struct store *s, uint32_t slot, uint64_t step);
/* Queue a unit's extent (if any) for release and forget it. */
void store_word_ext_drop(struct store *s, uint64_t word);
/* Drop up to want clean RESIDENT units (already on disk) to SPILLED, oldest step first. */
uint32_t store_drop_clean(struct store *s, uint32_t want);

#endif
