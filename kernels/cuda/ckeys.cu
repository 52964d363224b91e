/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compressed keys: entry j of a head is the fp32 mean of keys [stride*j, stride*j + kernel).
 * Prefill: a flat grid over (head, entry, column), reads are coalesced along the column.
 * Decode: one CTA per (sequence, head); each thread owns one column of the ring, so the key it
 * just wrote is visible to its own mean without a barrier.
 */
#include "ckeys.cuh"
#include "kc_common.cuh"

__global__ void kc_ck_build_kernel(uint16_t *ck, uint32_t cap, const uint16_t *k, uint32_t ld,
				   uint32_t n_ent, uint32_t n_kv, uint32_t d, uint32_t kern,
				   uint32_t stride)
{
	size_t total = (size_t)n_kv * n_ent * d;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t c = (uint32_t)(i % d);
		size_t hj = i / d;
		uint32_t j = (uint32_t)(hj % n_ent), h = (uint32_t)(hj / n_ent);
		const uint16_t *src = k + (size_t)stride * j * ld + (size_t)h * d + c;
		float s = 0.0f;
		for (uint32_t r = 0; r < kern; r++)
			s += kc_bf(src[(size_t)r * ld]);
		ck[((size_t)h * cap + j) * d + c] = kc_tobf(s / (float)kern);
	}
}

__global__ void kc_ck_ring_kernel(uint16_t *ring, const uint16_t *k, uint32_t ld, uint32_t t,
				  uint32_t n_kv, uint32_t d, uint32_t kern)
{
	uint32_t first = t > kern ? t - kern : 0;
	size_t total = (size_t)(t - first) * n_kv * d;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t c = (uint32_t)(i % d);
		size_t ph = i / d;
		uint32_t h = (uint32_t)(ph % n_kv), p = first + (uint32_t)(ph / n_kv);
		ring[((size_t)h * kern + p % kern) * d + c] = k[(size_t)p * ld + (size_t)h * d + c];
	}
}

static unsigned kc_flat_grid(size_t total)
{
	unsigned g = kc_div_up(total, 256);
	return g > 65535u * 4 ? 65535u * 4 : (g ? g : 1);
}

extern "C" int kc_ck_prefill(cudaStream_t st, uint16_t *ck, uint32_t cap, uint16_t *ring,
			     const uint16_t *k, uint32_t ld, uint32_t t, uint32_t n_kv, uint32_t d,
			     const struct kb_sparse *sp)
{
	if (!sp || sp->ck_kernel == 0 || sp->ck_stride == 0)
		return -EINVAL;
	if (t == 0 || n_kv == 0 || d == 0)
		return 0;
	uint32_t n_ent = kb_ck_entries(sp, t);
	if (n_ent > cap)
		return -EINVAL;
	if (n_ent) {
		size_t total = (size_t)n_kv * n_ent * d;
		kc_ck_build_kernel<<<kc_flat_grid(total), 256, 0, st>>>(
		    ck, cap, k, ld, n_ent, n_kv, d, sp->ck_kernel, sp->ck_stride);
		KC_LAUNCHED("ck_build");
	}
	uint32_t keep = t < sp->ck_kernel ? t : sp->ck_kernel;
	kc_ck_ring_kernel<<<kc_flat_grid((size_t)keep * n_kv * d), 256, 0, st>>>(
	    ring, k, ld, t, n_kv, d, sp->ck_kernel);
	KC_LAUNCHED("ck_ring");
	return 0;
}

__global__ void kc_ck_append_kernel(uint16_t *ck, uint32_t cap, uint16_t *ring, const uint16_t *k,
				    uint32_t ld, const int32_t *pos, uint32_t n_kv, uint32_t d,
				    uint32_t kern, uint32_t stride)
{
	uint32_t b = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
	uint32_t p = (uint32_t)pos[b];
	uint16_t *rg = ring + (size_t)blockIdx.x * kern * d;
	bool emit = p + 1 >= kern && (p + 1 - kern) % stride == 0;
	uint32_t j = emit ? (p + 1 - kern) / stride : 0;
	for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
		rg[(size_t)(p % kern) * d + c] = k[(size_t)b * ld + (size_t)h * d + c];
		if (!emit || j >= cap)
			continue;
		float s = 0.0f;
		for (uint32_t r = 0; r < kern; r++)
			s += kc_bf(rg[(size_t)r * d + c]);
		ck[((size_t)blockIdx.x * cap + j) * d + c] = kc_tobf(s / (float)kern);
	}
}

extern "C" int kc_ck_append(cudaStream_t st, uint16_t *ck, uint32_t cap, uint16_t *ring,
			    const uint16_t *k, uint32_t ld, const int32_t *pos, uint32_t b,
			    uint32_t n_kv, uint32_t d, const struct kb_sparse *sp)
{
	if (!sp || sp->ck_kernel == 0 || sp->ck_stride == 0)
		return -EINVAL;
	if (b == 0 || n_kv == 0 || d == 0)
		return 0;
	unsigned threads = d < 256 ? 128 : 256;
	kc_ck_append_kernel<<<b * n_kv, threads, 0, st>>>(ck, cap, ring, k, ld, pos, n_kv, d,
							  sp->ck_kernel, sp->ck_stride);
	KC_LAUNCHED("ck_append");
	return 0;
}
