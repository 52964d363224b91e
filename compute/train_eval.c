/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Held-out figures of one projection: the training KL and the recall of the inference
 * selection (raw dot through the backend's score_decode, pooling, forced blocks and top-k
 * through select_decode) against the original selector's scored blocks.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "train_collect.h"

struct eval_buf {
	uint16_t *ck, *q;
	float *scores;
	int32_t *sel, *nn;
	uint16_t *h_q;
	int32_t *h_sel;
	float *u;
};

/* The teacher's scored blocks of query row `at` (from its gathered entries) that pred holds. */
static void teacher_count(const struct train_ctx *c, const struct train_layer_data *tl, size_t at,
			  const int32_t *pred, uint64_t *hit, uint64_t *total)
{
	int32_t per = train_loss_on_blocks(c->o->loss) ? 1 : (int32_t)c->sp.pool_stride;

	for (int32_t e = 0; e < tl->tn[at]; e++) {
		int32_t blk = tl->tidx[at * c->gmax + e] / per;

		if (e && blk == tl->tidx[at * c->gmax + e - 1] / per)
			continue; /* entries of one block are gathered together */
		(*total)++;
		for (uint32_t j = 0; j < c->topk; j++)
			if (pred[j] == blk) {
				(*hit)++;
				break;
			}
	}
}

/* Scored (non-forced) blocks of `truth` that `pred` also holds; *total gets their count. */
static void recall_count(const struct kb_sparse *sp, const int32_t *truth, const int32_t *pred,
			 uint32_t qb, uint64_t *hit, uint64_t *total)
{
	for (uint32_t i = 0; i < sp->topk; i++) {
		if (truth[i] < 0 || train_forced(sp, (uint32_t)truth[i], qb))
			continue;
		(*total)++;
		for (uint32_t j = 0; j < sp->topk; j++)
			if (pred[j] == truth[i]) {
				(*hit)++;
				break;
			}
	}
}

/* The Forecast selection of query qi of sequence sq (u: its projected row) into b->h_sel. */
static int forecast_select(struct train_ctx *c, struct eval_buf *b, const struct train_seq *sq,
			   uint32_t qi, const float *u)
{
	const struct kb_ops *k = c->kb->ops;
	uint32_t p = (uint32_t)sq->pos[qi], d = c->d, ld = c->n_kv * d;
	int32_t nn[2] = {(int32_t)kb_ck_entries(&c->sp, p + 1), (int32_t)(p / c->sp.block) + 1};
	float f[512];
	int rc;

	for (uint32_t g = 0; g < c->n_kv; g++) {
		for (uint32_t e = 0; e < d; e++)
			f[e] = u[(size_t)g * d + e];
		train_rope(c, f, (int32_t)p, false);
		for (uint32_t e = 0; e < d; e++)
			b->h_q[(size_t)g * d + e] = kb_f32_to_bf16(f[e]);
	}
	if ((rc = k->memcpy(c->kb, b->q, b->h_q, (size_t)ld * 2, KB_H2D, KB_STREAM_COMPUTE)) ||
	    (rc = k->memcpy(c->kb, b->nn, nn, sizeof(nn), KB_H2D, KB_STREAM_COMPUTE)) ||
	    (rc = k->score_decode(c->kb, KB_STREAM_COMPUTE, b->scores, b->q, ld, b->ck, sq->n_ent,
				  b->nn, 1, c->n_kv, c->n_kv, d, false, 1.0f)) ||
	    (rc = k->select_decode(c->kb, KB_STREAM_COMPUTE, b->sel, b->scores, sq->n_ent, b->nn,
				   b->nn + 1, 1, c->n_kv, &c->sp)) ||
	    (rc = k->memcpy(c->kb, b->h_sel, b->sel, (size_t)c->n_kv * c->topk * 4, KB_D2H,
			    KB_STREAM_COMPUTE)))
		return rc;
	return k->sync(c->kb, KB_STREAM_COMPUTE);
}

static int eval_seq(struct train_ctx *c, struct eval_buf *b, const struct train_slot *s,
		    const float *w, const struct train_seq *sq, uint64_t cnt[8])
{
	const struct train_layer_data *tl = &sq->ly[s->tgt];
	size_t row = (size_t)c->n_kv * c->topk;
	int rc;

	if (c->eval_target) /* the regression target itself (RoPE is applied below) */
		for (size_t i = 0; i < (size_t)sq->nq * c->dout; i++)
			b->u[i] = kb_bf16_to_f32(tl->q_mean[i]);
	else if ((rc = train_project(c, sq->ly[s->in].x, sq->nq, w, b->u)))
		return rc;
	if ((rc = c->kb->ops->memcpy(c->kb, b->ck, tl->ck, (size_t)c->n_kv * sq->n_ent * c->d * 2,
				     KB_H2D, KB_STREAM_COMPUTE)))
		return rc;
	for (uint32_t i = 0; i < sq->nq; i++) {
		uint32_t qb = (uint32_t)sq->pos[i] / c->sp.block;

		if ((rc = forecast_select(c, b, sq, i, b->u + (size_t)i * c->dout)))
			return rc;
		for (uint32_t g = 0; g < c->n_kv; g++) {
			const int32_t *truth = tl->sel_true + i * row + (size_t)g * c->topk;

			recall_count(&c->sp, truth, b->h_sel + (size_t)g * c->topk, qb, &cnt[0],
				     &cnt[1]);
			recall_count(&c->sp, truth, tl->sel_prev + i * row + (size_t)g * c->topk,
				     qb, &cnt[2], &cnt[3]);
			if (!c->teacher)
				continue;
			teacher_count(c, tl, (size_t)i * c->n_kv + g,
				      b->h_sel + (size_t)g * c->topk, &cnt[4], &cnt[5]);
			teacher_count(c, tl, (size_t)i * c->n_kv + g, truth, &cnt[6], &cnt[7]);
		}
	}
	return 0;
}

int train_eval_slot(struct train_ctx *c, const struct train_data *set, const struct train_slot *s,
		    const float *w, struct train_eval *out)
{
	struct kb *kb = c->kb;
	struct eval_buf b = {0};
	uint32_t max_ent = 1, max_nq = 1, *all = malloc((set->n + 1) * sizeof(uint32_t));
	uint64_t cnt[8] = {0};
	int rc = -ENOMEM;

	for (uint32_t i = 0; i < set->n; i++) {
		max_ent = set->seq[i].n_ent > max_ent ? set->seq[i].n_ent : max_ent;
		max_nq = set->seq[i].nq > max_nq ? set->seq[i].nq : max_nq;
		if (all)
			all[i] = i;
	}
	b.h_q = malloc((size_t)c->dout * 2);
	b.h_sel = malloc((size_t)c->n_kv * c->topk * 4);
	b.u = malloc((size_t)max_nq * c->dout * 4);
	if (!all || !b.h_q || !b.h_sel || !b.u)
		goto out_free;
	if ((rc = kb->ops->alloc(kb, (size_t)c->n_kv * max_ent * c->d * 2, (void **)&b.ck)) ||
	    (rc = kb->ops->alloc(kb, (size_t)c->dout * 2, (void **)&b.q)) ||
	    (rc = kb->ops->alloc(kb, (size_t)c->n_kv * max_ent * 4, (void **)&b.scores)) ||
	    (rc = kb->ops->alloc(kb, (size_t)c->n_kv * c->topk * 4, (void **)&b.sel)) ||
	    (rc = kb->ops->alloc(kb, 16, (void **)&b.nn)))
		goto out_free;
	out->kl = NAN;
	if (c->teacher && (rc = train_slot_loss(c, s, w, set, all, set->n, NULL, &out->kl)))
		goto out_free;
	for (uint32_t i = 0; i < set->n; i++)
		if ((rc = eval_seq(c, &b, s, w, &set->seq[i], cnt)))
			goto out_free;
	out->recall = cnt[1] ? (double)cnt[0] / (double)cnt[1] : 0.0;
	out->recall_prev = cnt[3] ? (double)cnt[2] / (double)cnt[3] : 0.0;
	out->recall_teacher = !c->teacher ? NAN : cnt[5] ? (double)cnt[4] / (double)cnt[5] : 0.0;
	out->teacher_vs_true = !c->teacher ? NAN : cnt[7] ? (double)cnt[6] / (double)cnt[7] : 0.0;
out_free : {
	void *p[] = {b.ck, b.q, b.scores, b.sel, b.nn};

	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
		if (p[i])
			kb->ops->free(kb, p[i]);
}
	free(b.h_q);
	free(b.h_sel);
	free(b.u);
	free(all);
	return rc;
}
