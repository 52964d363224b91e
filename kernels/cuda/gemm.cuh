/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GEMM of the CUDA backend through cuBLAS: C[m, n] = alpha * A[m, k] . W[n, k]^T + beta * C,
 * A and W bf16 row-major, C fp32 or bf16, fp32 accumulation (kb_ops.gemm).
 */
#ifndef SPARDA_KERNELS_CUDA_GEMM_CUH
#define SPARDA_KERNELS_CUDA_GEMM_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdbool.h>
#include <stdint.h>

extern "C" {
/* Enqueue on st (the handle's stream is set to st). Returns 0, -EINVAL, -ENOMEM or -EIO. */
int kc_gemm(cublasHandle_t h, cudaStream_t st, uint32_t m, uint32_t n, uint32_t k,
	    const uint16_t *a, uint32_t lda, const uint16_t *w, uint32_t ldw, void *c, uint32_t ldc,
	    bool c_f32, float alpha, float beta);
/* Translate a cuBLAS status to -errno (logged once per call site, rate-limited). */
int kc_cublas_err(cublasStatus_t s, const char *what);
}

#endif
