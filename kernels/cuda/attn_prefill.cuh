/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefill attention of the CUDA backend: causal dense or block-sparse (per query block, the KV
 * blocks of sel), FlashAttention-2 style tiles on tensor cores (kb_ops.attn_prefill).
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_PREFILL_CUH
#define SPARDA_KERNELS_CUDA_ATTN_PREFILL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
/* Raise the kernel's dynamic shared-memory limit; call once per device. */
int kc_attn_prefill_init(void);
int kc_attn_prefill(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q, uint32_t ld_q,
		    const uint16_t *k, const uint16_t *v, uint32_t ld_kv, uint32_t t, uint32_t p0,
		    uint32_t n_q, uint32_t n_kv, uint32_t d, float scale, const int32_t *sel,
		    uint32_t topk, uint32_t block);
}

#endif
