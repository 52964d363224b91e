/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Block selection of the CUDA backend: decode scores (Forecast raw dot or the original
 * multi-head softmax selector), pooling + forced blocks + exact top-k, and the tiled prefill
 * selection (kb_ops.score_decode, select_decode, select_prefill, select_prefill_work).
 */
#ifndef SPARDA_KERNELS_CUDA_SELECT_CUH
#define SPARDA_KERNELS_CUDA_SELECT_CUH

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}

extern "C" {
/* Raise shared-memory limits of the selection kernels; call once per device. */
int kc_select_init(void);
/* Bytes of scratch score_decode needs (the original selector's per-chunk softmax stats). */
size_t kc_score_decode_scratch(uint32_t b, uint32_t n_q, uint32_t cap);
int kc_score_decode(cudaStream_t st, void *scratch, float *scores, const uint16_t *q, uint32_t ld,
		    const uint16_t *ck, uint32_t cap, const int32_t *n_entries, uint32_t b,
		    uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale);
int kc_select_decode(cudaStream_t st, int32_t *sel, const float *scores, uint32_t cap,
		     const int32_t *n_entries, const int32_t *n_blocks, uint32_t b, uint32_t n_kv,
		     const struct kb_sparse *sp);
size_t kc_select_prefill_work(uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
			      const struct kb_sparse *sp);
int kc_select_prefill(cudaStream_t st, int32_t *sel, const uint16_t *q, uint32_t ld, uint32_t t,
		      uint32_t p0, const uint16_t *ck, uint32_t cap, uint32_t n_q, uint32_t n_kv,
		      uint32_t d, bool original, float scale, const struct kb_sparse *sp,
		      void *work);
}

#endif
