/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Daemon-wide counters: requests by path (shm ring, ZeroMQ) and op, their latency histograms,
 * and errors by kind. Written by the server and hot-path threads, read by /metrics and the
 * stats request. Thread safe: requests and histograms in per-thread shards (summed on read),
 * errors as relaxed atomics.
 */
#ifndef SPARDA_MEMSVC_MSTATS_H
#define SPARDA_MEMSVC_MSTATS_H

#include <stdint.h>

#include "timeutil.h"
#include "wire.h"

enum mstats_path { MSTATS_PATH_SHM = 0, MSTATS_PATH_ZMQ, MSTATS_PATH_MAX };

enum mstats_err {
	MSTATS_ERR_BADMSG = 0, /* malformed or truncated message (an error reply was sent) */
	MSTATS_ERR_TOOBIG,     /* over the size cap */
	MSTATS_ERR_DROPPED,    /* not answerable (no identity) or the reply could not be sent */
	MSTATS_ERR_AUTH,       /* unknown session or wrong token, uid not admitted */
	MSTATS_ERR_QUOTA,      /* tenant limits and the daemon budget */
	MSTATS_ERR_BUSY,       /* in-flight limit */
	MSTATS_ERR_INVALID,    /* bad ids */
	MSTATS_ERR_STALE,      /* stale handles */
	MSTATS_ERR_NOSPC,      /* arena, rows or unit words full */
	MSTATS_ERR_MISS,       /* forecast of a unit that is not resident */
	MSTATS_ERR_OTHER,
	MSTATS_ERR_MAX,
};

struct mstats;

/* Returns NULL on allocation failure. */
struct mstats *mstats_new(void);
void mstats_free(struct mstats *m);

/* Count one request (kind: enum wire_kind) that took ns; count n units too. */
void mstats_request(struct mstats *m, enum mstats_path p, enum wire_kind kind, uint64_t ns);
/*
 * n requests of the kinds kinds[i] that took ns each, under one acquisition of the histogram
 * lock (the hot path records a whole ring batch at once so pollers do not contend per entry).
 */
void mstats_request_batch(struct mstats *m, enum mstats_path p, const enum wire_kind *kinds,
			  uint32_t n, uint64_t ns);
/* Count an error by kind, or by a -errno (mapped to a kind). */
void mstats_error(struct mstats *m, enum mstats_err e);
void mstats_errno(struct mstats *m, int neg_errno);

const char *mstats_path_name(enum mstats_path p);
const char *mstats_err_name(enum mstats_err e);

uint64_t mstats_requests(struct mstats *m, enum mstats_path p, enum wire_kind kind);
uint64_t mstats_errors(struct mstats *m, enum mstats_err e);
/* Copy one histogram out (under the lock). */
void mstats_hist(struct mstats *m, enum mstats_path p, enum wire_kind kind, struct hist *out);

/* wire kind of a ring op (SP_OP_FORECAST -> WIRE_FORECAST ...), WIRE_NONE when unknown. */
enum wire_kind mstats_op_kind(unsigned op);

#endif
