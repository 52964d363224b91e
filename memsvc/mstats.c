/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Daemon counters. Hot-path threads record one histogram sample per ring entry; the mutex is
 * uncontended in the common case (one consumer thread per few sessions).
 */
#include "mstats.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "shm_abi.h"

struct mstats {
	_Atomic uint64_t requests[MSTATS_PATH_MAX][WIRE_KIND_MAX];
	_Atomic uint64_t errors[MSTATS_ERR_MAX];
	pthread_mutex_t lock; /* the histograms */
	struct hist lat[MSTATS_PATH_MAX][WIRE_KIND_MAX];
};

struct mstats *mstats_new(void)
{
	struct mstats *m = calloc(1, sizeof(*m));

	if (m)
		pthread_mutex_init(&m->lock, NULL);
	return m;
}

void mstats_free(struct mstats *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void mstats_request(struct mstats *m, enum mstats_path p, enum wire_kind kind, uint64_t ns)
{
	if ((unsigned)p >= MSTATS_PATH_MAX || (unsigned)kind >= WIRE_KIND_MAX)
		return;
	atomic_fetch_add_explicit(&m->requests[p][kind], 1, memory_order_relaxed);
	pthread_mutex_lock(&m->lock);
	hist_add(&m->lat[p][kind], ns);
	pthread_mutex_unlock(&m->lock);
}

void mstats_request_batch(struct mstats *m, enum mstats_path p, const enum wire_kind *kinds,
			  uint32_t n, uint64_t ns)
{
	if ((unsigned)p >= MSTATS_PATH_MAX)
		return;
	for (uint32_t i = 0; i < n; i++)
		if ((unsigned)kinds[i] < WIRE_KIND_MAX)
			atomic_fetch_add_explicit(&m->requests[p][kinds[i]], 1,
						  memory_order_relaxed);
	/* Every entry of a batch took the same time: count runs of one kind as one update. */
	pthread_mutex_lock(&m->lock);
	for (uint32_t i = 0; i < n;) {
		uint32_t j = i;
		while (j < n && kinds[j] == kinds[i])
			j++;
		if ((unsigned)kinds[i] < WIRE_KIND_MAX)
			hist_add_n(&m->lat[p][kinds[i]], ns, j - i);
		i = j;
	}
	pthread_mutex_unlock(&m->lock);
}

void mstats_error(struct mstats *m, enum mstats_err e)
{
	if ((unsigned)e < MSTATS_ERR_MAX)
		atomic_fetch_add_explicit(&m->errors[e], 1, memory_order_relaxed);
}

void mstats_errno(struct mstats *m, int neg_errno)
{
	switch (neg_errno) {
	case 0:
		return;
	case -EBADMSG:
	case -EPROTONOSUPPORT:
		mstats_error(m, MSTATS_ERR_BADMSG);
		return;
	case -EMSGSIZE:
		mstats_error(m, MSTATS_ERR_TOOBIG);
		return;
	case -EPERM:
	case -EACCES:
		mstats_error(m, MSTATS_ERR_AUTH);
		return;
	case -EDQUOT:
	case -ENOMEM:
		mstats_error(m, MSTATS_ERR_QUOTA);
		return;
	case -EBUSY:
		mstats_error(m, MSTATS_ERR_BUSY);
		return;
	case -EINVAL:
	case -EEXIST:
		mstats_error(m, MSTATS_ERR_INVALID);
		return;
	case -ESTALE:
		mstats_error(m, MSTATS_ERR_STALE);
		return;
	case -ENOSPC:
		mstats_error(m, MSTATS_ERR_NOSPC);
		return;
	case -ENOENT:
		mstats_error(m, MSTATS_ERR_MISS);
		return;
	default:
		mstats_error(m, MSTATS_ERR_OTHER);
	}
}

const char *mstats_path_name(enum mstats_path p)
{
	return p == MSTATS_PATH_SHM ? "shm" : p == MSTATS_PATH_ZMQ ? "zmq" : "?";
}

const char *mstats_err_name(enum mstats_err e)
{
	static const char *const names[MSTATS_ERR_MAX] = {
	    "badmsg",  "toobig", "dropped", "auth", "quota", "busy",
	    "invalid", "stale",	 "nospc",   "miss", "other",
	};
	return (unsigned)e < MSTATS_ERR_MAX ? names[e] : "?";
}

uint64_t mstats_requests(struct mstats *m, enum mstats_path p, enum wire_kind kind)
{
	return atomic_load_explicit(&m->requests[p][kind], memory_order_relaxed);
}

uint64_t mstats_errors(struct mstats *m, enum mstats_err e)
{
	return atomic_load_explicit(&m->errors[e], memory_order_relaxed);
}

void mstats_hist(struct mstats *m, enum mstats_path p, enum wire_kind kind, struct hist *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->lat[p][kind];
	pthread_mutex_unlock(&m->lock);
}

enum wire_kind mstats_op_kind(unsigned op)
{
	switch (op) {
	case SP_OP_FORECAST:
		return WIRE_FORECAST;
	case SP_OP_COMMIT:
		return WIRE_COMMIT;
	case SP_OP_ALLOC:
		return WIRE_ALLOC;
	case SP_OP_FREE:
		return WIRE_FREE;
	default:
		return WIRE_NONE;
	}
}
