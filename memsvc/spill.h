/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's NVMe tier: one spill tier (memsvc/tier_nvme.h, its own files) per tiered
 * session and one thread that owns them all. The thread evicts units past a session's high
 * watermark (batched writes), restores units that ring Forecasts asked for (reads into free
 * slots, answers through the session's CQ as each batch lands), and frees the extents of
 * dropped units. Hot-path threads only kick it (an eventfd write); they never wait on disk.
 * Thread safety: spill_kick from any thread; the rest from the server thread.
 */
#ifndef SPARDA_MEMSVC_SPILL_H
#define SPARDA_MEMSVC_SPILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aio.h"
#include "timeutil.h"

struct session;
struct spill;

#define SPILL_MAX_DIRS 16u

struct spill_opts {
	const char *dirs;	/* comma-separated spill directories */
	uint64_t dir_bytes;	/* cap per directory, all sessions; 0 = none */
	uint64_t session_bytes; /* per session and directory; 0 = 4 x the arena */
	enum aio_kind aio_kind;
	bool sqpoll;
	bool direct;
	uint32_t batch_bytes, queue_depth;
	uint32_t header_bytes; /* 0: from the files' alignment (tier_nvme_opts) */
	int io_timeout_ms;
	uint32_t backoff_ms;
	uint32_t starve_ms; /* restores without a slot, nothing evictable: -ENOSPC after (1000) */
	/*
	 * Restores always through the tier's staging buffers (a copy per unit), even when the
	 * session's arena is registered for io_uring and could be read into directly.
	 */
	bool no_direct_restore;
	/*
	 * Tests only: a fault rule for every tier's aio (memsvc/aio_fault.h), as
	 * "action=errno|short|corrupt|delay,match=read|write,nth=N,times=N,err=EIO,short_by=N,
	 * delay_ms=N". NULL or "" = none. The daemon takes it from SPARDA_MEMSVC_TEST_AIO_FAULT.
	 */
	const char *test_fault;
};

struct spill_stats {
	uint64_t sessions;			 /* tiered sessions now */
	uint64_t units_spilled, bytes_spilled;	 /* RAM -> disk writes */
	uint64_t units_dropped;			 /* evicted with a copy already on disk */
	uint64_t spill_failures;		 /* units a write batch could not store */
	uint64_t units_restored, bytes_restored; /* disk -> RAM reads that verified */
	uint64_t restore_misses;		 /* reads that failed: the unit is lost */
	uint64_t answers_deferred, answers_late; /* ring Forecasts answered after a restore */
	uint64_t restores_starved;		 /* restores refused: no slot could be had */
	uint64_t crc_failures, id_mismatches, io_errors, enospc_events;
	uint64_t degraded_entries, recoveries, degraded_now; /* tiers RAM-only now */
	uint64_t write_ios, read_ios;
	uint64_t units_direct;	   /* restores read straight into their slot (hits and misses) */
	uint64_t arena_registered; /* tiered sessions whose arena is registered for io_uring now */
	uint64_t extents_used, extents_total, extent_bytes;
	uint64_t bytes_used; /* extents in use x their size, summed over the tiers */
	uint64_t disk_bytes_reserved;
	struct hist restore_ns; /* Forecast of a spilled unit -> its answer */
	struct hist spill_ns;	/* one eviction write batch, started to done */
	uint64_t spill_busy_ns; /* wall time with eviction writes in flight (batches overlap) */
	struct hist read_ns;	/* one restore read batch */
	char aio[24];		/* backend of the tiers ("uring", "sync", ...) */
};

/*
 * Parse the options and start the thread (no files yet: each session gets its own at attach).
 * Returns 0, -EINVAL with err naming the problem (directories, fault spec), -ENOMEM, or the
 * -errno of eventfd/pthread_create.
 */
int spill_open(const struct spill_opts *o, struct spill **out, char *err, size_t err_len);
/* Stop the thread. Every session must have been removed. NULL ok. */
void spill_free(struct spill *sp);

/*
 * Reserve disk for a session with arena_bytes of unit_bytes units: *file_bytes per directory.
 * Returns 0, or -ENOSPC when the directories' cap has no room (the session then stays RAM
 * only). spill_unreserve gives it back (also done by spill_session_remove).
 */
int spill_reserve(struct spill *sp, uint64_t arena_bytes, uint32_t unit_bytes,
		  uint64_t *file_bytes);
void spill_unreserve(struct spill *sp, uint64_t file_bytes);
/* Number of spill directories (a session reserves file_bytes in each). */
uint32_t spill_n_dirs(const struct spill *sp);

/*
 * Open the session's tier (files in every directory) and start serving it; the session must
 * be created tiered with spill_kick/sp as its tier_kick/tier_ctx. file_bytes from
 * spill_reserve (kept by the session's entry from now on). Returns 0 or the tier's error.
 */
int spill_session_add(struct spill *sp, struct session *s, uint64_t file_bytes);
/*
 * Stop serving the session: waits until the thread is done with it, then closes its tier
 * (its files go, with every extent). Call before session_destroy. Returns false (nothing done)
 * for a session that was not added.
 */
bool spill_session_remove(struct spill *sp, struct session *s);

/* Wake the thread (callable from any thread; ctx is the struct spill). */
void spill_kick(void *ctx);

/* Counters (thread safe). */
void spill_get_stats(struct spill *sp, struct spill_stats *st);

#endif
