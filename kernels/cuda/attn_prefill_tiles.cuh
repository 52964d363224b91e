/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the prefill kernels share: their arguments (all three: attn_prefill.cu's WMMA kernel,
 * attn_prefill_fa2.cu, attn_prefill_wg.cu), and for the last two the padded tile loader, the
 * block-sparse list of 64-key tiles of a query block's selected KV blocks, the query tile's
 * placement and the epilogue. Internal to those files.
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_PREFILL_TILES_CUH
#define SPARDA_KERNELS_CUDA_ATTN_PREFILL_TILES_CUH

#include <stdint.h>

#include "kc_common.cuh"
#include "kc_mma.cuh"

#define KC_FA_BN 64u	 /* keys per tile; also the query rows of a 4-warp CTA */
#define KC_FA_MAXT 1024u /* listed tiles per query block (block-sparse) */

struct kc_fa_args {
	uint16_t *out;
	const uint16_t *q, *k, *v;
	const int32_t *sel;
	uint32_t ld_o, ld_q, ld_kv, t, p0, n_q, n_kv, d, topk, block, n_qb, n_qt;
	float scale, sl2; /* sl2 = scale * log2(e) */
};

/*
 * Copy ROWS rows of D bf16 into a padded tile (row stride D + 8) with NT threads: tile row r is
 * source row r0 + r (stride lds) when lo <= r < hi, else zeros.
 */
template <int D, uint32_t ROWS, uint32_t NT>
static __device__ __forceinline__ void kc_fa_load(uint16_t *dst, const uint16_t *src, size_t lds,
						  int64_t r0, uint32_t lo, uint32_t hi)
{
	constexpr uint32_t VPR = D / 8, LDS = D + 8;
#pragma unroll
	for (uint32_t i = 0; i < ROWS * VPR / NT; i++) {
		uint32_t idx = threadIdx.x + i * NT, r = idx / VPR, c = (idx % VPR) * 8;
		bool ok = r >= lo && r < hi;
		const uint16_t *s = ok ? src + (size_t)(r0 + r) * lds + c : src;
		kc_cp16(dst + r * LDS + c, s, ok);
	}
}

/* The key position where tile i starts (dense: 64 i; sparse: from the list). */
static __device__ __forceinline__ uint32_t kc_fa_tile(const int32_t *tl, bool sparse, uint32_t i)
{
	return sparse ? (uint32_t)tl[i] : i * KC_FA_BN;
}

/* Warp 0 lists the 64-key tiles of the selected blocks that start at or before `last`. */
static __device__ inline uint32_t kc_fa_list(const struct kc_fa_args &a, uint32_t g, uint32_t qb,
					     uint32_t last, int32_t *tl)
{
	uint32_t lane = threadIdx.x & 31, sub = a.block / KC_FA_BN, n = 0;
	const int32_t *sl = a.sel + ((size_t)g * a.n_qb + qb) * a.topk;
	for (uint32_t base = 0; base < a.topk; base += 32) {
		uint32_t i = base + lane, cnt = 0;
		int32_t blk = i < a.topk ? sl[i] : -1;
		uint64_t b0 = blk >= 0 ? (uint64_t)blk * a.block : 0;
		if (blk >= 0 && b0 <= last)
			cnt = min(sub, (uint32_t)((last - b0) / KC_FA_BN) + 1);
		uint32_t inc = cnt;
#pragma unroll
		for (int o = 1; o < 32; o <<= 1) {
			uint32_t x = __shfl_up_sync(0xffffffffu, inc, o);
			if ((int)lane >= o)
				inc += x;
		}
		uint32_t off = n + inc - cnt;
		for (uint32_t j = 0; j < cnt; j++)
			if (off + j < KC_FA_MAXT)
				tl[off + j] = (int32_t)(b0 + j * KC_FA_BN);
		n += __shfl_sync(0xffffffffu, inc, 31);
	}
	return min(n, KC_FA_MAXT);
}

/*
 * Where this CTA's query tile of bm rows sits (tiles start at bm-aligned positions, the longest
 * rows first; a 64-row tile never straddles a KV block), which of its rows are the prompt's
 * (lo <= r < hi), the position of its last row, and how many 64-key tiles it visits: dense, all
 * up to `last`; block-sparse, those warp 0 lists in tl (the CTA syncs once).
 */
struct kc_fa_qtile {
	uint32_t q0, lo, hi, last, nt;
};
static __device__ __forceinline__ struct kc_fa_qtile
kc_fa_place(const struct kc_fa_args &a, uint32_t bm, uint32_t g, int32_t *tl, uint32_t *s_nt)
{
	struct kc_fa_qtile t;
	uint32_t qt = a.n_qt - 1 - blockIdx.x;
	t.q0 = a.p0 - a.p0 % bm + qt * bm;
	t.lo = t.q0 < a.p0 ? a.p0 - t.q0 : 0;
	t.hi = min(bm, a.p0 + a.t - t.q0);
	t.last = t.q0 + t.hi - 1;
	if (a.sel) {
		if (threadIdx.x < 32) {
			uint32_t n = kc_fa_list(a, g, t.q0 / a.block - a.p0 / a.block, t.last, tl);
			if (threadIdx.x == 0)
				*s_nt = n;
		}
		__syncthreads();
		t.nt = *s_nt;
	} else {
		t.nt = t.last / KC_FA_BN + 1;
	}
	return t;
}

/*
 * The epilogue: sum each row's softmax denominator over its quad, normalise this lane's output
 * (o: D / 8 groups of 4 accumulators, rows r0 and r0 + 8, columns tig * 2 + {0, 1} of each
 * 8-column group) and store the rows that are the prompt's (lo <= r < hi) as bf16.
 */
template <int D>
static __device__ __forceinline__ void
kc_fa_store(const struct kc_fa_args &a, const float *o, float l0, float l1, uint32_t q0,
	    uint32_t r0, uint32_t lo, uint32_t hi, uint32_t h, uint32_t tig)
{
#pragma unroll
	for (int of = 1; of <= 2; of <<= 1) {
		l0 += __shfl_xor_sync(0xffffffffu, l0, of);
		l1 += __shfl_xor_sync(0xffffffffu, l1, of);
	}
	float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
	uint32_t ra = r0, rb = r0 + 8;
	uint16_t *oa = a.out + (size_t)(q0 + ra - a.p0) * a.ld_o + (size_t)h * D + tig * 2;
	uint16_t *ob = a.out + (size_t)(q0 + rb - a.p0) * a.ld_o + (size_t)h * D + tig * 2;
	bool va = ra >= lo && ra < hi, vb = rb >= lo && rb < hi;
#pragma unroll
	for (uint32_t n = 0; n < D / 8; n++) {
		if (va) {
			oa[n * 8] = kc_tobf(o[4 * n] * i0);
			oa[n * 8 + 1] = kc_tobf(o[4 * n + 1] * i0);
		}
		if (vb) {
			ob[n * 8] = kc_tobf(o[4 * n + 2] * i1);
			ob[n * 8 + 1] = kc_tobf(o[4 * n + 3] * i1);
		}
	}
}

/* Whether a block-sparse selection (sel != NULL) suits the 64-key tile list. */
static inline bool kc_fa_sparse_ok(const int32_t *sel, uint32_t topk, uint32_t block)
{
	return !sel || (block % KC_FA_BN == 0 && (size_t)topk * (block / KC_FA_BN) <= KC_FA_MAXT);
}

/* The arguments of a prefill launch whose query tiles are bm rows. */
static inline struct kc_fa_args kc_fa_args_make(uint16_t *out, uint32_t ld_o, const uint16_t *q,
						uint32_t ld_q, const uint16_t *k, const uint16_t *v,
						uint32_t ld_kv, uint32_t t, uint32_t p0,
						uint32_t n_q, uint32_t n_kv, uint32_t d,
						float scale, const int32_t *sel, uint32_t topk,
						uint32_t block, uint32_t bm)
{
	struct kc_fa_args a = {};
	a.out = out;
	a.q = q;
	a.k = k;
	a.v = v;
	a.sel = sel;
	a.ld_o = ld_o;
	a.ld_q = ld_q;
	a.ld_kv = ld_kv;
	a.t = t;
	a.p0 = p0;
	a.n_q = n_q;
	a.n_kv = n_kv;
	a.d = d;
	a.topk = topk;
	a.block = block;
	a.n_qb = block ? (p0 + t - 1) / block - p0 / block + 1 : 0;
	a.n_qt = kc_div_up(p0 % bm + t, bm);
	a.scale = scale;
	a.sl2 = scale * 1.4426950408889634f;
	return a;
}

#endif
