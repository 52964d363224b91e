/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/timeutil: histogram percentiles (exact below 16, within one ~6% bucket above, never
 * past the maximum), merge, and the monotonic clock and sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "timeutil.h"

static struct hist g_h, g_a, g_b;

/* The percentile is the upper edge of the bucket holding the rank: v <= p <= v * 17/16. */
static void assert_near(uint64_t got, uint64_t v)
{
	if (got < v || got > v + v / 16 + 1)
		fail_msg("percentile %llu not within a bucket of %llu", (unsigned long long)got,
			 (unsigned long long)v);
}

static void test_empty_and_small(void **state)
{
	hist_reset(&g_h);
	assert_int_equal(hist_percentile(&g_h, 50), 0);
	for (uint64_t v = 0; v < 16; v++)
		hist_add(&g_h, v);
	assert_int_equal(g_h.count, 16);
	assert_int_equal(g_h.sum_ns, 120);
	assert_int_equal(g_h.max_ns, 15);
	assert_int_equal(hist_percentile(&g_h, 0), 0);
	assert_int_equal(hist_percentile(&g_h, 50), 7);
	assert_int_equal(hist_percentile(&g_h, 100), 15);
}

static void test_percentiles(void **state)
{
	hist_reset(&g_h);
	for (uint64_t v = 1; v <= 100000; v++)
		hist_add(&g_h, v * 1000);
	assert_near(hist_percentile(&g_h, 50), 50000 * 1000ull);
	assert_near(hist_percentile(&g_h, 90), 90000 * 1000ull);
	assert_near(hist_percentile(&g_h, 99), 99000 * 1000ull);
	assert_near(hist_percentile(&g_h, 0), 1000);
	/* Capped at the maximum seen. */
	assert_int_equal(hist_percentile(&g_h, 100), 100000 * 1000ull);
	assert_true(hist_percentile(&g_h, 99.9) <= g_h.max_ns);

	/* A bimodal distribution: p50 in the low mode, p99 in the high one. */
	hist_reset(&g_h);
	for (int i = 0; i < 980; i++)
		hist_add(&g_h, 2000);
	for (int i = 0; i < 20; i++)
		hist_add(&g_h, 20000000);
	assert_near(hist_percentile(&g_h, 50), 2000);
	assert_near(hist_percentile(&g_h, 98), 2000);
	assert_near(hist_percentile(&g_h, 99), 20000000);
	/* Huge values land in the last bucket and still report the maximum. */
	hist_add(&g_h, UINT64_MAX / 2);
	assert_true(hist_percentile(&g_h, 100) == UINT64_MAX / 2);
}

static void test_merge(void **state)
{
	hist_reset(&g_a);
	hist_reset(&g_b);
	hist_reset(&g_h);
	for (uint64_t v = 1; v < 5000; v++) {
		hist_add(v % 2 ? &g_a : &g_b, v * 37);
		hist_add(&g_h, v * 37);
	}
	hist_merge(&g_a, &g_b);
	assert_int_equal(g_a.count, g_h.count);
	assert_int_equal(g_a.sum_ns, g_h.sum_ns);
	assert_int_equal(g_a.max_ns, g_h.max_ns);
	assert_memory_equal(g_a.bucket, g_h.bucket, sizeof(g_h.bucket));
	for (double p = 0; p <= 100; p += 12.5)
		assert_int_equal(hist_percentile(&g_a, p), hist_percentile(&g_h, p));
}

/* hist_add_n(v, n) is n calls of hist_add(v): same buckets, count, sum and max. */
static void test_add_n(void **state)
{
	static struct hist a, b;
	const uint64_t vals[] = { 0, 7, 15, 16, 1000, 123456, 5000000000ull };

	hist_reset(&a);
	hist_reset(&b);
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		hist_add_n(&a, vals[i], i + 1);
		for (size_t k = 0; k <= i; k++)
			hist_add(&b, vals[i]);
	}
	hist_add_n(&a, 99, 0); /* no samples: no change */
	assert_memory_equal(&a, &b, sizeof(a));
}

static void test_clock_and_sleep(void **state)
{
	uint64_t t0 = time_now_ns();
	time_sleep_ns(2000000);
	uint64_t t1 = time_now_ns();
	assert_true(t1 - t0 >= 2000000);
	assert_true(time_now_ms() >= t1 / 1000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_and_small),
	    cmocka_unit_test(test_percentiles),
	    cmocka_unit_test(test_merge),
	    cmocka_unit_test(test_add_n),
	    cmocka_unit_test(test_clock_and_sleep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
