/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of the elementwise ops: embedding lookup, residual add with RMSNorm, RoPE,
 * SwiGLU and argmax. bf16 inputs are widened to fp32, results rounded once to bf16.
 */
#include <errno.h>
#include <math.h>

#include "cpu_internal.h"

int cpu_embed(struct kb *kb, enum kb_stream s, float *out, const uint16_t *table,
	      const int32_t *ids, uint32_t n, uint32_t hidden, uint32_t vocab, float scale)
{
	if (!cpu_stream_ok(s) || !out || !table || !ids || !hidden)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] < 0 || (uint32_t)ids[i] >= vocab)
			return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++) {
		const uint16_t *row = table + (size_t)ids[i] * hidden;
		float *o = out + (size_t)i * hidden;

		for (uint32_t j = 0; j < hidden; j++)
			o[j] = kb_bf16_to_f32(row[j]) * scale;
	}
	return 0;
}

static void add_row(float *resid, const uint16_t *delta, float delta_scale, uint32_t hidden)
{
	for (uint32_t j = 0; j < hidden; j++)
		resid[j] += delta_scale * kb_bf16_to_f32(delta[j]);
}

int cpu_add_rmsnorm(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
		    uint32_t ld_delta, float delta_scale, const uint16_t *w, uint16_t *out,
		    uint32_t n, uint32_t hidden, float eps)
{
	if (!cpu_stream_ok(s) || !resid || !w || !out || !hidden || (delta && ld_delta < hidden))
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++) {
		float *r = resid + (size_t)i * hidden;
		uint16_t *o = out + (size_t)i * hidden;
		double ss = 0;
		float inv;

		if (delta)
			add_row(r, delta + (size_t)i * ld_delta, delta_scale, hidden);
		for (uint32_t j = 0; j < hidden; j++)
			ss += (double)r[j] * r[j];
		inv = (float)(1.0 / sqrt(ss / hidden + eps));
		for (uint32_t j = 0; j < hidden; j++)
			o[j] = kb_f32_to_bf16(r[j] * inv * kb_bf16_to_f32(w[j]));
	}
	return 0;
}

int cpu_add_residual(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
		     uint32_t ld_delta, float delta_scale, uint32_t n, uint32_t hidden)
{
	if (!cpu_stream_ok(s) || !resid || !delta || ld_delta < hidden)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++)
		add_row(resid + (size_t)i * hidden, delta + (size_t)i * ld_delta, delta_scale,
			hidden);
	return 0;
}

int cpu_rope(struct kb *kb, enum kb_stream s, uint16_t *x, uint32_t ld, uint32_t n,
	     uint32_t n_heads, uint32_t head_dim, const int32_t *pos, const float *inv_freq,
	     float mscale)
{
	uint32_t half = head_dim / 2;

	if (!cpu_stream_ok(s) || !x || !pos || !inv_freq || !head_dim || head_dim % 2 ||
	    ld < (uint64_t)n_heads * head_dim)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t p = 0; p < half; p++) {
			/* The angle is rounded to fp32 as every backend computes it. */
			float a = (float)pos[i] * inv_freq[p];
			float c = (float)cos((double)a) * mscale;
			float sn = (float)sin((double)a) * mscale;

			for (uint32_t h = 0; h < n_heads; h++) {
				uint16_t *row = x + (size_t)i * ld + (size_t)h * head_dim;
				float x0 = kb_bf16_to_f32(row[p]);
				float x1 = kb_bf16_to_f32(row[p + half]);

				row[p] = kb_f32_to_bf16(x0 * c - x1 * sn);
				row[p + half] = kb_f32_to_bf16(x1 * c + x0 * sn);
			}
		}
	}
	return 0;
}

int cpu_swiglu(struct kb *kb, enum kb_stream s, uint16_t *out, const uint16_t *gu, uint32_t n,
	       uint32_t ff)
{
	if (!cpu_stream_ok(s) || !out || !gu)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++) {
		const uint16_t *g = gu + (size_t)i * 2 * ff, *u = g + ff;
		uint16_t *o = out + (size_t)i * ff;

		for (uint32_t j = 0; j < ff; j++) {
			float x = kb_bf16_to_f32(g[j]);

			o[j] = kb_f32_to_bf16(x / (1.0f + expf(-x)) * kb_bf16_to_f32(u[j]));
		}
	}
	return 0;
}

int cpu_argmax(struct kb *kb, enum kb_stream s, int32_t *out, const float *logits, uint32_t n,
	       uint32_t vocab)
{
	if (!cpu_stream_ok(s) || !out || !logits || !vocab || vocab > INT32_MAX)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 1)
	for (uint32_t i = 0; i < n; i++) {
		const float *l = logits + (size_t)i * vocab;
		uint32_t best = 0;

		/* Strictly greater keeps the lowest index on ties; NaN never wins. */
		for (uint32_t j = 1; j < vocab; j++)
			if (l[j] > l[best] || (isnan(l[best]) && !isnan(l[j])))
				best = j;
		out[i] = (int32_t)best;
	}
	return 0;
}
