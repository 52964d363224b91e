/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inline PTX for Hopper's warpgroup MMA (wgmma, sm_90a): shared-memory matrix descriptors for
 * 128-byte swizzled tiles, the fence / commit / wait of the asynchronous MMAs, the async-proxy
 * fence that makes cp.async writes visible to them, and m64n64k16 / m64n128k16 bf16 MMAs with
 * fp32 accumulators and A in registers. KC_HAVE_WGMMA is defined only when compiling device code
 * for sm_90a; elsewhere the MMA wrappers trap, so the host side probes for it first (see
 * kc_wg_init in attn_prefill_wg.cu).
 *
 * Tile layout (what the descriptors describe): a tile of R rows x C bf16 columns (C a multiple of
 * 64) is stored as C / 64 column blocks of R rows x 128 bytes; within a block, the 16-byte chunk c
 * of row r sits at r * 128 + ((c ^ (r % 8)) * 16). Tiles start on 1024-byte boundaries. K-major
 * (B = K^T from K[keys][d]): rows 8 apart are SBO = 1024 bytes apart; a k step of 16 columns
 * advances the start by 32 bytes inside a block. N-major (B = V[keys][d]): 8-row groups along K
 * are SBO = 1024 apart, 64-column blocks along N are LBO = R * 128 apart.
 */
#ifndef SPARDA_KERNELS_CUDA_KC_WGMMA_CUH
#define SPARDA_KERNELS_CUDA_KC_WGMMA_CUH

#include <stdint.h>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KC_HAVE_WGMMA 1
#endif

/* Byte offset of (row r, 16-byte chunk c) in a swizzled tile of R rows. */
static __device__ __forceinline__ uint32_t kc_sw128(uint32_t rows, uint32_t r, uint32_t c)
{
	return (c / 8) * rows * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4);
}

/* A 128-byte-swizzle descriptor: start address, leading and stride byte offsets. */
static __device__ __forceinline__ uint64_t kc_wg_desc(const void *p, uint32_t lbo, uint32_t sbo)
{
	uint64_t a = (uint32_t)__cvta_generic_to_shared(p);
	return ((a & 0x3ffff) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) |
	       (1ull << 62);
}

static __device__ __forceinline__ void kc_wg_fence(void)
{
#ifdef KC_HAVE_WGMMA
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void kc_wg_commit(void)
{
#ifdef KC_HAVE_WGMMA
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N> static __device__ __forceinline__ void kc_wg_wait(void)
{
#ifdef KC_HAVE_WGMMA
	asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/* cp.async / st.shared writes of this thread become visible to wgmma's (async proxy) reads. */
static __device__ __forceinline__ void kc_fence_async_smem(void)
{
#ifdef KC_HAVE_WGMMA
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
/* Pin N accumulator registers in program order around the asynchronous MMAs. */
template <int N> static __device__ __forceinline__ void kc_wg_keep(float *r)
{
#pragma unroll
	for (int i = 0; i < N; i++)
		asm volatile("" : "+f"(r[i])::"memory");
}

/* D[64 x 64] (+)= A[64 x 16] . B[16 x 64]: A as registers (the mma.sync A fragment of each
 * warp's 16 rows), B through a descriptor, K-major (TB 0) or N-major (TB 1); acc 0 overwrites D. */
template <int TB>
static __device__ __forceinline__ void kc_wg_m64n64(float *d, const uint32_t *a, uint64_t db,
						    int acc)
{
#ifdef KC_HAVE_WGMMA
	asm volatile(
	    "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
	    "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
	    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
	    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
	    "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
	    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
	      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
	      "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
	      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
	      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
	      "+f"(d[31])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc), "n"(TB));
#else
	__trap();
#endif
}

/* D[64 x 128] (+)= A[64 x 16] . B[16 x 128]: A as registers (the mma.sync A fragment of each
 * warp's 16 rows), B through a descriptor, K-major (TB 0) or N-major (TB 1); acc 0 overwrites D. */
template <int TB>
static __device__ __forceinline__ void kc_wg_m64n128(float *d, const uint32_t *a, uint64_t db,
						     int acc)
{
#ifdef KC_HAVE_WGMMA
	asm volatile(
	    "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
	    "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
	    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
	    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
	    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
	    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
	    "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
	    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
	      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
	      "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
	      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
	      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
	      "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
	      "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
	      "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
	      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
	      "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
	      "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc), "n"(TB));
#else
	__trap();
#endif
}

#endif
