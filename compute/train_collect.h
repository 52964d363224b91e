/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The frozen forward of Forecast training (train_collect.c) and the per-query teachers and
 * selections it collects (train_teacher.c): device buffers for one sequence at a time.
 */
#ifndef SPARDA_COMPUTE_TRAIN_COLLECT_H
#define SPARDA_COMPUTE_TRAIN_COLLECT_H

#include "train_internal.h"

struct train_fwd_layer {
	uint16_t *wqkv, *wgu, *n1, *n2, *wo, *wdown; /* device copies (Q|K|V and gate|up fused) */
};

struct train_fwd {
	struct kb *kb;
	struct train_ctx *c;
	struct kb_sparse spf; /* the teacher's fine grid: kernel c->kf, stride 1 */
	uint32_t tcap, cap, capf, chunk;
	struct train_fwd_layer *lw;
	uint16_t *embed;
	float *resid, *scores, *inv_freq;
	uint16_t *xn, *qkv, *attn, *tmp, *gu, *ffo, *ck, *ckf, *ring, *ringf, *q1;
	int32_t *sel, *ids, *pos, *nn; /* nn: n_entries and n_blocks of one query */
	/* host staging */
	uint16_t *h_xn, *h_q;
	float *h_s, *h_t;
	int32_t *h_sel, *h_i32;
};

/* Upload the model and size the buffers for sequences of up to tcap tokens. */
int train_fwd_open(struct train_fwd *f, struct train_ctx *c, uint32_t tcap);
void train_fwd_close(struct train_fwd *f);
/* Run one sequence (s->t, s->nq, s->pos set, s->ly allocated) and fill s->ly. */
int train_fwd_seq(struct train_fwd *f, const int32_t *ids, struct train_seq *s, bool eval);
int train_download(struct train_fwd *f, void *dst, const void *src, size_t bytes);
int train_upload(struct train_fwd *f, void *dst, const void *src, size_t bytes);

/* train_teacher.c, called by train_fwd_seq for layer l */
/* After the QKV GEMM (before RoPE): keep x and the pre-RoPE group-mean query. */
int train_keep_inputs(struct train_fwd *f, struct train_seq *s, uint32_t l);
/* After the compressed keys: keep the inference-grid keys of the whole sequence. */
int train_keep_keys(struct train_fwd *f, struct train_seq *s, uint32_t l);
/* Teachers (not for TRAIN_FIT_RIDGE) and, for eval, the original selector's blocks now and
 * one token before. */
int train_teacher_seq(struct train_fwd *f, struct train_seq *s, uint32_t l, bool eval);

/* The loss's bins are the runtime's blocks (the teacher gathers block ids), not entries. */
static inline bool train_loss_on_blocks(enum train_loss l)
{
	return l == TRAIN_LOSS_BLOCKS || l == TRAIN_LOSS_RANK;
}

/* The selector's forced blocks (sink and local window of own block qb). */
static inline bool train_forced(const struct kb_sparse *sp, uint32_t m, uint32_t qb)
{
	return m < sp->sink || (uint64_t)m + sp->local >= qb;
}

/*
 * The entries the loss sees for a query at position p with ne complete entries: all of them
 * when the forced blocks stay in the loss (the reference implementation), else only those the
 * runtime ranks: from the last entry pooled into the first scored block (max-pool padding 1)
 * to the last entry before the local window.
 */
static inline void train_loss_range(const struct kb_sparse *sp, bool forced_in_loss, uint32_t p,
				    uint32_t ne, uint32_t *j0, uint32_t *j1)
{
	uint32_t qb = p / sp->block, ps = sp->pool_stride;

	*j0 = 0;
	*j1 = ne;
	if (forced_in_loss)
		return;
	*j1 = qb > sp->local ? (qb - sp->local) * ps : 0;
	*j1 = *j1 < ne ? *j1 : ne;
	*j0 = sp->sink ? sp->sink * ps - 1 : 0;
	*j0 = *j0 < *j1 ? *j0 : *j1;
}

/* Block m's pooled value of the entry values v[ne] (the runtime's max-pool window). */
static inline double train_pool_max(const struct kb_sparse *sp, const float *v, uint32_t ne,
				    uint32_t m)
{
	uint32_t lo = m * sp->pool_stride, hi = lo + sp->pool_kernel - sp->pool_pad;
	double mx = 0.0;

	lo = lo > sp->pool_pad ? lo - sp->pool_pad : 0;
	for (uint32_t j = lo; j < hi && j < ne; j++)
		mx = v[j] > mx ? v[j] : mx;
	return mx;
}

/* The blocks the runtime ranks for a query at position p with ne complete entries: past the
 * sink, before the local window, with at least one entry in their pooling window. */
static inline void train_block_range(const struct kb_sparse *sp, uint32_t p, uint32_t ne,
				     uint32_t *m0, uint32_t *m1)
{
	uint32_t qb = p / sp->block, nb = ne ? (ne + sp->pool_pad - 1) / sp->pool_stride + 1 : 0;

	*m1 = qb > sp->local ? qb - sp->local : 0;
	*m1 = *m1 < nb ? *m1 : nb;
	*m0 = sp->sink < *m1 ? sp->sink : *m1;
}

#endif
