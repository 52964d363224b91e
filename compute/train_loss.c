/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Forecast training loss on the host, in double precision: KL(teacher || student) over the
 * teacher's gathered bins plus a rest bin (METHOD 5), from the student's logits over compressed
 * entries or over the runtime's max-pooled block scores, and its gradient. train_kl_grad and
 * train_kl_grad_blocks compute the logits themselves (the reference the gradient tests check);
 * the training path gets them from the backend GEMM (train_grad.c). The ranking loss
 * (TRAIN_LOSS_RANK) shares the block scores.
 */
#include <math.h>
#include <stdint.h>

#include "train_internal.h"

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

/* The gradient through logits(): gf = scale * sum_j coef[j] * k_j (coef = dLoss / dz). */
static void logits_grad(const double *coef, const uint16_t *ck, uint32_t n, uint32_t d,
			float scale, float *gf)
{
	for (uint32_t e = 0; e < d; e++) {
		double acc = 0.0;

		for (uint32_t j = 0; j < n; j++)
			acc += coef[j] * kb_bf16_to_f32(ck[(size_t)j * d + e]);
		gf[e] = (float)(acc * scale);
	}
}

/*
 * KL(teacher || softmax(z)) over the n bins of z restricted to the gathered bins idx[n_g] plus
 * a rest bin (both sides clamped at 1e-8 and renormalised). s: z in, the student's
 * probabilities out. If coef != NULL it receives dKL/dz [n].
 */
double train_kl_logits(double *s, uint32_t n, const int32_t *idx, const float *tp, uint32_t n_g,
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
	kl = train_kl_logits(s, n_ent, idx, tp, n_g, t_rest, gf ? coef : NULL);
	if (gf)
		logits_grad(coef, ck, n_ent, d, scale, gf);
	return kl;
}

/* The runtime's block scores b[m - m0] (max over each pooling window of z) and the arg-max
 * entry of each block in arg. */
static void pool_blocks(const double *z, uint32_t n_ent, const struct kb_sparse *sp, uint32_t m0,
			uint32_t m1, double *b, double *arg)
{
	uint32_t ps = sp->pool_stride, pad = sp->pool_pad, pk = sp->pool_kernel;

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
}

/* Scatter the block gradient cb[nb] onto the arg-max entries: coef [n_ent]. */
static void scatter_blocks(const double *cb, const double *arg, uint32_t nb, uint32_t n_ent,
			   double *coef)
{
	for (uint32_t j = 0; j < n_ent; j++)
		coef[j] = 0.0;
	for (uint32_t m = 0; m < nb; m++)
		coef[(uint32_t)arg[m]] += cb[m];
}

double train_kl_blocks_z(const double *z, uint32_t n_ent, const struct kb_sparse *sp, uint32_t m0,
			 uint32_t m1, const int32_t *idx, const float *tp, uint32_t n_g,
			 float t_rest, double *coef, double *work)
{
	uint32_t nb = m1 - m0;
	double *b = work, *cb = work + nb, *arg = cb + nb, kl;

	pool_blocks(z, n_ent, sp, m0, m1, b, arg);
	kl = train_kl_logits(b, nb, idx, tp, n_g, t_rest, coef ? cb : NULL);
	if (coef)
		scatter_blocks(cb, arg, nb, n_ent, coef);
	return kl;
}

/* log(sum_i exp(sign * v_i)) over the marked (want) or unmarked entries of v[n]. */
static double lse(const double *v, const uint8_t *pos, uint32_t n, bool want, double sign)
{
	double mx = -INFINITY, sum = 0.0;

	for (uint32_t i = 0; i < n; i++)
		if (!pos[i] == !want && sign * v[i] > mx)
			mx = sign * v[i];
	if (mx == -INFINITY)
		return mx;
	for (uint32_t i = 0; i < n; i++)
		if (!pos[i] == !want)
			sum += exp(sign * v[i] - mx);
	return mx + log(sum);
}

/*
 * With b the block scores times gamma, L = log(1 + A B), A = sum_N exp(b_n), B = sum_P
 * exp(-b_p): with t = log A + log B, L = softplus(t), dL/db_n = sigmoid(t) softmax_N(b)_n,
 * dL/db_p = -sigmoid(t) softmax_P(-b)_p (times gamma for the unscaled scores). The positives
 * are marked (bytes) in the cb buffer, unused otherwise.
 */
double train_rank_blocks_z(const double *z, uint32_t n_ent, const struct kb_sparse *sp, uint32_t m0,
			   uint32_t m1, const int32_t *idx, uint32_t n_g, double gamma,
			   double *coef, double *work)
{
	uint32_t nb = m1 - m0;
	double *b = work, *cb = work + nb, *arg = cb + nb, la, lb, t, sg, loss;
	uint8_t *pos = (uint8_t *)cb; /* nb bytes fit in nb doubles; cb is written last */

	pool_blocks(z, n_ent, sp, m0, m1, b, arg);
	for (uint32_t m = 0; m < nb; m++) {
		b[m] *= gamma;
		pos[m] = 0;
	}
	for (uint32_t i = 0; i < n_g; i++)
		if (idx[i] >= 0 && (uint32_t)idx[i] < nb)
			pos[idx[i]] = 1;
	la = lse(b, pos, nb, false, 1.0);
	lb = lse(b, pos, nb, true, -1.0);
	if (la == -INFINITY || lb == -INFINITY) { /* no positive or no negative: nothing to rank */
		for (uint32_t j = 0; coef && j < n_ent; j++)
			coef[j] = 0.0;
		return 0.0;
	}
	t = la + lb;
	loss = t > 0.0 ? t + log1p(exp(-t)) : log1p(exp(t));
	if (!coef)
		return loss;
	sg = gamma / (1.0 + exp(-t));
	for (uint32_t m = 0; m < nb; m++)
		b[m] = pos[m] ? -sg * exp(-b[m] - lb) : sg * exp(b[m] - la);
	scatter_blocks(b, arg, nb, n_ent, coef);
	return loss;
}

double train_kl_grad_blocks(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d,
			    float scale, const struct kb_sparse *sp, uint32_t m0, uint32_t m1,
			    const int32_t *idx, const float *tp, uint32_t n_g, float t_rest,
			    float *gf, double *work)
{
	double *z = work, *coef = work + n_ent, kl;

	logits(f, ck, n_ent, d, scale, z);
	kl = train_kl_blocks_z(z, n_ent, sp, m0, m1, idx, tp, n_g, t_rest, gf ? coef : NULL,
			       coef + n_ent);
	if (gf)
		logits_grad(coef, ck, n_ent, d, scale, gf);
	return kl;
}

double train_rank_grad_blocks(const float *f, const uint16_t *ck, uint32_t n_ent, uint32_t d,
			      float scale, const struct kb_sparse *sp, uint32_t m0, uint32_t m1,
			      const int32_t *idx, uint32_t n_g, double gamma, float *gf,
			      double *work)
{
	double *z = work, *coef = work + n_ent, loss;

	logits(f, ck, n_ent, d, scale, z);
	loss = train_rank_blocks_z(z, n_ent, sp, m0, m1, idx, n_g, gamma, gf ? coef : NULL,
				   coef + n_ent);
	if (gf)
		logits_grad(coef, ck, n_ent, d, scale, gf);
	return loss;
}
