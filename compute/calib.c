/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calibration sequences for Forecast training: a strict reader of token-id files and a
 * deterministic generator of sequences whose attention reaches far back (copies, retrieval).
 */
#include "calib.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Append one sequence (ids already at ids + off of the set's buffer). */
static int set_push(struct calib_set *s, uint32_t *cap, uint32_t len, uint64_t off)
{
	if (s->n_seqs == *cap) {
		uint32_t nc = *cap ? 2 * *cap : 16;
		uint32_t *l = realloc(s->len, nc * sizeof(*l));
		uint64_t *o;

		if (!l)
			return -ENOMEM;
		s->len = l;
		o = realloc(s->off, nc * sizeof(*o));
		if (!o)
			return -ENOMEM;
		s->off = o;
		*cap = nc;
	}
	s->len[s->n_seqs] = len;
	s->off[s->n_seqs++] = off;
	return 0;
}

static int ids_reserve(struct calib_set *s, uint64_t *cap, uint64_t need)
{
	int32_t *p;

	if (need <= *cap)
		return 0;
	while (*cap < need)
		*cap = *cap ? 2 * *cap : 4096;
	p = realloc(s->ids, *cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->ids = p;
	return 0;
}

/* Parse one line into ids at s->ids + base; *n gets the count kept (<= max_len). */
static int parse_line(struct calib_set *s, uint64_t *cap, uint64_t base, char *line, uint32_t vocab,
		      uint32_t max_len, uint32_t *n, char *bad, size_t bad_len)
{
	char *p = line, *end;
	uint32_t cnt = 0;
	int rc;

	for (;;) {
		long v;

		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (!*p)
			break;
		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || errno || (*end && !strchr(" \t\r\n", *end)) || v < 0 ||
		    (unsigned long)v >= vocab) {
			snprintf(bad, bad_len, "token '%.*s' is not an id in [0, %u)",
				 (int)strcspn(p, " \t\r\n") > 32 ? 32 : (int)strcspn(p, " \t\r\n"),
				 p, vocab);
			return -EINVAL;
		}
		p = end;
		if (cnt < max_len) {
			if ((rc = ids_reserve(s, cap, base + cnt + 1)))
				return rc;
			s->ids[base + cnt++] = (int32_t)v;
		}
	}
	*n = cnt;
	return 0;
}

int calib_read(const char *path, uint32_t vocab, uint32_t min_len, uint32_t max_len,
	       struct calib_set *out, char *err, size_t err_len)
{
	struct calib_set s = {0};
	uint64_t cap = 0, used = 0;
	uint32_t scap = 0, lineno = 0, n;
	char *line = NULL, bad[96];
	size_t line_cap = 0;
	FILE *fp;
	int rc = 0;

	if (!path || !vocab || !max_len || min_len > max_len || !out)
		return -EINVAL;
	if (!(fp = fopen(path, "r"))) {
		rc = -errno;
		snprintf(err, err_len, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
	}
	while (getline(&line, &line_cap, fp) >= 0) {
		lineno++;
		if ((rc = parse_line(&s, &cap, used, line, vocab, max_len, &n, bad, sizeof(bad)))) {
			if (rc == -EINVAL)
				snprintf(err, err_len, "%s:%u: %s", path, lineno, bad);
			goto out_free;
		}
		if (!n)
			continue;
		if (n < min_len) {
			rc = -EINVAL;
			snprintf(err, err_len, "%s:%u: %u tokens, at least %u are needed", path,
				 lineno, n, min_len);
			goto out_free;
		}
		if ((rc = set_push(&s, &scap, n, used)))
			goto out_free;
		used += n;
	}
	if (ferror(fp)) {
		rc = -EIO;
		snprintf(err, err_len, "%s: read error", path);
	} else if (!s.n_seqs) {
		rc = -EINVAL;
		snprintf(err, err_len, "%s: no sequence (one line of token ids per sequence)",
			 path);
	}
out_free:
	free(line);
	fclose(fp);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, err_len, "%s: out of memory", path);
		calib_fini(&s);
		return rc;
	}
	*out = s;
	return 0;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd(uint64_t *x, uint32_t n)
{
	return (uint32_t)(splitmix(x) % n);
}

/* Ids [0, 32) are key markers; filler favours low ids (a Zipf-like skew). */
#define CALIB_KEYS 32u

static uint32_t filler(uint64_t *x, uint32_t vocab)
{
	double u = (double)(splitmix(x) >> 11) / 9007199254740992.0;

	return CALIB_KEYS + (uint32_t)(u * u * (double)(vocab - CALIB_KEYS));
}

struct synth_kv {
	uint32_t key, at, len; /* the value passage ids[at, at + len) follows the key */
};

static void synth_seq(int32_t *ids, uint32_t len, uint32_t vocab, uint64_t *x)
{
	struct synth_kv kv[CALIB_KEYS];
	uint32_t n_kv = 0, p = 0;

	while (p < len) {
		uint32_t r = rnd(x, 10), n, src;

		if (r < 4 || (r < 6 && p < 64)) { /* filler */
			for (n = 8 + rnd(x, 25); n-- && p < len;)
				ids[p++] = (int32_t)filler(x, vocab);
		} else if (r < 6) { /* a passage copied from earlier */
			n = 16 + rnd(x, 49);
			src = rnd(x, p - 16);
			for (uint32_t i = 0; i < n && p < len && src + i < p; i++)
				ids[p++] = ids[src + i];
		} else if (r < 8 && n_kv < CALIB_KEYS) { /* key, then its value */
			kv[n_kv].key = rnd(x, CALIB_KEYS);
			ids[p++] = (int32_t)kv[n_kv].key;
			kv[n_kv].at = p;
			kv[n_kv].len = 4 + rnd(x, 13);
			for (n = kv[n_kv].len; n-- && p < len;)
				ids[p++] = (int32_t)filler(x, vocab);
			n_kv++;
		} else if (n_kv) { /* retrieval: a key seen before, then its value again */
			struct synth_kv *k = &kv[rnd(x, n_kv)];

			ids[p++] = (int32_t)k->key;
			for (uint32_t i = 0; i < k->len && p < len && k->at + i < p; i++)
				ids[p++] = ids[k->at + i];
		}
	}
}

int calib_synth(uint32_t n, uint32_t len, uint32_t vocab, uint64_t seed, struct calib_set *out)
{
	struct calib_set s = {0};
	uint64_t x = seed ^ 0x5eed5eedcafef00dull;

	if (!n || !len || vocab < 2 * CALIB_KEYS || !out)
		return -EINVAL;
	s.len = calloc(n, sizeof(*s.len));
	s.off = calloc(n, sizeof(*s.off));
	s.ids = calloc((size_t)n * len, sizeof(*s.ids));
	if (!s.len || !s.off || !s.ids) {
		calib_fini(&s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		s.len[i] = len;
		s.off[i] = (uint64_t)i * len;
		synth_seq(s.ids + s.off[i], len, vocab, &x);
	}
	s.n_seqs = n;
	*out = s;
	return 0;
}

int calib_split(struct calib_set *all, uint32_t n_tail, struct calib_set *tail)
{
	struct calib_set t = {0};
	uint32_t first;
	uint64_t base, total = 0;

	if (!all || !tail || !n_tail || n_tail >= all->n_seqs)
		return -EINVAL;
	first = all->n_seqs - n_tail;
	base = all->off[first];
	for (uint32_t i = first; i < all->n_seqs; i++)
		total = all->off[i] + all->len[i] - base > total ? all->off[i] + all->len[i] - base
								 : total;
	t.len = malloc(n_tail * sizeof(*t.len));
	t.off = malloc(n_tail * sizeof(*t.off));
	t.ids = malloc(total * sizeof(*t.ids));
	if (!t.len || !t.off || !t.ids) {
		calib_fini(&t);
		return -ENOMEM;
	}
	memcpy(t.ids, all->ids + base, total * sizeof(*t.ids));
	for (uint32_t i = 0; i < n_tail; i++) {
		t.len[i] = all->len[first + i];
		t.off[i] = all->off[first + i] - base;
	}
	t.n_seqs = n_tail;
	all->n_seqs = first;
	*tail = t;
	return 0;
}

void calib_fini(struct calib_set *s)
{
	if (!s)
		return;
	free(s->len);
	free(s->off);
	free(s->ids);
	memset(s, 0, sizeof(*s));
}

uint64_t calib_hash(const struct calib_set *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (uint32_t i = 0; i < s->n_seqs; i++) {
		h = (h ^ s->len[i]) * 0x100000001b3ull;
		for (uint32_t j = 0; j < s->len[i]; j++)
			h = (h ^ (uint32_t)s->ids[s->off[i] + j]) * 0x100000001b3ull;
	}
	return h;
}
