/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU reference of cache_diff: compare a new block selection with the blocks a slot cache
 * holds, keep the hits (and the protected slot) in place, and hand the free slots to the new
 * blocks in a fixed order so that every backend produces the same map and load list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* Index of block m in the ascending selection sel[0, nsel), or -1. */
static int32_t sel_find(const int32_t *sel, uint32_t nsel, int32_t m)
{
	uint32_t lo = 0, hi = nsel;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (sel[mid] == m)
			return (int32_t)mid;
		if (sel[mid] < m)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Selected entries of a row: strictly ascending ids >= 0, then only -1 padding. */
static int sel_count(const int32_t *sel, uint32_t k, uint32_t *nsel)
{
	uint32_t n = 0;

	while (n < k && sel[n] >= 0) {
		if (n && sel[n] <= sel[n - 1])
			return -EINVAL;
		n++;
	}
	for (uint32_t j = n; j < k; j++)
		if (sel[j] != -1)
			return -EINVAL;
	*nsel = n;
	return 0;
}

/*
 * found[j]: sel[j] sits in a slot; keep[s]: slot s keeps its block (it holds a selected
 * block, the lowest such slot if the map repeats a block, or it is the protected slot).
 * Returns the number of kept slots.
 */
static uint32_t diff_mark(const int32_t *map, const int32_t *sel, uint32_t nsel, int32_t prot,
			  uint32_t n_slots, uint8_t *found, uint8_t *keep)
{
	uint32_t kept = 0;

	memset(found, 0, nsel);
	for (uint32_t sl = 0; sl < n_slots; sl++) {
		int32_t j = map[sl] >= 0 ? sel_find(sel, nsel, map[sl]) : -1;

		keep[sl] = (int32_t)sl == prot;
		if (j >= 0 && !found[j]) {
			found[j] = 1;
			keep[sl] = 1;
		}
		kept += keep[sl];
	}
	return kept;
}

static int key_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The slots not kept take the new blocks in ascending block order. Without age (the top-k
 * cache) they go in ascending slot order and the ones left over become empty. With age (the
 * retaining cache) empty slots go first (ascending), then the others by ascending age and slot,
 * and the ones left over keep their blocks; kept and filled slots get age = step. order:
 * scratch of n_slots keys ((biased age << 32) | slot).
 */
static void diff_apply(int32_t *map, int32_t *age, int32_t step, const int32_t *sel, uint32_t nsel,
		       uint32_t n_slots, uint32_t k, const uint8_t *found, const uint8_t *keep,
		       uint64_t *order, int32_t *load_slot, int32_t *load_block, int32_t *n_loads,
		       int32_t *hits)
{
	uint32_t n_first = 0, n_cand, nl = 0, nh = 0;

	for (uint32_t sl = 0; sl < n_slots; sl++) /* empty slots first (every free one: no age) */
		if (!keep[sl] && (!age || map[sl] < 0))
			order[n_first++] = sl;
	n_cand = n_first;
	for (uint32_t sl = 0; age && sl < n_slots; sl++)
		if (!keep[sl] && map[sl] >= 0)
			order[n_cand++] = (uint64_t)((uint32_t)age[sl] ^ 0x80000000u) << 32 | sl;
	qsort(order + n_first, n_cand - n_first, sizeof(*order), key_cmp);
	for (uint32_t j = 0; j < nsel; j++) {
		if (found[j]) {
			nh++;
			continue;
		}
		uint32_t sl = (uint32_t)order[nl]; /* diff_check: the new blocks fit */
		map[sl] = sel[j];
		if (age)
			age[sl] = step;
		load_slot[nl] = (int32_t)sl;
		load_block[nl++] = sel[j];
	}
	for (uint32_t f = nl; !age && f < n_cand; f++)
		map[(uint32_t)order[f]] = -1;
	for (uint32_t sl = 0; age && sl < n_slots; sl++)
		if (keep[sl])
			age[sl] = step;
	for (uint32_t j = nl; j < k; j++)
		load_slot[j] = load_block[j] = -1;
	*n_loads = (int32_t)nl;
	*hits = (int32_t)nh;
}

/* Check every row before touching any map, so an error leaves all caches as they were. */
static int diff_check(const int32_t *map, const int32_t *sel, const int32_t *protect, uint32_t n,
		      uint32_t n_slots, uint32_t k, uint8_t *found, uint8_t *keep)
{
	for (uint32_t i = 0; i < n; i++) {
		int32_t prot = protect ? protect[i] : -1;
		uint32_t nsel, kept, hits = 0;

		if (prot < -1 || prot >= (int64_t)n_slots ||
		    sel_count(sel + (size_t)i * k, k, &nsel))
			return -EINVAL;
		kept = diff_mark(map + (size_t)i * n_slots, sel + (size_t)i * k, nsel, prot,
				 n_slots, found, keep);
		for (uint32_t j = 0; j < nsel; j++)
			hits += found[j];
		if (nsel - hits > n_slots - kept)
			return -EINVAL; /* the new blocks do not fit the free slots */
	}
	return 0;
}

int cpu_cache_diff(struct kb *kb, enum kb_stream s, int32_t *map, int32_t *age, int32_t step,
		   const int32_t *sel, const int32_t *protect, uint32_t n, uint32_t n_slots,
		   uint32_t k, int32_t *load_slot, int32_t *load_block, int32_t *n_loads,
		   int32_t *hits)
{
	uint8_t *found, *keep;
	uint64_t *order;
	int err;

	if (!cpu_stream_ok(s) || !map || !sel || !load_slot || !load_block || !n_loads || !hits ||
	    !n_slots || k > n_slots || n_slots > INT32_MAX)
		return -EINVAL;
	order = malloc((size_t)n_slots * sizeof(*order) + k + n_slots + 1);
	if (!order)
		return -ENOMEM;
	found = (uint8_t *)(order + n_slots);
	keep = found + k;
	err = diff_check(map, sel, protect, n, n_slots, k, found, keep);
	for (uint32_t i = 0; !err && i < n; i++) {
		int32_t *mi = map + (size_t)i * n_slots;
		const int32_t *si = sel + (size_t)i * k;
		uint32_t nsel = 0;

		sel_count(si, k, &nsel);
		diff_mark(mi, si, nsel, protect ? protect[i] : -1, n_slots, found, keep);
		diff_apply(mi, age ? age + (size_t)i * n_slots : NULL, step, si, nsel, n_slots, k,
			   found, keep, order, load_slot + (size_t)i * k,
			   load_block + (size_t)i * k, n_loads + i, hits + i);
	}
	free(order);
	return err;
}
