/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU backend, prefill attention: dense causal and block-sparse (causal inside the own block,
 * -1 padding, blocks past the query ignored) against an explicit double-precision softmax;
 * block-sparse with every block selected equals dense; the last prefill row equals decode.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test_cpu_common.h"

struct pf_case {
	uint32_t t, p0, n_q, n_kv, d, block, topk, n_qb, ld_q, ld_kv;
	uint16_t *q, *k, *v, *out, *out2;
	int32_t *sel;
	float scale;
};

static void pf_setup(struct pf_case *c, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
		     uint32_t d, uint32_t block)
{
	uint32_t n_keys = p0 + t;

	*c = (struct pf_case){.t = t,
			      .p0 = p0,
			      .n_q = n_q,
			      .n_kv = n_kv,
			      .d = d,
			      .block = block,
			      .ld_q = n_q * d + 2,
			      .ld_kv = n_kv * d + 1,
			      .scale = 1.0f / sqrtf((float)d)};
	c->n_qb = (t + block - 1) / block;
	c->topk = (n_keys + block - 1) / block + 1; /* room for every block, and padding */
	c->q = test_alloc((size_t)t * c->ld_q * 2);
	c->k = test_alloc((size_t)n_keys * c->ld_kv * 2);
	c->v = test_alloc((size_t)n_keys * c->ld_kv * 2);
	c->out = test_alloc((size_t)t * n_q * d * 2);
	c->out2 = test_alloc((size_t)t * n_q * d * 2);
	c->sel = test_alloc((size_t)n_kv * c->n_qb * c->topk * 4);
	test_fill_bf16(c->q, (size_t)t * c->ld_q, -2, 2);
	test_fill_bf16(c->k, (size_t)n_keys * c->ld_kv, -2, 2);
	test_fill_bf16(c->v, (size_t)n_keys * c->ld_kv, -1, 1);
}

static void pf_free(struct pf_case *c)
{
	free(c->q), free(c->k), free(c->v), free(c->out), free(c->out2), free(c->sel);
}

static int pf_run(struct kb *kb, struct pf_case *c, uint16_t *out, const int32_t *sel)
{
	return kb->ops->attn_prefill(kb, 0, out, c->n_q * c->d, c->q, c->ld_q, c->k, c->v, c->ld_kv,
				     c->t, c->p0, c->n_q, c->n_kv, c->d, c->scale, sel, c->topk,
				     c->block);
}

/* Check out against the naive softmax over the keys each query may see (sel NULL: all). */
static void pf_check(const struct pf_case *c, const uint16_t *out, const int32_t *sel)
{
	uint32_t group = c->n_q / c->n_kv, *keys = test_alloc((c->p0 + c->t) * 4);
	double want[64];

	for (uint32_t i = 0; i < c->t; i++) {
		uint32_t p = c->p0 + i, qb = i / c->block;

		for (uint32_t h = 0; h < c->n_q; h++) {
			uint32_t g = h / group, n = 0;
			const int32_t *row =
			    sel ? sel + ((size_t)g * c->n_qb + qb) * c->topk : NULL;

			for (uint32_t kp = 0; kp <= p; kp++) {
				bool in = !sel;

				for (uint32_t j = 0; sel && j < c->topk; j++)
					in |= row[j] == (int32_t)(kp / c->block);
				if (in)
					keys[n++] = kp;
			}
			test_naive_attend(want, c->q + (size_t)i * c->ld_q + (size_t)h * c->d,
					  c->k + (size_t)g * c->d, c->v + (size_t)g * c->d,
					  c->ld_kv, keys, n, c->d, c->scale);
			test_check_row(out + ((size_t)i * c->n_q + h) * c->d, want, c->d,
				       sel ? "sparse" : "dense", i, h);
		}
	}
	free(keys);
}

static void dense_case(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
		       uint32_t d)
{
	struct pf_case c;

	pf_setup(&c, t, p0, n_q, n_kv, d, 16);
	assert_int_equal(pf_run(kb, &c, c.out, NULL), 0);
	pf_check(&c, c.out, NULL);
	pf_free(&c);
}

static void test_prefill_dense(void **state)
{
	struct kb *kb = test_cpu();

	dense_case(kb, 1, 0, 2, 2, 16);
	dense_case(kb, 70, 0, 2, 2, 32);  /* GQA 1, ragged */
	dense_case(kb, 45, 37, 8, 2, 16); /* GQA 4, p0 not block aligned */
	dense_case(kb, 33, 64, 16, 1, 8); /* GQA 16 */
	kb_destroy(kb);
}

/* Random selection per (g, qb): blocks up to the own one, the own one always, padded with -1;
 * `extra` adds a block past the own one, which causality must ignore. */
static void random_sel(struct pf_case *c, bool all, bool extra)
{
	uint32_t n_blocks = (c->p0 + c->t + c->block - 1) / c->block;

	for (uint32_t g = 0; g < c->n_kv; g++) {
		for (uint32_t qb = 0; qb < c->n_qb; qb++) {
			int32_t *row = c->sel + ((size_t)g * c->n_qb + qb) * c->topk;
			uint32_t own = c->p0 / c->block + qb, n = 0;

			for (uint32_t m = 0; m <= own; m++)
				if (all || m == own || test_int(0, 1))
					row[n++] = (int32_t)m;
			if (extra && own + 1 < n_blocks)
				row[n++] = (int32_t)own + 1;
			for (uint32_t j = n; j < c->topk; j++)
				row[j] = -1;
		}
	}
}

static void sparse_case(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
			uint32_t d, uint32_t block)
{
	struct pf_case c;

	pf_setup(&c, t, p0, n_q, n_kv, d, block);
	random_sel(&c, false, true);
	assert_int_equal(pf_run(kb, &c, c.out, c.sel), 0);
	pf_check(&c, c.out, c.sel);
	/* Every block selected: the same as dense. */
	random_sel(&c, true, false);
	assert_int_equal(pf_run(kb, &c, c.out, c.sel), 0);
	assert_int_equal(pf_run(kb, &c, c.out2, NULL), 0);
	for (size_t e = 0; e < (size_t)t * n_q * d; e++)
		TEST_CLOSE(kb_bf16_to_f32(c.out[e]), kb_bf16_to_f32(c.out2[e]), 1e-3, 8e-3,
			   "all blocks vs dense e=%zu\n", e);
	pf_check(&c, c.out, c.sel);
	pf_free(&c);
}

static void test_prefill_sparse(void **state)
{
	struct kb *kb = test_cpu();
	struct pf_case c;

	sparse_case(kb, 100, 0, 2, 2, 16, 16);	/* GQA 1, partial last block */
	sparse_case(kb, 64, 32, 8, 2, 16, 16);	/* GQA 4, chunk at p0 > 0 */
	sparse_case(kb, 37, 64, 16, 1, 8, 32);	/* GQA 16 */
	sparse_case(kb, 150, 64, 4, 4, 32, 64); /* paper block size */
	pf_setup(&c, 20, 8, 2, 2, 8, 16);	/* sparse needs p0 % block == 0 */
	random_sel(&c, true, false);
	assert_int_equal(pf_run(kb, &c, c.out, c.sel), -EINVAL);
	pf_free(&c);
	kb_destroy(kb);
}

/* The last query of a prefill is a decode step over the same keys. */
static void test_prefill_last_row_is_decode(void **state)
{
	struct kb *kb = test_cpu();
	struct pf_case c;
	uint32_t n_keys, n_q = 8, n_kv = 2, d = 16;
	uint16_t *kc, *vc, *dec;
	int32_t len;

	pf_setup(&c, 50, 30, n_q, n_kv, d, 16);
	n_keys = c.p0 + c.t;
	kc = test_alloc((size_t)n_kv * n_keys * d * 2);
	vc = test_alloc((size_t)n_kv * n_keys * d * 2);
	dec = test_alloc((size_t)n_q * d * 2);
	for (uint32_t g = 0; g < n_kv; g++)
		for (uint32_t p = 0; p < n_keys; p++) {
			memcpy(kc + ((size_t)g * n_keys + p) * d, c.k + (size_t)p * c.ld_kv + g * d,
			       d * 2);
			memcpy(vc + ((size_t)g * n_keys + p) * d, c.v + (size_t)p * c.ld_kv + g * d,
			       d * 2);
		}
	assert_int_equal(pf_run(kb, &c, c.out, NULL), 0);
	len = (int32_t)n_keys;
	assert_int_equal(kb->ops->attn_decode_dense(
			     kb, 0, dec, n_q * d, c.q + (size_t)(c.t - 1) * c.ld_q, c.ld_q, kc, vc,
			     n_keys, &len, 1, n_q, n_kv, d, c.scale, NULL),
			 0);
	for (uint32_t e = 0; e < n_q * d; e++)
		TEST_CLOSE(kb_bf16_to_f32(dec[e]),
			   kb_bf16_to_f32(c.out[(size_t)(c.t - 1) * n_q * d + e]), 1e-3, 8e-3,
			   "decode vs prefill e=%u\n", e);
	free(kc), free(vc), free(dec);
	pf_free(&c);
	kb_destroy(kb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prefill_dense),
	    cmocka_unit_test(test_prefill_sparse),
	    cmocka_unit_test(test_prefill_last_row_is_decode),
	};

	test_seed("test_cpu_prefill");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
