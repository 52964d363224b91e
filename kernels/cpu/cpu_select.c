/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of the decode side of block selection: compressed keys (prefill and append),
 * entry scores (Forecast dot or the original softmax selector), pooling with forced blocks and
 * top-k, and the block-cache diff that turns a selection into a load list.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

bool cpu_sparse_ok(const struct kb_sparse *sp)
{
	return sp && sp->block && sp->ck_kernel && sp->ck_stride && sp->pool_kernel &&
	       sp->pool_stride && sp->topk >= (uint64_t)sp->sink + sp->local + 1;
}

/* out = bf16(mean of keys [t0, t0 + kernel)), summed in token order from rows `ld` apart. */
static void ck_mean(uint16_t *out, const uint16_t *k, uint32_t ld, uint32_t kernel, uint32_t first,
		    uint32_t d, float *acc)
{
	for (uint32_t c = 0; c < d; c++)
		acc[c] = 0.0f;
	for (uint32_t i = 0; i < kernel; i++) {
		const uint16_t *row = k + (size_t)((first + i) % kernel) * ld;

		for (uint32_t c = 0; c < d; c++)
			acc[c] += kb_bf16_to_f32(row[c]);
	}
	for (uint32_t c = 0; c < d; c++)
		out[c] = kb_f32_to_bf16(acc[c] / (float)kernel);
}

int cpu_ck_prefill(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap, uint16_t *ring,
		   const uint16_t *k, uint32_t ld, uint32_t t, uint32_t n_kv, uint32_t d,
		   const struct kb_sparse *sp)
{
	uint32_t kern, n_e;
	float *acc;

	if (!cpu_stream_ok(s) || !ck || !ring || !k || !d || !cpu_sparse_ok(sp) ||
	    ld < (uint64_t)n_kv * d || kb_ck_entries(sp, t) > cap)
		return -EINVAL;
	kern = sp->ck_kernel;
	n_e = kb_ck_entries(sp, t);
	acc = malloc((size_t)d * sizeof(float));
	if (!acc)
		return -ENOMEM;
	for (uint32_t g = 0; g < n_kv; g++) {
		for (uint32_t j = 0; j < n_e; j++)
			ck_mean(ck + ((size_t)g * cap + j) * d,
				k + (size_t)j * sp->ck_stride * ld + (size_t)g * d, ld, kern, 0, d,
				acc);
		for (uint32_t p = t > kern ? t - kern : 0; p < t; p++)
			memcpy(ring + ((size_t)g * kern + p % kern) * d, k + (size_t)p * ld + g * d,
			       d * sizeof(uint16_t));
	}
	free(acc);
	return 0;
}

int cpu_ck_append(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap, uint16_t *ring,
		  const uint16_t *k, uint32_t ld, const int32_t *pos, uint32_t b, uint32_t n_kv,
		  uint32_t d, const struct kb_sparse *sp)
{
	uint32_t kern;
	float *acc;

	if (!cpu_stream_ok(s) || !ck || !ring || !k || !pos || !d || !cpu_sparse_ok(sp) ||
	    ld < (uint64_t)n_kv * d)
		return -EINVAL;
	for (uint32_t i = 0; i < b; i++)
		if (pos[i] < 0)
			return -EINVAL;
	kern = sp->ck_kernel;
	acc = malloc((size_t)d * sizeof(float));
	if (!acc)
		return -ENOMEM;
	for (uint32_t i = 0; i < b; i++) {
		uint32_t p = (uint32_t)pos[i], first = p + 1 - kern, j;

		for (uint32_t g = 0; g < n_kv; g++) {
			uint16_t *rg = ring + ((size_t)i * n_kv + g) * kern * d;

			memcpy(rg + (size_t)(p % kern) * d, k + (size_t)i * ld + (size_t)g * d,
			       d * sizeof(uint16_t));
			if (p + 1 < kern || (p + 1 - kern) % sp->ck_stride)
				continue;
			j = (p + 1 - kern) / sp->ck_stride;
			/* cap is the caller's sizing; never write past it. */
			if (j < cap)
				ck_mean(ck + (((size_t)i * n_kv + g) * cap + j) * d, rg, d, kern,
					first % kern, d, acc);
		}
	}
	free(acc);
	return 0;
}

/* scores[j] of the original selector for one KV group: sum over heads of softmax(q.ck * scale). */
static void score_original(float *out, const uint16_t *q, const uint16_t *ck, uint32_t n_e,
			   uint32_t group, uint32_t d, float scale, float *qf, float *z)
{
	for (uint32_t j = 0; j < n_e; j++)
		out[j] = 0.0f;
	for (uint32_t h = 0; h < group; h++) {
		float mx = -INFINITY, sum = 0.0f;

		cpu_row_to_f32(qf, q + (size_t)h * d, d);
		for (uint32_t j = 0; j < n_e; j++) {
			const uint16_t *e = ck + (size_t)j * d;
			float dot = 0.0f;

			for (uint32_t c = 0; c < d; c++)
				dot += qf[c] * kb_bf16_to_f32(e[c]);
			z[j] = dot * scale;
			mx = z[j] > mx ? z[j] : mx;
		}
		for (uint32_t j = 0; j < n_e; j++) {
			z[j] = expf(z[j] - mx);
			sum += z[j];
		}
		for (uint32_t j = 0; j < n_e; j++)
			out[j] += z[j] / sum;
	}
}

static void score_forecast(float *out, const uint16_t *q, const uint16_t *ck, uint32_t n_e,
			   uint32_t d, float *qf)
{
	cpu_row_to_f32(qf, q, d);
	for (uint32_t j = 0; j < n_e; j++) {
		const uint16_t *e = ck + (size_t)j * d;
		float dot = 0.0f;

		for (uint32_t c = 0; c < d; c++)
			dot += qf[c] * kb_bf16_to_f32(e[c]);
		out[j] = dot;
	}
}

int cpu_score_decode(struct kb *kb, enum kb_stream s, float *scores, const uint16_t *q, uint32_t ld,
		     const uint16_t *ck, uint32_t cap, const int32_t *n_entries, uint32_t b,
		     uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale)
{
	uint32_t group;
	int err = 0;

	if (!cpu_stream_ok(s) || !scores || !q || !ck || !n_entries || !d || !n_kv || n_q % n_kv ||
	    !n_q || (!original && n_q != n_kv) || ld < (uint64_t)n_q * d)
		return -EINVAL;
	for (uint32_t i = 0; i < b; i++)
		if (n_entries[i] < 0 || (uint32_t)n_entries[i] > cap)
			return -EINVAL;
	group = n_q / n_kv;
#pragma omp parallel num_threads(cpu_threads(kb)) if (b * n_kv > 1)
	{
		float *qf = malloc(((size_t)d + cap) * sizeof(float));

#pragma omp for schedule(dynamic)
		for (uint32_t task = 0; task < b * n_kv; task++) {
			uint32_t bi = task / n_kv, g = task % n_kv;
			const uint16_t *qg = q + (size_t)bi * ld + (size_t)g * group * d;
			const uint16_t *cg = ck + (size_t)task * cap * d;

			if (!qf)
				continue;
			if (original)
				score_original(scores + (size_t)task * cap, qg, cg, n_entries[bi],
					       group, d, scale, qf, qf + d);
			else
				score_forecast(scores + (size_t)task * cap, qg, cg, n_entries[bi],
					       d, qf);
		}
		if (!qf) {
#pragma omp atomic write
			err = -ENOMEM;
		}
		free(qf);
	}
	return err;
}

int cpu_select_decode(struct kb *kb, enum kb_stream s, int32_t *sel, const float *scores,
		      uint32_t cap, const int32_t *n_entries, const int32_t *n_blocks, uint32_t b,
		      uint32_t n_kv, const struct kb_sparse *sp)
{
	struct cpu_rank *heap;

	if (!cpu_stream_ok(s) || !sel || !scores || !n_entries || !n_blocks || !cpu_sparse_ok(sp))
		return -EINVAL;
	for (uint32_t i = 0; i < b; i++)
		if (n_entries[i] < 0 || (uint32_t)n_entries[i] > cap || n_blocks[i] < 0)
			return -EINVAL;
	heap = malloc((size_t)sp->topk * sizeof(*heap));
	if (!heap)
		return -ENOMEM;
	for (uint32_t task = 0; task < b * n_kv; task++) {
		uint32_t bi = task / n_kv;

		cpu_select_row(sel + (size_t)task * sp->topk, scores + (size_t)task * cap,
			       (uint32_t)n_entries[bi], (uint32_t)n_blocks[bi], sp, heap);
	}
	free(heap);
	return 0;
}
