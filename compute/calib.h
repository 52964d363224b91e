/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calibration data for Forecast training: token-id sequences read from a text file (one
 * sequence per line, whitespace-separated ids) or generated with long-range structure
 * (repeated passages and key/value retrieval), so that attention reaches far back.
 */
#ifndef SPARDA_COMPUTE_CALIB_H
#define SPARDA_COMPUTE_CALIB_H

#include <stddef.h>
#include <stdint.h>

struct calib_set {
	uint32_t n_seqs;
	uint32_t *len; /* tokens of sequence i */
	uint64_t *off; /* sequence i starts at ids + off[i] */
	int32_t *ids;
};

/*
 * Read `path`: every non-empty line is a sequence of decimal ids in [0, vocab), truncated to
 * max_len tokens; a line with fewer than min_len ids is an error. Returns 0 or -errno: -ENOENT
 * (no file), -EINVAL (a bad token, an id out of range, a short line, no sequence at all; err
 * names the file and line), -ENOMEM. *out is caller-owned (calib_fini).
 */
int calib_read(const char *path, uint32_t vocab, uint32_t min_len, uint32_t max_len,
	       struct calib_set *out, char *err, size_t err_len);

/*
 * Generate n sequences of len tokens over [0, vocab) (vocab >= 64) from seed. Each is filler
 * text from a small Zipf-like vocabulary, with passages of 16-64 tokens copied from earlier in
 * the sequence and key/value pairs (a rare key token followed by a value passage) that are
 * queried again later (the key repeated, then the value). Same seed, same ids.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int calib_synth(uint32_t n, uint32_t len, uint32_t vocab, uint64_t seed, struct calib_set *out);

/* Split off the last n_tail sequences of `all` into *tail (copies; `all` keeps the rest). */
int calib_split(struct calib_set *all, uint32_t n_tail, struct calib_set *tail);

/* Release a set (accepts a zeroed set). */
void calib_fini(struct calib_set *s);

/* A 64-bit hash of the ids and lengths (checkpoints refuse other data). */
uint64_t calib_hash(const struct calib_set *s);

#endif
