/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc client, remote sessions: a DEALER to the daemon's tcp:// endpoint with CURVE, the
 * Hello over ZeroMQ instead of attach.sock, and unit bytes carried in a data frame (read,
 * write) since there is no shared arena. Everything else goes through client_zmq.c.
 */
#include "client_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define Z85_KEY_LEN 40

static bool key_ok(const char *k)
{
	return k && strlen(k) == Z85_KEY_LEN;
}

static int curve_connect(struct memclient *c, const struct memclient_remote_opts *o)
{
	int rc;

	if (!zmq_has("curve"))
		return -EOPNOTSUPP;
	c->zctx = zmq_ctx_new();
	if (!c->zctx)
		return err_from_errno();
	c->zsock = zmq_socket(c->zctx, ZMQ_DEALER);
	if (!c->zsock)
		return err_from_errno();
	rc = wire_zmq_setup(c->zsock, false);
	if (rc)
		return rc;
	/* CURVE keys must be set before connect; a wrong key is dropped by the daemon's ZAP. */
	if (zmq_setsockopt(c->zsock, ZMQ_CURVE_SERVERKEY, o->server_key, Z85_KEY_LEN) ||
	    zmq_setsockopt(c->zsock, ZMQ_CURVE_PUBLICKEY, o->public_key, Z85_KEY_LEN) ||
	    zmq_setsockopt(c->zsock, ZMQ_CURVE_SECRETKEY, o->secret_key, Z85_KEY_LEN) ||
	    zmq_setsockopt(c->zsock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof(c->timeout_ms)) ||
	    zmq_connect(c->zsock, o->endpoint))
		return -zmq_errno();
	return 0;
}

static int hello(struct memclient *c, const struct memclient_remote_opts *o)
{
	struct wire_request rq = {.kind = WIRE_HELLO};
	struct wire_reply rp;
	struct wire_frames in;
	int rc;

	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "%s",
		 o->tenant ? o->tenant : "default");
	snprintf(rq.u.hello.client_name, sizeof(rq.u.hello.client_name), "%s",
		 o->client_name ? o->client_name : "memclient");
	rq.u.hello.arena_bytes = o->arena_bytes;
	rq.u.hello.geom = c->geom;
	rq.u.hello.wait_mode = SP_WAIT_SLEEP;
	rq.u.hello.max_seqs = o->max_seqs;
	/* the daemon pre-faults the arena before it answers */
	rc = memclient_call_wait(c, &rq, NULL, 0, &rp, &in, c->attach_timeout_ms);
	if (rc)
		return rc;
	wire_frames_fini(&in);
	if (rp.kind != WIRE_HELLO || memcmp(&rp.u.hello.geom, &c->geom, sizeof(c->geom)) ||
	    !rp.u.hello.n_slots) {
		snprintf(c->last_error, sizeof(c->last_error), "remote hello reply does not match");
		rc = -EPROTO;
		goto out;
	}
	c->session_id = rp.u.hello.session_id;
	memcpy(c->token, rp.u.hello.token, sizeof(c->token));
	c->daemon_epoch = rp.u.hello.daemon_epoch;
	c->arena_bytes = rp.u.hello.arena_bytes;
	c->n_slots = rp.u.hello.n_slots;
	c->max_seqs = rp.u.hello.max_seqs;
out:
	wire_reply_fini(&rp);
	return rc;
}

int memclient_open_remote(const struct memclient_remote_opts *o, struct memclient **out)
{
	struct memclient *c;
	int rc;

	if (!o || !out || !o->endpoint || strncmp(o->endpoint, "tcp://", 6) ||
	    !key_ok(o->server_key) || !key_ok(o->public_key) || !key_ok(o->secret_key) ||
	    !o->arena_bytes || !o->max_seqs)
		return -EINVAL;
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->remote = true;
	c->attach_fd = c->sq_doorbell = c->cq_doorbell = -1;
	c->geom = o->geom;
	c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : MEMCLIENT_DEFAULT_TIMEOUT_MS;
	c->attach_timeout_ms =
	    memclient_attach_wait_ms(o->attach_timeout_ms, c->timeout_ms, o->arena_bytes);
	rc = memclient_geometry_fill(&c->geom);
	if (!rc)
		rc = curve_connect(c, o);
	if (!rc)
		rc = hello(c, o);
	if (rc) {
		memclient_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

bool memclient_is_remote(const struct memclient *c)
{
	return c->remote;
}

/* A best-effort bye, so the daemon frees a remote session now rather than on its own. */
void memclient_remote_bye(struct memclient *c)
{
	struct wire_request rq = {.kind = WIRE_BYE};
	struct wire_reply rp;
	struct wire_frames in;

	if (!c->dead && !memclient_call(c, &rq, NULL, 0, &rp, &in)) {
		wire_reply_fini(&rp);
		wire_frames_fini(&in);
	}
}

int memclient_write(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		    const void *data, struct memclient_result *results)
{
	struct wire_frames in;
	int rc;

	if (!c || !data)
		return -EINVAL;
	if (!c->remote)
		return -EOPNOTSUPP;
	rc = memclient_units_call(c, WIRE_WRITE, units, n, 0, results, data,
				  (size_t)n * c->geom.unit_bytes, &in);
	wire_frames_fini(&in);
	return rc;
}

int memclient_read(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		   uint64_t step, void *data, struct memclient_result *results)
{
	size_t need;
	struct wire_frames in;
	int rc;

	if (!c || !data)
		return -EINVAL;
	if (!c->remote)
		return -EOPNOTSUPP;
	need = (size_t)n * c->geom.unit_bytes;
	rc = memclient_units_call(c, WIRE_READ, units, n, step, results, NULL, 0, &in);
	if (rc)
		return rc;
	if (in.data_len != need) {
		snprintf(c->last_error, sizeof(c->last_error),
			 "read reply: %zu data bytes, want %zu", in.data_len, need);
		rc = -EPROTO;
	} else {
		memcpy(data, in.data, need);
	}
	wire_frames_fini(&in);
	return rc;
}
