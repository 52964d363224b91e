/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the frozen forward keeps at each sampled query position: the layer input, the
 * pre-RoPE group-mean query (the ridge target), the compressed keys, the teacher distribution
 * (METHOD 5: the original selector on a fine grid, max-pooled to the inference grid and
 * restricted to its top-k blocks) and, for held-out sequences, the true selections.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_collect.h"

int train_keep_inputs(struct train_fwd *f, struct train_seq *s, uint32_t l)
{
	const struct train_ctx *c = f->c;
	struct train_layer_data *ly = &s->ly[l];
	uint32_t d = c->d, H = c->H, ld = (c->n_q + 2 * c->n_kv) * d, group = c->n_q / c->n_kv;
	int rc;

	for (uint32_t i = 0; i < s->nq; i++) {
		uint32_t p = (uint32_t)s->pos[i];

		memcpy(ly->x + (size_t)i * H, f->h_xn + (size_t)p * H, (size_t)H * 2);
		if ((rc = train_download(f, f->h_q, f->qkv + (size_t)p * ld,
					 (size_t)c->n_q * d * 2)))
			return rc;
		for (uint32_t g = 0; g < c->n_kv; g++)
			for (uint32_t e = 0; e < d; e++) {
				float acc = 0.0f;

				for (uint32_t h = 0; h < group; h++)
					acc +=
					    kb_bf16_to_f32(f->h_q[(size_t)(g * group + h) * d + e]);
				ly->q_mean[((size_t)i * c->n_kv + g) * d + e] =
				    kb_f32_to_bf16(acc / (float)group);
			}
	}
	return 0;
}

int train_keep_keys(struct train_fwd *f, struct train_seq *s, uint32_t l)
{
	const struct train_ctx *c = f->c;
	size_t row = (size_t)s->n_ent * c->d;
	int rc;

	for (uint32_t g = 0; g < c->n_kv; g++)
		if ((rc = train_download(f, s->ly[l].ck + g * row,
					 f->ck + (size_t)g * f->cap * c->d, row * 2)))
			return rc;
	return 0;
}

/* Selection of one query row of the backend's qkv buffer with n_ent entries, n_blk blocks. */
static int true_select(struct train_fwd *f, uint32_t row, uint32_t n_ent, uint32_t n_blk,
		       int32_t *out)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	uint32_t ld = (c->n_q + 2 * c->n_kv) * c->d;
	int32_t nn[2] = {(int32_t)n_ent, (int32_t)n_blk};
	int rc;

	if ((rc = train_upload(f, f->nn, nn, sizeof(nn))) ||
	    (rc =
		 k->score_decode(f->kb, KB_STREAM_COMPUTE, f->scores, f->qkv + (size_t)row * ld, ld,
				 f->ck, f->cap, f->nn, 1, c->n_q, c->n_kv, c->d, true, c->scale)) ||
	    (rc = k->select_decode(f->kb, KB_STREAM_COMPUTE, f->sel, f->scores, f->cap, f->nn,
				   f->nn + 1, 1, c->n_kv, &c->sp)))
		return rc;
	return train_download(f, out, f->sel, (size_t)c->n_kv * c->topk * 4);
}

/* Teacher-grid group sums of query p into h_t: a fine grid (stride 1) is max-pooled to the
 * inference grid (kernel s + 1, stride s, padding 1), the inference grid is taken as it is. */
static int teacher_pool(struct train_fwd *f, uint32_t p, uint32_t ne)
{
	const struct train_ctx *c = f->c;
	uint32_t ld = (c->n_q + 2 * c->n_kv) * c->d, nf = kb_ck_entries(&f->spf, p + 1);
	uint32_t st = c->sp.ck_stride;
	int32_t nn = (int32_t)nf;
	int rc;

	if ((rc = train_upload(f, f->nn, &nn, 4)) ||
	    (rc = f->kb->ops->score_decode(f->kb, KB_STREAM_COMPUTE, f->scores,
					   f->qkv + (size_t)p * ld, ld, f->ckf, f->capf, f->nn, 1,
					   c->n_q, c->n_kv, c->d, true, c->scale)) ||
	    (rc = train_download(f, f->h_s, f->scores, (size_t)c->n_kv * f->capf * 4)))
		return rc;
	for (uint32_t g = 0; g < c->n_kv; g++) {
		const float *fs = f->h_s + (size_t)g * f->capf;
		float *t = f->h_t + (size_t)g * f->cap;
		double sum = 0.0;

		for (uint32_t j = 0; c->kst == st && j < f->cap; j++) { /* the inference grid */
			t[j] = j < ne ? fs[j] : 0.0f;
			sum += t[j];
		}
		for (uint32_t j = 0; c->kst != st && j < f->cap; j++) {
			uint32_t lo = j ? st * j - 1 : 0, hi = st * j + st - 1;
			float mx = 0.0f;

			for (uint32_t i = lo; j < ne && i <= hi && i < nf; i++)
				mx = fs[i] > mx ? fs[i] : mx;
			t[j] = mx;
			sum += mx;
		}
		for (uint32_t j = 0; j < ne; j++)
			t[j] = sum > 0.0 ? (float)(t[j] / sum) : 0.0f;
	}
	return 0;
}

/* Clamp the gathered bins and the rest at 1e-8 and renormalise them together. */
static void teacher_norm(float *tp, uint32_t n, double mass, float *rest, int32_t *tn)
{
	double z;

	*rest = mass < 1.0 - 1e-8 ? (float)(1.0 - mass) : 1e-8f;
	z = *rest;
	for (uint32_t i = 0; i < n; i++)
		z += tp[i];
	for (uint32_t i = 0; i < n; i++)
		tp[i] = (float)(tp[i] / z);
	*rest = (float)(*rest / z);
	*tn = (int32_t)n;
}

/* The teacher's scored top-k blocks as block bins: the runtime's pooled block score of the
 * teacher distribution (max over the pooling window), over the blocks the runtime ranks. */
static void teacher_blocks(const struct train_ctx *c, const float *t, const int32_t *sel,
			   uint32_t ne, uint32_t p, int32_t *idx, float *tp, int32_t *tn,
			   float *rest)
{
	const struct kb_sparse *sp = &c->sp;
	uint32_t m0, m1, n = 0, qb = p / sp->block;
	double cand = 0.0, mass = 0.0;
	train_block_range(sp, p, ne, &m0, &m1);
	for (uint32_t m = m0; m < m1; m++)
		cand += train_pool_max(sp, t, ne, m);
	cand = cand > 0.0 ? cand : 1.0;
	for (uint32_t i = 0; i < c->topk; i++) {
		uint32_t m = (uint32_t)sel[i];
		double pm;

		if (sel[i] < 0 || train_forced(sp, m, qb) || m < m0 || m >= m1)
			continue;
		pm = train_pool_max(sp, t, ne, m) / cand;
		idx[n] = (int32_t)m;
		tp[n] = pm > 1e-8 ? (float)pm : 1e-8f;
		mass += pm;
		n++;
	}
	teacher_norm(tp, n, mass, rest, tn);
}

/* Gather the entries of the teacher's scored top-k blocks, add the rest bin, clamp, renorm. */
static void teacher_gather(const struct train_ctx *c, const float *t, const int32_t *sel,
			   uint32_t ne, uint32_t p, int32_t *idx, float *tp, int32_t *tn,
			   float *rest)
{
	uint32_t ps = c->sp.pool_stride, n = 0, qb = p / c->sp.block, j0, j1;
	double mass = 0.0, cand = 0.0;

	if (train_loss_on_blocks(c->o->loss)) {
		teacher_blocks(c, t, sel, ne, p, idx, tp, tn, rest);
		return;
	}
	/* the distribution over the entries the loss sees (all, or the scored blocks') */
	train_loss_range(&c->sp, c->o->loss == TRAIN_LOSS_PAPER, p, ne, &j0, &j1);
	for (uint32_t j = j0; j < j1; j++)
		cand += t[j];
	cand = cand > 0.0 ? cand : 1.0;
	for (uint32_t i = 0; i < c->topk; i++) {
		if (sel[i] < 0 || train_forced(&c->sp, (uint32_t)sel[i], qb))
			continue;
		for (uint32_t j = (uint32_t)sel[i] * ps; j < (uint32_t)sel[i] * ps + ps && j < ne;
		     j++) {
			double pj = t[j] / cand;

			idx[n] = (int32_t)j;
			tp[n] = pj > 1e-8 ? (float)pj : 1e-8f;
			mass += pj;
			n++;
		}
	}
	teacher_norm(tp, n, mass, rest, tn);
}

static int teacher_query(struct train_fwd *f, struct train_layer_data *ly, uint32_t qi, uint32_t p)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	uint32_t ne = kb_ck_entries(&c->sp, p + 1), qb = p / c->sp.block;
	int32_t nn[2] = {(int32_t)ne, (int32_t)qb + 1};
	int rc;

	if ((rc = teacher_pool(f, p, ne)) ||
	    (rc = train_upload(f, f->scores, f->h_t, (size_t)c->n_kv * f->cap * 4)) ||
	    (rc = train_upload(f, f->nn, nn, sizeof(nn))) ||
	    (rc = k->select_decode(f->kb, KB_STREAM_COMPUTE, f->sel, f->scores, f->cap, f->nn,
				   f->nn + 1, 1, c->n_kv, &c->sp)) ||
	    (rc = train_download(f, f->h_sel, f->sel, (size_t)c->n_kv * c->topk * 4)))
		return rc;
	for (uint32_t g = 0; g < c->n_kv; g++) {
		size_t at = (size_t)qi * c->n_kv + g;

		teacher_gather(c, f->h_t + (size_t)g * f->cap, f->h_sel + (size_t)g * c->topk, ne,
			       p, ly->tidx + at * c->gmax, ly->tp + at * c->gmax, ly->tn + at,
			       ly->trest + at);
	}
	return 0;
}

int train_teacher_seq(struct train_fwd *f, struct train_seq *s, uint32_t l, bool eval)
{
	const struct train_ctx *c = f->c;
	struct train_layer_data *ly = &s->ly[l];
	size_t sz = (size_t)c->n_kv * c->topk;
	int rc;

	for (uint32_t i = 0; i < s->nq; i++) {
		uint32_t p = (uint32_t)s->pos[i], b = c->sp.block;

		if (c->teacher && (rc = teacher_query(f, ly, i, p)))
			return rc;
		if (!eval)
			continue;
		if ((rc = true_select(f, p, kb_ck_entries(&c->sp, p + 1), p / b + 1,
				      ly->sel_true + i * sz)) ||
		    (rc = true_select(f, p - 1, kb_ck_entries(&c->sp, p), (p - 1) / b + 1,
				      ly->sel_prev + i * sz)))
			return rc;
	}
	return 0;
}
