/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The frozen forward for Forecast training: each calibration sequence runs through the backend
 * like a dense prefill (runner_prefill.c), and at the sampled query positions each layer
 * leaves its RMSNorm output, its compressed keys, the teacher (train_teacher.c) and, for
 * held-out sequences, the original selector's blocks now and at the previous token.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "train_collect.h"

static int dev_alloc(struct train_fwd *f, void **p, size_t bytes)
{
	return f->kb->ops->alloc(f->kb, bytes ? bytes : 16, p);
}

static int upload(struct train_fwd *f, void *dst, const void *src, size_t bytes)
{
	int rc = f->kb->ops->memcpy(f->kb, dst, src, bytes, KB_H2D, KB_STREAM_COMPUTE);

	return rc ? rc : f->kb->ops->sync(f->kb, KB_STREAM_COMPUTE);
}

int train_download(struct train_fwd *f, void *dst, const void *src, size_t bytes)
{
	int rc = f->kb->ops->memcpy(f->kb, dst, src, bytes, KB_D2H, KB_STREAM_COMPUTE);

	return rc ? rc : f->kb->ops->sync(f->kb, KB_STREAM_COMPUTE);
}

int train_upload(struct train_fwd *f, void *dst, const void *src, size_t bytes)
{
	return upload(f, dst, src, bytes);
}

/* Upload `n` tensors' rows back to back into one device matrix (a fused weight). */
static int upload_fused(struct train_fwd *f, uint16_t **dst, const struct model_tensor *const *t,
			uint32_t n)
{
	size_t total = 0, at = 0;
	int rc;

	for (uint32_t i = 0; i < n; i++)
		total += (size_t)t[i]->rows * t[i]->cols;
	if ((rc = dev_alloc(f, (void **)dst, total * 2)))
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		size_t e = (size_t)t[i]->rows * t[i]->cols;

		if ((rc = upload(f, *dst + at, t[i]->data, e * 2)))
			return rc;
		at += e;
	}
	return 0;
}

static int fwd_weights(struct train_fwd *f, const struct model *m)
{
	int rc;

	f->lw = calloc(m->cfg.n_layers, sizeof(*f->lw));
	if (!f->lw)
		return -ENOMEM;
	for (uint32_t l = 0; l < m->cfg.n_layers; l++) {
		const struct model_layer *ml = &m->layers[l];
		const struct model_tensor *qkv[] = {&ml->wq, &ml->wk, &ml->wv};
		const struct model_tensor *gu[] = {&ml->w_gate, &ml->w_up};
		const struct model_tensor *n1[] = {&ml->attn_norm}, *n2[] = {&ml->ffn_norm};
		const struct model_tensor *wo[] = {&ml->wo}, *wd[] = {&ml->w_down};
		struct train_fwd_layer *w = &f->lw[l];

		if ((rc = upload_fused(f, &w->wqkv, qkv, 3)) ||
		    (rc = upload_fused(f, &w->wgu, gu, 2)) ||
		    (rc = upload_fused(f, &w->n1, n1, 1)) ||
		    (rc = upload_fused(f, &w->n2, n2, 1)) ||
		    (rc = upload_fused(f, &w->wo, wo, 1)) ||
		    (rc = upload_fused(f, &w->wdown, wd, 1)))
			return rc;
	}
	{
		const struct model_tensor *e[] = {&m->embed};

		return upload_fused(f, &f->embed, e, 1);
	}
}

int train_fwd_open(struct train_fwd *f, struct train_ctx *c, uint32_t tcap)
{
	const struct model_config *mc = &c->m->cfg;
	uint32_t d = c->d, qkv = (c->n_q + 2 * c->n_kv) * d, H = c->H;
	size_t T = tcap;
	int rc;

	memset(f, 0, sizeof(*f));
	f->kb = c->kb;
	f->c = c;
	f->tcap = tcap;
	f->cap = kb_ck_entries(&c->sp, tcap);
	f->spf = c->sp;
	f->spf.ck_kernel = c->kf;
	f->spf.ck_stride = c->kst;
	f->capf = kb_ck_entries(&f->spf, tcap);
	f->chunk = tcap < 512 ? tcap : 512;
	f->h_xn = malloc(T * H * 2);
	f->h_q = malloc((size_t)c->n_q * d * 2);
	f->h_s = malloc((size_t)c->n_kv * (f->capf > f->cap ? f->capf : f->cap) * 4);
	f->h_t = malloc((size_t)c->n_kv * f->cap * 4);
	f->h_sel = malloc((size_t)c->n_kv * c->topk * 4);
	f->h_i32 = malloc(T * 4);
	if (!f->h_xn || !f->h_q || !f->h_s || !f->h_t || !f->h_sel || !f->h_i32)
		return -ENOMEM;
	if ((rc = fwd_weights(f, c->m)) || (rc = dev_alloc(f, (void **)&f->resid, T * H * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->xn, T * H * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->qkv, T * qkv * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->attn, T * c->n_q * d * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->tmp, T * H * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->gu, (size_t)f->chunk * 2 * mc->ffn * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->ffo, (size_t)f->chunk * mc->ffn * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->ck, (size_t)c->n_kv * f->cap * d * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->ckf, (size_t)c->n_kv * f->capf * d * 2)) ||
	    (rc =
		 dev_alloc(f, (void **)&f->ring, (size_t)c->n_kv * mc->sparse.ck_kernel * d * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->ringf, (size_t)c->n_kv * c->kf * d * 2)) ||
	    (rc = dev_alloc(f, (void **)&f->scores,
			    (size_t)c->n_kv * (f->capf > f->cap ? f->capf : f->cap) * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->sel, (size_t)c->n_kv * c->topk * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->ids, T * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->pos, T * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->nn, 16)) ||
	    (rc = dev_alloc(f, (void **)&f->inv_freq, d / 2 * 4)) ||
	    (rc = dev_alloc(f, (void **)&f->q1, (size_t)c->n_q * d * 2)))
		return rc;
	for (uint32_t i = 0; i < tcap; i++)
		f->h_i32[i] = (int32_t)i;
	if ((rc = upload(f, f->pos, f->h_i32, T * 4)))
		return rc;
	return upload(f, f->inv_freq, c->inv_freq, d / 2 * 4);
}

void train_fwd_close(struct train_fwd *f)
{
	struct kb *kb = f->kb;

	if (!kb)
		return;
	for (uint32_t l = 0; f->lw && l < f->c->L; l++) {
		void *p[] = {f->lw[l].wqkv, f->lw[l].wgu, f->lw[l].n1,
			     f->lw[l].n2,   f->lw[l].wo,  f->lw[l].wdown};

		for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
			if (p[i])
				kb->ops->free(kb, p[i]);
	}
	free(f->lw);
	{
		void *p[] = {f->embed, f->resid, f->xn,	 f->qkv,      f->attn,	f->tmp,	   f->gu,
			     f->ffo,   f->ck,	 f->ckf, f->ring,     f->ringf, f->scores, f->sel,
			     f->ids,   f->pos,	 f->nn,	 f->inv_freq, f->q1};

		for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
			if (p[i])
				kb->ops->free(kb, p[i]);
	}
	free(f->h_xn);
	free(f->h_q);
	free(f->h_s);
	free(f->h_t);
	free(f->h_sel);
	free(f->h_i32);
	memset(f, 0, sizeof(*f));
}

/* The FFN half of a layer, in row chunks so the [t, 2 * ffn] buffer stays bounded. */
static int fwd_ffn(struct train_fwd *f, uint32_t l, uint32_t t)
{
	const struct kb_ops *k = f->kb->ops;
	uint32_t H = f->c->H, F = f->c->m->cfg.ffn;
	int rc;

	for (uint32_t c0 = 0; c0 < t; c0 += f->chunk) {
		uint32_t n = t - c0 < f->chunk ? t - c0 : f->chunk;

		if ((rc = k->gemm(f->kb, KB_STREAM_COMPUTE, n, 2 * F, H, f->xn + (size_t)c0 * H, H,
				  f->lw[l].wgu, H, f->gu, 2 * F, false, 1.0f, 0.0f)) ||
		    (rc = k->swiglu(f->kb, KB_STREAM_COMPUTE, f->ffo, f->gu, n, F)) ||
		    (rc = k->gemm(f->kb, KB_STREAM_COMPUTE, n, H, F, f->ffo, F, f->lw[l].wdown, F,
				  f->tmp + (size_t)c0 * H, H, false, 1.0f, 0.0f)))
			return rc;
	}
	return 0;
}

/* Attention input side of layer l: norm, QKV, RoPE, compressed keys on both grids. */
static int fwd_qkv(struct train_fwd *f, uint32_t l, uint32_t t)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	const struct model_config *mc = &c->m->cfg;
	uint32_t H = c->H, ld = (c->n_q + 2 * c->n_kv) * c->d;
	int rc;

	if ((rc = k->add_rmsnorm(f->kb, KB_STREAM_COMPUTE, f->resid, l ? f->tmp : NULL, H,
				 mc->residual_scale, f->lw[l].n1, f->xn, t, H, mc->rms_eps)) ||
	    (rc = k->gemm(f->kb, KB_STREAM_COMPUTE, t, ld, H, f->xn, H, f->lw[l].wqkv, H, f->qkv,
			  ld, false, 1.0f, 0.0f)) ||
	    (rc = train_download(f, f->h_xn, f->xn, (size_t)t * H * 2)))
		return rc;
	return 0;
}

static int fwd_rope_ck(struct train_fwd *f, uint32_t t)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	uint32_t d = c->d, ld = (c->n_q + 2 * c->n_kv) * d, qc = c->n_q * d;
	int rc;

	if ((rc = k->rope(f->kb, KB_STREAM_COMPUTE, f->qkv, ld, t, c->n_q + c->n_kv, d, f->pos,
			  f->inv_freq, c->mscale)) ||
	    (rc = k->ck_prefill(f->kb, KB_STREAM_COMPUTE, f->ck, f->cap, f->ring, f->qkv + qc, ld,
				t, c->n_kv, d, &c->sp)))
		return rc;
	if (!c->teacher) /* the fine grid feeds only the teacher */
		return 0;
	return k->ck_prefill(f->kb, KB_STREAM_COMPUTE, f->ckf, f->capf, f->ringf, f->qkv + qc, ld,
			     t, c->n_kv, d, &f->spf);
}

/* Attention output side of layer l: dense causal attention, W_o, FFN norm and FFN. */
static int fwd_attn_ffn(struct train_fwd *f, uint32_t l, uint32_t t)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	const struct model_config *mc = &c->m->cfg;
	uint32_t H = c->H, d = c->d, ld = (c->n_q + 2 * c->n_kv) * d, qc = c->n_q * d;
	int rc;

	if ((rc = k->attn_prefill(f->kb, KB_STREAM_COMPUTE, f->attn, qc, f->qkv, ld, f->qkv + qc,
				  f->qkv + qc + c->n_kv * d, ld, t, 0, c->n_q, c->n_kv, d, c->scale,
				  NULL, c->topk, c->sp.block)) ||
	    (rc = k->gemm(f->kb, KB_STREAM_COMPUTE, t, H, qc, f->attn, qc, f->lw[l].wo, qc, f->tmp,
			  H, false, 1.0f, 0.0f)) ||
	    (rc = k->add_rmsnorm(f->kb, KB_STREAM_COMPUTE, f->resid, f->tmp, H, mc->residual_scale,
				 f->lw[l].n2, f->xn, t, H, mc->rms_eps)))
		return rc;
	return fwd_ffn(f, l, t);
}

int train_fwd_seq(struct train_fwd *f, const int32_t *ids, struct train_seq *s, bool eval)
{
	const struct kb_ops *k = f->kb->ops;
	const struct train_ctx *c = f->c;
	uint32_t t = s->t;
	int rc;

	if ((rc = upload(f, f->ids, ids, (size_t)t * 4)) ||
	    (rc = k->embed(f->kb, KB_STREAM_COMPUTE, f->resid, f->embed, f->ids, t, c->H,
			   c->m->cfg.vocab, c->m->cfg.scale_emb)))
		return rc;
	for (uint32_t l = 0; l < c->L; l++) {
		/* the ridge alone needs no keys of the training sequences, only x and q_mean */
		if ((rc = fwd_qkv(f, l, t)) || (rc = train_keep_inputs(f, s, l)) ||
		    (rc = fwd_rope_ck(f, t)) ||
		    ((eval || c->teacher) && (rc = train_keep_keys(f, s, l))) ||
		    (rc = train_teacher_seq(f, s, l, eval)))
			return rc;
		if (l + 1 < c->L && (rc = fwd_attn_ffn(f, l, t)))
			return rc;
	}
	return 0;
}

static uint64_t pos_mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * The sampled positions of a t-token sequence: every query_stride-th from qstart, or, when
 * that is more than max_queries, max_queries positions spread evenly over [qstart, t), each
 * at a seeded offset inside its stretch (so every position inside a block is sampled).
 */
static uint32_t seq_positions(const struct train_ctx *c, uint32_t t, int32_t *pos)
{
	uint32_t stride = c->o->query_stride, cap = c->o->max_queries;
	uint32_t nq = t > c->qstart ? (t - 1 - c->qstart) / stride + 1 : 0;
	double step;

	if (!cap || nq <= cap) {
		for (uint32_t i = 0; pos && i < nq; i++)
			pos[i] = (int32_t)(c->qstart + i * stride);
		return nq;
	}
	step = (double)(t - c->qstart) / cap;
	for (uint32_t i = 0; pos && i < cap; i++) {
		uint32_t at = (uint32_t)(i * step), span = (uint32_t)((i + 1) * step) - at;
		uint64_t h = pos_mix(c->o->seed ^ pos_mix(((uint64_t)t << 32) | i));

		pos[i] = (int32_t)(c->qstart + at + (span > 1 ? (uint32_t)(h % span) : 0));
	}
	return cap;
}

/* Sampled positions of a t-token sequence and the per-layer arrays for them. */
static int seq_alloc(struct train_ctx *c, struct train_seq *s, uint32_t t, bool eval,
		     uint64_t *bytes)
{
	uint32_t nq = seq_positions(c, t, NULL);
	size_t qg = (size_t)nq * c->n_kv, tq = c->teacher ? qg : 0;
	bool keys = eval || c->teacher;

	s->t = t;
	s->nq = nq;
	s->n_ent = kb_ck_entries(&c->sp, t);
	s->pos = malloc((nq + 1) * sizeof(*s->pos));
	s->ly = calloc(c->L, sizeof(*s->ly));
	if (!s->pos || !s->ly)
		return -ENOMEM;
	seq_positions(c, t, s->pos);
	*bytes += (uint64_t)c->L * (nq * (uint64_t)c->H * 2 + qg * c->d * 2 +
				    (keys ? (uint64_t)c->n_kv * s->n_ent * c->d * 2 : 0) +
				    tq * c->gmax * 8 + tq * 8 + (eval ? qg * c->topk * 8 : 0));
	for (uint32_t l = 0; l < c->L; l++) {
		struct train_layer_data *ly = &s->ly[l];

		ly->x = malloc((size_t)nq * c->H * 2);
		ly->q_mean = malloc(qg * c->d * 2);
		if (!ly->x || !ly->q_mean)
			return -ENOMEM;
		if (keys && !(ly->ck = malloc((size_t)c->n_kv * s->n_ent * c->d * 2 + 2)))
			return -ENOMEM;
		if (c->teacher && (!(ly->tidx = malloc(qg * c->gmax * 4)) ||
				   !(ly->tp = malloc(qg * c->gmax * 4)) ||
				   !(ly->tn = malloc(qg * 4)) || !(ly->trest = malloc(qg * 4))))
			return -ENOMEM;
		if (eval && (!(ly->sel_true = malloc(qg * c->topk * 4)) ||
			     !(ly->sel_prev = malloc(qg * c->topk * 4))))
			return -ENOMEM;
	}
	return 0;
}

void train_data_fini(struct train_ctx *c, struct train_data *data)
{
	for (uint32_t i = 0; data->seq && i < data->n; i++) {
		struct train_seq *s = &data->seq[i];

		for (uint32_t l = 0; s->ly && l < c->L; l++) {
			struct train_layer_data *ly = &s->ly[l];

			free(ly->x);
			free(ly->q_mean);
			free(ly->ck);
			free(ly->tidx);
			free(ly->tp);
			free(ly->tn);
			free(ly->trest);
			free(ly->sel_true);
			free(ly->sel_prev);
		}
		free(s->ly);
		free(s->pos);
	}
	free(data->seq);
	memset(data, 0, sizeof(*data));
}

int train_collect(struct train_ctx *c, const struct calib_set *set, bool eval,
		  struct train_data *data)
{
	struct train_progress pr = {.phase = eval ? TRAIN_PHASE_EVAL : TRAIN_PHASE_COLLECT,
				    .total = set->n_seqs};
	struct train_fwd f;
	uint32_t tcap = 0;
	int rc;

	for (uint32_t i = 0; i < set->n_seqs; i++) {
		if (set->len[i] <= c->qstart)
			return train_fail(c, -EINVAL,
					  "%s sequence %u has %u tokens; the sparse "
					  "config needs more than %u (first sampled query)",
					  eval ? "held-out" : "calibration", i, set->len[i],
					  c->qstart);
		tcap = set->len[i] > tcap ? set->len[i] : tcap;
	}
	data->seq = calloc(set->n_seqs, sizeof(*data->seq));
	if (!data->seq)
		return train_fail(c, -ENOMEM, "out of memory");
	data->n = set->n_seqs;
	if ((rc = train_fwd_open(&f, c, tcap)))
		goto out;
	for (uint32_t i = 0; i < set->n_seqs; i++) {
		if ((rc = seq_alloc(c, &data->seq[i], set->len[i], eval, &data->bytes)) ||
		    (rc = train_fwd_seq(&f, set->ids + set->off[i], &data->seq[i], eval)))
			goto out;
		data->queries += data->seq[i].nq;
		pr.done = i + 1;
		if (c->o->progress && c->o->progress(c->o->progress_ctx, &pr)) {
			rc = -ECANCELED;
			goto out;
		}
	}
out:
	train_fwd_close(&f);
	if (rc)
		return train_fail(c, rc, "%s forward pass failed",
				  eval ? "held-out" : "calibration");
	return 0;
}
