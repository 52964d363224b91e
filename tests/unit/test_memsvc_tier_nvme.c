/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc NVMe tier storage: many units written and read back against an oracle (zero wrong
 * bytes) over each aio backend; a byte corrupted on disk, a wrong identity or generation, and
 * injected EIO / short reads / EAGAIN / corruption are misses, never wrong bytes; ENOSPC (a real
 * small tmpfs where mounting is allowed, and injected) degrades the tier and it recovers; a hung
 * write times out without freeing its buffer; a fault loop fails the Nth I/O for N = 1, 2, ...
 * Direct restores (the read buffer registered as the arena): taken only where they can be,
 * verified where they land, and misses under corruption, EIO, a short file or a hung read.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cmocka.h>

#include "aio_fault.h"
#include "crc32c.h"
#include "tier_nvme.h"
#include "timeutil.h"

#define UNIT 32768u
#define NUNITS 512u

static const enum aio_kind k_uring = AIO_KIND_URING, k_sync = AIO_KIND_SYNC;

struct fx {
	enum aio_kind kind;
	char dir[64];
	bool mounted; /* a tmpfs on dir: teardown detaches it, also after a skip or failure */
	const char *dirs[1];
	struct aio_fault *fault;
	struct tier_nvme_opts o;
	struct tier_nvme *t;
	uint8_t *units; /* NUNITS * UNIT, the data written */
	uint8_t *out;	/* NUNITS * UNIT, read back */
	uint32_t crc[NUNITS];
	struct tier_nvme_wreq w[NUNITS];
	struct tier_nvme_rreq r[NUNITS];
};

static struct tier_nvme_key key_of(uint32_t i)
{
	return (struct tier_nvme_key){.tenant = 3,
				      .session = 0x100000000ull + 7,
				      .seq = i / 64,
				      .layer = (i / 8) % 8,
				      .head = i % 2,
				      .block = i % 64,
				      .gen = 1 + i % 5};
}

static void fill_units(struct fx *f, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < (size_t)NUNITS * UNIT; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(f->units + i, &x, 8);
	}
	for (uint32_t i = 0; i < NUNITS; i++)
		f->crc[i] = crc32c(0, f->units + (size_t)i * UNIT, UNIT);
}

static int open_tier(struct fx *f)
{
	int rc = tier_nvme_open(&f->o, &f->t);

	if (rc < 0 && f->kind == AIO_KIND_URING &&
	    (rc == -ENOSYS || rc == -EPERM || rc == -EACCES || rc == -ENOMEM)) {
		printf("SKIP uring: io_uring unavailable here (%d)\n", rc);
		skip();
	}
	return rc;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->kind = *(const enum aio_kind *)*state;
	*state = f;
	snprintf(f->dir, sizeof(f->dir), "/tmp/sparda-tiern-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->dirs[0] = f->dir;
	f->fault = aio_fault_new();
	f->units = malloc((size_t)NUNITS * UNIT);
	/* aligned like an arena's slots: direct restores may read into it */
	assert_int_equal(posix_memalign((void **)&f->out, 4096, (size_t)NUNITS * UNIT), 0);
	assert_non_null(f->units);
	assert_non_null(f->out);
	fill_units(f, 1);
	f->o = (struct tier_nvme_opts){.dirs = f->dirs,
				       .n_dirs = 1,
				       .file_bytes = 32ull << 20,
				       .grow_bytes = 4u << 20,
				       .unit_bytes = UNIT,
				       .batch_bytes = 1u << 20,
				       .queue_depth = 16,
				       .aio_kind = f->kind,
				       .backoff_ms = 50,
				       .io_timeout_ms = 5000,
				       .fault = f->fault};
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	tier_nvme_free(f->t);
	aio_fault_free(f->fault);
	if (f->mounted) /* lazy: the ring's file references go away asynchronously */
		umount2(f->dir, MNT_DETACH);
	rmdir(f->dir);
	free(f->units);
	free(f->out);
	free(f);
	return 0;
}

/* Write units [from, from+n); returns how many were stored. */
static int write_units(struct fx *f, uint32_t from, uint32_t n)
{
	for (uint32_t i = from; i < from + n; i++)
		f->w[i] =
		    (struct tier_nvme_wreq){.key = key_of(i), .unit = f->units + (size_t)i * UNIT};
	return tier_nvme_write(f->t, f->w + from, n);
}

/* Read units [from, from+n) into out (poisoned first); returns the hits. */
static int read_units(struct fx *f, uint32_t from, uint32_t n)
{
	memset(f->out + (size_t)from * UNIT, 0xee, (size_t)n * UNIT);
	for (uint32_t i = from; i < from + n; i++)
		f->r[i] = (struct tier_nvme_rreq){
		    .key = key_of(i), .extent = f->w[i].extent, .dst = f->out + (size_t)i * UNIT};
	return tier_nvme_read(f->t, f->r + from, n);
}

/* A hit must be the bytes written; a miss must leave the poison. Returns wrong units. */
static uint32_t check_units(const struct fx *f, uint32_t from, uint32_t n)
{
	uint32_t wrong = 0;

	for (uint32_t i = from; i < from + n; i++) {
		const uint8_t *got = f->out + (size_t)i * UNIT;
		if (f->r[i].res == 0)
			wrong += crc32c(0, got, UNIT) != f->crc[i] ||
				 memcmp(got, f->units + (size_t)i * UNIT, UNIT) != 0;
		else
			wrong += got[0] != 0xee || got[UNIT - 1] != 0xee;
	}
	return wrong;
}

static void test_roundtrip_many(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	uint32_t h;

	assert_int_equal(open_tier(f), 0);
	h = tier_nvme_header_bytes(f->t);
	printf("aio=%s direct=%d header=%u\n", tier_nvme_aio_name(f->t), tier_nvme_direct(f->t), h);
	/* from the files' alignment and block size (4 KiB without O_DIRECT), a power of two */
	assert_true(h >= 512 && h <= 4096 && (h & (h - 1)) == 0);
	assert_true(tier_nvme_direct(f->t) || h == 4096);
	assert_int_equal(tier_nvme_extent_bytes(f->t), h + (UNIT + h - 1) / h * h);
	assert_int_equal(write_units(f, 0, NUNITS), NUNITS);
	/* read in a different grouping than written: odd batches of 37 */
	for (uint32_t i = 0; i < NUNITS; i += 37) {
		uint32_t n = NUNITS - i < 37 ? NUNITS - i : 37;
		assert_int_equal(read_units(f, i, n), (int)n);
	}
	assert_int_equal(check_units(f, 0, NUNITS), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.units_written, NUNITS);
	assert_int_equal(st.units_read, NUNITS);
	assert_int_equal(st.extents_used, NUNITS);
	assert_true(st.write_ios < NUNITS / 8); /* consecutive extents went out together */
	assert_int_equal(st.crc_failures + st.io_errors + st.id_mismatches, 0);
	for (uint32_t i = 0; i < NUNITS; i++)
		assert_int_equal(tier_nvme_extent_free(f->t, f->w[i].extent), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.extents_used, 0);
}

static void test_odd_unit_size(void **state)
{
	struct fx *f = *state;

	f->o.unit_bytes = 5000; /* not a multiple of the header block: the extent pads it */
	f->o.header_bytes = 4096;
	assert_int_equal(open_tier(f), 0);
	assert_int_equal(tier_nvme_header_bytes(f->t), 4096);
	assert_int_equal(tier_nvme_extent_bytes(f->t), 4096 + 8192);
	tier_nvme_free(f->t);
	f->o.header_bytes = 512;
	assert_int_equal(open_tier(f), 0);
	assert_int_equal(tier_nvme_extent_bytes(f->t), 512 + 5120);
	for (uint32_t i = 0; i < 40; i++) {
		f->w[i] =
		    (struct tier_nvme_wreq){.key = key_of(i), .unit = f->units + (size_t)i * UNIT};
	}
	assert_int_equal(tier_nvme_write(f->t, f->w, 40), 40);
	for (uint32_t i = 0; i < 40; i++)
		f->r[i] = (struct tier_nvme_rreq){
		    .key = key_of(i), .extent = f->w[i].extent, .dst = f->out + (size_t)i * UNIT};
	assert_int_equal(tier_nvme_read(f->t, f->r, 40), 40);
	for (uint32_t i = 0; i < 40; i++)
		assert_memory_equal(f->out + (size_t)i * UNIT, f->units + (size_t)i * UNIT, 5000);
}

/* Flip one byte of a file at off through a plain descriptor. */
static void flip_on_disk(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x01;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

/*
 * Write 16 units, flip a data byte of unit 3 and a header byte of unit 9 on disk, read all
 * back: both are misses (-EBADMSG), the other 14 hit.
 */
static void corrupt_two(struct fx *f)
{
	char path[256];
	uint64_t off;

	assert_int_equal(write_units(f, 0, 16), 16);
	assert_int_equal(tier_nvme_extent_locate(f->t, f->w[3].extent, path, sizeof(path), &off),
			 0);
	flip_on_disk(path, off + tier_nvme_header_bytes(f->t) + 12345); /* data byte */
	assert_int_equal(tier_nvme_extent_locate(f->t, f->w[9].extent, path, sizeof(path), &off),
			 0);
	flip_on_disk(path, off + 20); /* header byte (session) */
	assert_int_equal(read_units(f, 0, 16), 14);
	assert_int_equal(f->r[3].res, -EBADMSG);
	assert_int_equal(f->r[9].res, -EBADMSG);
}

static void test_corrupt_on_disk(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	assert_int_equal(open_tier(f), 0);
	corrupt_two(f);
	assert_int_equal(check_units(f, 0, 16), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.crc_failures, 2);
	assert_int_equal(st.units_read, 14);
}

static void test_identity(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	assert_int_equal(open_tier(f), 0);
	assert_int_equal(write_units(f, 0, 4), 4);
	memset(f->out, 0xee, UNIT);
	struct tier_nvme_rreq r = {.key = key_of(0), .extent = f->w[0].extent, .dst = f->out};
	r.key.gen++; /* stale generation */
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 0);
	assert_int_equal(r.res, -EBADMSG);
	r.key = key_of(0);
	r.key.tenant++; /* another tenant's name for the same extent */
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 0);
	assert_int_equal(r.res, -EBADMSG);
	r.key = key_of(1); /* another unit's extent */
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 0);
	assert_int_equal(r.res, -EBADMSG);
	assert_int_equal(f->out[0], 0xee);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.id_mismatches, 3);
	assert_int_equal(st.crc_failures, 0);
	assert_int_equal(tier_nvme_extent_free(f->t, f->w[0].extent), 0);
	assert_int_equal(tier_nvme_extent_free(f->t, f->w[0].extent), -ENOENT);
	r.key = key_of(0);
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 0);
	assert_int_equal(r.res, -ENOENT);
	assert_int_equal(tier_nvme_extent_free(f->t, 1ull << 40), -EINVAL);
	r.extent = 1ull << 40;
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 0);
	assert_int_equal(r.res, -EINVAL);
}

/* Read 32 units with one fault rule; returns hits; every unit is right or a clean miss. */
static int read_with(struct fx *f, struct aio_fault_rule rule)
{
	int hits;

	aio_fault_set(f->fault, &rule);
	hits = read_units(f, 0, 32);
	assert_int_equal(check_units(f, 0, 32), 0);
	assert_true(aio_fault_hits(f->fault) > 0);
	aio_fault_set(f->fault, &(struct aio_fault_rule){0});
	return hits;
}

static void test_injected_read_faults(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	f->o.batch_bytes = 4 * (4096 + UNIT); /* several read ops per call */
	assert_int_equal(open_tier(f), 0);
	assert_int_equal(write_units(f, 0, 32), 32);
	assert_int_equal(
	    read_with(f, (struct aio_fault_rule){.action = AIO_FAULT_ERRNO, .err = EIO, .nth = 2}),
	    28);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.io_errors, 1);
	assert_int_equal(read_with(f, (struct aio_fault_rule){.action = AIO_FAULT_SHORT,
							      .short_by = 4096,
							      .times = 5}),
			 32);
	assert_int_equal(
	    read_with(
		f, (struct aio_fault_rule){.action = AIO_FAULT_ERRNO, .err = EAGAIN, .times = 3}),
	    32);
	assert_int_equal(
	    read_with(f, (struct aio_fault_rule){.action = AIO_FAULT_CORRUPT, .nth = 3}), 31);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.crc_failures, 1);
	assert_int_equal(st.io_errors, 1);
}

static void test_injected_write_eio(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	f->o.batch_bytes = 4 * (4096 + UNIT);
	assert_int_equal(open_tier(f), 0);
	aio_fault_set(f->fault,
		      &(struct aio_fault_rule){.action = AIO_FAULT_ERRNO, .err = EIO, .nth = 2});
	assert_int_equal(write_units(f, 0, 16), 12);
	for (uint32_t i = 4; i < 8; i++)
		assert_int_equal(f->w[i].res, -EIO);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.extents_used, 12);
	assert_int_equal(st.io_errors, 1);
	assert_false(st.degraded);
}

static void test_injected_enospc(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;
	uint64_t ops;

	assert_int_equal(open_tier(f), 0);
	aio_fault_set(f->fault, &(struct aio_fault_rule){.action = AIO_FAULT_ERRNO,
							 .err = ENOSPC,
							 .match = AIO_FAULT_MATCH_WRITE});
	assert_int_equal(write_units(f, 0, 8), 0);
	assert_int_equal(f->w[0].res, -ENOSPC);
	assert_true(tier_nvme_degraded(f->t));
	ops = aio_fault_ops(f->fault);
	assert_int_equal(write_units(f, 8, 8), 0); /* inside the back-off: no I/O at all */
	assert_int_equal(aio_fault_ops(f->fault), ops);
	aio_fault_set(f->fault, &(struct aio_fault_rule){0});
	time_sleep_ns(60 * 1000000ull);
	assert_int_equal(write_units(f, 8, 8), 8);
	assert_false(tier_nvme_degraded(f->t));
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.degraded_entries, 1);
	assert_int_equal(st.recoveries, 1);
	assert_true(st.enospc_events >= 1);
	assert_int_equal(st.extents_used, 8);
	assert_int_equal(read_units(f, 8, 8), 8);
	assert_int_equal(check_units(f, 8, 8), 0);
}

static void test_hung_write(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	f->o.io_timeout_ms = 40;
	assert_int_equal(open_tier(f), 0);
	aio_fault_set(f->fault, &(struct aio_fault_rule){
				    .action = AIO_FAULT_DELAY, .delay_ms = 250, .times = 1});
	assert_int_equal(write_units(f, 0, 4), 0);
	assert_int_equal(f->w[0].res, -ETIMEDOUT);
	assert_int_equal(write_units(f, 4, 4), -EBUSY); /* the staging buffer is still the I/O's */
	assert_int_equal(f->w[4].res, -EBUSY);
	time_sleep_ns(300 * 1000000ull);
	assert_int_equal(write_units(f, 4, 4), 4);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.extents_used, 4); /* the timed-out extents came back */
	assert_int_equal(read_units(f, 4, 4), 4);
	assert_int_equal(check_units(f, 4, 4), 0);
}

/*
 * The two-halves write: both lanes out at once (a third start is refused with every request
 * answered), a read and a plain write while they run, the units changed after start (staged
 * already), every unit read back; bad counts and handles refused.
 */
static void test_write_start_wait(void **state)
{
	struct fx *f = *state;
	uint32_t b, h[2];
	int rc;

	assert_int_equal(open_tier(f), 0);
	b = tier_nvme_batch_units(f->t);
	assert_int_equal(b, (1u << 20) / tier_nvme_extent_bytes(f->t));
	assert_true(4 * b <= NUNITS);
	assert_int_equal(write_units(f, 0, b), (int)b); /* to read while the lanes are out */
	for (uint32_t k = 0; k < 3; k++)
		for (uint32_t i = (k + 1) * b; i < (k + 2) * b; i++)
			f->w[i] = (struct tier_nvme_wreq){.key = key_of(i),
							  .unit = f->units + (size_t)i * UNIT};
	for (uint32_t k = 0; k < 2; k++) {
		rc = tier_nvme_write_start(f->t, f->w + (k + 1) * b, b);
		assert_true(rc >= 0);
		h[k] = (uint32_t)rc;
	}
	assert_int_not_equal(h[0], h[1]);
	assert_int_equal(tier_nvme_write_start(f->t, f->w + 3 * b, b), -EBUSY);
	for (uint32_t i = 3 * b; i < 4 * b; i++)
		assert_int_equal(f->w[i].res, -EBUSY);
	/* staged at start: what the caller does with its buffers now changes nothing */
	memset(f->units + (size_t)b * UNIT, 0x5a, UNIT);
	assert_int_equal(tier_nvme_write_wait(f->t, (int)h[0]), (int)b);
	assert_int_equal(read_units(f, 0, b), (int)b); /* on the lane the first write freed */
	assert_int_equal(check_units(f, 0, b), 0);
	assert_int_equal(write_units(f, 3 * b, b), (int)b);
	assert_int_equal(tier_nvme_write_wait(f->t, (int)h[1]), (int)b);
	assert_int_equal(tier_nvme_write_wait(f->t, (int)h[1]), -EINVAL); /* waited already */
	fill_units(f, 1); /* the bytes that were written */
	assert_int_equal(read_units(f, 0, 4 * b), (int)(4 * b));
	assert_int_equal(check_units(f, 0, 4 * b), 0);
	assert_int_equal(tier_nvme_write_start(f->t, f->w, b + 1), -EINVAL);
	assert_int_equal(f->w[b].res, -EINVAL);
	assert_int_equal(tier_nvme_write_start(f->t, f->w, 0), -EINVAL);
	assert_int_equal(tier_nvme_write_wait(f->t, 2), -EINVAL);
	assert_int_equal(tier_nvme_write_wait(f->t, -1), -EINVAL);
}

/* One run of the fault loop: write, read, free; a clean error and no leak whatever fails. */
static uint32_t wrong_hits(const struct fx *f, uint32_t from, uint32_t n);

static void fault_loop_run(struct fx *f)
{
	struct tier_nvme_stats st;
	uint32_t stored = 0;

	assert_int_equal(open_tier(f), 0);
	assert_true(write_units(f, 0, 8) >= 0);
	assert_true(write_units(f, 8, 8) >= 0);
	for (uint32_t i = 0; i < 16; i++) {
		assert_true(f->w[i].res == 0 || f->w[i].res == -EIO);
		stored += f->w[i].res == 0;
	}
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.extents_used, stored);
	read_units(f, 0, 16);
	for (uint32_t i = 0; i < 16; i++) /* a unit whose write failed can only miss */
		if (f->w[i].res != 0)
			assert_int_not_equal(f->r[i].res, 0);
	/* direct restores (test_direct_fault_loop) may leave a miss's dst changed */
	if (tier_nvme_direct_read(f->t))
		assert_int_equal(wrong_hits(f, 0, 16), 0);
	else
		assert_int_equal(check_units(f, 0, 16), 0);
	for (uint32_t i = 0; i < 16; i++)
		if (f->w[i].res == 0)
			assert_int_equal(tier_nvme_extent_free(f->t, f->w[i].extent), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.extents_used, 0);
	tier_nvme_free(f->t);
	f->t = NULL;
}

static void test_fault_loop(void **state)
{
	struct fx *f = *state;
	uint64_t n;

	f->o.batch_bytes = 3 * (4096 + UNIT);
	for (n = 1; n < 1000; n++) {
		aio_fault_set(f->fault, &(struct aio_fault_rule){
					    .action = AIO_FAULT_ERRNO, .err = EIO, .nth = n});
		fault_loop_run(f);
		if (aio_fault_hits(f->fault) == 0)
			break;
	}
	printf("fault loop: clean after %llu runs\n", (unsigned long long)n);
	assert_true(n > 4 && n < 1000);
}

/* ENOSPC from a real filesystem: a 2 MiB tmpfs, filled up, then emptied. */
static void test_real_enospc(void **state)
{
	struct fx *f = *state;
	char filler[96];
	uint8_t *chunk = calloc(1, 64 * 1024);
	int fd, stored;

	if (mount("tmpfs", f->dir, "tmpfs", 0, "size=2m") < 0) {
		printf("SKIP real ENOSPC: cannot mount tmpfs (%s); injected ENOSPC is tested\n",
		       strerror(errno));
		free(chunk);
		skip();
	}
	f->mounted = true;
	f->o.grow_bytes = 256u << 10;
	f->o.file_bytes = 8u << 20;
	assert_int_equal(open_tier(f), 0);
	snprintf(filler, sizeof(filler), "%s/filler", f->dir);
	fd = open(filler, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	while (write(fd, chunk, 64 * 1024) > 0)
		;
	close(fd);
	stored = write_units(f, 0, 64);
	assert_true(stored < 64);
	assert_true(tier_nvme_degraded(f->t));
	assert_int_equal(f->w[63].res, -ENOSPC);
	/* what was stored before the filesystem filled up is intact */
	assert_int_equal(read_units(f, 0, (uint32_t)stored), stored);
	assert_int_equal(check_units(f, 0, (uint32_t)stored), 0);
	unlink(filler);
	time_sleep_ns(60 * 1000000ull);
	assert_int_equal(write_units(f, 64, 16), 16);
	assert_false(tier_nvme_degraded(f->t));
	free(chunk);
}

static void test_open_args(void **state)
{
	struct fx *f = *state;
	const char *nodir[1] = {"/nonexistent-sparda-dir"};

	f->o.unit_bytes = 0;
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -EINVAL);
	f->o.unit_bytes = UNIT;
	f->o.file_bytes = 1000; /* smaller than one extent */
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -EINVAL);
	f->o.file_bytes = 1 << 20;
	f->o.header_bytes = 1000; /* not a power of two */
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -EINVAL);
	f->o.header_bytes = 256; /* below a sector */
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -EINVAL);
	f->o.header_bytes = 0;
	f->o.n_dirs = 0;
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -EINVAL);
	f->o.n_dirs = 1;
	f->o.dirs = nodir;
	assert_int_equal(tier_nvme_open(&f->o, &f->t), -ENOENT);
	assert_null(f->t);
	tier_nvme_free(NULL);
}

/* ---- direct restores: the read buffer is the registered arena ---------------------------- */

/* Open with f->out as the arena; true when this run reads direct (uring, O_DIRECT). */
static bool open_direct(struct fx *f)
{
	struct tier_nvme_stats st;

	f->o.arena = f->out;
	f->o.arena_bytes = (size_t)NUNITS * UNIT;
	assert_int_equal(open_tier(f), 0);
	tier_nvme_get_stats(f->t, &st);
	/* the sync backend takes the registration as a no-op: not registered, copy path */
	assert_int_equal(st.arena_registered, f->kind == AIO_KIND_URING);
	assert_int_equal(tier_nvme_direct_read(f->t),
			 f->kind == AIO_KIND_URING && tier_nvme_direct(f->t));
	return tier_nvme_direct_read(f->t);
}

/* Hits are the bytes written; with direct reads a miss may leave anything in dst. */
static uint32_t check_hits(const struct fx *f, uint32_t from, uint32_t n, bool direct)
{
	return direct ? 0 : check_units(f, from, n);
}

static uint32_t wrong_hits(const struct fx *f, uint32_t from, uint32_t n)
{
	uint32_t wrong = 0;

	for (uint32_t i = from; i < from + n; i++)
		wrong += f->r[i].res == 0 &&
			 memcmp(f->out + (size_t)i * UNIT, f->units + (size_t)i * UNIT, UNIT) != 0;
	return wrong;
}

static void test_direct_roundtrip(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;
	bool direct = open_direct(f);

	assert_int_equal(write_units(f, 0, 96), 96);
	aio_fault_set(f->fault, &(struct aio_fault_rule){0}); /* counts operations only */
	assert_int_equal(read_units(f, 0, 96), 96);
	assert_int_equal(check_units(f, 0, 96), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.units_read, 96);
	assert_int_equal(st.direct_reads, direct ? 96 : 0);
	/* direct: two operations per unit, all seen by the fault wrapper; else batched */
	if (direct)
		assert_int_equal(aio_fault_ops(f->fault), 2 * 96);
	else
		assert_true(aio_fault_ops(f->fault) < 96);
	/* a dst outside the arena goes through staging even when direct reads are on */
	uint8_t *other = NULL;
	assert_int_equal(posix_memalign((void **)&other, 4096, UNIT), 0);
	struct tier_nvme_rreq r = {.key = key_of(5), .extent = f->w[5].extent, .dst = other};
	assert_int_equal(tier_nvme_read(f->t, &r, 1), 1);
	assert_memory_equal(other, f->units + 5 * (size_t)UNIT, UNIT);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.direct_reads, direct ? 96 : 0);
	free(other);
}

static void test_direct_off(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;

	f->o.no_direct_read = true;
	f->o.arena = f->out;
	f->o.arena_bytes = (size_t)NUNITS * UNIT;
	assert_int_equal(open_tier(f), 0);
	assert_false(tier_nvme_direct_read(f->t));
	assert_int_equal(write_units(f, 0, 16), 16);
	assert_int_equal(read_units(f, 0, 16), 16);
	assert_int_equal(check_units(f, 0, 16), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.direct_reads, 0);
	/* a queue of one cannot hold both parts of a direct read: staging then */
	tier_nvme_free(f->t);
	f->o.no_direct_read = false;
	f->o.queue_depth = 1;
	assert_int_equal(open_tier(f), 0);
	assert_false(tier_nvme_direct_read(f->t));
	assert_int_equal(write_units(f, 0, 16), 16);
	assert_int_equal(read_units(f, 0, 16), 16);
	assert_int_equal(check_units(f, 0, 16), 0);
}

/* A unit or header byte flipped on disk: a miss through the direct path, never a hit. */
static void test_direct_corrupt(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;
	bool direct;

	f->o.unlink_early = false;
	direct = open_direct(f);
	corrupt_two(f);
	assert_int_equal(wrong_hits(f, 0, 16), 0);
	assert_int_equal(check_hits(f, 0, 16, direct), 0);
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.crc_failures, 2);
	assert_int_equal(st.units_read, 14);
	assert_int_equal(st.direct_reads, direct ? 16 : 0);
}

/* Faults injected under the direct reads: misses or retried hits, never wrong bytes. */
static void test_direct_faults(void **state)
{
	struct fx *f = *state;
	struct tier_nvme_stats st;
	bool direct;
	/*
	 * Operations in order: direct, unit i's header block is 2i+1 and its data 2i+2; copy,
	 * one operation per 4 units.
	 */
	const struct {
		struct aio_fault_rule rule;
		int hits, hits_copy;
	} cases[] = {
	    {{.action = AIO_FAULT_ERRNO, .err = EIO, .nth = 2}, 31, 28},
	    /* continued by aio for the rest: every unit hits */
	    {{.action = AIO_FAULT_SHORT, .short_by = 4096, .times = 5}, 32, 32},
	    {{.action = AIO_FAULT_ERRNO, .err = EAGAIN, .times = 3}, 32, 32},
	    /* direct: a byte of the header block's padding (not covered, not used): a hit */
	    {{.action = AIO_FAULT_CORRUPT, .nth = 3}, 32, 31},
	    {{.action = AIO_FAULT_CORRUPT, .nth = 4}, 31, 31},
	    {{.action = AIO_FAULT_ERRNO, .err = EIO, .nth = 5}, 31, 28},
	};

	f->o.batch_bytes = 4 * (4096 + UNIT); /* several read ops per call */
	direct = open_direct(f);

	assert_int_equal(write_units(f, 0, 32), 32);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		aio_fault_set(f->fault, &cases[c].rule);
		assert_int_equal(read_units(f, 0, 32), direct ? cases[c].hits : cases[c].hits_copy);
		assert_true(aio_fault_hits(f->fault) > 0);
		assert_int_equal(wrong_hits(f, 0, 32), 0);
		assert_int_equal(check_hits(f, 0, 32, direct), 0);
		aio_fault_set(f->fault, &(struct aio_fault_rule){0});
	}
	tier_nvme_get_stats(f->t, &st);
	assert_int_equal(st.crc_failures, direct ? 1 : 2);
	assert_int_equal(st.io_errors, 2);
}

/* The file ends inside a unit: the read comes back short (end of file), a miss. */
static void test_direct_short_file(void **state)
{
	struct fx *f = *state;
	char path[256];
	uint64_t off;
	bool direct;
	int fd;

	f->o.unlink_early = false;
	f->o.grow_bytes = 1; /* the file ends where its extents do */
	direct = open_direct(f);
	assert_int_equal(write_units(f, 0, 4), 4);
	assert_int_equal(tier_nvme_extent_locate(f->t, f->w[3].extent, path, sizeof(path), &off),
			 0);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(off + tier_nvme_header_bytes(f->t) + 8192)), 0);
	close(fd);
	/* copy: the four units are one read, all missed */
	assert_int_equal(read_units(f, 0, 4), direct ? 3 : 0);
	assert_int_equal(f->r[3].res, -EIO);
	assert_int_equal(wrong_hits(f, 0, 4), 0);
}

/* The fault loop (EIO at the Nth operation) with restores read straight into the arena. */
static void test_direct_fault_loop(void **state)
{
	struct fx *f = *state;

	f->o.arena = f->out;
	f->o.arena_bytes = (size_t)NUNITS * UNIT;
	test_fault_loop(state);
}

/* A hung direct read: the call times out, dst stays the I/O's until the tier is unstuck. */
static void test_direct_hung_read(void **state)
{
	struct fx *f = *state;
	bool direct;

	f->o.io_timeout_ms = 40;
	direct = open_direct(f);
	assert_int_equal(write_units(f, 0, 4), 4);
	aio_fault_set(f->fault, &(struct aio_fault_rule){.action = AIO_FAULT_DELAY,
							 .match = AIO_FAULT_MATCH_READ,
							 .delay_ms = 250,
							 .times = 1});
	assert_int_equal(read_units(f, 0, 4), 0);
	assert_int_equal(f->r[0].res, -ETIMEDOUT);
	assert_int_equal(f->r[0].dst_busy, direct);
	assert_true(tier_nvme_stuck(f->t));
	assert_int_equal(read_units(f, 0, 4), -EBUSY);
	assert_int_equal(f->r[0].res, -EBUSY);
	assert_false(f->r[0].dst_busy);
	time_sleep_ns(300 * 1000000ull);
	assert_false(tier_nvme_stuck(f->t));
	assert_int_equal(read_units(f, 0, 4), 4);
	assert_int_equal(check_units(f, 0, 4), 0);
}

#define BOTH(fn)                                                                                   \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&k_uring),           \
	    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&k_sync)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    BOTH(test_roundtrip_many),
	    BOTH(test_odd_unit_size),
	    BOTH(test_corrupt_on_disk),
	    BOTH(test_identity),
	    BOTH(test_injected_read_faults),
	    BOTH(test_injected_write_eio),
	    BOTH(test_injected_enospc),
	    BOTH(test_hung_write),
	    BOTH(test_write_start_wait),
	    BOTH(test_fault_loop),
	    BOTH(test_real_enospc),
	    BOTH(test_direct_roundtrip),
	    BOTH(test_direct_off),
	    BOTH(test_direct_corrupt),
	    BOTH(test_direct_faults),
	    BOTH(test_direct_short_file),
	    BOTH(test_direct_hung_read),
	    BOTH(test_direct_fault_loop),
	    cmocka_unit_test_prestate_setup_teardown(test_open_args, setup, teardown,
						     (void *)&k_sync),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
