/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of block ranking: max-pooling of entry scores into blocks, forced sink and
 * local blocks, top-k with the contract's tie rule (shared with select_decode), and the
 * prefill selection, which scores every query block against the causal compressed keys.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* a ranks below b: lower score, or the same score and a higher block id. */
static bool rank_worse(struct cpu_rank a, struct cpu_rank b)
{
	return a.score < b.score || (!(a.score > b.score) && a.id > b.id);
}

/* Restore the heap (worst element at the root) below node i. */
static void heap_down(struct cpu_rank *h, uint32_t n, uint32_t i)
{
	for (;;) {
		uint32_t w = i, l = 2 * i + 1, r = 2 * i + 2;
		struct cpu_rank t;

		if (l < n && rank_worse(h[l], h[w]))
			w = l;
		if (r < n && rank_worse(h[r], h[w]))
			w = r;
		if (w == i)
			return;
		t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/* Max of the entries in block m's pooling window; -inf when none is valid (NaN ignored). */
static float pool_block(const float *s, uint32_t n_entries, uint32_t m, const struct kb_sparse *sp)
{
	int64_t lo = (int64_t)sp->pool_stride * m - sp->pool_pad, hi = lo + sp->pool_kernel;
	float best = -INFINITY;

	lo = lo < 0 ? 0 : lo;
	hi = hi > n_entries ? n_entries : hi;
	for (int64_t j = lo; j < hi; j++)
		if (s[j] > best)
			best = s[j];
	return best;
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	return (x > y) - (x < y);
}

void cpu_select_row(int32_t *sel, const float *s, uint32_t n_entries, uint32_t n_blocks,
		    const struct kb_sparse *sp, struct cpu_rank *heap)
{
	uint32_t qb = n_blocks - 1, nf = 0, nh = 0, cap;

	/* Forced blocks first: they are selected whatever the scores (even +inf ties). */
	for (uint32_t m = 0; m < n_blocks; m++)
		if (m < sp->sink || (uint64_t)m + sp->local >= qb)
			sel[nf++] = (int32_t)m;
	cap = sp->topk - nf;
	for (uint32_t m = 0; m < n_blocks && cap; m++) {
		struct cpu_rank r = {.id = (int32_t)m};

		if (m < sp->sink || (uint64_t)m + sp->local >= qb)
			continue;
		r.score = pool_block(s, n_entries, m, sp);
		if (nh < cap) {
			heap[nh++] = r;
			if (nh == cap)
				for (uint32_t i = cap / 2 + 1; i-- > 0;)
					heap_down(heap, nh, i);
		} else if (rank_worse(heap[0], r)) {
			heap[0] = r;
			heap_down(heap, nh, 0);
		}
	}
	for (uint32_t i = 0; i < nh; i++)
		sel[nf + i] = heap[i].id;
	qsort(sel, nf + nh, sizeof(*sel), cmp_i32);
	for (uint32_t i = nf + nh; i < sp->topk; i++)
		sel[i] = -1;
}

size_t cpu_select_prefill_work(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
			       const struct kb_sparse *sp)
{
	return 0; /* scratch is allocated per call */
}

/* One select_prefill problem; ckt holds the keys of every head transposed to fp32. */
struct sel_prefill {
	int32_t *sel;
	const uint16_t *q;
	const float *ckt; /* [n_kv, d, ne_max] */
	const struct kb_sparse *sp;
	uint32_t ld, t, p0, n_q, n_kv, d, ne_max, n_qb;
	bool original;
	float scale;
};

/* Per-thread scratch: queries, scores, group sums, block-query maxima, the top-k heap. */
struct sel_scratch {
	float *qf, *s, *gsum, *best;
	struct cpu_rank *heap;
};

/* best[j] = max over the queries of the block that may use entry j of their score of j. */
static void sel_block_scores(const struct sel_prefill *sp, struct sel_scratch *w, uint32_t g,
			     uint32_t q0, uint32_t qn, uint32_t ne_last)
{
	uint32_t group = sp->n_q / sp->n_kv, d = sp->d, lds = ne_last;
	const float *ckt = sp->ckt + (size_t)g * d * sp->ne_max;
	float *rows = sp->original ? w->gsum : w->s;

	if (sp->original)
		memset(w->gsum, 0, (size_t)qn * lds * sizeof(float));
	for (uint32_t h = 0; h < group; h++) {
		for (uint32_t i = 0; i < qn; i++)
			cpu_row_to_f32(
			    w->qf + (size_t)i * d,
			    sp->q + (size_t)(q0 + i) * sp->ld + (size_t)(g * group + h) * d, d);
		cpu_mm_tn(w->s, lds, w->qf, ckt, sp->ne_max, qn, ne_last, d,
			  sp->original ? sp->scale : 1.0f);
		for (uint32_t i = 0; sp->original && i < qn; i++) {
			uint32_t ne = kb_ck_entries(sp->sp, sp->p0 + q0 + i + 1);
			float *z = w->s + (size_t)i * lds, mx = -INFINITY, sum = 0.0f;

			for (uint32_t j = 0; j < ne; j++)
				mx = z[j] > mx ? z[j] : mx;
			for (uint32_t j = 0; j < ne; j++) {
				z[j] = expf(z[j] - mx);
				sum += z[j];
			}
			for (uint32_t j = 0; j < ne; j++)
				w->gsum[(size_t)i * lds + j] += z[j] / sum;
		}
	}
	for (uint32_t j = 0; j < ne_last; j++)
		w->best[j] = -INFINITY;
	for (uint32_t i = 0; i < qn; i++) {
		uint32_t ne = kb_ck_entries(sp->sp, sp->p0 + q0 + i + 1);

		for (uint32_t j = 0; j < ne; j++)
			if (rows[(size_t)i * lds + j] > w->best[j])
				w->best[j] = rows[(size_t)i * lds + j];
	}
}

static void sel_task(const struct sel_prefill *sp, struct sel_scratch *w, uint32_t g, uint32_t qb)
{
	uint32_t block = sp->sp->block, q0 = qb * block;
	uint32_t qn = sp->t - q0 < block ? sp->t - q0 : block;
	uint32_t ne_last = kb_ck_entries(sp->sp, sp->p0 + q0 + qn);
	uint32_t own = sp->p0 / block + qb;

	sel_block_scores(sp, w, g, q0, qn, ne_last);
	cpu_select_row(sp->sel + ((size_t)g * sp->n_qb + qb) * sp->sp->topk, w->best, ne_last,
		       own + 1, sp->sp, w->heap);
}

static int sel_run(struct kb *kb, const struct sel_prefill *sp)
{
	uint32_t block = sp->sp->block, n_tasks = sp->n_kv * sp->n_qb;
	size_t nf = (size_t)block * sp->d + 2 * (size_t)block * sp->ne_max + sp->ne_max;
	int err = 0;

#pragma omp parallel num_threads(cpu_threads(kb)) if (n_tasks > 1)
	{
		struct sel_scratch w = {.qf = malloc(nf * sizeof(float))};

		w.heap = malloc((size_t)sp->sp->topk * sizeof(*w.heap));
		if (w.qf) {
			w.s = w.qf + (size_t)block * sp->d;
			w.gsum = w.s + (size_t)block * sp->ne_max;
			w.best = w.gsum + (size_t)block * sp->ne_max;
		}
#pragma omp for schedule(dynamic)
		for (uint32_t task = 0; task < n_tasks; task++)
			if (w.qf && w.heap)
				sel_task(sp, &w, task / sp->n_qb, task % sp->n_qb);
		if (!w.qf || !w.heap) {
#pragma omp atomic write
			err = -ENOMEM;
		}
		free(w.heap);
		free(w.qf);
	}
	return err;
}

int cpu_select_prefill(struct kb *kb, enum kb_stream s, int32_t *sel, const uint16_t *q,
		       uint32_t ld, uint32_t t, uint32_t p0, const uint16_t *ck, uint32_t cap,
		       uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale,
		       const struct kb_sparse *sp, void *work)
{
	struct sel_prefill pp = {
	    .sel = sel,
	    .q = q,
	    .sp = sp,
	    .ld = ld,
	    .t = t,
	    .p0 = p0,
	    .n_q = n_q,
	    .n_kv = n_kv,
	    .d = d,
	    .original = original,
	    .scale = scale,
	};
	float *ckt;
	int err;

	if (!cpu_stream_ok(s) || !sel || !q || !ck || !d || !n_kv || !n_q || n_q % n_kv ||
	    (!original && n_q != n_kv) || ld < (uint64_t)n_q * d || !cpu_sparse_ok(sp) ||
	    p0 % sp->block || (uint64_t)p0 + t > INT32_MAX || kb_ck_entries(sp, p0 + t) > cap)
		return -EINVAL;
	if (!t)
		return 0;
	pp.ne_max = kb_ck_entries(sp, p0 + t);
	pp.n_qb = (t + sp->block - 1) / sp->block;
	ckt = malloc(((size_t)n_kv * d * pp.ne_max + 1) * sizeof(float));
	if (!ckt)
		return -ENOMEM;
	for (uint32_t g = 0; g < n_kv; g++)
		for (uint32_t j = 0; j < pp.ne_max; j++)
			for (uint32_t c = 0; c < d; c++)
				ckt[((size_t)g * d + c) * pp.ne_max + j] =
				    kb_bf16_to_f32(ck[((size_t)g * cap + j) * d + c]);
	pp.ckt = ckt;
	err = sel_run(kb, &pp);
	free(ckt);
	return err;
}
