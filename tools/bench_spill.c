/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench spill --dir DIR`: the NVMe tier against its disk. First the raw io_uring rates
 * of DIR (sequential 1 MiB O_DIRECT writes, random 32 KiB O_DIRECT reads at queue depth 32),
 * then memsvc's own path: a daemon with a small arena spilling to DIR, a client writing more
 * than the arena holds and reading every unit back through ring Forecasts. The two alternate
 * for --rounds rounds (a shared disk's rate drifts between runs): prints each round, the
 * medians and the median of the per-round ratios; --json writes them. A benchmark, never a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio.h"
#include "bench_cmds.h"
#include "client.h"
#include "config.h"
#include "err.h"
#include "memsvc_proc.h"
#include "timeutil.h"

#define RAW_WRITE (1u << 20)
#define RAW_READ (32u << 10)
#define RAW_DEPTH 32u
#define REQ_UNITS 128u
#define REQ_INFLIGHT 8u

struct spill_bench_opts {
	const char *dir, *json, *aio;
	uint64_t size;	     /* raw test file */
	uint64_t ram;	     /* memsvc arena */
	uint32_t factor;     /* units written = factor x arena slots */
	uint32_t rounds;     /* raw and memsvc measured alternately this many times */
	bool direct_restore; /* the daemon's spill-direct-restore=true */
};

struct spill_bench_result {
	double raw_write_gbps, raw_read_gbps;
	double spill_gbps, restore_gbps, ingest_gbps, restore_io_gbps;
	uint64_t units, units_spilled, units_restored, misses, wrong;
	uint64_t unit_bytes, extent_bytes; /* a unit on disk: its extent, header block included */
	uint64_t units_direct;		   /* restores read straight into their slot */
	char aio[16];
};

/* Per-round figures, by name: what the JSON's per-round arrays and medians are made of. */
static const struct {
	const char *name;
	size_t off;
} k_rates[] = {
    {"raw_write_gbps", offsetof(struct spill_bench_result, raw_write_gbps)},
    {"raw_read_gbps", offsetof(struct spill_bench_result, raw_read_gbps)},
    {"spill_gbps", offsetof(struct spill_bench_result, spill_gbps)},
    {"restore_gbps", offsetof(struct spill_bench_result, restore_gbps)},
    {"restore_io_gbps", offsetof(struct spill_bench_result, restore_io_gbps)},
    {"ingest_gbps", offsetof(struct spill_bench_result, ingest_gbps)},
};
#define N_RATES (sizeof(k_rates) / sizeof(k_rates[0]))

static const struct sp_geometry geom = {
    .n_layers = 4, .n_kv_heads = 2, .head_dim = 128, .block_tokens = 64, .dtype_bytes = 2};

static double gbps(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (double)ns : 0;
}

/* ---- raw: the disk through io_uring ------------------------------------------------------ */

/* Keep depth operations of len bytes in flight until n are done; offsets from next_off. */
static int raw_run(struct aio *a, enum aio_op_kind op, uint8_t *buf, uint32_t len, uint64_t n,
		   uint64_t size, uint64_t *elapsed)
{
	uint64_t issued = 0, done = 0, t0 = time_now_ns(), rnd = 0x9e3779b97f4a7c15ull;
	struct aio_cqe c[RAW_DEPTH];
	uint32_t free_bufs[RAW_DEPTH], n_free = RAW_DEPTH;
	int r;

	for (uint32_t i = 0; i < RAW_DEPTH; i++)
		free_bufs[i] = i;
	while (done < n) {
		while (n_free && issued < n) {
			uint32_t b = free_bufs[--n_free];
			uint64_t off;
			if (op == AIO_OP_WRITE) {
				off = issued * len;
			} else {
				rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
				off = rnd % (size / len) * len;
			}
			r = aio_prep(a, op, 0, buf + (size_t)b * len, len, off, b);
			if (r)
				return r;
			issued++;
		}
		r = aio_submit(a);
		if (r)
			return r;
		r = aio_reap(a, c, RAW_DEPTH, -1);
		if (r < 0)
			return r;
		for (int i = 0; i < r; i++) {
			if (c[i].res != (int32_t)len)
				return c[i].res < 0 ? c[i].res : -EIO;
			free_bufs[n_free++] = (uint32_t)c[i].tag;
		}
		done += (uint64_t)r;
	}
	*elapsed = time_now_ns() - t0;
	return 0;
}

static int raw_phase(const struct spill_bench_opts *o, struct spill_bench_result *res)
{
	char path[PATH_MAX];
	struct aio *a = NULL;
	uint8_t *buf = NULL;
	uint64_t t_w = 0, t_r = 0;
	int fd, r;

	snprintf(path, sizeof(path), "%s/sparda-bench-raw-XXXXXX", o->dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return err_from_errno();
	close(fd);
	fd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
	unlink(path);
	if (fd < 0) {
		fprintf(stderr, "bench: %s: O_DIRECT refused (%s)\n", o->dir, strerror(errno));
		return -EINVAL;
	}
	r = fallocate(fd, 0, 0, (off_t)o->size) ? err_from_errno() : 0;
	if (!r && posix_memalign((void **)&buf, 4096, (size_t)RAW_DEPTH * RAW_WRITE))
		r = -ENOMEM;
	if (!r) {
		for (size_t i = 0; i < (size_t)RAW_DEPTH * RAW_WRITE; i++)
			buf[i] = (uint8_t)(i * 131 + 7);
		r = aio_open(AIO_KIND_URING,
			     &(struct aio_opts){.depth = RAW_DEPTH, .fds = &fd, .n_fds = 1}, &a);
	}
	if (!r)
		(void)aio_buffers_register(a, buf, (size_t)RAW_DEPTH * RAW_WRITE);
	if (!r)
		r = raw_run(a, AIO_OP_WRITE, buf, RAW_WRITE, o->size / RAW_WRITE, o->size, &t_w);
	if (!r) {
		uint64_t t0 = time_now_ns();
		r = fdatasync(fd) ? err_from_errno() : 0;
		t_w += time_now_ns() - t0;
	}
	if (!r)
		r = raw_run(a, AIO_OP_READ, buf, RAW_READ, o->size / RAW_READ, o->size, &t_r);
	aio_free(a);
	free(buf);
	close(fd);
	if (r)
		return r;
	res->raw_write_gbps = gbps(o->size / RAW_WRITE * RAW_WRITE, t_w);
	res->raw_read_gbps = gbps(o->size / RAW_READ * RAW_READ, t_r);
	return 0;
}

/* ---- memsvc: spill and restore through the daemon ---------------------------------------- */

static uint64_t stat_of(struct memclient *c, const char *name)
{
	struct memclient_stat *s = NULL;
	uint32_t n = 0;
	uint64_t v = 0;

	if (memclient_stats(c, &s, &n) == 0)
		(void)memclient_stat_find(s, n, name, &v);
	free(s);
	return v;
}

/* Allocate, tag and commit every unit, REQ_UNITS at a time. */
static int write_units(struct memclient *c, const struct memclient_unit *u, uint32_t n)
{
	struct memclient_result r[REQ_UNITS];
	size_t ub = geom.block_tokens * geom.head_dim * geom.dtype_bytes * 2;

	for (uint32_t i = 0; i < n; i += REQ_UNITS) {
		uint32_t k = n - i < REQ_UNITS ? n - i : REQ_UNITS;
		int rc = memclient_alloc_wait(c, u + i, k, r, 60000);
		for (uint32_t j = 0; !rc && j < k; j++) {
			uint8_t *p = memclient_slot_ptr(c, r[j].slot);
			if (r[j].status)
				return r[j].status;
			memset(p, (int)(i + j), ub);
			memcpy(p, &(uint64_t){i + j}, sizeof(uint64_t));
		}
		if (!rc)
			rc = memclient_commit(c, u + i, k, 0, r);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * Forecast every unit back, up to REQ_INFLIGHT requests in flight; check each unit's tag.
 * Restores need free slots, so the units in flight stay within half the arena.
 */
static int read_units(struct memclient *c, const struct memclient_unit *u, uint32_t n,
		      struct spill_bench_result *res)
{
	struct memclient_result *r = calloc(n, sizeof(*r));
	uint32_t ids[REQ_INFLIGHT], first[REQ_INFLIGHT], head = 0, tail = 0, next = 0;
	uint64_t slots = memclient_n_slots(c), step = 0;
	uint32_t per = slots / (2 * REQ_INFLIGHT) < REQ_UNITS
			   ? (uint32_t)(slots / (2 * REQ_INFLIGHT))
			   : REQ_UNITS;
	int rc = r && per ? 0 : -ENOMEM;

	while (!rc && (next < n || head != tail)) {
		if (next < n && tail - head < REQ_INFLIGHT) {
			uint32_t k = n - next < per ? n - next : per;
			rc = memclient_forecast_submit(c, u + next, k, ++step, r + next,
						       &ids[tail % REQ_INFLIGHT]);
			if (rc == -EAGAIN) {
				rc = 0;
			} else if (!rc) {
				first[tail++ % REQ_INFLIGHT] = next;
				next += k;
				continue;
			}
		}
		if (rc || head == tail)
			break;
		rc = memclient_forecast_reap(c, ids[head % REQ_INFLIGHT], 60000);
		uint32_t f = first[head % REQ_INFLIGHT];
		uint32_t k = n - f < per ? n - f : per;
		for (uint32_t j = 0; !rc && j < k; j++) {
			uint64_t tag;
			if (r[f + j].status) {
				res->misses++;
				continue;
			}
			memcpy(&tag, memclient_slot_ptr(c, r[f + j].slot), sizeof(tag));
			res->wrong += tag != f + j;
		}
		head++;
		/* The oldest request's reads are done: its leases may go. */
		memclient_epoch_publish(c, step - (tail - head));
	}
	free(r);
	return rc;
}

/* Wait until the daemon stops evicting (the spilled count holds still). */
static void settle(struct memclient *c)
{
	uint64_t last = UINT64_MAX, end = time_now_ms() + 60000;

	while (time_now_ms() < end) {
		uint64_t v = stat_of(c, "daemon.spill.units_spilled");
		if (v == last)
			return;
		last = v;
		time_sleep_ns(200000000);
	}
}

static int client_phase(const char *rundir, const struct spill_bench_opts *o,
			struct spill_bench_result *res)
{
	struct memclient_opts mo = {.runtime_dir = rundir,
				    .client_name = "bench-spill",
				    .geom = geom,
				    .arena_bytes = o->ram,
				    .max_seqs = 4,
				    .wait_mode = SP_WAIT_SLEEP,
				    .timeout_ms = 60000};
	struct memclient *c = NULL;
	struct memclient_unit *u = NULL;
	struct memclient_seq seq;
	uint32_t n, per_block;
	uint64_t t0, t_write, t_read, ub, r0, b0;
	int rc = memclient_open(&mo, &c);

	if (rc)
		return rc;
	ub = memclient_geometry(c)->unit_bytes;
	per_block = geom.n_layers * geom.n_kv_heads;
	n = (uint32_t)(memclient_n_slots(c) * o->factor) / per_block * per_block;
	u = calloc(n, sizeof(*u));
	rc = u ? memclient_seq_open(c, 1, n / per_block, &seq) : -ENOMEM;
	for (uint32_t i = 0; !rc && i < n; i++) /* block-major: the order a decode writes */
		u[i] = (struct memclient_unit){seq, i % per_block / geom.n_kv_heads,
					       i % geom.n_kv_heads, i / per_block};
	t0 = time_now_ns();
	if (!rc)
		rc = write_units(c, u, n);
	t_write = time_now_ns() - t0;
	if (!rc) {
		settle(c);
		r0 = stat_of(c, "daemon.spill.units_restored");
		b0 = stat_of(c, "daemon.spill.restore_busy_ns");
		t0 = time_now_ns();
		rc = read_units(c, u, n, res);
		t_read = time_now_ns() - t0;
		res->units = n;
		res->units_spilled = stat_of(c, "daemon.spill.units_spilled");
		res->units_restored = stat_of(c, "daemon.spill.units_restored") - r0;
		res->unit_bytes = ub;
		res->extent_bytes = stat_of(c, "daemon.spill.extent_bytes");
		res->units_direct = stat_of(c, "daemon.spill.units_direct");
		res->ingest_gbps = gbps(n * ub, t_write);
		res->spill_gbps = gbps(stat_of(c, "daemon.spill.bytes_spilled"),
				       stat_of(c, "daemon.spill.spill_busy_ns"));
		res->restore_gbps = gbps(res->units_restored * ub, t_read);
		res->restore_io_gbps =
		    gbps(res->units_restored * ub, stat_of(c, "daemon.spill.restore_busy_ns") - b0);
		snprintf(res->aio, sizeof(res->aio), "%s",
			 stat_of(c, "daemon.spill.aio_uring") ? "uring" : "sync");
	}
	free(u);
	memclient_close(c);
	return rc;
}

static int memsvc_phase(const struct spill_bench_opts *o, struct spill_bench_result *res)
{
	char bin[PATH_MAX], a_dir[PATH_MAX + 16], a_aio[32], a_budget[48], a_sess[48];
	const char *args[] = {a_dir,
			      a_aio,
			      a_budget,
			      a_sess,
			      "--unit-words=8",
			      o->direct_restore ? "--spill-direct-restore=true"
						: "--spill-direct-restore=false",
			      NULL};
	struct memsvc_proc_opts po = {.binary = bin, .args = args, .capture_stderr = true};
	struct memsvc_proc *p = NULL;
	/* the largest extent (4 KiB header block): the reservation holds whatever the disk takes */
	uint64_t ext = 4096 + (uint64_t)geom.block_tokens * geom.head_dim * geom.dtype_bytes * 2;
	int rc, status = 0;

	snprintf(a_dir, sizeof(a_dir), "--spill-dirs=%s", o->dir);
	snprintf(a_aio, sizeof(a_aio), "--spill-aio=%s", o->aio);
	snprintf(a_budget, sizeof(a_budget), "--ram-budget=%llu", (unsigned long long)o->ram * 2);
	snprintf(a_sess, sizeof(a_sess), "--spill-session-bytes=%llu",
		 (unsigned long long)(o->ram / (ext - 4096) * o->factor * ext + (64u << 20)));
	rc = memsvc_proc_find_binary(bin, sizeof(bin));
	if (!rc)
		rc = memsvc_proc_start(&po, &p);
	if (!rc)
		rc = client_phase(memsvc_proc_runtime_dir(p), o, res);
	if (p) {
		if (rc) {
			char cmd[PATH_MAX + 32];
			snprintf(cmd, sizeof(cmd), "tail -5 %s >&2", memsvc_proc_log_path(p));
			(void)!system(cmd);
		}
		if (memsvc_proc_stop(p, SIGTERM, 10000, &status) || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			char cmd[PATH_MAX + 32];
			fprintf(stderr, "bench: sparda-memsvc did not exit cleanly\n");
			snprintf(cmd, sizeof(cmd), "tail -20 %s >&2", memsvc_proc_log_path(p));
			(void)!system(cmd);
			rc = rc ? rc : -EIO;
		}
		memsvc_proc_free(p);
	}
	return rc;
}

/* ---- report ------------------------------------------------------------------------------ */

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static double rate_of(const struct spill_bench_result *r, size_t i)
{
	return *(const double *)((const char *)r + k_rates[i].off);
}

static double spill_ratio(const struct spill_bench_result *r)
{
	return ratio(r->spill_gbps, r->raw_write_gbps);
}

static double restore_ratio(const struct spill_bench_result *r)
{
	return ratio(r->restore_gbps, r->raw_read_gbps);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v; the mean of the middle two for even n). */
static double median(double *v, uint32_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The summary of n rounds: each rate's median, counts of the last round, failures summed. */
struct spill_bench_summary {
	struct spill_bench_result med;
	double spill_ratio, restore_ratio; /* medians of the per-round ratios */
	uint64_t misses, wrong;		   /* all rounds */
};

static void summarize(const struct spill_bench_result *r, uint32_t n, struct spill_bench_summary *s,
		      double *tmp)
{
	s->med = r[n - 1];
	s->misses = s->wrong = 0;
	for (size_t k = 0; k < N_RATES; k++) {
		for (uint32_t i = 0; i < n; i++)
			tmp[i] = rate_of(&r[i], k);
		*(double *)((char *)&s->med + k_rates[k].off) = median(tmp, n);
	}
	for (uint32_t i = 0; i < n; i++) {
		tmp[i] = spill_ratio(&r[i]);
		s->misses += r[i].misses;
		s->wrong += r[i].wrong;
	}
	s->spill_ratio = median(tmp, n);
	for (uint32_t i = 0; i < n; i++)
		tmp[i] = restore_ratio(&r[i]);
	s->restore_ratio = median(tmp, n);
}

static void print_round_header(void)
{
	printf("round  raw write  raw read     spill   restore   spill/raw  restore/raw   GB/s\n");
}

static void print_round(uint32_t i, const struct spill_bench_result *r)
{
	printf("%5u  %9.3f  %8.3f  %8.3f  %8.3f   %8.1f%%  %10.1f%%\n", i + 1, r->raw_write_gbps,
	       r->raw_read_gbps, r->spill_gbps, r->restore_gbps, 100 * spill_ratio(r),
	       100 * restore_ratio(r));
	fflush(stdout);
}

static void print(const struct spill_bench_summary *s, uint32_t rounds)
{
	const struct spill_bench_result *r = &s->med;

	printf("NVMe tier (%s), median of %u round%s  GB/s\n", r->aio, rounds,
	       rounds == 1 ? "" : "s");
	printf("  raw write (1 MiB seq)   %8.3f\n", r->raw_write_gbps);
	printf("  raw read (32 KiB rand)  %8.3f\n", r->raw_read_gbps);
	printf("  memsvc spill            %8.3f   %5.1f%% of raw write (median of round ratios)\n",
	       r->spill_gbps, 100 * s->spill_ratio);
	printf("  memsvc restore          %8.3f   %5.1f%% of raw read (end to end, median of "
	       "round ratios)\n",
	       r->restore_gbps, 100 * s->restore_ratio);
	printf("  memsvc restore I/O      %8.3f   (spill thread busy time)\n", r->restore_io_gbps);
	printf("  client ingest           %8.3f   (write phase, all units)\n", r->ingest_gbps);
	printf("units %llu spilled %llu restored %llu (%llu direct) per round; misses %llu wrong "
	       "%llu in all rounds\n",
	       (unsigned long long)r->units, (unsigned long long)r->units_spilled,
	       (unsigned long long)r->units_restored, (unsigned long long)r->units_direct,
	       (unsigned long long)s->misses, (unsigned long long)s->wrong);
	printf("unit %llu bytes, on disk %llu (header block %llu): rates count unit bytes\n",
	       (unsigned long long)r->unit_bytes, (unsigned long long)r->extent_bytes,
	       (unsigned long long)(r->extent_bytes - r->unit_bytes));
}

static void json_add_double(json_object *j, const char *key, double v)
{
	json_object_object_add(j, key, json_object_new_double(v));
}

/* A round's figure k: the rates of k_rates, then the spill and restore ratios. */
static double round_value(const struct spill_bench_result *r, size_t k)
{
	if (k < N_RATES)
		return rate_of(r, k);
	return k == N_RATES ? spill_ratio(r) : restore_ratio(r);
}

static const char *round_key(size_t k)
{
	if (k < N_RATES)
		return k_rates[k].name;
	return k == N_RATES ? "spill_ratio" : "restore_ratio";
}

/* Each rate's per-round array, and the two ratios', under "per_round". */
static json_object *json_rounds(const struct spill_bench_result *r, uint32_t n)
{
	json_object *pr = json_object_new_object();

	for (size_t k = 0; k < N_RATES + 2; k++) {
		json_object *a = json_object_new_array();
		for (uint32_t i = 0; i < n; i++)
			json_object_array_add(a, json_object_new_double(round_value(&r[i], k)));
		json_object_object_add(pr, round_key(k), a);
	}
	return pr;
}

/* The top-level rates and ratios are the medians (the keys of a single-run report). */
static int write_json(const char *path, const struct spill_bench_summary *s,
		      const struct spill_bench_result *rounds, uint32_t n)
{
	const struct spill_bench_result *r = &s->med;
	json_object *j = json_object_new_object();
	int rc;

	for (size_t k = 0; k < N_RATES; k++)
		json_add_double(j, k_rates[k].name, rate_of(r, k));
	json_add_double(j, "spill_ratio", s->spill_ratio);
	json_add_double(j, "restore_ratio", s->restore_ratio);
	json_object_object_add(j, "rounds", json_object_new_int((int)n));
	json_object_object_add(j, "per_round", json_rounds(rounds, n));
	json_object_object_add(j, "units", json_object_new_int64((int64_t)r->units));
	json_object_object_add(j, "units_restored",
			       json_object_new_int64((int64_t)r->units_restored));
	json_object_object_add(j, "units_direct", json_object_new_int64((int64_t)r->units_direct));
	json_object_object_add(j, "misses", json_object_new_int64((int64_t)s->misses));
	json_object_object_add(j, "wrong_units", json_object_new_int64((int64_t)s->wrong));
	json_object_object_add(j, "aio", json_object_new_string(r->aio));
	json_object_object_add(j, "unit_bytes", json_object_new_int64((int64_t)r->unit_bytes));
	json_object_object_add(j, "extent_bytes", json_object_new_int64((int64_t)r->extent_bytes));
	rc = json_object_to_file_ext(path, j, JSON_C_TO_STRING_PRETTY) ? -EIO : 0;
	json_object_put(j);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sparda bench spill --dir DIR [--json PATH] [--size BYTES] [--ram BYTES]\n"
		"                          [--factor N] [--aio uring|sync|auto] [--rounds N]\n"
		"                          [--direct-restore]\n"
		"  --size   raw test file (default 1G; larger than the page cache where possible)\n"
		"  --ram    memsvc arena (default 256M); --factor N: write N x the arena (4)\n"
		"  --rounds raw and memsvc measured alternately N times (default 3, 1..100);\n"
		"           the summary and the JSON's top-level keys are medians, the ratios\n"
		"           the median of the per-round ratios (per_round: every round's)\n"
		"  --direct-restore  restores straight into the arena, not through staging and\n"
		"           a copy (the daemon's spill-direct-restore=true)\n");
}

static int parse(int argc, char **argv, struct spill_bench_opts *o)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},    {"json", required_argument, NULL, 'j'},
	    {"size", required_argument, NULL, 's'},   {"ram", required_argument, NULL, 'r'},
	    {"factor", required_argument, NULL, 'f'}, {"aio", required_argument, NULL, 'a'},
	    {"rounds", required_argument, NULL, 'n'}, {"direct-restore", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0}};
	int ch;

	*o = (struct spill_bench_opts){
	    .size = 1ull << 30, .ram = 256ull << 20, .factor = 4, .rounds = 3, .aio = "uring"};
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		uint64_t v = 0;
		/* sizes as everywhere in the project (K/M/G/T suffixes) */
		if ((ch == 's' || ch == 'r' || ch == 'f' || ch == 'n') &&
		    config_parse_size(optarg, &v)) {
			fprintf(stderr, "bench: bad number '%s'\n", optarg);
			return -EINVAL;
		}
		switch (ch) {
		case 'd':
			o->dir = optarg;
			break;
		case 'j':
			o->json = optarg;
			break;
		case 's':
			o->size = v;
			break;
		case 'r':
			o->ram = v;
			break;
		case 'f':
			o->factor = (uint32_t)v;
			break;
		case 'a':
			o->aio = optarg;
			break;
		case 'n':
			o->rounds = v > 100 ? 0 : (uint32_t)v;
			break;
		case 'D':
			o->direct_restore = true;
			break;
		case 'h':
			usage();
			return 1;
		default:
			usage();
			return -EINVAL;
		}
	}
	if (!o->dir || optind != argc || o->size < RAW_WRITE || o->ram < (1u << 20) ||
	    o->factor < 2 || o->factor > 64 || o->rounds < 1) {
		usage();
		return -EINVAL;
	}
	return 0;
}

/* One round: the raw rates, then memsvc's. 0 or 1 (the error printed). */
static int bench_round(const struct spill_bench_opts *o, struct spill_bench_result *res)
{
	int rc = raw_phase(o, res);

	if (rc) {
		fprintf(stderr, "bench: raw io_uring on %s: %s\n", o->dir, err_str(rc));
		return 1;
	}
	rc = memsvc_phase(o, res);
	if (rc) {
		fprintf(stderr, "bench: memsvc spill/restore: %s\n", err_str(rc));
		return 1;
	}
	return 0;
}

int bench_spill(int argc, char **argv)
{
	struct spill_bench_opts o;
	struct spill_bench_summary sum;
	struct spill_bench_result *res = NULL;
	double *tmp = NULL;
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc > 0 ? 0 : 2;
	res = calloc(o.rounds, sizeof(*res));
	tmp = calloc(o.rounds, sizeof(*tmp));
	if (!res || !tmp) {
		rc = 1;
		goto out;
	}
	print_round_header();
	for (uint32_t i = 0; i < o.rounds && !rc; i++) {
		rc = bench_round(&o, &res[i]);
		if (!rc)
			print_round(i, &res[i]);
	}
	if (rc)
		goto out;
	summarize(res, o.rounds, &sum, tmp);
	print(&sum, o.rounds);
	if (o.json && write_json(o.json, &sum, res, o.rounds)) {
		fprintf(stderr, "bench: cannot write %s\n", o.json);
		rc = 1;
		goto out;
	}
	rc = sum.wrong || sum.misses ? 1 : 0;
out:
	free(res);
	free(tmp);
	return rc;
}
