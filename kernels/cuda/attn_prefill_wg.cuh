/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefill attention with Hopper's warpgroup MMA (wgmma, sm_90a) for head_dim 128 and, when
 * block-sparse, blocks that are multiples of 64. Internal to attn_prefill.cu.
 */
#ifndef SPARDA_KERNELS_CUDA_ATTN_PREFILL_WG_CUH
#define SPARDA_KERNELS_CUDA_ATTN_PREFILL_WG_CUH

#include <cuda_runtime.h>
#include <stdint.h>

/* Probe whether this build has the sm_90a kernels for the current device and raise their
 * shared-memory limits; once per device. Not having them is not an error. */
int kc_wg_init(void);
/* True when the wgmma kernel is built for this device and handles the shape (and scale > 0). */
bool kc_wg_ok(uint32_t d, float scale, const int32_t *sel, uint32_t topk, uint32_t block);
int kc_wg_launch(cudaStream_t st, uint16_t *out, uint32_t ld_o, const uint16_t *q, uint32_t ld_q,
		 const uint16_t *k, const uint16_t *v, uint32_t ld_kv, uint32_t t, uint32_t p0,
		 uint32_t n_q, uint32_t n_kv, uint32_t d, float scale, const int32_t *sel,
		 uint32_t topk, uint32_t block);

#endif
