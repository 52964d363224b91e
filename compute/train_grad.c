/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Forecast training loss and its analytic gradient. The projections u = x . W^T and the
 * weight gradient dW = G^T . X run through the backend's GEMM (cuBLAS on CUDA, OpenBLAS on the
 * CPU) with bf16 operands and fp32 results; RoPE, the per-query softmax over the target layer's
 * compressed keys and the KL with its rest bin run on the host in double precision.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train_collect.h"

#define TRAIN_CLAMP 1e-8

/* Scaled logits z_j = scale * f . ck_j of n entries into z. */
static void logits(const float *f, const uint16_t *ck, uint32_t n, uint32_t d, float scale,
		   double *z)
{
	for (uint32_t j = 0; j < n; j++) {
		const uint16_t *k = ck + (size_t)j * d;
		double dot = 0.0;

		for (uint32_t e = 0; e < d; e++)
			dot += (double)f[e] * kb_bf16_to_f32(k[e]);
		z[j] = dot * scale;
	}
}

/*
 * KL(teacher || softmax(z)) over the n bins of z restricted to the gathered bins idx[n_g] plus
 * a rest bin (both sides clamped at 1e-8 and renormalised). s: z in, the student's
 * probabilities out. If coef != NULL it receives dKL/dz [n].
 */
static double kl_logits(double *s, uint32_t n, const int32_t *idx, const float *tp, uint32_t n_g,
			float t_rest, double *coef)
{
	double mx = -INFINITY, sum = 0.0, s_g = 0.0, s_r, h_r, z, kl = 0.0, a_r, cc = 0.0;

	for (uint32_t j = 0; j < n; j++)
		mx = s[j] > mx ? s[j] : mx;
	for (uint32_t j = 0; j < n; j++) {
		s[j] = exp(s[j] - mx);
		sum += s[j];
	}
	for (uint32_t j = 0; j < n; j++)
		s[j] /= sum;
	for (uint32_t i = 0; i < n_g; i++)
		s_g += s[idx[i]];
	s_r = 1.0 - s_g > 0.0 ? 1.0 - s_g : 0.0;
	h_r = s_r > TRAIN_CLAMP ? s_r : TRAIN_CLAMP;
	z = h_r;
	for (uint32_t i = 0; i < n_g; i++)
		z += s[idx[i]] > TRAIN_CLAMP ? s[idx[i]] : TRAIN_CLAMP;
	for (uint32_t i = 0; i < n_g; i++) {
		double h = s[idx[i]] > TRAIN_CLAMP ? s[idx[i]] : TRAIN_CLAMP;

		kl += tp[i] * (log((double)tp[i]) - log(h / z));
	}
	kl += t_rest * (log((double)t_rest) - log(h_r / z));
	if (!coef)
		return kl;
	/* dKL/dS^_i = -p_i / S^_i + 1 / Z where not clamped (sum p = 1); chain through the
	 * softmax: dz_m = S_m ([m gathered] (a_m - a_r) - c), c = sum_G a_i S_i - a_r S_G. */
	a_r = s_r > TRAIN_CLAMP ? -t_rest / h_r + 1.0 / z : 0.0;
	for (uint32_t i = 0; i < n_g; i++) {
		double si = s[idx[i]];

		cc += (si > TRAIN_CLAMP ? -tp[i] / si + 1.0 / z : 0.0) * si;
	}
	cc -= a_r * s_g;
	for (uint32_t j = 0; j < n; j++)
		coef[j] = -s[j] * cc;
	for (uint32_t i = 0; i < n_g; i++) {
		double si = s[idx[i]];

		coef[idx[i]] += si * ((si > TRAIN_CLAMP ? -tp[i] / si + 1.0 / z : 0.0) - a_r);
	}
	return kl;
}

double train_kl_grad(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d, float scale,
		     const int32_t *idx, const float *tp, uint32_t n_g, float t_rest, float *gf,
		     double *work)
{
	double *s = work, *coef = work + n_ent, kl;

	logits(f, ck, n_ent, d, scale, s);
	kl = kl_logits(s, n_ent, idx, tp, n_g, t_rest, gf ? coef : NULL);
	for (uint32_t e = 0; gf && e < d; e++) {
		double acc = 0.0;

		for (uint32_t j = 0; j < n_ent; j++)
			acc += coef[j] * kb_bf16_to_f32(ck[(size_t)j * d + e]);
		gf[e] = (float)(acc * scale);
	}
	return kl;
}

double train_kl_grad_blocks(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d,
			    float scale, const struct kb_sparse *sp, uint32_t m0, uint32_t m1,
			    const int32_t *idx, const float *tp, uint32_t n_g, float t_rest,
			    float *gf, double *work)
{
	uint32_t nb = m1 - m0, ps = sp->pool_stride, pad = sp->pool_pad, pk = sp->pool_kernel;
	double *z = work, *b = work + n_ent, *coef = b + nb, *arg = coef + nb, kl;

	logits(f, ck, n_ent, d, scale, z);
	/* the runtime's block score: max over the pooling window of the entries' scores */
	for (uint32_t m = m0; m < m1; m++) {
		uint32_t lo = m * ps > pad ? m * ps - pad : 0, hi = m * ps + pk - pad;
		double best = -INFINITY;
		uint32_t at = lo;

		for (uint32_t j = lo; j < hi && j < n_ent; j++)
			if (z[j] > best) {
				best = z[j];
				at = j;
			}
		b[m - m0] = best;
		arg[m - m0] = at;
	}
	kl = kl_logits(b, nb, idx, tp, n_g, t_rest, gf ? coef : NULL);
	for (uint32_t e = 0; gf && e < d; e++) {
		double acc = 0.0;

		for (uint32_t m = 0; m < nb; m++)
			acc += coef[m] * kb_bf16_to_f32(ck[(size_t)arg[m] * d + e]);
		gf[e] = (float)(acc * scale);
	}
	return kl;
}

void train_rope(const struct train_ctx *c, float *v, int32_t pos, bool transpose)
{
	uint32_t half = c->d / 2;

	for (uint32_t i = 0; i < half; i++) {
		/* the angle rounded to fp32 as the backends compute it */
		float a = (float)pos * c->inv_freq[i];
		double cs = cos((double)a) * c->mscale, sn = sin((double)a) * c->mscale;
		double x0 = v[i], x1 = v[i + half];

		if (transpose)
			sn = -sn;
		v[i] = (float)(x0 * cs - x1 * sn);
		v[i + half] = (float)(x1 * cs + x0 * sn);
	}
}

int train_grad_open(struct train_ctx *c, uint32_t rows_cap)
{
	struct kb *kb = c->kb;
	size_t R = rows_cap ? rows_cap : 1, H = c->H, D = c->dout;
	int rc;

	size_t M = D > H ? D : H;

	c->rows_cap = (uint32_t)R;
	c->h_xt = malloc(H * R * 2);
	c->h_gt = malloc((M * R > D * H ? M * R : D * H) * 2);
	c->h_u = malloc((R * D > M * H ? R * D : M * H) * 4);
	if (!c->h_xt || !c->h_gt || !c->h_u)
		return -ENOMEM;
	if ((rc = kb->ops->alloc(kb, R * H * 2, (void **)&c->d_x)) ||
	    (rc = kb->ops->alloc(kb, D * H * 2, (void **)&c->d_w)) ||
	    (rc = kb->ops->alloc(kb, M * R * 2, (void **)&c->d_gt)) ||
	    (rc = kb->ops->alloc(kb, H * R * 2, (void **)&c->d_xt)) ||
	    (rc = kb->ops->alloc(kb, R * D * 4, (void **)&c->d_u)) ||
	    (rc = kb->ops->alloc(kb, M * H * 4, (void **)&c->d_dw)))
		return rc;
	return 0;
}

void train_grad_close(struct train_ctx *c)
{
	void *p[] = {c->d_x, c->d_w, c->d_gt, c->d_xt, c->d_u, c->d_dw};

	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
		if (p[i])
			c->kb->ops->free(c->kb, p[i]);
	c->d_x = c->d_w = c->d_gt = c->d_xt = NULL;
	c->d_u = c->d_dw = NULL;
	free(c->h_xt);
	free(c->h_gt);
	free(c->h_u);
	c->h_xt = c->h_gt = NULL;
	c->h_u = NULL;
}

static int xfer(struct train_ctx *c, void *dst, const void *src, size_t bytes, enum kb_copy_dir dir)
{
	int rc = c->kb->ops->memcpy(c->kb, dst, src, bytes, dir, KB_STREAM_COMPUTE);

	return rc ? rc : c->kb->ops->sync(c->kb, KB_STREAM_COMPUTE);
}

/* The bf16 weight the GEMMs use (the master copy stays fp32 on the host). */
static int upload_w(struct train_ctx *c, const float *w)
{
	size_t n = (size_t)c->dout * c->H;

	for (size_t i = 0; i < n; i++)
		c->h_gt[i] = kb_f32_to_bf16(w[i]);
	return xfer(c, c->d_w, c->h_gt, n * 2, KB_H2D);
}

/* h_u [rows, dout] = d_x [rows, H] . d_w^T */
static int project_rows(struct train_ctx *c, uint32_t rows)
{
	int rc = c->kb->ops->gemm(c->kb, KB_STREAM_COMPUTE, rows, c->dout, c->H, c->d_x, c->H,
				  c->d_w, c->H, c->d_u, c->dout, true, 1.0f, 0.0f);

	return rc ? rc : xfer(c, c->h_u, c->d_u, (size_t)rows * c->dout * 4, KB_D2H);
}

int train_project(struct train_ctx *c, const uint16_t *x, uint32_t rows, const float *w, float *u)
{
	int rc;

	if (rows > c->rows_cap)
		return -EINVAL;
	if ((rc = upload_w(c, w)) || (rc = xfer(c, c->d_x, x, (size_t)rows * c->H * 2, KB_H2D)) ||
	    (rc = project_rows(c, rows)))
		return rc;
	memcpy(u, c->h_u, (size_t)rows * c->dout * 4);
	return 0;
}

/* Loss of one query row (all KV groups); gradient into g (dout) when g != NULL. The student's
 * softmax covers the entries [j0, j1) the loss sees (train_loss_range), or with the block loss
 * the blocks [j0, j1) the runtime ranks (train_block_range). */
static double row_loss(struct train_ctx *c, const struct train_seq *sq, const struct train_slot *s,
		       uint32_t qi, const float *u, float *g, double *work, int32_t *idx)
{
	const struct train_layer_data *tl = &sq->ly[s->tgt];
	uint32_t d = c->d, p = (uint32_t)sq->pos[qi], j0, j1;
	float f[512], gf[512];
	double kl = 0.0;

	uint32_t ne = kb_ck_entries(&c->sp, p + 1);
	bool blocks = c->o->loss == TRAIN_LOSS_BLOCKS;

	if (blocks)
		train_block_range(&c->sp, p, ne, &j0, &j1);
	else
		train_loss_range(&c->sp, c->o->loss == TRAIN_LOSS_PAPER, p, ne, &j0, &j1);
	for (uint32_t h = 0; h < c->n_kv; h++) {
		size_t at = (size_t)qi * c->n_kv + h;
		uint32_t n_g = (uint32_t)tl->tn[at];

		if (g)
			memset(g + (size_t)h * d, 0, d * sizeof(float));
		if (j1 <= j0)
			continue; /* no entry to rank */
		for (uint32_t i = 0; i < n_g; i++)
			idx[i] = tl->tidx[at * c->gmax + i] - (int32_t)j0;
		memcpy(f, u + (size_t)h * d, d * sizeof(float));
		train_rope(c, f, (int32_t)p, false);
		if (blocks)
			kl += train_kl_grad_blocks(
			    f, tl->ck + (size_t)h * sq->n_ent * d, ne, d, c->scale, &c->sp, j0, j1,
			    idx, tl->tp + at * c->gmax, n_g, tl->trest[at], g ? gf : NULL, work);
		else
			kl += train_kl_grad(f, tl->ck + ((size_t)h * sq->n_ent + j0) * d, j1 - j0,
					    d, c->scale, idx, tl->tp + at * c->gmax, n_g,
					    tl->trest[at], g ? gf : NULL, work);
		if (!g)
			continue;
		train_rope(c, gf, (int32_t)p, true);
		memcpy(g + (size_t)h * d, gf, d * sizeof(float));
	}
	return kl;
}

/* Upload the x rows of the listed sequences' input layer into d_x; returns the row count. */
static int gather_rows(struct train_ctx *c, const struct train_slot *s,
		       const struct train_data *data, const uint32_t *seqs, uint32_t n,
		       uint32_t *rows)
{
	uint32_t r = 0;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		const struct train_seq *sq = &data->seq[seqs[i]];

		if (r + sq->nq > c->rows_cap)
			return -EINVAL;
		if ((rc = xfer(c, c->d_x + (size_t)r * c->H, sq->ly[s->in].x,
			       (size_t)sq->nq * c->H * 2, KB_H2D)))
			return rc;
		r += sq->nq;
	}
	*rows = r;
	return 0;
}

/* dW [dout, H] = G^T . X over `rows` rows, G^T already in h_gt. */
static int weight_grad(struct train_ctx *c, const struct train_slot *s,
		       const struct train_data *data, const uint32_t *seqs, uint32_t n,
		       uint32_t rows, float *grad)
{
	uint32_t r = 0, H = c->H;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		const struct train_seq *sq = &data->seq[seqs[i]];
		const uint16_t *x = sq->ly[s->in].x;

		for (uint32_t q = 0; q < sq->nq; q++, r++)
			for (uint32_t e = 0; e < H; e++)
				c->h_xt[(size_t)e * rows + r] = x[(size_t)q * H + e];
	}
	if ((rc = xfer(c, c->d_gt, c->h_gt, (size_t)c->dout * rows * 2, KB_H2D)) ||
	    (rc = xfer(c, c->d_xt, c->h_xt, (size_t)H * rows * 2, KB_H2D)) ||
	    (rc = c->kb->ops->gemm(c->kb, KB_STREAM_COMPUTE, c->dout, H, rows, c->d_gt, rows,
				   c->d_xt, rows, c->d_dw, H, true, 1.0f, 0.0f)))
		return rc;
	return xfer(c, grad, c->d_dw, (size_t)c->dout * H * 4, KB_D2H);
}

/* One thread's share of a batch's rows: per-row KL and, with a gradient, G^T columns. */
struct loss_part {
	struct train_ctx *c;
	const struct train_slot *s;
	const struct train_data *data;
	const uint32_t *rseq, *rq; /* row -> (sequence, query) */
	uint32_t r0, r1, rows, max_ent;
	bool grad;
	double inv, *kl; /* kl [rows] */
	int rc;
};

static void *loss_rows(void *arg)
{
	struct loss_part *p = arg;
	struct train_ctx *c = p->c;
	double *work = malloc((size_t)(3 * p->max_ent + 3) * sizeof(double));
	float *g = malloc((size_t)c->dout * sizeof(float));
	int32_t *idx = malloc((size_t)c->gmax * sizeof(int32_t));

	if (!work || !g || !idx) {
		p->rc = -ENOMEM;
		goto out;
	}
	for (uint32_t r = p->r0; r < p->r1; r++) {
		const struct train_seq *sq = &p->data->seq[p->rseq[r]];

		p->kl[r] = row_loss(c, sq, p->s, p->rq[r], c->h_u + (size_t)r * c->dout,
				    p->grad ? g : NULL, work, idx);
		for (uint32_t o = 0; p->grad && o < c->dout; o++)
			c->h_gt[(size_t)o * p->rows + r] = kb_f32_to_bf16((float)(g[o] * p->inv));
	}
out:
	free(work);
	free(g);
	free(idx);
	return NULL;
}

uint32_t train_host_threads(const struct train_ctx *c)
{
	long n = c->o->host_threads ? (long)c->o->host_threads : sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > TRAIN_MAX_THREADS ? TRAIN_MAX_THREADS : (uint32_t)n;
}

/* The rows' losses (and G^T) on the host threads; each row's result does not depend on the
 * split, so the sum (taken in row order) is the same for any thread count. */
static int loss_parallel(struct train_ctx *c, struct loss_part *base, double *kl)
{
	struct loss_part part[TRAIN_MAX_THREADS];
	pthread_t tid[TRAIN_MAX_THREADS];
	uint32_t T = train_host_threads(c), started = 0, rows = base->rows;
	int rc = 0;

	if (T > rows / 16 + 1)
		T = rows / 16 + 1;
	for (uint32_t t = 0; t < T; t++) {
		part[t] = *base;
		part[t].r0 = (uint32_t)((uint64_t)rows * t / T);
		part[t].r1 = (uint32_t)((uint64_t)rows * (t + 1) / T);
	}
	for (uint32_t t = 1; t < T; t++, started++)
		if (pthread_create(&tid[t], NULL, loss_rows, &part[t]))
			break;
	for (uint32_t t = started + 1; t < T; t++)
		loss_rows(&part[t]); /* threads that could not start: run here */
	loss_rows(&part[0]);
	for (uint32_t t = 1; t <= started; t++)
		pthread_join(tid[t], NULL);
	for (uint32_t t = 0; t < T; t++)
		rc = rc ? rc : part[t].rc;
	*kl = 0.0;
	for (uint32_t r = 0; r < rows; r++)
		*kl += base->kl[r];
	return rc;
}

int train_slot_loss(struct train_ctx *c, const struct train_slot *s, const float *w,
		    const struct train_data *data, const uint32_t *seqs, uint32_t n, float *grad,
		    double *loss)
{
	struct loss_part p = {.c = c, .s = s, .data = data, .grad = grad != NULL, .max_ent = 1};
	uint32_t rows = 0, r = 0, *map = NULL;
	double kl = 0.0;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		const struct train_seq *sq = &data->seq[seqs[i]];

		p.max_ent = sq->n_ent > p.max_ent ? sq->n_ent : p.max_ent;
		rows += sq->nq;
	}
	map = malloc((size_t)2 * (rows + 1) * sizeof(uint32_t));
	p.kl = malloc((size_t)(rows + 1) * sizeof(double));
	rc = -ENOMEM;
	if (!map || !p.kl)
		goto out_free;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t q = 0; q < data->seq[seqs[i]].nq; q++, r++) {
			map[r] = seqs[i];
			map[rows + 1 + r] = q;
		}
	p.rseq = map;
	p.rq = map + rows + 1;
	if ((rc = upload_w(c, w)) || (rc = gather_rows(c, s, data, seqs, n, &p.rows)) ||
	    (rc = project_rows(c, p.rows)))
		goto out_free;
	p.inv = rows ? 1.0 / ((double)c->n_kv * rows) : 0.0;
	if ((rc = loss_parallel(c, &p, &kl)))
		goto out_free;
	*loss = kl * p.inv;
	rc = grad ? weight_grad(c, s, data, seqs, n, rows, grad) : 0;
out_free:
	free(map);
	free(p.kl);
	return rc;
}
