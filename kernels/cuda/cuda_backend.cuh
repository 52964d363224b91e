/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CUDA backend object: one device, a compute and a copy stream, a cuBLAS handle and a
 * per-stream scratch buffer for ops whose contract passes no work buffer. kb_cuda_open builds
 * it and fills struct kb_ops with the kc_* entry points of the op families in this folder.
 */
#ifndef SPARDA_KERNELS_CUDA_CUDA_BACKEND_CUH
#define SPARDA_KERNELS_CUDA_CUDA_BACKEND_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdbool.h>

extern "C" {
#include "backend.h"
}

struct kc_backend {
	struct kb kb;
	int device;
	cudaStream_t st[KB_STREAM_COUNT];
	struct kc_green *green; /* SM partition of the streams (SPARDA_KCUDA_GATHER_SMS) or NULL */
	cublasHandle_t blas;
	void *scratch[KB_STREAM_COUNT]; /* grown on demand, never shrunk */
	size_t scratch_bytes[KB_STREAM_COUNT];
	uint32_t *counters[KB_STREAM_COUNT]; /* zeroed arrival counters, grown on demand */
	size_t counters_n[KB_STREAM_COUNT];
	void **dma_ptrs; /* copy_units_dma: [2 * dma_cap] dsts then srcs, and dma_sizes */
	size_t *dma_sizes, dma_cap;
	cudaStream_t dma_st[KB_DMA_STREAMS_MAX - 1]; /* copy_units_dma's further streams */
	cudaEvent_t dma_ev[KB_DMA_STREAMS_MAX]; /* [0]: the call's copies may start; [j]: done */
	bool
	    attn_mma; /* decode attention on tensor cores (default; SPARDA_KCUDA_ATTN=simt: fp32) */
	uint64_t mem_limit; /* kb_opts.mem_limit (0: none) */
};

struct kb_event {
	cudaEvent_t ev;
};

extern "C" {
/* True iff a CUDA device is visible and the runtime initialises (kb_cuda_available). */
bool kb_cuda_probe(void);
}

#endif
