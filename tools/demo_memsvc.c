/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda demo-memsvc`: the end-to-end job of the memory service. Start sparda-memsvc, attach,
 * open sequences, allocate + write + commit units with a checksum pattern, Forecast them back
 * over the rings and over ZeroMQ, verify every byte, print what happened and the daemon's
 * stats, then SIGTERM the daemon and report its exit status. Exits non-zero on any failure.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "client.h"
#include "crc32c.h"
#include "err.h"
#include "memsvc_proc.h"
#include "sparda.h"
#include "timeutil.h"

struct demo {
	struct memclient *c;
	struct memclient_seq *seqs;
	struct memclient_unit *u;
	struct memclient_result *r;
	uint32_t *crc;
	uint32_t *slot;
	uint32_t n_seqs, blocks, n;
	size_t unit_bytes;
	int failures;
};

static const struct sp_geometry demo_geom = {
    .n_layers = 4,
    .n_kv_heads = 2,
    .head_dim = 64,
    .block_tokens = 16,
    .dtype_bytes = 2,
};

static void fill(uint8_t *b, size_t len, const struct memclient_unit *u)
{
	uint64_t s = ((uint64_t)u->seq.index << 48) ^ ((uint64_t)u->layer << 32) ^
		     ((uint64_t)u->head << 24) ^ u->block;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t z = (s += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		memcpy(b + i, &z, len - i < 8 ? len - i : 8);
	}
}

static void row(const char *what, uint32_t units, uint64_t bytes, uint64_t ns, const char *res)
{
	printf("%-18s %7u %10llu %10.1f  %s\n", what, units, (unsigned long long)bytes, ns / 1e3,
	       res);
}

/* Count results that are not 0, or whose slot differs from the one written. */
static int bad_results(struct demo *d, bool check_slot)
{
	int bad = 0;

	for (uint32_t i = 0; i < d->n; i++)
		bad += d->r[i].status != 0 || (check_slot && d->r[i].slot != d->slot[i]);
	return bad;
}

/* Compare every byte of every unit with its pattern and its CRC32C. */
static uint64_t verify(struct demo *d)
{
	uint8_t *want = malloc(d->unit_bytes);
	uint64_t wrong = 0;

	if (!want)
		return UINT64_MAX;
	for (uint32_t i = 0; i < d->n; i++) {
		const uint8_t *got = memclient_slot_ptr(d->c, d->r[i].slot);

		if (!got) {
			wrong += d->unit_bytes;
			continue;
		}
		fill(want, d->unit_bytes, &d->u[i]);
		for (size_t k = 0; k < d->unit_bytes; k++)
			wrong += got[k] != want[k];
		wrong += crc32c(0, got, d->unit_bytes) != d->crc[i];
	}
	free(want);
	return wrong;
}

static int open_seqs(struct demo *d)
{
	uint32_t per = demo_geom.n_layers * demo_geom.n_kv_heads, k = 0;
	int rc;

	for (uint32_t s = 0; s < d->n_seqs; s++) {
		rc = memclient_seq_open(d->c, 1000 + s, d->blocks, &d->seqs[s]);
		if (rc)
			return rc;
		for (uint32_t i = 0; i < per * d->blocks; i++)
			d->u[k++] =
			    (struct memclient_unit){.seq = d->seqs[s],
						    .layer = i / d->blocks / demo_geom.n_kv_heads,
						    .head = i / d->blocks % demo_geom.n_kv_heads,
						    .block = i % d->blocks};
	}
	return 0;
}

/* One demo step: time fn, print a row, count a failure. */
#define STEP(d, name, units, bytes, expr, okexpr)                                                  \
	do {                                                                                       \
		uint64_t t0_ = time_now_ns();                                                      \
		int rc_ = (expr);                                                                  \
		uint64_t dt_ = time_now_ns() - t0_;                                                \
		char res_[128];                                                                    \
		if (!rc_ && !(okexpr))                                                             \
			rc_ = -EPROTO;                                                             \
		snprintf(res_, sizeof(res_), "%s", rc_ ? err_str(rc_) : "ok");                     \
		row(name, units, bytes, dt_, res_);                                                \
		if (rc_) {                                                                         \
			(d)->failures++;                                                           \
			return rc_;                                                                \
		}                                                                                  \
	} while (0)

static int write_units(struct demo *d)
{
	for (uint32_t i = 0; i < d->n; i++) {
		uint8_t *p = memclient_slot_ptr(d->c, d->slot[i] = d->r[i].slot);

		if (!p)
			return -EPROTO;
		fill(p, d->unit_bytes, &d->u[i]);
		d->crc[i] = crc32c(0, p, d->unit_bytes);
	}
	return 0;
}

static int run_units(struct demo *d)
{
	uint64_t bytes = (uint64_t)d->n * d->unit_bytes, wrong;

	STEP(d, "seq_open", d->n_seqs, 0, open_seqs(d), true);
	STEP(d, "alloc (zmq)", d->n, bytes, memclient_alloc(d->c, d->u, d->n, d->r),
	     !bad_results(d, false));
	STEP(d, "write + crc32c", d->n, bytes, write_units(d), true);
	STEP(d, "commit (ring)", d->n, bytes, memclient_commit_ring(d->c, d->u, d->n, 1, d->r),
	     !bad_results(d, true));
	STEP(d, "forecast (ring)", d->n, bytes, memclient_forecast(d->c, d->u, d->n, 2, d->r),
	     !bad_results(d, true));
	wrong = verify(d);
	printf("%-18s %7u %10llu %10s  wrong_bytes=%llu\n", "verify (ring)", d->n,
	       (unsigned long long)bytes, "-", (unsigned long long)wrong);
	d->failures += wrong != 0;
	STEP(d, "forecast (zmq)", d->n, bytes, memclient_forecast_zmq(d->c, d->u, d->n, 3, d->r),
	     !bad_results(d, true));
	wrong = verify(d);
	printf("%-18s %7u %10llu %10s  wrong_bytes=%llu\n", "verify (zmq)", d->n,
	       (unsigned long long)bytes, "-", (unsigned long long)wrong);
	d->failures += wrong != 0;
	memclient_epoch_publish(d->c, 3);
	return 0;
}

static void print_stats(struct demo *d)
{
	struct memclient_stat *s = NULL;
	uint32_t n = 0;
	int rc = memclient_stats(d->c, &s, &n);

	if (rc) {
		printf("daemon stats: %s\n", err_str(rc));
		d->failures++;
		return;
	}
	printf("daemon stats:\n");
	for (uint32_t i = 0; i < n; i++)
		printf("  %-40s %llu\n", s[i].name, (unsigned long long)s[i].value);
	free(s);
}

static int run_client(const char *rundir, enum sp_wait_mode mode, uint32_t n_seqs, uint32_t blocks)
{
	uint32_t per_seq = demo_geom.n_layers * demo_geom.n_kv_heads * blocks;
	struct demo d = {.n_seqs = n_seqs,
			 .blocks = blocks,
			 .n = n_seqs * per_seq,
			 .unit_bytes = 2ull * 16 * 64 * 2};
	struct memclient_opts o = {
	    .runtime_dir = rundir,
	    .client_name = "demo-memsvc",
	    .geom = demo_geom,
	    .arena_bytes = (uint64_t)d.n * d.unit_bytes,
	    .max_seqs = n_seqs,
	    .wait_mode = mode,
	    .timeout_ms = 5000,
	};
	int rc;

	d.seqs = calloc(n_seqs, sizeof(*d.seqs));
	d.u = calloc(d.n, sizeof(*d.u));
	d.r = calloc(d.n, sizeof(*d.r));
	d.crc = calloc(d.n, sizeof(*d.crc));
	d.slot = calloc(d.n, sizeof(*d.slot));
	if (!d.seqs || !d.u || !d.r || !d.crc || !d.slot) {
		rc = -ENOMEM;
		goto out_free;
	}
	printf("%-18s %7s %10s %10s  %s\n", "step", "units", "bytes", "time_us", "result");
	uint64_t t0 = time_now_ns();
	rc = memclient_open(&o, &d.c);
	row("attach", 0, o.arena_bytes, time_now_ns() - t0, rc ? err_str(rc) : "ok");
	if (rc)
		goto out_free;
	rc = run_units(&d);
	if (rc)
		fprintf(stderr, "demo-memsvc: %s %s\n", err_str(rc), memclient_last_error(d.c));
	print_stats(&d);
	for (uint32_t s = 0; !rc && s < n_seqs; s++) {
		int crc = memclient_seq_close(d.c, d.seqs[s]);
		if (crc) {
			fprintf(stderr, "demo-memsvc: seq_close: %s\n", err_str(crc));
			d.failures++;
		}
	}
	memclient_close(d.c);
out_free:
	free(d.seqs);
	free(d.u);
	free(d.r);
	free(d.crc);
	free(d.slot);
	return rc ? rc : (d.failures ? -EIO : 0);
}

static void usage(void)
{
	fprintf(stderr, "usage: sparda demo-memsvc [--mode poll|sleep] [--seqs N] [--blocks B]\n"
			"                          [--runtime-dir DIR (use a running daemon)]\n");
}

struct demo_opts {
	const char *rundir; /* NULL: start our own daemon */
	enum sp_wait_mode mode;
	unsigned long seqs, blocks;
};

/* Returns 0 (run), 1 (--help printed) or -EINVAL (usage printed). */
static int parse(int argc, char **argv, struct demo_opts *o)
{
	static const struct option longopts[] = {
	    {"runtime-dir", required_argument, NULL, 'd'},
	    {"mode", required_argument, NULL, 'm'},
	    {"seqs", required_argument, NULL, 's'},
	    {"blocks", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	char *end;
	int ch;

	*o = (struct demo_opts){.mode = SP_WAIT_SLEEP, .seqs = 2, .blocks = 8};
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			o->rundir = optarg;
			break;
		case 'm':
			if (strcmp(optarg, "poll") && strcmp(optarg, "sleep"))
				goto out_usage;
			o->mode = optarg[0] == 'p' ? SP_WAIT_POLL : SP_WAIT_SLEEP;
			break;
		case 's':
		case 'b':
			*(ch == 's' ? &o->seqs : &o->blocks) = strtoul(optarg, &end, 10);
			if (*end || !*optarg)
				goto out_usage;
			break;
		case 'h':
			usage();
			return 1;
		default:
			goto out_usage;
		}
	}
	if (optind == argc && o->seqs && o->seqs <= 64 && o->blocks && o->blocks <= 4096)
		return 0;
out_usage:
	usage();
	return -EINVAL;
}

/* SIGTERM our daemon and report how it ended; returns 0 for a clean exit 0. */
static int stop_daemon(struct memsvc_proc *daemon)
{
	int status = 0, rc = memsvc_proc_stop(daemon, SIGTERM, 10000, &status);

	if (rc)
		printf("sparda-memsvc: no exit within 10 s after SIGTERM (killed)\n");
	else if (WIFEXITED(status))
		printf("sparda-memsvc: exit status %d after SIGTERM\n", WEXITSTATUS(status));
	else
		printf("sparda-memsvc: killed by signal %d\n", WTERMSIG(status));
	memsvc_proc_free(daemon);
	return rc || !WIFEXITED(status) || WEXITSTATUS(status) ? -EIO : 0;
}

int cmd_demo_memsvc(int argc, char **argv)
{
	struct memsvc_proc *daemon = NULL;
	struct demo_opts o;
	char bin[PATH_MAX];
	int rc, ret;

	rc = parse(argc, argv, &o);
	if (rc)
		return rc > 0 ? 0 : 2;
	if (!o.rundir) {
		struct memsvc_proc_opts po = {.binary = bin};

		rc = memsvc_proc_find_binary(bin, sizeof(bin));
		if (!rc)
			rc = memsvc_proc_start(&po, &daemon);
		if (rc) {
			fprintf(stderr, "demo-memsvc: cannot start sparda-memsvc: %s\n",
				err_str(rc));
			memsvc_proc_free(daemon);
			return 1;
		}
		o.rundir = memsvc_proc_runtime_dir(daemon);
		printf("sparda-memsvc pid %d, runtime dir %s\n", (int)memsvc_proc_pid(daemon),
		       o.rundir);
	}
	ret = run_client(o.rundir, o.mode, (uint32_t)o.seqs, (uint32_t)o.blocks) ? 1 : 0;
	if (daemon && stop_daemon(daemon))
		ret = 1;
	printf("demo-memsvc: %s\n", ret ? "FAILED" : "OK");
	return ret;
}
