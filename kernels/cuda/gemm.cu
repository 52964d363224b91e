/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuBLAS GEMM. Row-major C = A . W^T is column-major C^T = W^T(op T on W's [k, n] view) . A,
 * so the call swaps the operands instead of transposing data.
 */
#include "gemm.cuh"
#include "kc_common.cuh"

extern "C" {
#include "log.h"
}

extern "C" int kc_cublas_err(cublasStatus_t s, const char *what)
{
	static struct log_ratelimit rl;
	int e = s == CUBLAS_STATUS_ALLOC_FAILED	   ? -ENOMEM
		: s == CUBLAS_STATUS_INVALID_VALUE ? -EINVAL
		: s == CUBLAS_STATUS_NOT_SUPPORTED ? -EINVAL
						   : -EIO;
	log_write_rl(&rl, 1000, LOG_LEVEL_ERROR, "kcuda", "cublas call failed", "call=%s status=%d",
		     what, (int)s);
	return e;
}

extern "C" int kc_gemm(cublasHandle_t h, cudaStream_t st, uint32_t m, uint32_t n, uint32_t k,
		       const uint16_t *a, uint32_t lda, const uint16_t *w, uint32_t ldw, void *c,
		       uint32_t ldc, bool c_f32, float alpha, float beta)
{
	if (m == 0 || n == 0)
		return 0;
	if (lda < k || ldw < k || ldc < n)
		return -EINVAL;
	cublasStatus_t s = cublasSetStream(h, st);
	if (s != CUBLAS_STATUS_SUCCESS)
		return kc_cublas_err(s, "cublasSetStream");
	if (k == 0) {
		/* C = beta * C (geam, in place); bf16 C with k == 0 never occurs in a model. */
		const float zero = 0.0f;
		if (!c_f32)
			return -EINVAL;
		s = cublasSgeam(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, &beta, (float *)c, ldc, &zero,
				(float *)c, ldc, (float *)c, ldc);
		if (s != CUBLAS_STATUS_SUCCESS)
			return kc_cublas_err(s, "cublasSgeam");
		return 0;
	}
	s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, w,
			 CUDA_R_16BF, (int)ldw, a, CUDA_R_16BF, (int)lda, &beta, c,
			 c_f32 ? CUDA_R_32F : CUDA_R_16BF, (int)ldc, CUBLAS_COMPUTE_32F,
			 CUBLAS_GEMM_DEFAULT);
	if (s != CUBLAS_STATUS_SUCCESS)
		return kc_cublas_err(s, "cublasGemmEx");
	return 0;
}
