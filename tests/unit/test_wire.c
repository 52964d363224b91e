/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proto/wire: round trips of every message kind, truncation, bit flips, size caps, each
 * validation rule (hostile messages are built by a small protobuf encoder written here, not by
 * protobuf-c), and ZeroMQ framing over an inproc ROUTER/DEALER pair.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <cmocka.h>

#include "wire.h"

/* ---- a minimal protobuf writer for hostile messages ------------------------------------ */

struct pb {
	uint8_t b[1 << 18];
	size_t n;
};

static void pb_varint(struct pb *p, uint64_t v)
{
	while (v >= 0x80) {
		p->b[p->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p->b[p->n++] = (uint8_t)v;
}

static void pb_u(struct pb *p, unsigned field, uint64_t v)
{
	pb_varint(p, (uint64_t)field << 3);
	pb_varint(p, v);
}

static void pb_s(struct pb *p, unsigned field, int32_t v) /* sint32: zigzag */
{
	pb_u(p, field, ((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static void pb_bytes(struct pb *p, unsigned field, const void *d, size_t len)
{
	pb_varint(p, ((uint64_t)field << 3) | 2);
	pb_varint(p, len);
	memcpy(p->b + p->n, d, len);
	p->n += len;
}

static void pb_msg(struct pb *p, unsigned field, const struct pb *sub)
{
	pb_bytes(p, field, sub->b, sub->n);
}

static const uint8_t token16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static void geom_pb(struct pb *g, uint32_t layers, uint32_t heads, uint32_t dim, uint32_t bt,
		    uint32_t db)
{
	g->n = 0;
	pb_u(g, 1, layers);
	pb_u(g, 2, heads);
	pb_u(g, 3, dim);
	pb_u(g, 4, bt);
	pb_u(g, 5, db);
}

/* Request header: version, ids, token (tok_len bytes of token16). */
static void req_head(struct pb *p, uint32_t version, size_t tok_len)
{
	p->n = 0;
	pb_u(p, 1, version);
	pb_u(p, 2, 77);
	pb_u(p, 3, 5);
	if (tok_len)
		pb_bytes(p, 4, token16, tok_len);
}

static int req_decode(const struct pb *p, char *err)
{
	struct wire_request r;
	int ret = wire_request_unpack(p->b, p->n, &r, err, 256);
	if (ret == 0)
		wire_request_fini(&r);
	return ret;
}

static int rep_decode(const struct pb *p, char *err)
{
	struct wire_reply r;
	int ret = wire_reply_unpack(p->b, p->n, &r, err, 256);
	if (ret == 0)
		wire_reply_fini(&r);
	return ret;
}

#define assert_rejects(ret, want, err, field)                                                      \
	do {                                                                                       \
		assert_int_equal((ret), (want));                                                   \
		if (!strstr((err), (field)))                                                       \
			fail_msg("error '%s' does not name '%s'", (err), (field));                 \
	} while (0)

/* ---- well-formed messages -------------------------------------------------------------- */

static struct sp_geometry geom_8b(void)
{
	struct sp_geometry g = {
	    .n_layers = 32, .n_kv_heads = 2, .head_dim = 128, .block_tokens = 64, .dtype_bytes = 2};
	return g;
}

static void request_of_kind(struct wire_request *r, enum wire_kind k, struct wire_range *rng)
{
	memset(r, 0, sizeof(*r));
	r->protocol_version = SP_PROTOCOL_VERSION;
	r->request_id = 0x1122334455667788ull;
	r->session_id = 42;
	memcpy(r->token, token16, sizeof(token16));
	r->kind = k;
	switch (k) {
	case WIRE_HELLO:
		strcpy(r->u.hello.tenant, "tenant-a");
		strcpy(r->u.hello.client_name, "compute \xc3\xa9"); /* UTF-8 is fine */
		r->u.hello.arena_bytes = 8ull << 30;
		r->u.hello.geom = geom_8b();
		r->u.hello.wait_mode = SP_WAIT_POLL;
		r->u.hello.max_seqs = 64;
		break;
	case WIRE_SEQ_OPEN:
		r->u.seq_open.user_key = UINT64_MAX;
		r->u.seq_open.max_blocks = 2048;
		break;
	case WIRE_SEQ_CLOSE:
		r->u.seq_close.seq_index = 3;
		r->u.seq_close.seq_gen = 9;
		break;
	case WIRE_DRAIN:
		r->u.drain.deadline_ms = 5000;
		break;
	case WIRE_ALLOC:
	case WIRE_COMMIT:
	case WIRE_FREE:
	case WIRE_FORECAST:
	case WIRE_READ:
	case WIRE_WRITE:
		for (uint32_t i = 0; i < 3; i++)
			rng[i] = (struct wire_range){i, i + 1, 31, 1, 100 * i, 10 + i};
		r->u.units.ranges = rng;
		r->u.units.n_ranges = 3;
		r->u.units.n_units = 10 + 11 + 12;
		r->u.units.step = 123456789;
		break;
	default:
		break;
	}
}

static void test_request_roundtrip(void **state)
{
	for (int k = WIRE_HELLO; k < WIRE_KIND_MAX; k++) {
		struct wire_range rng[3];
		struct wire_request in, out;
		char err[256];
		void *buf;
		size_t len;

		request_of_kind(&in, (enum wire_kind)k, rng);
		assert_int_equal(wire_request_pack(&in, &buf, &len), 0);
		assert_int_equal(wire_request_unpack(buf, len, &out, err, sizeof(err)), 0);
		assert_int_equal(out.kind, k);
		assert_int_equal(out.protocol_version, SP_PROTOCOL_VERSION);
		assert_true(out.request_id == in.request_id);
		assert_true(out.session_id == in.session_id);
		assert_memory_equal(out.token, in.token, WIRE_TOKEN_BYTES);
		if (k == WIRE_HELLO) {
			assert_string_equal(out.u.hello.tenant, in.u.hello.tenant);
			assert_string_equal(out.u.hello.client_name, in.u.hello.client_name);
			assert_true(out.u.hello.arena_bytes == in.u.hello.arena_bytes);
			assert_int_equal(out.u.hello.geom.unit_bytes, 32768);
			in.u.hello.geom.unit_bytes = 32768;
			assert_memory_equal(&out.u.hello.geom, &in.u.hello.geom,
					    sizeof(struct sp_geometry));
			assert_int_equal(out.u.hello.wait_mode, SP_WAIT_POLL);
			assert_int_equal(out.u.hello.max_seqs, 64);
		} else if (k == WIRE_SEQ_OPEN) {
			assert_true(out.u.seq_open.user_key == UINT64_MAX);
			assert_int_equal(out.u.seq_open.max_blocks, 2048);
		} else if (k == WIRE_SEQ_CLOSE) {
			assert_int_equal(out.u.seq_close.seq_index, 3);
			assert_int_equal(out.u.seq_close.seq_gen, 9);
		} else if (k == WIRE_DRAIN) {
			assert_int_equal(out.u.drain.deadline_ms, 5000);
		} else if (in.u.units.ranges == rng) {
			assert_int_equal(out.u.units.n_ranges, 3);
			assert_int_equal(out.u.units.n_units, 33);
			assert_true(out.u.units.step == 123456789);
			assert_memory_equal(out.u.units.ranges, rng, sizeof(rng));
		}
		wire_request_fini(&out);
		free(buf);
	}
}

static void test_hello_without_token(void **state)
{
	struct wire_request in, out;
	void *buf;
	size_t len;

	request_of_kind(&in, WIRE_HELLO, NULL);
	memset(in.token, 0, sizeof(in.token));
	assert_int_equal(wire_request_pack(&in, &buf, &len), 0);
	assert_int_equal(wire_request_unpack(buf, len, &out, NULL, 0), 0);
	assert_int_equal(out.kind, WIRE_HELLO);
	wire_request_fini(&out);
	free(buf);
}

/* One reply of each body kind; stats and results arrays are static. */
static struct wire_unit_result g_results[4] = {
    {0, 7, 1}, {-ENOENT, 0, 0}, {0, 9, 3}, {-ESTALE, 0, 0}};
static struct wire_stat g_stats[2] = {{"units_resident", 10}, {"bytes_spilled", 1ull << 40}};

static void reply_of_kind(struct wire_reply *r, enum wire_kind k)
{
	memset(r, 0, sizeof(*r));
	r->request_id = 99;
	r->kind = k;
	switch (k) {
	case WIRE_HELLO:
		r->u.hello.session_id = 5;
		memcpy(r->u.hello.token, token16, 16);
		r->u.hello.daemon_epoch = 0xdeadbeefcafeull;
		r->u.hello.arena_bytes = 1 << 30;
		r->u.hello.n_slots = (1 << 30) / 32768;
		r->u.hello.ctl_bytes = 1 << 20;
		r->u.hello.sub_bytes = 1 << 16;
		r->u.hello.unit_words_cap = 1 << 20;
		r->u.hello.max_seqs = 64;
		r->u.hello.geom = geom_8b();
		break;
	case WIRE_SEQ_OPEN:
		r->u.seq_open.seq_index = 4;
		r->u.seq_open.seq_gen = 8;
		break;
	case WIRE_FORECAST:
		r->u.units.results = g_results;
		r->u.units.n = 4;
		break;
	case WIRE_STATS:
		r->u.stats.stats = g_stats;
		r->u.stats.n = 2;
		break;
	default:
		r->status = -EDQUOT;
		strcpy(r->error, "tenant a: quota 1G exceeded");
		break;
	}
}

static const enum wire_kind reply_kinds[] = {WIRE_NONE, WIRE_HELLO, WIRE_SEQ_OPEN, WIRE_FORECAST,
					     WIRE_STATS};

static void test_reply_roundtrip(void **state)
{
	for (size_t i = 0; i < sizeof(reply_kinds) / sizeof(reply_kinds[0]); i++) {
		struct wire_reply in, out;
		char err[256];
		void *buf;
		size_t len;

		reply_of_kind(&in, reply_kinds[i]);
		assert_int_equal(wire_reply_pack(&in, &buf, &len), 0);
		assert_int_equal(wire_reply_unpack(buf, len, &out, err, sizeof(err)), 0);
		assert_int_equal(out.kind, in.kind);
		assert_true(out.request_id == 99);
		assert_int_equal(out.status, in.status);
		assert_string_equal(out.error, in.error);
		switch (in.kind) {
		case WIRE_HELLO:
			in.u.hello.geom.unit_bytes = 32768;
			assert_memory_equal(&out.u.hello, &in.u.hello, sizeof(in.u.hello));
			break;
		case WIRE_SEQ_OPEN:
			assert_int_equal(out.u.seq_open.seq_index, 4);
			assert_int_equal(out.u.seq_open.seq_gen, 8);
			break;
		case WIRE_FORECAST:
			assert_int_equal(out.u.units.n, 4);
			assert_memory_equal(out.u.units.results, g_results, sizeof(g_results));
			break;
		case WIRE_STATS:
			assert_int_equal(out.u.stats.n, 2);
			assert_memory_equal(out.u.stats.stats, g_stats, sizeof(g_stats));
			break;
		default:
			break;
		}
		wire_reply_fini(&out);
		free(buf);
	}
}

/* ---- hostile bytes ---------------------------------------------------------------------- */

/* A decode that succeeds must give a struct that passes validation again (pack checks it). */
static void decode_any(const uint8_t *b, size_t len)
{
	struct wire_request rq;
	struct wire_reply rp;
	void *buf;
	size_t n;

	if (wire_request_unpack(b, len, &rq, NULL, 0) == 0) {
		assert_int_equal(wire_request_pack(&rq, &buf, &n), 0);
		free(buf);
		wire_request_fini(&rq);
	} else {
		/* On error the struct is zeroed and needs no fini. */
		assert_int_equal(rq.kind, WIRE_NONE);
		assert_null(rq.u.units.ranges);
	}
	if (wire_reply_unpack(b, len, &rp, NULL, 0) == 0) {
		assert_int_equal(wire_reply_pack(&rp, &buf, &n), 0);
		free(buf);
		wire_reply_fini(&rp);
	} else {
		assert_int_equal(rp.kind, WIRE_NONE);
	}
}

static void for_each_packed(void (*fn)(const uint8_t *b, size_t len))
{
	for (int k = WIRE_HELLO; k < WIRE_KIND_MAX; k++) {
		struct wire_range rng[3];
		struct wire_request r;
		void *buf;
		size_t len;

		request_of_kind(&r, (enum wire_kind)k, rng);
		assert_int_equal(wire_request_pack(&r, &buf, &len), 0);
		fn(buf, len);
		free(buf);
	}
	for (size_t i = 0; i < sizeof(reply_kinds) / sizeof(reply_kinds[0]); i++) {
		struct wire_reply r;
		void *buf;
		size_t len;

		reply_of_kind(&r, reply_kinds[i]);
		assert_int_equal(wire_reply_pack(&r, &buf, &len), 0);
		fn(buf, len);
		free(buf);
	}
}

static unsigned g_truncated_ok;

static void truncate_all(const uint8_t *b, size_t len)
{
	for (size_t n = 0; n < len; n++) {
		/* A copy of exactly n bytes, so ASan sees any read past the end. */
		uint8_t *c = malloc(n ? n : 1);
		memcpy(c, b, n);
		decode_any(c, n);
		free(c);
	}
	g_truncated_ok++;
}

static void test_truncated(void **state)
{
	g_truncated_ok = 0;
	for_each_packed(truncate_all);
	assert_int_equal(g_truncated_ok, WIRE_KIND_MAX - 1 + 5);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void flip_bits(const uint8_t *b, size_t len)
{
	uint8_t *c = malloc(len);

	for (int iter = 0; iter < 400; iter++) {
		memcpy(c, b, len);
		int flips = 1 + (int)(rnd() % 4);
		for (int i = 0; i < flips; i++)
			c[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
		decode_any(c, len);
	}
	free(c);
}

static void test_bit_flips(void **state)
{
	for_each_packed(flip_bits);
	/* And plain random bytes. */
	uint8_t junk[256];
	for (int iter = 0; iter < 2000; iter++) {
		size_t n = rnd() % sizeof(junk);
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)rnd();
		decode_any(junk, n);
	}
}

static void test_oversized(void **state)
{
	size_t big = WIRE_MAX_MSG_BYTES + 1;
	uint8_t *b = calloc(1, big);
	struct wire_request rq;
	struct wire_reply rp;
	char err[256];

	assert_int_equal(wire_request_unpack(b, big, &rq, err, sizeof(err)), -EMSGSIZE);
	assert_int_equal(wire_reply_unpack(b, big, &rp, err, sizeof(err)), -EMSGSIZE);
	free(b);

	/* A units reply at the count cap with large fields packs past the byte cap. */
	struct wire_unit_result *res = calloc(WIRE_MAX_UNITS, sizeof(*res));
	for (uint32_t i = 0; i < WIRE_MAX_UNITS; i++)
		res[i] = (struct wire_unit_result){-4095, UINT32_MAX - 1, UINT32_MAX - 1};
	struct wire_reply r = {.kind = WIRE_FORECAST};
	void *buf = NULL;
	size_t len = 0;
	r.u.units.results = res;
	r.u.units.n = WIRE_MAX_UNITS;
	assert_int_equal(wire_reply_pack(&r, &buf, &len), -EMSGSIZE);
	assert_null(buf);
	/* ... and with small fields it fits and decodes. */
	for (uint32_t i = 0; i < WIRE_MAX_UNITS; i++)
		res[i] = (struct wire_unit_result){0, i & 127, 1};
	assert_int_equal(wire_reply_pack(&r, &buf, &len), 0);
	assert_int_equal(wire_reply_unpack(buf, len, &rp, err, sizeof(err)), 0);
	assert_int_equal(rp.u.units.n, WIRE_MAX_UNITS);
	wire_reply_fini(&rp);
	free(buf);
	free(res);
}

static struct pb g_p, g_sub, g_sub2;

static void hello_with(const struct pb *geom, const char *tenant, size_t tenant_len,
		       uint32_t wait_mode, uint32_t max_seqs)
{
	g_sub.n = 0;
	pb_bytes(&g_sub, 1, tenant, tenant_len);
	pb_bytes(&g_sub, 2, "compute", 7);
	pb_u(&g_sub, 3, 1 << 30);
	if (geom)
		pb_msg(&g_sub, 4, geom);
	pb_u(&g_sub, 5, wait_mode);
	pb_u(&g_sub, 6, max_seqs);
	req_head(&g_p, SP_PROTOCOL_VERSION, 0);
	pb_msg(&g_p, 10, &g_sub);
}

static void test_request_rules(void **state)
{
	struct pb geom;
	char err[256];
	char longname[WIRE_NAME_MAX + 1];

	geom_pb(&geom, 32, 2, 128, 64, 2);
	/* The encoder itself is right: a good hello passes. */
	hello_with(&geom, "t", 1, 0, 16);
	assert_int_equal(req_decode(&g_p, err), 0);

	req_head(&g_p, 2, 16);
	pb_bytes(&g_p, 22, "", 0);
	assert_rejects(req_decode(&g_p, err), -EPROTONOSUPPORT, err, "protocol_version");
	req_head(&g_p, SP_PROTOCOL_VERSION, 16);
	assert_rejects(req_decode(&g_p, err), -EBADMSG, err, "body");
	req_head(&g_p, SP_PROTOCOL_VERSION, 5);
	pb_bytes(&g_p, 22, "", 0);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "token");
	req_head(&g_p, SP_PROTOCOL_VERSION, 0);
	pb_bytes(&g_p, 22, "", 0);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "token");

	memset(longname, 'x', sizeof(longname));
	hello_with(&geom, longname, WIRE_NAME_MAX, 0, 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "hello.tenant");
	hello_with(&geom, longname, WIRE_NAME_MAX - 1, 0, 1);
	assert_int_equal(req_decode(&g_p, err), 0);
	hello_with(&geom, "a\x01z", 3, 0, 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "hello.tenant");
	hello_with(NULL, "t", 1, 0, 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "hello.geometry");
	hello_with(&geom, "t", 1, 2, 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "hello.wait_mode");
	hello_with(&geom, "t", 1, 0, WIRE_MAX_SEQS + 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "hello.max_seqs");

	static const struct {
		uint32_t v[5];
		const char *field;
	} bad_geom[] = {
	    {{0, 2, 128, 64, 2}, "geometry.n_layers"},
	    {{SP_MAX_LAYERS + 1, 2, 128, 64, 2}, "geometry.n_layers"},
	    {{32, 0, 128, 64, 2}, "geometry.n_kv_heads"},
	    {{32, SP_MAX_KV_HEADS + 1, 128, 64, 2}, "geometry.n_kv_heads"},
	    {{32, 2, 0, 64, 2}, "geometry.head_dim"},
	    {{32, 2, SP_MAX_HEAD_DIM + 1, 64, 2}, "geometry.head_dim"},
	    {{32, 2, 128, 0, 2}, "geometry.block_tokens"},
	    {{32, 2, 128, SP_MAX_BLOCK_TOKENS + 1, 2}, "geometry.block_tokens"},
	    {{32, 2, 128, 64, 3}, "geometry.dtype_bytes"},
	    {{32, 2, 128, 64, 0}, "geometry.dtype_bytes"},
	    {{32, 2, 128, 64, 8}, "geometry.dtype_bytes"},
	};
	for (size_t i = 0; i < sizeof(bad_geom) / sizeof(bad_geom[0]); i++) {
		const uint32_t *v = bad_geom[i].v;
		geom_pb(&geom, v[0], v[1], v[2], v[3], v[4]);
		hello_with(&geom, "t", 1, 0, 1);
		assert_rejects(req_decode(&g_p, err), -EINVAL, err, bad_geom[i].field);
	}
	/* The largest legal unit is accepted. */
	geom_pb(&geom, SP_MAX_LAYERS, SP_MAX_KV_HEADS, SP_MAX_HEAD_DIM, SP_MAX_BLOCK_TOKENS, 4);
	hello_with(&geom, "t", 1, 1, 1);
	assert_int_equal(req_decode(&g_p, err), 0);
}

/* A units request (field = body field) with n ranges of `count` starting at `block`. */
static void units_with(unsigned field, uint32_t n, uint32_t block, uint32_t count)
{
	g_sub.n = 0;
	for (uint32_t i = 0; i < n; i++) {
		g_sub2.n = 0;
		pb_u(&g_sub2, 1, 1);
		pb_u(&g_sub2, 2, 1);
		pb_u(&g_sub2, 5, block);
		pb_u(&g_sub2, 6, count);
		pb_msg(&g_sub, 1, &g_sub2);
	}
	pb_u(&g_sub, 2, 7);
	req_head(&g_p, SP_PROTOCOL_VERSION, 16);
	pb_msg(&g_p, field, &g_sub);
}

static void test_units_rules(void **state)
{
	char err[256];

	for (unsigned field = 13; field <= 21; field++) {
		if (field >= 17 && field <= 19)
			continue; /* stats, drain, bye */
		units_with(field, 2, 0, 4);
		assert_int_equal(req_decode(&g_p, err), 0);
		units_with(field, 0, 0, 4);
		assert_rejects(req_decode(&g_p, err), -EINVAL, err, ".units");
		units_with(field, 2, 0, 0);
		assert_rejects(req_decode(&g_p, err), -EINVAL, err, ".units[0].count");
	}
	units_with(16, 1, UINT32_MAX - 2, 3);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "forecast.units[0].block");
	units_with(16, 1, UINT32_MAX - 3, 3);
	assert_int_equal(req_decode(&g_p, err), 0);
	units_with(16, WIRE_MAX_RANGES, 0, 16);
	assert_int_equal(req_decode(&g_p, err), 0);
	units_with(16, WIRE_MAX_RANGES, 0, 17);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "forecast.units");
	units_with(16, WIRE_MAX_RANGES + 1, 0, 1);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "forecast.units");
	/* Counts that would overflow 32 bits when summed. */
	units_with(13, 3, 0, 0x7fffffff);
	assert_rejects(req_decode(&g_p, err), -EINVAL, err, "alloc.units");
}

static void test_reply_rules(void **state)
{
	char err[256];
	struct pb geom;

	geom_pb(&geom, 32, 2, 128, 64, 2);
	g_p.n = 0;
	pb_u(&g_p, 1, 1);
	pb_s(&g_p, 2, 5);
	pb_bytes(&g_p, 14, "", 0);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "status");
	g_p.n = 0;
	pb_s(&g_p, 2, -EIO);
	pb_bytes(&g_p, 3, "bad\nline", 8);
	pb_bytes(&g_p, 14, "", 0);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "error");
	g_p.n = 0;
	pb_s(&g_p, 2, -EIO);
	assert_rejects(rep_decode(&g_p, err), -EBADMSG, err, "body");

	/* hello reply: token length, geometry, slots that do not fit the arena. */
	for (int c = 0; c < 4; c++) {
		g_sub.n = 0;
		pb_u(&g_sub, 1, 1);
		pb_bytes(&g_sub, 2, token16, c == 0 ? 15 : 16);
		pb_u(&g_sub, 4, 1 << 20);
		pb_u(&g_sub, 5, c == 2 ? 33 : 32);
		pb_u(&g_sub, 9, c == 3 ? WIRE_MAX_SEQS + 1 : 8);
		if (c != 1)
			pb_msg(&g_sub, 10, &geom);
		g_p.n = 0;
		pb_msg(&g_p, 10, &g_sub);
		static const char *const fields[] = {"hello.token", "hello.geometry",
						     "hello.n_slots", "hello.max_seqs"};
		assert_rejects(rep_decode(&g_p, err), -EINVAL, err, fields[c]);
	}

	/* units reply: a bad status inside, and one result too many. */
	g_sub.n = 0;
	g_sub2.n = 0;
	pb_s(&g_sub2, 1, 2);
	pb_msg(&g_sub, 1, &g_sub2);
	g_p.n = 0;
	pb_msg(&g_p, 12, &g_sub);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "units.results[0].status");
	g_sub.n = 0;
	for (uint32_t i = 0; i <= WIRE_MAX_UNITS; i++)
		pb_bytes(&g_sub, 1, "", 0);
	g_p.n = 0;
	pb_msg(&g_p, 12, &g_sub);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "units.results");

	/* stats reply: too many, and a bad name. */
	g_sub.n = 0;
	for (uint32_t i = 0; i <= WIRE_MAX_STATS; i++)
		pb_bytes(&g_sub, 1, "", 0);
	g_p.n = 0;
	pb_msg(&g_p, 13, &g_sub);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "stats");
	g_sub.n = 0;
	g_sub2.n = 0;
	pb_bytes(&g_sub2, 1, "ok", 2);
	pb_msg(&g_sub, 1, &g_sub2);
	g_sub2.n = 0;
	pb_bytes(&g_sub2, 1, "tab\there", 8);
	pb_msg(&g_sub, 1, &g_sub2);
	g_p.n = 0;
	pb_msg(&g_p, 13, &g_sub);
	assert_rejects(rep_decode(&g_p, err), -EINVAL, err, "stats[1].name");
}

static void test_pack_validates(void **state)
{
	struct wire_range rng[3];
	struct wire_request r;
	struct wire_reply rp;
	void *buf = (void *)1;
	size_t len = 1;

	request_of_kind(&r, WIRE_HELLO, rng);
	r.u.hello.geom.dtype_bytes = 3;
	assert_int_equal(wire_request_pack(&r, &buf, &len), -EINVAL);
	assert_null(buf);
	request_of_kind(&r, WIRE_FORECAST, rng);
	r.u.units.n_units = 5; /* does not match the ranges */
	assert_int_equal(wire_request_pack(&r, &buf, &len), -EINVAL);
	request_of_kind(&r, WIRE_PING, rng);
	r.protocol_version = 0;
	assert_int_equal(wire_request_pack(&r, &buf, &len), -EINVAL);
	request_of_kind(&r, WIRE_KIND_MAX, rng);
	assert_int_equal(wire_request_pack(&r, &buf, &len), -EINVAL);
	reply_of_kind(&rp, WIRE_ALLOC); /* units replies are WIRE_FORECAST bodies */
	rp.status = 0;
	rp.error[0] = '\0';
	assert_int_equal(wire_reply_pack(&rp, &buf, &len), -EINVAL);
}

static void test_reply_error(void **state)
{
	struct wire_reply r, out;
	void *buf;
	size_t len;

	wire_reply_error(&r, 12, -EACCES, "uid %d not admitted\n\x01 for tenant %s", 1000, "a");
	assert_int_equal(r.status, -EACCES);
	assert_null(strchr(r.error, '\n'));
	assert_non_null(strstr(r.error, "uid 1000 not admitted"));
	assert_int_equal(wire_reply_pack(&r, &buf, &len), 0);
	assert_int_equal(wire_reply_unpack(buf, len, &out, NULL, 0), 0);
	assert_int_equal(out.status, -EACCES);
	assert_true(out.request_id == 12);
	assert_string_equal(out.error, r.error);
	wire_reply_fini(&out);
	free(buf);
	assert_string_equal(wire_kind_name(WIRE_FORECAST), "forecast");
	assert_string_equal(wire_kind_name((enum wire_kind)99), "?");
}

/* ---- ZeroMQ ----------------------------------------------------------------------------- */

static void test_zmq_pair(void **state)
{
	void *ctx = zmq_ctx_new();
	void *router = zmq_socket(ctx, ZMQ_ROUTER);
	void *dealer = zmq_socket(ctx, ZMQ_DEALER);
	struct wire_frames f;
	char data[300];

	assert_int_equal(wire_zmq_setup(router, true), 0);
	assert_int_equal(wire_zmq_setup(dealer, false), 0);
	assert_int_equal(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "cli", 3), 0);
	assert_int_equal(zmq_bind(router, "inproc://wire-test"), 0);
	assert_int_equal(zmq_connect(dealer, "inproc://wire-test"), 0);

	assert_int_equal(wire_zmq_recv(router, true, &f, ZMQ_DONTWAIT), -EAGAIN);
	wire_frames_fini(&f);

	/* dealer -> router: one payload frame */
	assert_int_equal(wire_zmq_send(dealer, NULL, 0, "hello", 5, NULL, 0, 0), 0);
	assert_int_equal(wire_zmq_recv(router, true, &f, 0), 0);
	assert_int_equal(f.id_len, 3);
	assert_memory_equal(f.identity, "cli", 3);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.payload, "hello", 5);
	assert_null(f.data);

	/* router -> dealer: payload + data */
	memset(data, 0xab, sizeof(data));
	assert_int_equal(
	    wire_zmq_send(router, f.identity, f.id_len, "re", 2, data, sizeof(data), 0), 0);
	wire_frames_fini(&f);
	assert_int_equal(wire_zmq_recv(dealer, false, &f, 0), 0);
	assert_null(f.identity);
	assert_int_equal(f.len, 2);
	assert_int_equal(f.data_len, sizeof(data));
	assert_memory_equal(f.data, data, sizeof(data));
	wire_frames_fini(&f);

	/* an unknown peer is unreachable (ZMQ_ROUTER_MANDATORY) */
	assert_int_equal(wire_zmq_send(router, "nobody", 6, "x", 1, NULL, 0, 0), -EHOSTUNREACH);

	/* four frames: rejected, drained, identity kept; the next message is intact */
	zmq_send(dealer, "a", 1, ZMQ_SNDMORE);
	zmq_send(dealer, "b", 1, ZMQ_SNDMORE);
	zmq_send(dealer, "c", 1, ZMQ_SNDMORE);
	zmq_send(dealer, "d", 1, 0);
	assert_int_equal(wire_zmq_send(dealer, NULL, 0, "next", 4, NULL, 0, 0), 0);
	assert_int_equal(wire_zmq_recv(router, true, &f, 0), -EBADMSG);
	assert_int_equal(f.id_len, 3);
	assert_null(f.payload);
	wire_frames_fini(&f);
	assert_int_equal(wire_zmq_recv(router, true, &f, 0), 0);
	assert_int_equal(f.len, 4);
	assert_memory_equal(f.payload, "next", 4);
	wire_frames_fini(&f);

	/* a payload over the cap is refused on both sides */
	size_t big = WIRE_MAX_MSG_BYTES + 1;
	char *b = calloc(1, big);
	assert_int_equal(wire_zmq_send(dealer, NULL, 0, b, big, NULL, 0, 0), -EMSGSIZE);
	assert_int_equal(zmq_send(dealer, b, big, 0), (int)big);
	assert_int_equal(wire_zmq_send(dealer, NULL, 0, "ok", 2, NULL, 0, 0), 0);
	assert_int_equal(wire_zmq_recv(router, true, &f, 0), -EMSGSIZE);
	wire_frames_fini(&f);
	assert_int_equal(wire_zmq_recv(router, true, &f, 0), 0);
	assert_int_equal(f.len, 2);
	wire_frames_fini(&f);
	free(b);

	assert_int_equal(wire_zmq_send(dealer, NULL, 0, "x", 1, NULL, 0, 12345), -EINVAL);
	zmq_close(dealer);
	zmq_close(router);
	zmq_ctx_term(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_roundtrip), cmocka_unit_test(test_hello_without_token),
	    cmocka_unit_test(test_reply_roundtrip),   cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_bit_flips),	      cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_request_rules),     cmocka_unit_test(test_units_rules),
	    cmocka_unit_test(test_reply_rules),	      cmocka_unit_test(test_pack_validates),
	    cmocka_unit_test(test_reply_error),	      cmocka_unit_test(test_zmq_pair),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
