/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU backend, KV movement and decode attention: copy_units, kv_pack / kv_store placement and
 * round trip, and both decode attentions against an explicit double-precision softmax over
 * exactly the keys they may see (ragged lengths, partial last blocks, GQA 1, 4 and 16); decode
 * over units with every block equals dense decode.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test_cpu_common.h"

static void test_copy_units(void **state)
{
	struct kb *kb = test_cpu();
	const size_t ub = 48;
	const uint32_t n = 9;
	char *src = aligned_alloc(64, 12 * ub), *dst = aligned_alloc(64, 12 * ub);
	char *ref = test_alloc(12 * ub);
	int32_t di[9], si[9];

	for (size_t i = 0; i < 12 * ub; i++)
		src[i] = (char)test_int(0, 255);
	memset(dst, 0x5a, 12 * ub);
	memset(ref, 0x5a, 12 * ub);
	for (uint32_t i = 0; i < n; i++) {
		di[i] = (int32_t)i + 2;
		si[i] = test_int(0, 11);
	}
	di[3] = -1, si[5] = -1; /* skipped */
	for (uint32_t i = 0; i < n; i++)
		if (di[i] >= 0 && si[i] >= 0)
			memcpy(ref + di[i] * ub, src + si[i] * ub, ub);
	assert_int_equal(kb->ops->copy_units(kb, KB_STREAM_COPY, dst, src, di, si, n, ub, 16), 0);
	assert_memory_equal(dst, ref, 12 * ub);
	assert_int_equal(kb->ops->copy_units(kb, 1, dst + 8, src, di, si, n, ub, 16), -EINVAL);
	assert_int_equal(kb->ops->copy_units(kb, 1, dst, src, di, si, n, 40, 16), -EINVAL);
	free(src), free(dst), free(ref);
	kb_destroy(kb);
}

/* kv_pack of a ragged token range lands row by row; other rows stay; kv_store agrees. */
static void test_kv_pack_store(void **state)
{
	struct kb *kb = test_cpu();
	const uint32_t n_kv = 2, d = 8, block = 16, ld = n_kv * d + 3, n_units = 32;
	const size_t usz = 2 * block * d;
	uint32_t t0 = (uint32_t)test_int(0, 40), t = (uint32_t)test_int(1, 60);
	uint32_t nbt = (t0 + t - 1) / block - t0 / block + 1;
	uint16_t *k = test_alloc((size_t)t * ld * 2), *v = test_alloc((size_t)t * ld * 2);
	uint16_t *units = test_alloc(n_units * usz * 2), *u2 = test_alloc(n_units * usz * 2);
	int32_t idx[2 * 8], pos[1]; /* at most 7 blocks touched */

	test_fill_bf16(k, (size_t)t * ld, -1, 1);
	test_fill_bf16(v, (size_t)t * ld, -1, 1);
	for (uint32_t i = 0; i < nbt * n_kv; i++)
		idx[i] = (int32_t)(n_units - 1 - 2 * i); /* distinct, descending */
	memset(units, 0xee, n_units * usz * 2);
	memcpy(u2, units, n_units * usz * 2);
	assert_int_equal(kb->ops->kv_pack(kb, 0, units, idx, k, v, ld, t0, t, n_kv, d, block), 0);
	for (uint32_t bl = 0; bl < nbt; bl++) {
		for (uint32_t h = 0; h < n_kv; h++) {
			const uint16_t *u = units + (size_t)idx[bl * n_kv + h] * usz;

			for (uint32_t r = 0; r < block; r++) {
				uint32_t p = (t0 / block + bl) * block + r;
				const uint16_t *kr = k + (size_t)(p - t0) * ld + h * d;
				const uint16_t *vr = v + (size_t)(p - t0) * ld + h * d;

				if (p < t0 || p >= t0 + t) {
					assert_int_equal(u[r * d], 0xeeee);
					assert_int_equal(u[(block + r) * d + d - 1], 0xeeee);
					continue;
				}
				assert_memory_equal(u + r * d, kr, d * 2);
				assert_memory_equal(u + (block + r) * d, vr, d * 2);
			}
		}
	}
	/* Token by token through kv_store gives the same bytes. */
	for (uint32_t i = 0; i < t; i++) {
		uint32_t p = t0 + i, bl = p / block - t0 / block;

		pos[0] = (int32_t)p;
		assert_int_equal(kb->ops->kv_store(kb, 0, u2, idx + bl * n_kv, k + (size_t)i * ld,
						   v + (size_t)i * ld, ld, pos, 1, n_kv, d, block),
				 0);
	}
	assert_memory_equal(units, u2, n_units * usz * 2);
	pos[0] = -3;
	assert_int_equal(kb->ops->kv_store(kb, 0, u2, idx, k, v, ld, pos, 1, n_kv, d, block),
			 -EINVAL);
	free(k), free(v), free(units), free(u2);
	kb_destroy(kb);
}

struct dec_case {
	uint32_t b, n_q, n_kv, d, t_cap, block;
	uint16_t *q, *kc, *vc, *out, *out2;
	int32_t *len;
	float scale;
};

static void dec_setup(struct dec_case *c, uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d)
{
	*c = (struct dec_case){.b = b,
			       .n_q = n_q,
			       .n_kv = n_kv,
			       .d = d,
			       .t_cap = 150,
			       .block = 16,
			       .scale = 1.0f / sqrtf((float)d)};
	c->q = test_alloc((size_t)b * n_q * d * 2);
	c->kc = test_alloc((size_t)b * n_kv * c->t_cap * d * 2);
	c->vc = test_alloc((size_t)b * n_kv * c->t_cap * d * 2);
	c->out = test_alloc((size_t)b * n_q * d * 2);
	c->out2 = test_alloc((size_t)b * n_q * d * 2);
	c->len = test_alloc(b * 4);
	test_fill_bf16(c->q, (size_t)b * n_q * d, -2, 2);
	test_fill_bf16(c->kc, (size_t)b * n_kv * c->t_cap * d, -2, 2);
	test_fill_bf16(c->vc, (size_t)b * n_kv * c->t_cap * d, -1, 1);
	for (uint32_t i = 0; i < b; i++) /* ragged: full, one key, partial last blocks */
		c->len[i] = i == 0 ? (int32_t)c->t_cap : i == 1 ? 1 : test_int(2, (int)c->t_cap);
}

static void dec_free(struct dec_case *c)
{
	free(c->q), free(c->kc), free(c->vc), free(c->out), free(c->out2), free(c->len);
}

/* Decode over units built from the dense cache: blocks `keep` of every (b, g), in order. */
static void dec_units(struct kb *kb, struct dec_case *c, bool all)
{
	uint32_t nu = (c->t_cap + c->block - 1) / c->block, bs = c->block, d = c->d;
	size_t usz = 2 * (size_t)bs * d, n_tab = (size_t)c->b * c->n_kv * nu;
	uint16_t *units = test_alloc(n_tab * usz * 2);
	int32_t *ui = test_alloc(n_tab * 4), *ul = test_alloc(n_tab * 4);
	uint32_t *keys = test_alloc(c->t_cap * 4);
	double want[64];

	for (size_t e = 0; e < n_tab; e++) {
		size_t cache = e / nu, m = e % nu, u = n_tab - 1 - e; /* storage order reversed */
		int64_t rows = (int64_t)c->len[cache / c->n_kv] - (int64_t)m * bs;
		const uint16_t *kr = c->kc + (cache * c->t_cap + m * bs) * d;
		const uint16_t *vr = c->vc + (cache * c->t_cap + m * bs) * d;

		ui[e] = (all || test_int(0, 2)) && rows > 0 ? (int32_t)u : -1;
		ul[e] = rows <= 0 ? 0 : rows < bs ? (int32_t)rows : (int32_t)bs;
		if (ui[e] < 0)
			continue;
		memcpy(units + u * usz, kr, (size_t)ul[e] * d * 2);
		memcpy(units + u * usz + bs * d, vr, (size_t)ul[e] * d * 2);
	}
	assert_int_equal(kb->ops->attn_decode(kb, 0, c->out2, c->n_q * d, c->q, c->n_q * d, units,
					      ui, ul, nu, c->b, c->n_q, c->n_kv, d, bs, c->scale,
					      NULL),
			 0);
	for (uint32_t i = 0; i < c->b; i++) {
		for (uint32_t h = 0; h < c->n_q; h++) {
			uint32_t g = h / (c->n_q / c->n_kv), n = 0;
			size_t cache = (size_t)i * c->n_kv + g;

			for (uint32_t m = 0; m < nu; m++)
				for (int32_t r = 0;
				     ui[cache * nu + m] >= 0 && r < ul[cache * nu + m]; r++)
					keys[n++] = m * bs + (uint32_t)r;
			test_naive_attend(want, c->q + ((size_t)i * c->n_q + h) * d,
					  c->kc + cache * c->t_cap * d,
					  c->vc + cache * c->t_cap * d, d, keys, n, d, c->scale);
			test_check_row(c->out2 + ((size_t)i * c->n_q + h) * d, want, d, "units", i,
				       h);
		}
	}
	free(units), free(ui), free(ul), free(keys);
}

static void decode_case(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d)
{
	struct dec_case c;
	uint32_t *keys = test_alloc(150 * 4);
	double want[64];

	dec_setup(&c, b, n_q, n_kv, d);
	for (uint32_t j = 0; j < c.t_cap; j++)
		keys[j] = j;
	assert_int_equal(kb->ops->attn_decode_dense(kb, 0, c.out, n_q * d, c.q, n_q * d, c.kc, c.vc,
						    c.t_cap, c.len, b, n_q, n_kv, d, c.scale, NULL),
			 0);
	for (uint32_t i = 0; i < b; i++) {
		for (uint32_t h = 0; h < n_q; h++) {
			size_t cache = (size_t)i * n_kv + h / (n_q / n_kv);

			test_naive_attend(want, c.q + ((size_t)i * n_q + h) * d,
					  c.kc + cache * c.t_cap * d, c.vc + cache * c.t_cap * d, d,
					  keys, (uint32_t)c.len[i], d, c.scale);
			test_check_row(c.out + ((size_t)i * n_q + h) * d, want, d, "dense", i, h);
		}
	}
	/* Every block as a unit, in order: the same as dense (to bf16 rounding). */
	dec_units(kb, &c, true);
	for (size_t e = 0; e < (size_t)b * n_q * d; e++)
		TEST_CLOSE(kb_bf16_to_f32(c.out2[e]), kb_bf16_to_f32(c.out[e]), 1e-3, 8e-3,
			   "units vs dense e=%zu\n", e);
	dec_units(kb, &c, false); /* a subset of the blocks, with -1 entries */
	c.len[0] = (int32_t)c.t_cap + 1;
	assert_int_equal(kb->ops->attn_decode_dense(kb, 0, c.out, n_q * d, c.q, n_q * d, c.kc, c.vc,
						    c.t_cap, c.len, b, n_q, n_kv, d, c.scale, NULL),
			 -EINVAL);
	dec_free(&c);
	free(keys);
}

static void test_attn_decode(void **state)
{
	struct kb *kb = test_cpu();

	decode_case(kb, 3, 2, 2, 32);  /* GQA 1 */
	decode_case(kb, 3, 8, 2, 16);  /* GQA 4 */
	decode_case(kb, 2, 16, 1, 64); /* GQA 16 */
	kb_destroy(kb);
}

/*
 * The sparse decode path with every block selected equals dense decode: kv_pack into a
 * resident store, select_decode with topk >= blocks, sel_units, attn_decode.
 */
static void test_sparse_decode_all_blocks_is_dense(void **state)
{
	struct kb *kb = test_cpu();
	const struct kb_sparse sp = {.block = 16,
				     .ck_kernel = 8,
				     .ck_stride = 4,
				     .pool_kernel = 5,
				     .pool_stride = 4,
				     .pool_pad = 1,
				     .sink = 1,
				     .local = 2,
				     .topk = 10};
	const uint32_t n_slots = 10, nk = 2 * 2, d = 16;
	struct dec_case c;
	size_t usz = 2 * 16 * d;
	uint16_t *units = test_alloc(nk * n_slots * usz * 2), *krow, *vrow;
	float *sc = test_alloc(nk * 40 * 4);
	int32_t sel[4 * 10], ui[4 * 10], ul[4 * 10], ne[2], nb[2], pidx[10 * 2];

	dec_setup(&c, 2, 8, 2, d);
	c.len[0] = 150, c.len[1] = test_int(1, 149);
	krow = test_alloc(150 * 2 * d * 2), vrow = test_alloc(150 * 2 * d * 2);
	for (uint32_t i = 0; i < 2; i++) {
		/* [t, n_kv * d] rows of sequence i, packed into units (i, g) * n_slots + m */
		for (uint32_t p = 0; p < 150; p++)
			for (uint32_t g = 0; g < 2; g++) {
				size_t o = (((size_t)i * 2 + g) * c.t_cap + p) * d;

				memcpy(krow + ((size_t)p * 2 + g) * d, c.kc + o, d * 2);
				memcpy(vrow + ((size_t)p * 2 + g) * d, c.vc + o, d * 2);
			}
		for (uint32_t m = 0; m < 10; m++)
			for (uint32_t g = 0; g < 2; g++)
				pidx[m * 2 + g] = (int32_t)((i * 2 + g) * n_slots + m);
		assert_int_equal(kb->ops->kv_pack(kb, 0, units, pidx, krow, vrow, 2 * d, 0,
						  (uint32_t)c.len[i], 2, d, 16),
				 0);
		ne[i] = (int32_t)kb_ck_entries(&sp, (uint32_t)c.len[i]);
		nb[i] = (c.len[i] + 15) / 16;
	}
	for (uint32_t e = 0; e < nk * 40; e++)
		sc[e] = test_uniform(-1, 1);
	assert_int_equal(kb->ops->select_decode(kb, 0, sel, sc, 40, ne, nb, 2, 2, &sp), 0);
	for (uint32_t e = 0; e < nk; e++)
		for (int32_t m = 0; m < nb[e / 2]; m++)
			assert_int_equal(sel[e * 10 + (uint32_t)m], m); /* every block */
	assert_int_equal(
	    kb->ops->sel_units(kb, 0, ui, ul, sel, NULL, c.len, nk, 2, n_slots, 10, 16), 0);
	assert_int_equal(kb->ops->attn_decode(kb, 0, c.out2, 8 * d, c.q, 8 * d, units, ui, ul, 10,
					      2, 8, 2, d, 16, c.scale, NULL),
			 0);
	assert_int_equal(kb->ops->attn_decode_dense(kb, 0, c.out, 8 * d, c.q, 8 * d, c.kc, c.vc,
						    c.t_cap, c.len, 2, 8, 2, d, c.scale, NULL),
			 0);
	for (uint32_t e = 0; e < 2 * 8 * d; e++)
		TEST_CLOSE(kb_bf16_to_f32(c.out2[e]), kb_bf16_to_f32(c.out[e]), 1e-3, 8e-3,
			   "sparse(all) vs dense e=%u\n", e);
	dec_free(&c);
	free(units), free(sc), free(krow), free(vrow);
	kb_destroy(kb);
}

/*
 * sel_units through a slot map, on a hand-made cache: a cached block's slot (the lowest, were
 * a block in two), -1 and length 0 for a block not cached or beyond the sequence (cached or
 * not), the tail block's rows; and sel_units2 gives both tables as two sel_units calls do.
 */
static void test_sel_units_map(void **state)
{
	(void)state;
	struct kb *kb = test_cpu();
	/* 2 sequences x 1 KV head, 4 slots each, block 16; sequence 0 has 50 tokens (blocks 0-3,
	 * the last of 2 rows), sequence 1 has 20 (blocks 0-1) */
	const int32_t map[8] = {3, 0, -1, 3, 1, -1, 0, 7};
	const int32_t tok[2] = {50, 20};
	const int32_t sel[6] = {0, 3, 2, /* */ 0, 1, 7};
	const int32_t want_idx[6] = {1, 0, -1, 6, 4, -1}, want_len[6] = {16, 2, 0, 16, 4, 0};
	const int32_t tail[2] = {3, 1};
	int32_t ui[6], ul[6], ti[2], tl[2], ui2[6], ul2[6], ti2[2], tl2[2];

	assert_int_equal(kb->ops->sel_units(kb, 0, ui, ul, sel, map, tok, 2, 1, 4, 3, 16), 0);
	assert_memory_equal(ui, want_idx, sizeof(ui));
	assert_memory_equal(ul, want_len, sizeof(ul));
	assert_int_equal(kb->ops->sel_units(kb, 0, ti, tl, tail, map, tok, 2, 1, 4, 1, 16), 0);
	assert_int_equal(ti[0], 0); /* block 3 in slots 0 and 3: the lowest */
	assert_int_equal(tl[0], 2);
	assert_int_equal(ti[1], 4 + 0);
	assert_int_equal(tl[1], 4);
	assert_int_equal(
	    kb->ops->sel_units2(kb, 0, ui2, ul2, sel, 3, ti2, tl2, tail, 1, map, tok, 2, 1, 4, 16),
	    0);
	assert_memory_equal(ui2, ui, sizeof(ui));
	assert_memory_equal(ul2, ul, sizeof(ul));
	assert_memory_equal(ti2, ti, sizeof(ti));
	assert_memory_equal(tl2, tl, sizeof(tl));
	kb_destroy(kb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_copy_units),
	    cmocka_unit_test(test_kv_pack_store),
	    cmocka_unit_test(test_attn_decode),
	    cmocka_unit_test(test_sparse_decode_all_blocks_is_dense),
	    cmocka_unit_test(test_sel_units_map),
	};

	test_seed("test_cpu_attention");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
