/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Forecast training loss and its analytic gradient through the backend. The projections
 * u = x . W^T, the student logits z = F . K^T per (sequence, KV head), their gradient
 * dF = C . K and the weight gradient dW = G^T . X run through the backend's GEMM (cuBLAS on
 * CUDA, OpenBLAS on the CPU) with bf16 operands and fp32 results; RoPE and the per-query
 * softmax, KL and rest bin (train_loss.c) run on the host in double, split over threads.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train_collect.h"

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

/* The largest sampled-query count and entry count of one sequence over every set. */
static void seq_caps(const struct train_ctx *c, size_t *nq, size_t *ne)
{
	const struct train_data *sets[] = {&c->tr, &c->ev, &c->va};

	*nq = 1;
	*ne = 1;
	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++)
		for (uint32_t i = 0; i < sets[k]->n; i++) {
			*nq = sets[k]->seq[i].nq > *nq ? sets[k]->seq[i].nq : *nq;
			*ne = sets[k]->seq[i].n_ent > *ne ? sets[k]->seq[i].n_ent : *ne;
		}
}

int train_grad_open(struct train_ctx *c, uint32_t rows_cap)
{
	struct kb *kb = c->kb;
	size_t R = rows_cap ? rows_cap : 1, H = c->H, D = c->dout, d = c->d, Q, E;
	size_t M = D > H ? D : H;
	int rc;

	seq_caps(c, &Q, &E);
	c->rows_cap = (uint32_t)R;
	c->h_xt = malloc(H * R * 2);
	c->h_gt = malloc((M * R > D * H ? M * R : D * H) * 2);
	c->h_u = malloc((R * D > M * H ? R * D : M * H) * 4);
	c->h_f = malloc((Q > E ? Q : E) * d * 2);
	c->h_z = malloc(Q * (E > d ? E : d) * 4);
	c->h_c = malloc(Q * E * 2);
	if (!c->h_xt || !c->h_gt || !c->h_u || !c->h_f || !c->h_z || !c->h_c)
		return -ENOMEM;
	if ((rc = kb->ops->alloc(kb, R * H * 2, (void **)&c->d_x)) ||
	    (rc = kb->ops->alloc(kb, D * H * 2, (void **)&c->d_w)) ||
	    (rc = kb->ops->alloc(kb, M * R * 2, (void **)&c->d_gt)) ||
	    (rc = kb->ops->alloc(kb, H * R * 2, (void **)&c->d_xt)) ||
	    (rc = kb->ops->alloc(kb, R * D * 4, (void **)&c->d_u)) ||
	    (rc = kb->ops->alloc(kb, M * H * 4, (void **)&c->d_dw)) ||
	    (rc = kb->ops->alloc(kb, Q * d * 2, (void **)&c->d_f)) ||
	    (rc = kb->ops->alloc(kb, E * d * 2, (void **)&c->d_ck)) ||
	    (rc = kb->ops->alloc(kb, Q * E * 2, (void **)&c->d_c)) ||
	    (rc = kb->ops->alloc(kb, Q * (E > d ? E : d) * 4, (void **)&c->d_z)))
		return rc;
	return 0;
}

void train_grad_close(struct train_ctx *c)
{
	void *p[] = {c->d_x,  c->d_w, c->d_gt, c->d_xt, c->d_u,
		     c->d_dw, c->d_f, c->d_ck, c->d_c,	c->d_z};

	for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++)
		if (p[i])
			c->kb->ops->free(c->kb, p[i]);
	c->d_x = c->d_w = c->d_gt = c->d_xt = c->d_f = c->d_ck = c->d_c = NULL;
	c->d_u = c->d_dw = c->d_z = NULL;
	free(c->h_xt);
	free(c->h_gt);
	free(c->h_u);
	free(c->h_f);
	free(c->h_z);
	free(c->h_c);
	c->h_xt = c->h_gt = c->h_f = c->h_c = NULL;
	c->h_u = c->h_z = NULL;
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

	for (uint32_t i = 0; i < n; i++) { /* X^T, in 64 x 64 tiles (cache-friendly) */
		const struct train_seq *sq = &data->seq[seqs[i]];
		const uint16_t *x = sq->ly[s->in].x;

		for (uint32_t q0 = 0; q0 < sq->nq; q0 += 64)
			for (uint32_t e0 = 0; e0 < H; e0 += 64)
				for (uint32_t q = q0; q < q0 + 64 && q < sq->nq; q++)
					for (uint32_t e = e0; e < e0 + 64 && e < H; e++)
						c->h_xt[(size_t)e * rows + r + q] =
						    x[(size_t)q * H + e];
		r += sq->nq;
	}
	if ((rc = xfer(c, c->d_gt, c->h_gt, (size_t)c->dout * rows * 2, KB_H2D)) ||
	    (rc = xfer(c, c->d_xt, c->h_xt, (size_t)H * rows * 2, KB_H2D)) ||
	    (rc = c->kb->ops->gemm(c->kb, KB_STREAM_COMPUTE, c->dout, H, rows, c->d_gt, rows,
				   c->d_xt, rows, c->d_dw, H, true, 1.0f, 0.0f)))
		return rc;
	return xfer(c, grad, c->d_dw, (size_t)c->dout * H * 4, KB_D2H);
}

uint32_t train_host_threads(const struct train_ctx *c)
{
	long n = (long)c->o->host_threads;

	/* The CPU backend's OpenMP and BLAS workers spin between its calls, which come between
	 * every (sequence, head) pass here: host threads of our own would fight them for the
	 * cores (measured: 10x slower steps on 2 cores). */
	if (!n)
		n = c->kb->kind == KB_KIND_CPU ? 1 : sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > TRAIN_MAX_THREADS ? TRAIN_MAX_THREADS : (uint32_t)n;
}

/*
 * One (sequence, KV head) pass of a batch: the student logits z [nq, n_ent] of every query of
 * the sequence against the target layer's keys came from the backend GEMM; each host thread
 * turns its rows into the KL and, with a gradient, dKL/dz (times 1 / rows) into c [nq, n_ent].
 */
struct loss_part {
	struct train_ctx *c;
	const struct train_seq *sq;
	const struct train_layer_data *tl;
	const float *u; /* the sequence's projected rows [nq, dout] */
	uint32_t h, q0, q1, r0, rows;
	bool grad;
	double inv, *kl; /* kl [nq] of this sequence, accumulated over the heads */
	int rc;
};

/* The host path: logits, KL and dF in double on the host (train_kl_grad*), dF into G^T. */
static double row_kl_host(struct loss_part *p, uint32_t q, uint32_t ne, uint32_t j0, uint32_t j1,
			  const int32_t *idx, double *work)
{
	const struct train_ctx *c = p->c;
	const struct train_seq *sq = p->sq;
	size_t at = (size_t)q * c->n_kv + p->h;
	uint32_t d = c->d, n_g = (uint32_t)p->tl->tn[at];
	const uint16_t *ck = p->tl->ck + (size_t)p->h * sq->n_ent * d;
	const float *tp = p->tl->tp + at * c->gmax;
	float f[512], gf[512];
	double kl;

	memcpy(f, p->u + (size_t)q * c->dout + (size_t)p->h * d, d * sizeof(float));
	train_rope(c, f, sq->pos[q], false);
	if (c->o->loss == TRAIN_LOSS_RANK)
		kl = train_rank_grad_blocks(f, ck, ne, d, c->scale, &c->sp, j0, j1, idx, n_g,
					    c->o->rank_gamma, p->grad ? gf : NULL, work);
	else if (c->o->loss == TRAIN_LOSS_BLOCKS)
		kl = train_kl_grad_blocks(f, ck, ne, d, c->scale, &c->sp, j0, j1, idx, tp, n_g,
					  p->tl->trest[at], p->grad ? gf : NULL, work);
	else
		kl = train_kl_grad(f, ck + (size_t)j0 * d, j1 - j0, d, c->scale, idx, tp, n_g,
				   p->tl->trest[at], p->grad ? gf : NULL, work);
	if (!p->grad)
		return kl;
	train_rope(c, gf, sq->pos[q], true);
	for (uint32_t e = 0; e < d; e++)
		c->h_gt[((size_t)p->h * d + e) * p->rows + p->r0 + q] =
		    kb_f32_to_bf16((float)(gf[e] * p->inv));
	return kl;
}

static double row_kl(struct loss_part *p, uint32_t q, double *work, int32_t *idx)
{
	const struct train_ctx *c = p->c;
	const struct train_seq *sq = p->sq;
	uint32_t pos = (uint32_t)sq->pos[q], ne = kb_ck_entries(&c->sp, pos + 1), j0, j1;
	size_t at = (size_t)q * c->n_kv + p->h;
	uint32_t n_g = (uint32_t)p->tl->tn[at];
	const float *z = c->h_z + (size_t)q * sq->n_ent;
	uint16_t *crow = c->h_c + (size_t)q * sq->n_ent;
	bool blocks = train_loss_on_blocks(c->o->loss);
	double *zz = work, *coef = work + sq->n_ent, kl;

	if (p->grad && c->logits_gemm)
		memset(crow, 0, (size_t)sq->n_ent * 2);
	if (blocks)
		train_block_range(&c->sp, pos, ne, &j0, &j1);
	else
		train_loss_range(&c->sp, c->o->loss == TRAIN_LOSS_PAPER, pos, ne, &j0, &j1);
	if (j1 <= j0) { /* no entry to rank */
		for (uint32_t e = 0; p->grad && !c->logits_gemm && e < c->d; e++)
			c->h_gt[((size_t)p->h * c->d + e) * p->rows + p->r0 + q] = 0;
		return 0.0;
	}
	for (uint32_t i = 0; i < n_g; i++)
		idx[i] = p->tl->tidx[at * c->gmax + i] - (int32_t)j0;
	if (!c->logits_gemm)
		return row_kl_host(p, q, ne, j0, j1, idx, work);
	if (blocks) {
		for (uint32_t j = 0; j < ne; j++)
			zz[j] = z[j];
		if (c->o->loss == TRAIN_LOSS_RANK)
			kl = train_rank_blocks_z(zz, ne, &c->sp, j0, j1, idx, n_g, c->o->rank_gamma,
						 p->grad ? coef : NULL, coef + ne);
		else
			kl = train_kl_blocks_z(zz, ne, &c->sp, j0, j1, idx,
					       p->tl->tp + at * c->gmax, n_g, p->tl->trest[at],
					       p->grad ? coef : NULL, coef + ne);
		for (uint32_t j = 0; p->grad && j < ne; j++)
			crow[j] = kb_f32_to_bf16((float)(coef[j] * p->inv));
		return kl;
	}
	for (uint32_t j = j0; j < j1; j++)
		zz[j - j0] = z[j];
	kl = train_kl_logits(zz, j1 - j0, idx, p->tl->tp + at * c->gmax, n_g, p->tl->trest[at],
			     p->grad ? coef : NULL);
	for (uint32_t j = j0; p->grad && j < j1; j++)
		crow[j] = kb_f32_to_bf16((float)(coef[j - j0] * p->inv));
	return kl;
}

static void *loss_rows(void *arg)
{
	struct loss_part *p = arg;
	double *work = malloc((size_t)(5 * p->sq->n_ent + 8) * sizeof(double));
	int32_t *idx = malloc((size_t)p->c->gmax * sizeof(int32_t));

	if (!work || !idx)
		p->rc = -ENOMEM;
	for (uint32_t q = p->q0; !p->rc && q < p->q1; q++)
		p->kl[q] += row_kl(p, q, work, idx);
	free(work);
	free(idx);
	return NULL;
}

/* The rows of one pass on the host threads; a row's result does not depend on the split. */
static int loss_parallel(struct train_ctx *c, struct loss_part *base, uint32_t nq)
{
	struct loss_part part[TRAIN_MAX_THREADS];
	pthread_t tid[TRAIN_MAX_THREADS];
	uint32_t T = train_host_threads(c), started = 0;
	int rc = 0;

	if (T > nq / 16 + 1)
		T = nq / 16 + 1;
	for (uint32_t t = 0; t < T; t++) {
		part[t] = *base;
		part[t].q0 = (uint32_t)((uint64_t)nq * t / T);
		part[t].q1 = (uint32_t)((uint64_t)nq * (t + 1) / T);
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
	return rc;
}

/*
 * Sequence sq (its projected rows u [nq, dout]) and KV head h: logits z = scale F . K^T
 * through the backend GEMM (F the post-RoPE Forecast rows, bf16, as the runtime scores them),
 * the host KL per row, and with a gradient dF = scale C . K (C = dKL/dz / rows) through the
 * GEMM again, RoPE transposed, into G^T's columns r0 .. r0 + nq of the rows-wide h_gt.
 */
static int seq_head(struct train_ctx *c, struct loss_part *p, const float *u, uint32_t r0,
		    uint32_t rows)
{
	const struct kb_ops *k = c->kb->ops;
	const struct train_seq *sq = p->sq;
	uint32_t d = c->d, nq = sq->nq, E = sq->n_ent, h = p->h;
	const uint16_t *ck = p->tl->ck + (size_t)h * E * d;
	float f[512];
	int rc;

	p->u = u;
	p->r0 = r0;
	p->rows = rows;
	if (!c->logits_gemm)
		return loss_parallel(c, p, nq);
	for (uint32_t q = 0; q < nq; q++) {
		memcpy(f, u + (size_t)q * c->dout + (size_t)h * d, d * sizeof(float));
		train_rope(c, f, sq->pos[q], false);
		for (uint32_t e = 0; e < d; e++)
			c->h_f[(size_t)q * d + e] = kb_f32_to_bf16(f[e]);
	}
	if ((rc = xfer(c, c->d_f, c->h_f, (size_t)nq * d * 2, KB_H2D)) ||
	    (rc = xfer(c, c->d_ck, ck, (size_t)E * d * 2, KB_H2D)) ||
	    (rc = k->gemm(c->kb, KB_STREAM_COMPUTE, nq, E, d, c->d_f, d, c->d_ck, d, c->d_z, E,
			  true, c->scale, 0.0f)) ||
	    (rc = xfer(c, c->h_z, c->d_z, (size_t)nq * E * 4, KB_D2H)) ||
	    (rc = loss_parallel(c, p, nq)))
		return rc;
	if (!p->grad)
		return 0;
	for (uint32_t j = 0; j < E; j++) /* K^T [d, E], the GEMM's [n, k] operand */
		for (uint32_t e = 0; e < d; e++)
			c->h_f[(size_t)e * E + j] = ck[(size_t)j * d + e];
	if ((rc = xfer(c, c->d_c, c->h_c, (size_t)nq * E * 2, KB_H2D)) ||
	    (rc = xfer(c, c->d_ck, c->h_f, (size_t)E * d * 2, KB_H2D)) ||
	    (rc = k->gemm(c->kb, KB_STREAM_COMPUTE, nq, d, E, c->d_c, E, c->d_ck, E, c->d_z, d,
			  true, c->scale, 0.0f)) ||
	    (rc = xfer(c, c->h_z, c->d_z, (size_t)nq * d * 4, KB_D2H)))
		return rc;
	for (uint32_t q = 0; q < nq; q++) {
		float *g = c->h_z + (size_t)q * d;

		train_rope(c, g, sq->pos[q], true);
		for (uint32_t e = 0; e < d; e++)
			c->h_gt[((size_t)h * d + e) * rows + r0 + q] = kb_f32_to_bf16(g[e]);
	}
	return 0;
}

int train_slot_loss(struct train_ctx *c, const struct train_slot *s, const float *w,
		    const struct train_data *data, const uint32_t *seqs, uint32_t n, float *grad,
		    double *loss)
{
	struct loss_part p = {.c = c, .grad = grad != NULL};
	uint32_t rows = 0, r = 0, mq = 1;
	double kl = 0.0;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		rows += data->seq[seqs[i]].nq;
		mq = data->seq[seqs[i]].nq > mq ? data->seq[seqs[i]].nq : mq;
	}
	p.kl = malloc((size_t)mq * sizeof(double));
	if (!p.kl)
		return -ENOMEM;
	if ((rc = upload_w(c, w)) || (rc = gather_rows(c, s, data, seqs, n, &rows)) ||
	    (rc = project_rows(c, rows)))
		goto out_free;
	p.inv = rows ? 1.0 / ((double)c->n_kv * rows) : 0.0;
	for (uint32_t i = 0; i < n; i++) {
		const struct train_seq *sq = &data->seq[seqs[i]];

		p.sq = sq;
		p.tl = &sq->ly[s->tgt];
		memset(p.kl, 0, (size_t)sq->nq * sizeof(double));
		for (p.h = 0; p.h < c->n_kv; p.h++)
			if ((rc = seq_head(c, &p, c->h_u + (size_t)r * c->dout, r, rows)))
				goto out_free;
		for (uint32_t q = 0; q < sq->nq; q++)
			kl += p.kl[q];
		r += sq->nq;
	}
	*loss = kl * p.inv;
	rc = grad ? weight_grad(c, s, data, seqs, n, rows, grad) : 0;
out_free:
	free(p.kl);
	return rc;
}
