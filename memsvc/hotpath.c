/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ring consumer threads. The sleep-mode worker only ever touches sessions on its list, under
 * its lock, so hotpath_remove (which takes the lock and drops the doorbell from epoll) is
 * enough to make a session safe to destroy; epoll events are used as wake-ups only.
 */
#include "hotpath.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "mstats.h"
#include "ring.h"
#include "session.h"
#include "tenant.h"
#include "timeutil.h"

#define SLEEP_TIMEOUT_MS 100
#define POLL_YIELD_NS 1000000ull /* a poller idle this long yields its CPU between checks */

struct poller {
	struct session *s;
	pthread_t thread;
	_Atomic bool stop;
	struct mstats *stats;
};

struct hotpath {
	struct hotpath_opts o;
	pthread_mutex_t lock; /* sleepers[], n_sleepers, pollers[] */
	struct session **sleepers;
	size_t n_sleepers, cap_sleepers;
	struct poller **pollers;
	size_t n_pollers, cap_pollers;
	int epfd, wake_fd;
	pthread_t worker;
	bool worker_started;
	_Atomic bool stop;
};

uint32_t hotpath_serve(struct session *s, struct mstats *stats)
{
	struct ring *sq = session_sq(s), *cq = session_cq(s);
	struct sp_sqe sqe[HOTPATH_BATCH];
	struct sp_cqe cqe[HOTPATH_BATCH];
	enum wire_kind kinds[HOTPATH_BATCH];
	uint32_t n, m, space;
	uint64_t t0, per;

	/* Idle: no lock (a poller spins here); deferred answers are also posted by the tier. */
	if (!ring_count(sq))
		return 0;
	session_cq_lock(s);
	/* Deferred answers first: they are older than anything still on the SQ. */
	(void)session_outbox_flush_locked(s);
	n = ring_count(sq);
	space = ring_space(cq);
	if (n > space)
		n = space; /* never take an entry we cannot answer */
	if (n > HOTPATH_BATCH)
		n = HOTPATH_BATCH;
	if (!n) {
		session_cq_unlock(s);
		return 0;
	}
	n = ring_pop(sq, sqe, n);
	t0 = time_now_ns();
	if (tenant_inflight_acquire(session_tenant(s), n) == 0) {
		m = session_sqes_apply(s, sqe, n, cqe);
		tenant_inflight_release(session_tenant(s), n);
	} else {
		for (uint32_t i = 0; i < n; i++)
			cqe[i] = (struct sp_cqe){.op = sqe[i].op,
						 .flags = sqe[i].flags,
						 .status = -EBUSY,
						 .req_id = sqe[i].req_id,
						 .slot = SP_UNIT_SLOT_NONE,
						 .seq_index = sqe[i].seq_index,
						 .layer = sqe[i].layer,
						 .head = sqe[i].head,
						 .block = sqe[i].block};
		m = n;
	}
	ring_push(cq, cqe, m);
	session_cq_unlock(s);
	if (m)
		(void)ring_doorbell(cq); /* a client that closed its eventfd only hurts itself */
	per = (time_now_ns() - t0) / n;
	for (uint32_t i = 0; i < m; i++) {
		kinds[i] = mstats_op_kind(cqe[i].op);
		if (cqe[i].status != -EINPROGRESS) /* a restore under way is no error */
			mstats_errno(stats, cqe[i].status);
		if (cqe[i].op != SP_OP_FORECAST_VEC || cqe[i].status)
			continue;
		for (uint32_t j = 0; j < cqe[i].head; j++) { /* its units' own answers */
			int32_t st = session_vec_status(s, cqe[i].block + j);
			if (st != -EINPROGRESS)
				mstats_errno(stats, st);
		}
	}
	mstats_request_batch(stats, MSTATS_PATH_SHM, kinds, m, per);
	return n;
}

/* ---- poll mode: one spinning thread per session ------------------------------------------ */

static void *poller_main(void *arg)
{
	struct poller *p = arg;
	uint64_t idle_since = time_now_ns();

	while (!atomic_load_explicit(&p->stop, memory_order_acquire)) {
		if (hotpath_serve(p->s, p->stats)) {
			idle_since = time_now_ns();
			continue;
		}
		if (time_now_ns() - idle_since > POLL_YIELD_NS)
			sched_yield();
		else
			__builtin_ia32_pause();
	}
	return NULL;
}

static int grow(void **v, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap * 2 : 16;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*v, ncap * sizeof(void *));
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = ncap;
	return 0;
}

static int poller_add(struct hotpath *hp, struct session *s)
{
	struct poller *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->s = s;
	p->stats = hp->o.stats;
	r = grow((void **)&hp->pollers, &hp->cap_pollers, hp->n_pollers + 1);
	if (!r)
		r = -pthread_create(&p->thread, NULL, poller_main, p);
	if (r) {
		free(p);
		return r;
	}
	hp->pollers[hp->n_pollers++] = p;
	return 0;
}

static bool poller_remove(struct hotpath *hp, struct session *s)
{
	for (size_t i = 0; i < hp->n_pollers; i++) {
		struct poller *p = hp->pollers[i];
		if (p->s != s)
			continue;
		atomic_store_explicit(&p->stop, true, memory_order_release);
		pthread_join(p->thread, NULL);
		free(p);
		hp->pollers[i] = hp->pollers[--hp->n_pollers];
		return true;
	}
	return false;
}

/* ---- sleep mode: one worker for every sleeping session ----------------------------------- */

static void set_sleeping(struct hotpath *hp, uint32_t v)
{
	for (size_t i = 0; i < hp->n_sleepers; i++)
		atomic_store_explicit(&session_sq(hp->sleepers[i])->hdr->consumer_sleeping, v,
				      memory_order_seq_cst);
}

static uint32_t serve_all(struct hotpath *hp)
{
	uint32_t busy = 0;

	for (size_t i = 0; i < hp->n_sleepers; i++)
		busy += hotpath_serve(hp->sleepers[i], hp->o.stats);
	return busy;
}

static bool any_pending(struct hotpath *hp)
{
	for (size_t i = 0; i < hp->n_sleepers; i++)
		if (ring_count(session_sq(hp->sleepers[i])))
			return true;
	return false;
}

static void drain_bells(struct hotpath *hp)
{
	uint64_t v;

	for (size_t i = 0; i < hp->n_sleepers; i++) {
		int fds[5];
		session_fds(hp->sleepers[i], fds);
		(void)!read(fds[3], &v, sizeof(v));
	}
	(void)!read(hp->wake_fd, &v, sizeof(v));
}

/* Announce sleep, re-check (the client may have published before it saw the flag), sleep. */
static void worker_sleep(struct hotpath *hp)
{
	struct epoll_event ev[16];

	set_sleeping(hp, 1);
	if (any_pending(hp)) {
		set_sleeping(hp, 0);
		return;
	}
	pthread_mutex_unlock(&hp->lock);
	(void)epoll_wait(hp->epfd, ev, 16, SLEEP_TIMEOUT_MS);
	pthread_mutex_lock(&hp->lock);
	set_sleeping(hp, 0);
	drain_bells(hp);
}

static void *worker_main(void *arg)
{
	struct hotpath *hp = arg;
	uint64_t last_busy = time_now_ns();

	pthread_mutex_lock(&hp->lock);
	while (!atomic_load_explicit(&hp->stop, memory_order_acquire)) {
		if (serve_all(hp)) {
			last_busy = time_now_ns();
		} else if (time_now_ns() - last_busy < hp->o.spin_ns) {
			/* Let add/remove in between spins. */
			pthread_mutex_unlock(&hp->lock);
			__builtin_ia32_pause();
			pthread_mutex_lock(&hp->lock);
		} else {
			worker_sleep(hp);
			last_busy = time_now_ns();
			if (!serve_all(hp))
				last_busy = 0; /* nothing came: sleep again without spinning */
		}
	}
	pthread_mutex_unlock(&hp->lock);
	return NULL;
}

static void wake(struct hotpath *hp)
{
	uint64_t one = 1;
	(void)!write(hp->wake_fd, &one, sizeof(one));
}

int hotpath_open(const struct hotpath_opts *o, struct hotpath **out)
{
	struct hotpath *hp = calloc(1, sizeof(*hp));
	struct epoll_event ev = {.events = EPOLLIN};
	int r;

	*out = NULL;
	if (!hp)
		return -ENOMEM;
	hp->o = *o;
	pthread_mutex_init(&hp->lock, NULL);
	hp->epfd = epoll_create1(EPOLL_CLOEXEC);
	hp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (hp->epfd < 0 || hp->wake_fd < 0 ||
	    epoll_ctl(hp->epfd, EPOLL_CTL_ADD, hp->wake_fd, &ev) < 0) {
		r = err_from_errno();
		goto out_free;
	}
	r = -pthread_create(&hp->worker, NULL, worker_main, hp);
	if (r)
		goto out_free;
	hp->worker_started = true;
	*out = hp;
	return 0;
out_free:
	hotpath_free(hp);
	return r;
}

void hotpath_free(struct hotpath *hp)
{
	if (!hp)
		return;
	if (hp->worker_started) {
		atomic_store_explicit(&hp->stop, true, memory_order_release);
		wake(hp);
		pthread_join(hp->worker, NULL);
	}
	while (hp->n_pollers)
		poller_remove(hp, hp->pollers[0]->s);
	if (hp->epfd >= 0)
		close(hp->epfd);
	if (hp->wake_fd >= 0)
		close(hp->wake_fd);
	free(hp->sleepers);
	free(hp->pollers);
	pthread_mutex_destroy(&hp->lock);
	free(hp);
}

int hotpath_add(struct hotpath *hp, struct session *s)
{
	struct epoll_event ev = {.events = EPOLLIN};
	int fds[5];
	int r;

	if (session_wait_mode(s) == SP_WAIT_POLL)
		return poller_add(hp, s);
	session_fds(s, fds);
	pthread_mutex_lock(&hp->lock);
	r = grow((void **)&hp->sleepers, &hp->cap_sleepers, hp->n_sleepers + 1);
	if (!r && epoll_ctl(hp->epfd, EPOLL_CTL_ADD, fds[3], &ev) < 0)
		r = err_from_errno();
	if (!r)
		hp->sleepers[hp->n_sleepers++] = s;
	pthread_mutex_unlock(&hp->lock);
	wake(hp);
	return r;
}

void hotpath_remove(struct hotpath *hp, struct session *s)
{
	int fds[5];

	if (poller_remove(hp, s))
		return;
	session_fds(s, fds);
	wake(hp); /* shortens the wait for the lock when the worker is mid-spin */
	pthread_mutex_lock(&hp->lock);
	for (size_t i = 0; i < hp->n_sleepers; i++) {
		if (hp->sleepers[i] != s)
			continue;
		(void)epoll_ctl(hp->epfd, EPOLL_CTL_DEL, fds[3], NULL);
		hp->sleepers[i] = hp->sleepers[--hp->n_sleepers];
		break;
	}
	pthread_mutex_unlock(&hp->lock);
}
