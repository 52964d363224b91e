/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference attention: decode over a unit table, dense decode over a contiguous cache and
 * (block-sparse or dense) causal prefill. All three share one fp32 online softmax over key
 * chunks; the rows of a chunk are the query heads of one KV group (times the queries of a
 * prefill tile), so each K/V chunk is widened to fp32 once per group.
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* Keys per chunk of dense attention (decode over a contiguous cache, dense prefill). */
#define DENSE_CHUNK 64u

/* Below this many multiply-adds a product runs in plain loops: a BLAS call costs more. */
#define MM_BLAS_MIN (1u << 15)

void cpu_mm_tn(float *s, uint32_t lds, const float *a, const float *bt, uint32_t ldb, uint32_t rows,
	       uint32_t cols, uint32_t d, float alpha)
{
	if (!rows || !cols)
		return;
	if ((uint64_t)rows * cols * d >= MM_BLAS_MIN) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)d,
			    alpha, a, (int)d, bt, (int)ldb, 0.0f, s, (int)lds);
		return;
	}
	for (uint32_t r = 0; r < rows; r++) {
		float *sr = s + (size_t)r * lds;
		const float *ar = a + (size_t)r * d;

		for (uint32_t j = 0; j < cols; j++)
			sr[j] = 0.0f;
		for (uint32_t c = 0; c < d; c++) {
			const float *b = bt + (size_t)c * ldb;
			float x = ar[c];

			for (uint32_t j = 0; j < cols; j++)
				sr[j] += x * b[j];
		}
		for (uint32_t j = 0; j < cols; j++)
			sr[j] *= alpha;
	}
}

/* Online-softmax state of `rows` query rows; one allocation per thread. */
struct flash {
	uint32_t rows, d, chunk;
	float *q;      /* [rows, d] queries */
	float *m, *l;  /* [rows] running max and denominator */
	float *acc;    /* [rows, d] unnormalised output */
	float *s;      /* [rows, chunk] scores of the current chunk */
	float *kt;     /* [d, chunk] keys of the chunk, transposed */
	float *vf;     /* [chunk, d] values of the chunk */
	uint32_t *lim; /* [rows] keys of the chunk a row may see */
};

static struct flash *flash_new(uint32_t rows, uint32_t d, uint32_t chunk)
{
	size_t nf = (size_t)rows * (2 * d + 2 + chunk) + 2 * (size_t)chunk * d;
	struct flash *f = malloc(sizeof(*f) + nf * sizeof(float) + rows * sizeof(uint32_t));

	if (!f)
		return NULL;
	f->rows = rows;
	f->d = d;
	f->chunk = chunk;
	f->q = (float *)(f + 1);
	f->m = f->q + (size_t)rows * d;
	f->l = f->m + rows;
	f->acc = f->l + rows;
	f->s = f->acc + (size_t)rows * d;
	f->kt = f->s + (size_t)rows * chunk;
	f->vf = f->kt + (size_t)chunk * d;
	f->lim = (uint32_t *)(f->vf + (size_t)chunk * d);
	return f;
}

static void flash_reset(struct flash *f, uint32_t rows)
{
	f->rows = rows;
	for (uint32_t r = 0; r < rows; r++) {
		f->m[r] = -INFINITY;
		f->l[r] = 0.0f;
	}
	memset(f->acc, 0, (size_t)rows * f->d * sizeof(float));
}

/* Widen a chunk of kn keys (transposed) and values, rows ld elements apart. */
static void flash_load(struct flash *f, const uint16_t *k, const uint16_t *v, uint32_t ld,
		       uint32_t kn)
{
	for (uint32_t j = 0; j < kn; j++) {
		const uint16_t *kr = k + (size_t)j * ld;

		for (uint32_t c = 0; c < f->d; c++)
			f->kt[(size_t)c * f->chunk + j] = kb_bf16_to_f32(kr[c]);
		cpu_row_to_f32(f->vf + (size_t)j * f->d, v + (size_t)j * ld, f->d);
	}
}

/*
 * Fold the loaded chunk into the state; row r sees the first f->lim[r] keys. When every row
 * sees the same keys (decode, and a prefill chunk wholly in every query's past) and the product
 * is large enough, the probabilities go through one GEMM with the values; otherwise (the causal
 * diagonal, small products) each row sums only the keys it sees, so a masked key's value never
 * reaches a row's output.
 */
static void flash_step(struct flash *f, uint32_t kn, float scale)
{
	uint32_t cols = 0, least = UINT32_MAX;
	bool full;

	for (uint32_t r = 0; r < f->rows; r++) {
		cols = f->lim[r] > cols ? f->lim[r] : cols;
		least = f->lim[r] < least ? f->lim[r] : least;
	}
	if (!cols)
		return;
	full = least == cols && (uint64_t)f->rows * cols * f->d >= MM_BLAS_MIN;
	cpu_mm_tn(f->s, f->chunk, f->q, f->kt, f->chunk, f->rows, cols, f->d, scale);
	for (uint32_t r = 0; r < f->rows; r++) {
		float *sr = f->s + (size_t)r * f->chunk, *acc = f->acc + (size_t)r * f->d;
		float mx = -INFINITY, corr, sum = 0.0f;

		for (uint32_t j = 0; j < f->lim[r]; j++)
			mx = sr[j] > mx ? sr[j] : mx;
		mx = mx > f->m[r] ? mx : f->m[r];
		if (mx == -INFINITY) {
			memset(sr, 0, cols * sizeof(float)); /* a row of no weight in the GEMM */
			continue;
		}
		corr = expf(f->m[r] - mx);
		for (uint32_t c = 0; c < f->d; c++)
			acc[c] *= corr;
		for (uint32_t j = 0; j < f->lim[r]; j++) {
			float p = expf(sr[j] - mx);

			sum += p;
			if (full)
				sr[j] = p;
			else
				for (uint32_t c = 0; c < f->d; c++)
					acc[c] += p * f->vf[(size_t)j * f->d + c];
		}
		f->l[r] = f->l[r] * corr + sum;
		f->m[r] = mx;
	}
	if (full)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)f->rows, (int)f->d,
			    (int)cols, 1.0f, f->s, (int)f->chunk, f->vf, (int)f->d, 1.0f, f->acc,
			    (int)f->d);
}

/* Row r of the result into out (bf16); a row that saw no key gives zeros. */
static void flash_store(const struct flash *f, uint32_t r, uint16_t *out)
{
	const float *acc = f->acc + (size_t)r * f->d;
	float inv = f->l[r] > 0 ? 1.0f / f->l[r] : 0.0f;

	for (uint32_t c = 0; c < f->d; c++)
		out[c] = kb_f32_to_bf16(acc[c] * inv);
}

static void flash_all_see(struct flash *f, uint32_t kn)
{
	for (uint32_t r = 0; r < f->rows; r++)
		f->lim[r] = kn;
}

/* Load query heads [h0, h0 + rows) of one token row into the state. */
static void flash_load_q(struct flash *f, const uint16_t *q, uint32_t h0, uint32_t rows)
{
	for (uint32_t r = 0; r < rows; r++)
		cpu_row_to_f32(f->q + (size_t)r * f->d, q + (size_t)(h0 + r) * f->d, f->d);
}

static bool heads_ok(uint32_t n_q, uint32_t n_kv, uint32_t d)
{
	return n_q && n_kv && d && n_q % n_kv == 0;
}

int cpu_attn_decode(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
		    const uint16_t *q, uint32_t ld_q, const uint16_t *units,
		    const int32_t *unit_idx, const int32_t *unit_len, uint32_t n_units, uint32_t b,
		    uint32_t n_q, uint32_t n_kv, uint32_t d, uint32_t block, float scale,
		    void *work)
{
	uint32_t group;
	int err = 0;

	if (!cpu_stream_ok(s) || !out || !q || !units || !unit_idx || !unit_len || !block ||
	    !heads_ok(n_q, n_kv, d) || ld_q < (uint64_t)n_q * d || ld_o < (uint64_t)n_q * d)
		return -EINVAL;
	for (size_t i = 0; i < (size_t)b * n_kv * n_units; i++)
		if (unit_idx[i] >= 0 && (unit_len[i] < 0 || (uint32_t)unit_len[i] > block))
			return -EINVAL;
	group = n_q / n_kv;
#pragma omp parallel num_threads(cpu_threads(kb)) if (b * n_kv > 1)
	{
		struct flash *f = flash_new(group, d, block);

#pragma omp for schedule(dynamic)
		for (uint32_t task = 0; task < b * n_kv; task++) {
			uint32_t bi = task / n_kv, g = task % n_kv;

			if (!f)
				continue;
			flash_reset(f, group);
			flash_load_q(f, q + (size_t)bi * ld_q, g * group, group);
			for (uint32_t u = 0; u < n_units; u++) {
				size_t e = (size_t)task * n_units + u;
				const uint16_t *unit;

				if (unit_idx[e] < 0 || !unit_len[e])
					continue;
				unit = units + (size_t)unit_idx[e] * 2 * block * d;
				flash_load(f, unit, unit + (size_t)block * d, d, unit_len[e]);
				flash_all_see(f, unit_len[e]);
				flash_step(f, unit_len[e], scale);
			}
			for (uint32_t r = 0; r < group; r++)
				flash_store(f, r,
					    out + (size_t)bi * ld_o + (size_t)(g * group + r) * d);
		}
		if (!f) {
#pragma omp atomic write
			err = -ENOMEM;
		}
		free(f);
	}
	return err;
}

size_t cpu_attn_decode_work(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_units, uint32_t d)
{
	return 0;
}

int cpu_attn_decode_dense(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			  const uint16_t *q, uint32_t ld_q, const uint16_t *kc, const uint16_t *vc,
			  uint32_t t_cap, const int32_t *kv_len, uint32_t b, uint32_t n_q,
			  uint32_t n_kv, uint32_t d, float scale, void *work)
{
	uint32_t group;
	int err = 0;

	if (!cpu_stream_ok(s) || !out || !q || !kc || !vc || !kv_len || !heads_ok(n_q, n_kv, d) ||
	    ld_q < (uint64_t)n_q * d || ld_o < (uint64_t)n_q * d)
		return -EINVAL;
	for (uint32_t i = 0; i < b; i++)
		if (kv_len[i] < 0 || (uint32_t)kv_len[i] > t_cap)
			return -EINVAL;
	group = n_q / n_kv;
#pragma omp parallel num_threads(cpu_threads(kb)) if (b * n_kv > 1)
	{
		struct flash *f = flash_new(group, d, DENSE_CHUNK);

#pragma omp for schedule(dynamic)
		for (uint32_t task = 0; task < b * n_kv; task++) {
			uint32_t bi = task / n_kv, g = task % n_kv, len = (uint32_t)kv_len[bi];
			size_t base = (size_t)task * t_cap * d;

			if (!f)
				continue;
			flash_reset(f, group);
			flash_load_q(f, q + (size_t)bi * ld_q, g * group, group);
			for (uint32_t k0 = 0; k0 < len; k0 += DENSE_CHUNK) {
				uint32_t kn = len - k0 < DENSE_CHUNK ? len - k0 : DENSE_CHUNK;
				size_t o = base + (size_t)k0 * d;

				flash_load(f, kc + o, vc + o, d, kn);
				flash_all_see(f, kn);
				flash_step(f, kn, scale);
			}
			for (uint32_t r = 0; r < group; r++)
				flash_store(f, r,
					    out + (size_t)bi * ld_o + (size_t)(g * group + r) * d);
		}
		if (!f) {
#pragma omp atomic write
			err = -ENOMEM;
		}
		free(f);
	}
	return err;
}

/* One prefill problem; a tile is `tile` consecutive queries of one KV group. */
struct prefill {
	uint16_t *out;
	const uint16_t *q, *k, *v;
	const int32_t *sel;
	uint32_t ld_o, ld_q, ld_kv, t, p0, n_q, n_kv, d, topk, block, tile, n_tiles;
	float scale;
};

/* Fold keys [k0, k0 + kn) into the tile's rows (head-major: row = head * qn + query). */
static void prefill_chunk(struct flash *f, const struct prefill *pp, uint32_t g, uint32_t q0,
			  uint32_t qn, uint32_t k0, uint32_t kn)
{
	const uint16_t *k = pp->k + (size_t)k0 * pp->ld_kv + (size_t)g * pp->d;
	const uint16_t *v = pp->v + (size_t)k0 * pp->ld_kv + (size_t)g * pp->d;

	for (uint32_t r = 0; r < f->rows; r++) {
		int64_t see = (int64_t)pp->p0 + q0 + r % qn - k0 + 1;

		f->lim[r] = see <= 0 ? 0 : see >= kn ? kn : (uint32_t)see;
	}
	if (!f->lim[f->rows - 1])
		return; /* the tile's last query (the latest position) sees nothing either */
	flash_load(f, k, v, pp->ld_kv, kn);
	flash_step(f, kn, pp->scale);
}

static void prefill_tile(struct flash *f, const struct prefill *pp, uint32_t g, uint32_t tile)
{
	uint32_t group = pp->n_q / pp->n_kv, q0 = tile * pp->tile;
	uint32_t qn = pp->t - q0 < pp->tile ? pp->t - q0 : pp->tile;
	uint32_t n_keys = pp->p0 + q0 + qn; /* causal: keys up to the tile's last query */

	flash_reset(f, group * qn);
	for (uint32_t h = 0; h < group; h++)
		for (uint32_t i = 0; i < qn; i++)
			cpu_row_to_f32(f->q + ((size_t)h * qn + i) * pp->d,
				       pp->q + (size_t)(q0 + i) * pp->ld_q +
					   (size_t)(g * group + h) * pp->d,
				       pp->d);
	if (pp->sel) {
		const int32_t *row = pp->sel + ((size_t)g * pp->n_tiles + tile) * pp->topk;

		for (uint32_t j = 0; j < pp->topk; j++) {
			uint64_t k0 = (uint64_t)row[j] * pp->block;

			if (row[j] < 0 || k0 >= n_keys)
				continue;
			prefill_chunk(f, pp, g, q0, qn, (uint32_t)k0,
				      n_keys - k0 < pp->block ? n_keys - (uint32_t)k0 : pp->block);
		}
	} else {
		for (uint32_t k0 = 0; k0 < n_keys; k0 += DENSE_CHUNK)
			prefill_chunk(f, pp, g, q0, qn, k0,
				      n_keys - k0 < DENSE_CHUNK ? n_keys - k0 : DENSE_CHUNK);
	}
	for (uint32_t h = 0; h < group; h++)
		for (uint32_t i = 0; i < qn; i++)
			flash_store(f, h * qn + i,
				    pp->out + (size_t)(q0 + i) * pp->ld_o +
					(size_t)(g * group + h) * pp->d);
}

static int prefill_run(struct kb *kb, const struct prefill *pp)
{
	uint32_t group = pp->n_q / pp->n_kv, n_tasks = pp->n_kv * pp->n_tiles;
	uint32_t chunk = pp->sel && pp->block > DENSE_CHUNK ? pp->block : DENSE_CHUNK;
	int err = 0;

#pragma omp parallel num_threads(cpu_threads(kb)) if (n_tasks > 1)
	{
		struct flash *f = flash_new(group * pp->tile, pp->d, chunk);

#pragma omp for schedule(dynamic)
		for (uint32_t task = 0; task < n_tasks; task++)
			if (f)
				prefill_tile(f, pp, task / pp->n_tiles, task % pp->n_tiles);
		if (!f) {
#pragma omp atomic write
			err = -ENOMEM;
		}
		free(f);
	}
	return err;
}

int cpu_attn_prefill(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
		     const uint16_t *q, uint32_t ld_q, const uint16_t *k, const uint16_t *v,
		     uint32_t ld_kv, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
		     uint32_t d, float scale, const int32_t *sel, uint32_t topk, uint32_t block)
{
	struct prefill pp = {
	    .out = out,
	    .q = q,
	    .k = k,
	    .v = v,
	    .sel = sel,
	    .ld_o = ld_o,
	    .ld_q = ld_q,
	    .ld_kv = ld_kv,
	    .t = t,
	    .p0 = p0,
	    .n_q = n_q,
	    .n_kv = n_kv,
	    .d = d,
	    .topk = topk,
	    .block = block,
	    .scale = scale,
	};

	if (!cpu_stream_ok(s) || !out || !q || !k || !v || !heads_ok(n_q, n_kv, d) ||
	    ld_q < (uint64_t)n_q * d || ld_o < (uint64_t)n_q * d || ld_kv < (uint64_t)n_kv * d ||
	    (uint64_t)p0 + t > INT32_MAX)
		return -EINVAL;
	/* Sparse query blocks are aligned to absolute positions, hence p0 % block == 0. */
	if (sel && (!block || !topk || p0 % block))
		return -EINVAL;
	if (!t)
		return 0;
	pp.tile = sel ? block : DENSE_CHUNK;
	pp.n_tiles = (t + pp.tile - 1) / pp.tile;
	return prefill_run(kb, &pp);
}
