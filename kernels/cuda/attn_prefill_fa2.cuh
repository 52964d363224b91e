/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FlashAttention-2 style prefill (mma.sync m16n8k16 bf16, ldmatrix, cp.async double-buffered
 * K/V tiles, Q and O and the online softmax in registers), for head_dim 64 or 128 and, when
 * block-sparse, blocks that are multiples of 64. Internal to attn_prefill.cu.
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_PREFILL_FA2_CUH
#define SPARDA_KERNELS_CUDA_ATTN_PREFILL_FA2_CUH

#include <cuda_runtime.h>
#include <stdint.h>

/* Raise the dynamic shared-memory limits of the kernels; once per device. */
int kc_fa2_init(void);
/* True when kc_fa2_launch handles the shape (else the caller uses the WMMA kernel). */
bool kc_fa2_ok(uint32_t d, const int32_t *sel, uint32_t topk, uint32_t block);
int kc_fa2_launch(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q,
		  uint32_t ld_q, const uint16_t *k, const uint16_t *v, uint32_t ld_kv, uint32_t t,
		  uint32_t p0, uint32_t n_q, uint32_t n_kv, uint32_t d, float scale,
		  const int32_t *sel, uint32_t topk, uint32_t block);

#endif
