/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decode attention, tensor cores with a cp.async pipeline. Same CTA shape and partials as the
 * register-staged kernel in attn_decode.cu (a CTA = one split of one KV head of one sequence, up
 * to 16 query heads as the 16 rows of m16n8k16, warp w taking rows [16w, 16w + 16) of each
 * 64-key tile), but each warp streams its 16-key K/V slabs through S stages of its own shared
 * memory: the loads of the next S - 1 slabs are in flight while this slab's MMAs and softmax
 * run, and the warps never wait on each other inside the loop (warp-level sync only).
 */
#include "attn_decode_split.cuh"
#include "kc_mma.cuh"

/* Where a warp stands in its split: tile u (of [u, u1)) and its next row offset in that tile. */
struct kc_adc_it {
	uint32_t u, u1, sr;
};

/* The warp's next slab (up to 16 rows at kt / vt, row stride D) or false at the split's end. */
template <int D>
static __device__ __forceinline__ bool
kc_adc_next(const struct kc_ad_args &a, uint32_t b, uint32_t g, uint32_t w, struct kc_adc_it &s,
	    const uint16_t **kt, const uint16_t **vt, uint32_t *n)
{
	while (s.u < s.u1) {
		uint32_t rows;
		const uint16_t *k, *v;
		if (a.units) {
			size_t cell = ((size_t)b * a.n_kv + g) * a.n_tiles + s.u;
			int32_t ui = a.unit_idx[cell], len = a.unit_len[cell];
			rows = ui < 0 || len <= 0 ? 0 : min((uint32_t)len, a.block);
			k = a.units + (size_t)(ui < 0 ? 0 : ui) * 2 * a.block * D;
			v = k + (size_t)a.block * D;
		} else {
			int32_t len = a.kv_len[b];
			uint32_t k0 = s.u * KC_AD_TILE,
				 nn = len < 0 ? 0 : min((uint32_t)len, a.t_cap);
			if (k0 >= nn) {
				s.u = s.u1;
				return false;
			}
			rows = min(KC_AD_TILE, nn - k0);
			size_t off = (((size_t)b * a.n_kv + g) * a.t_cap + k0) * D;
			k = a.kc + off;
			v = a.vc + off;
		}
		if (s.sr < rows) {
			*kt = k + (size_t)s.sr * D;
			*vt = v + (size_t)s.sr * D;
			*n = min(16u, rows - s.sr);
			s.sr += KC_AD_TILE;
			return true;
		}
		s.u++;
		s.sr = w * 16;
	}
	return false;
}

/* One warp copies rows [0, n) of a K and a V slab into its stage (rows padded to D + 8). */
template <int D>
static __device__ __forceinline__ void kc_adc_issue(uint16_t *dst, const uint16_t *kt,
						    const uint16_t *vt, uint32_t n, uint32_t lane)
{
	constexpr uint32_t CPR = D / 8, LDS = D + 8, SLAB = 16 * LDS;
#pragma unroll
	for (uint32_t i = 0; i < 16 * CPR / 32; i++) {
		uint32_t idx = lane + i * 32, r = idx / CPR, c = (idx % CPR) * 8;
		bool ok = r < n;
		kc_cp16(dst + r * LDS + c, ok ? kt + (size_t)r * D + c : kt, ok);
		kc_cp16(dst + SLAB + r * LDS + c, ok ? vt + (size_t)r * D + c : vt, ok);
	}
}

struct kc_adc_soft {
	float m0, m1, l0, l1; /* rows gr and gr + 8, log2 domain; l partial over the quad */
};

/* Scores, online softmax and P.V of one staged slab of n keys (rows >= n are zeros). */
template <int D>
static __device__ __forceinline__ void kc_adc_slab(const uint16_t *ks, uint32_t n,
						   const uint32_t (*qa)[4], float (*o)[4],
						   struct kc_adc_soft &st, float sl2, uint32_t lane)
{
	constexpr uint32_t LDS = D + 8, SLAB = 16 * LDS, KS = D / 16;
	uint32_t t = lane & 3, lrow = lane & 7, lmat = lane >> 3;
	float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
	for (uint32_t kk = 0; kk < KS; kk++) {
		uint32_t bb[4];
		kc_ldm4(bb, ks + (lrow + (lmat >> 1) * 8) * LDS + kk * 16 + (lmat & 1) * 8);
		kc_mma(sc[0], qa[kk], bb[0], bb[1]);
		kc_mma(sc[1], qa[kk], bb[2], bb[3]);
	}
	float al0, al1;
	kc_ad_softmax_16(sc, n, t, sl2, st.m0, st.m1, st.l0, st.l1, al0, al1);
	uint32_t pa[4] = {kc_bf2(sc[0][0], sc[0][1]), kc_bf2(sc[0][2], sc[0][3]),
			  kc_bf2(sc[1][0], sc[1][1]), kc_bf2(sc[1][2], sc[1][3])};
	const uint16_t *vs = ks + SLAB;
#pragma unroll
	for (uint32_t dp = 0; dp < D / 16; dp++) {
		uint32_t bb[4];
		kc_ldm4t(bb, vs + (lrow + (lmat & 1) * 8) * LDS + dp * 16 + (lmat >> 1) * 8);
#pragma unroll
		for (int j = 0; j < 2; j++) {
			o[2 * dp + j][0] *= al0;
			o[2 * dp + j][1] *= al0;
			o[2 * dp + j][2] *= al1;
			o[2 * dp + j][3] *= al1;
		}
		kc_mma(o[2 * dp], pa, bb[0], bb[1]);
		kc_mma(o[2 * dp + 1], pa, bb[2], bb[3]);
	}
}

/* The 4 warps' (o, m, l) in shared memory (each in its own stages) merged into the partials. */
template <int D, int S>
static __device__ void kc_adc_store(const struct kc_ad_args &a, const uint16_t *smem, uint32_t b,
				    uint32_t h0, uint32_t gh)
{
	constexpr uint32_t WST = S * 2 * 16 * (D + 8); /* a warp's stages, in bf16 elements */
	size_t pst = (size_t)D + 2;
	uint32_t split = blockIdx.x;
	for (uint32_t idx = threadIdx.x; idx < gh * (D + 2); idx += blockDim.x) {
		uint32_t row = idx / (D + 2), c = idx % (D + 2);
		float mx = -INFINITY;
#pragma unroll
		for (uint32_t v = 0; v < KC_AD_THREADS / 32; v++)
			mx = fmaxf(mx, ((const float *)(smem + v * WST))[row * (D + 2) + D]);
		float acc = 0.0f;
		if (mx != -INFINITY) {
#pragma unroll
			for (uint32_t v = 0; v < KC_AD_THREADS / 32; v++) {
				const float *ws = (const float *)(smem + v * WST) + row * (D + 2);
				float mv = ws[D];
				if (mv != -INFINITY)
					acc += ws[c == D ? D + 1 : c] * exp2f(mv - mx);
			}
		}
		float *p = a.part + (((size_t)b * a.n_q + h0 + row) * a.n_splits + split) * pst;
		if (c < D)
			p[c] = acc;
		else if (c == D)
			p[D] = mx == -INFINITY ? -INFINITY : mx * 0.6931471805599453f;
		else
			p[D + 1] = acc;
	}
}

/* FUSED: with the fused merge (its own instantiation: the plain kernel keeps its registers) */
template <int D, int S, bool FUSED>
__global__ void __launch_bounds__(KC_AD_THREADS) kc_adc_kernel(struct kc_ad_args a)
{
	constexpr uint32_t LDS = D + 8, SLAB = 16 * LDS, KS = D / 16, NT = D / 8;
	constexpr uint32_t WST = S * 2 * SLAB;
	extern __shared__ __align__(128) uint16_t adsm[]; /* [warp][stage][K, V][16][LDS] */
	uint32_t g = blockIdx.y / a.hchunks, hc = blockIdx.y % a.hchunks, b = blockIdx.z;
	uint32_t w = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t = lane & 3;
	uint32_t h0 = g * a.G + hc * KC_AD_HEADS, gh = min(KC_AD_HEADS, a.G - hc * KC_AD_HEADS);
	uint16_t *wsm = adsm + w * WST;
	struct kc_adc_it it = {blockIdx.x * a.tiles_per_split, 0, w * 16};
	it.u1 = min(it.u + a.tiles_per_split, a.n_tiles);
	uint32_t nr[S];
#pragma unroll
	for (int s = 0; s < S - 1; s++) {
		const uint16_t *kt, *vt;
		nr[s] = 0;
		if (kc_adc_next<D>(a, b, g, w, it, &kt, &vt, &nr[s]))
			kc_adc_issue<D>(wsm + s * 2 * SLAB, kt, vt, nr[s], lane);
		kc_cp_commit();
	}
	/* Q rows gr and gr + 8 of the group as A fragments, while the first slabs load */
	uint32_t qa[KS][4];
	const uint16_t *qb = a.q + (size_t)b * a.ld_q + (size_t)h0 * D + t * 2;
#pragma unroll
	for (uint32_t kk = 0; kk < KS; kk++)
#pragma unroll
		for (uint32_t i = 0; i < 4; i++) {
			uint32_t r = gr + (i & 1) * 8, c = kk * 16 + (i >> 1) * 8;
			qa[kk][i] = r < gh ? *(const uint32_t *)(qb + (size_t)r * D + c) : 0u;
		}
	float o[NT][4];
#pragma unroll
	for (uint32_t i = 0; i < NT; i++)
		o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
	struct kc_adc_soft st = {-INFINITY, -INFINITY, 0.0f, 0.0f};
	const float sl2 = a.scale * 1.4426950408889634f;
	for (uint32_t i = 0;; i++) {
		{
			const uint16_t *kt, *vt;
			nr[S - 1] = 0;
			if (kc_adc_next<D>(a, b, g, w, it, &kt, &vt, &nr[S - 1]))
				kc_adc_issue<D>(wsm + ((i + S - 1) % S) * 2 * SLAB, kt, vt,
						nr[S - 1], lane);
			kc_cp_commit();
		}
		kc_cp_wait<S - 1>();
		__syncwarp();
		if (nr[0] == 0)
			break;
		kc_adc_slab<D>(wsm + (i % S) * 2 * SLAB, nr[0], qa, o, st, sl2, lane);
		__syncwarp(); /* this stage is refilled by the next iteration */
#pragma unroll
		for (int s = 0; s < S - 1; s++)
			nr[s] = nr[s + 1];
	}
	kc_cp_wait<0>();
	__syncwarp();
#pragma unroll
	for (int off = 1; off <= 2; off <<= 1) {
		st.l0 += __shfl_xor_sync(0xffffffffu, st.l0, off);
		st.l1 += __shfl_xor_sync(0xffffffffu, st.l1, off);
	}
	float *ws = (float *)wsm; /* [16][D + 2], inside this warp's own stages */
#pragma unroll
	for (uint32_t i = 0; i < NT; i++) {
		uint32_t c = i * 8 + t * 2;
		ws[gr * (D + 2) + c] = o[i][0];
		ws[gr * (D + 2) + c + 1] = o[i][1];
		ws[(gr + 8) * (D + 2) + c] = o[i][2];
		ws[(gr + 8) * (D + 2) + c + 1] = o[i][3];
	}
	if (t == 0) {
		ws[gr * (D + 2) + D] = st.m0;
		ws[gr * (D + 2) + D + 1] = st.l0;
		ws[(gr + 8) * (D + 2) + D] = st.m1;
		ws[(gr + 8) * (D + 2) + D + 1] = st.l1;
	}
	__syncthreads();
	kc_adc_store<D, S>(a, adsm, b, h0, gh);
	if (FUSED)
		kc_ad_fused_merge(a, b, h0, gh, D);
}

static size_t kc_adc_smem(uint32_t d, uint32_t stages)
{
	return (size_t)(KC_AD_THREADS / 32) * stages * 2 * 16 * (d + 8) * sizeof(uint16_t);
}

template <int D, int S> static int kc_adc_attr(void)
{
	int sm = (int)kc_adc_smem(D, S);
	KC_CHECK(cudaFuncSetAttribute(kc_adc_kernel<D, S, false>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
	KC_CHECK(cudaFuncSetAttribute(kc_adc_kernel<D, S, true>,
				      cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
	return 0;
}

int kc_ad_cp_init(void)
{
	int e = kc_adc_attr<128, 2>();
	if (!e)
		e = kc_adc_attr<128, 3>();
	if (!e)
		e = kc_adc_attr<64, 2>();
	return e ? e : kc_adc_attr<64, 3>();
}

template <int D, int S>
static void kc_adc_go(cudaStream_t st, dim3 grid, size_t sm, const struct kc_ad_args *a)
{
	if (a->cnt)
		kc_adc_kernel<D, S, true><<<grid, KC_AD_THREADS, sm, st>>>(*a);
	else
		kc_adc_kernel<D, S, false><<<grid, KC_AD_THREADS, sm, st>>>(*a);
}

int kc_ad_cp_launch(cudaStream_t st, const struct kc_ad_args *a, dim3 grid)
{
	size_t sm = kc_adc_smem(a->d, a->stages);
	if (a->d == 128 && a->stages == 3)
		kc_adc_go<128, 3>(st, grid, sm, a);
	else if (a->d == 128)
		kc_adc_go<128, 2>(st, grid, sm, a);
	else if (a->stages == 3)
		kc_adc_go<64, 3>(st, grid, sm, a);
	else
		kc_adc_go<64, 2>(st, grid, sm, a);
	KC_LAUNCHED("attn_decode_cp");
	return 0;
}
