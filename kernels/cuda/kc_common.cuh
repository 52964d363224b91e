/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by every CUDA op family: CUDA error translation to -errno (one rate-limited
 * log line naming the failing call), the launch check, bf16 conversions and warp reductions.
 * Only files under kernels/cuda include this header.
 */
#ifndef SPARDA_KERNELS_CUDA_KC_COMMON_CUH
#define SPARDA_KERNELS_CUDA_KC_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>

/*
 * bf16 tensor-core fragments (WMMA) exist from sm_80; a build for an older target (CMake's
 * default architecture when none is configured) still compiles, and those kernels trap.
 */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define KC_NO_BF16_MMA 1
#endif

/* Translate a CUDA error to -errno, logging the call that failed (rate-limited). */
int kc_err(cudaError_t e, const char *what);

/* Evaluate a CUDA call; on failure return its translation from the enclosing function. */
#define KC_CHECK(call)                                                                             \
	do {                                                                                       \
		cudaError_t kc_e_ = (call);                                                        \
		if (kc_e_ != cudaSuccess)                                                          \
			return kc_err(kc_e_, #call);                                               \
	} while (0)

/* After a kernel launch: report a bad configuration or a sticky device error. */
#define KC_LAUNCHED(name) KC_CHECK(cudaGetLastError())

static __device__ __forceinline__ float kc_bf(uint16_t h)
{
	return __uint_as_float((uint32_t)h << 16);
}

/* Round to nearest even, NaN kept quiet: the same rounding as kb_f32_to_bf16 on the host. */
static __device__ __forceinline__ uint16_t kc_tobf(float f)
{
	uint32_t u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

/* Unpack 8 bf16 held in a 16-byte vector. */
static __device__ __forceinline__ void kc_unpack8(uint4 v, float *f)
{
	const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
	for (int i = 0; i < 4; i++) {
		f[2 * i] = __uint_as_float(w[i] << 16);
		f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
	}
}

static __device__ __forceinline__ float kc_warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ __forceinline__ float kc_warp_max(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Map a float to an unsigned key with the same order (-inf lowest, +inf highest). */
static __device__ __forceinline__ uint32_t kc_fkey(float f)
{
	uint32_t u = __float_as_uint(f);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/*
 * Exclusive prefix count of `f` over the CTA in thread order; *total gets the CTA's count.
 * Every thread must call it (it holds barriers); wsum holds blockDim.x / 32 words.
 */
static __device__ __forceinline__ uint32_t kc_block_scan(bool f, uint32_t *total, uint32_t *wsum)
{
	uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	uint32_t bal = __ballot_sync(0xffffffffu, f);
	uint32_t pre = __popc(bal & ((1u << lane) - 1u));
	if (lane == 0)
		wsum[warp] = __popc(bal);
	__syncthreads();
	uint32_t off = 0, tot = 0;
	for (uint32_t w = 0; w < nw; w++) {
		off += w < warp ? wsum[w] : 0;
		tot += wsum[w];
	}
	__syncthreads();
	*total = tot;
	return off + pre;
}

static inline unsigned kc_div_up(size_t a, size_t b)
{
	return (unsigned)((a + b - 1) / b);
}

#endif
