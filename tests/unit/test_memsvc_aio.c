/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc aio: every test runs against each backend (uring, sync), plain and through the fault
 * wrapper: round trips with tags, fixed buffers, short transfers continued, EAGAIN retried, EIO
 * returned per operation, corruption and delays injected, end of file, bad arguments, depth.
 * uring is skipped with a message where io_uring is unavailable; sync always runs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aio.h"
#include "aio_fault.h"
#include "timeutil.h"

#define BLK 4096u
#define NBLK 64u

struct fx {
	enum aio_kind kind;
	char path[64];
	int fd;
	uint8_t *buf; /* NBLK blocks */
	struct aio_fault *fault;
	struct aio *a;
};

static const enum aio_kind k_uring = AIO_KIND_URING, k_sync = AIO_KIND_SYNC;

static uint8_t pattern(uint32_t blk, uint32_t i)
{
	return (uint8_t)(blk * 131u + i * 7u + (i >> 9));
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct aio_opts o = {.depth = 16, .n_fds = 1};
	int rc;

	f->kind = *(const enum aio_kind *)*state;
	snprintf(f->path, sizeof(f->path), "/tmp/sparda-aio-XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	unlink(f->path);
	assert_int_equal(posix_memalign((void **)&f->buf, BLK, NBLK * BLK), 0);
	f->fault = aio_fault_new();
	assert_non_null(f->fault);
	o.fds = &f->fd;
	o.fault = f->fault;
	rc = aio_open(f->kind, &o, &f->a);
	if (rc < 0 && f->kind == AIO_KIND_URING) {
		printf("SKIP uring: io_uring unavailable here (%d)\n", rc);
		*state = f;
		skip();
	}
	assert_int_equal(rc, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (!f || f == (const void *)&k_uring || f == (const void *)&k_sync)
		return 0;
	aio_free(f->a);
	aio_fault_free(f->fault);
	close(f->fd);
	free(f->buf);
	free(f);
	return 0;
}

static void fill(struct fx *f)
{
	for (uint32_t b = 0; b < NBLK; b++)
		for (uint32_t i = 0; i < BLK; i++)
			f->buf[b * BLK + i] = pattern(b, i);
}

/* Reap exactly n completions; res[tag] receives each result. */
static void reap_n(struct aio *a, uint32_t n, int32_t *res)
{
	struct aio_cqe c[8];

	while (n > 0) {
		int got = aio_reap(a, c, 8, 5000);
		assert_true(got > 0);
		for (int i = 0; i < got; i++)
			res[c[i].tag] = c[i].res;
		n -= (uint32_t)got;
	}
}

/* Write every block (depth-limited batches) and return the per-block results. */
static void write_all(struct fx *f, int32_t *res)
{
	for (uint32_t b = 0; b < NBLK; b += 16) {
		for (uint32_t j = b; j < b + 16; j++)
			assert_int_equal(aio_prep(f->a, AIO_OP_WRITE, 0, f->buf + j * BLK, BLK,
						  (uint64_t)j * BLK, j),
					 0);
		assert_int_equal(aio_submit(f->a), 0);
		reap_n(f->a, 16, res);
	}
}

static void read_all(struct fx *f, int32_t *res)
{
	memset(f->buf, 0, NBLK * BLK);
	for (uint32_t b = 0; b < NBLK; b += 16) {
		for (uint32_t j = b; j < b + 16; j++)
			assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf + j * BLK, BLK,
						  (uint64_t)j * BLK, j),
					 0);
		assert_int_equal(aio_submit(f->a), 0);
		reap_n(f->a, 16, res);
	}
}

static uint32_t wrong_bytes(const struct fx *f, uint32_t blk)
{
	uint32_t bad = 0;

	for (uint32_t i = 0; i < BLK; i++)
		bad += f->buf[blk * BLK + i] != pattern(blk, i);
	return bad;
}

static void roundtrip(struct fx *f)
{
	int32_t res[NBLK];

	fill(f);
	write_all(f, res);
	for (uint32_t b = 0; b < NBLK; b++)
		assert_int_equal(res[b], (int32_t)BLK);
	read_all(f, res);
	for (uint32_t b = 0; b < NBLK; b++) {
		assert_int_equal(res[b], (int32_t)BLK);
		assert_int_equal(wrong_bytes(f, b), 0);
	}
	assert_int_equal(aio_inflight(f->a), 0);
}

static void test_roundtrip(void **state)
{
	struct fx *f = *state;

	assert_non_null(
	    strstr(aio_backend_name(f->a), f->kind == AIO_KIND_URING ? "uring" : "sync"));
	roundtrip(f);
}

static void test_fixed_buffers(void **state)
{
	struct fx *f = *state;

	assert_int_equal(aio_buffers_register(f->a, f->buf, NBLK * BLK), 0);
	assert_int_equal(aio_buffers_register(f->a, f->buf, NBLK * BLK), -EEXIST);
	assert_int_equal(aio_buffers_register(f->a, f->buf + BLK, BLK), -EEXIST);
	assert_int_equal(aio_buffers_regions(f->a), 1);
	assert_int_equal(aio_has_fixed_buffers(f->a), f->kind == AIO_KIND_URING);
	roundtrip(f);
	/* a buffer outside the region still works, without the fixed opcode */
	uint8_t *other = NULL;
	int32_t res[1];
	assert_int_equal(posix_memalign((void **)&other, BLK, BLK), 0);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, other, BLK, 0, 0), 0);
	assert_int_equal(aio_buffers_unregister(f->a), -EBUSY);
	reap_n(f->a, 1, res);
	assert_int_equal(res[0], (int32_t)BLK);
	assert_int_equal(memcmp(other, f->buf, BLK), 0);
	free(other);
	assert_int_equal(aio_buffers_unregister(f->a), 0);
	assert_false(aio_has_fixed_buffers(f->a));
	assert_int_equal(aio_buffers_regions(f->a), 0);
}

/*
 * Several regions registered together: reads into each land through the right fixed buffer
 * (a wrong buffer index fails the fixed read with -EFAULT), the table holds AIO_MAX_REGIONS.
 */
static void test_fixed_regions(void **state)
{
	struct fx *f = *state;
	uint8_t *extra[AIO_MAX_REGIONS - 1];
	int32_t res[NBLK];
	uint32_t tag = 0;

	fill(f);
	write_all(f, res);
	assert_int_equal(aio_buffers_register(f->a, f->buf, NBLK * BLK), 0);
	for (uint32_t i = 0; i < AIO_MAX_REGIONS - 1; i++) {
		assert_int_equal(posix_memalign((void **)&extra[i], BLK, 4 * BLK), 0);
		memset(extra[i], 0, 4 * BLK);
		assert_int_equal(aio_buffers_register(f->a, extra[i], 4 * BLK), 0);
	}
	assert_int_equal(aio_buffers_regions(f->a), AIO_MAX_REGIONS);
	assert_int_equal(aio_buffers_register(f->a, f->buf + NBLK * BLK, BLK), -ENOSPC);
	assert_int_equal(aio_has_fixed_buffers(f->a), f->kind == AIO_KIND_URING);
	/* block 5 into the second block of every extra region, block 6 into the first region */
	for (uint32_t i = 0; i < AIO_MAX_REGIONS - 1; i++)
		assert_int_equal(
		    aio_prep(f->a, AIO_OP_READ, 0, extra[i] + BLK, BLK, 5ull * BLK, tag++), 0);
	memset(f->buf + 7 * BLK, 0, BLK);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf + 7 * BLK, BLK, 6ull * BLK, tag++),
			 0);
	reap_n(f->a, tag, res);
	for (uint32_t i = 0; i < tag; i++)
		assert_int_equal(res[i], (int32_t)BLK);
	for (uint32_t i = 0; i < AIO_MAX_REGIONS - 1; i++) {
		for (uint32_t b = 0; b < BLK; b++)
			assert_int_equal(extra[i][BLK + b], pattern(5, b));
		assert_int_equal(extra[i][0], 0);
	}
	for (uint32_t b = 0; b < BLK; b++)
		assert_int_equal(f->buf[7 * BLK + b], pattern(6, b));
	/* a write from a later region goes out through its fixed buffer too */
	assert_int_equal(aio_prep(f->a, AIO_OP_WRITE, 0, extra[2] + BLK, BLK, 9ull * BLK, 0), 0);
	reap_n(f->a, 1, res);
	assert_int_equal(res[0], (int32_t)BLK);
	assert_int_equal(aio_buffers_unregister(f->a), 0);
	assert_int_equal(aio_buffers_regions(f->a), 0);
	for (uint32_t i = 0; i < AIO_MAX_REGIONS - 1; i++)
		free(extra[i]);
}

static void test_short_continued(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {.action = AIO_FAULT_SHORT, .short_by = 1000, .times = 40};
	int32_t res[NBLK];

	aio_fault_set(f->fault, &r);
	roundtrip(f);
	assert_int_equal(aio_fault_hits(f->fault), 40);
	assert_true(aio_retries(f->a) >= 40);
	(void)res;
}

static void test_eagain_retried(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {.action = AIO_FAULT_ERRNO, .err = EAGAIN, .times = 10};

	aio_fault_set(f->fault, &r);
	roundtrip(f);
	assert_int_equal(aio_fault_hits(f->fault), 10);
	r.err = EINTR;
	aio_fault_set(f->fault, &r);
	roundtrip(f);
	assert_int_equal(aio_fault_hits(f->fault), 10);
}

static void test_eagain_forever_fails(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {.action = AIO_FAULT_ERRNO, .err = EAGAIN};
	int32_t res[1] = {0};

	aio_fault_set(f->fault, &r);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf, BLK, 0, 0), 0);
	assert_int_equal(aio_submit(f->a), 0);
	reap_n(f->a, 1, res);
	assert_int_equal(res[0], -EAGAIN);
	assert_int_equal(aio_inflight(f->a), 0);
}

static void test_eio_per_op(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {
	    .action = AIO_FAULT_ERRNO, .err = EIO, .nth = 5, .match = AIO_FAULT_MATCH_READ};
	int32_t res[NBLK];

	fill(f);
	write_all(f, res);
	aio_fault_set(f->fault, &r);
	read_all(f, res);
	for (uint32_t b = 0; b < NBLK; b++) {
		assert_int_equal(res[b], b == 4 ? -EIO : (int32_t)BLK);
		if (b != 4)
			assert_int_equal(wrong_bytes(f, b), 0);
	}
	r = (struct aio_fault_rule){.action = AIO_FAULT_ERRNO, .err = ENOSPC, .nth = 2};
	aio_fault_set(f->fault, &r);
	fill(f);
	write_all(f, res);
	assert_int_equal(res[1], -ENOSPC);
	assert_int_equal(res[2], (int32_t)BLK);
}

static void test_corrupt_read(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {.action = AIO_FAULT_CORRUPT, .nth = 3};
	int32_t res[NBLK];
	uint32_t bad = 0;

	fill(f);
	write_all(f, res);
	aio_fault_set(f->fault, &r);
	read_all(f, res);
	for (uint32_t b = 0; b < NBLK; b++)
		bad += wrong_bytes(f, b);
	assert_int_equal(bad, 1);
	assert_int_equal(wrong_bytes(f, 2), 1);
}

static void test_delay(void **state)
{
	struct fx *f = *state;
	struct aio_fault_rule r = {.action = AIO_FAULT_DELAY, .delay_ms = 150};
	struct aio_cqe c[2];
	uint64_t t0;

	fill(f);
	aio_fault_set(f->fault, &r);
	assert_int_equal(aio_prep(f->a, AIO_OP_WRITE, 0, f->buf, BLK, 0, 7), 0);
	assert_int_equal(aio_submit(f->a), 0);
	t0 = time_now_ms();
	assert_int_equal(aio_reap(f->a, c, 2, 0), 0);
	assert_int_equal(aio_reap(f->a, c, 2, 30), 0);
	assert_int_equal(aio_inflight(f->a), 1);
	assert_int_equal(aio_reap(f->a, c, 2, 3000), 1);
	assert_true(time_now_ms() - t0 >= 140);
	assert_int_equal(c[0].tag, 7);
	assert_int_equal(c[0].res, (int32_t)BLK);
}

static void test_eof_and_args(void **state)
{
	struct fx *f = *state;
	int32_t res[1];

	fill(f);
	assert_int_equal(pwrite(f->fd, f->buf, 100, 0), 100);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf, BLK, 0, 0), 0);
	reap_n(f->a, 1, res);
	assert_int_equal(res[0], 100);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 1, f->buf, BLK, 0, 0), -EINVAL);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf, 0, 0, 0), -EINVAL);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, NULL, BLK, 0, 0), -EINVAL);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf + i * BLK, BLK, 0, i), 0);
	assert_int_equal(aio_prep(f->a, AIO_OP_READ, 0, f->buf, BLK, 0, 99), -EBUSY);
	assert_int_equal(aio_inflight(f->a), 16);
	/* aio_free with operations in flight waits for them (teardown) */
}

static void test_open_args(void **state)
{
	struct aio_opts o = {.depth = 4, .n_fds = 1};
	struct aio *a = NULL;
	int fd = 0;

	assert_int_equal(aio_open(AIO_KIND_SYNC, &o, &a), -EINVAL); /* no fds */
	o.fds = &fd;
	o.depth = 0;
	assert_int_equal(aio_open(AIO_KIND_SYNC, &o, &a), -EINVAL);
	o.depth = 4;
	assert_int_equal(aio_open(AIO_KIND_AUTO, &o, &a), 0);
	printf("auto backend: %s\n", aio_backend_name(a));
	aio_free(a);
	aio_free(NULL);
}

/* SQPOLL where the kernel grants it (the ring falls back to plain otherwise): same results. */
static void test_sqpoll(void **state)
{
	struct fx *f = *state;
	struct aio_opts o = {.depth = 16, .fds = &f->fd, .n_fds = 1, .sqpoll = true};

	aio_free(f->a);
	f->a = NULL;
	assert_int_equal(aio_open(f->kind, &o, &f->a), 0);
	printf("sqpoll requested: backend %s\n", aio_backend_name(f->a));
	roundtrip(f);
}

#define BOTH(fn)                                                                                   \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&k_uring),           \
	    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&k_sync)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    BOTH(test_roundtrip),
	    BOTH(test_fixed_buffers),
	    BOTH(test_fixed_regions),
	    BOTH(test_short_continued),
	    BOTH(test_eagain_retried),
	    BOTH(test_eagain_forever_fails),
	    BOTH(test_eio_per_op),
	    BOTH(test_corrupt_read),
	    BOTH(test_delay),
	    BOTH(test_eof_and_args),
	    BOTH(test_sqpoll),
	    cmocka_unit_test(test_open_args),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
