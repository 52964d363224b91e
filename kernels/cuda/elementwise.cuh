/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Elementwise ops and norms of the CUDA backend: embedding lookup, fused residual add + RMSNorm,
 * residual add, RoPE, SwiGLU and argmax. Semantics are those of the same-named kb_ops entries in
 * kernels/backend.h; every function enqueues on `st` and returns 0 or -errno.
 */
#ifndef SPARDA_KERNELS_CUDA_ELEMENTWISE_CUH
#define SPARDA_KERNELS_CUDA_ELEMENTWISE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
int kc_embed(cudaStream_t st, float *out, const uint16_t *table, const int32_t *ids, uint32_t n,
	     uint32_t hidden, uint32_t vocab, float scale);
int kc_add_rmsnorm(cudaStream_t st, float *resid, const uint16_t *delta, uint32_t ld_delta,
		   float delta_scale, const uint16_t *w, uint16_t *out, uint32_t n, uint32_t hidden,
		   float eps);
int kc_add_residual(cudaStream_t st, float *resid, const uint16_t *delta, uint32_t ld_delta,
		    float delta_scale, uint32_t n, uint32_t hidden);
int kc_rope(cudaStream_t st, uint16_t *x, uint32_t ld, uint32_t n, uint32_t n_heads,
	    uint32_t head_dim, const int32_t *pos, const float *inv_freq, float mscale);
int kc_swiglu(cudaStream_t st, uint16_t *out, const uint16_t *gu, uint32_t n, uint32_t ff);
int kc_argmax(cudaStream_t st, int32_t *out, const float *logits, uint32_t n, uint32_t vocab);
}

#endif
