/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Block-cache diff (one CTA per cache; ranks of free slots and new blocks come from CTA-wide
 * ballot scans, so slot order is exactly the CPU's), the persistent unit copy (CTA c copies
 * units c, c + n_ctas, ...; four 16-byte loads in flight per thread before the stores, which
 * keeps enough bytes in flight to cover PCIe latency when the source is mapped host memory),
 * and the K/V packers.
 */
#include <stdlib.h>

#include "kc_common.cuh"
#include "kvcache.cuh"

#define KC_CD_THREADS 256u
#define KC_CU_THREADS 512u

/*
 * Slot s keeps its block: the protected slot, or one whose block is in the selection sl. One warp
 * per slot, its lanes over the selection. The top-k cache records the flag in kp; the retaining
 * cache records its candidate key instead (UINT64_MAX when kept, else (occupied, age, slot)
 * packed so that unsigned order is the eviction order: empty slots by slot, then by age and slot)
 * and counts the candidates in *n_cand. A kept slot's age becomes the step.
 */
static __device__ void kc_cache_kept(const int32_t *old, const int32_t *sl, int32_t prot,
				     uint32_t n_slots, uint32_t k, int32_t *kp, int32_t *ap,
				     int32_t step, uint64_t *key, uint32_t *n_cand)
{
	uint32_t lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
	for (uint32_t s = threadIdx.x >> 5; s < n_slots; s += nwarps) {
		int32_t blk = old[s];
		bool kept = (int32_t)s == prot;
		for (uint32_t i0 = 0; blk >= 0 && !kept && i0 < k; i0 += 32)
			kept = __any_sync(0xffffffffu, i0 + lane < k && sl[i0 + lane] == blk);
		if (lane)
			continue;
		if (!ap) {
			kp[s] = kept;
		} else if (kept) {
			ap[s] = step;
			key[s] = UINT64_MAX;
		} else {
			uint64_t age = (uint32_t)ap[s] ^ 0x80000000u; /* signed order as unsigned */
			key[s] = blk < 0 ? s : 1ull << 62 | age << 24 | s;
			atomicAdd(n_cand, 1u);
		}
	}
}

/*
 * The retaining cache (cache_diff with age): the candidate slots (not kept) take the new blocks
 * in key order. A slot's rank is the count of keys below its own (keys are distinct: they hold
 * the slot), counted a warp at a time and given up once it reaches n_new; a slot ranked past the
 * new blocks keeps its block and age. Returns the loads listed.
 */
static __device__ uint32_t kc_cache_diff_lru(int32_t *mp, int32_t *ap, int32_t step,
					     const uint64_t *key, const int32_t *nw,
					     uint32_t n_slots, uint32_t n_new, uint32_t n_cand,
					     int32_t *load_slot, int32_t *load_block)
{
	uint32_t lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
	for (uint32_t s = threadIdx.x >> 5; s < n_slots; s += nwarps) {
		uint64_t ks = key[s];
		uint32_t rank = 0;
		if (ks == UINT64_MAX)
			continue;
		for (uint32_t t0 = 0; t0 < n_slots && rank < n_new; t0 += 32)
			rank += __popc(
			    __ballot_sync(0xffffffffu, t0 + lane < n_slots && key[t0 + lane] < ks));
		if (lane == 0 && rank < n_new) {
			mp[s] = nw[rank];
			ap[s] = step;
			load_slot[rank] = (int32_t)s;
			load_block[rank] = nw[rank];
		}
	}
	return min(n_new, n_cand);
}

/* The top-k cache: free slots in ascending order take the new blocks, the rest become empty.
 * Every thread calls it (its scans hold barriers). Returns the loads listed. */
static __device__ uint32_t kc_cache_diff_free(int32_t *mp, const int32_t *kp, const int32_t *nw,
					      uint32_t *wsum, uint32_t n_slots, uint32_t k,
					      uint32_t n_new, int32_t *load_slot,
					      int32_t *load_block)
{
	uint32_t n_free = 0, tot;
	for (uint32_t c0 = 0; c0 < n_slots; c0 += blockDim.x) {
		uint32_t s = c0 + threadIdx.x;
		bool fr = s < n_slots && !kp[s];
		uint32_t f = n_free + kc_block_scan(fr, &tot, wsum);
		n_free += tot;
		if (fr) {
			int32_t nb = f < n_new ? nw[f] : -1;
			mp[s] = nb;
			if (f < n_new && f < k) {
				load_slot[f] = (int32_t)s;
				load_block[f] = nb;
			}
		}
	}
	return min(n_new, n_free);
}

__global__ void __launch_bounds__(KC_CD_THREADS)
    kc_cache_diff_kernel(int32_t *map, int32_t *age, int32_t step, const int32_t *sel,
			 const int32_t *protect, uint32_t n_slots, uint32_t k, int32_t *load_slot,
			 int32_t *load_block, int32_t *n_loads, int32_t *hits)
{
	extern __shared__ uint64_t cd_smem[];
	__shared__ uint32_t wsum[KC_CD_THREADS / 32], n_cand;
	/* the retaining cache's keys (or the top-k cache's kept flags), the old map, the selection,
	 * its cached flags and the new blocks */
	uint64_t *key = cd_smem;
	int32_t *kp = (int32_t *)cd_smem, *old = age ? (int32_t *)(key + n_slots) : kp + n_slots;
	int32_t *sl = old + n_slots, *cf = sl + k, *nw = cf + k;
	uint32_t c = blockIdx.x, tid = threadIdx.x, bd = blockDim.x, lane = tid & 31;
	int32_t *mp = map + (size_t)c * n_slots, *ap = age ? age + (size_t)c * n_slots : NULL;
	const int32_t *sc = sel + (size_t)c * k;
	int32_t prot = protect ? protect[c] : -1;
	for (uint32_t i = tid; i < n_slots; i += bd)
		old[i] = mp[i];
	for (uint32_t i = tid; i < k; i += bd)
		sl[i] = sc[i];
	if (tid == 0)
		n_cand = 0;
	__syncthreads();
	kc_cache_kept(old, sl, prot, n_slots, k, kp, ap, step, key, &n_cand);
	/* each selected block cached anywhere: one warp per block, its lanes over the slots */
	for (uint32_t i = tid >> 5; i < k; i += bd >> 5) {
		int32_t blk = sl[i];
		bool cached = false;
		for (uint32_t s0 = 0; blk >= 0 && !cached && s0 < n_slots; s0 += 32)
			cached =
			    __any_sync(0xffffffffu, s0 + lane < n_slots && old[s0 + lane] == blk);
		if (lane == 0)
			cf[i] = cached;
	}
	__syncthreads();
	/* New blocks (selected, not cached anywhere) compacted in selection (= block) order. */
	uint32_t n_new = 0, n_hit = 0, tot;
	for (uint32_t c0 = 0; c0 < k; c0 += bd) {
		uint32_t i = c0 + tid;
		int32_t blk = i < k ? sl[i] : -1;
		bool fresh = blk >= 0 && !cf[i];
		uint32_t r = kc_block_scan(fresh, &tot, wsum);
		if (fresh)
			nw[n_new + r] = blk;
		n_new += tot;
		kc_block_scan(blk >= 0 && cf[i], &tot, wsum);
		n_hit += tot;
	}
	__syncthreads();
	uint32_t nl;
	if (ap) {
		nl = kc_cache_diff_lru(mp, ap, step, key, nw, n_slots, n_new, n_cand,
				       load_slot + (size_t)c * k, load_block + (size_t)c * k);
	} else {
		nl = kc_cache_diff_free(mp, kp, nw, wsum, n_slots, k, n_new,
					load_slot + (size_t)c * k, load_block + (size_t)c * k);
	}
	for (uint32_t i = nl + tid; i < k; i += bd) {
		load_slot[(size_t)c * k + i] = -1;
		load_block[(size_t)c * k + i] = -1;
	}
	if (tid == 0) {
		n_loads[c] = (int32_t)nl;
		hits[c] = (int32_t)n_hit;
	}
}

extern "C" int kc_cache_diff(cudaStream_t st, int32_t *map, int32_t *age, int32_t step,
			     const int32_t *sel, const int32_t *protect, uint32_t n,
			     uint32_t n_slots, uint32_t k, int32_t *load_slot, int32_t *load_block,
			     int32_t *n_loads, int32_t *hits)
{
	if (k > n_slots)
		return -EINVAL;
	if (n == 0 || n_slots == 0)
		return 0;
	/* keys (8 bytes) or kept flags, the old map; selection, cached flags, new blocks */
	size_t smem = ((size_t)(age ? 3 : 2) * n_slots + 3 * (size_t)k) * sizeof(int32_t);
	if (smem > 48 * 1024) { /* past the default: the device's opt-in limit (227 KiB on H200) */
		static int optin = -1; /* one device per process */
		int dev = 0;
		if (optin < 0 &&
		    (cudaGetDevice(&dev) != cudaSuccess ||
		     cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
			 cudaSuccess))
			return -EIO;
		if (smem + (KC_CD_THREADS / 32 + 1) * sizeof(uint32_t) > (size_t)optin)
			return -EINVAL;
		KC_CHECK(cudaFuncSetAttribute(
		    kc_cache_diff_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
	}
	kc_cache_diff_kernel<<<n, KC_CD_THREADS, smem, st>>>(
	    map, age, step, sel, protect, n_slots, k, load_slot, load_block, n_loads, hits);
	KC_LAUNCHED("cache_diff");
	return 0;
}

__global__ void __launch_bounds__(KC_CU_THREADS)
    kc_copy_units_kernel(uint4 *dst, const uint4 *src, const int32_t *dst_idx,
			 const int32_t *src_idx, uint32_t n, size_t vecs)
{
	for (uint32_t i = blockIdx.x; i < n; i += gridDim.x) {
		int32_t di = dst_idx[i], si = src_idx[i];
		if (di < 0 || si < 0)
			continue;
		uint4 *d = dst + (size_t)di * vecs;
		const uint4 *s = src + (size_t)si * vecs;
		size_t v = threadIdx.x, bd = blockDim.x;
		for (; v + 3 * bd < vecs; v += 4 * bd) {
			uint4 a0 = s[v], a1 = s[v + bd], a2 = s[v + 2 * bd], a3 = s[v + 3 * bd];
			d[v] = a0;
			d[v + bd] = a1;
			d[v + 2 * bd] = a2;
			d[v + 3 * bd] = a3;
		}
		for (; v < vecs; v += bd)
			d[v] = s[v];
	}
}

extern "C" int kc_copy_units(cudaStream_t st, void *dst, const void *src, const int32_t *dst_idx,
			     const int32_t *src_idx, uint32_t n, size_t unit_bytes, uint32_t n_ctas)
{
	if (unit_bytes % 16 || ((uintptr_t)dst | (uintptr_t)src) % 16)
		return -EINVAL;
	if (n == 0 || unit_bytes == 0)
		return 0;
	if (n_ctas == 0)
		n_ctas = 16;
	if (n_ctas > n)
		n_ctas = n;
	/* Threads per CTA: 128 by default, small enough to share SMs with the compute stream's
	 * kernels (docs/perf-notes.md: at 128K, batch 1, sparda's step fell from 2.85 to 2.64 ms
	 * against 512 threads, at the same gather rate); SPARDA_KCUDA_GATHER_THREADS (64..512, a
	 * multiple of 32) overrides it. */
	static unsigned threads;
	if (!threads) {
		const char *e = getenv("SPARDA_KCUDA_GATHER_THREADS");
		unsigned v = e ? (unsigned)strtoul(e, NULL, 10) : 0;
		threads = v >= 64 && v <= KC_CU_THREADS && v % 32 == 0 ? v : 128u;
	}
	kc_copy_units_kernel<<<n_ctas, threads, 0, st>>>(
	    (uint4 *)dst, (const uint4 *)src, dst_idx, src_idx, n, unit_bytes / 16);
	KC_LAUNCHED("copy_units");
	return 0;
}

/* One thread per (token, head, 8-column group) when everything is 16-byte aligned. */
template <bool VEC>
__global__ void kc_kv_pack_kernel(uint16_t *units, const int32_t *unit_idx, const uint16_t *k,
				  const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t,
				  uint32_t n_kv, uint32_t d, uint32_t block)
{
	uint32_t w = VEC ? 8 : 1, cpr = d / w;
	size_t total = (size_t)t * n_kv * cpr;
	size_t ustride = 2 * (size_t)block * d;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t cc = (uint32_t)(i % cpr) * w;
		size_t th = i / cpr;
		uint32_t h = (uint32_t)(th % n_kv), r = (uint32_t)(th / n_kv), p = t0 + r;
		int32_t u = unit_idx[(size_t)(p / block - t0 / block) * n_kv + h];
		if (u < 0)
			continue;
		uint16_t *dk = units + (size_t)u * ustride + (size_t)(p % block) * d + cc;
		uint16_t *dv = dk + (size_t)block * d;
		size_t so = (size_t)r * ld + (size_t)h * d + cc;
		if (VEC) {
			*(uint4 *)dk = *(const uint4 *)(k + so);
			*(uint4 *)dv = *(const uint4 *)(v + so);
		} else {
			*dk = k[so];
			*dv = v[so];
		}
	}
}

extern "C" int kc_kv_pack(cudaStream_t st, uint16_t *units, const int32_t *unit_idx,
			  const uint16_t *k, const uint16_t *v, uint32_t ld, uint32_t t0,
			  uint32_t t, uint32_t n_kv, uint32_t d, uint32_t block)
{
	if (block == 0)
		return -EINVAL;
	if (t == 0 || n_kv == 0 || d == 0)
		return 0;
	bool vec =
	    d % 8 == 0 && ld % 8 == 0 && ((uintptr_t)units | (uintptr_t)k | (uintptr_t)v) % 16 == 0;
	size_t total = (size_t)t * n_kv * (vec ? d / 8 : d);
	unsigned grid = kc_div_up(total, 256);
	if (grid > 65535u * 4)
		grid = 65535u * 4;
	if (vec)
		kc_kv_pack_kernel<true>
		    <<<grid, 256, 0, st>>>(units, unit_idx, k, v, ld, t0, t, n_kv, d, block);
	else
		kc_kv_pack_kernel<false>
		    <<<grid, 256, 0, st>>>(units, unit_idx, k, v, ld, t0, t, n_kv, d, block);
	KC_LAUNCHED("kv_pack");
	return 0;
}

__global__ void kc_kv_store_kernel(uint16_t *units, const int32_t *unit_idx, const uint16_t *k,
				   const uint16_t *v, uint32_t ld, const int32_t *pos,
				   uint32_t n_kv, uint32_t d, uint32_t block)
{
	uint32_t b = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
	int32_t u = unit_idx[blockIdx.x];
	if (u < 0)
		return;
	uint32_t row = (uint32_t)pos[b] % block;
	uint16_t *dk = units + (size_t)u * 2 * block * d + (size_t)row * d;
	uint16_t *dv = dk + (size_t)block * d;
	for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
		dk[c] = k[(size_t)b * ld + (size_t)h * d + c];
		dv[c] = v[(size_t)b * ld + (size_t)h * d + c];
	}
}

extern "C" int kc_kv_store(cudaStream_t st, uint16_t *units, const int32_t *unit_idx,
			   const uint16_t *k, const uint16_t *v, uint32_t ld, const int32_t *pos,
			   uint32_t b, uint32_t n_kv, uint32_t d, uint32_t block)
{
	if (block == 0)
		return -EINVAL;
	if (b == 0 || n_kv == 0 || d == 0)
		return 0;
	kc_kv_store_kernel<<<b * n_kv, 128, 0, st>>>(units, unit_idx, k, v, ld, pos, n_kv, d,
						     block);
	KC_LAUNCHED("kv_store");
	return 0;
}
