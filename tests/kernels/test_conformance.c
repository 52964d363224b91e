/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel conformance: every op of the CUDA backend against the CPU reference backend on fresh
 * random inputs (the seed is printed; SPARDA_TEST_SEED replays it), several shapes per op, all
 * outputs poisoned with 0xFF on both sides before each run so unwritten elements show. Floats
 * must agree within bf16 tolerance, integer outputs exactly (top-k sets up to near-ties at the
 * k-th score). Plain C with no test framework so the GPU host can build it from the command
 * line; exits 77 (skipped) when no CUDA device is usable, 1 on any failure.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"

static struct kb *cpu, *gpu;
static int n_fail, n_check;
static const char *cur_op, *cur_variant = "";
static char cur_case[160];

/* ---- PRNG (splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float unif(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(rng() >> 11) / 9007199254740992.0);
}

static int irand(int lo, int hi)
{
	return lo + (int)(rng() % (uint64_t)(hi - lo + 1));
}

static void fill_bf16(uint16_t *x, size_t n, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = kb_f32_to_bf16(unif(lo, hi));
}

/* Small integers: dot products of them are exact in fp32 on every backend. */
static void fill_bf16_int(uint16_t *x, size_t n, int lo, int hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = kb_f32_to_bf16((float)irand(lo, hi));
}

/* ---- buffers: host ones for the CPU backend, device ones for CUDA, freed per case ---- */

#define MAX_BUFS 64
static void *hbufs[MAX_BUFS], *gbufs[MAX_BUFS];
static int n_hbufs, n_gbufs;

static void die(const char *what, int e)
{
	fprintf(stderr, "FATAL: %s: %d\n", what, e);
	exit(1);
}

static void *h_alloc(size_t bytes)
{
	void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);

	if (!p || n_hbufs == MAX_BUFS)
		die("host alloc", -ENOMEM);
	memset(p, 0, bytes);
	hbufs[n_hbufs++] = p;
	return p;
}

/* Host output buffer, poisoned. */
static void *h_out(size_t bytes)
{
	void *p = h_alloc(bytes);

	memset(p, 0xff, bytes);
	return p;
}

static void *g_alloc(size_t bytes)
{
	void *p = NULL;
	int e = gpu->ops->alloc(gpu, bytes ? bytes : 16, &p);

	if (e || n_gbufs == MAX_BUFS)
		die("device alloc", e);
	gbufs[n_gbufs++] = p;
	return p;
}

/* Device copy of host data. */
static void *g_in(const void *host, size_t bytes)
{
	void *p = g_alloc(bytes);
	int e = bytes ? gpu->ops->memcpy(gpu, p, host, bytes, KB_H2D, KB_STREAM_COMPUTE) : 0;

	if (e)
		die("memcpy H2D", e);
	return p;
}

/* Device output buffer, poisoned. */
static void *g_out(size_t bytes)
{
	void *p = g_alloc(bytes);
	int e = gpu->ops->memset(gpu, p, 0xff, bytes ? bytes : 16, KB_STREAM_COMPUTE);

	if (e)
		die("memset", e);
	return p;
}

/* Wait for the device and copy a result back into a fresh host buffer. */
static void *g_get(const void *dev, size_t bytes)
{
	void *h = h_alloc(bytes);
	int e = gpu->ops->sync(gpu, KB_STREAM_COMPUTE);

	if (!e && bytes)
		e = gpu->ops->memcpy(gpu, h, dev, bytes, KB_D2H, KB_STREAM_COMPUTE);
	if (!e)
		e = gpu->ops->sync(gpu, KB_STREAM_COMPUTE);
	if (e) {
		fprintf(stderr, "FAIL %s%s [%s]: device error %d after the op\n", cur_op,
			cur_variant, cur_case, e);
		n_fail++;
		memset(h, 0xff, bytes);
	}
	return h;
}

static void case_end(void)
{
	for (int i = 0; i < n_gbufs; i++)
		gpu->ops->free(gpu, gbufs[i]);
	for (int i = 0; i < n_hbufs; i++)
		free(hbufs[i]);
	n_gbufs = n_hbufs = 0;
}

static void case_begin(const char *op, const char *fmt, ...)
{
	va_list ap;

	cur_op = op;
	va_start(ap, fmt);
	vsnprintf(cur_case, sizeof(cur_case), fmt, ap);
	va_end(ap);
}

static void fail(const char *fmt, ...)
{
	va_list ap;

	n_fail++;
	fprintf(stderr, "FAIL %s%s [%s]: ", cur_op, cur_variant, cur_case);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Both backends must return the same code; returns true when both succeeded. */
static bool rc_pair(int rc_cpu, int rc_gpu)
{
	n_check++;
	if (rc_cpu != rc_gpu || rc_cpu) { /* every case here is valid input */
		fail("return codes: cpu %d cuda %d", rc_cpu, rc_gpu);
		return false;
	}
	return true;
}

/* ---- comparisons ---- */

static double max_abs_f32(const float *x, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		if (isfinite(x[i]) && fabs(x[i]) > m)
			m = fabs(x[i]);
	return m;
}

/*
 * Floats agree when |a - b| <= atol_rel * max|ref| + rtol * |ref|; bit-identical values (the
 * poison of untouched elements included) always agree.
 */
static void cmp_f32(const char *what, const float *ref, const float *got, size_t n, double rtol,
		    double atol_rel)
{
	double atol = atol_rel * max_abs_f32(ref, n), worst = 0;
	size_t bad = 0, first = 0;

	n_check++;
	for (size_t i = 0; i < n; i++) {
		if (!memcmp(&ref[i], &got[i], sizeof(float)))
			continue;
		double d = fabs((double)ref[i] - got[i]);
		if (!(d <= atol + rtol * fabs(ref[i]))) {
			if (!bad++)
				first = i;
		}
		if (isfinite(d) && d > worst)
			worst = d;
	}
	if (bad)
		fail("%s: %zu/%zu elements off, first [%zu] cpu %.7g cuda %.7g (max diff %.3g)",
		     what, bad, n, first, ref[first], got[first], worst);
}

static void cmp_bf16(const char *what, const uint16_t *ref, const uint16_t *got, size_t n,
		     double rtol, double atol_rel)
{
	float *a = h_alloc(n * sizeof(float)), *b = h_alloc(n * sizeof(float));

	for (size_t i = 0; i < n; i++) {
		a[i] = kb_bf16_to_f32(ref[i]);
		b[i] = kb_bf16_to_f32(got[i]);
	}
	cmp_f32(what, a, b, n, rtol, atol_rel);
}

static void cmp_bytes(const char *what, const void *ref, const void *got, size_t n)
{
	const uint8_t *a = ref, *b = got;

	n_check++;
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i]) {
			fail("%s: byte %zu of %zu differs (cpu 0x%02x cuda 0x%02x)", what, i, n,
			     a[i], b[i]);
			return;
		}
}

static void cmp_i32(const char *what, const int32_t *ref, const int32_t *got, size_t n)
{
	n_check++;
	for (size_t i = 0; i < n; i++)
		if (ref[i] != got[i]) {
			fail("%s: element %zu of %zu differs (cpu %d cuda %d)", what, i, n, ref[i],
			     got[i]);
			return;
		}
}

/* bf16 tolerance: a couple of ulps of the value plus a little of the array's scale. */
#define BF_RTOL (1.0 / 64)

/* ---------------------------------------------------------------- elementwise */

static void t_embed(uint32_t n, uint32_t hidden, uint32_t vocab)
{
	case_begin("embed", "n=%u hidden=%u vocab=%u", n, hidden, vocab);
	uint16_t *table = h_alloc((size_t)vocab * hidden * 2);
	int32_t *ids = h_alloc(n * 4);
	fill_bf16(table, (size_t)vocab * hidden, -2, 2);
	for (uint32_t i = 0; i < n; i++)
		ids[i] = irand(0, (int)vocab - 1);
	float *oc = h_out((size_t)n * hidden * 4), *og = g_out((size_t)n * hidden * 4);
	int rc = cpu->ops->embed(cpu, KB_STREAM_COMPUTE, oc, table, ids, n, hidden, vocab, 12.0f);
	int rg =
	    gpu->ops->embed(gpu, KB_STREAM_COMPUTE, og, g_in(table, (size_t)vocab * hidden * 2),
			    g_in(ids, n * 4), n, hidden, vocab, 12.0f);
	if (rc_pair(rc, rg))
		cmp_f32("out", oc, g_get(og, (size_t)n * hidden * 4), (size_t)n * hidden, 1e-6, 0);
	case_end();
}

static void t_rmsnorm(uint32_t n, uint32_t hidden, bool with_delta)
{
	case_begin("add_rmsnorm", "n=%u hidden=%u delta=%d", n, hidden, with_delta);
	uint32_t ldd = hidden + 24;
	size_t rb = (size_t)n * hidden * 4;
	float *resid = h_alloc(rb);
	uint16_t *delta = h_alloc((size_t)n * ldd * 2), *w = h_alloc(hidden * 2);
	for (size_t i = 0; i < (size_t)n * hidden; i++)
		resid[i] = unif(-3, 3);
	fill_bf16(delta, (size_t)n * ldd, -1, 1);
	fill_bf16(w, hidden, 0.5f, 1.5f);
	float *rg_ = g_in(resid, rb);
	uint16_t *oc = h_out((size_t)n * hidden * 2), *og = g_out((size_t)n * hidden * 2);
	int rc = cpu->ops->add_rmsnorm(cpu, KB_STREAM_COMPUTE, resid, with_delta ? delta : NULL,
				       ldd, 0.7f, w, oc, n, hidden, 1e-5f);
	int rg = gpu->ops->add_rmsnorm(gpu, KB_STREAM_COMPUTE, rg_,
				       with_delta ? g_in(delta, (size_t)n * ldd * 2) : NULL, ldd,
				       0.7f, g_in(w, hidden * 2), og, n, hidden, 1e-5f);
	if (rc_pair(rc, rg)) {
		cmp_f32("resid", resid, g_get(rg_, rb), (size_t)n * hidden, 1e-6, 1e-7);
		cmp_bf16("out", oc, g_get(og, (size_t)n * hidden * 2), (size_t)n * hidden, BF_RTOL,
			 1e-3);
	}
	case_end();
}

static void t_residual(uint32_t n, uint32_t hidden)
{
	case_begin("add_residual", "n=%u hidden=%u", n, hidden);
	uint32_t ldd = hidden + 8;
	size_t rb = (size_t)n * hidden * 4;
	float *resid = h_alloc(rb);
	uint16_t *delta = h_alloc((size_t)n * ldd * 2);
	for (size_t i = 0; i < (size_t)n * hidden; i++)
		resid[i] = unif(-3, 3);
	fill_bf16(delta, (size_t)n * ldd, -1, 1);
	float *rg_ = g_in(resid, rb);
	int rc =
	    cpu->ops->add_residual(cpu, KB_STREAM_COMPUTE, resid, delta, ldd, 0.25f, n, hidden);
	int rg = gpu->ops->add_residual(gpu, KB_STREAM_COMPUTE, rg_,
					g_in(delta, (size_t)n * ldd * 2), ldd, 0.25f, n, hidden);
	if (rc_pair(rc, rg))
		cmp_f32("resid", resid, g_get(rg_, rb), (size_t)n * hidden, 1e-6, 1e-7);
	case_end();
}

static void t_rope(uint32_t n, uint32_t heads, uint32_t hd, int max_pos, float mscale)
{
	case_begin("rope", "n=%u heads=%u head_dim=%u max_pos=%d", n, heads, hd, max_pos);
	uint32_t ld = heads * hd + 40;
	size_t xb = (size_t)n * ld * 2;
	uint16_t *x = h_alloc(xb);
	int32_t *pos = h_alloc(n * 4);
	float *inv = h_alloc(hd / 2 * 4);
	fill_bf16(x, (size_t)n * ld, -2, 2);
	for (uint32_t i = 0; i < n; i++)
		pos[i] = irand(0, max_pos);
	for (uint32_t i = 0; i < hd / 2; i++)
		inv[i] = (float)pow(10000.0, -2.0 * i / hd);
	uint16_t *xg = g_in(x, xb);
	int rc = cpu->ops->rope(cpu, KB_STREAM_COMPUTE, x, ld, n, heads, hd, pos, inv, mscale);
	int rg = gpu->ops->rope(gpu, KB_STREAM_COMPUTE, xg, ld, n, heads, hd, g_in(pos, n * 4),
				g_in(inv, hd / 2 * 4), mscale);
	if (rc_pair(rc, rg))
		cmp_bf16("x", x, g_get(xg, xb), (size_t)n * ld, BF_RTOL, 4e-3);
	case_end();
}

static void t_swiglu(uint32_t n, uint32_t ff)
{
	case_begin("swiglu", "n=%u ff=%u", n, ff);
	uint16_t *gu = h_alloc((size_t)n * ff * 4);
	fill_bf16(gu, (size_t)n * ff * 2, -6, 6);
	uint16_t *oc = h_out((size_t)n * ff * 2), *og = g_out((size_t)n * ff * 2);
	int rc = cpu->ops->swiglu(cpu, KB_STREAM_COMPUTE, oc, gu, n, ff);
	int rg = gpu->ops->swiglu(gpu, KB_STREAM_COMPUTE, og, g_in(gu, (size_t)n * ff * 4), n, ff);
	if (rc_pair(rc, rg))
		cmp_bf16("out", oc, g_get(og, (size_t)n * ff * 2), (size_t)n * ff, BF_RTOL, 1e-3);
	case_end();
}

static void t_argmax(uint32_t n, uint32_t vocab)
{
	case_begin("argmax", "n=%u vocab=%u", n, vocab);
	float *lg = h_alloc((size_t)n * vocab * 4);
	for (size_t i = 0; i < (size_t)n * vocab; i++)
		lg[i] = unif(-10, 10);
	for (uint32_t r = 0; r < n; r++) { /* planted ties: the lower index must win */
		uint32_t a = (uint32_t)irand(0, (int)vocab - 1),
			 b = (uint32_t)irand(0, (int)vocab - 1);
		lg[(size_t)r * vocab + a] = 20.0f;
		if (r % 2)
			lg[(size_t)r * vocab + b] = 20.0f;
	}
	int32_t *oc = h_out(n * 4), *og = g_out(n * 4);
	int rc = cpu->ops->argmax(cpu, KB_STREAM_COMPUTE, oc, lg, n, vocab);
	int rg =
	    gpu->ops->argmax(gpu, KB_STREAM_COMPUTE, og, g_in(lg, (size_t)n * vocab * 4), n, vocab);
	if (rc_pair(rc, rg))
		cmp_i32("out", oc, g_get(og, n * 4), n);
	case_end();
}

static void t_gemm(uint32_t m, uint32_t n, uint32_t k, bool c_f32, float beta)
{
	case_begin("gemm", "m=%u n=%u k=%u c_f32=%d beta=%g", m, n, k, c_f32, beta);
	uint32_t lda = k + 8, ldw = k + 16, ldc = n + 4;
	uint16_t *a = h_alloc((size_t)m * lda * 2), *w = h_alloc((size_t)n * ldw * 2);
	fill_bf16(a, (size_t)m * lda, -1, 1);
	fill_bf16(w, (size_t)n * ldw, -1, 1);
	size_t cb = (size_t)m * ldc * (c_f32 ? 4 : 2);
	void *cc = h_alloc(cb);
	if (c_f32)
		for (size_t i = 0; i < (size_t)m * ldc; i++)
			((float *)cc)[i] = unif(-1, 1);
	else
		fill_bf16(cc, (size_t)m * ldc, -1, 1);
	void *cg = g_in(cc, cb);
	int rc = cpu->ops->gemm(cpu, KB_STREAM_COMPUTE, m, n, k, a, lda, w, ldw, cc, ldc, c_f32,
				0.5f, beta);
	int rg = gpu->ops->gemm(gpu, KB_STREAM_COMPUTE, m, n, k, g_in(a, (size_t)m * lda * 2), lda,
				g_in(w, (size_t)n * ldw * 2), ldw, cg, ldc, c_f32, 0.5f, beta);
	if (rc_pair(rc, rg)) {
		if (c_f32)
			cmp_f32("c", cc, g_get(cg, cb), (size_t)m * ldc, 1e-3, 1e-3);
		else
			cmp_bf16("c", cc, g_get(cg, cb), (size_t)m * ldc, BF_RTOL, 4e-3);
	}
	case_end();
}

/* ---------------------------------------------------------------- compressed keys */

static const struct kb_sparse sp_small = {64, 32, 16, 5, 4, 1, 1, 4, 12};
static const struct kb_sparse sp_paper = {64, 32, 16, 5, 4, 1, 1, 32, 96};

static void t_ck_prefill(uint32_t t, uint32_t n_kv, uint32_t d)
{
	const struct kb_sparse *sp = &sp_small;
	case_begin("ck_prefill", "t=%u n_kv=%u d=%u", t, n_kv, d);
	uint32_t ld = n_kv * d + 16, cap = kb_ck_entries(sp, t) + 3;
	size_t ckb = (size_t)n_kv * cap * d * 2, rgb = (size_t)n_kv * sp->ck_kernel * d * 2;
	uint16_t *k = h_alloc((size_t)t * ld * 2);
	fill_bf16(k, (size_t)t * ld, -2, 2);
	uint16_t *ckc = h_out(ckb), *rgc = h_out(rgb), *ckg = g_out(ckb), *rgg = g_out(rgb);
	int rc = cpu->ops->ck_prefill(cpu, KB_STREAM_COMPUTE, ckc, cap, rgc, k, ld, t, n_kv, d, sp);
	int rg = gpu->ops->ck_prefill(gpu, KB_STREAM_COMPUTE, ckg, cap, rgg,
				      g_in(k, (size_t)t * ld * 2), ld, t, n_kv, d, sp);
	if (rc_pair(rc, rg)) {
		cmp_bf16("ck", ckc, g_get(ckg, ckb), ckb / 2, BF_RTOL, 1e-3);
		cmp_bytes("ring", rgc, g_get(rgg, rgb), rgb);
	}
	case_end();
}

static void t_ck_append(uint32_t b, uint32_t n_kv, uint32_t d)
{
	const struct kb_sparse *sp = &sp_small;
	case_begin("ck_append", "b=%u n_kv=%u d=%u", b, n_kv, d);
	uint32_t ld = n_kv * d + 8, cap = 40, kern = sp->ck_kernel;
	size_t ckb = (size_t)b * n_kv * cap * d * 2, rgb = (size_t)b * n_kv * kern * d * 2;
	uint16_t *k = h_alloc((size_t)b * ld * 2), *ck = h_alloc(ckb), *ring = h_alloc(rgb);
	int32_t *pos = h_alloc(b * 4);
	fill_bf16(k, (size_t)b * ld, -2, 2);
	fill_bf16(ck, ckb / 2, -2, 2);
	fill_bf16(ring, rgb / 2, -2, 2);
	for (uint32_t i = 0; i < b; i++) /* half emit an entry, one lands past cap */
		pos[i] = i == b - 1 ? (int32_t)(kern - 1 + sp->ck_stride * (cap + 1))
			 : i % 2    ? (int32_t)(kern - 1 + sp->ck_stride * irand(0, (int)cap - 1))
				    : irand(0, (int)(cap * sp->ck_stride));
	uint16_t *ckg = g_in(ck, ckb), *rgg = g_in(ring, rgb);
	int rc =
	    cpu->ops->ck_append(cpu, KB_STREAM_COMPUTE, ck, cap, ring, k, ld, pos, b, n_kv, d, sp);
	int rg =
	    gpu->ops->ck_append(gpu, KB_STREAM_COMPUTE, ckg, cap, rgg, g_in(k, (size_t)b * ld * 2),
				ld, g_in(pos, b * 4), b, n_kv, d, sp);
	if (rc_pair(rc, rg)) {
		cmp_bf16("ck", ck, g_get(ckg, ckb), ckb / 2, BF_RTOL, 1e-3);
		cmp_bytes("ring", ring, g_get(rgg, rgb), rgb);
	}
	case_end();
}

/* ---------------------------------------------------------------- selection */

static void t_score_decode(uint32_t b, uint32_t n_kv, uint32_t group, uint32_t d, uint32_t cap,
			   bool original)
{
	case_begin("score_decode", "b=%u n_kv=%u group=%u d=%u cap=%u original=%d", b, n_kv, group,
		   d, cap, original);
	uint32_t n_q = original ? n_kv * group : n_kv, ld = n_q * d + 8;
	size_t ckb = (size_t)b * n_kv * cap * d * 2, sb = (size_t)b * n_kv * cap * 4;
	uint16_t *q = h_alloc((size_t)b * ld * 2), *ck = h_alloc(ckb);
	int32_t *ne = h_alloc(b * 4);
	fill_bf16(q, (size_t)b * ld, -2, 2);
	fill_bf16(ck, ckb / 2, -1, 1);
	for (uint32_t i = 0; i < b; i++)
		ne[i] = i == 0 ? (int32_t)cap : i == 1 ? 0 : irand(1, (int)cap);
	float *sc = h_out(sb), *sg = g_out(sb), scale = 1.0f / sqrtf((float)d);
	int rc = cpu->ops->score_decode(cpu, KB_STREAM_COMPUTE, sc, q, ld, ck, cap, ne, b, n_q,
					n_kv, d, original, scale);
	int rg = gpu->ops->score_decode(gpu, KB_STREAM_COMPUTE, sg, g_in(q, (size_t)b * ld * 2), ld,
					g_in(ck, ckb), cap, g_in(ne, b * 4), b, n_q, n_kv, d,
					original, scale);
	if (rc_pair(rc, rg))
		cmp_f32("scores", sc, g_get(sg, sb), sb / 4, 1e-3, 1e-4);
	case_end();
}

/* Scores quantised to a few values, so ties at the k-th place are common and must break the
 * same way (lowest block id); identical inputs on both sides, so the sets match exactly. */
static void t_select_decode(uint32_t b, uint32_t n_kv, const struct kb_sparse *sp,
			    uint32_t max_tokens)
{
	case_begin("select_decode", "b=%u n_kv=%u topk=%u local=%u max_tokens=%u", b, n_kv,
		   sp->topk, sp->local, max_tokens);
	uint32_t cap = kb_ck_entries(sp, max_tokens) + 2;
	size_t sb = (size_t)b * n_kv * cap * 4, selb = (size_t)b * n_kv * sp->topk * 4;
	float *sc = h_alloc(sb);
	int32_t *ne = h_alloc(b * 4), *nb = h_alloc(b * 4);
	for (size_t i = 0; i < sb / 4; i++)
		sc[i] = (float)irand(-4, 4) * 0.5f;
	for (uint32_t i = 0; i < b; i++) {
		uint32_t tok = i == 0	? 1
			       : i == 1 ? max_tokens
					: (uint32_t)irand(1, (int)max_tokens);
		ne[i] = (int32_t)kb_ck_entries(sp, tok);
		nb[i] = (int32_t)((tok + sp->block - 1) / sp->block);
	}
	int32_t *oc = h_out(selb), *og = g_out(selb);
	int rc = cpu->ops->select_decode(cpu, KB_STREAM_COMPUTE, oc, sc, cap, ne, nb, b, n_kv, sp);
	int rg = gpu->ops->select_decode(gpu, KB_STREAM_COMPUTE, og, g_in(sc, sb), cap,
					 g_in(ne, b * 4), g_in(nb, b * 4), b, n_kv, sp);
	if (rc_pair(rc, rg))
		cmp_i32("sel", oc, g_get(og, selb), selb / 4);
	case_end();
}

/*
 * Reference pooled block scores (double) of query block qb for the prefill selection, used to
 * accept top-k differences that are near-ties at the k-th score.
 */
static void ref_prefill_blocks(double *bs, uint32_t nb, const uint16_t *q, uint32_t ld, uint32_t t,
			       uint32_t p0, const uint16_t *ck, uint32_t cap, uint32_t n_q,
			       uint32_t n_kv, uint32_t d, bool original, float scale,
			       const struct kb_sparse *sp, uint32_t g, uint32_t qb)
{
	uint32_t G = n_q / n_kv, i0 = qb * sp->block, i1 = i0 + sp->block < t ? i0 + sp->block : t;
	uint32_t ne_max = kb_ck_entries(sp, p0 + i1), own = p0 / sp->block + qb;
	double *col = calloc(ne_max + 1, sizeof(double)), *l = calloc(ne_max + 1, sizeof(double));

	for (uint32_t j = 0; j < ne_max; j++)
		col[j] = -INFINITY;
	for (uint32_t i = i0; i < i1; i++) {
		uint32_t ne = kb_ck_entries(sp, p0 + i + 1);
		double acc[4096];
		for (uint32_t j = 0; j < ne; j++)
			acc[j] = 0;
		for (uint32_t hh = 0; hh < (original ? G : 1); hh++) {
			uint32_t h = original ? g * G + hh : g;
			double mx = -INFINITY, s = 0;
			for (uint32_t j = 0; j < ne; j++) {
				double dot = 0;
				for (uint32_t c = 0; c < d; c++)
					dot +=
					    (double)kb_bf16_to_f32(q[(size_t)i * ld + h * d + c]) *
					    kb_bf16_to_f32(ck[((size_t)g * cap + j) * d + c]);
				l[j] = original ? dot * scale : dot;
				if (l[j] > mx)
					mx = l[j];
			}
			if (!original) {
				for (uint32_t j = 0; j < ne; j++)
					acc[j] = l[j];
				continue;
			}
			for (uint32_t j = 0; j < ne; j++)
				s += exp(l[j] - mx);
			for (uint32_t j = 0; j < ne; j++)
				acc[j] += exp(l[j] - mx) / s;
		}
		for (uint32_t j = 0; j < ne; j++)
			if (acc[j] > col[j])
				col[j] = acc[j];
	}
	for (uint32_t m = 0; m < nb; m++) {
		if (m < sp->sink || m + sp->local >= own) {
			bs[m] = INFINITY;
			continue;
		}
		int64_t j0 = (int64_t)sp->pool_stride * m - sp->pool_pad, j1 = j0 + sp->pool_kernel;
		bs[m] = -INFINITY;
		for (int64_t j = j0 < 0 ? 0 : j0; j < j1 && j < ne_max; j++)
			if (col[j] > bs[m])
				bs[m] = col[j];
	}
	free(col);
	free(l);
}

/* Same ids, or differences only among blocks whose score ties the k-th score (within tol). */
static bool sel_equiv(const int32_t *a, const int32_t *b, uint32_t k, const double *bs, double tol)
{
	double kth = INFINITY;
	for (uint32_t i = 0; i < k; i++)
		if (a[i] >= 0 && bs[a[i]] < kth)
			kth = bs[a[i]];
	for (int pass = 0; pass < 2; pass++) {
		const int32_t *x = pass ? b : a, *y = pass ? a : b;
		for (uint32_t i = 0; i < k; i++) {
			bool found = false;
			if (x[i] < 0)
				continue;
			for (uint32_t j = 0; j < k && !found; j++)
				found = y[j] == x[i];
			if (!found && !(fabs(bs[x[i]] - kth) <= tol * (fabs(kth) + 1e-30)))
				return false;
		}
	}
	uint32_t ca = 0, cb = 0;
	for (uint32_t i = 0; i < k; i++) {
		ca += a[i] >= 0;
		cb += b[i] >= 0;
	}
	return ca == cb;
}

static void t_select_prefill(uint32_t t, uint32_t p0, uint32_t n_kv, uint32_t group, uint32_t d,
			     bool original, const struct kb_sparse *sp)
{
	case_begin("select_prefill", "t=%u p0=%u n_kv=%u group=%u d=%u original=%d topk=%u", t, p0,
		   n_kv, group, d, original, sp->topk);
	uint32_t n_q = original ? n_kv * group : n_kv, ld = n_q * d + 8;
	uint32_t cap = kb_ck_entries(sp, p0 + t) + 5, n_qb = (t + sp->block - 1) / sp->block;
	size_t ckb = (size_t)n_kv * cap * d * 2, selb = (size_t)n_kv * n_qb * sp->topk * 4;
	uint16_t *q = h_alloc((size_t)t * ld * 2), *ck = h_alloc(ckb);
	if (original) {
		fill_bf16(q, (size_t)t * ld, -2, 2);
		fill_bf16(ck, ckb / 2, -1, 1);
	} else { /* exact scores: the selections must agree id for id */
		fill_bf16_int(q, (size_t)t * ld, -3, 3);
		fill_bf16_int(ck, ckb / 2, -3, 3);
	}
	float scale = 1.0f / sqrtf((float)d);
	size_t wc = cpu->ops->select_prefill_work(cpu, t, p0, n_q, n_kv, sp);
	size_t wg = gpu->ops->select_prefill_work(gpu, t, p0, n_q, n_kv, sp);
	int32_t *oc = h_out(selb), *og = g_out(selb);
	int rc = cpu->ops->select_prefill(cpu, KB_STREAM_COMPUTE, oc, q, ld, t, p0, ck, cap, n_q,
					  n_kv, d, original, scale, sp, h_alloc(wc));
	int rg = gpu->ops->select_prefill(gpu, KB_STREAM_COMPUTE, og, g_in(q, (size_t)t * ld * 2),
					  ld, t, p0, g_in(ck, ckb), cap, n_q, n_kv, d, original,
					  scale, sp, g_alloc(wg));
	if (!rc_pair(rc, rg)) {
		case_end();
		return;
	}
	int32_t *got = g_get(og, selb);
	if (!original) {
		cmp_i32("sel", oc, got, selb / 4);
		case_end();
		return;
	}
	n_check++;
	uint32_t nbmax = (p0 + t + sp->block - 1) / sp->block;
	double *bs = calloc(nbmax, sizeof(double));
	for (uint32_t g = 0; g < n_kv; g++)
		for (uint32_t qb = 0; qb < n_qb; qb++) {
			size_t o = ((size_t)g * n_qb + qb) * sp->topk;
			if (!memcmp(oc + o, got + o, sp->topk * 4))
				continue;
			ref_prefill_blocks(bs, p0 / sp->block + qb + 1, q, ld, t, p0, ck, cap, n_q,
					   n_kv, d, original, scale, sp, g, qb);
			if (!sel_equiv(oc + o, got + o, sp->topk, bs, 1e-4)) {
				fail("sel g=%u qb=%u differs beyond near-ties (first ids cpu %d "
				     "cuda "
				     "%d)",
				     g, qb, oc[o], got[o]);
				g = n_kv;
				break;
			}
		}
	free(bs);
	case_end();
}

/* ---------------------------------------------------------------- cache and units */

/* aged: the retaining cache (ages with ties; the slots not needed keep their blocks). */
static void t_cache_diff(uint32_t n, uint32_t n_slots, uint32_t k, uint32_t n_blocks, bool aged)
{
	case_begin("cache_diff", "n=%u n_slots=%u k=%u blocks=%u aged=%d", n, n_slots, k, n_blocks,
		   aged);
	size_t mb = (size_t)n * n_slots * 4, sb = (size_t)n * k * 4;
	int32_t *map = h_alloc(mb), *sel = h_alloc(sb), *prot = h_alloc(n * 4);
	int32_t *age = aged ? h_alloc(mb) : NULL, *ag = NULL;
	for (size_t i = 0; aged && i < mb / 4; i++)
		age[i] = irand(0, 6);
	uint8_t *used = h_alloc(n_blocks);
	for (uint32_t i = 0; i < n; i++) {
		memset(used, 0, n_blocks);
		for (uint32_t s = 0; s < n_slots; s++) { /* distinct cached blocks, some empty */
			int32_t m = -1;
			if (irand(0, 5)) {
				m = irand(0, (int)n_blocks - 1);
				while (used[m])
					m = (m + 1) % (int32_t)n_blocks;
				used[m] = 1;
			}
			map[(size_t)i * n_slots + s] = m;
		}
		/* selection: a random ascending subset; it fits because k < n_slots or no protect
		 */
		uint32_t want = (uint32_t)irand(0, (int)k), got = 0;
		memset(used, 0, n_blocks);
		for (uint32_t c = 0; c < want; c++)
			used[irand(0, (int)n_blocks - 1)] = 1;
		for (uint32_t m = 0; m < n_blocks && got < k; m++)
			if (used[m])
				sel[(size_t)i * k + got++] = (int32_t)m;
		for (; got < k; got++)
			sel[(size_t)i * k + got] = -1;
		prot[i] = k < n_slots && irand(0, 3) ? irand(0, (int)n_slots - 1) : -1;
	}
	int32_t *mg = g_in(map, mb);
	if (aged)
		ag = g_in(age, mb);
	int32_t *lsc = h_out(sb), *lbc = h_out(sb), *nlc = h_out(n * 4), *hc = h_out(n * 4);
	int32_t *lsg = g_out(sb), *lbg = g_out(sb), *nlg = g_out(n * 4), *hg = g_out(n * 4);
	int rc = cpu->ops->cache_diff(cpu, KB_STREAM_COMPUTE, map, age, 9, sel, prot, n, n_slots, k,
				      lsc, lbc, nlc, hc);
	int rg = gpu->ops->cache_diff(gpu, KB_STREAM_COMPUTE, mg, ag, 9, g_in(sel, sb),
				      g_in(prot, n * 4), n, n_slots, k, lsg, lbg, nlg, hg);
	if (rc_pair(rc, rg)) {
		cmp_i32("map", map, g_get(mg, mb), mb / 4);
		if (aged)
			cmp_i32("age", age, g_get(ag, mb), mb / 4);
		cmp_i32("load_slot", lsc, g_get(lsg, sb), sb / 4);
		cmp_i32("load_block", lbc, g_get(lbg, sb), sb / 4);
		cmp_i32("n_loads", nlc, g_get(nlg, n * 4), n);
		cmp_i32("hits", hc, g_get(hg, n * 4), n);
	}
	case_end();
}

/* Gather from registered host memory (h2d) or scatter into it (!h2d). */
/* How t_copy_units moves the units: copy_units, copy_units_dma (the index lists in host
 * memory) or copy_units_bulk. */
enum cu_how { CU_KERNEL, CU_DMA, CU_BULK };

/* n_ctas: copy_units_dma's streams. runs (n <= n_dst): destinations 0..n-1 in order and sources
 * mostly following on, so copy_units_dma merges runs of units into single copies. */
static void t_copy_units(uint32_t n, size_t unit, uint32_t n_src, uint32_t n_dst, uint32_t n_ctas,
			 bool h2d, enum cu_how how, bool runs)
{
	static const char *const names[] = {"copy_units", "copy_units_dma", "copy_units_bulk"};
	case_begin(names[how], "n=%u unit=%zu src_units=%u dst_units=%u %s=%u h2d=%d runs=%d", n,
		   unit, n_src, n_dst, how == CU_DMA ? "streams" : "ctas", n_ctas, h2d, runs);
	size_t srcb = unit * n_src, dstb = unit * n_dst;
	uint8_t *src = h_alloc(srcb);
	int32_t *di = h_alloc(n * 4), *si = h_alloc(n * 4);
	uint8_t *perm = h_alloc(n_dst);
	for (size_t i = 0; i < srcb; i++)
		src[i] = (uint8_t)rng();
	for (uint32_t i = 0; i < n; i++) { /* distinct destinations, a few skipped entries */
		if (runs) {
			bool on = i && irand(0, 3) && si[i - 1] + 1 < (int32_t)n_src;
			di[i] = irand(0, 15) ? (int32_t)i : -1;
			si[i] = on ? si[i - 1] + 1 : irand(0, (int)n_src - 1);
			continue;
		}
		int32_t d = irand(0, (int)n_dst - 1);
		while (perm[d])
			d = (d + 1) % (int32_t)n_dst;
		perm[d] = 1;
		di[i] = irand(0, 9) ? d : -1;
		si[i] = irand(0, 9) ? irand(0, (int)n_src - 1) : -1;
	}
	uint8_t *dc = h_out(dstb);
	int rc = cpu->ops->copy_units(cpu, KB_STREAM_COPY, dc, src, di, si, n, unit, n_ctas);
	/* the host side is page-aligned memory registered with the CUDA backend */
	size_t hb = h2d ? srcb : dstb;
	void *host = aligned_alloc(4096, (hb + 4095) / 4096 * 4096), *hdev = NULL;
	if (!host)
		die("aligned_alloc", -ENOMEM);
	if (h2d)
		memcpy(host, src, srcb);
	else
		memset(host, 0xff, dstb);
	int e = gpu->ops->host_register(gpu, host, (hb + 4095) / 4096 * 4096, &hdev);
	if (e) {
		fail("host_register: %d", e);
		free(host);
		case_end();
		return;
	}
	void *gs = h2d ? hdev : g_in(src, srcb), *gd = h2d ? g_out(dstb) : hdev;
	int32_t *gdi = how == CU_DMA ? di : g_in(di, n * 4),
		*gsi = how == CU_DMA ? si : g_in(si, n * 4);
	/* the inputs and the poisoned output are staged on the compute stream: on the device
	 * before the copy stream's launch reads or writes them */
	int se = gpu->ops->sync(gpu, KB_STREAM_COMPUTE);
	if (se)
		die("sync compute stream", se);
	int rg =
	    how == CU_DMA
		? gpu->ops->copy_units_dma(gpu, KB_STREAM_COPY, gd, gs, gdi, gsi, n, unit, n_ctas)
		: (how == CU_BULK ? gpu->ops->copy_units_bulk : gpu->ops->copy_units)(
		      gpu, KB_STREAM_COPY, gd, gs, gdi, gsi, n, unit, n_ctas);
	if (rc_pair(rc, rg)) {
		se = gpu->ops->sync(gpu, KB_STREAM_COPY);
		if (se)
			fail("sync copy stream: %d", se);
		cmp_bytes("dst", dc, h2d ? g_get(gd, dstb) : host, dstb);
	}
	gpu->ops->sync(gpu, KB_STREAM_COPY);
	gpu->ops->host_unregister(gpu, host);
	free(host);
	case_end();
}

static void t_kv_pack(uint32_t t0, uint32_t t, uint32_t n_kv, uint32_t d, uint32_t block)
{
	case_begin("kv_pack", "t0=%u t=%u n_kv=%u d=%u block=%u", t0, t, n_kv, d, block);
	uint32_t ld = n_kv * d + 8, nbt = (t0 + t - 1) / block - t0 / block + 1;
	uint32_t n_units = nbt * n_kv + 3;
	size_t ub = (size_t)n_units * 2 * block * d * 2;
	uint16_t *k = h_alloc((size_t)t * ld * 2), *v = h_alloc((size_t)t * ld * 2);
	int32_t *ui = h_alloc((size_t)nbt * n_kv * 4);
	fill_bf16(k, (size_t)t * ld, -2, 2);
	fill_bf16(v, (size_t)t * ld, -2, 2);
	for (uint32_t i = 0; i < nbt * n_kv; i++) /* a permutation, reversed */
		ui[i] = (int32_t)(nbt * n_kv - 1 - i);
	uint16_t *uc = h_out(ub), *ug = g_out(ub);
	int rc = cpu->ops->kv_pack(cpu, KB_STREAM_COMPUTE, uc, ui, k, v, ld, t0, t, n_kv, d, block);
	int rg = gpu->ops->kv_pack(gpu, KB_STREAM_COMPUTE, ug, g_in(ui, (size_t)nbt * n_kv * 4),
				   g_in(k, (size_t)t * ld * 2), g_in(v, (size_t)t * ld * 2), ld, t0,
				   t, n_kv, d, block);
	if (rc_pair(rc, rg))
		cmp_bytes("units", uc, g_get(ug, ub), ub);
	case_end();
}

static void t_kv_store(uint32_t b, uint32_t n_kv, uint32_t d, uint32_t block)
{
	case_begin("kv_store", "b=%u n_kv=%u d=%u block=%u", b, n_kv, d, block);
	uint32_t ld = n_kv * d + 8, n_units = b * n_kv;
	size_t ub = (size_t)n_units * 2 * block * d * 2;
	uint16_t *k = h_alloc((size_t)b * ld * 2), *v = h_alloc((size_t)b * ld * 2);
	int32_t *ui = h_alloc(n_units * 4), *pos = h_alloc(b * 4);
	fill_bf16(k, (size_t)b * ld, -2, 2);
	fill_bf16(v, (size_t)b * ld, -2, 2);
	for (uint32_t i = 0; i < n_units; i++)
		ui[i] = (int32_t)((i * 7) % n_units);
	for (uint32_t i = 0; i < b; i++)
		pos[i] = irand(0, 100000);
	uint16_t *uc = h_out(ub), *ug = g_out(ub);
	int rc =
	    cpu->ops->kv_store(cpu, KB_STREAM_COMPUTE, uc, ui, k, v, ld, pos, b, n_kv, d, block);
	int rg = gpu->ops->kv_store(gpu, KB_STREAM_COMPUTE, ug, g_in(ui, n_units * 4),
				    g_in(k, (size_t)b * ld * 2), g_in(v, (size_t)b * ld * 2), ld,
				    g_in(pos, b * 4), b, n_kv, d, block);
	if (rc_pair(rc, rg))
		cmp_bytes("units", uc, g_get(ug, ub), ub);
	case_end();
}

static void t_sel_units(uint32_t b, uint32_t n_kv, uint32_t n_slots, uint32_t k, bool with_map)
{
	case_begin("sel_units", "b=%u n_kv=%u n_slots=%u k=%u map=%d", b, n_kv, n_slots, k,
		   with_map);
	uint32_t n = b * n_kv, block = 64;
	size_t sb = (size_t)n * k * 4, mb = (size_t)n * n_slots * 4;
	int32_t *sel = h_alloc(sb), *map = h_alloc(mb), *tok = h_alloc(b * 4);
	for (uint32_t i = 0; i < b; i++)
		tok[i] = irand(1, (int)(n_slots * block));
	for (size_t i = 0; i < mb / 4; i++)
		map[i] = irand(-1, (int)n_slots + 3);
	for (uint32_t i = 0; i < n; i++) {
		int32_t m = irand(-1, 2);
		for (uint32_t j = 0; j < k; j++) {
			sel[(size_t)i * k + j] = m < (int32_t)(n_slots + 4) ? m : -1;
			m += irand(1, 3);
		}
	}
	int32_t *ic = h_out(sb), *lc = h_out(sb), *ig = g_out(sb), *lg = g_out(sb);
	int rc = cpu->ops->sel_units(cpu, KB_STREAM_COMPUTE, ic, lc, sel, with_map ? map : NULL,
				     tok, n, n_kv, n_slots, k, block);
	int rg = gpu->ops->sel_units(gpu, KB_STREAM_COMPUTE, ig, lg, g_in(sel, sb),
				     with_map ? g_in(map, mb) : NULL, g_in(tok, b * 4), n, n_kv,
				     n_slots, k, block);
	if (rc_pair(rc, rg)) {
		cmp_i32("unit_idx", ic, g_get(ig, sb), sb / 4);
		cmp_i32("unit_len", lc, g_get(lg, sb), sb / 4);
	}
	case_end();
}

/* sel_units2 (two tables from one read of each map row) against two CPU sel_units calls. */
static void t_sel_units2(uint32_t b, uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t k_b,
			 bool with_map)
{
	case_begin("sel_units2", "b=%u n_kv=%u n_slots=%u k=%u k_b=%u map=%d", b, n_kv, n_slots, k,
		   k_b, with_map);
	uint32_t n = b * n_kv, block = 64;
	size_t sa = (size_t)n * k * 4, sb = (size_t)n * k_b * 4, mb = (size_t)n * n_slots * 4;
	int32_t *sel = h_alloc(sa), *sel_b = h_alloc(sb), *map = h_alloc(mb), *tok = h_alloc(b * 4);
	for (uint32_t i = 0; i < b; i++)
		tok[i] = irand(1, (int)(n_slots * block));
	/* slots hold distinct blocks, as cache_diff keeps them */
	for (size_t i = 0; i < mb / 4; i++)
		map[i] = (int32_t)(i % n_slots);
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t s = n_slots; s > 1; s--) { /* a shuffle, some slots empty */
			uint32_t t = (uint32_t)irand(0, (int)s - 1);
			int32_t v = map[(size_t)i * n_slots + s - 1];
			map[(size_t)i * n_slots + s - 1] = map[(size_t)i * n_slots + t];
			map[(size_t)i * n_slots + t] = v;
		}
		for (uint32_t s = 0; s < n_slots; s++)
			if (irand(0, 9) == 0)
				map[(size_t)i * n_slots + s] = -1;
		for (uint32_t j = 0; j < k; j++)
			sel[(size_t)i * k + j] = irand(-1, (int)n_slots + 2);
		for (uint32_t j = 0; j < k_b; j++) /* the tail: the sequence's last block */
			sel_b[(size_t)i * k_b + j] =
			    j ? irand(-1, (int)n_slots) : (tok[i / n_kv] - 1) / (int32_t)block;
	}
	uint32_t slots = with_map ? n_slots : n_slots + 4;
	int32_t *ic = h_out(sa), *lc = h_out(sa), *icb = h_out(sb), *lcb = h_out(sb);
	int32_t *ig = g_out(sa), *lg = g_out(sa), *igb = g_out(sb), *lgb = g_out(sb);
	int rc = cpu->ops->sel_units(cpu, KB_STREAM_COMPUTE, ic, lc, sel, with_map ? map : NULL,
				     tok, n, n_kv, slots, k, block);
	if (!rc)
		rc = cpu->ops->sel_units(cpu, KB_STREAM_COMPUTE, icb, lcb, sel_b,
					 with_map ? map : NULL, tok, n, n_kv, slots, k_b, block);
	int rg = gpu->ops->sel_units2(gpu, KB_STREAM_COMPUTE, ig, lg, g_in(sel, sa), k, igb, lgb,
				      g_in(sel_b, sb), k_b, with_map ? g_in(map, mb) : NULL,
				      g_in(tok, b * 4), n, n_kv, slots, block);
	if (rc_pair(rc, rg)) {
		cmp_i32("unit_idx", ic, g_get(ig, sa), sa / 4);
		cmp_i32("unit_len", lc, g_get(lg, sa), sa / 4);
		cmp_i32("idx_b", icb, g_get(igb, sb), sb / 4);
		cmp_i32("len_b", lcb, g_get(lgb, sb), sb / 4);
	}
	case_end();
}

static void t_resolve_loads(uint32_t n, uint32_t n_slots, uint32_t k, uint32_t n_blocks)
{
	case_begin("resolve_loads", "n=%u n_slots=%u k=%u blocks=%u", n, n_slots, k, n_blocks);
	size_t lb = (size_t)n * k * 4, wb = (size_t)n * n_blocks * 8;
	int32_t *ls = h_alloc(lb), *lbk = h_alloc(lb), *nl = h_alloc(n * 4);
	uint64_t *words = h_alloc(wb);
	int64_t *base = h_alloc(n * 8);
	for (uint32_t i = 0; i < n; i++) {
		base[i] = (int64_t)(n - 1 - i) * n_blocks;
		nl[i] = irand(0, (int)k);
		for (uint32_t j = 0; j < k; j++) {
			ls[(size_t)i * k + j] =
			    j < (uint32_t)nl[i] ? irand(0, (int)n_slots - 1) : -1;
			lbk[(size_t)i * k + j] =
			    j < (uint32_t)nl[i] ? irand(0, (int)n_blocks - 1) : -1;
		}
	}
	for (size_t i = 0; i < wb / 8; i++)
		words[i] = ((uint64_t)irand(0, 3) << 56) | (uint32_t)irand(0, 1 << 20);
	int32_t zero = 0, *mc = h_alloc(4), *mg = g_in(&zero, 4);
	int32_t *dc = h_out(lb), *sc = h_out(lb), *dg = g_out(lb), *sg = g_out(lb);
	int rc = cpu->ops->resolve_loads(cpu, KB_STREAM_COMPUTE, dc, sc, mc, ls, lbk, nl, words,
					 base, n, n_slots, k);
	int rg = gpu->ops->resolve_loads(gpu, KB_STREAM_COMPUTE, dg, sg, mg, g_in(ls, lb),
					 g_in(lbk, lb), g_in(nl, n * 4), g_in(words, wb),
					 g_in(base, n * 8), n, n_slots, k);
	if (rc_pair(rc, rg)) {
		cmp_i32("dst_idx", dc, g_get(dg, lb), lb / 4);
		cmp_i32("src_idx", sc, g_get(sg, lb), lb / 4);
		cmp_i32("misses", mc, g_get(mg, 4), 1);
	}
	case_end();
}

/* ---------------------------------------------------------------- attention */

static void t_attn_decode(uint32_t b, uint32_t n_kv, uint32_t group, uint32_t d, uint32_t n_units,
			  uint32_t block)
{
	case_begin("attn_decode", "b=%u n_kv=%u group=%u d=%u n_units=%u block=%u", b, n_kv, group,
		   d, n_units, block);
	uint32_t n_q = n_kv * group, ldq = n_q * d + 8, ldo = n_q * d + 16, pool = 2 * n_units + 1;
	size_t ub = (size_t)pool * 2 * block * d * 2, tb = (size_t)b * n_kv * n_units * 4;
	size_t ob = (size_t)b * ldo * 2;
	uint16_t *q = h_alloc((size_t)b * ldq * 2), *units = h_alloc(ub);
	int32_t *ui = h_alloc(tb), *ul = h_alloc(tb);
	fill_bf16(q, (size_t)b * ldq, -2, 2);
	fill_bf16(units, ub / 2, -1, 1);
	for (size_t i = 0; i < tb / 4; i++) {
		ui[i] = irand(0, 7) ? irand(0, (int)pool - 1) : -1;
		ul[i] = irand(0, 3) ? (int32_t)block : irand(0, (int)block);
	}
	if (b > 1) /* one sequence with nothing to attend to */
		for (uint32_t i = 0; i < n_kv * n_units; i++)
			ui[(size_t)(b - 1) * n_kv * n_units + i] = -1;
	uint16_t *oc = h_out(ob), *og = g_out(ob);
	float scale = 1.0f / sqrtf((float)d);
	size_t wc = cpu->ops->attn_decode_work(cpu, b, n_q, n_units, d);
	size_t wg = gpu->ops->attn_decode_work(gpu, b, n_q, n_units, d);
	int rc = cpu->ops->attn_decode(cpu, KB_STREAM_COMPUTE, oc, ldo, q, ldq, units, ui, ul,
				       n_units, b, n_q, n_kv, d, block, scale, h_alloc(wc));
	int rg = gpu->ops->attn_decode(
	    gpu, KB_STREAM_COMPUTE, og, ldo, g_in(q, (size_t)b * ldq * 2), ldq, g_in(units, ub),
	    g_in(ui, tb), g_in(ul, tb), n_units, b, n_q, n_kv, d, block, scale, g_alloc(wg));
	if (rc_pair(rc, rg))
		cmp_bf16("out", oc, g_get(og, ob), ob / 2, BF_RTOL, 4e-3);
	case_end();
}

static void t_attn_decode_dense(uint32_t b, uint32_t n_kv, uint32_t group, uint32_t d,
				uint32_t t_cap)
{
	case_begin("attn_decode_dense", "b=%u n_kv=%u group=%u d=%u t_cap=%u", b, n_kv, group, d,
		   t_cap);
	uint32_t n_q = n_kv * group, ldq = n_q * d, ldo = n_q * d + 8;
	size_t cb = (size_t)b * n_kv * t_cap * d * 2, ob = (size_t)b * ldo * 2;
	uint16_t *q = h_alloc((size_t)b * ldq * 2), *kc = h_alloc(cb), *vc = h_alloc(cb);
	int32_t *len = h_alloc(b * 4);
	fill_bf16(q, (size_t)b * ldq, -2, 2);
	fill_bf16(kc, cb / 2, -1, 1);
	fill_bf16(vc, cb / 2, -1, 1);
	for (uint32_t i = 0; i < b; i++)
		len[i] = i == 0 ? (int32_t)t_cap : i == 1 ? 1 : irand(1, (int)t_cap);
	uint16_t *oc = h_out(ob), *og = g_out(ob);
	float scale = 1.0f / sqrtf((float)d);
	int rc = cpu->ops->attn_decode_dense(cpu, KB_STREAM_COMPUTE, oc, ldo, q, ldq, kc, vc, t_cap,
					     len, b, n_q, n_kv, d, scale, NULL);
	int rg = gpu->ops->attn_decode_dense(
	    gpu, KB_STREAM_COMPUTE, og, ldo, g_in(q, (size_t)b * ldq * 2), ldq, g_in(kc, cb),
	    g_in(vc, cb), t_cap, g_in(len, b * 4), b, n_q, n_kv, d, scale, NULL);
	if (rc_pair(rc, rg))
		cmp_bf16("out", oc, g_get(og, ob), ob / 2, BF_RTOL, 4e-3);
	case_end();
}

static void t_attn_prefill(uint32_t t, uint32_t p0, uint32_t n_kv, uint32_t group, uint32_t d,
			   bool sparse, uint32_t topk)
{
	const uint32_t block = 64;
	case_begin("attn_prefill", "t=%u p0=%u n_kv=%u group=%u d=%u sparse=%d topk=%u", t, p0,
		   n_kv, group, d, sparse, topk);
	uint32_t n_q = n_kv * group, ldq = n_q * d + 8, ldkv = n_kv * d + 8, ldo = n_q * d;
	uint32_t n_qb = (t + block - 1) / block;
	size_t qb_ = (size_t)t * ldq * 2, kvb = (size_t)(p0 + t) * ldkv * 2,
	       ob = (size_t)t * ldo * 2;
	size_t sb = (size_t)n_kv * n_qb * topk * 4;
	uint16_t *q = h_alloc(qb_), *k = h_alloc(kvb), *v = h_alloc(kvb);
	int32_t *sel = h_alloc(sb);
	fill_bf16(q, qb_ / 2, -2, 2);
	fill_bf16(k, kvb / 2, -1, 1);
	fill_bf16(v, kvb / 2, -1, 1);
	for (uint32_t g = 0; g < n_kv; g++)
		for (uint32_t qb = 0; qb < n_qb; qb++) { /* own block + random earlier ones */
			uint32_t own = p0 / block + qb, got = 0;
			int32_t *row = sel + ((size_t)g * n_qb + qb) * topk;
			for (uint32_t m = 0; m <= own && got < topk; m++)
				if (m == own || irand(0, 2) == 0 || own + 1 - m <= topk - got)
					row[got++] = (int32_t)m;
			for (; got < topk; got++)
				row[got] = -1;
		}
	uint16_t *oc = h_out(ob), *og = g_out(ob);
	float scale = 1.0f / sqrtf((float)d);
	int rc = cpu->ops->attn_prefill(cpu, KB_STREAM_COMPUTE, oc, ldo, q, ldq, k, v, ldkv, t, p0,
					n_q, n_kv, d, scale, sparse ? sel : NULL, topk, block);
	int rg = gpu->ops->attn_prefill(gpu, KB_STREAM_COMPUTE, og, ldo, g_in(q, qb_), ldq,
					g_in(k, kvb), g_in(v, kvb), ldkv, t, p0, n_q, n_kv, d,
					scale, sparse ? g_in(sel, sb) : NULL, topk, block);
	if (rc_pair(rc, rg))
		cmp_bf16("out", oc, g_get(og, ob), ob / 2, BF_RTOL, 4e-3);
	case_end();
}

/* ---------------------------------------------------------------- memory and events */

static void t_events(void)
{
	case_begin("events", "record/elapsed/wait");
	struct kb_event *a = NULL, *b = NULL;
	float ms = -1;
	n_check++;
	if (gpu->ops->event_new(gpu, &a) || gpu->ops->event_new(gpu, &b)) {
		fail("event_new");
		return;
	}
	void *buf = g_out(1 << 24);
	int e = gpu->ops->event_record(gpu, a, KB_STREAM_COMPUTE);
	e = e ? e : gpu->ops->memset(gpu, buf, 0, 1 << 24, KB_STREAM_COMPUTE);
	e = e ? e : gpu->ops->event_record(gpu, b, KB_STREAM_COMPUTE);
	e = e ? e : gpu->ops->stream_wait(gpu, KB_STREAM_COPY, b);
	e = e ? e : gpu->ops->sync(gpu, KB_STREAM_COPY);
	e = e ? e : gpu->ops->event_sync(gpu, b);
	e = e ? e : gpu->ops->event_elapsed(gpu, a, b, &ms);
	if (e || !(ms >= 0))
		fail("rc %d elapsed %g", e, ms);
	size_t fr = 0, tot = 0;
	if (gpu->ops->mem_info(gpu, &fr, &tot) || !tot || fr > tot)
		fail("mem_info free %zu total %zu", fr, tot);
	gpu->ops->event_free(gpu, a);
	gpu->ops->event_free(gpu, b);
	case_end();
}

/* ---------------------------------------------------------------- main */

int main(void)
{
	/* SPARDA_CONFORMANCE_SELF=1 runs the harness CPU against CPU (a check of the test). */
	bool self = getenv("SPARDA_CONFORMANCE_SELF") != NULL;
	if (!self && !kb_cuda_available()) {
		printf("test_conformance: no CUDA device, skipped\n");
		return 77;
	}
	const char *env = getenv("SPARDA_TEST_SEED");
	uint64_t seed =
	    env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 1000003ull ^ (uint64_t)getpid();
	rng_state = seed;
	printf("test_conformance: seed=%llu (replay with SPARDA_TEST_SEED=%llu)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	fflush(stdout);
	struct kb_opts oc = {.kind = KB_KIND_CPU, .cpu_threads = 0};
	struct kb_opts og = {.kind = self ? KB_KIND_CPU : KB_KIND_CUDA, .device = 0};
	int e = kb_open(&oc, &cpu);
	if (e)
		die("kb_open cpu", e);
	e = kb_open(&og, &gpu);
	if (e)
		die("kb_open cuda", e);

	t_events();
	t_embed(7, 320, 1000);
	t_embed(1, 4096, 50);
	t_rmsnorm(5, 4096, true);
	t_rmsnorm(3, 100, false);
	t_rmsnorm(2, 1000, true);
	t_residual(6, 777);
	t_rope(9, 3, 128, 131072, 1.0f);
	t_rope(4, 2, 64, 4000, 1.2f);
	t_swiglu(6, 1000);
	t_swiglu(1, 14336);
	t_argmax(5, 50000);
	t_argmax(3, 77);
	t_gemm(5, 300, 256, true, 0.0f);
	t_gemm(64, 128, 512, false, 0.0f);
	t_gemm(33, 96, 128, true, 0.5f);
	t_gemm(7, 200, 64, false, 1.0f);

	t_ck_prefill(1, 2, 128);
	t_ck_prefill(31, 2, 128);
	t_ck_prefill(32, 1, 64);
	t_ck_prefill(100, 2, 128);
	t_ck_prefill(257, 4, 64);
	t_ck_append(5, 2, 128);
	t_ck_append(8, 1, 64);

	for (int orig = 0; orig < 2; orig++) {
		t_score_decode(3, 2, 16, 128, 70, orig);
		t_score_decode(4, 2, 4, 128, 1100, orig);
		t_score_decode(2, 8, 1, 64, 300, orig);
		t_score_decode(2, 1, 16, 256, 600, orig);
	}
	t_select_decode(4, 2, &sp_small, 1000);
	t_select_decode(5, 2, &sp_paper, 131072);
	t_select_decode(3, 8, &sp_paper, 9000);
	t_select_decode(2, 2, &sp_small, 200);
	t_select_decode(1, 2, &sp_paper, 1000000); /* rows past 12288 blocks: global pooling */
	if (!self) { /* switches read at each call: SIMT original-selector scores, top-k pooling
		      * from global memory (the defaults are tensor cores and shared memory) */
		setenv("SPARDA_KCUDA_SCORE", "simt", 1);
		setenv("SPARDA_KCUDA_TOPK", "global", 1);
		cur_variant = "(score=simt topk=global)";
		for (int orig = 0; orig < 2; orig++) {
			t_score_decode(3, 2, 16, 128, 70, orig);
			t_score_decode(4, 2, 4, 128, 1100, orig);
			t_score_decode(2, 8, 1, 64, 300, orig);
			t_score_decode(2, 1, 16, 256, 600, orig);
			t_score_decode(2, 2, 8, 32, 333, orig);
			t_score_decode(17, 2, 16, 128, 2049, orig);
		}
		t_select_decode(4, 2, &sp_small, 1000);
		t_select_decode(5, 2, &sp_paper, 131072);
		t_select_decode(3, 8, &sp_paper, 9000);
		t_select_decode(2, 2, &sp_small, 200);
		for (int orig = 0; orig < 2; orig++) {
			t_select_prefill(300, 0, 2, 4, 128, orig, &sp_small);
			t_select_prefill(700, 2048, 2, 1, 128, orig, &sp_paper);
		}
		unsetenv("SPARDA_KCUDA_SCORE");
		unsetenv("SPARDA_KCUDA_TOPK");
		cur_variant = "";
	}
	for (int orig = 0; orig < 2; orig++) {
		t_select_prefill(64, 0, 2, 4, 64, orig, &sp_small);
		t_select_prefill(300, 0, 2, 4, 128, orig, &sp_small);
		t_select_prefill(200, 128, 2, 16, 64, orig, &sp_small);
		t_select_prefill(1100, 640, 1, 4, 128, orig, &sp_small);
		t_select_prefill(700, 2048, 2, 1, 128, orig, &sp_paper);
	}

	for (int aged = 0; aged <= 1; aged++) {
		t_cache_diff(6, 16, 12, 40, aged);
		t_cache_diff(4, 97, 96, 300, aged);
		t_cache_diff(3, 8, 8, 12, aged);
	}
	t_cache_diff(16, 192, 96, 2048, true); /* the decode's shape, twice the slots */
	t_cache_diff(2, 6000, 96, 20000, true); /* past 48 KiB of shared memory: the opt-in */
	for (int h2d = 1; h2d >= 0; h2d--) {
		for (int how = CU_KERNEL; how <= CU_BULK; how++) {
			bool dma = how == CU_DMA; /* its last argument: streams, not CTAs */
			t_copy_units(50, 32768, 80, 60, dma ? 1 : 16, h2d, how, false);
			t_copy_units(200, 4096 + 16, 300, 256, dma ? 2 : 32, h2d, how, false);
			t_copy_units(3, 256, 5, 4, 0, h2d, how, false);
		}
		/* the bulk copy's chunks: a unit of two chunks and a rest, more units than stages
		 * per CTA, one CTA for everything */
		t_copy_units(40, 2 * 8192 + 48, 64, 48, 8, h2d, CU_BULK, false);
		t_copy_units(100, 32768, 120, 110, 1, h2d, CU_BULK, false);
		/* the copy engines: merged runs of units, on one stream and split over 2, 3 and 4;
		 * more streams than units; many small units */
		for (uint32_t ns = 1; ns <= KB_DMA_STREAMS_MAX; ns++)
			t_copy_units(120, 32768, 200, 128, ns, h2d, CU_DMA, true);
		t_copy_units(2, 4096, 8, 4, 4, h2d, CU_DMA, true);
		t_copy_units(300, 256, 300, 300, 3, h2d, CU_DMA, true);
	}
	t_kv_pack(0, 130, 2, 128, 64);
	t_kv_pack(70, 1, 2, 128, 64);
	t_kv_pack(37, 200, 4, 64, 64);
	t_kv_store(5, 2, 128, 64);
	t_kv_store(3, 8, 64, 32);
	t_sel_units(3, 2, 24, 12, true);
	t_sel_units(2, 2, 40, 16, false);
	t_sel_units(4, 2, 97, 96, true);    /* the decode's cache: top-96 in 97 slots */
	t_sel_units(8, 8, 97, 1, true);	    /* the tail block's slot */
	t_sel_units(2, 3, 200, 150, true);  /* more entries than one pass of the CTA */
	t_sel_units(2, 1, 13000, 40, true); /* a map row too large for shared memory */
	t_sel_units2(1, 2, 97, 96, 1, true);	/* the decode's table and tail slot, B=1 */
	t_sel_units2(8, 8, 97, 96, 1, true);	/* B=8 of 8 KV heads */
	t_sel_units2(2, 3, 200, 150, 3, true);	/* more entries than one pass of the CTA */
	t_sel_units2(2, 1, 13000, 40, 1, true); /* too large for shared memory: two launches */
	t_sel_units2(3, 2, 40, 16, 1, false);	/* the resident layout */
	t_resolve_loads(5, 16, 12, 64);

	for (uint32_t gq = 1; gq <= 16; gq *= 4) {
		t_attn_decode(1, 2, gq, 128, 7, 64);
		t_attn_decode(3, 2, gq, 128, 20, 64);
		t_attn_decode(9, 2, gq, 64, 33, 64);
		t_attn_decode_dense(3, 2, gq, 128, 300);
		t_attn_decode_dense(2, 1, gq, 64, 64);
		t_attn_prefill(100, 0, 2, gq, 128, false, 0);
		t_attn_prefill(70, 37, 2, gq, 64, false, 0);
		t_attn_prefill(200, 128, 2, gq, 128, true, 5);
		t_attn_prefill(64, 0, 1, gq, 64, true, 3);
	}
	t_attn_decode(2, 1, 32, 128, 10, 64);
	t_attn_decode(2, 2, 4, 128, 6, 128);
	t_attn_decode(2, 2, 4, 256, 5, 64);    /* d 256: the fp32 kernel even by default */
	t_attn_decode(40, 2, 16, 128, 96, 64); /* batch >= 32: 16 tiles per split */
	if (!self) { /* the fp32 decode kernel, selected by SPARDA_KCUDA_ATTN=simt */
		kb_destroy(gpu);
		setenv("SPARDA_KCUDA_ATTN", "simt", 1);
		cur_variant = "(simt)";
		e = kb_open(&og, &gpu);
		if (e)
			die("kb_open cuda (simt)", e);
		for (uint32_t gq = 1; gq <= 16; gq *= 4) {
			t_attn_decode(1, 2, gq, 128, 7, 64);
			t_attn_decode(3, 2, gq, 128, 20, 64);
			t_attn_decode(9, 2, gq, 64, 33, 64);
			t_attn_decode(2, 2, gq, 256, 5, 64);
			t_attn_decode_dense(3, 2, gq, 128, 300);
			t_attn_decode_dense(2, 1, gq, 64, 64);
		}
		t_attn_decode(2, 1, 32, 128, 10, 64);
		t_attn_decode(2, 2, 4, 128, 6, 128);
		t_attn_decode(64, 2, 16, 128, 96, 64);
		/* the serial split merge (SPARDA_KCUDA_MERGE=serial), on the default kernels */
		kb_destroy(gpu);
		unsetenv("SPARDA_KCUDA_ATTN");
		setenv("SPARDA_KCUDA_MERGE", "serial", 1);
		cur_variant = "(merge=serial)";
		e = kb_open(&og, &gpu);
		if (e)
			die("kb_open cuda (merge=serial)", e);
		for (uint32_t gq = 1; gq <= 16; gq *= 4) {
			t_attn_decode(1, 2, gq, 128, 7, 64);
			t_attn_decode(1, 2, gq, 128, 96, 64);
			t_attn_decode(9, 2, gq, 64, 33, 64);
			t_attn_decode_dense(3, 2, gq, 128, 300);
		}
		t_attn_decode(40, 2, 16, 128, 96, 64);
		/* each tensor-core split kernel (SPARDA_KCUDA_ADK: register-staged, cp.async with 2
		 * and 3 stages, register-staged at 128 registers) with the parallel and the fused
		 * merge (both read at each call) */
		static const char *adk[4] = {"reg", "cp2", "cp3", "reg4"};
		static char vname[48];
		for (int v = 0; v < 8; v++) {
			setenv("SPARDA_KCUDA_ADK", adk[v / 2], 1);
			setenv("SPARDA_KCUDA_MERGE", v & 1 ? "fused" : "par", 1);
			snprintf(vname, sizeof(vname), "(adk=%s merge=%s)", adk[v / 2],
				 v & 1 ? "fused" : "par");
			cur_variant = vname;
			for (uint32_t gq = 1; gq <= 16; gq *= 4) {
				t_attn_decode(1, 2, gq, 128, 7, 64);
				t_attn_decode(3, 2, gq, 128, 20, 64);
				t_attn_decode(1, 2, gq, 128, 96, 64);
				t_attn_decode(9, 2, gq, 64, 33, 64);
				t_attn_decode_dense(3, 2, gq, 128, 300);
				t_attn_decode_dense(2, 1, gq, 64, 64);
			}
			t_attn_decode(2, 1, 32, 128, 10, 64);
			t_attn_decode(2, 2, 4, 128, 6, 128);
			t_attn_decode(2, 2, 4, 64, 5, 192);
			t_attn_decode(40, 2, 16, 128, 96, 64);
			t_attn_decode(64, 2, 16, 128, 96, 64);
			t_attn_decode_dense(1, 1, 4, 128, 8192); /* 128 splits: merge kernel */
		}
		unsetenv("SPARDA_KCUDA_ADK");
		unsetenv("SPARDA_KCUDA_MERGE");
		cur_variant = "";
	}
	/* the default kernel (on Hopper the wgmma one), then the FlashAttention-2 kernel
	 * (SPARDA_KCUDA_PREFILL=fa2, read per call) with 64- and 128-query CTAs */
	for (int v = 0; v < (self ? 1 : 3); v++) {
		if (v >= 1)
			setenv("SPARDA_KCUDA_PREFILL", "fa2", 1);
		if (v == 2)
			setenv("SPARDA_KCUDA_FA2_BM", "128", 1);
		cur_variant = v == 0 ? "" : v == 1 ? "(prefill=fa2)" : "(fa2 bm=128)";
		t_attn_prefill(1, 0, 2, 4, 128, false, 0);
		t_attn_prefill(300, 0, 2, 4, 256, false, 0);
		t_attn_prefill(260, 64, 2, 4, 128, true, 96);
		t_attn_prefill(1, 77, 2, 4, 128, false, 0);
		t_attn_prefill(520, 200, 2, 4, 128, false, 0);
		t_attn_prefill(330, 0, 1, 2, 32, false, 0); /* d 32: the WMMA kernel */
		t_attn_prefill(130, 0, 2, 16, 128, true, 4);
		if (self)
			continue;
		for (uint32_t gq = 1; gq <= 16; gq *= 4) {
			t_attn_prefill(100, 0, 2, gq, 128, false, 0);
			t_attn_prefill(70, 37, 2, gq, 64, false, 0);
			t_attn_prefill(200, 128, 2, gq, 128, true, 5);
			t_attn_prefill(130, 64, 1, gq, 64, true, 3);
		}
		t_attn_prefill(300, 64, 2, 2, 64, false, 0);
		t_attn_prefill(1000, 24, 2, 16, 128, false, 0);
		t_attn_prefill(700, 0, 2, 16, 128, true, 6);
	}
	unsetenv("SPARDA_KCUDA_PREFILL");
	unsetenv("SPARDA_KCUDA_FA2_BM");
	cur_variant = "";
	if (!self) { /* the WMMA kernel (SPARDA_KCUDA_PREFILL=wmma, read per call) */
		setenv("SPARDA_KCUDA_PREFILL", "wmma", 1);
		cur_variant = "(prefill=wmma)";
		for (uint32_t gq = 1; gq <= 16; gq *= 4) {
			t_attn_prefill(100, 0, 2, gq, 128, false, 0);
			t_attn_prefill(70, 37, 2, gq, 64, false, 0);
			t_attn_prefill(200, 128, 2, gq, 128, true, 5);
			t_attn_prefill(64, 0, 1, gq, 64, true, 3);
		}
		t_attn_prefill(1, 0, 2, 4, 128, false, 0);
		t_attn_prefill(1, 77, 2, 4, 128, false, 0);
		t_attn_prefill(520, 200, 2, 4, 128, false, 0);
		t_attn_prefill(260, 64, 2, 4, 128, true, 96);
		t_attn_prefill(330, 0, 1, 2, 32, false, 0); /* d 32: the WMMA fallback */
		unsetenv("SPARDA_KCUDA_PREFILL");
		cur_variant = "";
	}

	kb_destroy(gpu);
	kb_destroy(cpu);
	printf("test_conformance: %d checks, %d failures (seed=%llu)\n", n_check, n_fail,
	       (unsigned long long)seed);
	return n_fail ? 1 : 0;
}
