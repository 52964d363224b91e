/* SPDX-License-Identifier: Apache-2.0 */
/* Sleep and the log-linear latency histogram. */
#include "timeutil.h"

#include <errno.h>
#include <string.h>

void time_sleep_ns(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
			      .tv_nsec = (long)(ns % 1000000000ull)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* 16 sub-buckets per power of two: bucket = 16 * log2(v) + next 4 mantissa bits. */
static unsigned bucket_of(uint64_t v)
{
	if (v < 16)
		return (unsigned)v;
	unsigned lz = (unsigned)__builtin_clzll(v);
	unsigned e = 63 - lz; /* >= 4 */
	unsigned m = (unsigned)((v >> (e - 4)) & 15);
	unsigned b = 16 * (e - 3) + m;
	return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static uint64_t bucket_upper(unsigned b)
{
	if (b < 16)
		return b;
	/* The last bucket also holds everything past its range: its edge is the maximum. */
	if (b == HIST_BUCKETS - 1)
		return UINT64_MAX;
	unsigned e = b / 16 + 3;
	uint64_t m = b % 16;
	if (e >= 63)
		return UINT64_MAX;
	return ((16 + m + 1) << (e - 4)) - 1;
}

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

void hist_add(struct hist *h, uint64_t ns)
{
	hist_add_n(h, ns, 1);
}

void hist_add_n(struct hist *h, uint64_t ns, uint64_t n)
{
	if (!n)
		return;
	h->count += n;
	h->sum_ns += ns * n;
	if (ns > h->max_ns)
		h->max_ns = ns;
	h->bucket[bucket_of(ns)] += n;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (!h->count)
		return 0;
	uint64_t rank = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t u = bucket_upper(i);
			return u < h->max_ns ? u : h->max_ns;
		}
	}
	return h->max_ns;
}
