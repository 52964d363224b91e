/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compressed keys of the CUDA backend: the prefill build of every complete entry plus the key
 * ring, and the decode append (kb_ops.ck_prefill, kb_ops.ck_append). Means are taken in fp32.
 */
#ifndef SPARDA_KERNELS_CUDA_CKEYS_CUH
#define SPARDA_KERNELS_CUDA_CKEYS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}

extern "C" {
int kc_ck_prefill(cudaStream_t st, uint16_t *ck, uint32_t cap, uint16_t *ring, const uint16_t *k,
		  uint32_t ld, uint32_t t, uint32_t n_kv, uint32_t d, const struct kb_sparse *sp);
int kc_ck_append(cudaStream_t st, uint16_t *ck, uint32_t cap, uint16_t *ring, const uint16_t *k,
		 uint32_t ld, const int32_t *pos, uint32_t b, uint32_t n_kv, uint32_t d,
		 const struct kb_sparse *sp);
}

#endif
