/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Flash-decoding. A CTA owns one KV head of one sequence and up to 16 of its query heads, and a
 * contiguous range of 64-key tiles (its split). Per tile: scores for every (head, key) with
 * 16-byte key loads, an online-softmax update per head, then P.V with each thread owning a
 * column pair of up to 16 heads. Splits write unnormalised partials (o, m, l); a second kernel
 * merges them. Two kernels write the same partials: the tensor-core one (default for d 64 and
 * 128, below) and an fp32 CUDA-core one (other d, or SPARDA_KCUDA_ATTN=simt).
 */
#include <stdlib.h>
#include <string.h>

#include "attn_decode.cuh"
#include "attn_decode_split.cuh"
#include "kc_common.cuh"

/* Scores, softmax update and P.V for rows [0, rows) of one K/V tile (row stride d). */
static __device__ void kc_ad_tile(const struct kc_ad_args &a, const uint16_t *kt,
				  const uint16_t *vt, uint32_t rows, uint32_t gh, const float *qs,
				  float *sc, float *hm, float *hl, float *hal, float *acc)
{
	uint32_t tid = threadIdx.x, d = a.d;
	{
		uint32_t j = tid % KC_AD_TILE, hs = tid / KC_AD_TILE;
		float s[KC_AD_HEADS / 2];
#pragma unroll
		for (int i = 0; i < KC_AD_HEADS / 2; i++)
			s[i] = 0.0f;
		if (j < rows) {
			const uint16_t *kr = kt + (size_t)j * d;
			for (uint32_t c = 0; c < d; c += 8) {
				float f[8];
				kc_unpack8(*(const uint4 *)(kr + c), f);
#pragma unroll
				for (int i = 0; i < KC_AD_HEADS / 2; i++) {
					uint32_t hh = hs + 2 * i;
					if (hh < gh) {
						const float *qh = qs + hh * d + c;
#pragma unroll
						for (int e = 0; e < 8; e++)
							s[i] += qh[e] * f[e];
					}
				}
			}
		}
#pragma unroll
		for (int i = 0; i < KC_AD_HEADS / 2; i++) {
			uint32_t hh = hs + 2 * i;
			if (hh < gh)
				sc[hh * KC_AD_TILE + j] = j < rows ? s[i] : -INFINITY;
		}
	}
	__syncthreads();
	uint32_t lane = tid & 31, warp = tid >> 5;
	for (uint32_t hh = warp; hh < gh; hh += KC_AD_THREADS / 32) {
		float *row = sc + hh * KC_AD_TILE;
		float v0 = row[lane], v1 = row[lane + 32];
		float mt = kc_warp_max(fmaxf(v0, v1));
		float mo = hm[hh], mn = fmaxf(mo, mt);
		float alpha = mn == -INFINITY ? 1.0f : expf(mo - mn);
		float p0 = mn == -INFINITY ? 0.0f : expf(v0 - mn);
		float p1 = mn == -INFINITY ? 0.0f : expf(v1 - mn);
		row[lane] = p0;
		row[lane + 32] = p1;
		float ps = kc_warp_sum(p0 + p1);
		if (lane == 0) {
			hm[hh] = mn;
			hl[hh] = hl[hh] * alpha + ps;
			hal[hh] = alpha;
		}
	}
	__syncthreads();
	uint32_t dp = d / 2, hset = tid / dp, hstep = KC_AD_THREADS / dp, c = (tid % dp) * 2;
#pragma unroll
	for (int i = 0; i < KC_AD_HEADS; i++) {
		uint32_t hh = hset + i * hstep;
		if (hh < gh) {
			acc[2 * i] *= hal[hh];
			acc[2 * i + 1] *= hal[hh];
		}
	}
	for (uint32_t j = 0; j < rows; j++) {
		uint32_t vv = *(const uint32_t *)(vt + (size_t)j * d + c);
		float v0 = __uint_as_float(vv << 16), v1 = __uint_as_float(vv & 0xffff0000u);
#pragma unroll
		for (int i = 0; i < KC_AD_HEADS; i++) {
			uint32_t hh = hset + i * hstep;
			if (hh < gh) {
				float p = sc[hh * KC_AD_TILE + j];
				acc[2 * i] += p * v0;
				acc[2 * i + 1] += p * v1;
			}
		}
	}
	__syncthreads();
}

__global__ void __launch_bounds__(KC_AD_THREADS) kc_ad_split_kernel(struct kc_ad_args a)
{
	__shared__ float sc[KC_AD_HEADS * KC_AD_TILE];
	__shared__ float hm[KC_AD_HEADS], hl[KC_AD_HEADS], hal[KC_AD_HEADS];
	extern __shared__ float qs[]; /* [16][d], pre-scaled */
	uint32_t split = blockIdx.x, g = blockIdx.y / a.hchunks, hc = blockIdx.y % a.hchunks;
	uint32_t b = blockIdx.z, tid = threadIdx.x, d = a.d;
	uint32_t h0 = g * a.G + hc * KC_AD_HEADS, gh = min(KC_AD_HEADS, a.G - hc * KC_AD_HEADS);
	for (uint32_t i = tid; i < gh * d; i += blockDim.x)
		qs[i] = kc_bf(a.q[(size_t)b * a.ld_q + (size_t)h0 * d + i]) * a.scale;
	if (tid < KC_AD_HEADS) {
		hm[tid] = -INFINITY;
		hl[tid] = 0.0f;
	}
	float acc[2 * KC_AD_HEADS];
#pragma unroll
	for (int i = 0; i < 2 * KC_AD_HEADS; i++)
		acc[i] = 0.0f;
	__syncthreads();
	uint32_t u0 = split * a.tiles_per_split, u1 = min(u0 + a.tiles_per_split, a.n_tiles);
	for (uint32_t u = u0; u < u1; u++) {
		if (a.units) {
			size_t cell = ((size_t)b * a.n_kv + g) * a.n_tiles + u;
			int32_t ui = a.unit_idx[cell], len = a.unit_len[cell];
			if (ui < 0 || len <= 0)
				continue;
			uint32_t n = min((uint32_t)len, a.block);
			const uint16_t *kt = a.units + (size_t)ui * 2 * a.block * d;
			const uint16_t *vt = kt + (size_t)a.block * d;
			for (uint32_t r0 = 0; r0 < n; r0 += KC_AD_TILE)
				kc_ad_tile(a, kt + (size_t)r0 * d, vt + (size_t)r0 * d,
					   min(KC_AD_TILE, n - r0), gh, qs, sc, hm, hl, hal, acc);
		} else {
			int32_t len = a.kv_len[b];
			uint32_t k0 = u * KC_AD_TILE;
			uint32_t n = len < 0 ? 0 : min((uint32_t)len, a.t_cap);
			if (k0 >= n)
				break;
			size_t off = (((size_t)b * a.n_kv + g) * a.t_cap + k0) * d;
			kc_ad_tile(a, a.kc + off, a.vc + off, min(KC_AD_TILE, n - k0), gh, qs, sc,
				   hm, hl, hal, acc);
		}
	}
	uint32_t dp = d / 2, hset = tid / dp, hstep = KC_AD_THREADS / dp, c = (tid % dp) * 2;
	size_t pst = (size_t)d + 2;
#pragma unroll
	for (int i = 0; i < KC_AD_HEADS; i++) {
		uint32_t hh = hset + i * hstep;
		if (hh < gh) {
			float *p =
			    a.part + (((size_t)b * a.n_q + h0 + hh) * a.n_splits + split) * pst;
			p[c] = acc[2 * i];
			p[c + 1] = acc[2 * i + 1];
		}
	}
	if (tid < gh) {
		float *p = a.part + (((size_t)b * a.n_q + h0 + tid) * a.n_splits + split) * pst;
		p[d] = hm[tid];
		p[d + 1] = hl[tid];
	}
}

/* ---------------------------------------------------------------- tensor-core variant */
/*
 * The group's query heads are the 16 rows of an m16n8k16 bf16 MMA, a warp takes 16 keys at a
 * time. Two permutations make every global load 16 bytes wide: along d, thread t of a quad
 * holds dims [t*D/4, (t+1)*D/4) of Q and K (the same order on both sides, so the dot product is
 * unchanged); for P.V the output columns are permuted so that the thread owning column group g
 * reads dims [g*D/8, (g+1)*D/8) of each V row. Softmax is online in the log2 domain per warp;
 * the 4 warps of a CTA merge through shared memory into the same partials as the fp32 kernel.
 */
static __device__ __forceinline__ uint32_t kc_word(const uint4 &v, int i)
{
	return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

static __device__ __forceinline__ uint32_t kc_pack_bf2(float lo, float hi)
{
	return (uint32_t)kc_tobf(lo) | ((uint32_t)kc_tobf(hi) << 16);
}

static __device__ __forceinline__ void kc_mma16816(float *c, const uint32_t *a, uint32_t b0,
						   uint32_t b1)
{
#ifndef KC_NO_BF16_MMA
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	__trap();
#endif
}

struct kc_ad_warp {
	float m0, m1, l0, l1; /* rows gr and gr + 8, log2 domain; l partial over the quad */
};

/* One warp, keys [0, n) (n <= 16) of a slab at kt / vt (row stride D). */
template <int D>
static __device__ __forceinline__ void
kc_ad_slab(const uint16_t *kt, const uint16_t *vt, uint32_t n, const uint32_t (*qa)[4],
	   float (*o)[4], struct kc_ad_warp &st, float sl2, uint32_t gr, uint32_t t)
{
	constexpr int KS = D / 16, KV = D / 32, NT = D / 8, VV = D / 64;
	const uint4 z = make_uint4(0, 0, 0, 0);
	float sc[2][4];
#pragma unroll
	for (int nt = 0; nt < 2; nt++) {
		uint32_t key = nt * 8 + gr;
		uint4 kv[KV];
		const uint4 *kp = (const uint4 *)(kt + (size_t)key * D + t * (D / 4));
#pragma unroll
		for (int i = 0; i < KV; i++)
			kv[i] = key < n ? kp[i] : z;
#pragma unroll
		for (int i = 0; i < 4; i++)
			sc[nt][i] = 0.0f;
#pragma unroll
		for (int s = 0; s < KS; s++)
			kc_mma16816(sc[nt], qa[s], kc_word(kv[s / 2], (s & 1) * 2),
				    kc_word(kv[s / 2], (s & 1) * 2 + 1));
	}
	/* V rows 2t, 2t+1, 2t+8, 2t+9 of the slab, dims [gr*D/8, (gr+1)*D/8) */
	uint4 va[4][VV];
#pragma unroll
	for (int r = 0; r < 4; r++) {
		uint32_t key = 2 * t + (r & 1) + (r >> 1) * 8;
		const uint4 *vp = (const uint4 *)(vt + (size_t)key * D + gr * (D / 8));
#pragma unroll
		for (int i = 0; i < VV; i++)
			va[r][i] = key < n ? vp[i] : z;
	}
	float al0, al1;
	kc_ad_softmax_16(sc, n, t, sl2, st.m0, st.m1, st.l0, st.l1, al0, al1);
	uint32_t pa[4] = {kc_pack_bf2(sc[0][0], sc[0][1]), kc_pack_bf2(sc[0][2], sc[0][3]),
			  kc_pack_bf2(sc[1][0], sc[1][1]), kc_pack_bf2(sc[1][2], sc[1][3])};
#pragma unroll
	for (int i = 0; i < NT; i++) {
		o[i][0] *= al0;
		o[i][1] *= al0;
		o[i][2] *= al1;
		o[i][3] *= al1;
		int vi = i / 8, wi = (i % 8) / 2;
		uint32_t sel = (i & 1) ? 0x7632 : 0x5410;
		uint32_t b0 = __byte_perm(kc_word(va[0][vi], wi), kc_word(va[1][vi], wi), sel);
		uint32_t b1 = __byte_perm(kc_word(va[2][vi], wi), kc_word(va[3][vi], wi), sel);
		kc_mma16816(o[i], pa, b0, b1);
	}
}

/*
 * MINB: CTAs per SM the registers must allow (d 128: 3, the ~166 registers ptxas picks on its
 * own; 4 caps them at 128 and spills ~200 bytes, SPARDA_KCUDA_ADK=reg4; d 64: 5). FUSED: with
 * the fused merge, its own instantiation so that the plain kernel keeps its registers.
 */
template <int D, int MINB, bool FUSED>
__global__ void __launch_bounds__(KC_AD_THREADS, MINB) kc_ad_mma_kernel(struct kc_ad_args a)
{
	constexpr int KS = D / 16, KV = D / 32, NT = D / 8;
	__shared__ float ws[KC_AD_THREADS / 32][16][D + 2];
	uint32_t split = blockIdx.x, g = blockIdx.y / a.hchunks, hc = blockIdx.y % a.hchunks;
	uint32_t b = blockIdx.z, tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
	uint32_t gr = lane >> 2, t = lane & 3;
	uint32_t h0 = g * a.G + hc * KC_AD_HEADS, gh = min(KC_AD_HEADS, a.G - hc * KC_AD_HEADS);
	const float sl2 = a.scale * 1.4426950408889634f;
	uint32_t qa[KS][4];
	{
		const uint4 z = make_uint4(0, 0, 0, 0);
		const uint16_t *qb = a.q + (size_t)b * a.ld_q + t * (D / 4);
		const uint4 *q0 = (const uint4 *)(qb + (size_t)(h0 + gr) * D);
		const uint4 *q1 = (const uint4 *)(qb + (size_t)(h0 + gr + 8) * D);
		uint4 r0[KV], r1[KV];
#pragma unroll
		for (int i = 0; i < KV; i++) {
			r0[i] = gr < gh ? q0[i] : z;
			r1[i] = gr + 8 < gh ? q1[i] : z;
		}
#pragma unroll
		for (int s = 0; s < KS; s++) {
			qa[s][0] = kc_word(r0[s / 2], (s & 1) * 2);
			qa[s][1] = kc_word(r1[s / 2], (s & 1) * 2);
			qa[s][2] = kc_word(r0[s / 2], (s & 1) * 2 + 1);
			qa[s][3] = kc_word(r1[s / 2], (s & 1) * 2 + 1);
		}
	}
	float o[NT][4];
#pragma unroll
	for (int i = 0; i < NT; i++)
		o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
	struct kc_ad_warp st = {-INFINITY, -INFINITY, 0.0f, 0.0f};
	uint32_t u0 = split * a.tiles_per_split, u1 = min(u0 + a.tiles_per_split, a.n_tiles);
	for (uint32_t u = u0; u < u1; u++) {
		const uint16_t *kt, *vt;
		uint32_t n;
		if (a.units) {
			size_t cell = ((size_t)b * a.n_kv + g) * a.n_tiles + u;
			int32_t ui = a.unit_idx[cell], len = a.unit_len[cell];
			if (ui < 0 || len <= 0)
				continue;
			n = min((uint32_t)len, a.block);
			kt = a.units + (size_t)ui * 2 * a.block * D;
			vt = kt + (size_t)a.block * D;
		} else {
			int32_t len = a.kv_len[b];
			uint32_t k0 = u * KC_AD_TILE,
				 nn = len < 0 ? 0 : min((uint32_t)len, a.t_cap);
			if (k0 >= nn)
				break;
			n = min(KC_AD_TILE, nn - k0);
			size_t off = (((size_t)b * a.n_kv + g) * a.t_cap + k0) * D;
			kt = a.kc + off;
			vt = a.vc + off;
		}
		for (uint32_t sr = w * 16; sr < n; sr += KC_AD_TILE)
			kc_ad_slab<D>(kt + (size_t)sr * D, vt + (size_t)sr * D, min(16u, n - sr),
				      qa, o, st, sl2, gr, t);
	}
#pragma unroll
	for (int off = 1; off <= 2; off <<= 1) {
		st.l0 += __shfl_xor_sync(0xffffffffu, st.l0, off);
		st.l1 += __shfl_xor_sync(0xffffffffu, st.l1, off);
	}
#pragma unroll
	for (int i = 0; i < NT; i++) {
		uint32_t c0 = 2 * t * (D / 8) + i, c1 = c0 + D / 8;
		ws[w][gr][c0] = o[i][0];
		ws[w][gr][c1] = o[i][1];
		ws[w][gr + 8][c0] = o[i][2];
		ws[w][gr + 8][c1] = o[i][3];
	}
	if (t == 0) {
		ws[w][gr][D] = st.m0;
		ws[w][gr][D + 1] = st.l0;
		ws[w][gr + 8][D] = st.m1;
		ws[w][gr + 8][D + 1] = st.l1;
	}
	__syncthreads();
	size_t pst = (size_t)D + 2;
	for (uint32_t idx = tid; idx < gh * (D + 2); idx += blockDim.x) {
		uint32_t row = idx / (D + 2), c = idx % (D + 2);
		float mx = -INFINITY;
#pragma unroll
		for (int v = 0; v < KC_AD_THREADS / 32; v++)
			mx = fmaxf(mx, ws[v][row][D]);
		float acc = 0.0f;
		if (mx != -INFINITY) {
#pragma unroll
			for (int v = 0; v < KC_AD_THREADS / 32; v++) {
				float mv = ws[v][row][D];
				if (mv != -INFINITY)
					acc += ws[v][row][c == D ? D + 1 : c] * exp2f(mv - mx);
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
	if (FUSED)
		kc_ad_fused_merge(a, b, h0, gh, D);
}

template <int D, int MINB>
static void kc_ad_mma_go(cudaStream_t st, dim3 grid, const struct kc_ad_args *a)
{
	if (a->cnt)
		kc_ad_mma_kernel<D, MINB, true><<<grid, KC_AD_THREADS, 0, st>>>(*a);
	else
		kc_ad_mma_kernel<D, MINB, false><<<grid, KC_AD_THREADS, 0, st>>>(*a);
}

__global__ void kc_ad_merge_kernel(uint16_t *out, uint32_t ld_o, const float *part, uint32_t n_q,
				   uint32_t n_splits, uint32_t d)
{
	uint32_t b = blockIdx.x / n_q, h = blockIdx.x % n_q;
	size_t pst = (size_t)d + 2;
	const float *p = part + ((size_t)b * n_q + h) * n_splits * pst;
	float mx = -INFINITY;
	for (uint32_t s = 0; s < n_splits; s++)
		mx = fmaxf(mx, p[s * pst + d]);
	float l = 0.0f;
	if (mx != -INFINITY)
		for (uint32_t s = 0; s < n_splits; s++)
			l += p[s * pst + d + 1] * expf(p[s * pst + d] - mx);
	for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
		float o = 0.0f;
		if (l > 0.0f) {
			for (uint32_t s = 0; s < n_splits; s++) {
				float ms = p[s * pst + d];
				if (ms != -INFINITY)
					o += p[s * pst + c] * expf(ms - mx);
			}
			o /= l;
		}
		out[(size_t)b * ld_o + (size_t)h * d + c] = kc_tobf(o);
	}
}

/*
 * 64-key tiles per split, from the H200 sweep at 96 units (NOTES.md): 4 at batch 1, 8 up to 31,
 * 16 from 32. SPARDA_KCUDA_TPS overrides it (kbench sweeps it).
 */
static uint32_t kc_ad_tps(uint32_t b)
{
	const char *ov = getenv("SPARDA_KCUDA_TPS");
	if (ov && atoi(ov) > 0)
		return (uint32_t)atoi(ov);
	return b >= 32 ? 16 : b >= 2 ? 8 : 4;
}

/*
 * How the splits are merged, SPARDA_KCUDA_MERGE (read at each call): "par" (default) the
 * parallel merge kernel, "serial" the serial one, "fused" the last CTA of each group inside
 * the tensor-core split kernels (no second launch; falls back to "par" where it cannot).
 */
enum kc_ad_merge { KC_AD_MERGE_PAR, KC_AD_MERGE_SERIAL, KC_AD_MERGE_FUSED };

static enum kc_ad_merge kc_ad_merge_mode(void)
{
	const char *m = getenv("SPARDA_KCUDA_MERGE");
	if (m && !strcmp(m, "serial"))
		return KC_AD_MERGE_SERIAL;
	if (m && !strcmp(m, "fused"))
		return KC_AD_MERGE_FUSED;
	return KC_AD_MERGE_PAR;
}

/*
 * Which tensor-core split kernel: the cp.async-pipelined one (attn_decode_cp.cu, 2 stages per
 * warp) below batch 32, the register-staged one from batch 32 (the faster of the two at each
 * batch on the H200, NOTES.md). SPARDA_KCUDA_ADK=reg / reg4 / cp2 / cp3 (read at each call)
 * forces one. Returns the stages, 0 for the register kernel.
 */
static uint32_t kc_ad_stages(uint32_t b)
{
	const char *k = getenv("SPARDA_KCUDA_ADK");
	if (k && (!strcmp(k, "reg") || !strcmp(k, "reg4")))
		return 0;
	if (k && !strcmp(k, "cp2"))
		return 2;
	if (k && !strcmp(k, "cp3"))
		return 3;
	return b < 32 ? 2 : 0;
}

/* The register kernel capped at 128 registers (d 128) when SPARDA_KCUDA_ADK=reg4. */
static bool kc_ad_reg4(void)
{
	const char *k = getenv("SPARDA_KCUDA_ADK");
	return k && !strcmp(k, "reg4");
}

static bool kc_ad_dim_ok(uint32_t d)
{
	return d >= 16 && d <= 256 && d % 8 == 0 && KC_AD_THREADS % (d / 2) == 0;
}

extern "C" int kc_attn_decode_init(void)
{
	return kc_ad_cp_init();
}

extern "C" size_t kc_attn_decode_counters(uint32_t b, uint32_t n_q, uint32_t n_kv)
{
	return n_kv ? (size_t)b * n_kv * kc_div_up(n_q / n_kv, KC_AD_HEADS) : 0;
}

extern "C" size_t kc_attn_decode_work(uint32_t b, uint32_t n_q, uint32_t n_units, uint32_t d)
{
	uint32_t splits = n_units ? kc_div_up(n_units, kc_ad_tps(b)) : 1;
	return (size_t)b * n_q * splits * ((size_t)d + 2) * sizeof(float);
}

/*
 * Merge with the splits read in parallel: the CTA finds the max and the weights of all splits
 * first (one load per split per thread), then each output column sums its splits from the
 * weights in shared memory (the default, kc_ad_merge_mode); the serial
 * merge above costs ~0.25 us per split at batch 1.
 */
__global__ void kc_ad_merge_par_kernel(uint16_t *out, uint32_t ld_o, const float *part,
				       uint32_t n_q, uint32_t n_splits, uint32_t d)
{
	extern __shared__ float wgt[]; /* [n_splits] */
	__shared__ float red[32];
	uint32_t b = blockIdx.x / n_q, h = blockIdx.x % n_q, tid = threadIdx.x;
	uint32_t lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
	size_t pst = (size_t)d + 2;
	const float *p = part + ((size_t)b * n_q + h) * n_splits * pst;
	float mx = -INFINITY;
	for (uint32_t s = tid; s < n_splits; s += blockDim.x)
		mx = fmaxf(mx, p[s * pst + d]);
	mx = kc_warp_max(mx);
	if (lane == 0)
		red[warp] = mx;
	__syncthreads();
	mx = lane < nw ? red[lane] : -INFINITY;
	mx = kc_warp_max(mx);
	__syncthreads();
	float l = 0.0f;
	for (uint32_t s = tid; s < n_splits; s += blockDim.x) {
		float ms = p[s * pst + d];
		float w = mx == -INFINITY || ms == -INFINITY ? 0.0f : expf(ms - mx);
		wgt[s] = w;
		l += w * p[s * pst + d + 1];
	}
	l = kc_warp_sum(l);
	if (lane == 0)
		red[warp] = l;
	__syncthreads();
	l = lane < nw ? red[lane] : 0.0f;
	l = kc_warp_sum(l);
	for (uint32_t c = tid; c < d; c += blockDim.x) {
		float o = 0.0f;
#pragma unroll 4
		for (uint32_t s = 0; s < n_splits; s++)
			o += wgt[s] == 0.0f ? 0.0f : p[s * pst + c] * wgt[s];
		out[(size_t)b * ld_o + (size_t)h * d + c] = kc_tobf(l > 0.0f ? o / l : 0.0f);
	}
}

static int kc_ad_launch(cudaStream_t st, struct kc_ad_args *a, uint16_t *out, uint32_t ld_o,
			uint32_t b)
{
	size_t smem = (size_t)KC_AD_HEADS * a->d * sizeof(float);
	dim3 grid(a->n_splits, a->n_kv * a->hchunks, b);
	if (a->cnt && (!a->mma || (a->d != 128 && a->d != 64) || a->n_splits > KC_AD_FUSED_MAX))
		a->cnt = NULL; /* the parallel merge kernel instead */
	a->out = out;
	a->ld_o = ld_o;
	if (a->mma && a->stages && (a->d == 128 || a->d == 64)) {
		int e = kc_ad_cp_launch(st, a, grid);
		if (e)
			return e;
	} else {
		if (a->mma && a->d == 128 && a->reg4)
			kc_ad_mma_go<128, 4>(st, grid, a);
		else if (a->mma && a->d == 128)
			kc_ad_mma_go<128, 3>(st, grid, a);
		else if (a->mma && a->d == 64)
			kc_ad_mma_go<64, 5>(st, grid, a);
		else
			kc_ad_split_kernel<<<grid, KC_AD_THREADS, smem, st>>>(*a);
		KC_LAUNCHED("attn_decode_split");
	}
	unsigned thr = a->d < 128 ? 64 : 128;
	/* padded: the unrolled column loop was seen reading past n_splits floats (memcheck) */
	size_t wsm = (((size_t)a->n_splits + 3) & ~(size_t)3) * sizeof(float) + 16;
	if (a->cnt)
		return 0; /* merged by the split kernel's last CTAs */
	if (a->merge_par && wsm <= 32 * 1024)
		kc_ad_merge_par_kernel<<<b * a->n_q, thr, wsm, st>>>(out, ld_o, a->part, a->n_q,
								     a->n_splits, a->d);
	else
		kc_ad_merge_kernel<<<b * a->n_q, thr, 0, st>>>(out, ld_o, a->part, a->n_q,
							       a->n_splits, a->d);
	KC_LAUNCHED("attn_decode_merge");
	return 0;
}

static int kc_ad_common(struct kc_ad_args *a, const uint16_t *q, uint32_t ld_q, uint32_t n_q,
			uint32_t n_kv, uint32_t d, float scale)
{
	if (n_kv == 0 || n_q % n_kv || !kc_ad_dim_ok(d) || ld_q % 8 || (uintptr_t)q % 16)
		return -EINVAL;
	a->q = q;
	a->ld_q = ld_q;
	a->n_q = n_q;
	a->n_kv = n_kv;
	a->d = d;
	a->G = n_q / n_kv;
	a->hchunks = kc_div_up(a->G, KC_AD_HEADS);
	a->scale = scale;
	return 0;
}

extern "C" int kc_attn_decode(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q,
			      uint32_t ld_q, const uint16_t *units, const int32_t *unit_idx,
			      const int32_t *unit_len, uint32_t n_units, uint32_t b, uint32_t n_q,
			      uint32_t n_kv, uint32_t d, uint32_t block, float scale, void *work,
			      bool mma, uint32_t *cnt)
{
	struct kc_ad_args a = {};
	a.mma = mma;
	enum kc_ad_merge mm = kc_ad_merge_mode();
	a.merge_par = mm != KC_AD_MERGE_SERIAL;
	a.cnt = mm == KC_AD_MERGE_FUSED ? cnt : NULL;
	a.stages = kc_ad_stages(b);
	a.reg4 = kc_ad_reg4();
	int e = kc_ad_common(&a, q, ld_q, n_q, n_kv, d, scale);
	if (e)
		return e;
	if (block == 0 || !work || (uintptr_t)units % 16)
		return -EINVAL;
	if (b == 0 || n_q == 0)
		return 0;
	a.units = units;
	a.unit_idx = unit_idx;
	a.unit_len = unit_len;
	a.block = block;
	a.n_tiles = n_units;
	a.tiles_per_split = kc_ad_tps(b);
	a.n_splits = n_units ? kc_div_up(n_units, a.tiles_per_split) : 1;
	a.part = (float *)work;
	return kc_ad_launch(st, &a, out, ld_o, b);
}

/* Dense splits: about 4 CTAs per SM over the whole batch, at least one 64-key tile each. */
static void kc_add_splits(uint32_t b, uint32_t n_kv, uint32_t hchunks, uint32_t t_cap,
			  uint32_t *tiles, uint32_t *tps, uint32_t *splits)
{
	uint32_t nt = kc_div_up(t_cap, KC_AD_TILE);
	uint32_t want = kc_div_up(528, (size_t)b * n_kv * hchunks);
	if (want > nt)
		want = nt;
	if (want == 0)
		want = 1;
	*tiles = nt;
	*tps = nt ? kc_div_up(nt, want) : 1;
	*splits = nt ? kc_div_up(nt, *tps) : 1;
}

extern "C" size_t kc_attn_decode_dense_scratch(uint32_t b, uint32_t n_q, uint32_t n_kv,
					       uint32_t t_cap, uint32_t d)
{
	uint32_t tiles, tps, splits;
	if (n_kv == 0)
		return 0;
	kc_add_splits(b, n_kv, kc_div_up(n_q / n_kv, KC_AD_HEADS), t_cap, &tiles, &tps, &splits);
	return (size_t)b * n_q * splits * ((size_t)d + 2) * sizeof(float);
}

extern "C" int kc_attn_decode_dense(cudaStream_t st, uint16_t *out, uint32_t ld_o,
				    const uint16_t *q, uint32_t ld_q, const uint16_t *kc,
				    const uint16_t *vc, uint32_t t_cap, const int32_t *kv_len,
				    uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d,
				    float scale, void *scratch, bool mma, uint32_t *cnt)
{
	struct kc_ad_args a = {};
	a.mma = mma;
	enum kc_ad_merge mm = kc_ad_merge_mode();
	a.merge_par = mm != KC_AD_MERGE_SERIAL;
	a.cnt = mm == KC_AD_MERGE_FUSED ? cnt : NULL;
	a.stages = kc_ad_stages(b);
	a.reg4 = kc_ad_reg4();
	int e = kc_ad_common(&a, q, ld_q, n_q, n_kv, d, scale);
	if (e)
		return e;
	if (!scratch || ((uintptr_t)kc | (uintptr_t)vc) % 16)
		return -EINVAL;
	if (b == 0 || n_q == 0)
		return 0;
	a.kc = kc;
	a.vc = vc;
	a.kv_len = kv_len;
	a.t_cap = t_cap;
	kc_add_splits(b, n_kv, a.hchunks, t_cap, &a.n_tiles, &a.tiles_per_split, &a.n_splits);
	a.part = (float *)scratch;
	return kc_ad_launch(st, &a, out, ld_o, b);
}
