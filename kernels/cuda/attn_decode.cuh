/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decode attention of the CUDA backend: flash-decoding with split-K over units (the slot cache)
 * or over a contiguous cache, one CTA per (split, KV head, sequence) serving all query heads of
 * the group so K and V are read once (kb_ops.attn_decode, attn_decode_dense).
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_DECODE_CUH
#define SPARDA_KERNELS_CUDA_ATTN_DECODE_CUH

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
/* Once per process, before the first launch: kernel attributes (-errno on a CUDA error). */
int kc_attn_decode_init(void);
size_t kc_attn_decode_counters(uint32_t b, uint32_t n_q, uint32_t n_kv);
size_t kc_attn_decode_work(uint32_t b, uint32_t n_q, uint32_t n_units, uint32_t d);
int kc_attn_decode(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q, uint32_t ld_q,
		   const uint16_t *units, const int32_t *unit_idx, const int32_t *unit_len,
		   uint32_t n_units, uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d,
		   uint32_t block, float scale, void *work, bool mma, uint32_t *cnt);
/*
 * mma: use the tensor-core kernel where it applies (d 64 or 128), else the fp32 one; both write
 * the same partials. cnt: kc_attn_decode_counters(b, n_q, n_kv) zeroed words owned by the
 * stream (left zeroed), used when SPARDA_KCUDA_MERGE=fused; may be NULL.
 * kc_attn_decode_dense_scratch: the bytes attn_decode_dense needs (its contract passes no size, so
 * the backend owns that buffer).
 */
size_t kc_attn_decode_dense_scratch(uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t t_cap,
				    uint32_t d);
int kc_attn_decode_dense(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q,
			 uint32_t ld_q, const uint16_t *kc, const uint16_t *vc, uint32_t t_cap,
			 const int32_t *kv_len, uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d,
			 float scale, void *scratch, bool mma, uint32_t *cnt);
}

#endif
