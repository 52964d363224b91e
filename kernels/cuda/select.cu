/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Block selection. Decode scores: a warp reads d/8 lanes per compressed entry with 16-byte
 * loads (fully coalesced), the dot is reduced across those lanes. The original selector needs
 * a softmax over all entries per query head, so it runs twice: per-chunk (max, sum) stats, then
 * the normalised sum over the group. Top-k: one CTA per (sequence, KV head) or (KV head, query
 * block), an exact 4-pass radix select on the order-preserving float key for the k-th largest
 * pooled score, then ties at that score go to the lowest block ids and one ordered scan writes
 * the ids ascending. Prefill scores are 64x64 WMMA tiles (queries x entries) reduced on the fly
 * to a per-entry column max, so T x C scores never exist in memory.
 */
#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include "kc_common.cuh"
#include "kc_mma.cuh"
#include "select.cuh"

using namespace nvcuda;

#define KC_SD_CHUNK 512u /* compressed entries per CTA in score_decode */
#define KC_SD_THREADS 256u
#define KC_SDF_CHUNK 128u /* entries per CTA for Forecast scores (more CTAs at batch 1) */
#define KC_SDF_ROUNDS 4u  /* entry groups per warp with loads in flight together */
#define KC_MAX_GROUP 16u  /* query heads per KV head supported by the original selector */
#define KC_TK_THREADS 512u
#define KC_TILE 64u /* prefill tile: 64 queries x 64 entries */
#define KC_SLD 68u  /* fp32 row stride of a score tile in shared memory */
#define KC_SP_THREADS 128u

static __device__ __forceinline__ uint32_t kc_entries(const struct kb_sparse &sp, uint32_t n)
{
	return n < sp.ck_kernel ? 0 : (n - sp.ck_kernel) / sp.ck_stride + 1;
}

static __device__ __forceinline__ void kc_ms_merge(float &m, float &s, float m2, float s2)
{
	float mx = fmaxf(m, m2);
	if (mx == -INFINITY) {
		m = mx;
		s = 0.0f;
		return;
	}
	s = s * expf(m - mx) + s2 * expf(m2 - mx);
	m = mx;
}

/* ---------------------------------------------------------------- decode scores */

/*
 * Forecast scores: each warp takes KC_SDF_ROUNDS groups of 32/L entries and issues all their
 * loads before any reduction, so a warp has several independent 16-byte loads in flight.
 */
__global__ void __launch_bounds__(KC_SD_THREADS)
    kc_sd_forecast_kernel(float *__restrict__ scores, const uint16_t *__restrict__ q, uint32_t ld,
			  const uint16_t *__restrict__ ck, uint32_t cap,
			  const int32_t *__restrict__ n_entries, uint32_t n_kv, uint32_t d)
{
	uint32_t bg = blockIdx.y, b = bg / n_kv, g = bg % n_kv;
	int32_t ne_s = n_entries[b];
	uint32_t ne = ne_s < 0 ? 0 : min((uint32_t)ne_s, cap);
	uint32_t j0 = blockIdx.x * KC_SDF_CHUNK;
	if (j0 >= ne)
		return;
	uint32_t L = d / 8, epw = 32 / L;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t sub = lane % L, e = lane / L;
	float qv[8];
	kc_unpack8(*(const uint4 *)(q + (size_t)b * ld + (size_t)g * d + sub * 8), qv);
	const uint16_t *base = ck + (size_t)bg * cap * d;
	uint32_t jend = min(j0 + KC_SDF_CHUNK, ne), step = (blockDim.x / 32) * epw * KC_SDF_ROUNDS;
	for (uint32_t jb = j0 + warp * epw * KC_SDF_ROUNDS; jb < jend; jb += step) {
		uint4 v[KC_SDF_ROUNDS];
#pragma unroll
		for (uint32_t r = 0; r < KC_SDF_ROUNDS; r++) {
			uint32_t j = jb + r * epw + e;
			v[r] = j < jend ? *(const uint4 *)(base + (size_t)j * d + sub * 8)
					: make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (uint32_t r = 0; r < KC_SDF_ROUNDS; r++) {
			uint32_t j = jb + r * epw + e;
			float f[8], acc = 0.0f;
			kc_unpack8(v[r], f);
#pragma unroll
			for (int i = 0; i < 8; i++)
				acc += f[i] * qv[i];
			for (uint32_t o = L / 2; o > 0; o >>= 1)
				acc += __shfl_xor_sync(0xffffffffu, acc, o);
			if (sub == 0 && j < jend)
				scores[(size_t)bg * cap + j] = acc;
		}
	}
}

/* Logit of the entry this lane group holds for head h (q pre-scaled in shared memory). */
static __device__ __forceinline__ float kc_sd_logit(const float *qs, uint32_t h, uint32_t d,
						    uint32_t sub, uint32_t L, const float *f)
{
	const float *qh = qs + h * d + sub * 8;
	float acc = 0.0f;
#pragma unroll
	for (int i = 0; i < 8; i++)
		acc += f[i] * qh[i];
	for (uint32_t o = L / 2; o > 0; o >>= 1)
		acc += __shfl_xor_sync(0xffffffffu, acc, o);
	return acc;
}

static __device__ void kc_sd_load_q(float *qs, const uint16_t *q, uint32_t ld, uint32_t b,
				    uint32_t g, uint32_t G, uint32_t d, float scale)
{
	for (uint32_t i = threadIdx.x; i < G * d; i += blockDim.x)
		qs[i] = kc_bf(q[(size_t)b * ld + (size_t)g * G * d + i]) * scale;
	__syncthreads();
}

/* Elements [8 sub, 8 sub + 8) of compressed key j (zeros when !ok) into f, as fp32. */
static __device__ __forceinline__ void kc_sd_load_key8(float *f, const uint16_t *base, uint32_t j,
						       uint32_t d, uint32_t sub, bool ok)
{
	if (ok)
		kc_unpack8(*(const uint4 *)(base + (size_t)j * d + sub * 8), f);
	else
		for (int i = 0; i < 8; i++)
			f[i] = 0.0f;
}

__global__ void kc_sd_stats_kernel(float2 *stats, const uint16_t *q, uint32_t ld,
				   const uint16_t *ck, uint32_t cap, const int32_t *n_entries,
				   uint32_t n_kv, uint32_t G, uint32_t d, float scale,
				   uint32_t nchunk)
{
	extern __shared__ float qs[];
	__shared__ float2 red[KC_SD_THREADS / 32][KC_MAX_GROUP];
	uint32_t bg = blockIdx.y, b = bg / n_kv, g = bg % n_kv;
	int32_t ne_s = n_entries[b];
	uint32_t ne = ne_s < 0 ? 0 : min((uint32_t)ne_s, cap);
	uint32_t j0 = blockIdx.x * KC_SD_CHUNK;
	if (j0 >= ne)
		return;
	kc_sd_load_q(qs, q, ld, b, g, G, d, scale);
	uint32_t L = d / 8, epw = 32 / L;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t sub = lane % L, e = lane / L;
	float m[KC_MAX_GROUP], s[KC_MAX_GROUP], f[8];
#pragma unroll
	for (uint32_t h = 0; h < KC_MAX_GROUP; h++) {
		m[h] = -INFINITY;
		s[h] = 0.0f;
	}
	const uint16_t *base = ck + (size_t)bg * cap * d;
	uint32_t jend = min(j0 + KC_SD_CHUNK, ne);
	for (uint32_t jb = j0 + warp * epw; jb < jend; jb += (blockDim.x / 32) * epw) {
		uint32_t j = jb + e;
		bool ok = j < jend;
		kc_sd_load_key8(f, base, j, d, sub, ok);
#pragma unroll
		for (uint32_t h = 0; h < KC_MAX_GROUP; h++) {
			if (h >= G)
				break;
			float l = kc_sd_logit(qs, h, d, sub, L, f);
			if (ok && sub == 0)
				kc_ms_merge(m[h], s[h], l, 1.0f);
		}
	}
#pragma unroll
	for (uint32_t h = 0; h < KC_MAX_GROUP; h++) {
		if (h >= G)
			break;
		float mh = m[h], sh = s[h];
		for (int o = 16; o > 0; o >>= 1) {
			float m2 = __shfl_xor_sync(0xffffffffu, mh, o);
			float s2 = __shfl_xor_sync(0xffffffffu, sh, o);
			kc_ms_merge(mh, sh, m2, s2);
		}
		if (lane == 0)
			red[warp][h] = make_float2(mh, sh);
	}
	__syncthreads();
	if (threadIdx.x < G) {
		uint32_t h = threadIdx.x;
		float mh = -INFINITY, sh = 0.0f;
		for (uint32_t w = 0; w < blockDim.x / 32; w++)
			kc_ms_merge(mh, sh, red[w][h].x, red[w][h].y);
		size_t n_q = (size_t)n_kv * G;
		stats[((size_t)b * n_q + (size_t)g * G + h) * nchunk + blockIdx.x] =
		    make_float2(mh, sh);
	}
}

__global__ void kc_sd_orig_kernel(float *scores, const float2 *stats, const uint16_t *q,
				  uint32_t ld, const uint16_t *ck, uint32_t cap,
				  const int32_t *n_entries, uint32_t n_kv, uint32_t G, uint32_t d,
				  float scale, uint32_t nchunk)
{
	extern __shared__ float qs[];
	__shared__ float2 ms[KC_MAX_GROUP];
	uint32_t bg = blockIdx.y, b = bg / n_kv, g = bg % n_kv;
	int32_t ne_s = n_entries[b];
	uint32_t ne = ne_s < 0 ? 0 : min((uint32_t)ne_s, cap);
	uint32_t j0 = blockIdx.x * KC_SD_CHUNK;
	if (j0 >= ne)
		return;
	if (threadIdx.x < G) {
		uint32_t h = threadIdx.x, nc = (ne + KC_SD_CHUNK - 1) / KC_SD_CHUNK;
		size_t n_q = (size_t)n_kv * G;
		const float2 *st = stats + ((size_t)b * n_q + (size_t)g * G + h) * nchunk;
		float mh = -INFINITY, sh = 0.0f;
		for (uint32_t c = 0; c < nc; c++)
			kc_ms_merge(mh, sh, st[c].x, st[c].y);
		ms[h] = make_float2(mh, 1.0f / sh);
	}
	kc_sd_load_q(qs, q, ld, b, g, G, d, scale);
	uint32_t L = d / 8, epw = 32 / L;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	uint32_t sub = lane % L, e = lane / L;
	float f[8];
	const uint16_t *base = ck + (size_t)bg * cap * d;
	uint32_t jend = min(j0 + KC_SD_CHUNK, ne);
	for (uint32_t jb = j0 + warp * epw; jb < jend; jb += (blockDim.x / 32) * epw) {
		uint32_t j = jb + e;
		bool ok = j < jend;
		kc_sd_load_key8(f, base, j, d, sub, ok);
		float acc = 0.0f;
		for (uint32_t h = 0; h < G; h++) {
			float l = kc_sd_logit(qs, h, d, sub, L, f);
			acc += expf(l - ms[h].x) * ms[h].y;
		}
		if (ok && sub == 0)
			scores[(size_t)bg * cap + j] = acc;
	}
}

/*
 * Original selector on tensor cores (m16n8k16 bf16, fp32 accumulate): the group's query heads
 * are the 16 rows of A (rows >= G are zero), 8 compressed entries the 8 columns of B. The head
 * dimension is permuted (the same permutation for Q and the keys, so the dot is unchanged) so
 * that a lane's fragment words come from 16-byte loads: lane (gid, tig) holds vectors
 * u * 4 + tig (u < NU = d / 32) of Q rows gid and gid + 8 and of entry gid of a tile; k-step s
 * uses words 2s and 2s + 1 of those 4 NU words. Pass 1 (one CTA of 4 warps per 128 entries)
 * writes the scaled logits to scratch and a per-chunk (max, sum-exp) per head; pass 2 merges the
 * chunk statistics per head and writes sum_h exp(l_h - M_h) / S_h per entry.
 */
#define KC_SDM_WARPS 4u
#define KC_SDM_CHUNK 128u /* entries per CTA in pass 1: 4 warps x 4 tiles of 8 */
#define KC_SDM2_CHUNK 512u /* entries per CTA in pass 2 */
#define KC_SDM2_THREADS 256u

static __host__ __device__ __forceinline__ uint32_t kc_sdm_ldl(uint32_t cap)
{
	return (cap + 3u) & ~3u; /* row stride of the logits scratch */
}

template <int NU>
__global__ void __launch_bounds__(KC_SDM_WARPS * 32)
    kc_sdm_pass1_kernel(float *__restrict__ logits, float2 *__restrict__ stats,
			const uint16_t *__restrict__ q, uint32_t ld, const uint16_t *__restrict__ ck,
			uint32_t cap, const int32_t *__restrict__ n_entries, uint32_t n_kv,
			uint32_t G, float scale, uint32_t nchunk)
{
	constexpr int TG = NU >= 8 ? 2 : 4; /* tiles with loads in flight together */
	constexpr uint32_t d = 32 * NU;
	__shared__ float2 red[KC_SDM_WARPS][16];
	uint32_t bg = blockIdx.y, b = bg / n_kv, g = bg % n_kv;
	int32_t ne_s = n_entries[b];
	uint32_t ne = ne_s < 0 ? 0 : min((uint32_t)ne_s, cap);
	uint32_t j0 = blockIdx.x * KC_SDM_CHUNK;
	if (j0 >= ne)
		return;
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
	uint32_t qa[2 * NU][4];
	{
		const uint16_t *qb = q + (size_t)b * ld + (size_t)g * G * d;
#pragma unroll
		for (int u = 0; u < NU; u++) {
			uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
			if (gid < G)
				x0 = *(const uint4 *)(qb + (size_t)gid * d + (u * 4 + tig) * 8);
			if (gid + 8 < G)
				x1 = *(const uint4 *)(qb + (size_t)(gid + 8) * d + (u * 4 + tig) * 8);
			qa[2 * u][0] = x0.x;
			qa[2 * u][1] = x1.x;
			qa[2 * u][2] = x0.y;
			qa[2 * u][3] = x1.y;
			qa[2 * u + 1][0] = x0.z;
			qa[2 * u + 1][1] = x1.z;
			qa[2 * u + 1][2] = x0.w;
			qa[2 * u + 1][3] = x1.w;
		}
	}
	const uint16_t *base = ck + (size_t)bg * cap * d;
	uint32_t ldl = kc_sdm_ldl(cap);
	float *lrow0 = logits + ((size_t)bg * G + gid) * ldl; /* [b, n_kv, G, ldl] */
	float *lrow1 = lrow0 + (size_t)8 * ldl;
	float m0 = -INFINITY, s0 = 0.0f, m1 = -INFINITY, s1 = 0.0f;
	uint32_t wj = j0 + warp * 32;
#pragma unroll
	for (int t0 = 0; t0 < 4; t0 += TG) {
		uint4 kv[TG][NU];
#pragma unroll
		for (int t = 0; t < TG; t++) {
			uint32_t je = wj + (t0 + t) * 8 + gid;
#pragma unroll
			for (int u = 0; u < NU; u++)
				kv[t][u] = je < ne ? *(const uint4 *)(base + (size_t)je * d +
								     (u * 4 + tig) * 8)
						   : make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (int t = 0; t < TG; t++) {
			float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
			for (int u = 0; u < NU; u++) {
				kc_mma(c, qa[2 * u], kv[t][u].x, kv[t][u].y);
				kc_mma(c, qa[2 * u + 1], kv[t][u].z, kv[t][u].w);
			}
			uint32_t j = wj + (t0 + t) * 8 + tig * 2;
			float l[4] = {c[0] * scale, c[1] * scale, c[2] * scale, c[3] * scale};
			if (j < ldl) { /* ldl is a multiple of 4 and j even: j + 1 < ldl too */
				if (gid < G)
					*(float2 *)(lrow0 + j) = make_float2(l[0], l[1]);
				if (gid + 8 < G)
					*(float2 *)(lrow1 + j) = make_float2(l[2], l[3]);
			}
			bool v0 = j < ne, v1 = j + 1 < ne;
			float a0 = v0 ? l[0] : -INFINITY, a1 = v1 ? l[1] : -INFINITY;
			float a2 = v0 ? l[2] : -INFINITY, a3 = v1 ? l[3] : -INFINITY;
			kc_ms_merge(m0, s0, fmaxf(a0, a1),
				    (v0 ? expf(a0 - fmaxf(a0, a1)) : 0.0f) +
					(v1 ? expf(a1 - fmaxf(a0, a1)) : 0.0f));
			kc_ms_merge(m1, s1, fmaxf(a2, a3),
				    (v0 ? expf(a2 - fmaxf(a2, a3)) : 0.0f) +
					(v1 ? expf(a3 - fmaxf(a2, a3)) : 0.0f));
		}
	}
#pragma unroll
	for (int o = 1; o <= 2; o <<= 1) {
		float mm = __shfl_xor_sync(0xffffffffu, m0, o), ss = __shfl_xor_sync(0xffffffffu, s0, o);
		kc_ms_merge(m0, s0, mm, ss);
		mm = __shfl_xor_sync(0xffffffffu, m1, o);
		ss = __shfl_xor_sync(0xffffffffu, s1, o);
		kc_ms_merge(m1, s1, mm, ss);
	}
	if (tig == 0) {
		red[warp][gid] = make_float2(m0, s0);
		red[warp][gid + 8] = make_float2(m1, s1);
	}
	__syncthreads();
	if (threadIdx.x < G) {
		uint32_t h = threadIdx.x;
		float mh = -INFINITY, sh = 0.0f;
#pragma unroll
		for (uint32_t w = 0; w < KC_SDM_WARPS; w++)
			kc_ms_merge(mh, sh, red[w][h].x, red[w][h].y);
		size_t n_q = (size_t)n_kv * G;
		stats[((size_t)b * n_q + (size_t)g * G + h) * nchunk + blockIdx.x] =
		    make_float2(mh, sh);
	}
}

__global__ void __launch_bounds__(KC_SDM2_THREADS)
    kc_sdm_pass2_kernel(float *__restrict__ scores, const float *__restrict__ logits,
			const float2 *__restrict__ stats, uint32_t cap,
			const int32_t *__restrict__ n_entries, uint32_t n_kv, uint32_t G,
			uint32_t nchunk)
{
	__shared__ float2 ms[16];
	uint32_t bg = blockIdx.y, b = bg / n_kv, g = bg % n_kv, tid = threadIdx.x;
	int32_t ne_s = n_entries[b];
	uint32_t ne = ne_s < 0 ? 0 : min((uint32_t)ne_s, cap);
	uint32_t j0 = blockIdx.x * KC_SDM2_CHUNK;
	if (j0 >= ne)
		return;
	{
		/* 16 lanes per head merge that head's chunk statistics */
		uint32_t h = tid >> 4, part = tid & 15, nc = (ne + KC_SDM_CHUNK - 1) / KC_SDM_CHUNK;
		float mh = -INFINITY, sh = 0.0f;
		if (h < G) {
			size_t n_q = (size_t)n_kv * G;
			const float2 *st = stats + ((size_t)b * n_q + (size_t)g * G + h) * nchunk;
			for (uint32_t c = part; c < nc; c += 16) {
				float2 v = st[c];
				kc_ms_merge(mh, sh, v.x, v.y);
			}
		}
#pragma unroll
		for (int o = 8; o > 0; o >>= 1) {
			float m2 = __shfl_xor_sync(0xffffffffu, mh, o);
			float s2 = __shfl_xor_sync(0xffffffffu, sh, o);
			kc_ms_merge(mh, sh, m2, s2);
		}
		if (part == 0 && h < G)
			ms[h] = make_float2(mh, 1.0f / sh);
	}
	__syncthreads();
	uint32_t ldl = kc_sdm_ldl(cap), jend = min(j0 + KC_SDM2_CHUNK, ne);
	const float *lb = logits + (size_t)bg * G * ldl;
	for (uint32_t j = j0 + tid; j < jend; j += KC_SDM2_THREADS) {
		float acc = 0.0f;
#pragma unroll
		for (uint32_t h = 0; h < 16; h++)
			if (h < G)
				acc += expf(lb[(size_t)h * ldl + j] - ms[h].x) * ms[h].y;
		scores[(size_t)bg * cap + j] = acc;
	}
}

/*
 * Tensor-core original selector when the shape allows it (else the SIMT kernels below);
 * SPARDA_KCUDA_SCORE=simt forces the SIMT kernels (read at each call).
 */
static bool kc_sd_use_mma(void)
{
	const char *e = getenv("SPARDA_KCUDA_SCORE");
	return !(e && !strcmp(e, "simt"));
}

static bool kc_sdm_ok(uint32_t d)
{
	return d == 32 || d == 64 || d == 128 || d == 256;
}

static int kc_sdm_launch(cudaStream_t st, void *scratch, float *scores, const uint16_t *q,
			 uint32_t ld, const uint16_t *ck, uint32_t cap, const int32_t *n_entries,
			 uint32_t b, uint32_t n_kv, uint32_t G, uint32_t d, float scale)
{
	uint32_t nchunk = kc_div_up(cap, KC_SDM_CHUNK);
	float2 *stats = (float2 *)scratch;
	float *logits = (float *)(stats + (size_t)b * n_kv * G * nchunk);
	dim3 g1(nchunk, b * n_kv), g2(kc_div_up(cap, KC_SDM2_CHUNK), b * n_kv);
	uint32_t th = KC_SDM_WARPS * 32;
	switch (d) {
	case 32:
		kc_sdm_pass1_kernel<1><<<g1, th, 0, st>>>(logits, stats, q, ld, ck, cap, n_entries,
							  n_kv, G, scale, nchunk);
		break;
	case 64:
		kc_sdm_pass1_kernel<2><<<g1, th, 0, st>>>(logits, stats, q, ld, ck, cap, n_entries,
							  n_kv, G, scale, nchunk);
		break;
	case 128:
		kc_sdm_pass1_kernel<4><<<g1, th, 0, st>>>(logits, stats, q, ld, ck, cap, n_entries,
							  n_kv, G, scale, nchunk);
		break;
	default:
		kc_sdm_pass1_kernel<8><<<g1, th, 0, st>>>(logits, stats, q, ld, ck, cap, n_entries,
							  n_kv, G, scale, nchunk);
		break;
	}
	KC_LAUNCHED("score_decode_original_pass1");
	kc_sdm_pass2_kernel<<<g2, KC_SDM2_THREADS, 0, st>>>(scores, logits, stats, cap, n_entries,
							     n_kv, G, nchunk);
	KC_LAUNCHED("score_decode_original_pass2");
	return 0;
}

static bool kc_sd_dim_ok(uint32_t d)
{
	return d >= 8 && d <= 256 && d % 8 == 0 && 32 % (d / 8) == 0;
}

extern "C" size_t kc_score_decode_scratch(uint32_t b, uint32_t n_q, uint32_t cap)
{
	size_t nchunk = (cap + KC_SD_CHUNK - 1) / KC_SD_CHUNK;
	size_t simt = (size_t)b * n_q * nchunk * sizeof(float2);
	/* tensor-core path: chunk stats, then the logits [b, n_q, ldl] */
	size_t mma = (size_t)b * n_q * ((cap + KC_SDM_CHUNK - 1) / KC_SDM_CHUNK) * sizeof(float2) +
		     (size_t)b * n_q * kc_sdm_ldl(cap) * sizeof(float) + 16;
	return simt > mma ? simt : mma;
}

extern "C" int kc_score_decode(cudaStream_t st, void *scratch, float *scores, const uint16_t *q,
			       uint32_t ld, const uint16_t *ck, uint32_t cap,
			       const int32_t *n_entries, uint32_t b, uint32_t n_q, uint32_t n_kv,
			       uint32_t d, bool original, float scale)
{
	if (n_kv == 0 || !kc_sd_dim_ok(d) || ld % 8 || ((uintptr_t)q | (uintptr_t)ck) % 16)
		return -EINVAL;
	if (b == 0 || cap == 0)
		return 0;
	uint32_t nchunk = kc_div_up(cap, KC_SD_CHUNK);
	dim3 grid(nchunk, b * n_kv);
	if (!original) {
		if (n_q != n_kv)
			return -EINVAL;
		dim3 fgrid(kc_div_up(cap, KC_SDF_CHUNK), b * n_kv);
		kc_sd_forecast_kernel<<<fgrid, KC_SD_THREADS, 0, st>>>(scores, q, ld, ck, cap,
								       n_entries, n_kv, d);
		KC_LAUNCHED("score_decode_forecast");
		return 0;
	}
	if (n_q % n_kv || n_q / n_kv > KC_MAX_GROUP || !scratch)
		return -EINVAL;
	uint32_t G = n_q / n_kv;
	if (kc_sd_use_mma() && kc_sdm_ok(d) && ld % 8 == 0)
		return kc_sdm_launch(st, scratch, scores, q, ld, ck, cap, n_entries, b, n_kv, G, d,
				     scale);
	size_t smem = (size_t)G * d * sizeof(float);
	kc_sd_stats_kernel<<<grid, KC_SD_THREADS, smem, st>>>((float2 *)scratch, q, ld, ck, cap,
							      n_entries, n_kv, G, d, scale, nchunk);
	KC_LAUNCHED("score_decode_stats");
	kc_sd_orig_kernel<<<grid, KC_SD_THREADS, smem, st>>>(
	    scores, (const float2 *)scratch, q, ld, ck, cap, n_entries, n_kv, G, d, scale, nchunk);
	KC_LAUNCHED("score_decode_original");
	return 0;
}

/* ---------------------------------------------------------------- pooling + top-k */

struct kc_topk_rows {
	const float *scores; /* row r at scores + r * row_stride */
	size_t row_stride;
	int32_t *sel; /* row r at sel + r * topk */
	/* decode: per-sequence counts, row r = seq * n_kv + g */
	const int32_t *n_entries, *n_blocks;
	uint32_t n_kv;
	/* prefill (n_entries == NULL): row r = g * n_qb + qb */
	uint32_t n_qb, t, p0;
	uint32_t kcap; /* pooled keys that fit the dynamic shared memory (0: pool from global) */
};

/* Pooled score of block m: forced +inf, else max of the valid entries of its window. */
static __device__ __forceinline__ float kc_pool_at(const float *row, uint32_t m, uint32_t own,
						   uint32_t ne, const struct kb_sparse &sp)
{
	if (m < sp.sink || m + sp.local >= own)
		return INFINITY;
	int64_t j0 = (int64_t)sp.pool_stride * m - sp.pool_pad;
	int64_t j1 = j0 + sp.pool_kernel;
	if (j0 < 0)
		j0 = 0;
	if (j1 > (int64_t)ne)
		j1 = ne;
	float v = -INFINITY;
	for (int64_t j = j0; j < j1; j++)
		v = fmaxf(v, row[j]);
	return v;
}

__global__ void __launch_bounds__(KC_TK_THREADS)
    kc_topk_kernel(struct kc_topk_rows a, struct kb_sparse sp)
{
	__shared__ uint32_t hist[256];
	__shared__ uint32_t wsum[32];
	__shared__ uint32_t s_prefix, s_mask, s_rem;
	extern __shared__ uint32_t skeys[]; /* the pooled keys, pooled once when nb <= kcap */
	uint32_t r = blockIdx.x, ne, nb;
	if (a.n_entries) {
		uint32_t seq = r / a.n_kv;
		int32_t e = a.n_entries[seq], bl = a.n_blocks[seq];
		ne = e < 0 ? 0 : min((uint32_t)e, (uint32_t)a.row_stride);
		nb = bl < 0 ? 0 : (uint32_t)bl;
	} else {
		uint32_t qb = r % a.n_qb;
		uint32_t q_end = min(a.t, (qb + 1) * sp.block);
		ne = kc_entries(sp, a.p0 + q_end);
		nb = a.p0 / sp.block + qb + 1;
	}
	const float *row = a.scores + (size_t)r * a.row_stride;
	int32_t *out = a.sel + (size_t)r * sp.topk;
	uint32_t k1 = min(sp.topk, nb), own = nb ? nb - 1 : 0;
	uint32_t tid = threadIdx.x, bd = blockDim.x, lane = tid & 31;
	for (uint32_t i = k1 + tid; i < sp.topk; i += bd)
		out[i] = -1;
	if (k1 == 0)
		return;
	if (tid == 0) {
		s_prefix = 0;
		s_mask = 0;
		s_rem = k1;
	}
	bool cached = nb <= a.kcap;
	if (cached)
		for (uint32_t m = tid; m < nb; m += bd)
			skeys[m] = kc_fkey(kc_pool_at(row, m, own, ne, sp));
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (uint32_t i = tid; i < 256; i += bd)
			hist[i] = 0;
		__syncthreads();
		uint32_t prefix = s_prefix, mask = s_mask;
		for (uint32_t m = tid; m < nb; m += bd) {
			uint32_t key = cached ? skeys[m] : kc_fkey(kc_pool_at(row, m, own, ne, sp));
			if ((key & mask) == prefix)
				atomicAdd(&hist[(key >> shift) & 255u], 1u);
		}
		__syncthreads();
		if (tid < 32) {
			/* lane l scans bins 255-8l down to 248-8l; find the bin holding rank s_rem
			 */
			uint32_t c[8], tot = 0, rem = s_rem;
#pragma unroll
			for (int i = 0; i < 8; i++) {
				c[i] = hist[255 - 8 * lane - i];
				tot += c[i];
			}
			uint32_t inc = tot;
			for (int o = 1; o < 32; o <<= 1) {
				uint32_t v = __shfl_up_sync(0xffffffffu, inc, o);
				if ((int)lane >= o)
					inc += v;
			}
			uint32_t cum = inc - tot;
			if (cum < rem && rem <= inc) {
				for (int i = 0; i < 8; i++) {
					if (cum + c[i] >= rem) {
						uint32_t bin = 255u - 8u * lane - (uint32_t)i;
						s_rem = rem - cum;
						s_prefix = prefix | (bin << shift);
						s_mask = mask | (255u << shift);
						break;
					}
					cum += c[i];
				}
			}
		}
		__syncthreads();
	}
	uint32_t thr = s_prefix, rem = s_rem, base = 0, eqbase = 0;
	for (uint32_t cs = 0; cs < nb; cs += bd) {
		uint32_t m = cs + tid, key = 0, tot;
		bool in = m < nb;
		if (in)
			key = cached ? skeys[m] : kc_fkey(kc_pool_at(row, m, own, ne, sp));
		bool eq = in && key == thr;
		uint32_t eqrank = eqbase + kc_block_scan(eq, &tot, wsum);
		eqbase += tot;
		bool take = in && (key > thr || (eq && eqrank < rem));
		uint32_t rank = base + kc_block_scan(take, &tot, wsum);
		base += tot;
		if (take)
			out[rank] = (int32_t)m;
	}
}

/*
 * Keys to cache in shared memory for rows of at most nb_bound blocks (a row with more pools
 * from global memory in each pass); 0 (always from global) when SPARDA_KCUDA_TOPK=global.
 */
#define KC_TK_KMAX 12288u /* 48 KiB of keys (opted in at init: static arrays come on top) */
static uint32_t kc_topk_kcap(const struct kb_sparse *sp, size_t nb_bound)
{
	(void)sp;
	const char *e = getenv("SPARDA_KCUDA_TOPK");
	if (e && !strcmp(e, "global"))
		return 0;
	return nb_bound < KC_TK_KMAX ? (uint32_t)nb_bound : KC_TK_KMAX;
}

static int kc_sparse_ok(const struct kb_sparse *sp)
{
	if (!sp || sp->block == 0 || sp->ck_kernel == 0 || sp->ck_stride == 0 ||
	    sp->pool_kernel == 0 || sp->topk == 0)
		return -EINVAL;
	if (sp->topk < sp->sink + sp->local + 1)
		return -EINVAL;
	return 0;
}

extern "C" int kc_select_decode(cudaStream_t st, int32_t *sel, const float *scores, uint32_t cap,
				const int32_t *n_entries, const int32_t *n_blocks, uint32_t b,
				uint32_t n_kv, const struct kb_sparse *sp)
{
	int e = kc_sparse_ok(sp);
	if (e)
		return e;
	if (b == 0 || n_kv == 0)
		return 0;
	struct kc_topk_rows a = {};
	a.scores = scores;
	a.row_stride = cap;
	a.sel = sel;
	a.n_entries = n_entries;
	a.n_blocks = n_blocks;
	a.n_kv = n_kv;
	a.kcap = kc_topk_kcap(sp, (cap + sp->pool_pad) / (sp->pool_stride ? sp->pool_stride : 1) + 2);
	kc_topk_kernel<<<b * n_kv, KC_TK_THREADS, a.kcap * 4, st>>>(a, *sp);
	KC_LAUNCHED("select_decode");
	return 0;
}

/* ---------------------------------------------------------------- prefill selection */

/* Copy 64 rows of d bf16 (row stride lds) into shared memory (row stride ldd); zero the rest. */
static __device__ void kc_load_tile(uint16_t *dst, uint32_t ldd, const uint16_t *src, size_t lds,
				    uint32_t rows_valid, uint32_t d)
{
	uint32_t vpr = d / 8;
	for (uint32_t idx = threadIdx.x; idx < KC_TILE * vpr; idx += blockDim.x) {
		uint32_t r = idx / vpr, c = (idx % vpr) * 8;
		uint4 v = make_uint4(0, 0, 0, 0);
		if (r < rows_valid)
			v = *(const uint4 *)(src + (size_t)r * lds + c);
		*(uint4 *)(dst + (size_t)r * ldd + c) = v;
	}
}

/* Sf[64][KC_SLD] = Qs[64][d] . Ks[64][d]^T with 4 warps, warp w owning rows 16w..16w+15. */
static __device__ void kc_tile_qk(const uint16_t *qs, const uint16_t *ks, float *sf, uint32_t ldt,
				  uint32_t d)
{
#ifdef KC_NO_BF16_MMA
	__trap();
#else
	uint32_t w = threadIdx.x >> 5;
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
#pragma unroll
	for (int n = 0; n < 4; n++)
		wmma::fill_fragment(acc[n], 0.0f);
	const __nv_bfloat16 *qb = (const __nv_bfloat16 *)qs;
	const __nv_bfloat16 *kb = (const __nv_bfloat16 *)ks;
	for (uint32_t kk = 0; kk < d; kk += 16) {
		wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
		wmma::load_matrix_sync(fa, qb + (size_t)16 * w * ldt + kk, ldt);
#pragma unroll
		for (int n = 0; n < 4; n++) {
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>
			    fb;
			wmma::load_matrix_sync(fb, kb + (size_t)16 * n * ldt + kk, ldt);
			wmma::mma_sync(acc[n], fa, fb, acc[n]);
		}
	}
#pragma unroll
	for (int n = 0; n < 4; n++)
		wmma::store_matrix_sync(sf + (size_t)16 * w * KC_SLD + 16 * n, acc[n], KC_SLD,
					wmma::mem_row_major);
#endif
}

struct kc_sp_args {
	float *colmax; /* [n_kv, n_qb, c_tot] */
	float2 *stats; /* [n_q, t] (original selector) */
	const uint16_t *q, *ck;
	uint32_t ld, t, p0, cap, n_qb, c_tot, d, G;
	float scale;
};

static __device__ __forceinline__ bool kc_usable(const struct kb_sparse &sp, uint32_t p0,
						 uint32_t i, uint32_t j)
{
	return (uint64_t)sp.ck_stride * j + sp.ck_kernel <= (uint64_t)p0 + i + 1;
}

__global__ void __launch_bounds__(KC_SP_THREADS)
    kc_sp_forecast_kernel(struct kc_sp_args a, struct kb_sparse sp)
{
	extern __shared__ __align__(128) unsigned char smem[];
	uint32_t ldt = a.d + 8;
	uint16_t *qs = (uint16_t *)smem, *ks = qs + KC_TILE * ldt;
	float *sf = (float *)(ks + KC_TILE * ldt);
	uint32_t jt = blockIdx.x, qb = blockIdx.y, g = blockIdx.z, tid = threadIdx.x;
	uint32_t q_first = qb * sp.block, q_end = min(a.t, q_first + sp.block);
	uint32_t c_qb = kc_entries(sp, a.p0 + q_end), j0 = jt * KC_TILE;
	if (j0 >= c_qb)
		return;
	kc_load_tile(ks, ldt, a.ck + ((size_t)g * a.cap + j0) * a.d, a.d,
		     min(KC_TILE, a.c_tot - j0), a.d);
	float cm = -INFINITY;
	for (uint32_t r0 = q_first; r0 < q_end; r0 += KC_TILE) {
		__syncthreads();
		kc_load_tile(qs, ldt, a.q + (size_t)r0 * a.ld + (size_t)g * a.d, a.ld,
			     min(KC_TILE, q_end - r0), a.d);
		__syncthreads();
		kc_tile_qk(qs, ks, sf, ldt, a.d);
		__syncthreads();
		if (tid < KC_TILE) {
			uint32_t j = j0 + tid, rows = min(KC_TILE, q_end - r0);
			for (uint32_t rr = 0; rr < rows; rr++)
				if (kc_usable(sp, a.p0, r0 + rr, j))
					cm = fmaxf(cm, sf[rr * KC_SLD + tid]);
		}
	}
	if (tid < KC_TILE && j0 + tid < a.c_tot)
		a.colmax[((size_t)g * a.n_qb + qb) * a.c_tot + j0 + tid] = cm;
}

/* Original selector, pass 1: per (query, head) softmax max and sum over its usable entries. */
__global__ void __launch_bounds__(KC_SP_THREADS)
    kc_sp_stats_kernel(struct kc_sp_args a, struct kb_sparse sp)
{
	extern __shared__ __align__(128) unsigned char smem[];
	uint32_t ldt = a.d + 8;
	uint16_t *qs = (uint16_t *)smem, *ks = qs + KC_TILE * ldt;
	float *sf = (float *)(ks + KC_TILE * ldt);
	uint32_t qb = blockIdx.x, h = blockIdx.y, g = h / a.G, tid = threadIdx.x;
	uint32_t rr = tid >> 1, half = tid & 1;
	uint32_t q_first = qb * sp.block, q_end = min(a.t, q_first + sp.block);
	for (uint32_t r0 = q_first; r0 < q_end; r0 += KC_TILE) {
		uint32_t rows = min(KC_TILE, q_end - r0);
		__syncthreads();
		kc_load_tile(qs, ldt, a.q + (size_t)r0 * a.ld + (size_t)h * a.d, a.ld, rows, a.d);
		bool valid = rr < rows;
		uint32_t c_row = valid ? kc_entries(sp, a.p0 + r0 + rr + 1) : 0;
		uint32_t c_end = kc_entries(sp, a.p0 + r0 + rows);
		float m = -INFINITY, s = 0.0f;
		for (uint32_t j0 = 0; j0 < c_end; j0 += KC_TILE) {
			__syncthreads();
			kc_load_tile(ks, ldt, a.ck + ((size_t)g * a.cap + j0) * a.d, a.d,
				     min(KC_TILE, a.c_tot - j0), a.d);
			__syncthreads();
			kc_tile_qk(qs, ks, sf, ldt, a.d);
			__syncthreads();
			for (uint32_t cc = 0; cc < 32; cc++) {
				uint32_t j = j0 + half * 32 + cc;
				if (j < c_row)
					kc_ms_merge(
					    m, s, sf[rr * KC_SLD + half * 32 + cc] * a.scale, 1.0f);
			}
		}
		float m2 = __shfl_xor_sync(0xffffffffu, m, 1);
		float s2 = __shfl_xor_sync(0xffffffffu, s, 1);
		kc_ms_merge(m, s, m2, s2);
		if (half == 0 && valid)
			a.stats[(size_t)h * a.t + r0 + rr] = make_float2(m, s);
	}
}

/* Original selector, pass 2: sum over the group of normalised probabilities, column max. */
__global__ void __launch_bounds__(KC_SP_THREADS)
    kc_sp_orig_kernel(struct kc_sp_args a, struct kb_sparse sp)
{
	extern __shared__ __align__(128) unsigned char smem[];
	uint32_t ldt = a.d + 8;
	uint16_t *qs = (uint16_t *)smem, *ks = qs + KC_TILE * ldt;
	float *sf = (float *)(ks + KC_TILE * ldt), *pf = sf + KC_TILE * KC_SLD;
	uint32_t jt = blockIdx.x, qb = blockIdx.y, g = blockIdx.z, tid = threadIdx.x;
	uint32_t q_first = qb * sp.block, q_end = min(a.t, q_first + sp.block);
	uint32_t c_qb = kc_entries(sp, a.p0 + q_end), j0 = jt * KC_TILE;
	if (j0 >= c_qb)
		return;
	kc_load_tile(ks, ldt, a.ck + ((size_t)g * a.cap + j0) * a.d, a.d,
		     min(KC_TILE, a.c_tot - j0), a.d);
	float cm = -INFINITY;
	for (uint32_t r0 = q_first; r0 < q_end; r0 += KC_TILE) {
		uint32_t rows = min(KC_TILE, q_end - r0);
		__syncthreads();
		for (uint32_t e = tid; e < KC_TILE * KC_TILE; e += blockDim.x)
			pf[(e / KC_TILE) * KC_SLD + e % KC_TILE] = 0.0f;
		for (uint32_t hh = 0; hh < a.G; hh++) {
			uint32_t h = g * a.G + hh;
			__syncthreads();
			kc_load_tile(qs, ldt, a.q + (size_t)r0 * a.ld + (size_t)h * a.d, a.ld, rows,
				     a.d);
			__syncthreads();
			kc_tile_qk(qs, ks, sf, ldt, a.d);
			__syncthreads();
			for (uint32_t e = tid; e < KC_TILE * KC_TILE; e += blockDim.x) {
				uint32_t r = e / KC_TILE, c = e % KC_TILE;
				if (r < rows && kc_usable(sp, a.p0, r0 + r, j0 + c)) {
					float2 st = a.stats[(size_t)h * a.t + r0 + r];
					pf[r * KC_SLD + c] +=
					    expf(sf[r * KC_SLD + c] * a.scale - st.x) / st.y;
				}
			}
		}
		__syncthreads();
		if (tid < KC_TILE)
			for (uint32_t r = 0; r < rows; r++)
				if (kc_usable(sp, a.p0, r0 + r, j0 + tid))
					cm = fmaxf(cm, pf[r * KC_SLD + tid]);
	}
	if (tid < KC_TILE && j0 + tid < a.c_tot)
		a.colmax[((size_t)g * a.n_qb + qb) * a.c_tot + j0 + tid] = cm;
}

static size_t kc_sp_colmax_floats(uint32_t t, uint32_t p0, uint32_t n_kv,
				  const struct kb_sparse *sp)
{
	size_t n_qb = (t + sp->block - 1) / sp->block;
	size_t n = (size_t)n_kv * n_qb * kb_ck_entries(sp, p0 + t);
	return (n + 3) & ~(size_t)3;
}

extern "C" size_t kc_select_prefill_work(uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
					 const struct kb_sparse *sp)
{
	if (!sp || sp->block == 0 || sp->ck_stride == 0)
		return 0;
	return kc_sp_colmax_floats(t, p0, n_kv, sp) * sizeof(float) +
	       (size_t)n_q * t * sizeof(float2) + 256;
}

static size_t kc_sp_smem(uint32_t d, bool original)
{
	size_t s = 2 * (size_t)KC_TILE * (d + 8) * sizeof(uint16_t) +
		   (size_t)KC_TILE * KC_SLD * sizeof(float);
	return original ? s + (size_t)KC_TILE * KC_SLD * sizeof(float) : s;
}

extern "C" int kc_select_init(void)
{
	int lim = (int)kc_sp_smem(256, true);
	KC_CHECK(cudaFuncSetAttribute(kc_sp_forecast_kernel,
				      cudaFuncAttributeMaxDynamicSharedMemorySize, lim));
	KC_CHECK(cudaFuncSetAttribute(kc_sp_stats_kernel,
				      cudaFuncAttributeMaxDynamicSharedMemorySize, lim));
	KC_CHECK(cudaFuncSetAttribute(kc_sp_orig_kernel,
				      cudaFuncAttributeMaxDynamicSharedMemorySize, lim));
	/* 48 KiB of pooled keys plus the static arrays pass the no-opt-in limit (rows of more
	 * than 12288 blocks, i.e. contexts past 786K tokens at block 64, failed to launch) */
	KC_CHECK(cudaFuncSetAttribute(kc_topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)(KC_TK_KMAX * sizeof(uint32_t))));
	return 0;
}

extern "C" int kc_select_prefill(cudaStream_t st, int32_t *sel, const uint16_t *q, uint32_t ld,
				 uint32_t t, uint32_t p0, const uint16_t *ck, uint32_t cap,
				 uint32_t n_q, uint32_t n_kv, uint32_t d, bool original,
				 float scale, const struct kb_sparse *sp, void *work)
{
	int e = kc_sparse_ok(sp);
	if (e)
		return e;
	if (n_kv == 0 || d == 0 || d % 16 || d > 256 || ld % 8 || p0 % sp->block || !work ||
	    ((uintptr_t)q | (uintptr_t)ck | (uintptr_t)work) % 16)
		return -EINVAL;
	if (original ? (n_q % n_kv || n_q == 0) : n_q != n_kv)
		return -EINVAL;
	if (t == 0)
		return 0;
	struct kc_sp_args a = {};
	a.colmax = (float *)work;
	a.stats = (float2 *)(a.colmax + kc_sp_colmax_floats(t, p0, n_kv, sp));
	a.q = q;
	a.ck = ck;
	a.ld = ld;
	a.t = t;
	a.p0 = p0;
	a.cap = cap;
	a.n_qb = kc_div_up(t, sp->block);
	a.c_tot = kb_ck_entries(sp, p0 + t);
	a.d = d;
	a.G = n_q / n_kv;
	a.scale = scale;
	if (a.c_tot > cap)
		return -EINVAL;
	if (a.c_tot) {
		dim3 grid(kc_div_up(a.c_tot, KC_TILE), a.n_qb, n_kv);
		if (!original) {
			kc_sp_forecast_kernel<<<grid, KC_SP_THREADS, kc_sp_smem(d, false), st>>>(
			    a, *sp);
			KC_LAUNCHED("select_prefill_forecast");
		} else {
			dim3 sgrid(a.n_qb, n_q);
			kc_sp_stats_kernel<<<sgrid, KC_SP_THREADS, kc_sp_smem(d, false), st>>>(a,
											       *sp);
			KC_LAUNCHED("select_prefill_stats");
			kc_sp_orig_kernel<<<grid, KC_SP_THREADS, kc_sp_smem(d, true), st>>>(a, *sp);
			KC_LAUNCHED("select_prefill_original");
		}
	}
	struct kc_topk_rows r = {};
	r.scores = a.colmax;
	r.row_stride = a.c_tot;
	r.sel = sel;
	r.n_qb = a.n_qb;
	r.t = t;
	r.p0 = p0;
	r.kcap = kc_topk_kcap(sp, p0 / sp->block + a.n_qb);
	kc_topk_kernel<<<n_kv * a.n_qb, KC_TK_THREADS, r.kcap * 4, st>>>(r, *sp);
	KC_LAUNCHED("select_prefill_topk");
	return 0;
}
