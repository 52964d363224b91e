/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A session's side of the NVMe tier: ring entries applied with deferred answers for units
 * on their way back from disk, the outbox that posts those answers when the CQ has room, and
 * the store calls the tier thread makes under the session lock. Lock order: cq_lock before
 * lock, everywhere (the hot path holds the CQ across a batch).
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "ring.h"
#include "session_internal.h"
#include "timeutil.h"

void session_cq_lock(struct session *s)
{
	pthread_mutex_lock(&s->cq_lock);
}

void session_cq_unlock(struct session *s)
{
	pthread_mutex_unlock(&s->cq_lock);
}

bool session_tiered(const struct session *s)
{
	return s->o.tiered;
}

uint64_t session_tier_bytes(const struct session *s)
{
	return s->o.tier_bytes;
}

uint8_t *session_arena_base(struct session *s)
{
	return s->arena;
}

/*
 * The CQE that answers e, status still to set. Field by field into place: a compound literal
 * built on the stack and copied out as 16-byte words stalled store forwarding on every entry of
 * the hot path.
 */
static void cqe_init(struct sp_cqe *c, const struct sp_sqe *e)
{
	c->op = e->op;
	c->flags = e->flags;
	c->status = 0;
	c->req_id = e->req_id;
	c->slot = SP_UNIT_SLOT_NONE;
	c->seq_index = e->seq_index;
	c->layer = e->layer;
	c->head = e->head;
	c->block = e->block;
	c->gen = 0;
}

/* A FORECAST answered -EINPROGRESS waits for its unit, if there is room: else -EBUSY. */
static int32_t defer_locked(struct session *s, const struct sp_sqe *e)
{
	/* Outbox entries count too: every waiter must find room there later. */
	if (s->n_waiters + s->n_outbox >= s->max_deferred)
		return -EBUSY;
	s->waiters[s->n_waiters++] = (struct session_waiter){.sqe = *e, .t0_ns = time_now_ns()};
	return -EINPROGRESS;
}

/*
 * A vectored FORECAST: each entry of the range is applied as the FORECAST of its unit and
 * answered in place. The area is the client's to write at any time, so each field is read
 * once into the SQE that is applied. Returns 0 or -EINVAL (a range outside the area); *deferred
 * when a unit waits for the tier.
 */
static int32_t vec_apply_locked(struct session *s, const struct sp_sqe *e, bool *deferred)
{
	uint32_t first = e->block, n = e->head;
	struct sp_sqe u = {.op = SP_OP_FORECAST,
			   .req_id = e->req_id,
			   .seq_index = e->seq_index,
			   .seq_gen = e->seq_gen,
			   .step = e->step};

	if (e->layer || !n || first >= s->vec_entries || n > s->vec_entries - first)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		struct sp_vec_entry *v = &s->vec[first + i];
		uint32_t slot, gen;
		int32_t st;

		u.layer = v->layer;
		u.head = v->head;
		u.block = v->block;
		st = session_sqe_apply_locked(s, &u, &slot, &gen);
		if (st == -EINPROGRESS && (st = defer_locked(s, &u)) == -EINPROGRESS)
			*deferred = true;
		v->slot = st ? SP_UNIT_SLOT_NONE : slot;
		v->gen_err = sp_vec_gen_err(gen, st);
	}
	return 0;
}

int32_t session_vec_status(const struct session *s, uint32_t i)
{
	return i < s->vec_entries ? sp_vec_status(s->vec[i].gen_err) : 0;
}

uint32_t session_sqes_apply(struct session *s, const struct sp_sqe *sqe, uint32_t n,
			    struct sp_cqe *cqe)
{
	bool deferred = false;

	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < n; i++) {
		struct sp_cqe *c = &cqe[i];

		cqe_init(c, &sqe[i]);
		if (sqe[i].op == SP_OP_FORECAST_VEC) {
			c->status = vec_apply_locked(s, &sqe[i], &deferred);
			continue;
		}
		c->status = session_sqe_apply_locked(s, &sqe[i], &c->slot, &c->gen);
		if (c->status != -EINPROGRESS)
			continue;
		c->status = defer_locked(s, &sqe[i]);
		if (c->status == -EINPROGRESS) {
			c->flags |= SP_CQE_F_PENDING;
			deferred = true;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (deferred || s->o.tiered)
		session_tier_kick(s);
	return n;
}

uint32_t session_outbox_flush_locked(struct session *s)
{
	uint32_t k;

	if (!s->n_outbox)
		return 0;
	k = ring_push(&s->cq, s->outbox, s->n_outbox);
	if (k) {
		memmove(s->outbox, s->outbox + k, (s->n_outbox - k) * sizeof(*s->outbox));
		s->n_outbox -= k;
		(void)ring_doorbell(&s->cq);
	}
	return s->n_outbox;
}

void session_tier_kick(struct session *s)
{
	bool work;

	if (!s->o.tiered || !s->o.tier_kick)
		return;
	pthread_mutex_lock(&s->lock);
	work = s->n_waiters || store_evict_want(s->store) || store_load_queued(s->store);
	pthread_mutex_unlock(&s->lock);
	if (work)
		s->o.tier_kick(s->o.tier_ctx);
}

bool session_answers_pending(struct session *s)
{
	bool owed;

	if (!s->o.tiered)
		return false;
	pthread_mutex_lock(&s->cq_lock);
	pthread_mutex_lock(&s->lock);
	owed = s->n_waiters || s->n_outbox;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->cq_lock);
	return owed;
}

uint32_t session_load_cancel(struct session *s)
{
	uint32_t n;

	pthread_mutex_lock(&s->lock);
	n = store_load_cancel(s->store);
	pthread_mutex_unlock(&s->lock);
	return n;
}

uint64_t session_load_queued(struct session *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = store_load_queued(s->store);
	pthread_mutex_unlock(&s->lock);
	return n;
}

bool session_tier_busy(struct session *s)
{
	bool busy;

	pthread_mutex_lock(&s->lock);
	busy = s->n_waiters || store_evict_want(s->store) || store_load_queued(s->store);
	pthread_mutex_unlock(&s->lock);
	if (busy)
		return true;
	pthread_mutex_lock(&s->cq_lock);
	busy = s->n_outbox != 0;
	pthread_mutex_unlock(&s->cq_lock);
	return busy;
}

uint32_t session_evict_pick(struct session *s, struct store_io *io, uint32_t cap, uint32_t *dropped)
{
	uint32_t k;

	pthread_mutex_lock(&s->lock);
	if (store_evict_scan(s->store, store_evict_want(s->store))) {
		/* Sorting a large arena's list takes milliseconds: not under the hot path's lock.
		 */
		pthread_mutex_unlock(&s->lock);
		store_evict_sort(s->store);
		pthread_mutex_lock(&s->lock);
	}
	k = store_evict_pick(s->store, store_evict_want(s->store), io, cap, dropped);
	pthread_mutex_unlock(&s->lock);
	return k;
}

uint32_t session_evict_done(struct session *s, struct store_io *io, uint32_t n)
{
	uint32_t k;

	pthread_mutex_lock(&s->lock);
	k = store_evict_done(s->store, io, n);
	pthread_mutex_unlock(&s->lock);
	return k;
}

uint32_t session_load_pick(struct session *s, struct store_io *io, uint32_t cap)
{
	uint32_t k;

	pthread_mutex_lock(&s->lock);
	k = store_load_pick(s->store, io, cap);
	pthread_mutex_unlock(&s->lock);
	return k;
}

uint32_t session_load_done(struct session *s, struct store_io *io, uint32_t n)
{
	uint32_t k;

	pthread_mutex_lock(&s->lock);
	k = store_load_done(s->store, io, n);
	pthread_mutex_unlock(&s->lock);
	return k;
}

uint32_t session_ext_take(struct session *s, uint64_t *out, uint32_t cap)
{
	uint32_t k;

	pthread_mutex_lock(&s->lock);
	k = store_ext_take(s->store, out, cap);
	pthread_mutex_unlock(&s->lock);
	return k;
}

void session_tier_set_degraded(struct session *s, bool degraded)
{
	pthread_mutex_lock(&s->lock);
	store_set_degraded(s->store, degraded);
	pthread_mutex_unlock(&s->lock);
}

/*
 * Under the lock: move answered waiters to done[] (at most cap). fail: answer waiters of
 * SPILLED units with this status instead of restoring them (0: restore).
 */
static bool waiter_spilled(struct session *s, const struct sp_sqe *e)
{
	struct store_unit_id u = {e->seq_index, e->seq_gen, e->layer, e->head, e->block};
	enum sp_unit_state st;
	uint32_t slot, gen;

	return store_unit_lookup(s->store, &u, &st, &slot, &gen) == 0 && st == SP_UNIT_SPILLED;
}

static uint32_t waiters_answer(struct session *s, struct sp_cqe *done, uint32_t cap,
			       struct session_tier_done *d, int fail)
{
	uint64_t now = time_now_ns();
	uint64_t epoch = atomic_load_explicit(&s->sub_hdr->client_epoch, memory_order_acquire);
	uint32_t kept = 0, m = 0;

	for (uint32_t i = 0; i < s->n_waiters; i++) {
		struct session_waiter *w = &s->waiters[i];
		struct sp_cqe c;

		if (m == cap) {
			s->waiters[kept++] = *w;
			continue;
		}
		cqe_init(&c, &w->sqe);
		if (fail && waiter_spilled(s, &w->sqe))
			c.status = fail;
		else
			c.status = session_sqe_apply_locked(s, &w->sqe, &c.slot, &c.gen);
		if (c.status == -EINPROGRESS) {
			s->waiters[kept++] = *w;
			continue;
		}
		c.flags |= SP_CQE_F_DEFERRED;
		done[m++] = c;
		d->answered++;
		if (c.status == 0) {
			d->hits++;
			/* The client already retired this step: the unit came too late for it. */
			if (w->sqe.step && epoch >= w->sqe.step)
				d->late++;
		} else {
			d->misses++;
		}
		if (d->n_latency < sizeof(d->latency_ns) / sizeof(d->latency_ns[0]))
			d->latency_ns[d->n_latency++] = now - w->t0_ns;
	}
	s->n_waiters = kept;
	return m;
}

static uint32_t complete(struct session *s, struct session_tier_done *d, bool starved)
{
	struct sp_cqe done[64];
	uint32_t m, left, cancelled = 0;

	memset(d, 0, sizeof(*d));
	do {
		pthread_mutex_lock(&s->cq_lock);
		pthread_mutex_lock(&s->lock);
		if (starved)
			cancelled += store_load_cancel(s->store);
		m = waiters_answer(s, done, 64, d, starved ? -ENOSPC : 0);
		/* Room is guaranteed: waiters + outbox never exceed max_deferred. */
		memcpy(s->outbox + s->n_outbox, done, m * sizeof(*done));
		s->n_outbox += m;
		left = s->n_waiters;
		pthread_mutex_unlock(&s->lock);
		left += session_outbox_flush_locked(s);
		pthread_mutex_unlock(&s->cq_lock);
	} while (m == 64);
	return starved ? cancelled : left;
}

uint32_t session_waiters_complete(struct session *s, struct session_tier_done *d)
{
	return complete(s, d, false);
}

uint32_t session_load_starved(struct session *s)
{
	struct session_tier_done d;

	return complete(s, &d, true);
}
