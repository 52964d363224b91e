/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc client, control path: one DEALER per handle, one request in flight, each with a
 * fresh request id and a deadline; replies with another id (late answers to requests that
 * timed out) are dropped. While waiting we also watch the attach socket, so a dead daemon is
 * -ECONNRESET at once rather than at the deadline.
 */
#include "client_internal.h"

#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "timeutil.h"

_Static_assert(MEMCLIENT_TOKEN_BYTES == WIRE_TOKEN_BYTES, "token size");
_Static_assert(MEMCLIENT_NAME_MAX == WIRE_NAME_MAX, "name size");
_Static_assert(MEMCLIENT_MAX_BATCH == WIRE_MAX_UNITS, "batch size");

#define WAIT_SLICE_MS 100

int memclient_zmq_connect(struct memclient *c, const char *endpoint)
{
	int rc;

	c->zctx = zmq_ctx_new();
	if (!c->zctx)
		return err_from_errno();
	c->zsock = zmq_socket(c->zctx, ZMQ_DEALER);
	if (!c->zsock)
		return err_from_errno();
	rc = wire_zmq_setup(c->zsock, false);
	if (rc)
		return rc;
	if (zmq_setsockopt(c->zsock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof(c->timeout_ms)) ||
	    zmq_connect(c->zsock, endpoint))
		return err_from_errno();
	return 0;
}

void memclient_zmq_close(struct memclient *c)
{
	if (c->zsock)
		zmq_close(c->zsock); /* linger 0 (wire_zmq_setup): never blocks */
	if (c->zctx)
		zmq_ctx_term(c->zctx);
	c->zsock = c->zctx = NULL;
}

static int send_request(struct memclient *c, struct wire_request *rq, const void *data,
			size_t data_len)
{
	void *buf = NULL;
	size_t len = 0;
	int rc;

	rq->protocol_version = SP_PROTOCOL_VERSION;
	rq->request_id = ++c->next_zmq_id;
	rq->session_id = c->session_id;
	memcpy(rq->token, c->token, sizeof(rq->token));
	rc = wire_request_pack(rq, &buf, &len);
	if (rc)
		return rc;
	rc = wire_zmq_send(c->zsock, NULL, 0, buf, len, data, data_len, 0);
	free(buf);
	return rc == -EAGAIN ? -ETIMEDOUT : rc;
}

/*
 * Wait for the reply to request_id; drops others. On 0 the caller finis *rp and owns *data
 * (the reply's data frame or NULL; free()).
 */
static int recv_reply(struct memclient *c, uint64_t request_id, uint64_t deadline,
		      struct wire_reply *rp, struct wire_frames *data)
{
	char err[WIRE_ERROR_MAX];

	for (;;) {
		zmq_pollitem_t items[2] = {
		    {.socket = c->zsock, .events = ZMQ_POLLIN},
		    {.fd = c->attach_fd, .events = ZMQ_POLLIN},
		};
		struct wire_frames f = {0};
		uint64_t now = time_now_ns();
		long ms;
		int rc;

		if (now >= deadline)
			return -ETIMEDOUT;
		ms = (long)((deadline - now + 999999) / 1000000);
		/* A remote session has no attach socket: only the deadline bounds it. */
		if (zmq_poll(items, c->attach_fd >= 0 ? 2 : 1,
			     ms > WAIT_SLICE_MS ? WAIT_SLICE_MS : ms) < 0) {
			if (zmq_errno() == EINTR)
				continue;
			return -zmq_errno();
		}
		rc = memclient_health(c);
		if (rc)
			return rc;
		if (!(items[0].revents & ZMQ_POLLIN))
			continue;
		rc = wire_zmq_recv(c->zsock, false, &f, ZMQ_DONTWAIT);
		if (rc == -EAGAIN || rc == -EBADMSG)
			continue;
		if (rc)
			return rc;
		rc = wire_reply_unpack(f.payload, f.len, rp, err, sizeof(err));
		if (rc) {
			wire_frames_fini(&f);
			snprintf(c->last_error, sizeof(c->last_error), "bad reply: %s", err);
			return -EBADMSG;
		}
		if (rp->request_id == request_id) {
			data->data = f.data;
			data->data_len = f.data_len;
			f.data = NULL;
			wire_frames_fini(&f);
			return 0;
		}
		wire_frames_fini(&f);
		wire_reply_fini(rp); /* a late answer to an earlier, timed-out request */
	}
}

int memclient_call(struct memclient *c, struct wire_request *rq, const void *data, size_t data_len,
		   struct wire_reply *rp, struct wire_frames *in)
{
	return memclient_call_wait(c, rq, data, data_len, rp, in, -1);
}

int memclient_call_wait(struct memclient *c, struct wire_request *rq, const void *data,
			size_t data_len, struct wire_reply *rp, struct wire_frames *in,
			int timeout_ms)
{
	uint64_t deadline = memclient_deadline(c, timeout_ms);
	int rc;

	memset(rp, 0, sizeof(*rp));
	memset(in, 0, sizeof(*in));
	rc = memclient_health(c);
	if (rc)
		return rc;
	rc = send_request(c, rq, data, data_len);
	if (rc)
		return rc;
	rc = recv_reply(c, rq->request_id, deadline, rp, in);
	if (rc)
		return rc;
	if (rp->status) {
		snprintf(c->last_error, sizeof(c->last_error), "%s", rp->error);
		rc = rp->status < 0 ? rp->status : -EPROTO;
		wire_reply_fini(rp);
		wire_frames_fini(in);
		return rc;
	}
	c->last_error[0] = '\0';
	return 0;
}

/* A round trip without data frames (one that comes back anyway is dropped). */
static int call(struct memclient *c, struct wire_request *rq, struct wire_reply *rp)
{
	struct wire_frames in;
	int rc = memclient_call(c, rq, NULL, 0, rp, &in);

	wire_frames_fini(&in);
	return rc;
}

int memclient_ping(struct memclient *c)
{
	struct wire_request rq = {.kind = WIRE_PING};
	struct wire_reply rp;
	int rc = call(c, &rq, &rp);

	if (!rc)
		wire_reply_fini(&rp);
	return rc;
}

int memclient_seq_open(struct memclient *c, uint64_t user_key, uint32_t max_blocks,
		       struct memclient_seq *out)
{
	struct wire_request rq = {.kind = WIRE_SEQ_OPEN};
	struct wire_reply rp;
	int rc;

	rq.u.seq_open.user_key = user_key;
	rq.u.seq_open.max_blocks = max_blocks;
	rc = call(c, &rq, &rp);
	if (rc)
		return rc;
	if (rp.kind != WIRE_SEQ_OPEN || rp.u.seq_open.seq_index >= c->max_seqs) {
		rc = -EPROTO;
	} else {
		out->index = rp.u.seq_open.seq_index;
		out->gen = rp.u.seq_open.seq_gen;
	}
	wire_reply_fini(&rp);
	return rc;
}

int memclient_seq_close(struct memclient *c, struct memclient_seq seq)
{
	struct wire_request rq = {.kind = WIRE_SEQ_CLOSE};
	struct wire_reply rp;
	int rc;

	rq.u.seq_close.seq_index = seq.index;
	rq.u.seq_close.seq_gen = seq.gen;
	rc = call(c, &rq, &rp);
	if (!rc)
		wire_reply_fini(&rp);
	return rc;
}

/* Coalesce runs of consecutive blocks of one (seq, layer, head) into ranges, in order. */
static struct wire_range *make_ranges(const struct memclient_unit *u, uint32_t n,
				      uint32_t *n_ranges)
{
	struct wire_range *r = malloc((size_t)n * sizeof(*r));
	uint32_t k = 0;

	if (!r)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		struct wire_range *p = k ? &r[k - 1] : NULL;

		if (p && p->seq_index == u[i].seq.index && p->seq_gen == u[i].seq.gen &&
		    p->layer == u[i].layer && p->head == u[i].head &&
		    p->block + p->count == u[i].block) {
			p->count++;
			continue;
		}
		r[k++] = (struct wire_range){u[i].seq.index, u[i].seq.gen, u[i].layer,
					     u[i].head,	     u[i].block,   1};
	}
	*n_ranges = k;
	return r;
}

/* wire.h names the units body by the request kind it answers. */
static bool is_units_kind(enum wire_kind k)
{
	return k == WIRE_ALLOC || k == WIRE_COMMIT || k == WIRE_FREE || k == WIRE_FORECAST;
}

int memclient_units_call(struct memclient *c, enum wire_kind kind, const struct memclient_unit *u,
			 uint32_t n, uint64_t step, struct memclient_result *res, const void *data,
			 size_t data_len, struct wire_frames *in)
{
	struct wire_request rq = {.kind = kind};
	struct wire_reply rp;
	int rc;

	memset(in, 0, sizeof(*in));
	if (!c || !u || !res || !n || n > MEMCLIENT_MAX_BATCH)
		return -EINVAL;
	rq.u.units.ranges = make_ranges(u, n, &rq.u.units.n_ranges);
	if (!rq.u.units.ranges)
		return -ENOMEM;
	if (rq.u.units.n_ranges > WIRE_MAX_RANGES) {
		free(rq.u.units.ranges);
		return -E2BIG;
	}
	rq.u.units.n_units = n;
	rq.u.units.step = step;
	rc = memclient_call(c, &rq, data, data_len, &rp, in);
	free(rq.u.units.ranges);
	if (rc)
		return rc;
	if (!is_units_kind(rp.kind) || rp.u.units.n != n) {
		snprintf(c->last_error, sizeof(c->last_error), "units reply: kind %d, %u results",
			 (int)rp.kind, is_units_kind(rp.kind) ? rp.u.units.n : 0);
		rc = -EPROTO;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct wire_unit_result *w = &rp.u.units.results[i];

		res[i].status = w->status;
		res[i].slot = w->slot;
		res[i].gen = w->gen;
		if (!w->status && kind != WIRE_FREE && w->slot >= c->n_slots)
			res[i].status = -EPROTO;
	}
out:
	wire_reply_fini(&rp);
	if (rc)
		wire_frames_fini(in);
	return rc;
}

static int units_call(struct memclient *c, enum wire_kind kind, const struct memclient_unit *u,
		      uint32_t n, uint64_t step, struct memclient_result *res)
{
	struct wire_frames in;
	int rc = memclient_units_call(c, kind, u, n, step, res, NULL, 0, &in);

	wire_frames_fini(&in);
	return rc;
}

int memclient_alloc(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		    struct memclient_result *results)
{
	return units_call(c, WIRE_ALLOC, units, n, 0, results);
}

/*
 * Retry the units answered -EAGAIN (no free slot yet, or a restore under way) until none is
 * left or the deadline passes; the others keep their first answer.
 */
static int retry_eagain(struct memclient *c, enum wire_kind kind,
			const struct memclient_unit *units, uint32_t n, uint64_t step,
			struct memclient_result *results, int timeout_ms)
{
	uint64_t deadline = memclient_deadline(c, timeout_ms);
	struct memclient_unit *u = malloc((size_t)n * sizeof(*u));
	struct memclient_result *r = malloc((size_t)n * sizeof(*r));
	uint32_t *idx = malloc((size_t)n * sizeof(*idx));
	int rc = u && r && idx ? units_call(c, kind, units, n, step, results) : -ENOMEM;

	while (!rc) {
		uint32_t k = 0;
		for (uint32_t i = 0; i < n; i++)
			if (results[i].status == -EAGAIN) {
				u[k] = units[i];
				idx[k++] = i;
			}
		if (!k)
			break;
		if (time_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		usleep(200);
		rc = units_call(c, kind, u, k, step, r);
		for (uint32_t j = 0; !rc && j < k; j++)
			results[idx[j]] = r[j];
	}
	free(u);
	free(r);
	free(idx);
	return rc;
}

int memclient_alloc_wait(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			 struct memclient_result *results, int timeout_ms)
{
	return retry_eagain(c, WIRE_ALLOC, units, n, 0, results, timeout_ms);
}

int memclient_forecast_zmq_wait(struct memclient *c, const struct memclient_unit *units, uint32_t n,
				uint64_t step, struct memclient_result *results, int timeout_ms)
{
	return retry_eagain(c, WIRE_FORECAST, units, n, step, results, timeout_ms);
}

int memclient_commit(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		     uint64_t step, struct memclient_result *results)
{
	return units_call(c, WIRE_COMMIT, units, n, step, results);
}

int memclient_free_units(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			 struct memclient_result *results)
{
	return units_call(c, WIRE_FREE, units, n, 0, results);
}

int memclient_forecast_zmq(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			   uint64_t step, struct memclient_result *results)
{
	return units_call(c, WIRE_FORECAST, units, n, step, results);
}

int memclient_stats(struct memclient *c, struct memclient_stat **out, uint32_t *n)
{
	struct wire_request rq = {.kind = WIRE_STATS};
	struct wire_reply rp;
	struct memclient_stat *s;
	int rc;

	if (!c || !out || !n)
		return -EINVAL;
	rc = call(c, &rq, &rp);
	if (rc)
		return rc;
	if (rp.kind != WIRE_STATS) {
		rc = -EPROTO;
		goto out;
	}
	s = calloc(rp.u.stats.n ? rp.u.stats.n : 1, sizeof(*s));
	if (!s) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < rp.u.stats.n; i++) {
		snprintf(s[i].name, sizeof(s[i].name), "%s", rp.u.stats.stats[i].name);
		s[i].value = rp.u.stats.stats[i].value;
	}
	*out = s;
	*n = rp.u.stats.n;
out:
	wire_reply_fini(&rp);
	return rc;
}

bool memclient_stat_find(const struct memclient_stat *s, uint32_t n, const char *name,
			 uint64_t *value)
{
	for (uint32_t i = 0; i < n; i++) {
		if (!strcmp(s[i].name, name)) {
			*value = s[i].value;
			return true;
		}
	}
	return false;
}
