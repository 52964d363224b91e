/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FlashAttention-2 style prefill attention: one CTA of 4 warps per (64-query tile, query head),
 * each warp owning 16 query rows. Q is loaded once (cp.async) and kept as mma A fragments in
 * registers; K/V tiles of 64 keys are double-buffered in shared memory with cp.async (rows padded
 * by 16 bytes, so ldmatrix is conflict-free); S = Q.K^T and O += P.V are mma.sync m16n8k16 bf16
 * with fp32 accumulators; the online softmax (base 2) runs on the S accumulators, whose layout is
 * the A fragment layout of P, so P never leaves registers. Only the diagonal tile is masked.
 * Block-sparse: warp 0 first lists the 64-key tiles of the query block's selected KV blocks
 * (in sel order, clipped causally) in shared memory; the tile loop walks that list.
 */
#include <stdlib.h>
#include <string.h>

#include "attn_prefill_fa2.cuh"
#include "attn_prefill_tiles.cuh"
#include "kc_common.cuh"
#include "kc_mma.cuh"

/* W warps of 16 query rows (W = 8 only for dense: a 128-row tile spans two 64-key blocks). */
template <int D, int W>
__global__ void __launch_bounds__(W * 32, 8 / W) kc_fa_kernel(struct kc_fa_args a)
{
	constexpr uint32_t LDS = D + 8, TILE = KC_FA_BN * LDS, KS = D / 16, ON = D / 8;
	constexpr uint32_t BM = 16 * W, NT = 32 * W;
	extern __shared__ __align__(128) uint16_t fsm[];
	__shared__ int32_t tl[KC_FA_MAXT];
	__shared__ uint32_t s_nt;
	/* Q [BM], then K and V tiles of 64 rows, two stages each */
	uint16_t *qs = fsm, *ks = fsm + BM * LDS, *vs = ks + 2 * TILE;
	uint32_t h = blockIdx.y, g = h / (a.n_q / a.n_kv), tid = threadIdx.x;
	uint32_t lane = tid & 31, w = tid >> 5, gid = lane >> 2, tig = lane & 3;
	struct kc_fa_qtile qt = kc_fa_place(a, BM, g, tl, &s_nt);
	uint32_t q0 = qt.q0, lo = qt.lo, hi = qt.hi, last = qt.last, nt = qt.nt;
	bool sparse = a.sel != NULL;
	const uint16_t *kg = a.k + (size_t)g * D, *vg = a.v + (size_t)g * D;
	kc_fa_load<D, BM, NT>(qs, a.q + (size_t)h * D, a.ld_q, (int64_t)q0 - a.p0, lo, hi);
	if (nt) {
		uint32_t kp = kc_fa_tile(tl, sparse, 0), rows = min(KC_FA_BN, last + 1 - kp);
		kc_fa_load<D, KC_FA_BN, NT>(ks, kg, a.ld_kv, kp, 0, rows);
		kc_fa_load<D, KC_FA_BN, NT>(vs, vg, a.ld_kv, kp, 0, rows);
	}
	kc_cp_commit();

	uint32_t qf[KS][4];
	float o[ON][4];
#pragma unroll
	for (uint32_t n = 0; n < ON; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
	uint32_t r0 = w * 16 + gid; /* this lane's rows: r0 and r0 + 8 of the tile */
	uint32_t lrow = lane & 7, lmat = lane >> 3;

	for (uint32_t it = 0; it < nt; it++) {
		uint32_t st = it & 1, kp = kc_fa_tile(tl, sparse, it);
		if (it + 1 < nt) {
			uint32_t kn = kc_fa_tile(tl, sparse, it + 1),
				 rows = min(KC_FA_BN, last + 1 - kn);
			kc_fa_load<D, KC_FA_BN, NT>(ks + (st ^ 1) * TILE, kg, a.ld_kv, kn, 0, rows);
			kc_fa_load<D, KC_FA_BN, NT>(vs + (st ^ 1) * TILE, vg, a.ld_kv, kn, 0, rows);
		}
		kc_cp_commit();
		kc_cp_wait<1>();
		__syncthreads();
		if (it == 0) {
#pragma unroll
			for (uint32_t kk = 0; kk < KS; kk++)
				kc_ldm4(qf[kk], qs + (w * 16 + lrow + (lmat & 1) * 8) * LDS +
						    kk * 16 + (lmat >> 1) * 8);
		}
		const uint16_t *kt = ks + st * TILE, *vt = vs + st * TILE;
		float s[8][4];
#pragma unroll
		for (uint32_t n = 0; n < 8; n++)
			s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
		for (uint32_t kk = 0; kk < KS; kk++) {
#pragma unroll
			for (uint32_t np = 0; np < 4; np++) {
				uint32_t b[4];
				kc_ldm4(b, kt + (np * 16 + lrow + (lmat >> 1) * 8) * LDS + kk * 16 +
					       (lmat & 1) * 8);
				kc_mma(s[2 * np], qf[kk], b[0], b[1]);
				kc_mma(s[2 * np + 1], qf[kk], b[2], b[3]);
			}
		}
		/* scale to base 2, mask the diagonal tile (keys after the row's position) */
		bool diag = kp + KC_FA_BN > q0;
		float t0 = -INFINITY, t1 = -INFINITY;
#pragma unroll
		for (uint32_t n = 0; n < 8; n++)
#pragma unroll
			for (uint32_t e = 0; e < 4; e++) {
				uint32_t c = n * 8 + tig * 2 + (e & 1), r = r0 + (e >> 1) * 8;
				float x = s[n][e] * a.sl2;
				if (diag && kp + c > q0 + r)
					x = -INFINITY;
				s[n][e] = x;
				if (e < 2)
					t0 = fmaxf(t0, x);
				else
					t1 = fmaxf(t1, x);
			}
#pragma unroll
		for (int of = 1; of <= 2; of <<= 1) {
			t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, of));
			t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, of));
		}
		float mn0 = fmaxf(m0, t0), mn1 = fmaxf(m1, t1);
		float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
		float al0 = exp2f(m0 - mu0), al1 = exp2f(m1 - mu1);
		m0 = mn0;
		m1 = mn1;
		float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
		for (uint32_t n = 0; n < 8; n++) {
			s[n][0] = exp2f(s[n][0] - mu0);
			s[n][1] = exp2f(s[n][1] - mu0);
			s[n][2] = exp2f(s[n][2] - mu1);
			s[n][3] = exp2f(s[n][3] - mu1);
			ps0 += s[n][0] + s[n][1];
			ps1 += s[n][2] + s[n][3];
		}
		l0 = l0 * al0 + ps0;
		l1 = l1 * al1 + ps1;
#pragma unroll
		for (uint32_t n = 0; n < ON; n++) {
			o[n][0] *= al0;
			o[n][1] *= al0;
			o[n][2] *= al1;
			o[n][3] *= al1;
		}
#pragma unroll
		for (uint32_t j = 0; j < 4; j++) {
			uint32_t pa[4] = {kc_bf2(s[2 * j][0], s[2 * j][1]),
					  kc_bf2(s[2 * j][2], s[2 * j][3]),
					  kc_bf2(s[2 * j + 1][0], s[2 * j + 1][1]),
					  kc_bf2(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
			for (uint32_t dp = 0; dp < D / 16; dp++) {
				uint32_t b[4];
				kc_ldm4t(b, vt + (j * 16 + lrow + (lmat & 1) * 8) * LDS + dp * 16 +
						(lmat >> 1) * 8);
				kc_mma(o[2 * dp], pa, b[0], b[1]);
				kc_mma(o[2 * dp + 1], pa, b[2], b[3]);
			}
		}
		__syncthreads(); /* this stage is refilled by the next iteration's prefetch */
	}
	kc_cp_wait<0>();
	kc_fa_store<D>(a, &o[0][0], l0, l1, q0, r0, lo, hi, h, tig);
}

static size_t kc_fa_smem(uint32_t d, uint32_t warps)
{
	return (16 * (size_t)warps + 4 * KC_FA_BN) * (d + 8) * sizeof(uint16_t);
}

int kc_fa2_init(void)
{
	KC_CHECK(cudaFuncSetAttribute(kc_fa_kernel<64, 4>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)kc_fa_smem(64, 4)));
	KC_CHECK(cudaFuncSetAttribute(kc_fa_kernel<128, 4>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)kc_fa_smem(128, 4)));
	KC_CHECK(cudaFuncSetAttribute(kc_fa_kernel<64, 8>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)kc_fa_smem(64, 8)));
	KC_CHECK(cudaFuncSetAttribute(kc_fa_kernel<128, 8>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize,
				      (int)kc_fa_smem(128, 8)));
	return 0;
}

/* 128-query CTAs of 8 warps for dense prefill when SPARDA_KCUDA_FA2_BM=128 (read per call). */
static uint32_t kc_fa_warps(const int32_t *sel)
{
	const char *e = getenv("SPARDA_KCUDA_FA2_BM");
	return !sel && e && !strcmp(e, "128") ? 8 : 4;
}

bool kc_fa2_ok(uint32_t d, const int32_t *sel, uint32_t topk, uint32_t block)
{
	return (d == 64 || d == 128) && kc_fa_sparse_ok(sel, topk, block);
}

int kc_fa2_launch(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q, uint32_t ld_q,
		  const uint16_t *k, const uint16_t *v, uint32_t ld_kv, uint32_t t, uint32_t p0,
		  uint32_t n_q, uint32_t n_kv, uint32_t d, float scale, const int32_t *sel,
		  uint32_t topk, uint32_t block)
{
	uint32_t w = kc_fa_warps(sel), bm = 16 * w;
	struct kc_fa_args a = kc_fa_args_make(out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d,
					      scale, sel, topk, block, bm);
	dim3 grid(a.n_qt, n_q);
	size_t sm = kc_fa_smem(d, w);
	if (w == 8) {
		if (d == 64)
			kc_fa_kernel<64, 8><<<grid, 256, sm, st>>>(a);
		else
			kc_fa_kernel<128, 8><<<grid, 256, sm, st>>>(a);
	} else {
		if (d == 64)
			kc_fa_kernel<64, 4><<<grid, 128, sm, st>>>(a);
		else
			kc_fa_kernel<128, 4><<<grid, 128, sm, st>>>(a);
	}
	KC_LAUNCHED("attn_prefill_fa2");
	return 0;
}
