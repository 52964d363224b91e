/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU backend, block selection: compressed keys against explicit means (and decode appends
 * against prefill), entry scores against double-precision formulas, top-k against a brute-force
 * sort (ties, forced blocks, -1 padding), prefill selection against a per-query naive
 * selection, and the properties and exact slot order of cache_diff.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test_cpu_common.h"

static const struct kb_sparse sp_small = {
    .block = 16,
    .ck_kernel = 8,
    .ck_stride = 4,
    .pool_kernel = 5,
    .pool_stride = 4,
    .pool_pad = 1,
    .sink = 1,
    .local = 3,
    .topk = 8,
};
/* No sink and no local window: only the own block is forced, so ranking decides the rest. */
static const struct kb_sparse sp_edge = {
    .block = 16,
    .ck_kernel = 8,
    .ck_stride = 4,
    .pool_kernel = 5,
    .pool_stride = 4,
    .pool_pad = 1,
    .sink = 0,
    .local = 0,
    .topk = 3,
};
static const struct kb_sparse sp_paper = {
    .block = 64,
    .ck_kernel = 32,
    .ck_stride = 16,
    .pool_kernel = 5,
    .pool_stride = 4,
    .pool_pad = 1,
    .sink = 1,
    .local = 32,
    .topk = 96,
};

static void test_ck_prefill(void **state)
{
	struct kb *kb = test_cpu();
	const uint32_t n_kv = 3, d = 16, ld = n_kv * d + 5, cap = 40;
	const uint32_t ts[] = {5, 8, 9, 12, 45, 64, 101};

	for (size_t ti = 0; ti < sizeof(ts) / sizeof(ts[0]); ti++) {
		uint32_t t = ts[ti], n_e = kb_ck_entries(&sp_small, t), kern = sp_small.ck_kernel;
		uint16_t *k = test_alloc((size_t)t * ld * 2), *ck = test_alloc(n_kv * cap * d * 2);
		uint16_t *ring = test_alloc(n_kv * kern * d * 2);

		test_fill_bf16(k, (size_t)t * ld, -2, 2);
		memset(ck, 0xff, n_kv * cap * d * 2); /* poison: NaN patterns */
		memset(ring, 0xff, n_kv * kern * d * 2);
		assert_int_equal(
		    kb->ops->ck_prefill(kb, 0, ck, cap, ring, k, ld, t, n_kv, d, &sp_small), 0);
		for (uint32_t g = 0; g < n_kv; g++) {
			for (uint32_t j = 0; j < cap; j++) {
				for (uint32_t c = 0; c < d; c++) {
					uint16_t got = ck[((size_t)g * cap + j) * d + c];
					double sum = 0;

					if (j >= n_e) {
						assert_int_equal(got, 0xffff);
						continue;
					}
					for (uint32_t p = j * 4; p < j * 4 + kern; p++)
						sum +=
						    kb_bf16_to_f32(k[(size_t)p * ld + g * d + c]);
					TEST_CLOSE(kb_bf16_to_f32(got), sum / kern, 1e-3, 4e-3,
						   "ck t=%u g=%u j=%u c=%u\n", t, g, j, c);
				}
			}
			for (uint32_t p = t > kern ? t - kern : 0; p < t; p++)
				assert_memory_equal(ring + ((size_t)g * kern + p % kern) * d,
						    k + (size_t)p * ld + g * d, d * 2);
		}
		if (n_e)
			assert_int_equal(kb->ops->ck_prefill(kb, 0, ck, n_e - 1, ring, k, ld, t,
							     n_kv, d, &sp_small),
					 -EINVAL);
		free(k), free(ck), free(ring);
	}
	kb_destroy(kb);
}

/* Prefill t0[b] tokens, then append one token at a time: ck and ring equal a full prefill. */
static void test_ck_append_matches_prefill(void **state)
{
	struct kb *kb = test_cpu();
	const struct kb_sparse *sp = &sp_paper;
	const uint32_t b = 3, n_kv = 2, d = 8, ld = n_kv * d, T = 300, cap = 20;
	const uint32_t kern = sp->ck_kernel;
	uint32_t t0[3] = {0, 31, 77};
	size_t ck_sz = (size_t)n_kv * cap * d, ring_sz = (size_t)n_kv * kern * d;
	uint16_t *keys = test_alloc((size_t)b * T * ld * 2), *ck = test_alloc(b * ck_sz * 2);
	uint16_t *ring = test_alloc(b * ring_sz * 2), *ref_ck = test_alloc(ck_sz * 2);
	uint16_t *ref_ring = test_alloc(ring_sz * 2), *step = test_alloc(b * ld * 2);
	int32_t pos[3];

	t0[0] = (uint32_t)test_int(0, 10);
	test_fill_bf16(keys, (size_t)b * T * ld, -3, 3);
	for (uint32_t i = 0; i < b; i++)
		assert_int_equal(kb->ops->ck_prefill(kb, 0, ck + i * ck_sz, cap, ring + i * ring_sz,
						     keys + (size_t)i * T * ld, ld, t0[i], n_kv, d,
						     sp),
				 0);
	for (uint32_t p = 0; p < T; p++) {
		for (uint32_t i = 0; i < b; i++) {
			int32_t pp = (int32_t)p;

			if (p >= t0[i])
				assert_int_equal(kb->ops->ck_append(kb, 0, ck + i * ck_sz, cap,
								    ring + i * ring_sz,
								    keys + ((size_t)i * T + p) * ld,
								    ld, &pp, 1, n_kv, d, sp),
						 0);
		}
	}
	for (uint32_t i = 0; i < b; i++) {
		uint32_t n_e = kb_ck_entries(sp, T);

		memset(ref_ck, 0, ck_sz * 2);
		assert_int_equal(kb->ops->ck_prefill(kb, 0, ref_ck, cap, ref_ring,
						     keys + (size_t)i * T * ld, ld, T, n_kv, d, sp),
				 0);
		for (uint32_t g = 0; g < n_kv; g++)
			assert_memory_equal(ck + i * ck_sz + (size_t)g * cap * d,
					    ref_ck + (size_t)g * cap * d, (size_t)n_e * d * 2);
		assert_memory_equal(ring + i * ring_sz, ref_ring, ring_sz * 2);
	}
	/* The batched form: two sequences in one call land in their own [b] slices. */
	memcpy(ck + ck_sz, ck, ck_sz * 2);
	memcpy(ring + ring_sz, ring, ring_sz * 2);
	memcpy(step, keys + (size_t)(T - 1) * ld, ld * 2);
	memcpy(step + ld, keys + (size_t)(T - 1) * ld, ld * 2);
	/* The next position that completes an entry. */
	pos[0] = (int32_t)T;
	while ((pos[0] + 1 - kern) % sp->ck_stride)
		pos[0]++;
	pos[1] = pos[0];
	assert_int_equal(kb->ops->ck_append(kb, 0, ck, cap, ring, step, ld, pos, 2, n_kv, d, sp),
			 0);
	assert_memory_equal(ck, ck + ck_sz, ck_sz * 2);
	assert_memory_equal(ring, ring + ring_sz, ring_sz * 2);
	pos[0] = -1;
	assert_int_equal(kb->ops->ck_append(kb, 0, ck, cap, ring, step, ld, pos, 1, n_kv, d, sp),
			 -EINVAL);
	free(keys), free(ck), free(ring), free(ref_ck), free(ref_ring), free(step);
	kb_destroy(kb);
}

static void score_case(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d,
		       bool original)
{
	const uint32_t cap = 37, ld = n_q * d + 3, group = n_q / n_kv;
	uint16_t *q = test_alloc((size_t)b * ld * 2),
		 *ck = test_alloc((size_t)b * n_kv * cap * d * 2);
	float *sc = test_alloc((size_t)b * n_kv * cap * 4);
	int32_t *ne = test_alloc(b * 4);
	float scale = 1.0f / sqrtf((float)d);

	test_fill_bf16(q, (size_t)b * ld, -1, 1);
	test_fill_bf16(ck, (size_t)b * n_kv * cap * d, -1, 1);
	for (uint32_t i = 0; i < b; i++)
		ne[i] = i == 0 ? (int32_t)cap : test_int(0, (int)cap);
	memset(sc, 0x7f, (size_t)b * n_kv * cap * 4);
	assert_int_equal(
	    kb->ops->score_decode(kb, 0, sc, q, ld, ck, cap, ne, b, n_q, n_kv, d, original, scale),
	    0);
	for (uint32_t i = 0; i < b; i++) {
		for (uint32_t g = 0; g < n_kv; g++) {
			const float *row = sc + ((size_t)i * n_kv + g) * cap;
			const uint16_t *cg = ck + ((size_t)i * n_kv + g) * cap * d;
			double want[37] = {0};

			for (uint32_t h = 0; h < (original ? group : 1); h++) {
				const uint16_t *qh =
				    q + (size_t)i * ld + (size_t)(g * group + h) * d;
				double z[37], mx = -INFINITY, sum = 0;

				for (int32_t j = 0; j < ne[i]; j++) {
					z[j] = 0;
					for (uint32_t c = 0; c < d; c++)
						z[j] += (double)kb_bf16_to_f32(qh[c]) *
							kb_bf16_to_f32(cg[(size_t)j * d + c]);
					if (!original)
						want[j] = z[j];
					z[j] *= scale;
					mx = fmax(mx, z[j]);
				}
				for (int32_t j = 0; j < ne[i] && original; j++)
					sum += exp(z[j] - mx);
				for (int32_t j = 0; j < ne[i] && original; j++)
					want[j] += exp(z[j] - mx) / sum;
			}
			for (uint32_t j = 0; j < cap; j++) {
				uint32_t bits;

				memcpy(&bits, &row[j], 4);
				if ((int32_t)j >= ne[i])
					assert_int_equal(bits, 0x7f7f7f7fu); /* untouched */
				else
					TEST_CLOSE(row[j], want[j], 1e-5, 1e-4,
						   "score orig=%d nq=%u nkv=%u b=%u g=%u j=%u\n",
						   original, n_q, n_kv, i, g, j);
			}
		}
	}
	free(q), free(ck), free(sc), free(ne);
}

static void test_score_decode(void **state)
{
	struct kb *kb = test_cpu();
	uint16_t x[64] = {0};
	float s[4];
	int32_t ne = 1;

	score_case(kb, 3, 2, 2, 32, false);
	score_case(kb, 2, 1, 1, 64, false);
	score_case(kb, 3, 2, 2, 16, true);  /* GQA 1 */
	score_case(kb, 2, 8, 2, 16, true);  /* GQA 4 */
	score_case(kb, 2, 16, 1, 32, true); /* GQA 16 */
	/* Forecast needs one query head per KV head. */
	assert_int_equal(kb->ops->score_decode(kb, 0, s, x, 64, x, 4, &ne, 1, 4, 2, 16, false, 1),
			 -EINVAL);
	kb_destroy(kb);
}

/* The contract's ranking, by sorting every block: forced first, score desc, id asc. */
struct bf_rank {
	int forced;
	double score;
	int32_t id;
};

static int bf_cmp(const void *pa, const void *pb)
{
	const struct bf_rank *a = pa, *b = pb;

	if (a->forced != b->forced)
		return b->forced - a->forced;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

static int cmp_id(const void *a, const void *b)
{
	return (*(const int32_t *)a > *(const int32_t *)b) -
	       (*(const int32_t *)a < *(const int32_t *)b);
}

/* Brute-force selection of one row from block scores bs[n_blocks] (already pooled). */
static void brute_select(int32_t *out, const double *bs, uint32_t n_blocks,
			 const struct kb_sparse *sp)
{
	struct bf_rank *r = test_alloc((n_blocks + 1) * sizeof(*r));
	uint32_t n = n_blocks < sp->topk ? n_blocks : sp->topk;

	for (uint32_t m = 0; m < n_blocks; m++) {
		r[m].forced = m < sp->sink || m + sp->local >= n_blocks - 1;
		r[m].score = bs[m];
		r[m].id = (int32_t)m;
	}
	qsort(r, n_blocks, sizeof(*r), bf_cmp);
	for (uint32_t i = 0; i < sp->topk; i++)
		out[i] = i < n ? r[i].id : -1;
	qsort(out, n, sizeof(*out), cmp_id);
	free(r);
}

static double brute_pool(const double *s, uint32_t n_e, uint32_t m, const struct kb_sparse *sp)
{
	double best = -INFINITY;

	for (int64_t j = (int64_t)m * sp->pool_stride - sp->pool_pad;
	     j < (int64_t)m * sp->pool_stride - sp->pool_pad + sp->pool_kernel; j++)
		if (j >= 0 && j < n_e && s[j] > best)
			best = s[j];
	return best;
}

static void select_decode_case(struct kb *kb, const struct kb_sparse *sp, uint32_t b, uint32_t n_kv,
			       uint32_t max_blocks, int levels)
{
	uint32_t cap = max_blocks * sp->pool_stride + 8, k = sp->topk;
	float *sc = test_alloc((size_t)b * n_kv * cap * 4);
	int32_t *sel = test_alloc((size_t)b * n_kv * k * 4), *want = test_alloc(k * 4);
	int32_t *ne = test_alloc(b * 4), *nb = test_alloc(b * 4);
	double *bs = test_alloc((max_blocks + 1) * 8), *row = test_alloc(cap * 8);

	for (size_t i = 0; i < (size_t)b * n_kv * cap; i++) /* few levels: many ties */
		sc[i] = levels ? (float)test_int(0, levels) : test_uniform(-5, 5);
	for (uint32_t i = 0; i < b; i++) {
		nb[i] = test_int(0, (int)max_blocks);
		ne[i] = test_int(0, (int)cap);
	}
	nb[0] = (int32_t)max_blocks, ne[0] = (int32_t)cap;
	if (b > 1)
		nb[1] = (int32_t)max_blocks, ne[1] = 0; /* nothing scored: fill by lowest id */
	assert_int_equal(kb->ops->select_decode(kb, 0, sel, sc, cap, ne, nb, b, n_kv, sp), 0);
	for (uint32_t i = 0; i < b; i++) {
		for (uint32_t g = 0; g < n_kv; g++) {
			const int32_t *got = sel + ((size_t)i * n_kv + g) * k;
			uint32_t qb = (uint32_t)nb[i] - 1;

			for (uint32_t j = 0; j < cap; j++)
				row[j] = sc[((size_t)i * n_kv + g) * cap + j];
			for (int32_t m = 0; m < nb[i]; m++)
				bs[m] = brute_pool(row, (uint32_t)ne[i], (uint32_t)m, sp);
			brute_select(want, bs, (uint32_t)nb[i], sp);
			if (memcmp(got, want, k * 4)) {
				for (uint32_t j = 0; j < k; j++)
					print_error("j=%u got %d want %d\n", j, got[j], want[j]);
				fail_msg("select_decode b=%u g=%u n_blocks=%d n_entries=%d", i, g,
					 nb[i], ne[i]);
			}
			/* Forced blocks present, explicitly. */
			for (int32_t m = 0; m < nb[i]; m++) {
				bool hit = false;

				if (!((uint32_t)m < sp->sink || m + sp->local >= qb))
					continue;
				for (uint32_t j = 0; j < k; j++)
					hit |= got[j] == m;
				assert_true(hit);
			}
		}
	}
	free(sc), free(sel), free(want), free(ne), free(nb), free(bs), free(row);
}

static void test_select_decode(void **state)
{
	struct kb *kb = test_cpu();
	struct kb_sparse bad = sp_small;
	float s = 0;
	int32_t one = 1, sel[8];

	for (int rep = 0; rep < 4; rep++) {
		select_decode_case(kb, &sp_small, 4, 2, 30, 3);
		select_decode_case(kb, &sp_small, 3, 1, 6, 0);
		select_decode_case(kb, &sp_paper, 3, 2, 300, 4);
		select_decode_case(kb, &sp_paper, 2, 2, 200, 0);
		select_decode_case(kb, &sp_edge, 3, 2, 40, 2);
	}
	bad.topk = bad.sink + bad.local; /* too small for the forced blocks */
	assert_int_equal(kb->ops->select_decode(kb, 0, sel, &s, 1, &one, &one, 1, 1, &bad),
			 -EINVAL);
	kb_destroy(kb);
}

/* Naive block scores of query block qb: per query, its scores over its usable entries,
 * pooled, then the max over the queries (all in double). */
static void naive_block_scores(double *bs, const uint16_t *q, uint32_t ld, const uint16_t *ck,
			       uint32_t cap, uint32_t t, uint32_t p0, uint32_t qb, uint32_t g,
			       uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale,
			       const struct kb_sparse *sp)
{
	uint32_t group = n_q / n_kv, own = p0 / sp->block + qb;
	double *s = test_alloc((cap + 1) * 8), *z = test_alloc((cap + 1) * 8);

	for (uint32_t m = 0; m <= own; m++)
		bs[m] = -INFINITY;
	for (uint32_t i = qb * sp->block; i < t && i < (qb + 1) * sp->block; i++) {
		uint32_t ne = kb_ck_entries(sp, p0 + i + 1);

		for (uint32_t j = 0; j < ne; j++)
			s[j] = 0;
		for (uint32_t h = 0; h < group; h++) {
			const uint16_t *qh = q + (size_t)i * ld + (size_t)(g * group + h) * d;
			double mx = -INFINITY, sum = 0;

			for (uint32_t j = 0; j < ne; j++) {
				z[j] = 0;
				for (uint32_t c = 0; c < d; c++)
					z[j] += (double)kb_bf16_to_f32(qh[c]) *
						kb_bf16_to_f32(ck[((size_t)g * cap + j) * d + c]);
				z[j] *= original ? scale : 1.0;
				mx = fmax(mx, z[j]);
			}
			for (uint32_t j = 0; j < ne; j++)
				sum += original ? exp(z[j] - mx) : 0;
			for (uint32_t j = 0; j < ne; j++)
				s[j] += original ? exp(z[j] - mx) / sum : z[j];
		}
		for (uint32_t m = 0; m <= own; m++)
			bs[m] = fmax(bs[m], brute_pool(s, ne, m, sp));
	}
	free(s), free(z);
}

static void select_prefill_case(struct kb *kb, const struct kb_sparse *sp, uint32_t t, uint32_t p0,
				uint32_t n_q, uint32_t n_kv, uint32_t d, bool original)
{
	uint32_t ne_max = kb_ck_entries(sp, p0 + t), cap = ne_max + 3, ld = n_q * d + 2;
	uint32_t n_qb = (t + sp->block - 1) / sp->block, k = sp->topk;
	uint16_t *q = test_alloc((size_t)t * ld * 2), *ck = test_alloc((size_t)n_kv * cap * d * 2);
	int32_t *sel = test_alloc((size_t)n_kv * n_qb * k * 4), *want = test_alloc(k * 4);
	double *bs = test_alloc(((p0 + t) / sp->block + 2) * 8);
	float scale = 1.0f / sqrtf((float)d);
	size_t wb = kb->ops->select_prefill_work(kb, t, p0, n_q, n_kv, sp);
	void *work = test_alloc(wb);

	/* Integers: every dot product is exact, so the Forecast selection must match exactly. */
	test_fill_bf16_int(q, (size_t)t * ld, -3, 3);
	test_fill_bf16_int(ck, (size_t)n_kv * cap * d, -3, 3);
	assert_int_equal(kb->ops->select_prefill(kb, 0, sel, q, ld, t, p0, ck, cap, n_q, n_kv, d,
						 original, scale, sp, work),
			 0);
	for (uint32_t g = 0; g < n_kv; g++) {
		for (uint32_t qb = 0; qb < n_qb; qb++) {
			const int32_t *got = sel + ((size_t)g * n_qb + qb) * k;
			uint32_t nb = p0 / sp->block + qb + 1;

			naive_block_scores(bs, q, ld, ck, cap, t, p0, qb, g, n_q, n_kv, d, original,
					   scale, sp);
			brute_select(want, bs, nb, sp);
			for (uint32_t j = 0; j < k; j++) {
				/* Softmax scores are inexact: a swap must be a near tie. */
				if (got[j] == want[j])
					continue;
				if (original && got[j] >= 0 && want[j] >= 0 &&
				    fabs(bs[got[j]] - bs[want[j]]) <= 1e-5)
					continue;
				fail_msg(
				    "select_prefill t=%u p0=%u nq=%u nkv=%u orig=%d g=%u qb=%u "
				    "j=%u: got %d want %d",
				    t, p0, n_q, n_kv, original, g, qb, j, got[j], want[j]);
			}
		}
	}
	free(q), free(ck), free(sel), free(want), free(bs), free(work);
}

/*
 * Entry 15 (tokens [60, 68)) becomes usable at position 67: a query at 66 with a huge dot
 * against it must not lift block 3. All other scores are 0, so ties give {0, 1, own 4}.
 */
static void test_select_prefill_usable_entries(void **state)
{
	struct kb *kb = test_cpu();
	const uint32_t t = 96, d = 8, cap = 24;
	uint16_t *q = test_alloc(t * d * 2), *ck = test_alloc(cap * d * 2);
	int32_t sel[6 * 3];

	for (uint32_t c = 0; c < d; c++) {
		q[66 * d + c] = kb_f32_to_bf16(1.0f);
		ck[15 * d + c] = kb_f32_to_bf16(100.0f);
	}
	assert_int_equal(kb->ops->select_prefill(kb, 0, sel, q, d, t, 0, ck, cap, 1, 1, d, false,
						 1.0f, &sp_edge, NULL),
			 0);
	assert_int_equal(sel[4 * 3 + 0], 0);
	assert_int_equal(sel[4 * 3 + 1], 1);
	assert_int_equal(sel[4 * 3 + 2], 4);
	/* Query 67 may use it: then block 3 wins for query block 4. */
	for (uint32_t c = 0; c < d; c++)
		q[67 * d + c] = kb_f32_to_bf16(1.0f);
	assert_int_equal(kb->ops->select_prefill(kb, 0, sel, q, d, t, 0, ck, cap, 1, 1, d, false,
						 1.0f, &sp_edge, NULL),
			 0);
	assert_int_equal(sel[4 * 3 + 0], 0);
	assert_int_equal(sel[4 * 3 + 1], 3);
	assert_int_equal(sel[4 * 3 + 2], 4);
	free(q), free(ck);
	kb_destroy(kb);
}

static void test_select_prefill(void **state)
{
	struct kb *kb = test_cpu();
	uint16_t x[64] = {0};
	int32_t sel[8];

	select_prefill_case(kb, &sp_small, 100, 0, 2, 2, 16, false);
	select_prefill_case(kb, &sp_small, 37, 32, 3, 3, 8, false); /* chunk at p0 > 0 */
	select_prefill_case(kb, &sp_small, 200, 16, 1, 1, 16, false);
	select_prefill_case(kb, &sp_small, 90, 0, 2, 2, 16, true); /* GQA 1 */
	select_prefill_case(kb, &sp_small, 70, 16, 8, 2, 8, true); /* GQA 4 */
	select_prefill_case(kb, &sp_small, 50, 0, 16, 1, 8, true); /* GQA 16 */
	select_prefill_case(kb, &sp_paper, 700, 64, 2, 2, 16, false);
	for (int rep = 0; rep < 3; rep++) { /* many more blocks than topk */
		select_prefill_case(kb, &sp_edge, 300, 0, 2, 2, 8, false);
		select_prefill_case(kb, &sp_edge, 250, 32, 1, 1, 16, false);
		select_prefill_case(kb, &sp_edge, 200, 0, 8, 2, 8, true);
		select_prefill_case(kb, &sp_edge, 150, 16, 16, 1, 8, true);
	}
	/* p0 must be block aligned. */
	assert_int_equal(kb->ops->select_prefill(kb, 0, sel, x, 8, 4, 3, x, 4, 1, 1, 8, false, 1,
						 &sp_small, NULL),
			 -EINVAL);
	kb_destroy(kb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ck_prefill),
	    cmocka_unit_test(test_ck_append_matches_prefill),
	    cmocka_unit_test(test_score_decode),
	    cmocka_unit_test(test_select_decode),
	    cmocka_unit_test(test_select_prefill),
	    cmocka_unit_test(test_select_prefill_usable_entries),
	};

	test_seed("test_cpu_select");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
