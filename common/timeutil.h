/* SPDX-License-Identifier: Apache-2.0 */
/* Monotonic time helpers and a small log-linear latency histogram shared by daemons and tools. */
#ifndef SPARDA_COMMON_TIMEUTIL_H
#define SPARDA_COMMON_TIMEUTIL_H

#include <stdint.h>
#include <time.h>

static inline uint64_t time_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t time_now_ms(void)
{
	return time_now_ns() / 1000000ull;
}

/* Seconds since t0_ns (a time_now_ns reading). */
static inline double time_since_s(uint64_t t0_ns)
{
	return (double)(time_now_ns() - t0_ns) * 1e-9;
}

/* Sleep for ns nanoseconds (restarts on EINTR). */
void time_sleep_ns(uint64_t ns);

/*
 * Latency histogram: buckets of ~6% width from 1 ns to ~70 s. Not thread safe; merge per-thread
 * histograms with hist_merge. Percentiles are the upper edge of the bucket holding the rank.
 */
#define HIST_BUCKETS 512
struct hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t bucket[HIST_BUCKETS];
};
void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t ns);
/* n samples of the same value (one update instead of n). */
void hist_add_n(struct hist *h, uint64_t ns, uint64_t n);
void hist_merge(struct hist *dst, const struct hist *src);
/* p in [0, 100]; returns 0 for an empty histogram. */
uint64_t hist_percentile(const struct hist *h, double p);

#endif
