/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The block index of one session: its sequence table and unit words (both inside the session's
 * ctl region, which memsvc alone writes, with release stores) and the allocator of its arena
 * slots, with a deferred list that keeps a freed slot out of circulation until the client's
 * published epoch passes the step of its last lease.
 * Thread safety: none; the session serialises callers with its own mutex.
 */
#ifndef SPARDA_MEMSVC_STORE_H
#define SPARDA_MEMSVC_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "shm_abi.h"

struct store;

struct store_opts {
	struct sp_geometry geom;	      /* checked by the caller (wire_geometry_check) */
	uint32_t max_seqs;		      /* rows of seqs[] */
	uint64_t unit_words_cap;	      /* words in units[] */
	uint32_t n_slots;		      /* arena slots, < SP_UNIT_SLOT_NONE */
	struct sp_seq_desc *seqs;	      /* in ctl; formatted by store_open */
	_Atomic uint64_t *units;	      /* in ctl; formatted by store_open */
	uint64_t units_ctl_off;		      /* byte offset of units[] in ctl, for sp_seq_desc */
	const _Atomic uint64_t *client_epoch; /* in sub; loaded with acquire */
};

/* A unit as the client names it (validated by every call that takes one). */
struct store_unit_id {
	uint32_t seq_index, seq_gen;
	uint32_t layer, head, block;
};

struct store_stats {
	uint64_t n_slots, slots_free, slots_used, slots_deferred;
	uint64_t units_allocated, units_resident; /* by state */
	uint64_t seqs_open, unit_words_used, unit_words_cap;
};

/*
 * Format the tables (every row FREE, every word EMPTY) and build the allocator.
 * Returns 0, -EINVAL (zero sizes, n_slots too large), -ENOMEM. *out owned by the caller.
 */
int store_open(const struct store_opts *o, struct store **out);
/* Frees the allocator; does not touch the shared tables. Accepts NULL. */
void store_free(struct store *s);

/*
 * Open a sequence: a free row and n_layers*n_kv_heads*max_blocks contiguous unit words.
 * Returns 0 with the handle, -EINVAL (max_blocks 0 or too large), -ENOSPC (no free row or not
 * enough unit words).
 */
int store_seq_open(struct store *s, uint64_t user_key, uint32_t max_blocks, uint32_t *seq_index,
		   uint32_t *seq_gen);
/*
 * Close a sequence: every unit freed (slots leased at a step the client has not yet passed go
 * to the deferred list), the row's generation bumped. Returns 0, -EINVAL (index out of range),
 * -ESTALE (row not open or generation differs).
 */
int store_seq_close(struct store *s, uint32_t seq_index, uint32_t seq_gen);

/*
 * Unit operations. Each validates the id: -EINVAL (index, layer, head or block out of range),
 * -ESTALE (row not open or generation differs). On success *slot and *gen hold the unit's slot
 * (SP_UNIT_SLOT_NONE when it has none) and generation.
 * alloc:    EMPTY -> ALLOCATED with a fresh slot and a new generation; -EEXIST if not EMPTY,
 *           -ENOSPC when no slot is free (after reclaiming what the epoch allows).
 * commit:   ALLOCATED -> RESIDENT, leased until the client epoch reaches step; -EEXIST when
 *           already RESIDENT (idempotent otherwise fine: slot returned), -ENOENT when EMPTY.
 * free:     any -> EMPTY; the slot returns now or, if leased past the client epoch, later.
 *           -ENOENT when already EMPTY.
 * forecast: RESIDENT: extend the lease to step; -ENOENT (a miss) when not resident.
 */
int store_unit_alloc(struct store *s, const struct store_unit_id *u, uint32_t *slot, uint32_t *gen);
int store_unit_commit(struct store *s, const struct store_unit_id *u, uint64_t step, uint32_t *slot,
		      uint32_t *gen);
int store_unit_free(struct store *s, const struct store_unit_id *u, uint32_t *slot, uint32_t *gen);
int store_unit_forecast(struct store *s, const struct store_unit_id *u, uint64_t step,
			uint32_t *slot, uint32_t *gen);

/*
 * Read a unit's state without changing it: 0 with *state, *slot (SP_UNIT_SLOT_NONE unless
 * ALLOCATED or RESIDENT) and *gen, or -EINVAL / -ESTALE for a bad id.
 */
int store_unit_lookup(struct store *s, const struct store_unit_id *u, enum sp_unit_state *state,
		      uint32_t *slot, uint32_t *gen);

/* Move deferred slots whose lease the client epoch has passed to the free list; returns how many.
 */
uint32_t store_reclaim(struct store *s);

void store_get_stats(const struct store *s, struct store_stats *st);

#endif
