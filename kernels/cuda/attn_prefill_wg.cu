/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefill attention with Hopper's warpgroup MMA, head_dim 128: one CTA of one warpgroup (4 warps,
 * 16 query rows each) per (64-query tile, query head), with the tiling, causal mask, base-2 online
 * softmax and block-sparse tile list of the FlashAttention-2 kernel (attn_prefill_fa2.cu).
 * S = Q.K^T is wgmma m64n64k16 with Q as register A fragments; O += P.V is wgmma m64n128k16 with P
 * taken from the S accumulators as A fragments. K and V tiles of 64 keys are double-buffered with
 * cp.async in the 128-byte-swizzled layout the MMA reads directly (kc_wgmma.cuh): each tile is
 * read from shared memory once per 64 queries, not once per warp as with ldmatrix. Q is staged in
 * the second stage's space until it is in registers.
 */
#include "attn_prefill_tiles.cuh"
#include "attn_prefill_wg.cuh"
#include "kc_common.cuh"
#include "kc_mma.cuh"
#include "kc_wgmma.cuh"

#define KC_WG_TILE_ROW 128u /* bytes of a swizzled tile row (64 bf16) */

static bool kc_wg_built; /* the sm_90a kernels exist for the current device (kc_wg_init) */

#ifdef KC_HAVE_WGMMA /* the kernel's parts, compiled where its body is */
/*
 * Copy 64 rows of D bf16 (source rows r0 + r, stride lds; rows >= `rows` are zeros) into a
 * swizzled tile with the CTA's 128 threads. Thread t copies 16-byte chunk t % (D / 8) of rows
 * t / (D / 8) + i * 128 / (D / 8): the same chunk column and swizzle phase for every i.
 */
template <int D>
static __device__ __forceinline__ void kc_wg_load(uint8_t *dst, const uint16_t *src, size_t lds,
						  int64_t r0, uint32_t rows)
{
	constexpr uint32_t VPR = D / 8, STEP = 128 / VPR;
	uint32_t r = threadIdx.x / VPR, c = threadIdx.x % VPR;
	const uint16_t *sp = src + (size_t)(r0 + r) * lds + c * 8;
	uint8_t *dp = dst + kc_sw128(KC_FA_BN, r, c);
#pragma unroll
	for (uint32_t i = 0; i < KC_FA_BN / STEP; i++) {
		bool ok = r + i * STEP < rows;
		kc_cp16(dp + i * STEP * KC_WG_TILE_ROW, ok ? sp + i * STEP * lds : src, ok);
	}
}

/* 2^x on the SFU (ftz; -inf gives 0). */
static __device__ __forceinline__ float kc_ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/* Issue S = Q.K^T for one 64-key tile (K-major B: 16 keys' columns per k step) and commit it;
 * the first k step overwrites s. */
template <int D>
static __device__ __forceinline__ void kc_wg_scores(float *s, const uint32_t (*qf)[4],
						    const uint8_t *kt)
{
	kc_wg_fence();
#pragma unroll
	for (uint32_t kk = 0; kk < D / 16; kk++)
		kc_wg_m64n64<0>(
		    s, qf[kk],
		    kc_wg_desc(kt + (kk / 4) * KC_FA_BN * KC_WG_TILE_ROW + (kk % 4) * 32, 16, 1024),
		    kk > 0);
	kc_wg_commit();
}

/* Issue O += P.V for one 64-key tile (N-major B: 16 keys' rows per k step; the two 64-column
 * blocks of V are LBO apart) and commit it. */
template <int D>
static __device__ __forceinline__ void kc_wg_pv(float *o, const uint32_t (*pa)[4],
						const uint8_t *vt)
{
	static_assert(D == 128, "head_dim 128 only");
	kc_wg_keep<D / 2>(o);
	kc_wg_fence();
#pragma unroll
	for (uint32_t j = 0; j < 4; j++) {
		uint64_t dv =
		    kc_wg_desc(vt + j * 16 * KC_WG_TILE_ROW, KC_FA_BN * KC_WG_TILE_ROW, 1024);
		kc_wg_m64n128<1>(o, pa[j], dv, 1);
	}
	kc_wg_commit();
}

/* The online softmax state of a lane's two rows: maxima in raw score units, sums of
 * 2^((score - max) * sl2). */
struct kc_wg_rows {
	float m0, m1, l0, l1;
};

/*
 * Softmax step for a tile of scores: mask the diagonal tile (keys after the row's position: kp is
 * the tile's first key, q the lane's first row's position), update the state, turn s into
 * probabilities and return the factors (al0, al1) that rescale what O holds.
 */
static __device__ __forceinline__ void kc_wg_softmax(float *s, struct kc_wg_rows &st, float sl2,
						     uint32_t kp, uint32_t q, uint32_t tig,
						     float &al0, float &al1)
{
	if (kp + KC_FA_BN > q - q % KC_FA_BN) {
#pragma unroll
		for (uint32_t n = 0; n < 8; n++)
#pragma unroll
			for (uint32_t e = 0; e < 4; e++)
				if (kp + n * 8 + tig * 2 + (e & 1) > q + (e >> 1) * 8)
					s[4 * n + e] = -INFINITY;
	}
	float t0 = -INFINITY, t1 = -INFINITY;
#pragma unroll
	for (uint32_t n = 0; n < 8; n++) {
		t0 = fmaxf(t0, fmaxf(s[4 * n], s[4 * n + 1]));
		t1 = fmaxf(t1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
	}
#pragma unroll
	for (int of = 1; of <= 2; of <<= 1) {
		t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, of));
		t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, of));
	}
	float mn0 = fmaxf(st.m0, t0), mn1 = fmaxf(st.m1, t1);
	float mu0 = mn0 == -INFINITY ? 0.0f : mn0 * sl2, mu1 = mn1 == -INFINITY ? 0.0f : mn1 * sl2;
	al0 = kc_ex2(st.m0 * sl2 - mu0);
	al1 = kc_ex2(st.m1 * sl2 - mu1);
	st.m0 = mn0;
	st.m1 = mn1;
	float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
	for (uint32_t n = 0; n < 8; n++) {
		s[4 * n] = kc_ex2(fmaf(s[4 * n], sl2, -mu0));
		s[4 * n + 1] = kc_ex2(fmaf(s[4 * n + 1], sl2, -mu0));
		s[4 * n + 2] = kc_ex2(fmaf(s[4 * n + 2], sl2, -mu1));
		s[4 * n + 3] = kc_ex2(fmaf(s[4 * n + 3], sl2, -mu1));
		ps0 += s[4 * n] + s[4 * n + 1];
		ps1 += s[4 * n + 2] + s[4 * n + 3];
	}
	st.l0 = st.l0 * al0 + ps0;
	st.l1 = st.l1 * al1 + ps1;
}

/* Rescale O by the softmax factors (skipped when no row of the warp has a new maximum) and pack
 * the probabilities as the A fragments of P.V. */
template <int D>
static __device__ __forceinline__ void kc_wg_rescale_pack(float *o, const float *s,
							  uint32_t (*pa)[4], float al0, float al1)
{
	if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f))
#pragma unroll
		for (uint32_t n = 0; n < D / 8; n++) {
			o[4 * n] *= al0;
			o[4 * n + 1] *= al0;
			o[4 * n + 2] *= al1;
			o[4 * n + 3] *= al1;
		}
#pragma unroll
	for (uint32_t j = 0; j < 4; j++) {
		pa[j][0] = kc_bf2(s[8 * j], s[8 * j + 1]);
		pa[j][1] = kc_bf2(s[8 * j + 2], s[8 * j + 3]);
		pa[j][2] = kc_bf2(s[8 * j + 4], s[8 * j + 5]);
		pa[j][3] = kc_bf2(s[8 * j + 6], s[8 * j + 7]);
	}
}

#endif

/*
 * Three CTAs per SM (162 registers, 70 KB of shared memory each): while one CTA runs its softmax
 * the others' MMAs keep the tensor cores busy. Each tile's two MMAs and its softmax run in turn;
 * the next tile's K and V are prefetched meanwhile.
 */
template <int D> __global__ void __launch_bounds__(128, 3) kc_wg_kernel(struct kc_fa_args a)
{
#ifdef KC_HAVE_WGMMA
	constexpr uint32_t LDQ = D + 8, KS = D / 16, TB = KC_FA_BN * D * 2, ON = D / 2;
	static_assert(KC_FA_BN * LDQ * 2 <= 2 * TB, "Q fits in a stage");
	extern __shared__ __align__(128) uint8_t wsm[];
	__shared__ int32_t tl[KC_FA_MAXT];
	__shared__ uint32_t s_nt;
	/* two stages of [K tile | V tile], 1024-byte aligned; Q (padded rows) first sits in stage 1
	 * until it is in registers */
	uint32_t sa = (uint32_t)__cvta_generic_to_shared(wsm);
	uint8_t *kv = wsm + (1024 - sa % 1024) % 1024;
	uint16_t *qs = (uint16_t *)(kv + 2 * TB);
	uint32_t h = blockIdx.y, g = h / (a.n_q / a.n_kv), tid = threadIdx.x;
	uint32_t lane = tid & 31, w = tid >> 5, gid = lane >> 2, tig = lane & 3;
	struct kc_fa_qtile qt = kc_fa_place(a, KC_FA_BN, g, tl, &s_nt);
	uint32_t q0 = qt.q0, lo = qt.lo, hi = qt.hi, last = qt.last, nt = qt.nt;
	bool sparse = a.sel != NULL;
	const uint16_t *kg = a.k + (size_t)g * D, *vg = a.v + (size_t)g * D;
	kc_fa_load<D, KC_FA_BN, 128>(qs, a.q + (size_t)h * D, a.ld_q, (int64_t)q0 - a.p0, lo, hi);
	if (nt) {
		uint32_t kp = kc_fa_tile(tl, sparse, 0), rows = min(KC_FA_BN, last + 1 - kp);
		kc_wg_load<D>(kv, kg, a.ld_kv, kp, rows);
		kc_wg_load<D>(kv + TB, vg, a.ld_kv, kp, rows);
	}
	kc_cp_commit();
	kc_cp_wait<0>();
	__syncthreads();
	uint32_t qf[KS][4];
	uint32_t lrow = lane & 7, lmat = lane >> 3;
#pragma unroll
	for (uint32_t kk = 0; kk < KS; kk++)
		kc_ldm4(qf[kk],
			qs + (w * 16 + lrow + (lmat & 1) * 8) * LDQ + kk * 16 + (lmat >> 1) * 8);
	__syncthreads(); /* stage 1 is free for the first prefetch */

	float o[ON], s[32], al0, al1;
	uint32_t pa[4][4];
#pragma unroll
	for (uint32_t i = 0; i < ON; i++)
		o[i] = 0.0f;
#pragma unroll
	for (uint32_t i = 0; i < 32; i++)
		s[i] = 0.0f;
	struct kc_wg_rows rs = {-INFINITY, -INFINITY, 0.0f, 0.0f};
	uint32_t r0 = w * 16 + gid; /* this lane's rows: r0 and r0 + 8 of the tile */

	for (uint32_t it = 0; it < nt; it++) {
		uint32_t st = it & 1, kp = kc_fa_tile(tl, sparse, it);
		if (it + 1 < nt) {
			uint8_t *nk = kv + (st ^ 1) * 2 * TB; /* the other stage */
			uint32_t kn = kc_fa_tile(tl, sparse, it + 1),
				 rows = min(KC_FA_BN, last + 1 - kn);
			kc_wg_load<D>(nk, kg, a.ld_kv, kn, rows);
			kc_wg_load<D>(nk + TB, vg, a.ld_kv, kn, rows);
		}
		kc_cp_commit();
		kc_cp_wait<1>();
		kc_fence_async_smem(); /* this thread's copies, visible to the MMAs' reads */
		__syncthreads();
		const uint8_t *kt = kv + st * 2 * TB;
		kc_wg_scores<D>(s, qf, kt);
		kc_wg_wait<0>();
		kc_wg_keep<32>(s);
		kc_wg_softmax(s, rs, a.sl2, kp, q0 + r0, tig, al0, al1);
		kc_wg_rescale_pack<D>(o, s, pa, al0, al1);
		kc_wg_pv<D>(o, pa, kt + TB);
		kc_wg_wait<0>();
		kc_wg_keep<ON>(o);
		__syncthreads(); /* this stage is refilled by the next iteration's prefetch */
	}
	kc_cp_wait<0>();
	kc_fa_store<D>(a, o, rs.l0, rs.l1, q0, r0, lo, hi, h, tig);
#else
	__trap();
#endif
}

/* Writes 1 when this build's code for the device has the wgmma kernels. */
__global__ void kc_wg_probe(int *o)
{
#ifdef KC_HAVE_WGMMA
	*o = 1;
#else
	*o = 0;
#endif
}

static size_t kc_wg_smem(uint32_t d)
{
	return 4 * (size_t)KC_FA_BN * d * 2 + 1024;
}

int kc_wg_init(void)
{
	int *dflag = NULL, flag = 0;

	kc_wg_built = false;
	KC_CHECK(cudaMalloc(&dflag, sizeof(int)));
	cudaError_t e = cudaMemset(dflag, 0, sizeof(int));
	if (e == cudaSuccess) {
		kc_wg_probe<<<1, 1>>>(dflag);
		e = cudaGetLastError(); /* no image for this device: flag stays 0 */
	}
	if (e == cudaSuccess)
		e = cudaMemcpy(&flag, dflag, sizeof(int), cudaMemcpyDeviceToHost);
	cudaFree(dflag);
	if (e != cudaSuccess && e != cudaErrorNoKernelImageForDevice)
		KC_CHECK(e);
	if (!flag)
		return 0;
	KC_CHECK(cudaFuncSetAttribute(
	    kc_wg_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kc_wg_smem(128)));
	kc_wg_built = true;
	return 0;
}

bool kc_wg_ok(uint32_t d, float scale, const int32_t *sel, uint32_t topk, uint32_t block)
{
	/* scale > 0: row maxima are kept unscaled */
	return kc_wg_built && d == 128 && scale > 0.0f && kc_fa_sparse_ok(sel, topk, block);
}

int kc_wg_launch(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q, uint32_t ld_q,
		 const uint16_t *k, const uint16_t *v, uint32_t ld_kv, uint32_t t, uint32_t p0,
		 uint32_t n_q, uint32_t n_kv, uint32_t d, float scale, const int32_t *sel,
		 uint32_t topk, uint32_t block)
{
	struct kc_fa_args a = kc_fa_args_make(out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d,
					      scale, sel, topk, block, KC_FA_BN);
	dim3 grid(a.n_qt, n_q);
	kc_wg_kernel<128><<<grid, 128, kc_wg_smem(d), st>>>(a);
	KC_LAUNCHED("attn_prefill_wg");
	return 0;
}
