// SPDX-License-Identifier: Apache-2.0
/*
 * safetensors reader and writer: round trips (direct data and chunked fill), and one test per
 * malformed-file case checking the errno and that the message names the tensor and problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

struct st_env {
	char dir[64];
	char path[128];
	char err[512];
};

static int setup(void **state)
{
	struct st_env *e = calloc(1, sizeof(*e));

	if (!e)
		return -1;
	strcpy(e->dir, "/tmp/sparda-st-XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->path, sizeof(e->path), "%s/t.safetensors", e->dir);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct st_env *e = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	if (system(cmd) != 0)
		return -1;
	free(e);
	return 0;
}

/* A file with a chosen header-length field, header text and number of data bytes. */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, size_t data_len)
{
	FILE *fp = fopen(path, "wb");
	uint8_t le[8];

	assert_non_null(fp);
	for (int b = 0; b < 8; b++)
		le[b] = (uint8_t)(hlen >> (8 * b));
	assert_int_equal(fwrite(le, 1, 8, fp), 8);
	assert_int_equal(fwrite(hdr, 1, strlen(hdr), fp), strlen(hdr));
	for (size_t i = 0; i < data_len; i++)
		fputc((int)(i & 0xff), fp);
	assert_int_equal(fclose(fp), 0);
}

static void write_hdr(const char *path, const char *hdr, size_t data_len)
{
	write_raw(path, strlen(hdr), hdr, data_len);
}

/* Open must fail with rc and a message containing every given fragment. */
static void expect_fail(struct st_env *e, int rc, const char *frag1, const char *frag2)
{
	struct st_file *f = (struct st_file *)0x1;

	e->err[0] = 0;
	assert_int_equal(st_open(e->path, &f, e->err, sizeof(e->err)), rc);
	assert_null(f);
	assert_non_null(strstr(e->err, e->path));
	if (frag1 && !strstr(e->err, frag1))
		fail_msg("'%s' lacks '%s'", e->err, frag1);
	if (frag2 && !strstr(e->err, frag2))
		fail_msg("'%s' lacks '%s'", e->err, frag2);
}

static void test_round_trip(void **state)
{
	struct st_env *e = *state;
	uint16_t a[6] = {1, 2, 3, 4, 5, 6};
	float b[3] = {1.5f, -2.0f, 3.25f};
	struct st_wtensor w[3] = {
	    {.name = "x.weight", .dtype = ST_DTYPE_BF16, .n_dims = 2, .shape = {2, 3}, .data = a},
	    {.name = "b", .dtype = ST_DTYPE_F32, .n_dims = 1, .shape = {3}, .data = b},
	    {.name = "empty", .dtype = ST_DTYPE_I8, .n_dims = 2, .shape = {0, 7}, .data = a},
	};
	const struct st_tensor *t;
	struct st_file *f;
	struct stat sb;

	assert_int_equal(st_write(e->path, w, 3, NULL, e->err, sizeof(e->err)), 0);
	assert_int_equal(stat(e->path, &sb), 0);
	assert_int_equal(st_open(e->path, &f, e->err, sizeof(e->err)), 0);
	assert_int_equal(st_count(f), 3);
	assert_string_equal(st_at(f, 0)->name, "b"); /* name order */
	t = st_find(f, "x.weight");
	assert_non_null(t);
	assert_int_equal(t->dtype, ST_DTYPE_BF16);
	assert_int_equal(t->n_dims, 2);
	assert_int_equal(t->shape[0], 2);
	assert_int_equal(t->shape[1], 3);
	assert_int_equal(t->bytes, 12);
	assert_memory_equal(t->data, a, 12);
	assert_int_equal((uintptr_t)t->data % 8, 0); /* first tensor: data start is 8-aligned */
	t = st_find(f, "b");
	assert_non_null(t);
	assert_int_equal(t->dtype, ST_DTYPE_F32);
	assert_memory_equal(t->data, b, 12);
	t = st_find(f, "empty");
	assert_non_null(t);
	assert_int_equal(t->bytes, 0);
	assert_null(st_find(f, "missing"));
	assert_null(st_at(f, 3));
	assert_int_equal((sb.st_size - 24) % 8, 0); /* 8 + padded header + 24 data bytes */
	st_close(f);
	/* the temporary file is gone after the rename */
	strcat(e->path, ".tmp");
	assert_int_not_equal(access(e->path, F_OK), 0);
}

static int fill_pattern(void *ctx, uint32_t idx, void *buf, uint64_t first, uint64_t n)
{
	uint16_t *p = buf;

	(void)ctx;
	for (uint64_t i = 0; i < n; i++)
		p[i] = (uint16_t)((first + i) * 7 + idx);
	return 0;
}

static int fill_fail(void *ctx, uint32_t idx, void *buf, uint64_t first, uint64_t n)
{
	return first > 0 ? -ENOSPC : fill_pattern(ctx, idx, buf, first, n);
}

static void test_fill_chunks(void **state)
{
	struct st_env *e = *state;
	/* 3.5M bf16 elements: several 4 MiB chunks */
	struct st_wtensor w[2] = {
	    {.name = "big", .dtype = ST_DTYPE_BF16, .n_dims = 2, .shape = {1750, 2000}},
	    {.name = "small", .dtype = ST_DTYPE_BF16, .n_dims = 1, .shape = {5}},
	};
	struct st_fill fill = {.fn = fill_pattern};
	const struct st_tensor *t;
	const uint16_t *p;
	struct st_file *f;

	assert_int_equal(st_write(e->path, w, 2, &fill, e->err, sizeof(e->err)), 0);
	assert_int_equal(st_open(e->path, &f, e->err, sizeof(e->err)), 0);
	t = st_find(f, "big");
	assert_non_null(t);
	p = t->data;
	for (uint64_t i = 0; i < 3500000; i += 9973)
		assert_int_equal(p[i], (uint16_t)(i * 7));
	assert_int_equal(p[3499999], (uint16_t)(3499999ull * 7));
	p = st_find(f, "small")->data;
	assert_int_equal(p[4], 4 * 7 + 1);
	st_close(f);

	/* a failing fill aborts the write and leaves no file behind */
	unlink(e->path);
	fill.fn = fill_fail;
	assert_int_equal(st_write(e->path, w, 2, &fill, e->err, sizeof(e->err)), -ENOSPC);
	assert_non_null(strstr(e->err, "big"));
	assert_int_not_equal(access(e->path, F_OK), 0);
}

static void test_writer_errors(void **state)
{
	struct st_env *e = *state;
	uint16_t a[2] = {0};
	struct st_wtensor w[2] = {
	    {.name = "dup", .dtype = ST_DTYPE_BF16, .n_dims = 1, .shape = {2}, .data = a},
	    {.name = "dup", .dtype = ST_DTYPE_BF16, .n_dims = 1, .shape = {2}, .data = a},
	};
	char bad[160];

	assert_int_equal(st_write(e->path, w, 2, NULL, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, "dup"));
	snprintf(bad, sizeof(bad), "%s/no/such/dir/x.safetensors", e->dir);
	assert_int_equal(st_write(bad, w, 1, NULL, e->err, sizeof(e->err)), -ENOENT);
	/* no data and no fill */
	w[0].data = NULL;
	assert_int_equal(st_write(e->path, w, 1, NULL, e->err, sizeof(e->err)), -EINVAL);
}

static void test_missing_and_short(void **state)
{
	struct st_env *e = *state;
	FILE *fp;

	expect_fail(e, -ENOENT, "cannot open", NULL);
	fp = fopen(e->path, "wb");
	assert_non_null(fp);
	fclose(fp);
	expect_fail(e, -EINVAL, "too short", NULL);
	fp = fopen(e->path, "wb");
	fputs("abc", fp);
	fclose(fp);
	expect_fail(e, -EINVAL, "too short", NULL);
}

static void test_header_length(void **state)
{
	struct st_env *e = *state;

	/* truncated header: the length field says more than the file holds */
	write_raw(e->path, 100, "{\"a\":{\"dtype\":\"BF16\"", 0);
	expect_fail(e, -EINVAL, "header length 100 beyond the end of the file", NULL);
	write_raw(e->path, 1ull << 40, "{}", 0);
	expect_fail(e, -EINVAL, "out of range", NULL);
	write_raw(e->path, 1, "{}", 0);
	expect_fail(e, -EINVAL, "out of range", NULL);
}

static void test_bad_json(void **state)
{
	struct st_env *e = *state;

	write_hdr(e->path, "{\"a\": {\"dtype\": \"BF16\", ", 0);
	expect_fail(e, -EINVAL, "bad JSON", NULL);
	write_hdr(e->path, "{\"a\" 1}", 0);
	expect_fail(e, -EINVAL, "bad JSON", NULL);
	write_hdr(e->path, "[1, 2]", 0);
	expect_fail(e, -EINVAL, "bad JSON", "not an object");
	write_hdr(e->path, "{} x", 0);
	expect_fail(e, -EINVAL, "bad JSON", "trailing");
	write_hdr(e->path, "{\"w\": 5}", 0);
	expect_fail(e, -EINVAL, "w: header entry is not an object", NULL);
}

static void test_entry_fields(void **state)
{
	struct st_env *e = *state;

	write_hdr(e->path, "{\"w\":{\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
	expect_fail(e, -EINVAL, "w: missing dtype", NULL);
	write_hdr(e->path, "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
	expect_fail(e, -EINVAL, "w: unknown dtype 'Q4_K'", NULL);
	write_hdr(e->path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 4);
	expect_fail(e, -EINVAL, "w: missing or bad shape", NULL);
	write_hdr(e->path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2.0],\"data_offsets\":[0,4]}}",
		  4);
	expect_fail(e, -EINVAL, "w: missing or bad shape", NULL);
	write_hdr(e->path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,0]}}", 4);
	expect_fail(e, -EINVAL, "w: missing or bad data_offsets", NULL);
	write_hdr(e->path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0]}}", 4);
	expect_fail(e, -EINVAL, "w: missing or bad data_offsets", NULL);
}

static void test_offsets_and_sizes(void **state)
{
	struct st_env *e = *state;

	/* data truncated: offsets past the end of the file */
	write_hdr(e->path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 6);
	expect_fail(e, -EINVAL, "w: data_offsets [0, 8] beyond the end of the data (6 bytes", NULL);
	/* shape and byte size disagree */
	write_hdr(e->path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
	expect_fail(e, -EINVAL, "w: shape needs 12 bytes of F32 but data_offsets [0, 8] hold 8",
		    NULL);
	/* shape whose byte size overflows 64 bits */
	write_hdr(e->path,
		  "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],"
		  "\"data_offsets\":[0,8]}}",
		  8);
	expect_fail(e, -EINVAL, "w: shape size overflows", NULL);
	/* overlapping tensors */
	write_hdr(e->path,
		  "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
		  "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[6,14]}}",
		  16);
	expect_fail(e, -EINVAL, "b: data_offsets overlap those of a", NULL);
}

static void test_metadata_ignored(void **state)
{
	struct st_env *e = *state;
	struct st_file *f;

	/* metadata ignored, holes allowed, empty tensors may share an offset */
	write_hdr(e->path,
		  "{\"__metadata__\":{\"format\":\"pt\"},"
		  "\"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
		  "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
		  "\"b\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[6,8]}}  ",
		  8);
	assert_int_equal(st_open(e->path, &f, e->err, sizeof(e->err)), 0);
	assert_int_equal(st_count(f), 3);
	assert_null(st_find(f, "__metadata__"));
	assert_int_equal(((const uint8_t *)st_find(f, "b")->data)[1], 7);
	st_close(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fill_chunks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writer_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_and_short, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_length, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_json, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_entry_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_offsets_and_sizes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_metadata_ignored, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
