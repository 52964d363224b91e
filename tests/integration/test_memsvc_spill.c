/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: sparda-memsvc with an NVMe tier and an arena four times smaller than the data.
 * Every unit is written with a per-unit pattern, spilled, read back through ring Forecasts and
 * checked byte for byte (zero wrong bytes), with io_uring and with the pread/pwrite fallback;
 * then corrupt spill files, injected EIO/EAGAIN/short transfers, ENOSPC (injected, and a small
 * tmpfs when mounting is allowed) and SIGKILL while spilling: misses and counters, never wrong
 * bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "memsvc_harness.h"
#include "timeutil.h"

#define SLOTS 64u
#define UNIT 512u  /* harness_geometry: 2 x 8 tokens x 16 x bf16 */
#define BLOCKS 64u /* 2 layers x 2 heads x 64 blocks = 256 units = 4 x the arena */
#define BATCH 16u
#define KEY 0x5b111ull
#define FAULT_ENV "SPARDA_MEMSVC_TEST_AIO_FAULT"

struct fx {
	char *dir;
	struct memsvc_proc *p;
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u[2 * 2 * BLOCKS];
	uint32_t n;
	uint64_t step;
	uint32_t enospc, nospc_answers;
};

/*
 * 512-byte header blocks: the 512-byte units are whole blocks, so with io_uring and O_DIRECT
 * restores read straight into their arena slots (4 KiB headers leave them on the copy path).
 * start_daemon turns spill-direct-restore on with it (off otherwise, the daemon's default).
 */
#define DIRECT_ARG "--spill-header-bytes=512"

static bool is_direct(const char *arg)
{
	return arg && !strcmp(arg, DIRECT_ARG);
}

static struct memsvc_proc *start_daemon(const char *dir, const char *aio, const char *extra,
					const char *extra2)
{
	char a0[PATH_MAX + 16], a1[32];
	const char *args[] = {a0,
			      a1,
			      is_direct(extra) || is_direct(extra2) ? "--spill-direct-restore=true"
								  : "--spill-direct-restore=false",
			      "--spill-high-water=0.75",
			      "--spill-low-water=0.5",
			      "--spill-backoff-ms=100",
			      "--spill-batch-bytes=64K",
			      extra,
			      extra ? extra2 : NULL,
			      NULL};

	snprintf(a0, sizeof(a0), "--spill-dirs=%s", dir);
	snprintf(a1, sizeof(a1), "--spill-aio=%s", aio);
	return harness_start(args);
}

static void fx_start2(struct fx *f, const char *aio, enum sp_wait_mode mode, const char *extra,
		      const char *extra2)
{
	struct sp_geometry g = harness_geometry();

	if (!f->dir)
		f->dir = harness_tmpdir();
	f->p = start_daemon(f->dir, aio, extra, extra2);
	assert_int_equal(harness_open(f->p, NULL, mode, SLOTS * (uint64_t)UNIT, &f->c), 0);
	assert_int_equal(memclient_n_slots(f->c), SLOTS);
	assert_int_equal(memclient_seq_open(f->c, KEY, BLOCKS, &f->seq), 0);
	f->n = 0;
	for (uint32_t l = 0; l < g.n_layers; l++)
		for (uint32_t h = 0; h < g.n_kv_heads; h++)
			for (uint32_t b = 0; b < BLOCKS; b++)
				f->u[f->n++] = (struct memclient_unit){f->seq, l, h, b};
}

static void fx_start(struct fx *f, const char *aio, enum sp_wait_mode mode, const char *extra)
{
	fx_start2(f, aio, mode, extra, NULL);
}

static void fx_stop(struct fx *f)
{
	memclient_close(f->c);
	f->c = NULL;
	memsvc_proc_free(f->p);
	f->p = NULL;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f) {
		fx_stop(f);
		harness_rmdir(f->dir);
		free(f);
	}
	unsetenv(FAULT_ENV);
	return 0;
}

static int setup(void **state)
{
	*state = calloc(1, sizeof(struct fx));
	return *state ? 0 : -1;
}

/*
 * Allocate a batch, waiting while eviction frees slots; with a RAM-only (degraded) tier a full
 * arena answers -ENOSPC, which is retried until the tier recovers.
 */
static void alloc_batch(struct fx *f, uint32_t i, struct memclient_result *r)
{
	uint64_t end = time_now_ms() + 20000;
	struct memclient_result one;

	assert_int_equal(memclient_alloc_wait(f->c, f->u + i, BATCH, r, 20000), 0);
	for (uint32_t j = 0; j < BATCH; j++) {
		while (r[j].status == -ENOSPC && time_now_ms() < end) {
			f->enospc++;
			time_sleep_ns(20000000);
			assert_int_equal(memclient_alloc_wait(f->c, &f->u[i + j], 1, &one, 20000),
					 0);
			r[j] = one;
		}
	}
}

/* Allocate, fill with the pattern, commit: all units. */
static void write_all(struct fx *f)
{
	struct memclient_result r[BATCH];
	size_t ub = memclient_geometry(f->c)->unit_bytes;

	for (uint32_t i = 0; i < f->n; i += BATCH) {
		alloc_batch(f, i, r);
		for (uint32_t j = 0; j < BATCH; j++) {
			assert_int_equal(r[j].status, 0);
			harness_fill(memclient_slot_ptr(f->c, r[j].slot), ub, KEY, &f->u[i + j]);
		}
		assert_int_equal(memclient_commit(f->c, f->u + i, BATCH, 0, r), 0);
		for (uint32_t j = 0; j < BATCH; j++)
			assert_int_equal(r[j].status, 0);
	}
}

/*
 * Forecast every unit back over the ring, a batch per step, checking the bytes of each hit
 * and publishing the step after. Returns the wrong bytes; *misses counts -ENOENT answers.
 */
static size_t read_all(struct fx *f, uint32_t *misses)
{
	struct memclient_result r[BATCH];
	size_t ub = memclient_geometry(f->c)->unit_bytes, wrong = 0;

	*misses = 0;
	for (uint32_t i = 0; i < f->n; i += BATCH) {
		f->step++;
		assert_int_equal(memclient_forecast(f->c, f->u + i, BATCH, f->step, r), 0);
		for (uint32_t j = 0; j < BATCH; j++) {
			if (r[j].status == -ENOENT) {
				(*misses)++;
				continue;
			}
			if (r[j].status == -ENOSPC) { /* RAM-only tier, arena full */
				f->nospc_answers++;
				continue;
			}
			assert_int_equal(r[j].status, 0);
			wrong += harness_check(memclient_slot_ptr(f->c, r[j].slot), ub, KEY,
					       &f->u[i + j]);
		}
		memclient_epoch_publish(f->c, f->step);
	}
	return wrong;
}

/* Wait until the daemon has spilled at least n units. */
static void wait_spilled(struct fx *f, uint64_t n)
{
	uint64_t end = time_now_ms() + 10000;

	while (harness_stat(f->c, "daemon.spill.units_spilled") < n && time_now_ms() < end)
		time_sleep_ns(10000000);
	assert_true(harness_stat(f->c, "daemon.spill.units_spilled") >= n);
}


static void readback(void **state, const char *aio, enum sp_wait_mode mode, const char *extra)
{
	struct fx *f = *state;
	int port = harness_free_port();
	bool uring = !strcmp(aio, "uring");
	char arg[32], want[96], *page;
	uint32_t misses;

	snprintf(arg, sizeof(arg), "--metrics-port=%d", port);
	fx_start2(f, aio, mode, arg, extra);
	assert_int_equal(harness_stat(f->c, "daemon.spill.enabled"), 1);
	write_all(f);
	wait_spilled(f, f->n - SLOTS);
	assert_true(harness_stat(f->c, "session.units_spilled") >= f->n - SLOTS);
	/* Twice: the second pass restores units that were restored and evicted again. */
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(read_all(f, &misses), 0);
		assert_int_equal(misses, 0);
	}
	/* ... through vectored Forecasts: their spilled units' answers came deferred */
	assert_int_equal(memclient_forecasts_vectored(f->c), 2 * (f->n / BATCH));
	assert_true(harness_stat(f->c, "daemon.spill.units_restored") >= f->n - SLOTS);
	assert_int_equal(harness_stat(f->c, "daemon.spill.restore_misses"), 0);
	assert_int_equal(harness_stat(f->c, "daemon.spill.crc_failures"), 0);
	assert_int_equal(harness_stat(f->c, "daemon.spill.aio_uring"), uring);
	/* the sync backend never registers the arena; uring does (root or a large memlock) */
	if (!uring)
		assert_int_equal(harness_stat(f->c, "daemon.spill.arena_registered"), 0);
	if (!uring || !harness_stat(f->c, "daemon.spill.arena_registered"))
		assert_int_equal(harness_stat(f->c, "daemon.spill.units_direct"), 0);
	else if (extra && !strcmp(extra, DIRECT_ARG))
		assert_true(harness_stat(f->c, "daemon.spill.units_direct") >= f->n - SLOTS);
	printf("%s%s: arena_registered=%llu units_direct=%llu units_restored=%llu\n", aio,
	       extra ? " direct" : "",
	       (unsigned long long)harness_stat(f->c, "daemon.spill.arena_registered"),
	       (unsigned long long)harness_stat(f->c, "daemon.spill.units_direct"),
	       (unsigned long long)harness_stat(f->c, "daemon.spill.units_restored"));
	/* The same on /metrics. */
	page = harness_http_get(port, "/metrics");
	assert_non_null(page);
	snprintf(want, sizeof(want), "sparda_memsvc_spill_aio_backend{backend=\"%s\"} 1", aio);
	assert_non_null(strstr(page, want));
	assert_non_null(strstr(page, "sparda_memsvc_tier_units_total{direction=\"restore\"}"));
	assert_non_null(strstr(page, "sparda_memsvc_restore_seconds_count"));
	assert_non_null(strstr(page, "sparda_memsvc_spill_errors_total{kind=\"crc\"} 0"));
	snprintf(want, sizeof(want), "sparda_memsvc_restore_direct_total %llu\n",
		 (unsigned long long)harness_stat(f->c, "daemon.spill.units_direct"));
	assert_non_null(strstr(page, want));
	snprintf(want, sizeof(want), "sparda_memsvc_spill_arena_registered %llu\n",
		 (unsigned long long)harness_stat(f->c, "daemon.spill.arena_registered"));
	assert_non_null(strstr(page, want));
	free(page);
	/* Closing the sequence frees its extents. */
	assert_int_equal(memclient_seq_close(f->c, f->seq), 0);
	assert_int_equal(harness_stat(f->c, "session.extents"), 0);
}

static void test_readback_uring(void **state)
{
	readback(state, "uring", SP_WAIT_POLL, NULL);
}

static void test_readback_sync(void **state)
{
	readback(state, "sync", SP_WAIT_SLEEP, NULL);
}

static void test_readback_uring_direct(void **state)
{
	readback(state, "uring", SP_WAIT_POLL, DIRECT_ARG);
}

static void test_readback_sync_direct(void **state)
{
	readback(state, "sync", SP_WAIT_SLEEP, DIRECT_ARG);
}

/*
 * Flip bytes in the unit part of every extent (ext bytes: a header block, then the 512-byte
 * unit padded to the header block's size, so the unit starts at ext / 2) of the daemon's
 * (unlinked) spill files.
 */
static uint32_t corrupt_spill_files(pid_t pid, uint64_t ext)
{
	char path[64], link[PATH_MAX];
	uint32_t files = 0;
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	assert_non_null(dir);
	while ((d = readdir(dir))) {
		char fd_path[400];
		struct stat st;
		ssize_t n;
		int fd;

		snprintf(fd_path, sizeof(fd_path), "%s/%s", path, d->d_name);
		n = readlink(fd_path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strstr(link, "sparda-spill-"))
			continue;
		fd = open(fd_path, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		for (off_t off = 0; off + (off_t)ext <= st.st_size; off += (off_t)ext)
			assert_int_equal(pwrite(fd, "\xde\xad\xbe\xef", 4, off + (off_t)ext / 2 + 100),
					 4);
		assert_int_equal(fsync(fd), 0);
		close(fd);
		files++;
	}
	closedir(dir);
	return files;
}

static void corrupt_file(void **state, const char *aio, const char *extra)
{
	struct fx *f = *state;
	uint32_t misses;
	uint64_t ext;

	fx_start(f, aio, SP_WAIT_SLEEP, extra);
	write_all(f);
	wait_spilled(f, f->n - SLOTS);
	ext = harness_stat(f->c, "daemon.spill.extent_bytes");
	assert_true(ext == 1024 || ext == 2048 || ext == 4096 || ext == 8192);
	assert_true(corrupt_spill_files(memsvc_proc_pid(f->p), ext) >= 1);
	assert_int_equal(read_all(f, &misses), 0);
	assert_true(misses >= f->n - SLOTS);
	assert_int_equal(harness_stat(f->c, "daemon.spill.crc_failures"), misses);
	assert_int_equal(harness_stat(f->c, "daemon.spill.restore_misses"), misses);
	/* A lost unit stays a miss. */
	assert_int_equal(read_all(f, &misses), 0);
	assert_true(misses >= f->n - SLOTS);
	/* direct restores: the corrupted units were read straight into their slots */
	if (extra && !strcmp(aio, "uring") && harness_stat(f->c, "daemon.spill.arena_registered"))
		assert_true(harness_stat(f->c, "daemon.spill.units_direct") >= f->n - SLOTS);
}

static void test_corrupt_file_uring(void **state)
{
	corrupt_file(state, "uring", NULL);
}

static void test_corrupt_file_sync(void **state)
{
	corrupt_file(state, "sync", NULL);
}

static void test_corrupt_file_uring_direct(void **state)
{
	corrupt_file(state, "uring", DIRECT_ARG);
}

/* One daemon with a fault rule on its spill I/O; returns the misses of a full read-back. */
static uint32_t faulty_run(struct fx *f, const char *aio, const char *extra, const char *rule)
{
	uint32_t misses;

	setenv(FAULT_ENV, rule, 1);
	fx_start(f, aio, SP_WAIT_SLEEP, extra);
	unsetenv(FAULT_ENV);
	assert_true(harness_log_contains(f->p, "TEST fault injection"));
	write_all(f);
	wait_spilled(f, f->n - SLOTS);
	assert_int_equal(read_all(f, &misses), 0);
	return misses;
}

static void faults_io(void **state, const char *aio, const char *extra)
{
	struct fx *f = *state;

	/* EIO on every read: every spilled unit is a miss, counted as an I/O error. */
	assert_true(faulty_run(f, aio, extra, "action=errno,err=EIO,match=read") >= f->n - SLOTS);
	assert_true(harness_stat(f->c, "daemon.spill.io_errors") > 0);
	assert_int_equal(harness_stat(f->c, "daemon.spill.crc_failures"), 0);
	fx_stop(f);
	/* EAGAIN and short transfers are retried below the tier: nothing is lost. */
	assert_int_equal(faulty_run(f, aio, extra, "action=errno,err=EAGAIN,match=read,times=5"),
			 0);
	fx_stop(f);
	assert_int_equal(faulty_run(f, aio, extra, "action=short,short_by=512,times=5"), 0);
	fx_stop(f);
	/* EIO on a write: the units stay in RAM and are spilled by a later batch. */
	assert_int_equal(faulty_run(f, aio, extra, "action=errno,err=EIO,match=write,nth=2"), 0);
	assert_true(harness_stat(f->c, "daemon.spill.spill_failures") > 0);
	fx_stop(f);
	/* A byte flipped in a read: the CRC catches it. */
	assert_int_equal(faulty_run(f, aio, extra, "action=corrupt,match=read,nth=2"), 1);
	assert_int_equal(harness_stat(f->c, "daemon.spill.crc_failures"), 1);
}

static void test_faults_io_uring(void **state)
{
	faults_io(state, "uring", NULL);
}

/* The same faults under direct restores (the fault wrapper sees both parts of each read). */
static void test_faults_io_uring_direct(void **state)
{
	faults_io(state, "uring", DIRECT_ARG);
}

static void test_faults_io_sync(void **state)
{
	faults_io(state, "sync", NULL);
}

/*
 * A direct restore's read hangs past the I/O timeout: its batch times out, its slots stay with
 * the I/O until the completion arrives, then those units are answered as misses; everything
 * after is served right (never wrong bytes), the second pass too.
 */
static void test_hung_direct_restore(void **state)
{
	struct fx *f = *state;
	uint32_t misses;

	setenv(FAULT_ENV, "action=delay,match=read,delay_ms=600,times=1", 1);
	fx_start2(f, "uring", SP_WAIT_SLEEP, "--spill-io-timeout-ms=100", DIRECT_ARG);
	unsetenv(FAULT_ENV);
	write_all(f);
	wait_spilled(f, f->n - SLOTS);
	assert_int_equal(read_all(f, &misses), 0);
	assert_true(misses >= 1);
	assert_true(harness_stat(f->c, "daemon.spill.io_errors") >= 1);
	assert_int_equal(harness_stat(f->c, "daemon.spill.crc_failures"), 0);
	assert_true(harness_log_contains(f->p, "spill I/O timed out"));
	printf("hung direct restore: misses=%u units_direct=%llu\n", misses,
	       (unsigned long long)harness_stat(f->c, "daemon.spill.units_direct"));
	assert_int_equal(read_all(f, &misses), 0);
}

/* Writes fail with ENOSPC: the tier degrades to RAM only, then recovers by itself. */
static void test_enospc_injected(void **state)
{
	struct fx *f = *state;
	uint32_t misses;

	setenv(FAULT_ENV, "action=errno,err=ENOSPC,match=write,times=3", 1);
	fx_start(f, "sync", SP_WAIT_SLEEP, NULL);
	unsetenv(FAULT_ENV);
	write_all(f);
	assert_true(f->enospc > 0); /* the RAM-only arena filled before recovery */
	wait_spilled(f, f->n - SLOTS);
	assert_true(harness_stat(f->c, "daemon.spill.enospc_events") >= 1);
	assert_true(harness_stat(f->c, "daemon.spill.degraded_entries") >= 1);
	assert_true(harness_stat(f->c, "daemon.spill.recoveries") >= 1);
	assert_true(harness_log_contains(f->p, "degraded to RAM-only"));
	assert_int_equal(read_all(f, &misses), 0);
	assert_int_equal(misses, 0);
	assert_int_equal(f->nospc_answers, 0);
	assert_int_equal(harness_stat(f->c, "daemon.spill.degraded"), 0);
}

/*
 * A real full filesystem: a 512 KiB tmpfs (skipped where mounting is not allowed) holds 64
 * extents of 8 KiB, fewer than the 192 units that must spill. The tier goes RAM-only: a full
 * arena answers -ENOSPC, restores that cannot get a slot answer -ENOSPC, nothing hangs and
 * every answered unit has its own bytes.
 */
static void test_enospc_tmpfs(void **state)
{
	struct fx *f = *state;
	struct memclient_result r[BATCH];
	uint32_t done = 0, misses;
	bool full = false;
	size_t ub;

	f->dir = harness_tmpdir();
	if (mount("sparda-spill-test", f->dir, "tmpfs", 0, "size=512k") != 0) {
		fprintf(stderr, "skip: cannot mount a tmpfs: %s\n", strerror(errno));
		skip();
	}
	fx_start(f, "sync", SP_WAIT_SLEEP, "--spill-session-bytes=4M");
	ub = memclient_geometry(f->c)->unit_bytes;
	for (uint32_t i = 0; i < f->n && !full; i += BATCH) {
		assert_int_equal(memclient_alloc_wait(f->c, f->u + i, BATCH, r, 20000), 0);
		/* units are allocated one by one: the arena can run out in the middle of a batch */
		for (uint32_t j = 0; j < BATCH; j++) {
			full |= r[j].status != 0;
			if (r[j].status)
				assert_int_equal(r[j].status, -ENOSPC);
		}
		if (full)
			break;
		for (uint32_t j = 0; j < BATCH; j++)
			harness_fill(memclient_slot_ptr(f->c, r[j].slot), ub, KEY, &f->u[i + j]);
		assert_int_equal(memclient_commit(f->c, f->u + i, BATCH, 0, r), 0);
		done = i + BATCH;
	}
	assert_true(done < f->n);
	assert_true(full);
	assert_true(harness_stat(f->c, "daemon.spill.degraded") >= 1);
	assert_true(harness_stat(f->c, "daemon.spill.enospc_events") >= 1);
	f->n = done;
	assert_int_equal(read_all(f, &misses), 0);
	assert_int_equal(misses, 0);
	fx_stop(f);
	(void)umount(f->dir);
}

/*
 * SIGKILL while spilling (writes held back 50 ms each, so some are in flight): no spill file
 * outlives the daemon, and a new one serves nothing old.
 */
static void test_sigkill_restart(void **state)
{
	struct fx *f = *state;
	struct memclient_result r[BATCH];
	struct memclient_residency res;
	uint32_t misses;
	DIR *dir;
	struct dirent *d;
	int files = 0;

	setenv(FAULT_ENV, "action=delay,match=write,delay_ms=50,times=1000", 1);
	fx_start(f, "uring", SP_WAIT_SLEEP, NULL);
	unsetenv(FAULT_ENV);
	write_all(f);
	assert_true(harness_stat(f->c, "session.units_resident") > 0);
	assert_int_equal(memsvc_proc_kill9(f->p), 0);
	assert_int_equal(memclient_forecast(f->c, f->u, BATCH, 1, r), -ECONNRESET);
	fx_stop(f);
	dir = opendir(f->dir);
	assert_non_null(dir);
	while ((d = readdir(dir)))
		files += d->d_name[0] != '.';
	closedir(dir);
	assert_int_equal(files, 0); /* unlinked at creation */
	/* A new daemon: the old units do not exist; new ones round-trip. */
	fx_start(f, "uring", SP_WAIT_SLEEP, NULL);
	assert_int_equal(memclient_lookup(f->c, &f->u[0], &res), 0);
	assert_int_equal(res.state, SP_UNIT_EMPTY);
	assert_int_equal(memclient_forecast(f->c, f->u, BATCH, 1, r), 0);
	for (uint32_t j = 0; j < BATCH; j++)
		assert_int_equal(r[j].status, -ENOENT);
	write_all(f);
	assert_int_equal(read_all(f, &misses), 0);
	assert_int_equal(misses, 0);
}

/*
 * One step asking for more units than the arena holds (256 units, 64 slots, the epoch not
 * published): what fits is served and leased for the step, the rest is answered -ENOSPC after
 * spill-starve-ms instead of waiting out the client's timeout; the counter moves; once the
 * client finishes the step, every unit reads back with its own bytes.
 */
static void test_step_larger_than_arena(void **state)
{
	struct fx *f = *state;
	struct memclient_result r[BATCH];
	uint32_t served = 0, refused = 0, misses;
	size_t ub;
	uint64_t t0;

	fx_start(f, "auto", SP_WAIT_SLEEP, "--spill-starve-ms=100");
	ub = memclient_geometry(f->c)->unit_bytes;
	write_all(f);
	wait_spilled(f, f->n - SLOTS);
	f->step++;
	t0 = time_now_ms();
	for (uint32_t i = 0; i < f->n; i += BATCH) {
		assert_int_equal(memclient_forecast(f->c, f->u + i, BATCH, f->step, r), 0);
		for (uint32_t j = 0; j < BATCH; j++) {
			if (r[j].status) {
				assert_int_equal(r[j].status, -ENOSPC);
				refused++;
				continue;
			}
			served++;
			assert_int_equal(harness_check(memclient_slot_ptr(f->c, r[j].slot), ub,
						       KEY, &f->u[i + j]),
					 0);
		}
	}
	/* every Forecast above was answered (status 0 from memclient_forecast), none waited out
	 * the client's timeout (that would be -ETIMEDOUT) */
	printf("served %u refused %u in %llu ms\n", served, refused,
	       (unsigned long long)(time_now_ms() - t0));
	assert_true(served > 0 && served <= SLOTS);
	assert_int_equal(served + refused, f->n);
	assert_true(harness_stat(f->c, "daemon.spill.restores_starved") >= refused);
	memclient_epoch_publish(f->c, f->step);
	assert_int_equal(read_all(f, &misses), 0);
	assert_int_equal(misses, 0);
	assert_int_equal(f->nospc_answers, 0);
}

/* Per-tenant disk quota: a session over it is RAM only; one within it reserves its files. */
static void test_disk_quota(void **state)
{
	struct fx *f = *state;
	struct memclient *c2 = NULL;
	char text[256], arg[PATH_MAX + 16], tenants_arg[PATH_MAX + 16];
	char *tenants;
	const char *args[] = {arg, tenants_arg, NULL};

	f->dir = harness_tmpdir();
	snprintf(text, sizeof(text),
		 "small uid=%u quota=1M disk-quota=64K\nbig uid=%u quota=1M disk-quota=1G\n",
		 (unsigned)getuid(), (unsigned)getuid());
	tenants = harness_write_file(f->dir, "tenants", text);
	snprintf(arg, sizeof(arg), "--spill-dirs=%s", f->dir);
	snprintf(tenants_arg, sizeof(tenants_arg), "--tenants=%s", tenants);
	f->p = harness_start(args);
	assert_int_equal(harness_open(f->p, "small", SP_WAIT_SLEEP, SLOTS * UNIT, &f->c), 0);
	assert_int_equal(harness_stat(f->c, "daemon.spill.sessions"), 0);
	assert_int_equal(harness_stat(f->c, "tenant.disk_bytes"), 0);
	assert_true(harness_log_contains(f->p, "disk-quota reached"));
	assert_int_equal(harness_open(f->p, "big", SP_WAIT_SLEEP, SLOTS * UNIT, &c2), 0);
	assert_int_equal(harness_stat(c2, "daemon.spill.sessions"), 1);
	assert_true(harness_stat(c2, "tenant.disk_bytes") > 0);
	memclient_close(c2);
	free(tenants);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_readback_uring, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readback_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readback_uring_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readback_sync_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_file_uring, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_file_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_file_uring_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_faults_io_uring, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_faults_io_uring_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_faults_io_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hung_direct_restore, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enospc_injected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enospc_tmpfs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sigkill_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_quota, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_step_larger_than_arena, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
