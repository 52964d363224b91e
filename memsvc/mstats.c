/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Daemon counters. Request counts and latency histograms are kept in shards, one per writing
 * thread (round-robin over MSTATS_SHARDS, each on its own cache lines), so hot-path threads of
 * different sessions never share a lock or a counter line; readers sum the shards.
 */
#include "mstats.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "shm_abi.h"

#define MSTATS_SHARDS 16

struct mstats_shard {
	_Alignas(64) pthread_mutex_t lock; /* uncontended unless two threads share the shard */
	uint64_t requests[MSTATS_PATH_MAX][WIRE_KIND_MAX];
	struct hist lat[MSTATS_PATH_MAX][WIRE_KIND_MAX];
};

struct mstats {
	_Atomic uint64_t errors[MSTATS_ERR_MAX]; /* rare: one shared set */
	struct mstats_shard shard[MSTATS_SHARDS];
};

static _Atomic unsigned next_shard;
static _Thread_local int my_shard = -1;

/* This thread's shard (given on its first request, round-robin). */
static struct mstats_shard *shard_of(struct mstats *m)
{
	if (my_shard < 0)
		my_shard = (int)(atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) %
				 MSTATS_SHARDS);
	return &m->shard[my_shard];
}

struct mstats *mstats_new(void)
{
	struct mstats *m = aligned_alloc(64, (sizeof(struct mstats) + 63) / 64 * 64);

	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < MSTATS_SHARDS; i++)
		pthread_mutex_init(&m->shard[i].lock, NULL);
	return m;
}

void mstats_free(struct mstats *m)
{
	if (!m)
		return;
	for (int i = 0; i < MSTATS_SHARDS; i++)
		pthread_mutex_destroy(&m->shard[i].lock);
	free(m);
}

void mstats_request(struct mstats *m, enum mstats_path p, enum wire_kind kind, uint64_t ns)
{
	struct mstats_shard *sh;

	if ((unsigned)p >= MSTATS_PATH_MAX || (unsigned)kind >= WIRE_KIND_MAX)
		return;
	sh = shard_of(m);
	pthread_mutex_lock(&sh->lock);
	sh->requests[p][kind]++;
	hist_add(&sh->lat[p][kind], ns);
	pthread_mutex_unlock(&sh->lock);
}

void mstats_request_batch(struct mstats *m, enum mstats_path p, const enum wire_kind *kinds,
			  uint32_t n, uint64_t ns)
{
	struct mstats_shard *sh;

	if ((unsigned)p >= MSTATS_PATH_MAX || !n)
		return;
	sh = shard_of(m);
	/* Every entry of a batch took the same time: count runs of one kind as one update. */
	pthread_mutex_lock(&sh->lock);
	for (uint32_t i = 0; i < n;) {
		uint32_t j = i;
		while (j < n && kinds[j] == kinds[i])
			j++;
		if ((unsigned)kinds[i] < WIRE_KIND_MAX) {
			sh->requests[p][kinds[i]] += j - i;
			hist_add_n(&sh->lat[p][kinds[i]], ns, j - i);
		}
		i = j;
	}
	pthread_mutex_unlock(&sh->lock);
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
	uint64_t n = 0;

	for (int i = 0; i < MSTATS_SHARDS; i++) {
		pthread_mutex_lock(&m->shard[i].lock);
		n += m->shard[i].requests[p][kind];
		pthread_mutex_unlock(&m->shard[i].lock);
	}
	return n;
}

uint64_t mstats_errors(struct mstats *m, enum mstats_err e)
{
	return atomic_load_explicit(&m->errors[e], memory_order_relaxed);
}

void mstats_hist(struct mstats *m, enum mstats_path p, enum wire_kind kind, struct hist *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < MSTATS_SHARDS; i++) {
		pthread_mutex_lock(&m->shard[i].lock);
		hist_merge(out, &m->shard[i].lat[p][kind]);
		pthread_mutex_unlock(&m->shard[i].lock);
	}
}

enum wire_kind mstats_op_kind(unsigned op)
{
	switch (op) {
	case SP_OP_FORECAST:
	case SP_OP_FORECAST_VEC:
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
