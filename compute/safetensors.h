/* SPDX-License-Identifier: Apache-2.0 */
/*
 * safetensors files: a validating, mmap-based reader and a streaming writer.
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the data (offsets relative to it).
 */
#ifndef SPARDA_COMPUTE_SAFETENSORS_H
#define SPARDA_COMPUTE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
/* Largest header accepted (the reference implementation's limit). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

enum st_dtype {
	ST_DTYPE_BOOL = 0,
	ST_DTYPE_U8,
	ST_DTYPE_I8,
	ST_DTYPE_F8_E4M3,
	ST_DTYPE_F8_E5M2,
	ST_DTYPE_I16,
	ST_DTYPE_U16,
	ST_DTYPE_F16,
	ST_DTYPE_BF16,
	ST_DTYPE_I32,
	ST_DTYPE_U32,
	ST_DTYPE_F32,
	ST_DTYPE_I64,
	ST_DTYPE_U64,
	ST_DTYPE_F64,
	ST_DTYPE_COUNT
};

/* The format's name ("BF16") and element size in bytes. */
const char *st_dtype_name(enum st_dtype d);
size_t st_dtype_size(enum st_dtype d);

struct st_tensor {
	const char *name;
	enum st_dtype dtype;
	uint32_t n_dims;
	uint64_t shape[ST_MAX_DIMS];
	const void *data; /* into the read-only mapping; valid until st_close */
	uint64_t bytes;	  /* == product(shape) * st_dtype_size(dtype) */
};

struct st_file; /* opaque */

/*
 * Map and validate `path`: header length within the file and at most ST_MAX_HEADER, JSON an
 * object, every entry (except "__metadata__", ignored) with a known dtype, a shape whose byte
 * size (overflow-checked) equals end - begin, and data_offsets inside the file, not overlapping
 * another tensor's. Returns 0, -ENOENT (no file), -EINVAL (bad content), -ENOMEM or another
 * -errno of open/mmap; on error `err` (may be NULL) holds "<path>: [<tensor>: ]<problem>".
 * *out is owned by the caller and released with st_close (which accepts NULL). An open file
 * is immutable: lookups from several threads are safe.
 */
int st_open(const char *path, struct st_file **out, char *err, size_t err_len);
void st_close(struct st_file *f);

const char *st_path(const struct st_file *f);
uint32_t st_count(const struct st_file *f);
/* Tensor i in name order (i < st_count), or NULL. */
const struct st_tensor *st_at(const struct st_file *f, uint32_t i);
/* Tensor by name, or NULL when absent. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);
/* The "__metadata__" string value of `key`, or NULL (no such key, or not a string). Valid
 * until st_close. */
const char *st_meta(const struct st_file *f, const char *key);

/* One tensor to write. Either `data` (product(shape) elements) or the writer's fill callback. */
struct st_wtensor {
	const char *name;
	enum st_dtype dtype;
	uint32_t n_dims;
	uint64_t shape[ST_MAX_DIMS];
	const void *data;
};

/*
 * Produce elements [first, first + n) of tensor `idx` into buf (n * dtype size bytes).
 * Returns 0 or -errno (aborts the write).
 */
struct st_fill {
	int (*fn)(void *ctx, uint32_t idx, void *buf, uint64_t first, uint64_t n);
	void *ctx;
};

/*
 * Write n tensors to `path` in the given order, data packed back to back; the header is padded
 * with spaces so the data starts 8-byte aligned. Tensors with data == NULL are produced in
 * chunks by `fill` (which may then not be NULL). The file is written to "<path>.tmp" and renamed,
 * so a failed write never leaves a partial file at `path`. Names must be unique.
 * Returns 0 or -errno (-EINVAL for bad arguments, -ENOSPC, -EIO, ...) with a message in err.
 */
int st_write(const char *path, const struct st_wtensor *t, uint32_t n, const struct st_fill *fill,
	     char *err, size_t err_len);

/* One "__metadata__" entry (the format allows string values only). */
struct st_meta_kv {
	const char *key, *value;
};

/* st_write with n_meta more "__metadata__" entries next to {"format": "pt"} (-EINVAL for a
 * NULL or empty key or a NULL value). */
int st_write_meta(const char *path, const struct st_wtensor *t, uint32_t n,
		  const struct st_fill *fill, const struct st_meta_kv *meta, uint32_t n_meta,
		  char *err, size_t err_len);

#endif
