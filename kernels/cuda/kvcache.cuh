/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KV storage and movement of the CUDA backend: the block-cache diff, the persistent unit
 * gather/scatter over registered host memory, and packing of prefill and decode K/V into
 * units (kb_ops.cache_diff, copy_units, copy_units_bulk in copy_bulk.cu, kv_pack, kv_store).
 */
#ifndef SPARDA_KERNELS_CUDA_KVCACHE_CUH
#define SPARDA_KERNELS_CUDA_KVCACHE_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
int kc_cache_diff(cudaStream_t st, int32_t *map, int32_t *age, int32_t step, const int32_t *sel,
		  const int32_t *protect, uint32_t n, uint32_t n_slots, uint32_t k,
		  int32_t *load_slot, int32_t *load_block, int32_t *n_loads, int32_t *hits);
int kc_copy_units(cudaStream_t st, void *dst, const void *src, const int32_t *dst_idx,
		  const int32_t *src_idx, uint32_t n, size_t unit_bytes, uint32_t n_ctas);
int kc_copy_units_bulk(cudaStream_t st, void *dst, const void *src, const int32_t *dst_idx,
		       const int32_t *src_idx, uint32_t n, size_t unit_bytes, uint32_t n_ctas);
int kc_kv_pack(cudaStream_t st, uint16_t *units, const int32_t *unit_idx, const uint16_t *k,
	       const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t, uint32_t n_kv, uint32_t d,
	       uint32_t block);
int kc_kv_store(cudaStream_t st, uint16_t *units, const int32_t *unit_idx, const uint16_t *k,
		const uint16_t *v, uint32_t ld, const int32_t *pos, uint32_t b, uint32_t n_kv,
		uint32_t d, uint32_t block);
}

#endif
