// SPDX-License-Identifier: Apache-2.0
/*
 * safetensors reader (mmap + json-c, every field validated before a pointer is handed out) and
 * writer (header built with json-c, data streamed in chunks so 8B-shaped files never sit in
 * memory, written to a temporary name and renamed).
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#define ST_CHUNK_BYTES (4u << 20)

struct st_file {
	char *path;
	void *map;
	size_t map_len;
	struct json_object *root; /* owns the tensor names */
	struct st_tensor *t;	  /* sorted by name */
	uint32_t n;
};

static const struct {
	const char *name;
	size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_DTYPE_BOOL] = {"BOOL", 1},	 [ST_DTYPE_U8] = {"U8", 1},
    [ST_DTYPE_I8] = {"I8", 1},		 [ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1}, [ST_DTYPE_I16] = {"I16", 2},
    [ST_DTYPE_U16] = {"U16", 2},	 [ST_DTYPE_F16] = {"F16", 2},
    [ST_DTYPE_BF16] = {"BF16", 2},	 [ST_DTYPE_I32] = {"I32", 4},
    [ST_DTYPE_U32] = {"U32", 4},	 [ST_DTYPE_F32] = {"F32", 4},
    [ST_DTYPE_I64] = {"I64", 8},	 [ST_DTYPE_U64] = {"U64", 8},
    [ST_DTYPE_F64] = {"F64", 8},
};

const char *st_dtype_name(enum st_dtype d)
{
	return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].name : "?";
}

size_t st_dtype_size(enum st_dtype d)
{
	return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].size : 0;
}

static int st_dtype_parse(const char *s, enum st_dtype *out)
{
	for (int i = 0; i < ST_DTYPE_COUNT; i++) {
		if (strcmp(s, st_dtypes[i].name) == 0) {
			*out = (enum st_dtype)i;
			return 0;
		}
	}
	return -EINVAL;
}

__attribute__((format(printf, 4, 5))) static int st_fail(char *err, size_t err_len, int rc,
							 const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Product of the shape times the element size, false on overflow. */
static bool st_shape_bytes(const uint64_t *shape, uint32_t n_dims, size_t elem, uint64_t *out)
{
	uint64_t b = elem;

	for (uint32_t i = 0; i < n_dims; i++) {
		if (__builtin_mul_overflow(b, shape[i], &b))
			return false;
	}
	*out = b;
	return true;
}

/* A JSON integer >= 0 (json-c saturates larger values to INT64_MAX: caught by size checks). */
static bool st_json_u64(struct json_object *o, uint64_t *out)
{
	int64_t v;

	if (!json_object_is_type(o, json_type_int))
		return false;
	v = json_object_get_int64(o);
	if (v < 0)
		return false;
	*out = (uint64_t)v;
	return true;
}

static int st_parse_shape(struct json_object *arr, struct st_tensor *t)
{
	size_t n;

	if (!json_object_is_type(arr, json_type_array))
		return -EINVAL;
	n = json_object_array_length(arr);
	if (n > ST_MAX_DIMS)
		return -EINVAL;
	t->n_dims = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		if (!st_json_u64(json_object_array_get_idx(arr, i), &t->shape[i]))
			return -EINVAL;
	}
	return 0;
}

static int st_parse_offsets(struct json_object *arr, uint64_t off[2])
{
	if (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) != 2)
		return -EINVAL;
	if (!st_json_u64(json_object_array_get_idx(arr, 0), &off[0]) ||
	    !st_json_u64(json_object_array_get_idx(arr, 1), &off[1]) || off[0] > off[1])
		return -EINVAL;
	return 0;
}

/* Validate one header entry into t; data_len is the number of bytes after the header. */
static int st_parse_entry(struct st_file *f, const char *name, struct json_object *v,
			  const uint8_t *data, uint64_t data_len, struct st_tensor *t, char *err,
			  size_t err_len)
{
	struct json_object *dt, *sh, *of;
	uint64_t off[2], bytes;

	t->name = name;
	if (!json_object_is_type(v, json_type_object))
		return st_fail(err, err_len, -EINVAL, "%s: %s: header entry is not an object",
			       f->path, name);
	if (!json_object_object_get_ex(v, "dtype", &dt) ||
	    !json_object_is_type(dt, json_type_string))
		return st_fail(err, err_len, -EINVAL, "%s: %s: missing dtype", f->path, name);
	if (st_dtype_parse(json_object_get_string(dt), &t->dtype))
		return st_fail(err, err_len, -EINVAL, "%s: %s: unknown dtype '%s'", f->path, name,
			       json_object_get_string(dt));
	if (!json_object_object_get_ex(v, "shape", &sh) || st_parse_shape(sh, t))
		return st_fail(err, err_len, -EINVAL,
			       "%s: %s: missing or bad shape (at most %d non-negative integers)",
			       f->path, name, ST_MAX_DIMS);
	if (!json_object_object_get_ex(v, "data_offsets", &of) || st_parse_offsets(of, off))
		return st_fail(
		    err, err_len, -EINVAL,
		    "%s: %s: missing or bad data_offsets (need [begin, end], begin <= end)",
		    f->path, name);
	if (off[1] > data_len)
		return st_fail(err, err_len, -EINVAL,
			       "%s: %s: data_offsets [%llu, %llu] beyond the end of the data "
			       "(%llu bytes; file truncated?)",
			       f->path, name, (unsigned long long)off[0],
			       (unsigned long long)off[1], (unsigned long long)data_len);
	if (!st_shape_bytes(t->shape, t->n_dims, st_dtype_size(t->dtype), &bytes))
		return st_fail(err, err_len, -EINVAL, "%s: %s: shape size overflows", f->path,
			       name);
	if (bytes != off[1] - off[0])
		return st_fail(err, err_len, -EINVAL,
			       "%s: %s: shape needs %llu bytes of %s but data_offsets [%llu, %llu] "
			       "hold %llu",
			       f->path, name, (unsigned long long)bytes, st_dtype_name(t->dtype),
			       (unsigned long long)off[0], (unsigned long long)off[1],
			       (unsigned long long)(off[1] - off[0]));
	t->data = data + off[0];
	t->bytes = bytes;
	return 0;
}

static int st_cmp_data(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;

	if (x->data != y->data)
		return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
	return x->bytes < y->bytes ? -1 : x->bytes > y->bytes;
}

static int st_cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

/* Sorted by start, tensors overlap when one (non-empty) starts before the previous ends. */
static int st_check_overlap(struct st_file *f, const uint8_t *data, char *err, size_t err_len)
{
	const uint8_t *end = data;
	const struct st_tensor *prev = NULL;

	qsort(f->t, f->n, sizeof(*f->t), st_cmp_data);
	for (uint32_t i = 0; i < f->n; i++) {
		const struct st_tensor *t = &f->t[i];

		if (t->bytes == 0)
			continue;
		if (prev && (const uint8_t *)t->data < end)
			return st_fail(err, err_len, -EINVAL,
				       "%s: %s: data_offsets overlap those of %s", f->path, t->name,
				       prev->name);
		end = (const uint8_t *)t->data + t->bytes;
		prev = t;
	}
	return 0;
}

static int st_parse_json(struct st_file *f, const char *hdr, size_t len, char *err, size_t err_len)
{
	struct json_tokener *tok = json_tokener_new();
	enum json_tokener_error je;
	size_t end;

	if (!tok)
		return st_fail(err, err_len, -ENOMEM, "%s: out of memory", f->path);
	f->root = json_tokener_parse_ex(tok, hdr, (int)len);
	je = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!f->root || je != json_tokener_success)
		return st_fail(err, err_len, -EINVAL, "%s: bad JSON header: %s", f->path,
			       je == json_tokener_continue ? "unexpected end"
							   : json_tokener_error_desc(je));
	for (; end < len; end++) {
		if (hdr[end] != ' ' && hdr[end] != '\n' && hdr[end] != '\t' && hdr[end] != '\r')
			return st_fail(err, err_len, -EINVAL,
				       "%s: bad JSON header: trailing bytes after the object",
				       f->path);
	}
	if (!json_object_is_type(f->root, json_type_object))
		return st_fail(err, err_len, -EINVAL, "%s: bad JSON header: not an object",
			       f->path);
	return 0;
}

static int st_parse_header(struct st_file *f, char *err, size_t err_len)
{
	const uint8_t *p = f->map;
	uint64_t hlen = 0, data_len;
	uint32_t i = 0;
	int rc;

	if (f->map_len < 8)
		return st_fail(err, err_len, -EINVAL, "%s: file too short for a header (%zu bytes)",
			       f->path, f->map_len);
	for (int b = 7; b >= 0; b--)
		hlen = (hlen << 8) | p[b];
	if (hlen < 2 || hlen > ST_MAX_HEADER)
		return st_fail(err, err_len, -EINVAL, "%s: header length %llu out of range",
			       f->path, (unsigned long long)hlen);
	if (hlen > f->map_len - 8)
		return st_fail(err, err_len, -EINVAL,
			       "%s: header length %llu beyond the end of the file (%zu bytes; "
			       "truncated?)",
			       f->path, (unsigned long long)hlen, f->map_len);
	rc = st_parse_json(f, (const char *)p + 8, hlen, err, err_len);
	if (rc)
		return rc;
	data_len = f->map_len - 8 - hlen;
	f->t = calloc(json_object_object_length(f->root) + 1, sizeof(*f->t));
	if (!f->t)
		return st_fail(err, err_len, -ENOMEM, "%s: out of memory", f->path);
	json_object_object_foreach(f->root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0)
			continue;
		rc = st_parse_entry(f, key, val, p + 8 + hlen, data_len, &f->t[i], err, err_len);
		if (rc)
			return rc;
		i++;
	}
	f->n = i;
	rc = st_check_overlap(f, p + 8 + hlen, err, err_len);
	if (rc)
		return rc;
	qsort(f->t, f->n, sizeof(*f->t), st_cmp_name);
	return 0;
}

static int st_map(struct st_file *f, char *err, size_t err_len)
{
	struct stat sb;
	int fd, rc = 0;

	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		return st_fail(err, err_len, rc, "%s: cannot open: %s", f->path, strerror(-rc));
	}
	if (fstat(fd, &sb)) {
		rc = -errno;
		st_fail(err, err_len, rc, "%s: cannot stat: %s", f->path, strerror(-rc));
		goto out_close;
	}
	f->map_len = (size_t)sb.st_size;
	if (f->map_len == 0)
		goto out_close; /* rejected by the header check */
	f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		rc = -errno;
		f->map = NULL;
		st_fail(err, err_len, rc, "%s: cannot mmap: %s", f->path, strerror(-rc));
	}
out_close:
	close(fd);
	return rc;
}

int st_open(const char *path, struct st_file **out, char *err, size_t err_len)
{
	struct st_file *f;
	int rc;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		return st_fail(err, err_len, -ENOMEM, "%s: out of memory", path);
	}
	rc = st_map(f, err, err_len);
	if (rc)
		goto out_free;
	rc = st_parse_header(f, err, err_len);
	if (rc)
		goto out_free;
	*out = f;
	return 0;
out_free:
	st_close(f);
	return rc;
}

void st_close(struct st_file *f)
{
	if (!f)
		return;
	if (f->map)
		munmap(f->map, f->map_len);
	if (f->root)
		json_object_put(f->root);
	free(f->t);
	free(f->path);
	free(f);
}

const char *st_path(const struct st_file *f)
{
	return f->path;
}

uint32_t st_count(const struct st_file *f)
{
	return f->n;
}

const struct st_tensor *st_at(const struct st_file *f, uint32_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
	struct st_tensor key = {.name = name};

	return bsearch(&key, f->t, f->n, sizeof(*f->t), st_cmp_name);
}

const char *st_meta(const struct st_file *f, const char *key)
{
	struct json_object *meta, *v;

	if (!json_object_object_get_ex(f->root, "__metadata__", &meta) ||
	    !json_object_object_get_ex(meta, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* ---- writer ---- */

static struct json_object *st_header_entry(const struct st_wtensor *t, uint64_t begin, uint64_t end)
{
	struct json_object *e = json_object_new_object(), *sh = json_object_new_array();
	struct json_object *of = json_object_new_array();

	if (!e || !sh || !of)
		goto out_free;
	for (uint32_t d = 0; d < t->n_dims; d++)
		json_object_array_add(sh, json_object_new_int64((int64_t)t->shape[d]));
	json_object_array_add(of, json_object_new_int64((int64_t)begin));
	json_object_array_add(of, json_object_new_int64((int64_t)end));
	json_object_object_add(e, "dtype", json_object_new_string(st_dtype_name(t->dtype)));
	json_object_object_add(e, "shape", sh);
	json_object_object_add(e, "data_offsets", of);
	return e;
out_free:
	json_object_put(e);
	json_object_put(sh);
	json_object_put(of);
	return NULL;
}

/* Validate the tensor list and build the JSON header; bytes[i] gets tensor i's size. */
static int st_build_header(const struct st_wtensor *t, uint32_t n, const struct st_meta_kv *kv,
			   uint32_t n_kv, uint64_t *bytes, struct json_object **out, char *err,
			   size_t err_len)
{
	struct json_object *root = json_object_new_object(), *meta = json_object_new_object();
	uint64_t off = 0;
	uint32_t i;

	if (!root || !meta)
		goto out_nomem;
	json_object_object_add(meta, "format", json_object_new_string("pt"));
	for (i = 0; i < n_kv; i++) {
		if (!kv[i].key || !kv[i].key[0] || !kv[i].value) {
			json_object_put(root);
			json_object_put(meta);
			return st_fail(err, err_len, -EINVAL, "metadata entry %u: no key or value",
				       i);
		}
		json_object_object_add(meta, kv[i].key, json_object_new_string(kv[i].value));
	}
	json_object_object_add(root, "__metadata__", meta);
	meta = NULL;
	for (i = 0; i < n; i++) {
		struct json_object *e;

		if (!t[i].name || !t[i].name[0] ||
		    json_object_object_get_ex(root, t[i].name, NULL) ||
		    (unsigned)t[i].dtype >= ST_DTYPE_COUNT || t[i].n_dims > ST_MAX_DIMS ||
		    !st_shape_bytes(t[i].shape, t[i].n_dims, st_dtype_size(t[i].dtype),
				    &bytes[i]) ||
		    __builtin_add_overflow(off, bytes[i], &off) || off > INT64_MAX)
			goto out_inval;
		e = st_header_entry(&t[i], off - bytes[i], off);
		if (!e)
			goto out_nomem;
		json_object_object_add(root, t[i].name, e);
	}
	*out = root;
	return 0;
out_inval:
	json_object_put(root);
	return st_fail(err, err_len, -EINVAL,
		       "tensor %u (%s): empty, reserved or duplicate name, "
		       "or bad dtype or shape",
		       i, t[i].name ? t[i].name : "(null)");
out_nomem:
	json_object_put(root);
	json_object_put(meta);
	return st_fail(err, err_len, -ENOMEM, "out of memory");
}

/* Header length (little endian), the JSON and spaces up to an 8-byte boundary. */
static int st_write_header(FILE *fp, struct json_object *root)
{
	const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(js), pad = (8 - (len % 8)) % 8;
	uint64_t hlen = len + pad;
	uint8_t le[8];

	for (int b = 0; b < 8; b++)
		le[b] = (uint8_t)(hlen >> (8 * b));
	if (fwrite(le, 1, 8, fp) != 8 || fwrite(js, 1, len, fp) != len)
		return -EIO;
	for (size_t i = 0; i < pad; i++) {
		if (fputc(' ', fp) == EOF)
			return -EIO;
	}
	return 0;
}

static int st_write_data(FILE *fp, const struct st_wtensor *t, uint32_t idx, uint64_t bytes,
			 const struct st_fill *fill, void *buf)
{
	size_t esz = st_dtype_size(t->dtype);
	uint64_t n = bytes / esz, chunk = ST_CHUNK_BYTES / esz;
	int rc;

	if (t->data)
		return fwrite(t->data, 1, bytes, fp) == bytes ? 0 : -EIO;
	if (!fill || !fill->fn)
		return -EINVAL;
	for (uint64_t first = 0; first < n; first += chunk) {
		uint64_t k = n - first < chunk ? n - first : chunk;

		rc = fill->fn(fill->ctx, idx, buf, first, k);
		if (rc)
			return rc;
		if (fwrite(buf, esz, k, fp) != k)
			return -EIO;
	}
	return 0;
}

/* A stdio failure as -errno (ENOSPC matters to the user), -EIO when errno says nothing. */
static int st_io_rc(int rc)
{
	return rc == -EIO && errno ? -errno : rc;
}

static int st_write_stream(FILE *fp, const char *tmp, const struct st_wtensor *t, uint32_t n,
			   const uint64_t *bytes, struct json_object *root,
			   const struct st_fill *fill, void *buf, char *err, size_t err_len)
{
	int rc;

	errno = 0;
	rc = st_write_header(fp, root);
	if (rc)
		return st_fail(err, err_len, st_io_rc(rc), "%s: header write failed: %s", tmp,
			       strerror(-st_io_rc(rc)));
	for (uint32_t i = 0; i < n; i++) {
		errno = 0;
		rc = st_write_data(fp, &t[i], i, bytes[i], fill, buf);
		if (rc) {
			rc = st_io_rc(rc);
			return st_fail(err, err_len, rc, "%s: %s: write failed: %s", tmp, t[i].name,
				       strerror(-rc));
		}
	}
	errno = 0;
	if (fflush(fp) || fsync(fileno(fp))) {
		rc = st_io_rc(-EIO);
		return st_fail(err, err_len, rc, "%s: write failed: %s", tmp, strerror(-rc));
	}
	return 0;
}

int st_write(const char *path, const struct st_wtensor *t, uint32_t n, const struct st_fill *fill,
	     char *err, size_t err_len)
{
	return st_write_meta(path, t, n, fill, NULL, 0, err, err_len);
}

int st_write_meta(const char *path, const struct st_wtensor *t, uint32_t n,
		  const struct st_fill *fill, const struct st_meta_kv *meta, uint32_t n_meta,
		  char *err, size_t err_len)
{
	struct json_object *root = NULL;
	uint64_t *bytes = calloc(n + 1, sizeof(*bytes));
	void *buf = malloc(ST_CHUNK_BYTES);
	char *tmp = NULL;
	FILE *fp;
	int rc;

	if (!bytes || !buf || asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		rc = st_fail(err, err_len, -ENOMEM, "%s: out of memory", path);
		goto out_free;
	}
	rc = st_build_header(t, n, meta, n_meta, bytes, &root, err, err_len);
	if (rc)
		goto out_free;
	fp = fopen(tmp, "wb");
	if (!fp) {
		rc = -errno;
		st_fail(err, err_len, rc, "%s: cannot create: %s", tmp, strerror(-rc));
		goto out_free;
	}
	rc = st_write_stream(fp, tmp, t, n, bytes, root, fill, buf, err, err_len);
	if (fclose(fp) && !rc)
		rc = st_fail(err, err_len, -EIO, "%s: close failed", tmp);
	if (!rc && rename(tmp, path)) {
		rc = -errno;
		st_fail(err, err_len, rc, "%s: rename to %s failed: %s", tmp, path, strerror(-rc));
	}
	if (rc)
		unlink(tmp);
out_free:
	json_object_put(root);
	free(tmp);
	free(buf);
	free(bytes);
	return rc;
}
