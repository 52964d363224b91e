/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the CPU kernel tests: a seeded PRNG (the seed is printed first, and taken from
 * SPARDA_TEST_SEED to replay a failure), random bf16 fills, and the backend under test.
 */
#ifndef SPARDA_TESTS_KERNELS_TEST_CPU_COMMON_H
#define SPARDA_TESTS_KERNELS_TEST_CPU_COMMON_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"

static uint64_t test_rng_state;

static inline uint64_t test_rng(void)
{
	/* splitmix64 */
	uint64_t z = (test_rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float test_uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(test_rng() >> 11) / 9007199254740992.0);
}

/* Uniform integer in [lo, hi]. */
static inline int test_int(int lo, int hi)
{
	return lo + (int)(test_rng() % (uint64_t)(hi - lo + 1));
}

static inline void test_fill_bf16(uint16_t *x, size_t n, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = kb_f32_to_bf16(test_uniform(lo, hi));
}

/* Small integers: every dot product and mean of them is exact in fp32. */
static inline void test_fill_bf16_int(uint16_t *x, size_t n, int lo, int hi)
{
	for (size_t i = 0; i < n; i++)
		x[i] = kb_f32_to_bf16((float)test_int(lo, hi));
}

/* Seed from SPARDA_TEST_SEED, else fresh; printed so a failure can be replayed. */
static inline void test_seed(const char *name)
{
	const char *env = getenv("SPARDA_TEST_SEED");
	uint64_t seed =
	    env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 1000003ull ^ (uint64_t)getpid();

	test_rng_state = seed;
	printf("%s: seed=%llu (replay with SPARDA_TEST_SEED=%llu)\n", name,
	       (unsigned long long)seed, (unsigned long long)seed);
	fflush(stdout);
}

static inline struct kb *test_cpu(void)
{
	struct kb_opts o = {.kind = KB_KIND_CPU, .cpu_threads = 2};
	struct kb *kb = NULL;

	assert_int_equal(kb_open(&o, &kb), 0);
	assert_non_null(kb);
	return kb;
}

static inline void *test_alloc(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);

	assert_non_null(p);
	return p;
}

/* |got - want| <= atol + rtol * |want|, with a message naming the element. */
#define TEST_CLOSE(got, want, atol, rtol, ...)                                                     \
	do {                                                                                       \
		double g_ = (got), w_ = (want);                                                    \
		if (!(fabs(g_ - w_) <= (atol) + (rtol)*fabs(w_))) {                                \
			print_error(__VA_ARGS__);                                                  \
			fail_msg("got %.9g want %.9g", g_, w_);                                    \
		}                                                                                  \
	} while (0)

/* out[c] = sum_j softmax(q . k_j * scale) v_j over the n keys in idx (rows `ld` apart). */
static inline void test_naive_attend(double *out, const uint16_t *q, const uint16_t *k,
				     const uint16_t *v, size_t ld, const uint32_t *idx, uint32_t n,
				     uint32_t d, float scale)
{
	double *z = test_alloc((n + 1) * 8), mx = -INFINITY, sum = 0;

	for (uint32_t c = 0; c < d; c++)
		out[c] = 0;
	for (uint32_t j = 0; j < n; j++) {
		z[j] = 0;
		for (uint32_t c = 0; c < d; c++)
			z[j] += (double)kb_bf16_to_f32(q[c]) * kb_bf16_to_f32(k[idx[j] * ld + c]);
		z[j] *= scale;
		mx = fmax(mx, z[j]);
	}
	for (uint32_t j = 0; j < n; j++)
		sum += exp(z[j] - mx);
	for (uint32_t j = 0; j < n; j++)
		for (uint32_t c = 0; c < d; c++)
			out[c] += exp(z[j] - mx) / sum * kb_bf16_to_f32(v[idx[j] * ld + c]);
	free(z);
}

/* Attention output rows (bf16) against the double reference. */
static inline void test_check_row(const uint16_t *got, const double *want, uint32_t d,
				  const char *what, uint32_t a, uint32_t b)
{
	for (uint32_t c = 0; c < d; c++)
		TEST_CLOSE(kb_bf16_to_f32(got[c]), want[c], 2e-3, 8e-3, "%s %u %u c=%u\n", what, a,
			   b, c);
}

#endif
