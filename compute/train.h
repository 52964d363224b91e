/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Forecast training (DESIGN 4, METHOD 5): distil the original block selector of layer l+1 into
 * the Forecast projection W_F(l) of a frozen model (and layer 0's own q_curr_proj), write the
 * Forecast safetensors file and measure recall on held-out sequences against two baselines.
 */
#ifndef SPARDA_COMPUTE_TRAIN_H
#define SPARDA_COMPUTE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "calib.h"
#include "model.h"

#define TRAIN_TEACHER_SELECTOR UINT32_MAX

/*
 * The KL's bins (PAPER is the default). All three gather the teacher's scored top-k blocks
 * plus one rest bin.
 *  PAPER:   compressed entries, the forced blocks' entries in both softmaxes and their mass
 *           in the rest bin (the reference implementation, METHOD 5);
 *  SCORED:  compressed entries of the blocks the runtime ranks only (forced blocks are
 *           selected whatever their scores);
 *  BLOCKS:  the runtime's block scores (max-pooled entry scores) of the blocks it ranks.
 *  RANK:    not a KL: a multi-label ranking loss over the same block scores, the teacher's
 *           scored top-k blocks the positives and the other ranked blocks the negatives,
 *           log(1 + sum_pos sum_neg exp(s_neg - s_pos)) (train_rank_grad_blocks): it asks
 *           only that the teacher's blocks outrank the others, which is what recall counts.
 */
enum train_loss {
	TRAIN_LOSS_PAPER = 0,
	TRAIN_LOSS_SCORED = 1,
	TRAIN_LOSS_BLOCKS = 2,
	TRAIN_LOSS_RANK = 3
};

/*
 * How the projections are fitted. ADAMW (the default): the ridge start, then AdamW on the KL
 * with the teacher. RIDGE: the closed-form ridge only; the collection skips the teacher (and
 * the fine-grid keys), so the run is a few forward passes and one solve per projection, and
 * the report holds the recall figures but no KL or teacher figures. steps, batch, lr, val,
 * checkpoint, loss and teacher_kernel are then not used.
 */
enum train_fit { TRAIN_FIT_ADAMW = 0, TRAIN_FIT_RIDGE = 1 };

enum train_phase { TRAIN_PHASE_COLLECT = 0, TRAIN_PHASE_FIT = 1, TRAIN_PHASE_EVAL = 2 };

/* What the progress callback sees. `done` of `total` sequences (COLLECT, EVAL) or steps (FIT). */
struct train_progress {
	enum train_phase phase;
	uint32_t done, total;
	uint32_t start;	  /* FIT: the step this run began at (> 0 when resumed) */
	double loss;	  /* FIT: mean KL over the layers of this step's batch */
	double elapsed_s; /* since the phase began */
	bool resumed;	  /* FIT: the run continues from a checkpoint (first call only) */
};

struct train_opts {
	const struct calib_set *train;	 /* calibration sequences the fit uses */
	const struct calib_set *heldout; /* sequences for the report (never fitted) */
	/*
	 * Validation sequences (NULL: none). With them, each projection's recall on them is
	 * measured at the ridge start and every val_every steps (and at the last), and the
	 * weight of the best one (the earliest on ties) is the one written: the AdamW phase
	 * never ends below the ridge start on these sequences.
	 */
	const struct calib_set *val;
	uint32_t val_every;
	enum train_fit fit; /* TRAIN_FIT_ADAMW (default) or TRAIN_FIT_RIDGE */
	uint32_t steps;	    /* AdamW steps (0: ridge initialisation only) */
	uint32_t batch;	    /* sequences per step (<= train->n_seqs) */
	float lr;	    /* AdamW learning rate (constant) */
	float weight_decay; /* AdamW decoupled weight decay (paper 0.01) */
	/* L2-SP: l2sp / 2 x ||W - W_ridge||^2 added to each projection's loss (in the gradient
	 * before the clip, so AdamW sees it), pulling W towards its ridge start (0: none) */
	float l2sp;
	float rank_gamma;      /* TRAIN_LOSS_RANK: the block scores' multiplier (default 1) */
	float grad_clip;       /* global gradient-norm clip (paper 0.5; 0 = none) */
	float ridge;	       /* ridge lambda relative to trace(X^T X) / hidden */
	bool ridge_prior;      /* shrink the ridge towards the model's own Forecast (without one:
				* the target layer's group-mean query weights), not 0 */
	uint64_t seed;	       /* batches and the untrained baseline's init */
	uint32_t query_stride; /* every n-th query position is a training/eval sample */
	uint32_t query_start;  /* first sampled position (0: max(dense_len, topk * block)) */
	uint32_t max_queries;  /* per sequence (0: no cap; else evenly spread, jittered) */
	uint32_t host_threads; /* per-query loss threads (0: 1 on the CPU backend, else all) */
	enum train_loss loss;  /* what the KL compares (TRAIN_LOSS_*) */
	/* student logits and their gradient on the host in double (train_kl_grad*, the checked
	 * reference) instead of through the backend GEMM (bf16 F, the runtime's scoring) */
	bool logits_host;
	/* teacher grid: kernel teacher_kernel, stride 1 (0: train_fine_kernel, the paper's);
	 * TRAIN_TEACHER_SELECTOR: the inference grid, i.e. the runtime's original selector */
	uint32_t teacher_kernel;
	const char *checkpoint;	   /* NULL: none; else resumed from when present, written to */
	uint32_t checkpoint_every; /* steps between checkpoints (0: only at the end) */
	/*
	 * Called on progress (may be NULL). Returning nonzero stops the run with -ECANCELED
	 * after the last checkpoint written (how an interrupted run is simulated in tests).
	 */
	int (*progress)(void *ctx, const struct train_progress *p);
	void *progress_ctx;
};

/* Held-out figures of one trained projection. Recall counts the true selector's scored
 * (non-forced) blocks; KL is the training loss (METHOD 5) on the held-out queries. */
struct train_layer_report {
	uint32_t in_layer;  /* the layer whose RMSNorm output feeds the projection */
	uint32_t tgt_layer; /* the layer whose selection it predicts */
	bool curr;	    /* q_curr_proj of layer 0 (in == tgt == 0) */
	double kl_untrained, kl_ridge, kl_trained;
	double recall_untrained, recall_ridge, recall_trained, recall_prev_step;
	/* the Forecast the model was opened with (e.g. the synthetic generator's); -1: none */
	double recall_model;
	/* ranking by the target layer's own pre-RoPE group-mean query, the ridge's regression
	 * target: what a perfect regression would reach (the ceiling of that target) */
	double recall_target;
	/* recall against the teacher's scored top-k blocks (the fine grid the KL distils) */
	double teacher_recall_untrained, teacher_recall_ridge, teacher_recall_trained;
	/* the teacher's scored blocks that the original selector also picks */
	double teacher_agreement;
	uint32_t best_step; /* the step whose weight was written (steps without validation) */
	/* the ridge's lambda per mean diagonal of X^T X: train_opts.ridge, or that raised tenfold
	 * until X^T X + lambda I factorised */
	double ridge_lambda;
};

struct train_report {
	enum train_fit fit;
	bool kl_measured; /* KL and teacher figures are there (not with TRAIN_FIT_RIDGE) */
	uint32_t n_slots; /* projections trained: n_layers - 1 Forecasts + q_curr */
	struct train_layer_report *layers;    /* n_slots entries, owned (train_report_fini) */
	uint32_t start_step, steps;	      /* start_step > 0 when resumed from a checkpoint */
	uint64_t train_queries, eval_queries; /* sampled query positions (per KV head x n_kv) */
	uint64_t host_bytes;		      /* host memory of the collected data */
	uint32_t fine_kernel, fine_stride;    /* the teacher's grid */
	double collect_s, fit_s, eval_s;
	double ridge_s; /* of fit_s: the ridge regressions (grams and solves) */
	double step_s; /* mean seconds per AdamW step run here (0 when none ran) */
	/* train_forecast_dir only: the fit was not written, the model's own Forecast scored at
	 * least as well on the held-out sequences (train_dir_opts.keep_better) */
	bool kept_model;
};

/* Defaults scaled for the tiny model (METHOD 5 lists the paper's). */
void train_opts_default(struct train_opts *o);

/*
 * Train every Forecast projection of `m` (the backbone is read, never changed) on kb, write the
 * Forecast file to out_path (bf16 [n_kv * head_dim, hidden]: q_future_proj of layers
 * 0 .. n_layers-2 and q_curr_proj of layer 0; its safetensors metadata says how it was fitted
 * and its held-out recall, see train_file_info) and fill *rep (caller frees with
 * train_report_fini; after a failure there is nothing to free). Deterministic for a fixed seed, data and backend thread count.
 * Returns 0 or -errno: -EINVAL (bad options, a sequence too short for the sparse config, a
 * checkpoint made with other settings), -ENOMEM, -EIO (backend), -ECANCELED (progress asked to
 * stop), errors of writing the files; `err` then says what failed.
 */
int train_forecast(struct kb *kb, const struct model *m, const struct train_opts *o,
		   const char *out_path, struct train_report *rep, char *err, size_t err_len);
void train_report_fini(struct train_report *rep);

/*
 * What a Forecast file says about itself: train_forecast writes "sparda.forecast.fit"
 * ("ridge" or "adamw") and the mean held-out recalls into its "__metadata__"; a file without
 * them (the synthetic generator's, or one from elsewhere) counts as untrained.
 */
struct train_file_info {
	bool trained;
	char fit[16];		 /* "ridge", "adamw", or "" when untrained */
	double recall;		 /* held-out recall of the written weights (-1: not recorded) */
	double recall_untrained; /* of the untrained (Kaiming) baseline (-1: not recorded) */
};
/* Returns 0, or -errno of opening the file (-ENOENT, -EINVAL for a bad file). */
int train_file_info(const char *path, struct train_file_info *info);

/*
 * The ridge-only fit of a model directory's Forecast (train_forecast_dir): the model in dir,
 * synthetic calibration sequences, the result written to dir/forecast.safetensors. The file
 * that was there (the generator's) is the report's "model" column; with keep_better the fit
 * replaces it only when its mean held-out recall is higher (the generator's noisy copy of the
 * next layer's query weights beat a ridge fit from too few rows on the 8B presets: 0.705
 * against 0.605 held out, 0.325 against 0.196 at run time at 128K).
 */
struct train_dir_opts {
	const char *backend;   /* "auto" (CUDA when present), "cpu" or "cuda" */
	uint32_t threads;      /* CPU backend threads (0: all) */
	uint32_t seqs;	       /* training sequences (0: train_dir_auto_seqs) */
	uint32_t heldout;      /* held-out sequences of the report */
	uint32_t seq_len;      /* tokens per sequence (0: twice the first sampled position) */
	uint32_t query_stride; /* every n-th position past the first is sampled */
	uint32_t max_queries;  /* sampled positions per sequence (0: no cap) */
	uint64_t seed;
	bool keep_better;      /* keep the model's Forecast when the fit does not beat it */
	bool ridge_prior;      /* train_opts.ridge_prior: shrink towards the model's Forecast */
};

/*
 * Defaults: auto backend, 1 thread, seqs 0 (automatic) + 2 held out, seq_len 0, query stride
 * 2, at most 1024 queries per sequence, seed 1, keep_better, ridge_prior.
 */
void train_dir_opts_default(struct train_dir_opts *o);

/*
 * The automatic number of training sequences: enough for TRAIN_DIR_ROWS_PER_HIDDEN sampled
 * rows per hidden unit, within [TRAIN_DIR_MIN_SEQS, TRAIN_DIR_MAX_SEQS]. The tiny model samples
 * 512 of its 2048 tokens (4 sequences: 2048 rows for a hidden size of 256); an 8B shape's
 * 16K-token sequences give 1024 rows each (12 sequences for 4096). With 4 of them (one row
 * per hidden unit) the fit held out 0.605-0.622 on the MiniCPM4.1-8B shape, below the
 * generator's 0.705; with 12, 0.722 (H200 host, docs/training.md).
 */
#define TRAIN_DIR_ROWS_PER_HIDDEN 3u
#define TRAIN_DIR_MIN_SEQS 4u
#define TRAIN_DIR_MAX_SEQS 64u
uint32_t train_dir_auto_seqs(const struct model_config *mc, const struct train_dir_opts *o,
			     uint32_t seq_len);

/*
 * Fit dir's Forecast with TRAIN_FIT_RIDGE and write dir/forecast.safetensors (atomically),
 * unless keep_better and the Forecast already there scores at least as well (rep->kept_model).
 * Deterministic for fixed options, model and backend. Fills *rep (train_report_fini).
 * Returns 0 or -errno with a message in err.
 */
int train_forecast_dir(const char *dir, const struct train_dir_opts *o, struct train_report *rep,
		       char *err, size_t err_len);

/* Open the backend by name ("auto": CUDA when available, else the CPU). -EINVAL: bad name. */
int train_open_backend(const char *name, uint32_t threads, struct kb **kb);

/* Mean over the projections of one report field (by offset into train_layer_report). */
double train_report_mean(const struct train_report *rep, size_t field_offset);

/*
 * The first sampled query position of a training sequence: query_start, or without one
 * max(dense_len, topk x block) (model_first_sparse_pos); at least one block (the previous
 * token must exist).
 */
uint32_t train_first_query(const struct model_config *mc, uint32_t query_start);

/*
 * Fine teacher grid kernel for a sparse config: ck_kernel / 16, at least 2 (the paper's 32/16
 * grid gives 2, the tiny model's 8/4 grid gives 2). The stride is always 1.
 */
uint32_t train_fine_kernel(const struct kb_sparse *sp);

/*
 * The loss of one query of one KV group and its gradient. f: the Forecast vector (post-RoPE,
 * d floats); ck: the target layer's compressed keys of this group (n_ent rows of d, bf16);
 * the teacher's gathered entries idx[n_g] with probabilities tp[n_g] and the rest bin t_rest
 * (together summing to 1). Returns KL(teacher || student) with the student
 * softmax(f . ck_j * scale) over the n_ent entries restricted to the same bins (each clamped to
 * 1e-8 and renormalised). If gf != NULL it receives dKL/df (d floats). work holds 2 * n_ent
 * doubles. Pure host function.
 */
double train_kl_grad(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d, float scale,
		     const int32_t *idx, const float *tp, uint32_t n_g, float t_rest, float *gf,
		     double *work);

/*
 * The same loss over the runtime's block scores: block m's student logit is the max of its
 * pooling window's entry logits (kernel pool_kernel, stride pool_stride, padding pool_pad of
 * sp); the softmax covers blocks [m0, m1) (every block must have an entry below n_ent); idx are
 * block ids minus m0. work holds 3 * n_ent + 3 doubles.
 */
double train_kl_grad_blocks(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d,
			    float scale, const struct kb_sparse *sp, uint32_t m0, uint32_t m1,
			    const int32_t *idx, const float *tp, uint32_t n_g, float t_rest,
			    float *gf, double *work);

/*
 * The ranking loss (TRAIN_LOSS_RANK) over the same block scores b_m = gamma x scale x the
 * pooled max of f . ck_j, m in [m0, m1): with P the blocks idx[n_g] (relative to m0) and N the
 * others, returns log(1 + sum_{p in P, n in N} exp(b_n - b_p)) (0 when P or N is empty); a
 * large gamma makes it a soft hinge on the hardest pair. If gf != NULL it receives the
 * gradient over f. work holds 3 * n_ent + 3 doubles.
 */
double train_rank_grad_blocks(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d,
			      float scale, const struct kb_sparse *sp, uint32_t m0, uint32_t m1,
			      const int32_t *idx, uint32_t n_g, double gamma, float *gf,
			      double *work);

#endif
