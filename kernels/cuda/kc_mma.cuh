/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inline PTX shared by the tensor-core attention kernels (sm_80+): cp.async 16-byte copies into
 * shared memory, ldmatrix (plain and transposed), mma.sync m16n8k16 bf16 with fp32 accumulators,
 * and the fp32 pair to bf16 pair packing that turns accumulators into A fragments.
 */
#ifndef SPARDA_KERNELS_CUDA_KC_MMA_CUH
#define SPARDA_KERNELS_CUDA_KC_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "kc_common.cuh"

/* 16 bytes global -> shared; zero-fills the destination when !ok (src is then not read). */
static __device__ __forceinline__ void kc_cp16(void *dst, const void *src, bool ok)
{
	uint32_t sa = (uint32_t)__cvta_generic_to_shared(dst);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(src),
		     "r"(ok ? 16 : 0));
}
static __device__ __forceinline__ void kc_cp_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> static __device__ __forceinline__ void kc_cp_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void kc_ldm4(uint32_t *r, const void *p)
{
	uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(a));
}
static __device__ __forceinline__ void kc_ldm4t(uint32_t *r, const void *p)
{
	uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(a));
}

static __device__ __forceinline__ void kc_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
#ifdef KC_NO_BF16_MMA
	__trap();
#else
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
		     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* Two floats to a bf16 pair (round to nearest even, as kc_tobf), lo in the low half. */
static __device__ __forceinline__ uint32_t kc_bf2(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}

#endif
