/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of the KV data movement: copy_units (the gather into cache slots and the
 * write-back to the arena) and kv_pack / kv_store, which place token rows into K|V units
 * (a unit is block rows of K then block rows of V, d bf16 each).
 */
#include <errno.h>
#include <string.h>

#include "cpu_internal.h"

int cpu_copy_units(struct kb *kb, enum kb_stream s, void *dst, const void *src,
		   const int32_t *dst_idx, const int32_t *src_idx, uint32_t n, size_t unit_bytes,
		   uint32_t n_ctas)
{
	/* The CUDA gather's alignment rules are checked here too, so misuse shows on CPU. */
	if (!cpu_stream_ok(s) || !dst || !src || !dst_idx || !src_idx || !unit_bytes ||
	    unit_bytes % 16 || (uintptr_t)dst % 16 || (uintptr_t)src % 16)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (n > 8)
	for (uint32_t i = 0; i < n; i++) {
		if (dst_idx[i] < 0 || src_idx[i] < 0)
			continue;
		memcpy((char *)dst + (size_t)dst_idx[i] * unit_bytes,
		       (const char *)src + (size_t)src_idx[i] * unit_bytes, unit_bytes);
	}
	return 0;
}

/* Host index lists are what the CPU reads anyway: the same copies, in order on one stream. */
int cpu_copy_units_dma(struct kb *kb, enum kb_stream s, void *dst, const void *src,
		       const int32_t *h_dst_idx, const int32_t *h_src_idx, uint32_t n,
		       size_t unit_bytes, uint32_t n_streams)
{
	if (n_streams > KB_DMA_STREAMS_MAX)
		return -EINVAL;
	return cpu_copy_units(kb, s, dst, src, h_dst_idx, h_src_idx, n, unit_bytes, 0);
}

/* Row r of head h's K and V: unit u, K half rows [0, block), V half rows [block, 2 * block). */
static void put_row(uint16_t *units, int32_t u, uint32_t r, const uint16_t *k, const uint16_t *v,
		    uint32_t d, uint32_t block)
{
	uint16_t *base = units + (size_t)u * 2 * block * d;

	memcpy(base + (size_t)r * d, k, d * sizeof(uint16_t));
	memcpy(base + (size_t)(block + r) * d, v, d * sizeof(uint16_t));
}

int cpu_kv_pack(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
		const uint16_t *k, const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t,
		uint32_t n_kv, uint32_t d, uint32_t block)
{
	if (!cpu_stream_ok(s) || !units || !unit_idx || !k || !v || !d || !block || !n_kv ||
	    ld < (uint64_t)n_kv * d)
		return -EINVAL;
#pragma omp parallel for num_threads(cpu_threads(kb)) if (t > 64)
	for (uint32_t i = 0; i < t; i++) {
		uint32_t p = t0 + i, bl = p / block - t0 / block;

		for (uint32_t h = 0; h < n_kv; h++) {
			int32_t u = unit_idx[(size_t)bl * n_kv + h];

			/* A negative unit index skips the head's rows of that block. */
			if (u >= 0)
				put_row(units, u, p % block, k + (size_t)i * ld + (size_t)h * d,
					v + (size_t)i * ld + (size_t)h * d, d, block);
		}
	}
	return 0;
}

int cpu_kv_store(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
		 const uint16_t *k, const uint16_t *v, uint32_t ld, const int32_t *pos, uint32_t b,
		 uint32_t n_kv, uint32_t d, uint32_t block)
{
	if (!cpu_stream_ok(s) || !units || !unit_idx || !k || !v || !pos || !d || !block ||
	    ld < (uint64_t)n_kv * d)
		return -EINVAL;
	for (uint32_t i = 0; i < b; i++)
		if (pos[i] < 0)
			return -EINVAL;
	for (uint32_t i = 0; i < b; i++) {
		for (uint32_t h = 0; h < n_kv; h++) {
			int32_t u = unit_idx[(size_t)i * n_kv + h];

			if (u >= 0)
				put_row(units, u, (uint32_t)pos[i] % block,
					k + (size_t)i * ld + (size_t)h * d,
					v + (size_t)i * ld + (size_t)h * d, d, block);
		}
	}
	return 0;
}
