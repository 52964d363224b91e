/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NVMe tier's storage layer: spill files in one or more directories, an extent allocator
 * (one extent = a header block + the unit, both in the files' direct-I/O alignment and block
 * size: 4 KiB on common filesystems, 512 B at least), and batched unit writes and
 * verified reads over aio. A read returns the bytes written for that unit or a miss (-EBADMSG):
 * a bad header or CRC32C, another identity or generation is never a hit (and, except for
 * direct reads into a registered arena, never reaches the caller's buffer: tier_nvme_read).
 * ENOSPC while spilling puts the tier in a degraded (RAM-only) state that retries after a
 * back-off and recovers by itself when space returns.
 * The daemon drives it from memsvc/spill.c, one instance per tiered session.
 * Thread safety: none; one owner thread per instance.
 */
#ifndef SPARDA_MEMSVC_TIER_NVME_H
#define SPARDA_MEMSVC_TIER_NVME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aio.h"

#define TIER_NVME_MAGIC 0x4c49505341445053ull /* "SPDASPIL" little-endian */
#define TIER_NVME_VERSION 1u
#define TIER_NVME_ALIGN 4096u /* the largest header block and alignment */

/*
 * On-disk header at the start of each extent (the rest of its header block is zero); the unit
 * follows at extent offset tier_nvme_header_bytes(). crc is CRC32C over this header with
 * crc = 0, then the unit_bytes of data. Host byte order: spill files never outlive the daemon.
 */
struct tier_nvme_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t unit_bytes;
	uint64_t session;
	uint64_t extent; /* its own index: catches misdirected writes and reads */
	uint32_t tenant, seq, layer, head, block, gen;
	uint32_t crc;
	uint32_t reserved;
};
_Static_assert(sizeof(struct tier_nvme_hdr) == 64, "tier_nvme_hdr on-disk format");

struct tier_nvme;
struct aio_fault;

struct tier_nvme_opts {
	const char *const *dirs; /* spill directories (1..16); files are created and unlinked */
	uint32_t n_dirs;
	uint32_t files_per_dir; /* default 1 */
	uint64_t file_bytes;	/* capacity of each file; at least one extent */
	uint64_t grow_bytes;	/* fallocate step as extents are first used (default 64 MiB) */
	uint32_t unit_bytes;	/* 1..SP_MAX_UNIT_BYTES */
	uint32_t header_bytes;	/* 0: the files' alignment and block size (512..4096); else that */
	uint32_t batch_bytes;	/* staging buffer of each of the two lanes (default 4 MiB, >= 1 extent) */
	uint32_t max_io_bytes;	/* longest single operation (default 1 MiB; one extent at least) */
	uint32_t queue_depth;	/* aio depth (default 64) */
	enum aio_kind aio_kind; /* default AIO_KIND_URING; AIO_KIND_AUTO falls back to sync */
	bool sqpoll;
	bool no_direct;		 /* never open O_DIRECT */
	bool unlink_early;	 /* unlink each file once open: nothing outlives a crash */
	uint32_t backoff_ms;	 /* degraded: next spill attempt after this (default 1000) */
	int io_timeout_ms;	 /* a call waits this long for its I/O (default 30000) */
	struct aio_fault *fault; /* tests: fault injection under the tier (borrowed) */
	/*
	 * The caller's buffer region that restores read into (the session's arena; borrowed, must
	 * outlive the tier): registered as fixed buffers next to the staging lanes. Registration
	 * failing (RLIMIT_MEMLOCK, sync aio) is logged and reads use staging. NULL: none.
	 */
	void *arena;
	size_t arena_bytes;
	bool no_direct_read; /* restores always go through staging, even into the arena */
};

/* A unit's identity; every field must match on read. */
struct tier_nvme_key {
	uint32_t tenant;
	uint64_t session;
	uint32_t seq, layer, head, block, gen;
};

struct tier_nvme_wreq {
	struct tier_nvme_key key;
	const void *unit; /* unit_bytes; copied before the call returns */
	uint64_t extent;  /* out: where it was stored (valid when res == 0) */
	int res;	  /* out: 0, -ENOSPC (degraded or full), -EIO, -ETIMEDOUT, ... */
};

struct tier_nvme_rreq {
	struct tier_nvme_key key;
	uint64_t extent;
	void *dst; /* unit_bytes; see tier_nvme_read for what a miss leaves there */
	int res;   /* out: 0, -EBADMSG (verification), -ENOENT (extent free), -EIO, ... */
	/*
	 * out (every request): true (with res -ETIMEDOUT) when a direct read into dst timed out:
	 * the I/O may still write dst, which must not be reused before tier_nvme_stuck() is false.
	 */
	bool dst_busy;
};

struct tier_nvme_stats {
	uint64_t units_written, units_read, bytes_written, bytes_read;
	uint64_t write_ios, read_ios; /* aio operations: batching shows as ios < units */
	uint64_t crc_failures, id_mismatches, io_errors;
	uint64_t enospc_events, degraded_entries, recoveries;
	uint64_t extents_used, extents_total;
	uint64_t direct_reads; /* units read straight into dst (hits and misses) */
	bool degraded;
	bool arena_registered; /* opts.arena is registered as fixed buffers */
};

/*
 * Create the spill files (O_DIRECT where the filesystem takes it), preallocate the first
 * grow_bytes of each, open aio over them. Logs the aio backend and the O_DIRECT choice.
 * Returns 0, -EINVAL (opts), -ENOMEM, -ENOSPC, or the error of open/fallocate/aio_open.
 */
int tier_nvme_open(const struct tier_nvme_opts *o, struct tier_nvme **out);
/* Waits for I/O in flight, closes and unlinks the files. Accepts NULL. */
void tier_nvme_free(struct tier_nvme *t);

/*
 * Store n units: extents are allocated, consecutive ones are written in one operation.
 * Each reqs[i].res gets its result. Returns how many were stored, or -EBUSY when I/O of an
 * earlier timed-out call is still in flight (nothing was attempted).
 */
int tier_nvme_write(struct tier_nvme *t, struct tier_nvme_wreq *reqs, uint32_t n);
/*
 * Read and verify n units into their dst. Returns how many hit (res == 0), or -EBUSY as above.
 * A dst inside opts.arena, when the arena is registered, the files are O_DIRECT and dst and
 * the unit size meet their alignment, is read directly: the header block goes to staging and
 * the unit straight into dst, both verified where they landed (no copy). A miss there leaves
 * unverified bytes in dst: the caller must keep dst unreadable by anyone until res == 0 (and
 * a dst_busy one untouched until the I/O is over). Any other dst goes through staging, is
 * copied only after verification, and a miss leaves it untouched.
 */
int tier_nvme_read(struct tier_nvme *t, struct tier_nvme_rreq *reqs, uint32_t n);
/*
 * A write in two halves, so the caller can prepare its next batch while this one's I/O runs:
 * start allocates, stages (copies every unit: the units may change once it returns) and
 * submits n <= tier_nvme_batch_units() requests on one of the tier's two staging lanes and
 * returns a handle >= 0; -EBUSY when no lane is free (both out, or a timed-out call's I/O
 * still owns one; every request then has res = -EBUSY), -EINVAL for n. reqs must stay valid
 * until wait, which waits for that write and returns what tier_nvme_write would. Reads and
 * writes in between (on the other lane) are allowed.
 */
int tier_nvme_write_start(struct tier_nvme *t, struct tier_nvme_wreq *reqs, uint32_t n);
int tier_nvme_write_wait(struct tier_nvme *t, int handle);
/* Units one lane's staging buffer holds (opts.batch_bytes / extent bytes, at least 1). */
uint32_t tier_nvme_batch_units(const struct tier_nvme *t);
/* Release an extent. Returns 0, -EINVAL (out of range), -ENOENT (not allocated). */
int tier_nvme_extent_free(struct tier_nvme *t, uint64_t extent);

bool tier_nvme_degraded(const struct tier_nvme *t);
void tier_nvme_get_stats(const struct tier_nvme *t, struct tier_nvme_stats *s);
/* Which aio backend runs ("uring", "sync", ...), and whether the files use O_DIRECT. */
const char *tier_nvme_aio_name(const struct tier_nvme *t);
bool tier_nvme_direct(const struct tier_nvme *t);
/* Whether restores into opts.arena read straight into it (see tier_nvme_read). */
bool tier_nvme_direct_read(const struct tier_nvme *t);
/*
 * Whether a timed-out call's I/O is still in flight (collects what finished, without
 * waiting). While true, calls return -EBUSY and dst_busy buffers still belong to the I/O.
 */
bool tier_nvme_stuck(struct tier_nvme *t);
/* Bytes of one extent (header block + unit rounded up to the header block's size). */
uint64_t tier_nvme_extent_bytes(const struct tier_nvme *t);
/* Bytes of the header block: where the unit starts in its extent. */
uint32_t tier_nvme_header_bytes(const struct tier_nvme *t);
/*
 * For tests and tools: the file path (gone with opts.unlink_early) and byte offset of an
 * extent. Returns 0, -EINVAL, -ENAMETOOLONG (cap too small).
 */
int tier_nvme_extent_locate(const struct tier_nvme *t, uint64_t extent, char *path, size_t cap,
			    uint64_t *off);

#endif
