/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One attached client: its three memfds (ctl, sub, arena), two eventfds, the mapped rings, the
 * block index (store) and the lock that serialises the ZeroMQ path and the ring consumer on
 * it. Created from a validated Hello after the caller has checked tenant and budget; lives
 * until its attach socket closes (the caller owns that socket and calls session_destroy).
 */
#ifndef SPARDA_MEMSVC_SESSION_H
#define SPARDA_MEMSVC_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ring.h"
#include "shm_abi.h"
#include "store.h"

struct session;
struct tenant;

#define SESSION_TOKEN_BYTES 16
#define SESSION_DEFAULT_SEQS 64u

struct session_opts {
	uint64_t id;
	uint64_t daemon_epoch;
	struct tenant *tenant; /* limits of sequences; not owned */
	const char *client_name;
	uid_t uid;
	pid_t pid;
	struct sp_geometry geom; /* checked (wire_geometry_check) */
	uint64_t arena_bytes;	 /* from session_arena_bytes() */
	uint32_t max_seqs;	 /* 0 = SESSION_DEFAULT_SEQS */
	uint32_t wait_mode;	 /* enum sp_wait_mode */
	uint32_t ring_entries;	 /* SQ and CQ, power of two */
	uint32_t unit_words;	 /* unit words per slot (at least 65536 in all) */
	bool huge_pages;
	/*
	 * Pre-faulting a large arena takes seconds: it is done in chunks of prefault_chunk bytes
	 * (0 = 1 GiB) and progress(progress_ctx) is called after each, so the daemon can keep its
	 * watchdog fed. progress may be NULL.
	 */
	uint64_t prefault_chunk;
	void (*progress)(void *ctx);
	void *progress_ctx;
	/*
	 * NVMe tier: units may spill (memsvc maps the arena). Slots in use above high_water x
	 * slots are evicted down to low_water x slots (0 <= low <= high <= 1). tier_kick(tier_ctx)
	 * is called (from any thread, without session locks) when the session has tier work:
	 * eviction wanted, restores queued.
	 */
	bool tiered;
	uint64_t tier_bytes; /* spill file bytes reserved for it (all directories), for the owner */
	double high_water, low_water;
	void (*tier_kick)(void *ctx);
	void *tier_ctx;
};

/*
 * Size of the arena memfd for `want` bytes: whole slots, rounded up to 2 MiB for huge pages.
 * Returns 0 (bytes in *arena, slots in *n_slots) or -EINVAL (fewer than one slot, or more
 * than 2^32-2 slots).
 */
int session_arena_bytes(const struct sp_geometry *g, uint64_t want, bool huge, uint64_t *arena,
			uint32_t *n_slots);

/*
 * Create the memfds (ctl sealed read-only for others, sub and arena sealed against resizing;
 * the arena pre-faulted), map ctl and sub, format headers, rings and the store.
 * Returns 0, -ENOMEM (no memory for the arena: the machine, not the budget), -EINVAL,
 * -EOPNOTSUPP (huge pages asked but unavailable), or another -errno of a syscall; err names
 * the step that failed. *out owned by the caller.
 */
int session_create(const struct session_opts *o, struct session **out, char *err, size_t err_len);

/* Unmap, close every fd, free the store; gives back the tenant's sequences. NULL ok. */
void session_destroy(struct session *s);

/* The five descriptors to send, in protocol order: ctl, sub, arena, sq_doorbell, cq_doorbell. */
void session_fds(const struct session *s, int fds[5]);

uint64_t session_id(const struct session *s);
const uint8_t *session_token(const struct session *s);
/* Constant-time comparison with the session's token. */
bool session_token_ok(const struct session *s, const uint8_t *token);
struct tenant *session_tenant(const struct session *s);
uid_t session_uid(const struct session *s);
pid_t session_pid(const struct session *s);
const char *session_client_name(const struct session *s);
uint32_t session_wait_mode(const struct session *s);
uint64_t session_arena_size(const struct session *s);
uint32_t session_max_seqs(const struct session *s);
uint64_t session_ctl_bytes(const struct session *s);
uint64_t session_sub_bytes(const struct session *s);
uint64_t session_unit_words_cap(const struct session *s);
const struct sp_geometry *session_geometry(const struct session *s);

/* Tell the client (ctl.closing, release) that the session or the daemon is going away. */
void session_mark_closing(struct session *s);

/*
 * Control operations, serialised by the session lock. seq_open also takes one sequence from
 * the tenant (-EDQUOT over its limit); seq_close gives it back. Errnos as in store.h.
 */
int session_seq_open(struct session *s, uint64_t user_key, uint32_t max_blocks, uint32_t *seq_index,
		     uint32_t *seq_gen);
int session_seq_close(struct session *s, uint32_t seq_index, uint32_t seq_gen);

/*
 * Apply one op (SP_OP_ALLOC, COMMIT, FREE, FORECAST) to n units under one lock hold.
 * status[i], slot[i], gen[i] receive each unit's answer. Returns 0, or -EINVAL for an op
 * that is not a unit op (then nothing is applied).
 */
int session_units_apply(struct session *s, enum sp_op op, const struct store_unit_id *ids,
			uint32_t n, uint64_t step, int32_t *status, uint32_t *slot, uint32_t *gen);

/*
 * Apply ring entries: one CQE per SQE (same req_id, op and coordinates; slot, gen, status),
 * all under one lock hold. An unknown op is answered -EINVAL. n may be 0. A FORECAST_VEC's
 * units are answered in the vector area (session_vec_status) and its CQE carries 0, or
 * -EINVAL for a range outside the area.
 * Tiered: a FORECAST of a SPILLED or LOADING unit gets a PENDING CQE (-EINPROGRESS) now and
 * its answer later (SP_CQE_F_DEFERRED) through the outbox, or -EBUSY at once when too many
 * deferred answers wait. Returns the number of CQEs written to cqe (n).
 * The caller holds the CQ producer side (session_cq_lock) from its space check to its push.
 */
/* The status memsvc wrote into entry i of the vector area (0 for i past its end). */
int32_t session_vec_status(const struct session *s, uint32_t i);

uint32_t session_sqes_apply(struct session *s, const struct sp_sqe *sqe, uint32_t n,
			    struct sp_cqe *cqe);

/* The CQ's producer lock: the hot path and the tier thread both post CQEs. */
void session_cq_lock(struct session *s);
void session_cq_unlock(struct session *s);
/*
 * Post deferred CQEs that wait in the outbox, as many as the CQ has room for (caller holds
 * the CQ lock); rings the doorbell when any was posted. Returns how many are still waiting.
 */
uint32_t session_outbox_flush_locked(struct session *s);

/* ---- the NVMe tier's hooks (memsvc/spill.c, its thread) ---------------------------------- */

/* Call tier_kick when the session has tier work (cheap when it has none). */
void session_tier_kick(struct session *s);
bool session_tiered(const struct session *s);
uint64_t session_tier_bytes(const struct session *s);
/* Base of memsvc's mapping of the arena (tiered sessions), slot i at i * unit_bytes. */
uint8_t *session_arena_base(struct session *s);
/* Store calls under the session lock: see store.h (store_evict_*, store_load_*). */
uint32_t session_evict_pick(struct session *s, struct store_io *io, uint32_t cap,
			    uint32_t *dropped);
uint32_t session_evict_done(struct session *s, struct store_io *io, uint32_t n);
uint32_t session_load_pick(struct session *s, struct store_io *io, uint32_t cap);
uint32_t session_load_done(struct session *s, struct store_io *io, uint32_t n);
uint32_t session_ext_take(struct session *s, uint64_t *out, uint32_t cap);
void session_tier_set_degraded(struct session *s, bool degraded);

/* What answering deferred Forecasts found (session_waiters_complete). */
struct session_tier_done {
	uint32_t answered, hits, misses, late; /* late: the client epoch had passed the step */
	uint64_t latency_ns[64];	       /* of the first (up to 64) answered */
	uint32_t n_latency;
};
/*
 * Answer waiting Forecasts whose unit is no longer LOADING (RESIDENT: leased, status 0; else
 * -ENOENT) into the outbox and flush it. Returns how many are still waiting (waiters plus
 * outbox), so the caller knows whether to come back.
 */
uint32_t session_waiters_complete(struct session *s, struct session_tier_done *d);
/*
 * No slot can be had for restores (the tier is RAM-only and the arena full of units not on
 * disk, or every used slot is leased by steps the client has not finished): queued restores
 * are dropped and their Forecasts answered -ENOSPC. Returns how many.
 */
uint32_t session_load_starved(struct session *s);
/* Drop the queued restores that have no slot yet (their units go back to SPILLED, their
 * Forecasts still wait: session_load_starved answers them). Returns how many. */
uint32_t session_load_cancel(struct session *s);
/* Restores queued that have no slot yet. */
uint64_t session_load_queued(struct session *s);
/* Ring Forecasts still owed an answer (waiting for a restore, or in the outbox). */
bool session_answers_pending(struct session *s);
/* Tier work pending: eviction wanted, restores queued, answers waiting. */
bool session_tier_busy(struct session *s);

/*
 * Remote clients (no shared memory): memsvc maps the arena itself and copies unit bytes.
 * session_arena_map: returns 0 or -errno of mmap; idempotent.
 * session_units_read: each RESIDENT unit's bytes to out + i * unit_bytes (leased to step as a
 *   forecast would); status -ENOENT (not resident) or an id error. Needs the arena mapped.
 * session_units_write: in + i * unit_bytes into each ALLOCATED unit's slot; status -ENOENT
 *   (EMPTY), -EEXIST (already committed) or an id error. The client commits afterwards.
 */
int session_arena_map(struct session *s);
void session_units_read(struct session *s, const struct store_unit_id *ids, uint32_t n,
			uint64_t step, int32_t *status, uint32_t *slot, uint32_t *gen,
			uint8_t *out);
void session_units_write(struct session *s, const struct store_unit_id *ids, uint32_t n,
			 const uint8_t *in, int32_t *status, uint32_t *slot, uint32_t *gen);

/* Move deferred slots whose lease the client epoch passed back to the free list. */
void session_reclaim(struct session *s);
void session_get_stats(struct session *s, struct store_stats *st);

/*
 * The ring consumer's view (used only by the hot path thread that serves the session): the
 * SQ (consumer side, doorbell sq_doorbell) and the CQ (producer side, doorbell cq_doorbell).
 */
struct ring *session_sq(struct session *s);
struct ring *session_cq(struct session *s);

#endif
