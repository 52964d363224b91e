/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The only code that includes the generated sparda.pb-c.h. Decoding goes protobuf -> plain
 * struct (rejecting what cannot be copied safely: version, missing body, token and string
 * lengths) -> the same struct check that encoding runs, so both directions obey one rule set.
 * The ZeroMQ framing and socket settings follow at the end of the file.
 */
#include "wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "sparda.pb-c.h"

#define WIRE_ERRNO_MAX 4095 /* statuses are 0 or -errno in [-4095, -1] */

static const char *const kind_names[WIRE_KIND_MAX] = {
    [WIRE_NONE] = "none",	    [WIRE_HELLO] = "hello",	  [WIRE_SEQ_OPEN] = "seq_open",
    [WIRE_SEQ_CLOSE] = "seq_close", [WIRE_ALLOC] = "alloc",	  [WIRE_COMMIT] = "commit",
    [WIRE_FREE] = "free",	    [WIRE_FORECAST] = "forecast", [WIRE_STATS] = "stats",
    [WIRE_DRAIN] = "drain",	    [WIRE_BYE] = "bye",		  [WIRE_READ] = "read",
    [WIRE_WRITE] = "write",	    [WIRE_PING] = "ping",
};

const char *wire_kind_name(enum wire_kind k)
{
	return (unsigned)k < WIRE_KIND_MAX ? kind_names[k] : "?";
}

static int fail(char *err, size_t err_len, int ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return ret;
}

/* The checks before a message is unpacked: out cleared, err emptied, the size under the cap. */
static int unpack_begin(const void *buf, size_t len, void *out, size_t out_size, const char *what,
			char *err, size_t err_len)
{
	if (!out)
		return -EINVAL;
	memset(out, 0, out_size);
	if (err && err_len)
		err[0] = '\0';
	if (len > WIRE_MAX_MSG_BYTES)
		return fail(err, err_len, -EMSGSIZE, "%s: %zu bytes over the cap %u", what, len,
			    WIRE_MAX_MSG_BYTES);
	if (!buf && len)
		return -EINVAL;
	return 0;
}

/* ---- field rules ------------------------------------------------------------------------ */

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and code points past U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* A text field: shorter than cap, valid UTF-8, no control characters. */
static int check_text(const char *s, size_t cap, const char *field, char *err, size_t err_len)
{
	size_t n = strnlen(s, cap);

	if (n >= cap)
		return fail(err, err_len, -EINVAL, "%s: longer than %zu bytes", field, cap - 1);
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		size_t k;

		if (c < 0x20 || c == 0x7f)
			return fail(err, err_len, -EINVAL, "%s: control character at byte %zu",
				    field, i);
		k = utf8_seq((const unsigned char *)s + i, n - i);
		if (!k)
			return fail(err, err_len, -EINVAL, "%s: invalid UTF-8 at byte %zu", field,
				    i);
		i += k;
	}
	return 0;
}

static int check_status(int32_t status, const char *field, char *err, size_t err_len)
{
	if (status > 0 || status < -WIRE_ERRNO_MAX)
		return fail(err, err_len, -EINVAL, "%s: %d is not 0 or -errno", field, status);
	return 0;
}

int wire_geometry_check(struct sp_geometry *g, char *err, size_t err_len)
{
	uint64_t unit;

	if (!g)
		return fail(err, err_len, -EINVAL, "geometry: missing");
	if (g->n_layers < 1 || g->n_layers > SP_MAX_LAYERS)
		return fail(err, err_len, -EINVAL, "geometry.n_layers: %u not in [1, %u]",
			    g->n_layers, SP_MAX_LAYERS);
	if (g->n_kv_heads < 1 || g->n_kv_heads > SP_MAX_KV_HEADS)
		return fail(err, err_len, -EINVAL, "geometry.n_kv_heads: %u not in [1, %u]",
			    g->n_kv_heads, SP_MAX_KV_HEADS);
	if (g->head_dim < 1 || g->head_dim > SP_MAX_HEAD_DIM)
		return fail(err, err_len, -EINVAL, "geometry.head_dim: %u not in [1, %u]",
			    g->head_dim, SP_MAX_HEAD_DIM);
	if (g->block_tokens < 1 || g->block_tokens > SP_MAX_BLOCK_TOKENS)
		return fail(err, err_len, -EINVAL, "geometry.block_tokens: %u not in [1, %u]",
			    g->block_tokens, SP_MAX_BLOCK_TOKENS);
	if (g->dtype_bytes != 1 && g->dtype_bytes != 2 && g->dtype_bytes != 4)
		return fail(err, err_len, -EINVAL, "geometry.dtype_bytes: %u not 1, 2 or 4",
			    g->dtype_bytes);
	unit = 2ull * g->block_tokens * g->head_dim * g->dtype_bytes;
	if (unit > SP_MAX_UNIT_BYTES)
		return fail(err, err_len, -EINVAL, "geometry.unit_bytes: %llu over %u",
			    (unsigned long long)unit, SP_MAX_UNIT_BYTES);
	g->unit_bytes = (uint32_t)unit;
	return 0;
}

static bool kind_has_units(enum wire_kind k)
{
	return k == WIRE_ALLOC || k == WIRE_COMMIT || k == WIRE_FREE || k == WIRE_FORECAST ||
	       k == WIRE_READ || k == WIRE_WRITE;
}

static int check_ranges(const struct wire_range *ranges, uint32_t n_ranges, uint32_t n_units,
			const char *kind, char *err, size_t err_len)
{
	uint64_t sum = 0;

	if (n_ranges < 1 || n_ranges > WIRE_MAX_RANGES)
		return fail(err, err_len, -EINVAL, "%s.units: %u ranges not in [1, %u]", kind,
			    n_ranges, WIRE_MAX_RANGES);
	if (!ranges)
		return fail(err, err_len, -EINVAL, "%s.units: missing", kind);
	for (uint32_t i = 0; i < n_ranges; i++) {
		const struct wire_range *r = &ranges[i];

		if (r->count < 1)
			return fail(err, err_len, -EINVAL, "%s.units[%u].count: 0", kind, i);
		if ((uint64_t)r->block + r->count > UINT32_MAX)
			return fail(err, err_len, -EINVAL,
				    "%s.units[%u].block: %u + count %u overflows", kind, i,
				    r->block, r->count);
		sum += r->count; /* at most 4096 * (2^32 - 1): no 64-bit overflow */
		if (sum > WIRE_MAX_UNITS)
			return fail(err, err_len, -EINVAL,
				    "%s.units: more than %u units in one request", kind,
				    WIRE_MAX_UNITS);
	}
	if (sum != n_units)
		return fail(err, err_len, -EINVAL, "%s.n_units: %u, ranges hold %llu", kind,
			    n_units, (unsigned long long)sum);
	return 0;
}

static int check_hello(const struct wire_request *r, char *err, size_t err_len)
{
	struct sp_geometry g = r->u.hello.geom;
	int ret;

	ret = check_text(r->u.hello.tenant, WIRE_NAME_MAX, "hello.tenant", err, err_len);
	if (!ret)
		ret = check_text(r->u.hello.client_name, WIRE_NAME_MAX, "hello.client_name", err,
				 err_len);
	if (!ret)
		ret = wire_geometry_check(&g, err, err_len);
	if (ret)
		return ret;
	if (r->u.hello.geom.unit_bytes && r->u.hello.geom.unit_bytes != g.unit_bytes)
		return fail(err, err_len, -EINVAL, "geometry.unit_bytes: %u, the shape gives %u",
			    r->u.hello.geom.unit_bytes, g.unit_bytes);
	if (r->u.hello.wait_mode != SP_WAIT_SLEEP && r->u.hello.wait_mode != SP_WAIT_POLL)
		return fail(err, err_len, -EINVAL, "hello.wait_mode: unknown mode %u",
			    r->u.hello.wait_mode);
	if (r->u.hello.max_seqs > WIRE_MAX_SEQS)
		return fail(err, err_len, -EINVAL, "hello.max_seqs: %u over %u",
			    r->u.hello.max_seqs, WIRE_MAX_SEQS);
	return 0;
}

/* Every rule a request obeys, whichever direction it travels. */
static int request_check(const struct wire_request *r, char *err, size_t err_len)
{
	if (r->protocol_version != SP_PROTOCOL_VERSION)
		return fail(err, err_len, -EPROTONOSUPPORT,
			    "protocol_version: %u, this side speaks %u", r->protocol_version,
			    SP_PROTOCOL_VERSION);
	if (r->kind == WIRE_HELLO)
		return check_hello(r, err, err_len);
	if (kind_has_units(r->kind))
		return check_ranges(r->u.units.ranges, r->u.units.n_ranges, r->u.units.n_units,
				    wire_kind_name(r->kind), err, err_len);
	if (r->kind <= WIRE_NONE || r->kind >= WIRE_KIND_MAX)
		return fail(err, err_len, -EINVAL, "kind: %d is not a request", (int)r->kind);
	return 0;
}

static int check_hello_reply(const struct wire_reply *r, char *err, size_t err_len)
{
	struct sp_geometry g = r->u.hello.geom;
	int ret = wire_geometry_check(&g, err, err_len);

	if (ret)
		return ret;
	if (r->u.hello.geom.unit_bytes && r->u.hello.geom.unit_bytes != g.unit_bytes)
		return fail(err, err_len, -EINVAL, "geometry.unit_bytes: %u, the shape gives %u",
			    r->u.hello.geom.unit_bytes, g.unit_bytes);
	if (r->u.hello.max_seqs > WIRE_MAX_SEQS)
		return fail(err, err_len, -EINVAL, "hello.max_seqs: %u over %u",
			    r->u.hello.max_seqs, WIRE_MAX_SEQS);
	if (r->u.hello.n_slots > r->u.hello.arena_bytes / g.unit_bytes)
		return fail(err, err_len, -EINVAL,
			    "hello.n_slots: %llu slots of %u bytes exceed arena_bytes %llu",
			    (unsigned long long)r->u.hello.n_slots, g.unit_bytes,
			    (unsigned long long)r->u.hello.arena_bytes);
	return 0;
}

static int reply_check(const struct wire_reply *r, char *err, size_t err_len)
{
	char field[48];
	int ret;

	ret = check_status(r->status, "status", err, err_len);
	if (!ret)
		ret = check_text(r->error, WIRE_ERROR_MAX, "error", err, err_len);
	if (ret)
		return ret;
	switch (r->kind) {
	case WIRE_NONE:
		return 0;
	case WIRE_HELLO:
		return check_hello_reply(r, err, err_len);
	case WIRE_SEQ_OPEN:
		return 0;
	case WIRE_FORECAST:
		if (r->u.units.n > WIRE_MAX_UNITS || (r->u.units.n && !r->u.units.results))
			return fail(err, err_len, -EINVAL, "units.results: %u not in [0, %u]",
				    r->u.units.n, WIRE_MAX_UNITS);
		for (uint32_t i = 0; i < r->u.units.n; i++) {
			snprintf(field, sizeof(field), "units.results[%u].status", i);
			ret = check_status(r->u.units.results[i].status, field, err, err_len);
			if (ret)
				return ret;
		}
		return 0;
	case WIRE_STATS:
		if (r->u.stats.n > WIRE_MAX_STATS || (r->u.stats.n && !r->u.stats.stats))
			return fail(err, err_len, -EINVAL, "stats: %u not in [0, %u]", r->u.stats.n,
				    WIRE_MAX_STATS);
		for (uint32_t i = 0; i < r->u.stats.n; i++) {
			snprintf(field, sizeof(field), "stats[%u].name", i);
			ret = check_text(r->u.stats.stats[i].name, WIRE_NAME_MAX, field, err,
					 err_len);
			if (ret)
				return ret;
		}
		return 0;
	default:
		return fail(err, err_len, -EINVAL, "kind: %s (%d) is not a reply body",
			    wire_kind_name(r->kind), (int)r->kind);
	}
}

/* ---- requests --------------------------------------------------------------------------- */

/* Request body cases are the wire kinds shifted by 9 (HELLO = 10 ... PING = 22). */
#define WIRE_REQ_CASE_SHIFT 9
_Static_assert(SPARDA__REQUEST__BODY_HELLO == WIRE_HELLO + WIRE_REQ_CASE_SHIFT, "body case");
_Static_assert(SPARDA__REQUEST__BODY_PING == WIRE_PING + WIRE_REQ_CASE_SHIFT, "body case");

static bool token_zero(const uint8_t *t)
{
	for (int i = 0; i < WIRE_TOKEN_BYTES; i++)
		if (t[i])
			return false;
	return true;
}

/* Fill the protobuf units body; the caller frees *rng and *rptr. */
static int units_to_pb(const struct wire_request *r, Sparda__Units *u, Sparda__UnitRange **rng,
		       Sparda__UnitRange ***rptr)
{
	uint32_t n = r->u.units.n_ranges;

	*rng = calloc(n, sizeof(**rng));
	*rptr = calloc(n, sizeof(**rptr));
	if (!*rng || !*rptr)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const struct wire_range *s = &r->u.units.ranges[i];
		Sparda__UnitRange *d = &(*rng)[i];

		sparda__unit_range__init(d);
		d->seq_index = s->seq_index;
		d->seq_gen = s->seq_gen;
		d->layer = s->layer;
		d->head = s->head;
		d->block = s->block;
		d->count = s->count;
		(*rptr)[i] = d;
	}
	u->n_units = n;
	u->units = *rptr;
	u->step = r->u.units.step;
	return 0;
}

static int pack_message(const ProtobufCMessage *m, void **buf, size_t *len)
{
	size_t size = protobuf_c_message_get_packed_size(m);
	uint8_t *out;

	if (size > WIRE_MAX_MSG_BYTES)
		return -EMSGSIZE;
	out = malloc(size ? size : 1);
	if (!out)
		return -ENOMEM;
	*len = protobuf_c_message_pack(m, out);
	*buf = out;
	return 0;
}

int wire_request_pack(const struct wire_request *r, void **buf, size_t *len)
{
	Sparda__Request m = SPARDA__REQUEST__INIT;
	Sparda__Hello hello = SPARDA__HELLO__INIT;
	Sparda__Geometry geom = SPARDA__GEOMETRY__INIT;
	Sparda__SeqOpen so = SPARDA__SEQ_OPEN__INIT;
	Sparda__SeqClose sc = SPARDA__SEQ_CLOSE__INIT;
	Sparda__Units units = SPARDA__UNITS__INIT;
	Sparda__Drain drain = SPARDA__DRAIN__INIT;
	Sparda__Empty empty = SPARDA__EMPTY__INIT;
	Sparda__UnitRange *rng = NULL, **rptr = NULL;
	int ret;

	if (!r || !buf || !len)
		return -EINVAL;
	*buf = NULL;
	*len = 0;
	if (request_check(r, NULL, 0))
		return -EINVAL;
	m.protocol_version = r->protocol_version;
	m.request_id = r->request_id;
	m.session_id = r->session_id;
	/* hello may go without a token (the attach exchange has none yet). */
	if (r->kind != WIRE_HELLO || !token_zero(r->token)) {
		m.token.data = (uint8_t *)r->token;
		m.token.len = WIRE_TOKEN_BYTES;
	}
	m.body_case = (Sparda__Request__BodyCase)(r->kind + WIRE_REQ_CASE_SHIFT);
	switch (r->kind) {
	case WIRE_HELLO:
		hello.tenant = (char *)r->u.hello.tenant;
		hello.client_name = (char *)r->u.hello.client_name;
		hello.arena_bytes = r->u.hello.arena_bytes;
		geom.n_layers = r->u.hello.geom.n_layers;
		geom.n_kv_heads = r->u.hello.geom.n_kv_heads;
		geom.head_dim = r->u.hello.geom.head_dim;
		geom.block_tokens = r->u.hello.geom.block_tokens;
		geom.dtype_bytes = r->u.hello.geom.dtype_bytes;
		hello.geometry = &geom;
		hello.wait_mode = (Sparda__WaitMode)r->u.hello.wait_mode;
		hello.max_seqs = r->u.hello.max_seqs;
		m.hello = &hello;
		break;
	case WIRE_SEQ_OPEN:
		so.user_key = r->u.seq_open.user_key;
		so.max_blocks = r->u.seq_open.max_blocks;
		m.seq_open = &so;
		break;
	case WIRE_SEQ_CLOSE:
		sc.seq_index = r->u.seq_close.seq_index;
		sc.seq_gen = r->u.seq_close.seq_gen;
		m.seq_close = &sc;
		break;
	case WIRE_DRAIN:
		drain.deadline_ms = r->u.drain.deadline_ms;
		m.drain = &drain;
		break;
	case WIRE_STATS:
	case WIRE_BYE:
	case WIRE_PING:
		m.stats = &empty; /* the Empty members share the union */
		break;
	default: /* the unit kinds, by request_check */
		ret = units_to_pb(r, &units, &rng, &rptr);
		if (ret)
			goto out_free;
		m.alloc = &units; /* the Units members share the union */
		break;
	}
	ret = pack_message(&m.base, buf, len);
out_free:
	free(rptr);
	free(rng);
	return ret;
}

static int hello_from_pb(const Sparda__Request *m, struct wire_request *out, char *err,
			 size_t err_len)
{
	const Sparda__Hello *h = m->hello;
	int ret;

	if (!h)
		return fail(err, err_len, -EBADMSG, "hello: missing");
	ret = check_text(h->tenant, WIRE_NAME_MAX, "hello.tenant", err, err_len);
	if (!ret)
		ret = check_text(h->client_name, WIRE_NAME_MAX, "hello.client_name", err, err_len);
	if (ret)
		return ret;
	if (!h->geometry)
		return fail(err, err_len, -EINVAL, "hello.geometry: missing");
	strcpy(out->u.hello.tenant, h->tenant);
	strcpy(out->u.hello.client_name, h->client_name);
	out->u.hello.arena_bytes = h->arena_bytes;
	out->u.hello.geom.n_layers = h->geometry->n_layers;
	out->u.hello.geom.n_kv_heads = h->geometry->n_kv_heads;
	out->u.hello.geom.head_dim = h->geometry->head_dim;
	out->u.hello.geom.block_tokens = h->geometry->block_tokens;
	out->u.hello.geom.dtype_bytes = h->geometry->dtype_bytes;
	out->u.hello.wait_mode = (uint32_t)h->wait_mode;
	out->u.hello.max_seqs = h->max_seqs;
	/* Decode fills unit_bytes (the contract in wire.h); the check then agrees with it. */
	return wire_geometry_check(&out->u.hello.geom, err, err_len);
}

static int units_from_pb(const Sparda__Units *u, struct wire_request *out, char *err,
			 size_t err_len)
{
	const char *kind = wire_kind_name(out->kind);
	uint64_t sum = 0;

	if (!u)
		return fail(err, err_len, -EBADMSG, "%s: missing", kind);
	if (u->n_units < 1 || u->n_units > WIRE_MAX_RANGES)
		return fail(err, err_len, -EINVAL, "%s.units: %zu ranges not in [1, %u]", kind,
			    u->n_units, WIRE_MAX_RANGES);
	out->u.units.ranges = calloc(u->n_units, sizeof(*out->u.units.ranges));
	if (!out->u.units.ranges)
		return fail(err, err_len, -ENOMEM, "%s.units: out of memory", kind);
	out->u.units.n_ranges = (uint32_t)u->n_units;
	for (size_t i = 0; i < u->n_units; i++) {
		const Sparda__UnitRange *s = u->units[i];
		struct wire_range *d = &out->u.units.ranges[i];

		if (!s)
			return fail(err, err_len, -EBADMSG, "%s.units[%zu]: missing", kind, i);
		d->seq_index = s->seq_index;
		d->seq_gen = s->seq_gen;
		d->layer = s->layer;
		d->head = s->head;
		d->block = s->block;
		d->count = s->count;
		sum += s->count;
	}
	/* A sum past the cap is rejected by check_ranges before it compares n_units. */
	out->u.units.n_units = sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
	out->u.units.step = u->step;
	return 0;
}

static int request_from_pb(const Sparda__Request *m, struct wire_request *out, char *err,
			   size_t err_len)
{
	if (m->protocol_version != SP_PROTOCOL_VERSION)
		return fail(err, err_len, -EPROTONOSUPPORT,
			    "protocol_version: %u, this side speaks %u", m->protocol_version,
			    SP_PROTOCOL_VERSION);
	if (m->body_case < SPARDA__REQUEST__BODY_HELLO || m->body_case > SPARDA__REQUEST__BODY_PING)
		return fail(err, err_len, -EBADMSG, "body: missing");
	out->protocol_version = m->protocol_version;
	out->request_id = m->request_id;
	out->session_id = m->session_id;
	out->kind = (enum wire_kind)(m->body_case - WIRE_REQ_CASE_SHIFT);
	if (m->token.len == WIRE_TOKEN_BYTES)
		memcpy(out->token, m->token.data, WIRE_TOKEN_BYTES);
	else if (m->token.len != 0 || out->kind != WIRE_HELLO)
		return fail(err, err_len, -EINVAL, "token: %zu bytes, want %d", m->token.len,
			    WIRE_TOKEN_BYTES);
	switch (out->kind) {
	case WIRE_HELLO:
		return hello_from_pb(m, out, err, err_len);
	case WIRE_SEQ_OPEN:
		if (!m->seq_open)
			return fail(err, err_len, -EBADMSG, "seq_open: missing");
		out->u.seq_open.user_key = m->seq_open->user_key;
		out->u.seq_open.max_blocks = m->seq_open->max_blocks;
		return 0;
	case WIRE_SEQ_CLOSE:
		if (!m->seq_close)
			return fail(err, err_len, -EBADMSG, "seq_close: missing");
		out->u.seq_close.seq_index = m->seq_close->seq_index;
		out->u.seq_close.seq_gen = m->seq_close->seq_gen;
		return 0;
	case WIRE_DRAIN:
		if (!m->drain)
			return fail(err, err_len, -EBADMSG, "drain: missing");
		out->u.drain.deadline_ms = m->drain->deadline_ms;
		return 0;
	case WIRE_STATS:
	case WIRE_BYE:
	case WIRE_PING:
		return 0;
	default:
		return units_from_pb(m->alloc, out, err, err_len);
	}
}

int wire_request_unpack(const void *buf, size_t len, struct wire_request *out, char *err,
			size_t err_len)
{
	Sparda__Request *m;
	int ret = unpack_begin(buf, len, out, sizeof(*out), "request", err, err_len);

	if (ret)
		return ret;
	m = sparda__request__unpack(NULL, len, buf);
	if (!m)
		return fail(err, err_len, -EBADMSG, "request: not a valid protobuf message");
	ret = request_from_pb(m, out, err, err_len);
	if (!ret)
		ret = request_check(out, err, err_len);
	sparda__request__free_unpacked(m, NULL);
	if (ret)
		wire_request_fini(out);
	return ret;
}

void wire_request_fini(struct wire_request *r)
{
	if (!r)
		return;
	if (kind_has_units(r->kind))
		free(r->u.units.ranges);
	memset(r, 0, sizeof(*r));
}

/* ---- replies ---------------------------------------------------------------------------- */

static void geom_to_pb(const struct sp_geometry *g, Sparda__Geometry *d)
{
	d->n_layers = g->n_layers;
	d->n_kv_heads = g->n_kv_heads;
	d->head_dim = g->head_dim;
	d->block_tokens = g->block_tokens;
	d->dtype_bytes = g->dtype_bytes;
}

/* Protobuf arrays of the units or stats body; the caller frees *items and *ptrs. */
static int reply_lists_to_pb(const struct wire_reply *r, Sparda__UnitsReply *units,
			     Sparda__StatsReply *stats, void **items, void ***ptrs)
{
	uint32_t n = r->kind == WIRE_FORECAST ? r->u.units.n : r->u.stats.n;
	size_t item = r->kind == WIRE_FORECAST ? sizeof(Sparda__UnitResult) : sizeof(Sparda__Stat);

	*items = calloc(n ? n : 1, item);
	*ptrs = calloc(n ? n : 1, sizeof(void *));
	if (!*items || !*ptrs)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if (r->kind == WIRE_FORECAST) {
			Sparda__UnitResult *d = (Sparda__UnitResult *)*items + i;
			sparda__unit_result__init(d);
			d->status = r->u.units.results[i].status;
			d->slot = r->u.units.results[i].slot;
			d->gen = r->u.units.results[i].gen;
			(*ptrs)[i] = d;
		} else {
			Sparda__Stat *d = (Sparda__Stat *)*items + i;
			sparda__stat__init(d);
			d->name = (char *)r->u.stats.stats[i].name;
			d->value = r->u.stats.stats[i].value;
			(*ptrs)[i] = d;
		}
	}
	units->n_results = r->kind == WIRE_FORECAST ? n : 0;
	units->results = (Sparda__UnitResult **)*ptrs;
	stats->n_stats = r->kind == WIRE_STATS ? n : 0;
	stats->stats = (Sparda__Stat **)*ptrs;
	return 0;
}

int wire_reply_pack(const struct wire_reply *r, void **buf, size_t *len)
{
	Sparda__Reply m = SPARDA__REPLY__INIT;
	Sparda__HelloReply hello = SPARDA__HELLO_REPLY__INIT;
	Sparda__Geometry geom = SPARDA__GEOMETRY__INIT;
	Sparda__SeqOpenReply so = SPARDA__SEQ_OPEN_REPLY__INIT;
	Sparda__UnitsReply units = SPARDA__UNITS_REPLY__INIT;
	Sparda__StatsReply stats = SPARDA__STATS_REPLY__INIT;
	Sparda__Empty empty = SPARDA__EMPTY__INIT;
	void *items = NULL, **ptrs = NULL;
	int ret = 0;

	if (!r || !buf || !len)
		return -EINVAL;
	*buf = NULL;
	*len = 0;
	if (reply_check(r, NULL, 0))
		return -EINVAL;
	m.request_id = r->request_id;
	m.status = r->status;
	m.error = (char *)r->error;
	switch (r->kind) {
	case WIRE_HELLO:
		hello.session_id = r->u.hello.session_id;
		hello.token.data = (uint8_t *)r->u.hello.token;
		hello.token.len = WIRE_TOKEN_BYTES;
		hello.daemon_epoch = r->u.hello.daemon_epoch;
		hello.arena_bytes = r->u.hello.arena_bytes;
		hello.n_slots = r->u.hello.n_slots;
		hello.ctl_bytes = r->u.hello.ctl_bytes;
		hello.sub_bytes = r->u.hello.sub_bytes;
		hello.unit_words_cap = r->u.hello.unit_words_cap;
		hello.max_seqs = r->u.hello.max_seqs;
		geom_to_pb(&r->u.hello.geom, &geom);
		hello.geometry = &geom;
		m.body_case = SPARDA__REPLY__BODY_HELLO;
		m.hello = &hello;
		break;
	case WIRE_SEQ_OPEN:
		so.seq_index = r->u.seq_open.seq_index;
		so.seq_gen = r->u.seq_open.seq_gen;
		m.body_case = SPARDA__REPLY__BODY_SEQ_OPEN;
		m.seq_open = &so;
		break;
	case WIRE_FORECAST:
	case WIRE_STATS:
		ret = reply_lists_to_pb(r, &units, &stats, &items, &ptrs);
		if (ret)
			goto out_free;
		if (r->kind == WIRE_FORECAST) {
			m.body_case = SPARDA__REPLY__BODY_UNITS;
			m.units = &units;
		} else {
			m.body_case = SPARDA__REPLY__BODY_STATS;
			m.stats = &stats;
		}
		break;
	default: /* WIRE_NONE, by reply_check */
		m.body_case = SPARDA__REPLY__BODY_EMPTY;
		m.empty = &empty;
		break;
	}
	ret = pack_message(&m.base, buf, len);
out_free:
	free(ptrs);
	free(items);
	return ret;
}

static int hello_reply_from_pb(const Sparda__HelloReply *h, struct wire_reply *out, char *err,
			       size_t err_len)
{
	if (!h)
		return fail(err, err_len, -EBADMSG, "hello: missing");
	if (h->token.len != WIRE_TOKEN_BYTES)
		return fail(err, err_len, -EINVAL, "hello.token: %zu bytes, want %d", h->token.len,
			    WIRE_TOKEN_BYTES);
	if (!h->geometry)
		return fail(err, err_len, -EINVAL, "hello.geometry: missing");
	out->u.hello.session_id = h->session_id;
	memcpy(out->u.hello.token, h->token.data, WIRE_TOKEN_BYTES);
	out->u.hello.daemon_epoch = h->daemon_epoch;
	out->u.hello.arena_bytes = h->arena_bytes;
	out->u.hello.n_slots = h->n_slots;
	out->u.hello.ctl_bytes = h->ctl_bytes;
	out->u.hello.sub_bytes = h->sub_bytes;
	out->u.hello.unit_words_cap = h->unit_words_cap;
	out->u.hello.max_seqs = h->max_seqs;
	out->u.hello.geom.n_layers = h->geometry->n_layers;
	out->u.hello.geom.n_kv_heads = h->geometry->n_kv_heads;
	out->u.hello.geom.head_dim = h->geometry->head_dim;
	out->u.hello.geom.block_tokens = h->geometry->block_tokens;
	out->u.hello.geom.dtype_bytes = h->geometry->dtype_bytes;
	return wire_geometry_check(&out->u.hello.geom, err, err_len);
}

static int units_reply_from_pb(const Sparda__UnitsReply *u, struct wire_reply *out, char *err,
			       size_t err_len)
{
	if (!u)
		return fail(err, err_len, -EBADMSG, "units: missing");
	if (u->n_results > WIRE_MAX_UNITS)
		return fail(err, err_len, -EINVAL, "units.results: %zu over %u", u->n_results,
			    WIRE_MAX_UNITS);
	out->u.units.results =
	    calloc(u->n_results ? u->n_results : 1, sizeof(*out->u.units.results));
	if (!out->u.units.results)
		return fail(err, err_len, -ENOMEM, "units.results: out of memory");
	out->u.units.n = (uint32_t)u->n_results;
	for (size_t i = 0; i < u->n_results; i++) {
		if (!u->results[i])
			return fail(err, err_len, -EBADMSG, "units.results[%zu]: missing", i);
		out->u.units.results[i].status = u->results[i]->status;
		out->u.units.results[i].slot = u->results[i]->slot;
		out->u.units.results[i].gen = u->results[i]->gen;
	}
	return 0;
}

static int stats_reply_from_pb(const Sparda__StatsReply *s, struct wire_reply *out, char *err,
			       size_t err_len)
{
	char field[48];

	if (!s)
		return fail(err, err_len, -EBADMSG, "stats: missing");
	if (s->n_stats > WIRE_MAX_STATS)
		return fail(err, err_len, -EINVAL, "stats: %zu over %u", s->n_stats,
			    WIRE_MAX_STATS);
	out->u.stats.stats = calloc(s->n_stats ? s->n_stats : 1, sizeof(*out->u.stats.stats));
	if (!out->u.stats.stats)
		return fail(err, err_len, -ENOMEM, "stats: out of memory");
	out->u.stats.n = (uint32_t)s->n_stats;
	for (size_t i = 0; i < s->n_stats; i++) {
		int ret;

		if (!s->stats[i])
			return fail(err, err_len, -EBADMSG, "stats[%zu]: missing", i);
		snprintf(field, sizeof(field), "stats[%zu].name", i);
		ret = check_text(s->stats[i]->name, WIRE_NAME_MAX, field, err, err_len);
		if (ret)
			return ret;
		strcpy(out->u.stats.stats[i].name, s->stats[i]->name);
		out->u.stats.stats[i].value = s->stats[i]->value;
	}
	return 0;
}

static int reply_from_pb(const Sparda__Reply *m, struct wire_reply *out, char *err, size_t err_len)
{
	int ret;

	out->request_id = m->request_id;
	out->status = m->status;
	ret = check_text(m->error, WIRE_ERROR_MAX, "error", err, err_len);
	if (ret)
		return ret;
	strcpy(out->error, m->error);
	switch (m->body_case) {
	case SPARDA__REPLY__BODY_HELLO:
		out->kind = WIRE_HELLO;
		return hello_reply_from_pb(m->hello, out, err, err_len);
	case SPARDA__REPLY__BODY_SEQ_OPEN:
		out->kind = WIRE_SEQ_OPEN;
		if (!m->seq_open)
			return fail(err, err_len, -EBADMSG, "seq_open: missing");
		out->u.seq_open.seq_index = m->seq_open->seq_index;
		out->u.seq_open.seq_gen = m->seq_open->seq_gen;
		return 0;
	case SPARDA__REPLY__BODY_UNITS:
		out->kind = WIRE_FORECAST;
		return units_reply_from_pb(m->units, out, err, err_len);
	case SPARDA__REPLY__BODY_STATS:
		out->kind = WIRE_STATS;
		return stats_reply_from_pb(m->stats, out, err, err_len);
	case SPARDA__REPLY__BODY_EMPTY:
		out->kind = WIRE_NONE;
		return 0;
	default:
		return fail(err, err_len, -EBADMSG, "body: missing");
	}
}

int wire_reply_unpack(const void *buf, size_t len, struct wire_reply *out, char *err,
		      size_t err_len)
{
	Sparda__Reply *m;
	int ret = unpack_begin(buf, len, out, sizeof(*out), "reply", err, err_len);

	if (ret)
		return ret;
	m = sparda__reply__unpack(NULL, len, buf);
	if (!m)
		return fail(err, err_len, -EBADMSG, "reply: not a valid protobuf message");
	ret = reply_from_pb(m, out, err, err_len);
	if (!ret)
		ret = reply_check(out, err, err_len);
	sparda__reply__free_unpacked(m, NULL);
	if (ret)
		wire_reply_fini(out);
	return ret;
}

void wire_reply_fini(struct wire_reply *r)
{
	if (!r)
		return;
	if (r->kind == WIRE_FORECAST)
		free(r->u.units.results);
	else if (r->kind == WIRE_STATS)
		free(r->u.stats.stats);
	memset(r, 0, sizeof(*r));
}

void wire_reply_error(struct wire_reply *r, uint64_t request_id, int status, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	memset(r, 0, sizeof(*r));
	r->request_id = request_id;
	r->kind = WIRE_NONE;
	/* An error reply must always pack: fix the status range and the text. */
	r->status = status > 0 ? -status : status;
	if (r->status < -WIRE_ERRNO_MAX)
		r->status = -EIO;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	n = strlen(r->error);
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)r->error[i];
		size_t k = utf8_seq((const unsigned char *)r->error + i, n - i);

		if (c < 0x20 || c == 0x7f || !k) {
			r->error[i++] = '?';
			continue;
		}
		i += k;
	}
}

/* ---- ZeroMQ ----------------------------------------------------------------------------- */

/* zmq reports POSIX errnos plus a few of its own past ZMQ_HAUSNUMERO. */
static int zmq_err(void)
{
	int e = zmq_errno();

	if (e == ETERM)
		return -ESHUTDOWN;
	if (e == EFSM)
		return -EPROTO;
	if (e <= 0 || e >= ZMQ_HAUSNUMERO)
		return -EIO;
	return -e;
}

int wire_zmq_setup(void *sock, bool router)
{
	int linger = 0, hwm = WIRE_HWM, one = 1;
	int64_t max = (int64_t)WIRE_MAX_DATA_BYTES + WIRE_MAX_MSG_BYTES;

	if (!sock)
		return -EINVAL;
	if (zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger)) ||
	    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof(hwm)) ||
	    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof(hwm)) ||
	    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof(max)))
		return zmq_err();
	if (router && zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)))
		return zmq_err();
	return 0;
}

static int send_frame(void *sock, const void *p, size_t n, int flags)
{
	int r;

	do {
		r = zmq_send(sock, p, n, flags);
	} while (r < 0 && zmq_errno() == EINTR);
	return r < 0 ? zmq_err() : 0;
}

int wire_zmq_send(void *sock, const void *identity, size_t id_len, const void *payload, size_t len,
		  const void *data, size_t data_len, int flags)
{
	bool has_data = data != NULL || data_len > 0;
	int ret;

	if (!sock || (!payload && len) || (!identity && id_len) || (!data && data_len) ||
	    (flags & ~ZMQ_DONTWAIT))
		return -EINVAL;
	if (len > WIRE_MAX_MSG_BYTES || data_len > WIRE_MAX_DATA_BYTES)
		return -EMSGSIZE;
	/*
	 * A multipart message is queued atomically: only the first frame can meet the HWM or an
	 * unknown router peer, so later frames do not fail half way.
	 */
	if (identity) {
		ret = send_frame(sock, identity, id_len, flags | ZMQ_SNDMORE);
		if (ret)
			return ret;
		flags &= ~ZMQ_DONTWAIT;
	}
	ret = send_frame(sock, payload, len, flags | (has_data ? ZMQ_SNDMORE : 0));
	if (ret || !has_data)
		return ret;
	return send_frame(sock, data, data_len, flags & ~ZMQ_DONTWAIT);
}

/* Receive one frame into a malloc'd copy (cap bounds its size). *more says if more follow. */
static int recv_frame(void *sock, int flags, size_t cap, void **out, size_t *len, bool *more)
{
	zmq_msg_t msg;
	int r, ret = 0;

	zmq_msg_init(&msg);
	do {
		r = zmq_msg_recv(&msg, sock, flags);
	} while (r < 0 && zmq_errno() == EINTR);
	if (r < 0) {
		ret = zmq_err();
		goto out_close;
	}
	*more = zmq_msg_more(&msg);
	*len = zmq_msg_size(&msg);
	if (*len > cap) {
		ret = -EMSGSIZE;
		goto out_close;
	}
	*out = malloc(*len ? *len : 1);
	if (!*out) {
		ret = -ENOMEM;
		goto out_close;
	}
	memcpy(*out, zmq_msg_data(&msg), *len);
out_close:
	zmq_msg_close(&msg);
	return ret;
}

/* Throw away the rest of a multipart message (its frames are already queued). */
static void drain_frames(void *sock)
{
	int more = 1;
	size_t sz = sizeof(more);

	while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
		zmq_msg_t msg;

		zmq_msg_init(&msg);
		if (zmq_msg_recv(&msg, sock, 0) < 0 && zmq_errno() != EINTR) {
			zmq_msg_close(&msg);
			return;
		}
		zmq_msg_close(&msg);
	}
}

int wire_zmq_recv(void *sock, bool router, struct wire_frames *f, int flags)
{
	bool more = false;
	int ret;

	if (!f)
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	if (!sock || (flags & ~ZMQ_DONTWAIT))
		return -EINVAL;
	if (router) {
		ret = recv_frame(sock, flags, 255, &f->identity, &f->id_len, &more);
		if (ret)
			goto out_fail;
		flags = 0; /* the remaining frames are already here */
		if (!more) {
			ret = -EBADMSG;
			goto out_fail;
		}
	}
	ret = recv_frame(sock, flags, WIRE_MAX_MSG_BYTES, &f->payload, &f->len, &more);
	if (ret || !more)
		goto out_done;
	ret = recv_frame(sock, 0, WIRE_MAX_DATA_BYTES, &f->data, &f->data_len, &more);
	if (!ret && more)
		ret = -EBADMSG;
out_done:
	if (!ret)
		return 0;
out_fail:
	/* Keep the socket in step: whatever is left of this message goes. */
	drain_frames(sock);
	/* The identity stays so a router can still answer the bad message. */
	free(f->payload);
	free(f->data);
	f->payload = f->data = NULL;
	f->len = f->data_len = 0;
	return ret;
}

void wire_frames_fini(struct wire_frames *f)
{
	if (!f)
		return;
	free(f->identity);
	free(f->payload);
	free(f->data);
	memset(f, 0, sizeof(*f));
}
