/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU backend, cache_diff: random slot maps and selections against the contract's properties
 * (kept blocks stay in their slots, the protected slot is untouched, the load list is exactly
 * the new blocks, hits + loads = selected) and its exact slot-assignment order; a simulated
 * decode run; argument errors that must leave every map unchanged.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "test_cpu_common.h"

static bool in_row(const int32_t *row, uint32_t n, int32_t m)
{
	for (uint32_t i = 0; i < n; i++)
		if (row[i] == m)
			return true;
	return false;
}

/* A random feasible case for one cache: distinct blocks in the map, ascending selection. */
static void gen_cache(int32_t *map, int32_t *sel, int32_t *prot, uint32_t n_slots, uint32_t k)
{
	uint32_t universe = 2 * n_slots + 3, nsel = (uint32_t)test_int(0, (int)k), n = 0;
	int32_t *perm = test_alloc(universe * 4);

	for (uint32_t i = 0; i < universe; i++)
		perm[i] = (int32_t)i;
	for (uint32_t i = universe - 1; i > 0; i--) {
		uint32_t j = (uint32_t)test_int(0, (int)i);
		int32_t t = perm[i];

		perm[i] = perm[j], perm[j] = t;
	}
	for (uint32_t s = 0; s < n_slots; s++)
		map[s] = test_int(0, 3) ? perm[s] : -1;
	*prot = test_int(0, 2) ? test_int(0, (int)n_slots - 1) : -1;
	/* Half the selection from the cached blocks, the rest from anywhere. */
	for (uint32_t m = 0; m < universe && n < nsel; m++)
		if (test_int(0, 1) && (in_row(map, n_slots, (int32_t)m) || test_int(0, 1)))
			sel[n++] = (int32_t)m;
	if (*prot >= 0 && !in_row(sel, n, map[*prot]) && n == n_slots)
		n--; /* the protected slot takes one place */
	for (uint32_t j = n; j < k; j++)
		sel[j] = -1;
	free(perm);
}

/* Check one cache against the contract, from its state before the call. */
static void check_cache(const int32_t *old, const int32_t *map, const int32_t *sel, int32_t prot,
			uint32_t n_slots, uint32_t k, const int32_t *ls, const int32_t *lb,
			int32_t n_loads, int32_t hits)
{
	uint32_t nsel = 0, nl = 0, nf = 0, nh = 0;
	int32_t *fr = test_alloc(n_slots * 4);

	while (nsel < k && sel[nsel] >= 0)
		nsel++;
	for (uint32_t s = 0; s < n_slots; s++) {
		bool kept = (int32_t)s == prot || (old[s] >= 0 && in_row(sel, nsel, old[s]));

		if (kept)
			assert_int_equal(map[s],
					 old[s]); /* kept blocks stay; protected untouched */
		else
			fr[nf++] = (int32_t)s;
	}
	/* New blocks in ascending order take the free slots in ascending order. */
	for (uint32_t j = 0; j < nsel; j++) {
		if (in_row(old, n_slots, sel[j])) {
			nh++;
			continue;
		}
		assert_true(nl < nf);
		assert_int_equal(lb[nl], sel[j]);
		assert_int_equal(ls[nl], fr[nl]);
		assert_int_equal(map[fr[nl]], sel[j]);
		nl++;
	}
	for (uint32_t f = nl; f < nf; f++)
		assert_int_equal(map[fr[f]], -1);
	assert_int_equal(n_loads, (int32_t)nl);
	assert_int_equal(hits, (int32_t)nh);
	assert_int_equal(hits + n_loads, (int32_t)nsel);
	for (uint32_t j = nl; j < k; j++)
		assert_true(ls[j] == -1 && lb[j] == -1);
	/* Every selected block is now cached. */
	for (uint32_t j = 0; j < nsel; j++)
		assert_true(in_row(map, n_slots, sel[j]));
	free(fr);
}

static void diff_case(struct kb *kb, uint32_t n, uint32_t n_slots, uint32_t k)
{
	int32_t *map = test_alloc(n * n_slots * 4), *old = test_alloc(n * n_slots * 4);
	int32_t *sel = test_alloc(n * k * 4), *prot = test_alloc(n * 4);
	int32_t *ls = test_alloc(n * k * 4), *lb = test_alloc(n * k * 4);
	int32_t *nl = test_alloc(n * 4), *hits = test_alloc(n * 4);

	for (uint32_t i = 0; i < n; i++)
		gen_cache(map + i * n_slots, sel + i * k, prot + i, n_slots, k);
	memcpy(old, map, n * n_slots * 4);
	memset(ls, 0x55, n * k * 4);
	memset(lb, 0x55, n * k * 4);
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, sel, prot, n, n_slots, k, ls, lb, nl, hits),
	    0);
	for (uint32_t i = 0; i < n; i++)
		check_cache(old + i * n_slots, map + i * n_slots, sel + i * k, prot[i], n_slots, k,
			    ls + i * k, lb + i * k, nl[i], hits[i]);
	free(map), free(old), free(sel), free(prot), free(ls), free(lb), free(nl), free(hits);
}

static void test_cache_diff_random(void **state)
{
	struct kb *kb = test_cpu();

	for (int rep = 0; rep < 50; rep++) {
		uint32_t n_slots = (uint32_t)test_int(1, 24);

		diff_case(kb, (uint32_t)test_int(1, 6), n_slots,
			  (uint32_t)test_int(1, (int)n_slots));
	}
	diff_case(kb, 4, 96, 96);
	kb_destroy(kb);
}

/* Decode steps: a sliding selection with the tail slot protected, loads applied to a shadow. */
static void test_cache_diff_decode_run(void **state)
{
	struct kb *kb = test_cpu();
	const uint32_t n_slots = 8, k = 8;
	int32_t map[8], shadow[8], sel[8], ls[8], lb[8], nl, hits, prot = 7;

	for (uint32_t s = 0; s < n_slots; s++)
		map[s] = shadow[s] = -1;
	for (uint32_t step = 0; step < 200; step++) {
		uint32_t own = 3 + step / 16, n = 0;

		/* sink 0, the own block and 2 before it, the rest random past blocks */
		sel[n++] = 0;
		for (uint32_t m = 1; m < own - 2; m++)
			if (n < k - 3 && test_int(0, (int)own) < 4)
				sel[n++] = (int32_t)m;
		sel[n++] = (int32_t)own - 2, sel[n++] = (int32_t)own - 1, sel[n++] = (int32_t)own;
		for (uint32_t j = n; j < k; j++)
			sel[j] = -1;
		/* The tail slot holds the own block once it is cached. */
		prot = -1;
		for (uint32_t s = 0; s < n_slots; s++)
			if (map[s] == (int32_t)own)
				prot = (int32_t)s;
		assert_int_equal(kb->ops->cache_diff(kb, 0, map, NULL, 0, sel, &prot, 1, n_slots, k,
						     ls, lb, &nl, &hits),
				 0);
		for (int32_t j = 0; j < nl; j++)
			shadow[ls[j]] = lb[j];
		for (uint32_t s = 0; s < n_slots; s++)
			if (map[s] < 0)
				shadow[s] = -1;
		assert_memory_equal(map, shadow, sizeof(map));
		assert_int_equal(hits + nl, (int32_t)n);
		if (prot >= 0)
			assert_int_equal(map[prot], (int32_t)own);
	}
	kb_destroy(kb);
}

static void test_cache_diff_errors(void **state)
{
	struct kb *kb = test_cpu();
	int32_t map[4] = {5, 6, 7, 8}, old[4], ls[4], lb[4], nl, hits;
	int32_t full[4] = {1, 2, 3, 4}, unsorted[4] = {2, 1, -1, -1}, gap[4] = {1, -1, 2, -1};
	int32_t prot = 0, map2[8] = {1, -1, -1, -1, 5, 6, 7, 8}, sel2[8] = {1, -1, -1, -1};

	memcpy(old, map, sizeof(map));
	/* 4 new blocks but the protected slot keeps block 5: no room. */
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, full, &prot, 1, 4, 4, ls, lb, &nl, &hits),
	    -EINVAL);
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, unsorted, NULL, 1, 4, 4, ls, lb, &nl, &hits),
	    -EINVAL);
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, gap, NULL, 1, 4, 4, ls, lb, &nl, &hits),
	    -EINVAL);
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, full, NULL, 1, 3, 4, ls, lb, &nl, &hits),
	    -EINVAL); /* k > n_slots */
	prot = 4;
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, full, &prot, 1, 4, 4, ls, lb, &nl, &hits),
	    -EINVAL);
	assert_memory_equal(map, old, sizeof(map));
	/* Cache 0 is fine, cache 1 does not fit: nothing is applied to either. */
	memcpy(sel2 + 4, full, sizeof(full));
	{
		int32_t p2[2] = {-1, 0}, ls2[8], lb2[8], nl2[2], h2[2], m2old[8];

		memcpy(m2old, map2, sizeof(map2));
		assert_int_equal(
		    kb->ops->cache_diff(kb, 0, map2, NULL, 0, sel2, p2, 2, 4, 4, ls2, lb2, nl2, h2),
		    -EINVAL);
		assert_memory_equal(map2, m2old, sizeof(map2));
	}
	/* Without protection the same selection fits and replaces everything. */
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, NULL, 0, full, NULL, 1, 4, 4, ls, lb, &nl, &hits), 0);
	assert_int_equal(nl, 4);
	assert_int_equal(hits, 0);
	assert_memory_equal(map, full, sizeof(full));
	kb_destroy(kb);
}

/*
 * The retaining cache by hand: empty slots first, then the least recently selected; what no
 * new block needs stays cached and hits when it is selected again.
 */
static void test_cache_diff_lru(void **state)
{
	struct kb *kb = test_cpu();
	int32_t map[6] = {10, -1, 11, 12, 13, -1}, age[6] = {5, 0, 2, 7, 2, 0};
	int32_t ls[3], lb[3], nl, hits;
	int32_t s1[3] = {11, 20, 21}, s2[3] = {12, 30, 31}, s3[3] = {11, 20, 31};

	(void)state;
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, age, 9, s1, NULL, 1, 6, 3, ls, lb, &nl, &hits), 0);
	assert_int_equal(nl, 2);
	assert_int_equal(hits, 1);
	assert_memory_equal(ls, ((int32_t[]){1, 5, -1}), sizeof(ls));
	assert_memory_equal(lb, ((int32_t[]){20, 21, -1}), sizeof(lb));
	assert_memory_equal(map, ((int32_t[]){10, 20, 11, 12, 13, 21}), sizeof(map));
	assert_memory_equal(age, ((int32_t[]){5, 9, 9, 7, 2, 9}), sizeof(age));
	/* 12 was not selected last step but stayed: a hit. 13 (age 2), then 10 (age 5) go. */
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, age, 10, s2, NULL, 1, 6, 3, ls, lb, &nl, &hits), 0);
	assert_int_equal(hits, 1);
	assert_memory_equal(ls, ((int32_t[]){4, 0, -1}), sizeof(ls));
	assert_memory_equal(map, ((int32_t[]){31, 20, 11, 12, 30, 21}), sizeof(map));
	assert_memory_equal(age, ((int32_t[]){10, 9, 9, 10, 10, 9}), sizeof(age));
	/* Everything selected is cached: no loads, three hits, their ages refreshed. */
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, age, 11, s3, NULL, 1, 6, 3, ls, lb, &nl, &hits), 0);
	assert_int_equal(nl, 0);
	assert_int_equal(hits, 3);
	assert_memory_equal(ls, ((int32_t[]){-1, -1, -1}), sizeof(ls));
	assert_memory_equal(age, ((int32_t[]){11, 11, 11, 10, 10, 9}), sizeof(age));
	kb_destroy(kb);
}

/* The retaining cache on random caches: kept slots stay, the new blocks take the candidates
 * of lowest (occupied, age, slot), every other slot keeps its block and age. */
static void test_cache_diff_lru_random(void **state)
{
	struct kb *kb = test_cpu();
	enum { N = 24, SLOTS = 40, K = 16 };
	int32_t *map = test_alloc(N * SLOTS * 4), *old = test_alloc(N * SLOTS * 4);
	int32_t *age = test_alloc(N * SLOTS * 4), *oage = test_alloc(N * SLOTS * 4);
	int32_t sel[N * K], prot[N], ls[N * K], lb[N * K], nl[N], hits[N];

	(void)state;
	for (uint32_t i = 0; i < N; i++) {
		gen_cache(map + i * SLOTS, sel + i * K, prot + i, SLOTS, K);
		for (uint32_t s = 0; s < SLOTS; s++)
			age[i * SLOTS + s] = test_int(0, 4); /* ties */
	}
	memcpy(old, map, N * SLOTS * 4);
	memcpy(oage, age, N * SLOTS * 4);
	assert_int_equal(
	    kb->ops->cache_diff(kb, 0, map, age, 7, sel, prot, N, SLOTS, K, ls, lb, nl, hits), 0);
	for (uint32_t i = 0; i < N; i++) {
		const int32_t *o = old + i * SLOTS, *oa = oage + i * SLOTS, *se = sel + i * K;
		const int32_t *m = map + i * SLOTS, *a = age + i * SLOTS;
		uint32_t nsel = 0, nh = 0;

		while (nsel < K && se[nsel] >= 0)
			nsel++;
		for (uint32_t j = 0; j < nsel; j++)
			nh += in_row(o, SLOTS, se[j]);
		assert_int_equal(hits[i], (int32_t)nh);
		assert_int_equal(nl[i], (int32_t)(nsel - nh));
		for (uint32_t s = 0; s < SLOTS; s++) {
			bool kept = (int32_t)s == prot[i] || (o[s] >= 0 && in_row(se, nsel, o[s]));
			uint32_t rank = 0;

			if (kept) {
				assert_int_equal(m[s], o[s]);
				assert_int_equal(a[s], 7);
				continue;
			}
			for (uint32_t t = 0; t < SLOTS; t++) {
				bool kt =
				    (int32_t)t == prot[i] || (o[t] >= 0 && in_row(se, nsel, o[t]));
				int64_t kt_key = o[t] < 0 ? -1 : oa[t],
					ks_key = o[s] < 0 ? -1 : oa[s];

				if (!kt && t != s &&
				    (kt_key < ks_key || (kt_key == ks_key && t < s)))
					rank++;
			}
			if (rank < (uint32_t)nl[i]) {
				assert_int_equal(ls[i * K + rank], (int32_t)s);
				assert_int_equal(m[s], lb[i * K + rank]);
				assert_int_equal(a[s], 7);
			} else {
				assert_int_equal(m[s], o[s]);
				assert_int_equal(a[s], oa[s]);
			}
		}
		for (uint32_t j = 0; j < nsel; j++)
			assert_true(in_row(m, SLOTS, se[j]));
	}
	free(map), free(old), free(age), free(oage);
	kb_destroy(kb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cache_diff_random),
	    cmocka_unit_test(test_cache_diff_decode_run),
	    cmocka_unit_test(test_cache_diff_errors),
	    cmocka_unit_test(test_cache_diff_lru),
	    cmocka_unit_test(test_cache_diff_lru_random),
	};

	test_seed("test_cpu_cache_diff");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
