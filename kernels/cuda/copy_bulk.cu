// SPDX-License-Identifier: Apache-2.0
/*
 * copy_units through the bulk-copy engine (TMA, sm_90): one thread per CTA issues
 * cp.async.bulk copies of the units' chunks from their source into shared memory and from
 * there to their destination, STAGES chunks in flight per CTA, completion through an mbarrier
 * per stage (loads) and bulk groups (stores). The SMs issue a few instructions per 8 KiB chunk
 * instead of a 16-byte load and store per thread: the candidate against the gather kernel's
 * interference with the layer's kernels (docs/perf-notes.md). Same contract as copy_units; on
 * a device before sm_90 it is copy_units.
 */
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

#include "kc_common.cuh"
#include "kvcache.cuh"

enum { KC_BULK_STAGES = 4, KC_BULK_CHUNK = 8192 };

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
static __device__ __forceinline__ uint32_t kc_smem_addr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* Wait for phase `parity` of the mbarrier; a copy that never lands traps after ~5 s instead of
 * hanging the stream (the launch then fails). */
static __device__ __forceinline__ void kc_bulk_wait(uint32_t bar, uint32_t parity)
{
	long long t0 = clock64();
	for (;;) {
		uint32_t done;
		asm volatile("{\n\t.reg .pred p;\n\t"
			     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
			     "selp.u32 %0, 1, 0, p;\n\t}"
			     : "=r"(done)
			     : "r"(bar), "r"(parity)
			     : "memory");
		if (done)
			return;
		if (clock64() - t0 > 10000000000LL)
			__trap();
	}
}

/* The CTA's walk over its units (i = blockIdx.x, + gridDim.x, ...) chunk by chunk, skipping
 * entries with an index < 0. */
struct kc_bulk_walk {
	uint32_t i, off;
};

static __device__ __forceinline__ bool kc_bulk_valid(const kc_bulk_walk &w, uint32_t n)
{
	return w.i < n;
}

static __device__ __forceinline__ void kc_bulk_skip(kc_bulk_walk &w, const int32_t *dst_idx,
						    const int32_t *src_idx, uint32_t n)
{
	while (w.i < n && (dst_idx[w.i] < 0 || src_idx[w.i] < 0))
		w.i += gridDim.x;
}

static __device__ __forceinline__ void kc_bulk_next(kc_bulk_walk &w, const int32_t *dst_idx,
						    const int32_t *src_idx, uint32_t n,
						    uint32_t unit_bytes)
{
	w.off += KC_BULK_CHUNK;
	if (w.off < unit_bytes)
		return;
	w.off = 0;
	w.i += gridDim.x;
	kc_bulk_skip(w, dst_idx, src_idx, n);
}
#endif

__global__ void __launch_bounds__(32)
    kc_copy_units_bulk_kernel(uint8_t *dst, const uint8_t *src, const int32_t *dst_idx,
			      const int32_t *src_idx, uint32_t n, uint32_t unit_bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	__shared__ __align__(128) uint8_t buf[KC_BULK_STAGES][KC_BULK_CHUNK];
	__shared__ __align__(8) uint64_t bar[KC_BULK_STAGES];
	uint8_t *sdst[KC_BULK_STAGES];
	uint32_t ssize[KC_BULK_STAGES];

	if (threadIdx.x != 0)
		return;
	for (int s = 0; s < KC_BULK_STAGES; s++)
		asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(kc_smem_addr(&bar[s]))
			     : "memory");
	asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");

	kc_bulk_walk ld = {blockIdx.x, 0};
	kc_bulk_skip(ld, dst_idx, src_idx, n);
	uint32_t loaded = 0, stored = 0;
	/* Chunk `loaded` into stage loaded % STAGES: the mbarrier expects its bytes. */
	auto issue_load = [&]() {
		uint32_t st = loaded % KC_BULK_STAGES, left = unit_bytes - ld.off;
		uint32_t size = left < KC_BULK_CHUNK ? left : KC_BULK_CHUNK;
		const uint8_t *from = src + (size_t)src_idx[ld.i] * unit_bytes + ld.off;
		uint32_t b = kc_smem_addr(&bar[st]);
		sdst[st] = dst + (size_t)dst_idx[ld.i] * unit_bytes + ld.off;
		ssize[st] = size;
		asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b),
			     "r"(size)
			     : "memory");
		asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
			     "[%0], [%1], %2, [%3];" ::"r"(kc_smem_addr(buf[st])),
			     "l"(from), "r"(size), "r"(b)
			     : "memory");
		loaded++;
		kc_bulk_next(ld, dst_idx, src_idx, n, unit_bytes);
	};
	while (loaded < KC_BULK_STAGES && kc_bulk_valid(ld, n))
		issue_load();
	while (stored < loaded) {
		uint32_t st = stored % KC_BULK_STAGES;
		kc_bulk_wait(kc_smem_addr(&bar[st]), (stored / KC_BULK_STAGES) & 1);
		/* the landed chunk, as this thread sees it, ordered before the bulk store's read */
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
		asm volatile(
		    "cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(sdst[st]),
		    "r"(kc_smem_addr(buf[st])), "r"(ssize[st])
		    : "memory");
		asm volatile("cp.async.bulk.commit_group;" ::: "memory");
		stored++;
		if (kc_bulk_valid(ld, n)) {
			/* the next load takes this stage: its store must have read it first */
			asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
			issue_load();
		}
	}
	asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
#endif
}

extern "C" int kc_copy_units_bulk(cudaStream_t st, void *dst, const void *src,
				  const int32_t *dst_idx, const int32_t *src_idx, uint32_t n,
				  size_t unit_bytes, uint32_t n_ctas)
{
	if (unit_bytes % 16 || ((uintptr_t)dst | (uintptr_t)src) % 16 || unit_bytes > UINT32_MAX)
		return -EINVAL;
	if (n == 0 || unit_bytes == 0)
		return 0;
	static int major = -1; /* one device per process */
	if (major < 0) {
		int dev = 0;
		if (cudaGetDevice(&dev) != cudaSuccess ||
		    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
			cudaSuccess)
			return -EIO;
	}
	if (major < 9) /* n_ctas 0: the kernel's default, 16 */
		return kc_copy_units(st, dst, src, dst_idx, src_idx, n, unit_bytes, n_ctas);
	if (n_ctas == 0) /* the full rate from 8 (docs/perf-notes.md, "The bulk-copy gather") */
		n_ctas = 8;
	if (n_ctas > n)
		n_ctas = n;
	kc_copy_units_bulk_kernel<<<n_ctas, 32, 0, st>>>((uint8_t *)dst, (const uint8_t *)src,
							 dst_idx, src_idx, n, (uint32_t)unit_bytes);
	KC_LAUNCHED("copy_units_bulk");
	return 0;
}
