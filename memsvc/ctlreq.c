/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ZeroMQ control requests: every message gets an answer (or, when not even the sender can be
 * named, a counter): size and framing checked by wire_zmq_recv, fields by wire_request_unpack,
 * the session and token here, unit ids by the store. Runs on the server thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "err.h"
#include "log.h"
#include "mconfig.h"
#include "mstats.h"
#include "spill.h"
#include "server_internal.h"
#include "session.h"
#include "tenant.h"
#include "timeutil.h"
#include "wire.h"

#define TAG "ctl"
#define MAX_MSGS_PER_TURN 256 /* keep the loop responsive under a flood */

static struct log_ratelimit rl_bad;

/* One request in flight through dispatch: where it came from and what goes back. */
struct req {
	void *sock;	     /* the router it came on */
	struct tenant *auth; /* tcp: the tenant its CURVE key maps to; NULL on ipc */
	const struct wire_frames *f;
	void *out_data; /* reply data frame (READ), malloc'd */
	size_t out_len;
};

static enum sp_op unit_op(enum wire_kind k)
{
	switch (k) {
	case WIRE_ALLOC:
		return SP_OP_ALLOC;
	case WIRE_COMMIT:
		return SP_OP_COMMIT;
	case WIRE_FREE:
		return SP_OP_FREE;
	default:
		return SP_OP_FORECAST;
	}
}

/* Expand ranges to units and apply them; the reply owns the results array. */
static int do_units(struct session *s, const struct wire_request *rq, struct wire_reply *rp,
		    struct req *q)
{
	uint32_t n = rq->u.units.n_units, k = 0;
	struct store_unit_id *ids = calloc(n ? n : 1, sizeof(*ids));
	int32_t *st = calloc(n ? n : 1, sizeof(*st));
	uint32_t *slot = calloc(n ? n : 1, sizeof(*slot));
	uint32_t *gen = calloc(n ? n : 1, sizeof(*gen));
	struct wire_unit_result *res = calloc(n ? n : 1, sizeof(*res));
	int r = 0;

	if (!ids || !st || !slot || !gen || !res) {
		r = -ENOMEM;
		goto out_free;
	}
	for (uint32_t i = 0; i < rq->u.units.n_ranges && k < n; i++) {
		const struct wire_range *g = &rq->u.units.ranges[i];
		for (uint32_t j = 0; j < g->count && k < n; j++, k++) {
			/* A block past UINT32_MAX would wrap onto a valid one: make it invalid. */
			uint64_t b = (uint64_t)g->block + j;
			ids[k] = (struct store_unit_id){g->seq_index, g->seq_gen, g->layer, g->head,
							b > UINT32_MAX ? UINT32_MAX : (uint32_t)b};
		}
	}
	if (rq->kind == WIRE_READ)
		session_units_read(s, ids, k, rq->u.units.step, st, slot, gen, q->out_data);
	else if (rq->kind == WIRE_WRITE)
		session_units_write(s, ids, k, q->f->data, st, slot, gen);
	else
		session_units_apply(s, unit_op(rq->kind), ids, k, rq->u.units.step, st, slot, gen);
	for (uint32_t i = 0; i < k; i++)
		res[i] = (struct wire_unit_result){.status = st[i], .slot = slot[i], .gen = gen[i]};
	rp->kind = WIRE_FORECAST; /* the units body */
	rp->u.units.results = res;
	rp->u.units.n = k;
	res = NULL;
out_free:
	free(ids);
	free(st);
	free(slot);
	free(gen);
	free(res);
	return r;
}

static void stat_add(struct wire_stat *v, uint32_t *n, const char *name, uint64_t value)
{
	if (*n >= WIRE_MAX_STATS)
		return;
	snprintf(v[*n].name, sizeof(v[*n].name), "%s", name);
	v[*n].value = value;
	(*n)++;
}

/*
 * The spill I/O backend as a number (stats are numbers): 0 none opened yet, 1 uring,
 * 2 uring(sqpoll), 3 sync, 255 another (a test's fault-injecting wrapper).
 */
static uint64_t aio_code(const char *name)
{
	static const char *const names[] = {"none", "uring", "uring(sqpoll)", "sync"};

	for (uint64_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return i;
	return 255;
}

/* The NVMe tier's counters as daemon.spill.* (nothing when no spill dir is configured). */
static void spill_stats_add(struct server *sv, struct wire_stat *v, uint32_t *n)
{
	struct spill_stats *t = malloc(sizeof(*t));

	if (!t || !server_spill_stats(sv, t)) {
		free(t);
		return;
	}
	stat_add(v, n, "daemon.spill.enabled", 1);
	stat_add(v, n, "daemon.spill.sessions", t->sessions);
	stat_add(v, n, "daemon.spill.units_spilled", t->units_spilled);
	stat_add(v, n, "daemon.spill.bytes_spilled", t->bytes_spilled);
	stat_add(v, n, "daemon.spill.units_dropped", t->units_dropped);
	stat_add(v, n, "daemon.spill.spill_failures", t->spill_failures);
	stat_add(v, n, "daemon.spill.units_restored", t->units_restored);
	stat_add(v, n, "daemon.spill.bytes_restored", t->bytes_restored);
	stat_add(v, n, "daemon.spill.restore_misses", t->restore_misses);
	stat_add(v, n, "daemon.spill.answers_deferred", t->answers_deferred);
	stat_add(v, n, "daemon.spill.answers_late", t->answers_late);
	stat_add(v, n, "daemon.spill.restores_starved", t->restores_starved);
	stat_add(v, n, "daemon.spill.crc_failures", t->crc_failures);
	stat_add(v, n, "daemon.spill.id_mismatches", t->id_mismatches);
	stat_add(v, n, "daemon.spill.io_errors", t->io_errors);
	stat_add(v, n, "daemon.spill.enospc_events", t->enospc_events);
	stat_add(v, n, "daemon.spill.degraded", t->degraded_now);
	stat_add(v, n, "daemon.spill.degraded_entries", t->degraded_entries);
	stat_add(v, n, "daemon.spill.recoveries", t->recoveries);
	stat_add(v, n, "daemon.spill.write_ios", t->write_ios);
	stat_add(v, n, "daemon.spill.read_ios", t->read_ios);
	stat_add(v, n, "daemon.spill.units_direct", t->units_direct);
	stat_add(v, n, "daemon.spill.arena_registered", t->arena_registered);
	stat_add(v, n, "daemon.spill.extents_used", t->extents_used);
	stat_add(v, n, "daemon.spill.extents_total", t->extents_total);
	stat_add(v, n, "daemon.spill.restore_p50_ns", hist_percentile(&t->restore_ns, 50));
	stat_add(v, n, "daemon.spill.restore_p99_ns", hist_percentile(&t->restore_ns, 99));
	stat_add(v, n, "daemon.spill.spill_busy_ns", t->spill_busy_ns);
	stat_add(v, n, "daemon.spill.restore_busy_ns", t->read_ns.sum_ns);
	stat_add(v, n, "daemon.spill.aio_uring", strcmp(t->aio, "uring") == 0);
	stat_add(v, n, "daemon.spill.aio_backend", aio_code(t->aio));
	stat_add(v, n, "daemon.spill.dirs", spill_n_dirs(sv->spill));
	stat_add(v, n, "daemon.spill.bytes_cap", sv->cfg->spill_bytes);
	stat_add(v, n, "daemon.spill.bytes_reserved", t->disk_bytes_reserved);
	stat_add(v, n, "daemon.spill.bytes_used", t->bytes_used);
	stat_add(v, n, "daemon.spill.extent_bytes", t->extent_bytes);
	free(t);
}

#define LISTED_SESSIONS 32 /* sessions.<id>.* of at most this many sessions */

/* name.what as a stat; nothing when the name does not fit (a tenant name over ~38 bytes). */
static void stat_add2(struct wire_stat *v, uint32_t *n, const char *name, const char *what,
		      uint64_t value)
{
	char key[WIRE_NAME_MAX];

	if (snprintf(key, sizeof(key), "%s.%s", name, what) < (int)sizeof(key))
		stat_add(v, n, key, value);
}

/*
 * Every tenant's use and limits (tenants.<name>.*, units summed over its sessions; a tenant
 * removed by a reload only while it still holds sessions, with removed = 1) and the arenas of
 * the first LISTED_SESSIONS sessions (sessions.<id>.*). The loop thread is the only writer of
 * conns[], and this runs on it.
 */
static void tenants_sessions_add(struct server *sv, struct wire_stat *v, uint32_t *n)
{
	size_t nt = tenant_count(sv->tenants), listed = 0, shown = 0;

	for (size_t i = 0; i < nt; i++) {
		struct tenant *tn = tenant_at(sv->tenants, i);
		uint64_t resident = 0, spilled = 0;
		struct tenant_usage u;
		char pre[WIRE_NAME_MAX];

		tenant_get_usage(tn, &u);
		if (u.removed && !u.sessions)
			continue;
		shown++;
		for (size_t k = 0; k < sv->n_conns; k++) {
			struct session *s = sv->conns[k]->s;
			struct store_stats st;
			if (!s || session_tenant(s) != tn)
				continue;
			session_get_stats(s, &st);
			resident += st.units_resident;
			spilled += st.units_spilled;
		}
		snprintf(pre, sizeof(pre), "tenants.%s", tenant_name(tn));
		stat_add2(v, n, pre, "sessions", u.sessions);
		stat_add2(v, n, pre, "bytes", u.bytes);
		stat_add2(v, n, pre, "quota_bytes", u.quota_bytes);
		stat_add2(v, n, pre, "seqs", u.seqs);
		stat_add2(v, n, pre, "rejected", u.rejected);
		stat_add2(v, n, pre, "units_resident", resident);
		stat_add2(v, n, pre, "units_spilled", spilled);
		stat_add2(v, n, pre, "disk_bytes", u.disk_bytes);
		stat_add2(v, n, pre, "disk_quota_bytes", u.disk_quota);
		if (u.removed)
			stat_add2(v, n, pre, "removed", 1);
	}
	stat_add(v, n, "daemon.tenants", shown);
	for (size_t k = 0; k < sv->n_conns && listed < LISTED_SESSIONS; k++) {
		struct session *s = sv->conns[k]->s;
		struct store_stats st;
		char pre[WIRE_NAME_MAX];

		if (!s)
			continue;
		listed++;
		session_get_stats(s, &st);
		snprintf(pre, sizeof(pre), "sessions.%llu", (unsigned long long)session_id(s));
		stat_add2(v, n, pre, "uid", session_uid(s));
		stat_add2(v, n, pre, "arena_bytes", session_arena_size(s));
		stat_add2(v, n, pre, "slots_used", st.slots_used);
		stat_add2(v, n, pre, "slots_free", st.slots_free);
		stat_add2(v, n, pre, "units_resident", st.units_resident);
		stat_add2(v, n, pre, "units_spilled", st.units_spilled);
	}
}

static int do_stats(struct server *sv, struct session *s, struct wire_reply *rp)
{
	struct wire_stat *v = calloc(WIRE_MAX_STATS, sizeof(*v));
	struct store_stats st;
	struct tenant_usage tu;
	struct server_snapshot snap;
	uint32_t n = 0;

	if (!v)
		return -ENOMEM;
	session_get_stats(s, &st);
	tenant_get_usage(session_tenant(s), &tu);
	server_snapshot(sv, &snap);
	stat_add(v, &n, "session.slots", st.n_slots);
	stat_add(v, &n, "session.slots_free", st.slots_free);
	stat_add(v, &n, "session.slots_used", st.slots_used);
	stat_add(v, &n, "session.slots_deferred", st.slots_deferred);
	stat_add(v, &n, "session.units_allocated", st.units_allocated);
	stat_add(v, &n, "session.units_resident", st.units_resident);
	stat_add(v, &n, "session.units_spilled", st.units_spilled);
	stat_add(v, &n, "session.units_loading", st.units_loading);
	stat_add(v, &n, "session.units_lost", st.units_lost);
	stat_add(v, &n, "session.extents", st.extents);
	stat_add(v, &n, "session.seqs_open", st.seqs_open);
	stat_add(v, &n, "session.unit_words_used", st.unit_words_used);
	stat_add(v, &n, "session.unit_words_cap", st.unit_words_cap);
	stat_add(v, &n, "tenant.bytes", tu.bytes);
	stat_add(v, &n, "tenant.quota_bytes", tu.quota_bytes);
	stat_add(v, &n, "tenant.sessions", tu.sessions);
	stat_add(v, &n, "tenant.seqs", tu.seqs);
	stat_add(v, &n, "tenant.inflight", tu.inflight);
	stat_add(v, &n, "tenant.rejected", tu.rejected);
	stat_add(v, &n, "tenant.disk_bytes", tu.disk_bytes);
	stat_add(v, &n, "tenant.disk_quota_bytes", tu.disk_quota);
	stat_add(v, &n, "daemon.sessions", snap.sessions);
	stat_add(v, &n, "daemon.budget_bytes", snap.budget_bytes);
	stat_add(v, &n, "daemon.arena_bytes", snap.arena_bytes);
	stat_add(v, &n, "daemon.draining", snap.draining);
	spill_stats_add(sv, v, &n);
	for (int e = 0; e < MSTATS_ERR_MAX; e++) {
		char name[WIRE_NAME_MAX];
		snprintf(name, sizeof(name), "daemon.errors.%s", mstats_err_name(e));
		stat_add(v, &n, name, mstats_errors(sv->stats, e));
	}
	tenants_sessions_add(sv, v, &n); /* last: a full reply drops only these */
	rp->kind = WIRE_STATS;
	rp->u.stats.stats = v;
	rp->u.stats.n = n;
	return 0;
}

/* Answer one decoded request into rp (status, error text, body). */
/* The request's session when its id and token match; else the error reply is written. */
static struct conn *authenticate(struct server *sv, const struct req *q,
				 const struct wire_request *rq, struct wire_reply *rp)
{
	struct conn *c = server_find_session(sv, rq->session_id);

	if (!c || !c->s || c->bye || !session_token_ok(c->s, rq->token) ||
	    (q->auth && session_tenant(c->s) != q->auth)) {
		wire_reply_error(rp, rq->request_id, -EPERM, "unknown session %llu or wrong token",
				 (unsigned long long)rq->session_id);
		return NULL;
	}
	if ((rq->kind == WIRE_READ || rq->kind == WIRE_WRITE) && !c->remote) {
		wire_reply_error(rp, rq->request_id, -EOPNOTSUPP,
				 "%s is for remote sessions; local ones map the arena",
				 wire_kind_name(rq->kind));
		return NULL;
	}
	c->last_ms = time_now_ms();
	return c;
}

/* READ and WRITE of a remote session: unit bytes in the data frame, unit i at i*unit_bytes. */
static int do_data(struct session *s, struct req *q, const struct wire_request *rq,
		   struct wire_reply *rp)
{
	uint64_t ub = session_geometry(s)->unit_bytes;
	uint64_t need = ub * rq->u.units.n_units;
	int r;

	if (need > WIRE_MAX_DATA_BYTES)
		return -EMSGSIZE;
	if (rq->kind == WIRE_WRITE && (!q->f->data || q->f->data_len != need))
		return -EBADMSG;
	if (rq->kind == WIRE_READ) {
		q->out_data = malloc(need ? need : 1);
		if (!q->out_data)
			return -ENOMEM;
		q->out_len = need;
	}
	r = do_units(s, rq, rp, q);
	if (r) {
		free(q->out_data);
		q->out_data = NULL;
		q->out_len = 0;
	}
	return r;
}

/* The request's effect: 0 or -errno for the generic error reply, 1 when rp is written. */
static int run(struct server *sv, struct conn *c, struct req *q, const struct wire_request *rq,
	       struct wire_reply *rp)
{
	struct session *s = c->s;
	int r = 0;

	switch (rq->kind) {
	case WIRE_SEQ_OPEN:
		if (sv->draining) {
			wire_reply_error(rp, rq->request_id, -ESHUTDOWN, "daemon is draining");
			return 1;
		}
		r = session_seq_open(s, rq->u.seq_open.user_key, rq->u.seq_open.max_blocks,
				     &rp->u.seq_open.seq_index, &rp->u.seq_open.seq_gen);
		if (!r)
			rp->kind = WIRE_SEQ_OPEN;
		return r;
	case WIRE_SEQ_CLOSE:
		return session_seq_close(s, rq->u.seq_close.seq_index, rq->u.seq_close.seq_gen);
	case WIRE_ALLOC:
	case WIRE_COMMIT:
	case WIRE_FREE:
	case WIRE_FORECAST:
		return do_units(s, rq, rp, q);
	case WIRE_READ:
	case WIRE_WRITE:
		return do_data(s, q, rq, rp);
	case WIRE_STATS:
		return do_stats(sv, s, rp);
	case WIRE_DRAIN:
		if (session_uid(s) != 0 && session_uid(s) != sv->self_uid) {
			wire_reply_error(rp, rq->request_id, -EPERM,
					 "drain is allowed for root and uid %u only",
					 (unsigned)sv->self_uid);
			return 1;
		}
		server_drain(sv, rq->u.drain.deadline_ms, "drain request");
		return 0;
	case WIRE_BYE:
		c->bye = true; /* torn down after this reply is sent */
		return 0;
	case WIRE_PING:
		return 0;
	default:
		return -EBADMSG;
	}
}

/*
 * Answer rq into rp. Returns false when the reply is not the caller's to send: an admitted
 * remote hello, answered by the server once its session is made (off the loop).
 */
static bool dispatch(struct server *sv, struct req *q, const struct wire_request *rq,
		     struct wire_reply *rp)
{
	struct conn *c;
	int r;

	if (rq->kind == WIRE_HELLO) {
		if (q->auth)
			return server_remote_hello(sv, q->auth, rq, q->sock, q->f, rp) != 0;
		wire_reply_error(rp, rq->request_id, -EOPNOTSUPP,
				 "hello goes to attach.sock (local) or tcp (remote)");
		return true;
	}
	if (q->f->data && rq->kind != WIRE_WRITE) {
		wire_reply_error(rp, rq->request_id, -EBADMSG, "unexpected data frame");
		return true;
	}
	c = authenticate(sv, q, rq, rp);
	if (!c)
		return true;
	r = run(sv, c, q, rq, rp);
	if (r < 0) {
		wire_reply_fini(rp);
		wire_reply_error(rp, rq->request_id, r, "%s: %s", wire_kind_name(rq->kind),
				 err_str(r));
	}
	return true;
}

static void send_reply(struct server *sv, struct req *q, struct wire_reply *rp)
{
	void *buf = NULL;
	size_t len = 0;
	int r = wire_reply_pack(rp, &buf, &len);

	if (r) {
		struct wire_reply e;
		wire_reply_error(&e, rp->request_id, r, "reply could not be encoded: %s",
				 err_str(r));
		r = wire_reply_pack(&e, &buf, &len);
	}
	if (!r)
		r = wire_zmq_send(q->sock, q->f->identity, q->f->id_len, buf, len,
				  rp->status ? NULL : q->out_data, rp->status ? 0 : q->out_len,
				  ZMQ_DONTWAIT);
	if (r)
		mstats_error(sv->stats, MSTATS_ERR_DROPPED);
	free(buf);
}

void ctlreq_handle(struct server *sv, void *sock, struct tenant *auth, struct wire_frames *f,
		   int recv_status)
{
	struct req q = {.sock = sock, .auth = auth, .f = f};
	struct wire_request rq;
	struct wire_reply rp = {0};
	char err[WIRE_ERROR_MAX] = "";
	uint64_t t0 = time_now_ns();
	int r = recv_status;

	if (r) {
		mstats_errno(sv->stats, r);
		if (f->identity) {
			wire_reply_error(&rp, 0, r, "message refused: %s", err_str(r));
			send_reply(sv, &q, &rp);
		} else {
			mstats_error(sv->stats, MSTATS_ERR_DROPPED);
		}
		return;
	}
	r = wire_request_unpack(f->payload, f->len, &rq, err, sizeof(err));
	if (r) {
		mstats_errno(sv->stats, r);
		log_write_rl(&rl_bad, 1000, LOG_LEVEL_WARN, TAG, "bad request",
			     "status=%s error=\"%s\"", err_name(r), err);
		wire_reply_error(&rp, 0, r, "%s", err[0] ? err : err_str(r));
		send_reply(sv, &q, &rp);
		return;
	}
	if (dispatch(sv, &q, &rq, &rp)) {
		rp.request_id = rq.request_id;
		send_reply(sv, &q, &rp);
		if (rp.status)
			mstats_errno(sv->stats, rp.status);
	}
	mstats_request(sv->stats, MSTATS_PATH_ZMQ, rq.kind, time_now_ns() - t0);
	free(q.out_data);
	wire_reply_fini(&rp);
	wire_request_fini(&rq);
}

void ctlreq_serve(struct server *sv)
{
	for (int i = 0; i < MAX_MSGS_PER_TURN; i++) {
		struct wire_frames f;
		uint32_t events = 0;
		size_t sz = sizeof(events);
		int r;

		if (zmq_getsockopt(sv->router, ZMQ_EVENTS, &events, &sz) != 0 ||
		    !(events & ZMQ_POLLIN))
			return;
		r = wire_zmq_recv(sv->router, true, &f, ZMQ_DONTWAIT);
		if (r == -EAGAIN)
			return;
		ctlreq_handle(sv, sv->router, NULL, &f, r);
		wire_frames_fini(&f);
	}
}
