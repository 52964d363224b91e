/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc client, hot path: requests as SQEs on the shared-memory SQ, answers as CQEs on the CQ.
 * Up to MEMCLIENT_MAX_INFLIGHT requests are outstanding; each CQE is filed into its request's
 * results in order and checked against the unit it answers. Waits never pass their deadline
 * and watch the attach socket and ctl.closing, so a dead daemon is an error, never a hang.
 */
#include "client_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "timeutil.h"

#define BATCH 64
#define SLEEP_SPIN_NS 20000ull /* sleep mode: spin this long before sleeping */
#define HEALTH_EVERY 1024u     /* poll mode: check health every N spins */
#define WAIT_SLICE_MS 100

static struct memclient_pending *pending_find(struct memclient *c, uint32_t req_id)
{
	for (uint32_t i = 0; i < MEMCLIENT_MAX_INFLIGHT; i++)
		if (c->pending[i].used && c->pending[i].req_id == req_id)
			return &c->pending[i];
	return NULL;
}

static struct memclient_pending *pending_get(struct memclient *c)
{
	for (uint32_t i = 0; i < MEMCLIENT_MAX_INFLIGHT; i++)
		if (!c->pending[i].used)
			return &c->pending[i];
	return NULL;
}

/* Units from i on that share u[i]'s sequence, at most SP_VEC_MAX_RUN: one vector SQE. */
static uint32_t run_length(const struct memclient_unit *u, uint32_t i, uint32_t n)
{
	uint32_t k = 1;

	while (i + k < n && k < SP_VEC_MAX_RUN && u[i + k].seq.index == u[i].seq.index &&
	       u[i + k].seq.gen == u[i].seq.gen)
		k++;
	return k;
}

/* The outstanding vectored request reserved first, or NULL when there is none. */
static const struct memclient_pending *vec_oldest(const struct memclient *c)
{
	const struct memclient_pending *o = NULL;

	for (uint32_t i = 0; i < MEMCLIENT_MAX_INFLIGHT; i++) {
		const struct memclient_pending *p = &c->pending[i];
		if (p->used && p->vec && (!o || p->vec_order < o->vec_order))
			o = p;
	}
	return o;
}

/*
 * n contiguous entries of the vector area past the outstanding reservations (which are
 * contiguous from the oldest's first entry to vec_tail, wrapping once): the first, or -1 when
 * they do not fit now (the caller then uses one ring entry per unit).
 */
static int64_t vec_reserve(struct memclient *c, uint32_t n)
{
	const struct memclient_pending *o = vec_oldest(c);
	uint32_t cap = c->vec_entries, t = c->vec_tail, h, first;

	if (n > cap)
		return -1;
	if (!o) {
		first = 0;
	} else {
		h = o->vec_first;
		if (t > h && n <= cap - t)
			first = t;
		else if (t > h && n <= h)
			first = 0;
		else if (t < h && n <= h - t)
			first = t;
		else
			return -1; /* t == h with one outstanding: the area is full */
	}
	c->vec_tail = first + n;
	return first;
}

/* One SQE per run of units of one sequence; the units go into the vector area at first. */
static void submit_vec(struct memclient *c, const struct memclient_unit *u, uint32_t n,
		       uint64_t step, uint32_t id, uint32_t first)
{
	struct sp_sqe batch[BATCH];
	uint32_t k = 0;

	for (uint32_t i = 0; i < n; i++)
		c->vec[first + i] = (struct sp_vec_entry){.layer = (uint16_t)u[i].layer,
							  .head = (uint16_t)u[i].head,
							  .block = u[i].block,
							  .slot = SP_UNIT_SLOT_NONE};
	for (uint32_t i = 0; i < n;) {
		uint32_t len = run_length(u, i, n);

		batch[k++] = (struct sp_sqe){.op = SP_OP_FORECAST_VEC,
					     .flags = i + len == n ? SP_SQE_F_LAST : 0,
					     .req_id = id,
					     .seq_index = u[i].seq.index,
					     .seq_gen = u[i].seq.gen,
					     .head = (uint16_t)len,
					     .block = first + i,
					     .step = step};
		i += len;
		if (k == BATCH || i == n) {
			ring_push(&c->sq, batch, k); /* space was checked: all runs fit */
			k = 0;
		}
	}
}

static uint32_t count_runs(const struct memclient_unit *u, uint32_t n)
{
	uint32_t runs = 0;

	for (uint32_t i = 0; i < n; i += run_length(u, i, n))
		runs++;
	return runs;
}

/* One SQE per unit. */
static void submit_units(struct memclient *c, uint16_t op, const struct memclient_unit *u,
			 uint32_t n, uint64_t step, uint32_t id)
{
	struct sp_sqe batch[BATCH];

	for (uint32_t i = 0; i < n; i += BATCH) {
		uint32_t k = n - i < BATCH ? n - i : BATCH;

		for (uint32_t j = 0; j < k; j++) {
			const struct memclient_unit *x = &u[i + j];

			batch[j] = (struct sp_sqe){
			    .op = op,
			    .flags = i + j == n - 1 ? SP_SQE_F_LAST : 0,
			    .req_id = id,
			    .seq_index = x->seq.index,
			    .seq_gen = x->seq.gen,
			    .layer = (uint16_t)x->layer,
			    .head = (uint16_t)x->head,
			    .block = x->block,
			    .step = step,
			};
		}
		ring_push(&c->sq, batch, k); /* space was checked: all k fit */
	}
}

static int submit(struct memclient *c, uint16_t op, const struct memclient_unit *u, uint32_t n,
		  uint64_t step, struct memclient_result *res, uint32_t *req_id)
{
	struct memclient_pending *p;
	int64_t first = -1;
	uint32_t id;
	int rc;

	if (!c || !u || !res || !req_id || !n)
		return -EINVAL;
	if (c->remote)
		return -EOPNOTSUPP;
	rc = memclient_health_recent(c);
	if (rc)
		return rc;
	if (n > c->sq.mask + 1 || n > c->cq.mask + 1)
		return -E2BIG;
	p = pending_get(c);
	if (!p)
		return -EAGAIN;
	if (op == SP_OP_FORECAST && c->vec && ring_space(&c->sq) >= count_runs(u, n))
		first = vec_reserve(c, n);
	if (first < 0 && ring_space(&c->sq) < n)
		return -EAGAIN;
	do
		id = ++c->next_req_id;
	while (!id || pending_find(c, id));
	if (first >= 0)
		submit_vec(c, u, n, step, id, (uint32_t)first);
	else
		submit_units(c, op, u, n, step, id);
	*p = (struct memclient_pending){.used = true,
					.op = op,
					.req_id = id,
					.n = n,
					.vec = first >= 0,
					.vec_first = first >= 0 ? (uint32_t)first : 0,
					.vec_order = first >= 0 ? ++c->vec_orders : 0,
					.units = u,
					.results = res};
	*req_id = id;
	/* The request is queued either way: a lost wake-up only delays it (memsvc re-checks its
	 * SQ on a timer), and the reap's deadline bounds that. */
	(void)ring_doorbell(&c->sq);
	return 0;
}

int memclient_forecast_submit(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			      uint64_t step, struct memclient_result *results, uint32_t *req_id)
{
	return submit(c, SP_OP_FORECAST, units, n, step, results, req_id);
}

static bool cqe_names(const struct sp_cqe *e, const struct memclient_unit *u)
{
	return e->seq_index == u->seq.index && e->layer == u->layer && e->head == u->head &&
	       e->block == u->block;
}

/* A deferred answer: the unit it names that got a PENDING answer; false when none did. */
static bool file_deferred(struct memclient_pending *p, const struct sp_cqe *e, uint32_t *i)
{
	for (uint32_t k = 0; k < p->next; k++) {
		if (p->results[k].status == MEMCLIENT_AWAITING && cqe_names(e, &p->units[k])) {
			*i = k;
			return true;
		}
	}
	return false;
}

/*
 * A vectored FORECAST's answer: the next run of the request's units, answered in the vector
 * area. Everything the CQE names must be the run the client submitted, else the run's units
 * fail -EPROTO (a -EINVAL from memsvc fails them with it).
 */
static void file_vec(struct memclient *c, struct memclient_pending *p, const struct sp_cqe *e)
{
	uint32_t i = p->next, k, at;
	bool ok;
	int32_t bad;

	if (!p->vec || i >= p->n) {
		c->late += e->head; /* answers no run of this request: dropped */
		return;
	}
	k = run_length(p->units, i, p->n);
	at = p->vec_first + i;
	ok = !e->status && e->block == at && e->head == k && !e->layer &&
	     e->seq_index == p->units[i].seq.index;
	bad = e->status < 0 && e->status != MEMCLIENT_AWAITING ? e->status : -EPROTO;
	for (uint32_t j = 0; j < k; j++) {
		const struct sp_vec_entry *v = &c->vec[at + j];
		struct memclient_result *r = &p->results[i + j];
		uint32_t ge = v->gen_err, slot = v->slot;
		int32_t st = sp_vec_status(ge);

		*r = (struct memclient_result){
		    .status = ok ? st : bad, .slot = SP_UNIT_SLOT_NONE, .gen = sp_vec_gen(ge)};
		if (ok && !st && slot >= c->n_slots)
			r->status = -EPROTO; /* never hand out a slot outside the arena */
		else if (ok && !st)
			r->slot = slot;
		if (ok && st == -EINPROGRESS) {
			r->status = MEMCLIENT_AWAITING; /* its DEFERRED answer follows */
			continue;
		}
		p->done++;
	}
	p->next += k;
}

static void file_cqe(struct memclient *c, const struct sp_cqe *e)
{
	struct memclient_pending *p = pending_find(c, e->req_id);
	const struct memclient_unit *u;
	struct memclient_result *r;
	uint32_t i;

	if (!p || p->done >= p->n) {
		/* the request timed out and was abandoned: count the units it answers */
		c->late += e->op == SP_OP_FORECAST_VEC ? e->head : 1;
		return;
	}
	if (e->op == SP_OP_FORECAST_VEC) {
		file_vec(c, p, e);
		return;
	}
	if (e->flags & SP_CQE_F_DEFERRED) {
		if (!file_deferred(p, e, &i)) {
			c->late++; /* answers no unit waiting for one: dropped */
			return;
		}
	} else {
		if (p->next >= p->n) {
			c->late++;
			return;
		}
		i = p->next++;
	}
	u = &p->units[i];
	r = &p->results[i];
	r->status = e->status;
	r->slot = e->slot;
	r->gen = e->gen;
	/* Never hand out a slot for another unit than the one asked for. */
	if (e->op != p->op || !cqe_names(e, u) || e->status > 0 ||
	    e->status == MEMCLIENT_AWAITING ||
	    (!e->status && p->op != SP_OP_FREE && e->slot >= c->n_slots)) {
		r->status = -EPROTO;
		r->slot = SP_UNIT_SLOT_NONE;
	} else if ((e->flags & SP_CQE_F_PENDING) && e->status == -EINPROGRESS &&
		   !(e->flags & SP_CQE_F_DEFERRED)) {
		r->status = MEMCLIENT_AWAITING; /* the answer follows */
		r->slot = SP_UNIT_SLOT_NONE;
		return;
	}
	p->done++;
}

static void drain_cq(struct memclient *c)
{
	struct sp_cqe batch[BATCH];
	uint32_t k;

	while ((k = ring_pop(&c->cq, batch, BATCH)) > 0)
		for (uint32_t i = 0; i < k; i++)
			file_cqe(c, &batch[i]);
}

/* Sleep on the CQ doorbell (and the attach socket) for at most ms. */
static int cq_sleep(struct memclient *c, int ms)
{
	struct pollfd pfd[2] = {
	    {.fd = c->cq_doorbell, .events = POLLIN},
	    {.fd = c->attach_fd, .events = POLLRDHUP},
	};
	struct sp_ring_hdr *h = c->cq.hdr;
	uint64_t v;
	int pr;

	/* seq_cst: pairs with memsvc's fence after publishing tail (see ring_doorbell). */
	atomic_store_explicit(&h->consumer_sleeping, 1, memory_order_seq_cst);
	if (ring_count(&c->cq)) {
		atomic_store_explicit(&h->consumer_sleeping, 0, memory_order_relaxed);
		return 0;
	}
	pr = poll(pfd, 2, ms);
	atomic_store_explicit(&h->consumer_sleeping, 0, memory_order_relaxed);
	if (pr < 0)
		return errno == EINTR ? 0 : -errno;
	if (pfd[1].revents)
		return memclient_set_dead(c, -ECONNRESET);
	if (pfd[0].revents & POLLIN)
		(void)!read(c->cq_doorbell, &v, sizeof(v));
	return 0;
}

/* Wait until the CQ has entries, deadline_ns passes, or the session dies. */
static int cq_wait(struct memclient *c, uint64_t deadline_ns)
{
	uint64_t now = time_now_ns();
	uint64_t spin_until = c->wait_mode == SP_WAIT_POLL ? deadline_ns : now + SLEEP_SPIN_NS;
	uint32_t spins = 0;
	int rc;

	for (;;) {
		if (ring_count(&c->cq))
			return 0;
		now = time_now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		if (now < spin_until) {
			__builtin_ia32_pause();
			if (++spins % HEALTH_EVERY == 0 && (rc = memclient_health(c)))
				return rc;
			continue;
		}
		uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
		rc = cq_sleep(c, left_ms > WAIT_SLICE_MS ? WAIT_SLICE_MS : (int)left_ms);
		if (!rc)
			rc = memclient_health(c);
		if (rc)
			return rc;
	}
}

int memclient_forecast_reap(struct memclient *c, uint32_t req_id, int timeout_ms)
{
	uint64_t deadline;
	struct memclient_pending *p;
	int rc;

	if (!c)
		return -EINVAL;
	p = pending_find(c, req_id);
	if (!p)
		return -ENOENT;
	deadline = memclient_deadline(c, timeout_ms);
	for (;;) {
		drain_cq(c);
		if (p->done == p->n) {
			p->used = false;
			return 0;
		}
		rc = cq_wait(c, deadline);
		if (!rc)
			continue;
		/*
		 * Timed out, or the session is closing or gone. memsvc answers in-flight entries
		 * before it sets ctl.closing, so look once more: an answered request is a success.
		 */
		drain_cq(c);
		p->used = false; /* done, or abandoned: its late completions are dropped */
		return p->done == p->n ? 0 : rc;
	}
}

static int blocking(struct memclient *c, uint16_t op, const struct memclient_unit *u, uint32_t n,
		    uint64_t step, struct memclient_result *res)
{
	uint32_t chunk, id;
	int rc;

	if (!c || !u || !res || !n)
		return -EINVAL;
	if (c->remote)
		return -EOPNOTSUPP;
	chunk = c->sq.mask + 1 < c->cq.mask + 1 ? c->sq.mask + 1 : c->cq.mask + 1;
	for (uint32_t i = 0; i < n; i += chunk) {
		uint32_t k = n - i < chunk ? n - i : chunk;
		uint64_t deadline = memclient_deadline(c, -1);

		/* -EAGAIN: memsvc has not consumed earlier entries yet; wait for it in time. */
		while ((rc = submit(c, op, u + i, k, step, res + i, &id)) == -EAGAIN) {
			if (time_now_ns() >= deadline)
				return -ETIMEDOUT;
			drain_cq(c);
			__builtin_ia32_pause();
		}
		if (rc)
			return rc;
		rc = memclient_forecast_reap(c, id, -1);
		if (rc)
			return rc;
	}
	return 0;
}

int memclient_forecast(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		       uint64_t step, struct memclient_result *results)
{
	return blocking(c, SP_OP_FORECAST, units, n, step, results);
}

int memclient_commit_ring(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			  uint64_t step, struct memclient_result *results)
{
	return blocking(c, SP_OP_COMMIT, units, n, step, results);
}
