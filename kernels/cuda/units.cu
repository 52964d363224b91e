// SPDX-License-Identifier: Apache-2.0
// CUDA versions of sel_units (selection -> attention unit table) and resolve_loads (load list
// -> copy_units index lists through the memsvc residency words). One thread per entry; with a
// slot map, one CTA per cache, whose map row is read once into shared memory (for one table,
// or for sel_units2's two).
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

/* shm_abi.h is C11 (_Atomic) and cannot be included from C++; these mirror its
 * enum sp_unit_state values and the word packing (state in bits 56..63, slot in 0..31). */
enum { UNIT_ALLOCATED = 1, UNIT_RESIDENT = 2 };

__global__ void sel_units_kernel(int32_t *unit_idx, int32_t *unit_len, const int32_t *sel,
				 const int32_t *map, const int32_t *n_tokens, uint32_t n,
				 uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t block)
{
	uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (t >= (uint64_t)n * k)
		return;
	uint32_t i = (uint32_t)(t / k), j = (uint32_t)(t % k);
	int64_t tokens = n_tokens[i / n_kv];
	int64_t m = sel ? sel[t] : (int64_t)j;
	int32_t idx = -1, len = 0;

	if (m >= 0 && m * block < tokens && (map || m < n_slots)) {
		if (map) {
			for (uint32_t sl = 0; sl < n_slots; sl++) {
				if (map[(size_t)i * n_slots + sl] == m) {
					idx = (int32_t)(i * n_slots + sl);
					break;
				}
			}
		} else {
			idx = (int32_t)(i * n_slots + m);
		}
		if (idx >= 0) {
			int64_t rows = tokens - m * block;
			len = (int32_t)(rows < block ? rows : block);
		}
	}
	unit_idx[t] = idx;
	unit_len[t] = len;
}

/*
 * sel_units through a slot map: CTA i reads cache i's map row into shared memory once, then
 * each thread finds its blocks' slots there. A scan of the row in global memory per entry (the
 * kernel above) waits on one load per slot in turn, up to 97 of them: on the H200 the decode's
 * phases that use it ran 8-12 us longer per offloaded layer than the resident layout's
 * (docs/perf-notes.md). The scan runs down the whole row, so the lowest matching slot wins,
 * as in the CPU reference. Entries j < k are table a's, the k_b after them table b's (sel_units2:
 * the attention table and the tail block's slot from one read of the row).
 */
__global__ void sel_units_map_kernel(int32_t *unit_idx, int32_t *unit_len, const int32_t *sel,
				     uint32_t k, int32_t *idx_b, int32_t *len_b,
				     const int32_t *sel_b, uint32_t k_b, const int32_t *map,
				     const int32_t *n_tokens, uint32_t n_kv, uint32_t n_slots,
				     uint32_t block)
{
	extern __shared__ int32_t su_map[];
	uint32_t i = blockIdx.x;
	const int32_t *row = map + (size_t)i * n_slots;
	for (uint32_t s = threadIdx.x; s < n_slots; s += blockDim.x)
		su_map[s] = row[s];
	__syncthreads();
	int64_t tokens = n_tokens[i / n_kv];
	for (uint32_t e = threadIdx.x; e < k + k_b; e += blockDim.x) {
		bool b = e >= k;
		uint32_t j = b ? e - k : e;
		size_t t = (size_t)i * (b ? k_b : k) + j;
		const int32_t *sl = b ? sel_b : sel;
		int64_t m = sl ? sl[t] : (int64_t)j;
		int32_t idx = -1, len = 0;
		if (m >= 0 && m * block < tokens) {
			int32_t found = -1;
			for (uint32_t s = n_slots; s-- > 0;)
				found = su_map[s] == m ? (int32_t)s : found;
			if (found >= 0) {
				int64_t rows = tokens - m * block;
				idx = (int32_t)(i * n_slots) + found;
				len = (int32_t)(rows < block ? rows : block);
			}
		}
		(b ? idx_b : unit_idx)[t] = idx;
		(b ? len_b : unit_len)[t] = len;
	}
}

__global__ void resolve_loads_kernel(int32_t *dst_idx, int32_t *src_idx, int32_t *misses,
				     const int32_t *load_slot, const int32_t *load_block,
				     const int32_t *n_loads, const uint64_t *words,
				     const int64_t *word_base, uint32_t n, uint32_t n_slots,
				     uint32_t k)
{
	uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (t >= (uint64_t)n * k)
		return;
	uint32_t i = (uint32_t)(t / k), j = (uint32_t)(t % k);
	dst_idx[t] = -1;
	src_idx[t] = -1;
	if (j >= (uint32_t)n_loads[i] || load_block[t] < 0 || load_slot[t] < 0)
		return;
	/* The word lives in mapped host memory written by memsvc with release stores; a volatile
	 * 64-bit load reads it whole, and the gather that follows is ordered after it on the
	 * stream. */
	uint64_t w = *(const volatile uint64_t *)&words[word_base[i] + load_block[t]];
	uint32_t st = (uint32_t)(w >> 56);
	if (st == UNIT_RESIDENT) {
		dst_idx[t] = (int32_t)(i * n_slots + (uint32_t)load_slot[t]);
		src_idx[t] = (int32_t)(uint32_t)w;
	} else if (st != UNIT_ALLOCATED && misses) {
		atomicAdd(misses, 1);
	}
}

static int launch_status(void)
{
	cudaError_t e = cudaGetLastError();
	return e == cudaSuccess ? 0 : -EIO;
}

/* The map kernel for both tables, or false when the row does not fit shared memory. */
static bool sel_units_map(cudaStream_t st, int32_t *unit_idx, int32_t *unit_len,
			  const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
			  const int32_t *sel_b, uint32_t k_b, const int32_t *map,
			  const int32_t *n_tokens, uint32_t n, uint32_t n_kv, uint32_t n_slots,
			  uint32_t block)
{
	size_t smem = (size_t)n_slots * sizeof(int32_t);
	if (!map || smem > 48 * 1024)
		return false;
	uint32_t e = k + k_b;
	unsigned threads = e < 128 ? (e + 31) / 32 * 32 : 128;
	sel_units_map_kernel<<<n, threads, smem, st>>>(unit_idx, unit_len, sel, k, idx_b, len_b,
						      sel_b, k_b, map, n_tokens, n_kv, n_slots,
						      block);
	return true;
}

extern "C" int cuda_sel_units(cudaStream_t st, int32_t *unit_idx, int32_t *unit_len,
			      const int32_t *sel, const int32_t *map, const int32_t *n_tokens,
			      uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t k,
			      uint32_t block)
{
	if (!unit_idx || !unit_len || !n_tokens || !n_kv || !n_slots || !block)
		return -EINVAL;
	uint64_t total = (uint64_t)n * k;
	if (!total)
		return 0;
	if (sel_units_map(st, unit_idx, unit_len, sel, k, NULL, NULL, NULL, 0, map, n_tokens, n,
			  n_kv, n_slots, block))
		return launch_status();
	unsigned grid = (unsigned)((total + 255) / 256);
	sel_units_kernel<<<grid, 256, 0, st>>>(unit_idx, unit_len, sel, map, n_tokens, n, n_kv,
					       n_slots, k, block);
	return launch_status();
}

extern "C" int cuda_sel_units2(cudaStream_t st, int32_t *unit_idx, int32_t *unit_len,
			       const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
			       const int32_t *sel_b, uint32_t k_b, const int32_t *map,
			       const int32_t *n_tokens, uint32_t n, uint32_t n_kv, uint32_t n_slots,
			       uint32_t block)
{
	if (!unit_idx || !unit_len || !idx_b || !len_b || !n_tokens || !n_kv || !n_slots ||
	    !block)
		return -EINVAL;
	if (n && k && k_b &&
	    sel_units_map(st, unit_idx, unit_len, sel, k, idx_b, len_b, sel_b, k_b, map,
			  n_tokens, n, n_kv, n_slots, block))
		return launch_status();
	/* resident layout, an empty table or a row too large for shared memory: two calls */
	int rc = cuda_sel_units(st, unit_idx, unit_len, sel, map, n_tokens, n, n_kv, n_slots, k,
				block);
	return rc ? rc
		  : cuda_sel_units(st, idx_b, len_b, sel_b, map, n_tokens, n, n_kv, n_slots, k_b,
				   block);
}

extern "C" int cuda_resolve_loads(cudaStream_t st, int32_t *dst_idx, int32_t *src_idx,
				  int32_t *misses, const int32_t *load_slot,
				  const int32_t *load_block, const int32_t *n_loads,
				  const uint64_t *words, const int64_t *word_base, uint32_t n,
				  uint32_t n_slots, uint32_t k)
{
	if (!dst_idx || !src_idx || !load_slot || !load_block || !n_loads || !words || !word_base)
		return -EINVAL;
	uint64_t total = (uint64_t)n * k;
	if (!total)
		return 0;
	unsigned grid = (unsigned)((total + 255) / 256);
	resolve_loads_kernel<<<grid, 256, 0, st>>>(dst_idx, src_idx, misses, load_slot,
						   load_block, n_loads, words, word_base, n,
						   n_slots, k);
	return launch_status();
}
