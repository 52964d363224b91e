/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The block index of one session: its sequence table and unit words (both inside the session's
 * ctl region, which memsvc alone writes, with release stores) and the allocator of its arena
 * slots, with a deferred list that keeps a freed slot out of circulation until the client's
 * published epoch passes the step of its last lease. With a tier (opts.tiered) it also keeps,
 * per unit, the last step that selected it and its NVMe extent, picks eviction victims (oldest
 * step first) and tracks restores (SPILLED -> LOADING -> RESIDENT); the I/O itself is the
 * caller's (memsvc/spill.c), done without the store's lock.
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
	bool tiered;			      /* units may spill to an NVMe tier */
	uint32_t high_slots, low_slots;	      /* tiered: evict above high, down to low */
};

#define STORE_EXTENT_NONE UINT64_MAX

/* A unit on its way to (evict) or from (load) the tier; filled by the store. */
struct store_io {
	uint64_t word;	   /* index of its unit word */
	uint64_t word_val; /* the word when the I/O was picked: unchanged means still that unit */
	uint64_t step;	   /* evict: last-selected step when picked */
	uint64_t extent;   /* load: where it is; evict: out, where the tier put it */
	uint32_t slot, gen;
	uint32_t seq, layer, head, block;
	int res; /* out: the tier's result for this unit */
};

/* A unit as the client names it (validated by every call that takes one). */
struct store_unit_id {
	uint32_t seq_index, seq_gen;
	uint32_t layer, head, block;
};

struct store_stats {
	uint64_t n_slots, slots_free, slots_used, slots_deferred;
	uint64_t units_allocated, units_resident; /* by state */
	uint64_t units_spilled, units_loading, extents, units_lost;
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
 *           Tiered: SPILLED -> LOADING (queued for store_load_pick) and LOADING answer
 *           -EINPROGRESS: ask again once store_load_done has run.
 * Tiered, alloc answers -EAGAIN instead of -ENOSPC (eviction will free slots).
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

/* ---- the tier (opts.tiered; all calls under the session lock, I/O between them) ---------- */

/*
 * Units to evict now: slots in use above high_slots down to low_slots (less the units whose
 * writes are in flight), or, when no slot is free, enough for the queued restores and the
 * allocations refused -EAGAIN since a slot was last handed out (so an allocation larger than
 * what the watermarks free still succeeds when enough is evictable). 0 when not tiered.
 */
uint32_t store_evict_want(struct store *s);
/*
 * The eviction list: store_evict_pick rebuilds it when it runs short (scan and sort under the
 * caller's lock). A caller that wants the sort outside its lock calls store_evict_scan under
 * the lock (true: a new unsorted list was taken), then store_evict_sort without it (only the
 * tier's owner touches the list), then store_evict_pick under the lock again.
 */
bool store_evict_scan(struct store *s, uint32_t want);
void store_evict_sort(struct store *s);
/*
 * Pick up to want RESIDENT victims, oldest last-selected step first. Units already on disk
 * (restored, unchanged) become SPILLED at once (counted in *dropped); the others fill io
 * (at most cap) for the caller to write; their slots count as being written (never picked
 * again, not in store_evict_want) until store_evict_done, so the next batch can be picked
 * while this one is on the disk. Returns how many io entries were filled.
 */
uint32_t store_evict_pick(struct store *s, uint32_t want, struct store_io *io, uint32_t cap,
			  uint32_t *dropped);
/*
 * After the writes (every entry of a pick comes back here exactly once, whatever its res): a
 * unit still unchanged with res 0 records its extent and becomes SPILLED
 * (its slot returns under the epoch rule) unless a Forecast selected it meanwhile (then it
 * stays RESIDENT, now also on disk). Extents of units that changed go to the release list.
 * Returns how many became SPILLED.
 */
uint32_t store_evict_done(struct store *s, struct store_io *io, uint32_t n);
/*
 * Give queued LOADING units a slot (free, reclaimed, or taken from a clean resident unit) and
 * describe their reads in io (at most cap). Returns the count; units without a slot wait.
 */
uint32_t store_load_pick(struct store *s, struct store_io *io, uint32_t cap);
/*
 * No slot can be had (the tier is RAM-only and the arena holds only units not on disk):
 * queued units go back to SPILLED. Returns how many.
 */
uint32_t store_load_cancel(struct store *s);
/* Units still queued for a slot. */
uint64_t store_load_queued(const struct store *s);
/*
 * After the reads: res 0 -> RESIDENT (still on disk: a later eviction costs no write); an
 * error -> the unit is lost (EMPTY, a miss from now on, counted). A unit freed meanwhile just
 * gives its slot back. Returns how many failed.
 */
uint32_t store_load_done(struct store *s, struct store_io *io, uint32_t n);
/* The tier is RAM-only for now (ENOSPC): alloc in a full arena answers -ENOSPC, not -EAGAIN. */
void store_set_degraded(struct store *s, bool degraded);
/* Move up to cap extents of dropped units to out (the tier's owner frees them). */
uint32_t store_ext_take(struct store *s, uint64_t *out, uint32_t cap);

#endif
