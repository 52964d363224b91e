/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside a session: the state shared by session.c (regions, control operations) and
 * session_tier.c (the NVMe tier's hooks: deferred Forecast answers, eviction and restore
 * picks). Never included outside memsvc/.
 */
#ifndef SPARDA_MEMSVC_SESSION_INTERNAL_H
#define SPARDA_MEMSVC_SESSION_INTERNAL_H

#include <pthread.h>

#include "session.h"

/* A ring FORECAST waiting for its unit to come back from the tier. */
struct session_waiter {
	struct sp_sqe sqe;
	uint64_t t0_ns;
};

struct session {
	struct session_opts o;
	char client_name[64];
	uint8_t token[SESSION_TOKEN_BYTES];
	int ctl_fd, sub_fd, arena_fd, sq_bell, cq_bell;
	void *ctl, *sub;
	uint64_t ctl_bytes, sub_bytes, unit_words_cap;
	uint32_t n_slots;
	struct sp_ctl_header *ctl_hdr;
	struct sp_sub_header *sub_hdr;
	struct ring sq, cq;
	struct sp_vec_entry *vec; /* the vector area in sub (client-written: read each field once) */
	uint32_t vec_entries;
	uint8_t *arena;	      /* mapped only for remote sessions (session_arena_map) */
	pthread_mutex_t lock; /* the store, seqs_open and waiters[] */
	struct store *store;
	uint64_t seqs_open;
	/* tier: ring FORECASTs of units on their way back from disk, answered later */
	struct session_waiter *waiters;
	uint32_t n_waiters, max_deferred;
	/* CQ producer side: the hot path thread and the tier thread both post CQEs */
	pthread_mutex_t cq_lock; /* cq (producer), outbox[] */
	struct sp_cqe *outbox;	 /* deferred CQEs that did not fit the CQ yet */
	uint32_t n_outbox;
};

/* Apply one SQE under the session lock (session.c); -EINPROGRESS: answered later. */
int32_t session_sqe_apply_locked(struct session *s, const struct sp_sqe *e, uint32_t *slot,
				 uint32_t *gen);

#endif
