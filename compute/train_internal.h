/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Forecast training's private state, shared by train.c (orchestration), train_collect.c (the
 * frozen forward and the teachers), train_grad.c (loss, gradients, projections through the
 * backend GEMM), train_fit.c (ridge + AdamW), train_eval.c (report) and train_io.c (files).
 */
#ifndef SPARDA_COMPUTE_TRAIN_INTERNAL_H
#define SPARDA_COMPUTE_TRAIN_INTERNAL_H

#include "train.h"

/* What one sequence yields for one layer at its sampled query positions. */
struct train_layer_data {
	uint16_t *x;	   /* [nq, hidden] the RMSNorm output feeding Q/K/V/F of the layer */
	uint16_t *ck;	   /* [n_kv, n_ent, d] compressed keys (inference grid, post-RoPE) */
	int32_t *tidx;	   /* [nq, n_kv, gmax] entries of the teacher's top-k blocks */
	float *tp;	   /* [nq, n_kv, gmax] teacher probabilities of those entries */
	int32_t *tn;	   /* [nq, n_kv] entries gathered */
	float *trest;	   /* [nq, n_kv] the rest bin */
	int32_t *sel_true; /* held-out: [nq, n_kv, topk] the original selector's blocks */
	int32_t *sel_prev; /* held-out: the same for the previous token (previous decode step) */
	uint16_t *q_mean;  /* [nq, n_kv * d] pre-RoPE group-mean query (ridge target) */
};

struct train_seq {
	uint32_t t, nq, n_ent; /* tokens, sampled queries, compressed entries of all t tokens */
	int32_t *pos;	       /* [nq] sampled positions */
	struct train_layer_data *ly; /* [n_layers] */
};

struct train_data {
	uint32_t n;
	struct train_seq *seq;
	uint64_t queries; /* sum of nq */
	uint64_t bytes;	  /* host memory the collected arrays hold */
};

/* One trained projection: the Forecast of in_layer predicting tgt_layer (or q_curr). */
struct train_slot {
	uint32_t in, tgt;
	bool curr;
	float *w, *m, *v, *g; /* [dout, hidden] fp32 master weight, AdamW moments, gradient */
	float *best;	      /* with validation: the weight of the best validation recall */
	float *w0;	      /* with l2sp: the ridge start the penalty pulls towards */
	double best_recall;
	uint32_t best_step;
	double ridge_lambda; /* the ridge's lambda per mean diagonal of X^T X (train_ridge_init) */
};

struct train_ctx {
	struct kb *kb;
	const struct model *m;
	const struct train_opts *o;
	uint32_t L, H, d, n_kv, n_q, dout, gmax, kf, kst, topk, qstart; /* kf/kst: teacher grid */
	struct kb_sparse sp;
	float scale, mscale;
	bool teacher;	  /* collect the teacher (not for TRAIN_FIT_RIDGE) */
	bool eval_target; /* train_eval_slot ranks by the target's group-mean query, not by w */
	float *inv_freq;  /* host [d / 2] */
	struct train_data tr, ev, va; /* training, held-out, validation (may be empty) */
	uint32_t n_slots;
	struct train_slot *slots;
	/* backend buffers of the projection GEMMs, sized for rows_cap rows */
	uint32_t rows_cap;
	uint16_t *d_x, *d_w, *d_gt, *d_xt;
	float *d_u, *d_dw;
	uint16_t *h_xt, *h_gt; /* host staging [hidden or dout, rows_cap] */
	float *h_u;	       /* [rows_cap, dout] */
	/* the student logits of one (sequence, KV head): F [nq, d], K [n_ent, d] or K^T,
	 * z [nq, n_ent] (also dF [nq, d]), C = dKL/dz [nq, n_ent]; sized for the largest */
	bool logits_gemm; /* the logits through the backend GEMM (else on the host) */
	uint16_t *d_f, *d_ck, *d_c, *h_f, *h_c;
	float *d_z, *h_z;
	char *err;
	size_t err_len;
};

/* Record a message (printf-style) in ctx->err and return rc. */
int train_fail(struct train_ctx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* train_collect.c: run the frozen model over a set, filling data (eval: also selections). */
int train_collect(struct train_ctx *c, const struct calib_set *set, bool eval,
		  struct train_data *data);
void train_data_fini(struct train_ctx *c, struct train_data *data);

/* train_loss.c */
/*
 * KL over n logits s (in: logits, out: the student's probabilities) restricted to the bins
 * idx[n_g] (teacher tp) plus the rest bin t_rest; coef (may be NULL) gets dKL/dlogit [n].
 */
double train_kl_logits(double *s, uint32_t n, const int32_t *idx, const float *tp, uint32_t n_g,
		       float t_rest, double *coef);
/*
 * The block loss from entry logits z[n_ent]: block logits max-pooled as the runtime does over
 * blocks [m0, m1) (idx relative to m0); coef (may be NULL) gets dKL/dz [n_ent] (through each
 * block's arg-max entry). work holds 3 * (m1 - m0) doubles.
 */
double train_kl_blocks_z(const double *z, uint32_t n_ent, const struct kb_sparse *sp, uint32_t m0,
			 uint32_t m1, const int32_t *idx, const float *tp, uint32_t n_g,
			 float t_rest, double *coef, double *work);

/*
 * The ranking loss from entry logits z[n_ent] over blocks [m0, m1) (max-pooled as the runtime
 * does, times gamma; positives idx[n_g] relative to m0); coef (may be NULL) gets dL/dz
 * [n_ent]. work holds 3 * (m1 - m0) doubles.
 */
double train_rank_blocks_z(const double *z, uint32_t n_ent, const struct kb_sparse *sp, uint32_t m0,
			   uint32_t m1, const int32_t *idx, uint32_t n_g, double gamma,
			   double *coef, double *work);

/* train_grad.c */
#define TRAIN_MAX_THREADS 64
/* Host threads of the per-query loss (opts host_threads, else the online CPUs). */
uint32_t train_host_threads(const struct train_ctx *c);
/* Host RoPE of one d-vector at position pos (the backend's convention); inverse if `inv`. */
void train_rope(const struct train_ctx *c, float *v, int32_t pos, bool inv);
int train_grad_open(struct train_ctx *c, uint32_t rows_cap);
void train_grad_close(struct train_ctx *c);
/*
 * Mean KL of slot s with weight w over sequences seqs[n] of data; if grad != NULL it receives
 * d(mean KL)/dw [dout, hidden]. *n_rows gets the query rows used (may be NULL).
 */
int train_slot_loss(struct train_ctx *c, const struct train_slot *s, const float *w,
		    const struct train_data *data, const uint32_t *seqs, uint32_t n, float *grad,
		    double *loss);
/* Project the rows of one sequence: u [nq, dout] = x . bf16(w)^T through the backend. */
int train_project(struct train_ctx *c, const uint16_t *x, uint32_t rows, const float *w, float *u);

/* train_fit.c */
int train_ridge_init(struct train_ctx *c, struct train_slot *s);
void train_kaiming_init(const struct train_ctx *c, float *w, uint32_t slot);
/* The model's own Forecast for slot s (bf16 [dout, H]), or NULL when it has none of that shape. */
const uint16_t *train_model_forecast(const struct train_ctx *c, const struct train_slot *s);
int train_fit(struct train_ctx *c, struct train_report *rep);

/* train_eval.c: held-out figures of weight w for slot s */
struct train_eval {
	double kl;
	double recall;		/* vs the original selector's scored blocks */
	double recall_prev;	/* the previous token's original selection vs the same */
	double recall_teacher;	/* vs the teacher's scored top-k blocks (what the KL trains) */
	double teacher_vs_true; /* the teacher's scored blocks the original selector also picks */
	/* kl, recall_teacher and teacher_vs_true are NAN without the teacher (TRAIN_FIT_RIDGE) */
};
/* ... on `set` (the held-out or the validation sequences, collected with eval) */
int train_eval_slot(struct train_ctx *c, const struct train_data *set, const struct train_slot *s,
		    const float *w, struct train_eval *out);

/* train_io.c */
uint64_t train_fingerprint(const struct train_ctx *c);
/* Load a checkpoint into the slots; *step gets its step; -ENOENT when there is none. */
int train_ckpt_load(struct train_ctx *c, const char *path, uint32_t *step);
int train_ckpt_save(struct train_ctx *c, const char *path, uint32_t step);
/* The Forecast file, with the fit and rep's mean recalls in its metadata. */
int train_write_forecast(struct train_ctx *c, const char *path, const struct train_report *rep);

#endif
