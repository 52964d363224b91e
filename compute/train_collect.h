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
/* Teachers (and, for eval, the original selector's blocks now and one token before). */
int train_teacher_seq(struct train_fwd *f, struct train_seq *s, uint32_t l, bool eval);

/* The selector's forced blocks (sink and local window of own block qb). */
static inline bool train_forced(const struct kb_sparse *sp, uint32_t m, uint32_t qb)
{
	return m < sp->sink || (uint64_t)m + sp->local >= qb;
}

#endif
