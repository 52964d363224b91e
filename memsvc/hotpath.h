/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ring consumers: for each session, SQ entries in, one CQE out per entry, the CQ doorbell
 * rung when the client sleeps. SP_WAIT_POLL sessions get a dedicated spinning thread;
 * SP_WAIT_SLEEP sessions share one worker that spins briefly over all of them and then sleeps
 * in epoll on their sq_doorbell eventfds. The tenant's in-flight limit applies per batch.
 * Thread safety: add/remove/free are called from the server thread only.
 */
#ifndef SPARDA_MEMSVC_HOTPATH_H
#define SPARDA_MEMSVC_HOTPATH_H

#include <stdint.h>

struct hotpath;
struct mstats;
struct session;

#define HOTPATH_BATCH 64u

struct hotpath_opts {
	uint64_t spin_ns;     /* sleep mode: spin this long after the last entry before sleeping */
	struct mstats *stats; /* not owned */
};

/* Start the sleep-mode worker. Returns 0, -ENOMEM or -errno of epoll/eventfd/pthread. */
int hotpath_open(const struct hotpath_opts *o, struct hotpath **out);
/* Stop every thread. Every session must have been removed first. NULL ok. */
void hotpath_free(struct hotpath *hp);

/*
 * Start serving a session in its wait mode. Returns 0, -ENOMEM, or -errno of epoll_ctl or
 * pthread_create.
 */
int hotpath_add(struct hotpath *hp, struct session *s);
/* Stop serving it; on return no hot-path thread touches the session any more. */
void hotpath_remove(struct hotpath *hp, struct session *s);

/*
 * Serve one batch of a session's SQ (at most HOTPATH_BATCH entries, never more than the CQ has
 * room for). Returns the number of entries answered. Exposed for tests.
 */
uint32_t hotpath_serve(struct session *s, struct mstats *stats);

#endif
