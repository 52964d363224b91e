/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fitting the Forecast projections: a closed-form ridge regression onto the next layer's
 * pre-RoPE group-mean query (the initial value), then AdamW on the KL loss with a global
 * gradient-norm clip, batches drawn from (seed, step) so a resumed run repeats the same steps.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "train_internal.h"

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void train_kaiming_init(const struct train_ctx *c, float *w, uint32_t slot)
{
	/* kaiming_uniform_ (gain sqrt(2), fan_in): U(-sqrt(6 / fan_in), +sqrt(6 / fan_in)) */
	double b = sqrt(6.0 / c->H);
	uint64_t x = mix(c->o->seed ^ 0x6b61696d696e67ull) ^ ((uint64_t)slot << 32);
	size_t n = (size_t)c->dout * c->H;

	for (size_t i = 0; i < n; i++) {
		double u = (double)(mix(x + i) >> 11) / 9007199254740992.0;

		w[i] = (float)((2.0 * u - 1.0) * b);
	}
}

/* Columns of GRAM_TILE elements per thread and pass in rows_to_cols: one stream of writes per
 * column, all of them in cache. */
#define GRAM_TILE 64

/*
 * dst [w, rows] from the rows of sequences i0..i1-1 (x, or q_mean where is_q, of layer l):
 * element e of the r-th row at e * rows + r. Tiled by columns, so the reads are whole row
 * pieces and the writes advance together; the threads take tiles (the bytes do not depend on
 * their number).
 */
static void rows_to_cols(const struct train_ctx *c, uint32_t i0, uint32_t i1, bool is_q, uint32_t l,
			 uint32_t w, uint32_t rows, uint16_t *dst)
{
	int64_t tiles = (w + GRAM_TILE - 1) / GRAM_TILE;

#pragma omp parallel for schedule(static)
	for (int64_t t = 0; t < tiles; t++) {
		uint32_t e0 = (uint32_t)t * GRAM_TILE, e1 = e0 + GRAM_TILE < w ? e0 + GRAM_TILE : w;

		for (uint32_t r = 0, s = i0; s < i1; s++) {
			const struct train_layer_data *ly = &c->tr.seq[s].ly[l];
			const uint16_t *p = is_q ? ly->q_mean : ly->x;

			for (uint32_t n = 0; n < c->tr.seq[s].nq; n++, r++)
				for (uint32_t e = e0; e < e1; e++)
					dst[(size_t)e * rows + r] = p[(size_t)n * w + e];
		}
	}
}

/*
 * Accumulate A [rows_a, rows_b] += P^T . Q over every training row, where P and Q are bf16
 * row sets (p of layer lp with width wp, either x or q_mean) through the backend GEMM. Where
 * P and Q are the same rows (X^T X), they are laid out and copied once.
 */
static int gram(struct train_ctx *c, bool p_is_q, uint32_t lp, bool q_is_q, uint32_t lq,
		uint32_t wp, uint32_t wq, double *acc)
{
	const struct kb_ops *k = c->kb->ops;
	uint32_t R = c->rows_cap, i = 0;
	bool same = p_is_q == q_is_q && lp == lq && wp == wq;
	int rc;

	while (i < c->tr.n) {
		uint32_t rows = 0, i0 = i;

		for (; i < c->tr.n && rows + c->tr.seq[i].nq <= R; i++)
			rows += c->tr.seq[i].nq;
		if (i == i0)
			return -EINVAL;
		rows_to_cols(c, i0, i, p_is_q, lp, wp, rows, c->h_gt);
		if (!same)
			rows_to_cols(c, i0, i, q_is_q, lq, wq, rows, c->h_xt);
		if ((rc = k->memcpy(c->kb, c->d_gt, c->h_gt, (size_t)wp * rows * 2, KB_H2D,
				    KB_STREAM_COMPUTE)) ||
		    (!same && (rc = k->memcpy(c->kb, c->d_xt, c->h_xt, (size_t)wq * rows * 2,
					      KB_H2D, KB_STREAM_COMPUTE))) ||
		    (rc = k->gemm(c->kb, KB_STREAM_COMPUTE, wp, wq, rows, c->d_gt, rows,
				  same ? c->d_gt : c->d_xt, rows, c->d_dw, wq, true, 1.0f, 0.0f)) ||
		    (rc = k->memcpy(c->kb, c->h_u, c->d_dw, (size_t)wp * wq * 4, KB_D2H,
				    KB_STREAM_COMPUTE)) ||
		    (rc = k->sync(c->kb, KB_STREAM_COMPUTE)))
			return rc;
		for (size_t e = 0; e < (size_t)wp * wq; e++)
			acc[e] += c->h_u[e];
	}
	return 0;
}

/* LAPACK's Cholesky factor and solve where the BLAS library provides them (OpenBLAS does);
 * weak, so a BLAS without LAPACK falls back to the loops below. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info)
    __attribute__((weak));
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
		    const int *lda, double *b, const int *ldb, int *info) __attribute__((weak));

/* In-place Cholesky of the SPD matrix a [n, n] (lower triangle). */
static int cholesky(double *a, uint32_t n)
{
	for (uint32_t j = 0; j < n; j++) {
		double s = a[(size_t)j * n + j];

		for (uint32_t k = 0; k < j; k++)
			s -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
		if (s <= 0.0)
			return -EDOM;
		a[(size_t)j * n + j] = sqrt(s);
		for (uint32_t i = j + 1; i < n; i++) {
			double t = a[(size_t)i * n + j];

			for (uint32_t k = 0; k < j; k++)
				t -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
			a[(size_t)i * n + j] = t / a[(size_t)j * n + j];
		}
	}
	return 0;
}

/* Solve L L^T x = b in place. */
static void chol_solve(const double *l, uint32_t n, double *b)
{
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t k = 0; k < i; k++)
			b[i] -= l[(size_t)i * n + k] * b[k];
		b[i] /= l[(size_t)i * n + i];
	}
	for (uint32_t i = n; i-- > 0;) {
		for (uint32_t k = i + 1; k < n; k++)
			b[i] -= l[(size_t)k * n + i] * b[k];
		b[i] /= l[(size_t)i * n + i];
	}
}

/*
 * The ridge's prior W0 [dout, H], added as lam * W0 to Y^T X: the model's own Forecast where it
 * has one; else the target layer's group-mean query weights with their input norm carried over
 * to the slot's (columns times gamma_tgt / gamma_in: the residual stream changes little from one
 * layer to the next), which for q_curr (in = tgt) is the regression's exact answer.
 */
static void ridge_prior(const struct train_ctx *c, const struct train_slot *s, double lam,
			double *ytx)
{
	const uint16_t *wf = train_model_forecast(c, s);
	const struct model_layer *tl = &c->m->layers[s->tgt], *il = &c->m->layers[s->in];
	uint32_t H = c->H, d = c->d, group = c->n_q / c->n_kv;
	double *ratio;

	if (wf) {
		for (size_t i = 0; i < (size_t)c->dout * H; i++)
			ytx[i] += lam * kb_bf16_to_f32(wf[i]);
		return;
	}
	ratio = malloc(H * sizeof(*ratio));
	if (!ratio || !tl->wq.data || !tl->attn_norm.data || !il->attn_norm.data) {
		free(ratio); /* no prior: the plain ridge */
		return;
	}
	for (uint32_t j = 0; j < H; j++) {
		double gi = kb_bf16_to_f32(il->attn_norm.data[j]);

		ratio[j] = fabs(gi) > 1e-6
			       ? lam * kb_bf16_to_f32(tl->attn_norm.data[j]) / gi / group
			       : 0.0;
	}
	for (uint32_t g = 0; g < c->n_kv; g++)
		for (uint32_t e = 0; e < d; e++) {
			double *row = ytx + ((size_t)g * d + e) * H;

			for (uint32_t h = 0; h < group; h++) {
				const uint16_t *w =
				    tl->wq.data + ((size_t)(g * group + h) * d + e) * H;

				for (uint32_t j = 0; j < H; j++)
					row[j] += ratio[j] * kb_bf16_to_f32(w[j]);
			}
		}
	free(ratio);
}

/*
 * W = Y^T X (X^T X + lambda I)^-1, Y the target layer's pre-RoPE group-mean query. lambda is
 * o->ridge x trace(X^T X) / H; where X^T X + lambda I is not numerically positive definite (an
 * input whose channels are nearly collinear, as the shared activation's are, with a gram
 * summed in fp32 on the GPU), lambda is raised tenfold, at most RIDGE_RETRIES times. The
 * lambda used, per mean diagonal, goes to s->ridge_lambda.
 */
#define RIDGE_RETRIES 4
int train_ridge_init(struct train_ctx *c, struct train_slot *s)
{
	uint32_t H = c->H, D = c->dout;
	size_t nx = (size_t)H * H, ny = (size_t)D * H;
	double *xtx0 = calloc(nx, sizeof(double)), *ytx0 = calloc(ny, sizeof(double));
	double *xtx = malloc(nx * sizeof(double)), *ytx = malloc(ny * sizeof(double));
	double tr = 0.0, diag, lam = 0.0;
	int attempt, rc = -ENOMEM;

	if (!xtx0 || !ytx0 || !xtx || !ytx)
		goto out_free;
	if ((rc = gram(c, false, s->in, false, s->in, H, H, xtx0)) ||
	    (rc = gram(c, true, s->tgt, false, s->in, D, H, ytx0)))
		goto out_free;
	for (uint32_t i = 0; i < H; i++)
		tr += xtx0[(size_t)i * H + i];
	diag = tr > 0.0 ? tr / H : 1.0; /* the mean diagonal */
	for (attempt = 0; attempt <= RIDGE_RETRIES; attempt++) {
		lam = c->o->ridge * diag * pow(10.0, attempt);
		memcpy(xtx, xtx0, nx * sizeof(double));
		memcpy(ytx, ytx0, ny * sizeof(double));
		for (uint32_t i = 0; i < H; i++)
			xtx[(size_t)i * H + i] += lam;
		if (c->o->ridge_prior) /* (X^T X + lam I) W^T = X^T Y + lam W0^T */
			ridge_prior(c, s, lam, ytx);
		if (dpotrf_ && dpotrs_) { /* symmetric: row- and column-major agree; B = ytx rows */
			int n = (int)H, nrhs = (int)D, info = 0;

			dpotrf_("L", &n, xtx, &n, &info);
			if (!info)
				dpotrs_("L", &n, &nrhs, xtx, &n, ytx, &n, &info);
			rc = info ? -EDOM : 0;
		} else if (!(rc = cholesky(xtx, H))) {
			for (uint32_t o = 0; o < D; o++)
				chol_solve(xtx, H, ytx + (size_t)o * H);
		}
		if (!rc)
			break;
	}
	if (rc) {
		rc = train_fail(c, -EINVAL,
				"ridge: X^T X + lambda I is not positive definite (lambda up to "
				"%g, %g x the mean diagonal)",
				lam, c->o->ridge * pow(10.0, RIDGE_RETRIES));
		goto out_free;
	}
	s->ridge_lambda = lam / diag;
	if (attempt)
		log_info("train", "ridge lambda raised: X^T X is ill-conditioned",
			 "input_layer=%u target_layer=%u lambda_per_mean_diag=%g", s->in, s->tgt,
			 lam / diag);
	for (size_t i = 0; i < ny; i++)
		s->w[i] = (float)ytx[i];
out_free:
	free(ytx);
	free(xtx);
	free(ytx0);
	free(xtx0);
	return rc;
}

/* The step's batch: `batch` distinct training sequences drawn from (seed, step). */
static void pick_batch(const struct train_ctx *c, uint32_t step, uint32_t *idx, uint32_t *n)
{
	uint32_t N = c->tr.n, B = c->o->batch < N ? c->o->batch : N;
	uint64_t x = mix(c->o->seed) ^ mix((uint64_t)step + 0x7374657000000000ull);

	for (uint32_t i = 0; i < N; i++)
		idx[i] = i;
	for (uint32_t i = 0; i < B; i++) {
		uint32_t j = i + (uint32_t)(mix(x + i) % (N - i)), t = idx[i];

		idx[i] = idx[j];
		idx[j] = t;
	}
	*n = B;
}

static void adamw(const struct train_ctx *c, struct train_slot *s, double clip_mul, uint32_t t)
{
	const double b1 = 0.9, b2 = 0.95, eps = 1e-6, lr = c->o->lr;
	double c1 = 1.0 - pow(b1, t), c2 = 1.0 - pow(b2, t);
	size_t n = (size_t)c->dout * c->H;

	for (size_t i = 0; i < n; i++) {
		double g = s->g[i] * clip_mul, w = s->w[i];

		w -= lr * c->o->weight_decay * w;
		s->m[i] = (float)(b1 * s->m[i] + (1.0 - b1) * g);
		s->v[i] = (float)(b2 * s->v[i] + (1.0 - b2) * g * g);
		w -= lr * (s->m[i] / c1) / (sqrt(s->v[i] / c2) + eps);
		s->w[i] = (float)w;
	}
}

/* One step over every slot: gradients (with the L2-SP term), global clip, AdamW. *loss gets
 * the mean training loss without the penalty. */
static int fit_step(struct train_ctx *c, uint32_t step, uint32_t *idx, double *loss)
{
	size_t n = (size_t)c->dout * c->H;
	double sq = 0.0, sum = 0.0, mul = 1.0, l;
	uint32_t nb;
	int rc;

	pick_batch(c, step, idx, &nb);
	for (uint32_t k = 0; k < c->n_slots; k++) {
		struct train_slot *s = &c->slots[k];

		if ((rc = train_slot_loss(c, s, s->w, &c->tr, idx, nb, s->g, &l)))
			return train_fail(c, rc, "step %u: loss of projection %u failed", step, k);
		sum += l;
		for (size_t i = 0; s->w0 && i < n; i++) /* L2-SP: towards the ridge start */
			s->g[i] += c->o->l2sp * (s->w[i] - s->w0[i]);
		for (size_t i = 0; i < n; i++)
			sq += (double)s->g[i] * s->g[i];
	}
	if (c->o->grad_clip > 0.0f && sqrt(sq) > c->o->grad_clip)
		mul = c->o->grad_clip / sqrt(sq);
	for (uint32_t k = 0; k < c->n_slots; k++)
		adamw(c, &c->slots[k], mul, step + 1);
	*loss = sum / c->n_slots;
	return 0;
}

/* Validation recall of every slot's current weight; keep it where it beats the best so far. */
static int val_check(struct train_ctx *c, uint32_t step)
{
	size_t n = (size_t)c->dout * c->H;
	struct train_eval e;
	int rc;

	for (uint32_t k = 0; k < c->n_slots; k++) {
		struct train_slot *s = &c->slots[k];

		if ((rc = train_eval_slot(c, &c->va, s, s->w, &e)))
			return train_fail(c, rc, "step %u: validation of projection %u failed",
					  step, k);
		if (step == 0 || e.recall > s->best_recall) {
			s->best_recall = e.recall;
			s->best_step = step;
			memcpy(s->best, s->w, n * sizeof(float));
		}
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int train_fit(struct train_ctx *c, struct train_report *rep)
{
	const struct train_opts *o = c->o;
	struct train_progress pr = {.phase = TRAIN_PHASE_FIT, .total = o->steps};
	uint32_t start = 0, *idx = malloc(c->tr.n * sizeof(uint32_t));
	double t0 = now_s(), t_loop = t0, t_val = 0.0;
	int rc = 0;

	if (!idx)
		return train_fail(c, -ENOMEM, "out of memory");
	if (o->checkpoint) {
		rc = train_ckpt_load(c, o->checkpoint, &start);
		if (rc == -ENOENT)
			rc = 0;
		else if (rc)
			goto out;
		else
			pr.resumed = true;
	}
	rep->start_step = start;
	pr.start = start;
	if (o->val && start == 0 && (rc = val_check(c, 0)))
		goto out;
	t_loop = now_s();
	rep->steps = o->steps > start ? o->steps : start;
	for (uint32_t step = start; step < o->steps; step++) {
		if ((rc = fit_step(c, step, idx, &pr.loss)))
			goto out;
		pr.done = step + 1;
		if (o->val &&
		    (pr.done == o->steps || (o->val_every && pr.done % o->val_every == 0))) {
			double tv = now_s();

			if ((rc = val_check(c, pr.done)))
				goto out;
			t_val += now_s() - tv;
		}
		pr.elapsed_s = now_s() - t0;
		if (o->checkpoint && o->checkpoint_every && pr.done % o->checkpoint_every == 0 &&
		    pr.done < o->steps && (rc = train_ckpt_save(c, o->checkpoint, pr.done)))
			goto out;
		if (o->progress && o->progress(o->progress_ctx, &pr)) {
			rc = train_fail(c, -ECANCELED, "stopped at step %u", pr.done);
			goto out;
		}
		pr.resumed = false;
	}
	if (o->steps > start)
		rep->step_s = (now_s() - t_loop - t_val) / (o->steps - start);
	if (o->checkpoint && (rc = train_ckpt_save(c, o->checkpoint, rep->steps)))
		goto out;
	for (uint32_t k = 0; o->val && k < c->n_slots; k++) /* what is written: the best */
		memcpy(c->slots[k].w, c->slots[k].best, (size_t)c->dout * c->H * sizeof(float));
out:
	free(idx);
	return rc;
}
