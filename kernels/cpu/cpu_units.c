/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of the two table ops between selection and data movement: sel_units (a
 * selection -> the attention unit table) and resolve_loads (a cache_diff load list -> the
 * copy_units index lists, through the memsvc residency words).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#include "backend.h"
#include "shm_abi.h"

int cpu_sel_units(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
		  const int32_t *sel, const int32_t *map, const int32_t *n_tokens, uint32_t n,
		  uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t block)
{
	if (!unit_idx || !unit_len || !n_tokens || !n_kv || !n_slots || !block)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		int64_t tokens = n_tokens[i / n_kv];
		for (uint32_t j = 0; j < k; j++) {
			int64_t m = sel ? sel[(size_t)i * k + j] : (int64_t)j;
			int32_t idx = -1, len = 0;

			if (m >= 0 && m * block < tokens && (map || m < n_slots)) {
				if (map) {
					for (uint32_t sl = 0; sl < n_slots; sl++) {
						if (map[(size_t)i * n_slots + sl] == m) {
							idx = (int32_t)(i * n_slots + sl);
							break;
						}
					}
				} else {
					idx = (int32_t)(i * n_slots + m);
				}
				if (idx >= 0) {
					int64_t rows = tokens - m * block;
					len = (int32_t)(rows < block ? rows : block);
				}
			}
			unit_idx[(size_t)i * k + j] = idx;
			unit_len[(size_t)i * k + j] = len;
		}
	}
	return 0;
}

int cpu_sel_units2(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
		   const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
		   const int32_t *sel_b, uint32_t k_b, const int32_t *map, const int32_t *n_tokens,
		   uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t block)
{
	int rc = cpu_sel_units(kb, s, unit_idx, unit_len, sel, map, n_tokens, n, n_kv, n_slots, k,
			       block);
	if (rc)
		return rc;
	return cpu_sel_units(kb, s, idx_b, len_b, sel_b, map, n_tokens, n, n_kv, n_slots, k_b,
			     block);
}

int cpu_resolve_loads(struct kb *kb, enum kb_stream s, int32_t *dst_idx, int32_t *src_idx,
		      int32_t *misses, const int32_t *load_slot, const int32_t *load_block,
		      const int32_t *n_loads, const uint64_t *words, const int64_t *word_base,
		      uint32_t n, uint32_t n_slots, uint32_t k)
{
	return kb_resolve_loads_host(dst_idx, src_idx, misses, load_slot, load_block, n_loads,
				     words, word_base, n, n_slots, k);
}

int kb_resolve_loads_host(int32_t *dst_idx, int32_t *src_idx, int32_t *misses,
			  const int32_t *load_slot, const int32_t *load_block, const int32_t *n_loads,
			  const uint64_t *words, const int64_t *word_base, uint32_t n,
			  uint32_t n_slots, uint32_t k)
{
	if (!dst_idx || !src_idx || !load_slot || !load_block || !n_loads || !words || !word_base)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < k; j++) {
			size_t o = (size_t)i * k + j;
			dst_idx[o] = -1;
			src_idx[o] = -1;
			if (j >= (uint32_t)n_loads[i] || load_block[o] < 0 || load_slot[o] < 0)
				continue;
			/* memsvc stores the word with release; pair it with an acquire load. */
			const _Atomic uint64_t *wp =
				(const _Atomic uint64_t *)&words[word_base[i] + load_block[o]];
			uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
			enum sp_unit_state st = sp_unit_word_state(w);
			if (st == SP_UNIT_RESIDENT) {
				dst_idx[o] = (int32_t)(i * n_slots + (uint32_t)load_slot[o]);
				src_idx[o] = (int32_t)sp_unit_word_slot(w);
			} else if (st != SP_UNIT_ALLOCATED && misses) {
				(*misses)++;
			}
		}
	}
	return 0;
}
