/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NVMe tier's state, shared by tier_nvme.c (extents, staging, I/O and calls) and
 * tier_nvme_open.c (files, opening, freeing, getters). Not for use outside these two files.
 */
#ifndef SPARDA_MEMSVC_TIER_NVME_INTERNAL_H
#define SPARDA_MEMSVC_TIER_NVME_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "tier_nvme.h"

#define TN_TAG "tier_nvme"
#define TN_MAX_DIRS 16u
#define TN_MAX_FILES 64u
#define TN_LANES 2u

struct tn_file {
	int fd;
	char *path;
	bool unlinked;	      /* opts.unlink_early: the name is gone already */
	uint64_t alloc_bytes; /* fallocated (or truncated) so far */
};

/* One aio operation of a call: a run of consecutive extents of one file. */
struct tn_group {
	uint32_t file, n;
	uint64_t first_ext;
	uint32_t k0; /* first staging slot */
	bool write;
	bool staged;	/* write: its units are in the staging buffer */
	bool pending;	/* submitted, completion not reaped */
	bool direct;	/* read of one extent: header block to staging, unit straight to dst */
	uint8_t left;	/* direct: parts (header, unit) not reaped yet */
	int32_t res[2]; /* direct: each part's result */
};

/* One call's staging buffer and state: free, busy (started, not yet waited) or stuck. */
struct tn_lane {
	uint8_t *stage;	     /* stage_ext extents, inside the registered region */
	struct tn_group *groups;
	uint32_t *slot_req;  /* staging slot -> request index of the call */
	uint64_t *ext;	     /* [stage_ext] extents of the call */
	struct tier_nvme_wreq *cur_w;
	struct tier_nvme_rreq *cur_r;
	uint32_t n_req;	     /* requests of the call */
	uint32_t ng, next, done, inflight; /* groups; next to submit; completed; in the aio */
	uint64_t call_id;		   /* tags: call_id << 32 | group index << 1 | part */
	uint64_t enospc_before;		   /* write: ENOSPC events when it started */
	bool busy;
	bool stuck; /* a timed-out call's I/O still owns the staging buffer */
};

struct tier_nvme {
	struct tier_nvme_opts o;
	struct tn_file *files;
	uint32_t n_files;
	bool direct;
	struct aio *aio;
	uint32_t hdr_bytes; /* header block: the files' direct-I/O alignment, 512 B to 4 KiB */
	uint64_t ext_bytes, per_file, n_ext;
	uint64_t *bitmap, hint;
	uint8_t *stage;	    /* TN_LANES staging buffers, one registered region */
	bool arena_reg;	    /* opts.arena is registered as fixed buffers */
	bool direct_read;   /* restores into the arena skip staging (tn_direct_ok) */
	uint32_t stage_ext; /* extents that fit in one lane's staging buffer */
	struct tn_lane lanes[TN_LANES];
	uint64_t call_seq;
	uint64_t retry_ms; /* degraded: earliest next attempt */
	struct tier_nvme_stats st;
};

/* Make sure the file holding extent e has space reserved for it. 0 or -errno (-ENOSPC). */
int tier_nvme_file_reserve(struct tier_nvme *t, uint64_t e);
/* Byte offset of extent e in its file. */
uint64_t tier_nvme_ext_off(const struct tier_nvme *t, uint64_t e);
/* Collect finished I/O of timed-out calls without waiting. 0, or -EBUSY while a stuck lane's
 * I/O is still in flight. */
int tier_nvme_io_drain(struct tier_nvme *t);

#endif
