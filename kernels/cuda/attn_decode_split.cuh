/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The arguments every split kernel of decode attention shares (attn_decode.cu: the fp32 and the
 * register-staged tensor-core kernels; attn_decode_cp.cu: the cp.async-pipelined one). All of
 * them write the same unnormalised partials [b, n_q, n_splits, d + 2] that one merge kernel reads.
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_DECODE_SPLIT_CUH
#define SPARDA_KERNELS_CUDA_ATTN_DECODE_SPLIT_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "kc_common.cuh"

/*
 * The online-softmax step of the tensor-core kernels for one 16-key slab: sc holds the scores
 * of the mma C fragments (keys nt * 8 + 2t + (i & 1); rows gr for i < 2, gr + 8 else) and
 * becomes their probabilities; keys >= n are masked. Row maxima over the quad, running max m
 * and sum l (log2 domain, scale sl2 = scale * log2 e) updated; al0/al1 rescale the outputs.
 */
static __device__ __forceinline__ void kc_ad_softmax_16(float (*sc)[4], uint32_t n, uint32_t t,
							float sl2, float &m0, float &m1,
							float &l0, float &l1, float &al0,
							float &al1)
{
	float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
	for (int nt = 0; nt < 2; nt++)
#pragma unroll
		for (int i = 0; i < 4; i++) {
			uint32_t key = nt * 8 + 2 * t + (i & 1);
			float v = key < n ? sc[nt][i] * sl2 : -INFINITY;
			sc[nt][i] = v;
			if (i < 2)
				mx0 = fmaxf(mx0, v);
			else
				mx1 = fmaxf(mx1, v);
		}
#pragma unroll
	for (int off = 1; off <= 2; off <<= 1) {
		mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
		mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
	}
	float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
	al0 = mn0 == -INFINITY ? 1.0f : exp2f(m0 - mn0);
	al1 = mn1 == -INFINITY ? 1.0f : exp2f(m1 - mn1);
	float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
	for (int nt = 0; nt < 2; nt++)
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float mn = i < 2 ? mn0 : mn1;
			float p = mn == -INFINITY ? 0.0f : exp2f(sc[nt][i] - mn);
			sc[nt][i] = p;
			if (i < 2)
				ps0 += p;
			else
				ps1 += p;
		}
	l0 = l0 * al0 + ps0;
	l1 = l1 * al1 + ps1;
	m0 = mn0;
	m1 = mn1;
}

#define KC_AD_THREADS 128u
#define KC_AD_TILE 64u
#define KC_AD_HEADS 16u /* query heads per CTA */

struct kc_ad_args {
	const uint16_t *q;
	uint32_t ld_q;
	/* unit mode: tile u is unit unit_idx[b, g, u], rows unit_len[b, g, u] */
	const uint16_t *units;
	const int32_t *unit_idx, *unit_len;
	uint32_t block;
	/* dense mode (units == NULL): tile u is keys [64u, 64u + 64) of [0, kv_len[b]) */
	const uint16_t *kc, *vc;
	const int32_t *kv_len;
	uint32_t t_cap;
	uint32_t n_tiles, tiles_per_split, n_splits;
	uint32_t n_q, n_kv, d, G, hchunks;
	float scale;
	float *part;	 /* [b, n_q, n_splits, d + 2] */
	bool mma;	 /* tensor-core kernel (d 64 or 128) instead of the fp32 one */
	bool merge_par;	 /* the parallel split merge (SPARDA_KCUDA_MERGE=par) */
	uint32_t stages; /* the cp.async kernel's stages per warp (2 or 3); 0: the register one */
	bool reg4;	 /* the register kernel capped at 128 registers (4 CTAs per SM) */
	/* fused merge (cnt != NULL): the last CTA of a (sequence, KV head, head chunk) to finish
	 * merges its splits into out; cnt holds one zeroed arrival counter per such group, and
	 * that CTA zeroes it again for the next call on the stream */
	uint32_t *cnt;
	uint16_t *out;
	uint32_t ld_o;
};

#define KC_AD_FUSED_MAX 64u /* splits a fused merge holds weights for; more: merge kernel */

/*
 * The fused merge, called by every thread of a tensor-core split CTA after its partials are
 * written (h0, gh: the CTA's first query head and head count). Returns at once unless this is
 * the group's last CTA; that one sums the splits as kc_ad_merge_par_kernel does.
 */
static __device__ void kc_ad_fused_merge(const struct kc_ad_args &a, uint32_t b, uint32_t h0,
					 uint32_t gh, uint32_t d)
{
	__shared__ float wg[KC_AD_THREADS / 32][KC_AD_FUSED_MAX];
	__shared__ uint32_t s_last;
	uint32_t tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
	__threadfence(); /* this thread's partials, before the arrival below */
	__syncthreads();
	if (tid == 0) {
		uint32_t *c = a.cnt + (size_t)b * gridDim.y + blockIdx.y;
		uint32_t old = atomicAdd(c, 1u);
		s_last = old == a.n_splits - 1;
		if (s_last)
			*c = 0; /* every other CTA of the group has arrived: none touches it now */
	}
	__syncthreads();
	if (!s_last)
		return;
	__threadfence();
	size_t pst = (size_t)d + 2;
	for (uint32_t row = w; row < gh; row += KC_AD_THREADS / 32) {
		const float *p = a.part + ((size_t)b * a.n_q + h0 + row) * a.n_splits * pst;
		float mx = -INFINITY;
		for (uint32_t s = lane; s < a.n_splits; s += 32)
			mx = fmaxf(mx, __ldcg(p + s * pst + d));
		mx = kc_warp_max(mx);
		float l = 0.0f;
		for (uint32_t s = lane; s < a.n_splits; s += 32) {
			float ms = __ldcg(p + s * pst + d);
			float wt = mx == -INFINITY || ms == -INFINITY ? 0.0f : expf(ms - mx);
			wg[w][s] = wt;
			l += wt * __ldcg(p + s * pst + d + 1);
		}
		l = kc_warp_sum(l);
		__syncwarp();
		uint16_t *o = a.out + (size_t)b * a.ld_o + (size_t)(h0 + row) * d;
		for (uint32_t c = lane; c < d; c += 32) {
			float acc = 0.0f;
			for (uint32_t s = 0; s < a.n_splits; s++)
				if (wg[w][s] != 0.0f)
					acc += __ldcg(p + s * pst + c) * wg[w][s];
			o[c] = kc_tobf(l > 0.0f ? acc / l : 0.0f);
		}
		__syncwarp();
	}
}

/* The cp.async kernel (d 64 or 128, a->stages 2 or 3) on grid (n_splits, n_kv hchunks, b). */
int kc_ad_cp_launch(cudaStream_t st, const struct kc_ad_args *a, dim3 grid);
/* Raise the kernels' dynamic shared memory limit once per process (backend setup). */
int kc_ad_cp_init(void);

#endif
