/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefill attention, one CTA per (64-query tile, query head), 4 warps. Per 64-key tile:
 * S = Q.K^T on tensor cores (WMMA bf16, fp32 accumulate) into shared memory, the online softmax
 * by two threads per row (causal mask, rows with nothing visible yet stay at zero), P rounded to
 * bf16, and O += P.V on tensor cores with O kept in shared memory (the per-row rescale is applied
 * there before the accumulate, since WMMA's fragment layout is opaque). Block-sparse: the key
 * tiles are the 64-key pieces of the query block's selected KV blocks.
 */
#include <mma.h>

#include <stdlib.h>
#include <string.h>

#include "attn_prefill.cuh"
#include "attn_prefill_fa2.cuh"
#include "attn_prefill_tiles.cuh"
#include "attn_prefill_wg.cuh"
#include "kc_common.cuh"

using namespace nvcuda;

#define KC_AP_THREADS 128u
#define KC_AP_T 64u   /* queries and keys per tile */
#define KC_AP_SLD 68u /* fp32 score tile row stride */
#define KC_AP_PLD 72u /* bf16 probability tile row stride */

struct kc_ap_smem {
	uint16_t *qs, *ks, *vs, *ps;
	float *sf, *of;
	uint32_t ldt, ldo;
};

static __device__ struct kc_ap_smem kc_ap_carve(unsigned char *base, uint32_t d)
{
	struct kc_ap_smem s;
	s.ldt = d + 8;
	s.ldo = d + 4;
	s.qs = (uint16_t *)base;
	s.ks = s.qs + KC_AP_T * s.ldt;
	s.vs = s.ks + KC_AP_T * s.ldt;
	s.ps = s.vs + KC_AP_T * s.ldt;
	s.sf = (float *)(s.ps + KC_AP_T * KC_AP_PLD);
	s.of = s.sf + KC_AP_T * KC_AP_SLD;
	return s;
}

static size_t kc_ap_smem_bytes(uint32_t d)
{
	return 3 * (size_t)KC_AP_T * (d + 8) * 2 + (size_t)KC_AP_T * KC_AP_PLD * 2 +
	       (size_t)KC_AP_T * KC_AP_SLD * 4 + (size_t)KC_AP_T * (d + 4) * 4;
}

/*
 * Fill the 64-row tile dst (stride ldd): rows [lo, hi) from src, whose row r0 + r is tile row r
 * (stride lds); other rows zero.
 */
static __device__ void kc_ap_load(uint16_t *dst, uint32_t ldd, const uint16_t *src, size_t lds,
				  int64_t r0, uint32_t lo, uint32_t hi, uint32_t d)
{
	uint32_t vpr = d / 8;
	for (uint32_t idx = threadIdx.x; idx < KC_AP_T * vpr; idx += blockDim.x) {
		uint32_t r = idx / vpr, c = (idx % vpr) * 8;
		uint4 val = make_uint4(0, 0, 0, 0);
		if (r >= lo && r < hi)
			val = *(const uint4 *)(src + (size_t)(r0 + r) * lds + c);
		*(uint4 *)(dst + (size_t)r * ldd + c) = val;
	}
}

/*
 * One key tile: keys at positions [kp0, kp0 + 64), the first `rows` valid, against the query
 * tile at positions [q0, q0 + 64) whose rows [lo, hi) are real. Row state (m, l) of query row
 * tid / 2 lives in both threads of the pair.
 */
static __device__ void kc_ap_tile(const struct kc_fa_args &a, const struct kc_ap_smem &s,
				  uint32_t g, uint32_t q0, uint32_t lo, uint32_t hi, uint32_t kp0,
				  uint32_t rows, float &m, float &l)
{
	uint32_t tid = threadIdx.x, d = a.d;
	__syncthreads();
	kc_ap_load(s.ks, s.ldt, a.k + (size_t)g * d, a.ld_kv, kp0, 0, rows, d);
	kc_ap_load(s.vs, s.ldt, a.v + (size_t)g * d, a.ld_kv, kp0, 0, rows, d);
	__syncthreads();
#ifdef KC_NO_BF16_MMA
	__trap();
#else
	uint32_t w = tid >> 5;
	{
		wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
#pragma unroll
		for (int n = 0; n < 4; n++)
			wmma::fill_fragment(acc[n], 0.0f);
		const __nv_bfloat16 *qb = (const __nv_bfloat16 *)s.qs;
		const __nv_bfloat16 *kbs = (const __nv_bfloat16 *)s.ks;
		for (uint32_t kk = 0; kk < d; kk += 16) {
			wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>
			    fa;
			wmma::load_matrix_sync(fa, qb + (size_t)16 * w * s.ldt + kk, s.ldt);
#pragma unroll
			for (int n = 0; n < 4; n++) {
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
					       wmma::col_major>
				    fb;
				wmma::load_matrix_sync(fb, kbs + (size_t)16 * n * s.ldt + kk,
						       s.ldt);
				wmma::mma_sync(acc[n], fa, fb, acc[n]);
			}
		}
#pragma unroll
		for (int n = 0; n < 4; n++)
			wmma::store_matrix_sync(s.sf + (size_t)16 * w * KC_AP_SLD + 16 * n, acc[n],
						KC_AP_SLD, wmma::mem_row_major);
	}
	__syncthreads();
	{
		uint32_t r = tid >> 1, half = tid & 1, qpos = q0 + r;
		bool rvalid = r >= lo && r < hi;
		float *srow = s.sf + (size_t)r * KC_AP_SLD + half * 32;
		float v[32], mt = -INFINITY;
#pragma unroll
		for (int c = 0; c < 32; c++) {
			uint32_t kc = half * 32 + c;
			bool ok = rvalid && kc < rows && kp0 + kc <= qpos;
			v[c] = ok ? srow[c] * a.scale : -INFINITY;
			mt = fmaxf(mt, v[c]);
		}
		mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
		float mn = fmaxf(m, mt);
		float alpha = mn == -INFINITY ? 1.0f : expf(m - mn);
		float ps = 0.0f;
		uint16_t *prow = s.ps + (size_t)r * KC_AP_PLD + half * 32;
#pragma unroll
		for (int c = 0; c < 32; c++) {
			float p = mn == -INFINITY ? 0.0f : expf(v[c] - mn);
			ps += p;
			prow[c] = kc_tobf(p);
		}
		ps += __shfl_xor_sync(0xffffffffu, ps, 1);
		l = l * alpha + ps;
		m = mn;
		float *orow = s.of + (size_t)r * s.ldo + half * (d / 2);
		for (uint32_t c = 0; c < d / 2; c++)
			orow[c] *= alpha;
	}
	__syncthreads();
	{
		const __nv_bfloat16 *pb = (const __nv_bfloat16 *)s.ps;
		const __nv_bfloat16 *vbs = (const __nv_bfloat16 *)s.vs;
		for (uint32_t n = 0; n < d; n += 16) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			float *op = s.of + (size_t)16 * w * s.ldo + n;
			wmma::load_matrix_sync(acc, op, s.ldo, wmma::mem_row_major);
#pragma unroll
			for (uint32_t kk = 0; kk < KC_AP_T; kk += 16) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
					       wmma::row_major>
				    fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
					       wmma::row_major>
				    fb;
				wmma::load_matrix_sync(fa, pb + (size_t)16 * w * KC_AP_PLD + kk,
						       KC_AP_PLD);
				wmma::load_matrix_sync(fb, vbs + (size_t)kk * s.ldt + n, s.ldt);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(op, acc, s.ldo, wmma::mem_row_major);
		}
	}
#endif
}

__global__ void __launch_bounds__(KC_AP_THREADS) kc_ap_kernel(struct kc_fa_args a)
{
	extern __shared__ __align__(128) unsigned char smem[];
	struct kc_ap_smem s = kc_ap_carve(smem, a.d);
	uint32_t qt = blockIdx.x, h = blockIdx.y, g = h / (a.n_q / a.n_kv), tid = threadIdx.x;
	/* Query tiles sit on 64-aligned positions so a tile never straddles a KV block. */
	uint32_t d = a.d, q0 = a.p0 - a.p0 % KC_AP_T + qt * KC_AP_T;
	uint32_t lo = q0 < a.p0 ? a.p0 - q0 : 0, hi = min(KC_AP_T, a.p0 + a.t - q0);
	kc_ap_load(s.qs, s.ldt, a.q + (size_t)h * d, a.ld_q, (int64_t)q0 - a.p0, lo, hi, d);
	for (uint32_t i = tid; i < KC_AP_T * d; i += blockDim.x)
		s.of[(i / d) * s.ldo + i % d] = 0.0f;
	float m = -INFINITY, l = 0.0f;
	uint32_t last = q0 + hi - 1; /* the last query position of the tile */
	if (!a.sel) {
		for (uint32_t kp0 = 0; kp0 <= last; kp0 += KC_AP_T)
			kc_ap_tile(a, s, g, q0, lo, hi, kp0, min(KC_AP_T, last + 1 - kp0), m, l);
	} else {
		uint32_t qb = q0 / a.block - a.p0 / a.block;
		const int32_t *sl = a.sel + ((size_t)g * a.n_qb + qb) * a.topk;
		for (uint32_t i = 0; i < a.topk; i++) {
			int32_t blk = sl[i];
			if (blk < 0)
				continue;
			uint32_t b0 = (uint32_t)blk * a.block;
			for (uint32_t kp0 = b0; kp0 < b0 + a.block && kp0 <= last; kp0 += KC_AP_T)
				kc_ap_tile(a, s, g, q0, lo, hi, kp0, min(KC_AP_T, last + 1 - kp0),
					   m, l);
		}
	}
	__syncthreads();
	uint32_t r = tid >> 1, half = tid & 1;
	if (r >= lo && r < hi) {
		float inv = l > 0.0f ? 1.0f / l : 0.0f;
		const float *orow = s.of + (size_t)r * s.ldo;
		uint16_t *o = a.out + (size_t)(q0 + r - a.p0) * a.ld_o + (size_t)h * d;
		for (uint32_t c = half * (d / 2); c < (half + 1) * (d / 2); c++)
			o[c] = kc_tobf(orow[c] * inv);
	}
}

extern "C" int kc_attn_prefill_init(void)
{
	KC_CHECK(cudaFuncSetAttribute(kc_ap_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)kc_ap_smem_bytes(256)));
	int r = kc_fa2_init();
	return r ? r : kc_wg_init();
}

/*
 * The kernel SPARDA_KCUDA_PREFILL names (read at each call): `wg` (the default: the wgmma kernel,
 * attn_prefill_wg.cu, where this build has it for the device), `fa2` (attn_prefill_fa2.cu) or
 * `wmma` (this file's kernel). A kernel that does not handle the shape passes it down the list.
 */
enum kc_ap_kind { KC_AP_WG, KC_AP_FA2, KC_AP_WMMA };
static enum kc_ap_kind kc_ap_kind(void)
{
	const char *e = getenv("SPARDA_KCUDA_PREFILL");
	if (e && !strcmp(e, "wmma"))
		return KC_AP_WMMA;
	return e && !strcmp(e, "fa2") ? KC_AP_FA2 : KC_AP_WG;
}

extern "C" int kc_attn_prefill(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q,
			       uint32_t ld_q, const uint16_t *k, const uint16_t *v, uint32_t ld_kv,
			       uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv, uint32_t d,
			       float scale, const int32_t *sel, uint32_t topk, uint32_t block)
{
	if (n_kv == 0 || n_q % n_kv || d == 0 || d % 16 || d > 256 || ld_q % 8 || ld_kv % 8 ||
	    ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v) % 16)
		return -EINVAL;
	if (sel && (block == 0 || block % KC_AP_T || topk == 0))
		return -EINVAL;
	if (t == 0 || n_q == 0)
		return 0;
	enum kc_ap_kind kind = kc_ap_kind();
	if (kind == KC_AP_WG && kc_wg_ok(d, scale, sel, topk, block))
		return kc_wg_launch(st, out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d, scale,
				    sel, topk, block);
	if (kind != KC_AP_WMMA && kc_fa2_ok(d, sel, topk, block))
		return kc_fa2_launch(st, out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d,
				     scale, sel, topk, block);
	struct kc_fa_args a = kc_fa_args_make(out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d,
					      scale, sel, topk, block, KC_AP_T);
	dim3 grid(a.n_qt, n_q);
	kc_ap_kernel<<<grid, KC_AP_THREADS, kc_ap_smem_bytes(d), st>>>(a);
	KC_LAUNCHED("attn_prefill");
	return 0;
}
