/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench memsvc`: request-to-completion latency of Forecast requests for RAM-resident
 * units, over the shared-memory rings and over ZeroMQ, with N concurrent client threads (one
 * client handle each). Prints a table, optionally writes JSON. A benchmark, never a test.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bench_cmds.h"
#include "client.h"
#include "err.h"
#include "memsvc_proc.h"
#include "sparda.h"
#include "timeutil.h"

enum { PATH_SHM, PATH_ZMQ, N_PATHS };
static const char *const path_names[N_PATHS] = {"shm", "zmq"};

struct bench_opts {
	const char *runtime_dir;
	int clients;
	uint32_t units;
	enum sp_wait_mode mode;
	double seconds;
	uint64_t requests; /* per client and path; 0 = run for `seconds` */
	bool per_unit;	   /* memclient_opts.per_unit_forecast */
	const char *json;
};

struct bench_shared {
	const struct bench_opts *o;
	const char *rundir;
	pthread_barrier_t barrier;
};

struct worker {
	pthread_t thread;
	struct bench_shared *sh;
	int index;
	struct hist hist[N_PATHS];
	uint64_t done[N_PATHS];
	uint64_t errors;
	uint64_t step; /* decode step of the next request (leases, epochs) */
	int rc;
	char error[160];
};

static const struct sp_geometry bench_geom = {
    .n_layers = 4,
    .n_kv_heads = 2,
    .head_dim = 128,
    .block_tokens = 64,
    .dtype_bytes = 2,
};

static int setup(struct worker *w, struct memclient **cp, struct memclient_unit **up,
		 struct memclient_result **rp)
{
	const struct bench_opts *o = w->sh->o;
	uint32_t per_block = bench_geom.n_layers * bench_geom.n_kv_heads;
	uint32_t max_blocks = (o->units + per_block - 1) / per_block;
	uint64_t unit_bytes = 2ull * 64 * 128 * 2;
	struct memclient_opts co = {
	    .runtime_dir = w->sh->rundir,
	    .client_name = "bench",
	    .geom = bench_geom,
	    .arena_bytes = (uint64_t)max_blocks * per_block * unit_bytes * 2,
	    .max_seqs = 2,
	    .wait_mode = o->mode,
	    .timeout_ms = 5000,
	    .per_unit_forecast = o->per_unit,
	};
	struct memclient_seq seq;
	struct memclient_unit *u;
	int rc;

	*up = u = calloc(o->units, sizeof(*u));
	*rp = calloc(o->units, sizeof(**rp));
	if (!u || !*rp)
		return -ENOMEM;
	rc = memclient_open(&co, cp);
	if (!rc)
		rc = memclient_seq_open(*cp, (uint64_t)w->index, max_blocks, &seq);
	for (uint32_t i = 0; !rc && i < o->units; i++) {
		u[i] = (struct memclient_unit){.seq = seq,
					       .block = i / per_block,
					       .layer = i % per_block / bench_geom.n_kv_heads,
					       .head = i % bench_geom.n_kv_heads};
	}
	if (!rc)
		rc = memclient_alloc(*cp, u, o->units, *rp);
	for (uint32_t i = 0; !rc && i < o->units; i++) {
		rc = (*rp)[i].status;
		if (!rc)
			memset(memclient_slot_ptr(*cp, (*rp)[i].slot), (int)i, unit_bytes);
	}
	if (!rc)
		rc = memclient_commit(*cp, u, o->units, 0, *rp);
	for (uint32_t i = 0; !rc && i < o->units; i++)
		rc = (*rp)[i].status;
	return rc;
}

static int one_request(struct memclient *c, int path, const struct memclient_unit *u, uint32_t n,
		       uint64_t step, struct memclient_result *r, uint64_t *errors)
{
	int rc = path == PATH_SHM ? memclient_forecast(c, u, n, step, r)
				  : memclient_forecast_zmq(c, u, n, step, r);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < n; i++)
		*errors += r[i].status != 0;
	memclient_epoch_publish(c, step); /* the "reads" of this step are done */
	return 0;
}

static void run_path(struct worker *w, struct memclient *c, int path,
		     const struct memclient_unit *u, struct memclient_result *r)
{
	const struct bench_opts *o = w->sh->o;
	uint64_t end = time_now_ns() + (uint64_t)(o->seconds * 1e9);

	hist_reset(&w->hist[path]);
	while (!w->rc && (o->requests ? w->done[path] < o->requests : time_now_ns() < end)) {
		uint64_t t0 = time_now_ns();
		int rc = one_request(c, path, u, o->units, ++w->step, r, &w->errors);

		if (rc) {
			w->rc = rc;
			snprintf(w->error, sizeof(w->error), "%s forecast: %s", path_names[path],
				 err_str(rc));
			break;
		}
		hist_add(&w->hist[path], time_now_ns() - t0);
		w->done[path]++;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct memclient *c = NULL;
	struct memclient_unit *u = NULL;
	struct memclient_result *r = NULL;

	w->rc = setup(w, &c, &u, &r);
	if (w->rc)
		snprintf(w->error, sizeof(w->error), "setup: %s %s", err_str(w->rc),
			 c ? memclient_last_error(c) : "");
	for (int path = 0; path < N_PATHS; path++) {
		pthread_barrier_wait(&w->sh->barrier); /* everyone starts the path together */
		run_path(w, c, path, u, r);
	}
	pthread_barrier_wait(&w->sh->barrier);
	memclient_close(c);
	free(u);
	free(r);
	return NULL;
}

static int write_json(const struct bench_opts *o, const struct hist *h, const double *rps)
{
	struct json_object *j = json_object_new_object();
	int rc;

	for (int p = 0; p < N_PATHS; p++) {
		char key[32];
		snprintf(key, sizeof(key), "%s_p50_us", path_names[p]);
		json_object_object_add(j, key,
				       json_object_new_double(hist_percentile(&h[p], 50) / 1e3));
		snprintf(key, sizeof(key), "%s_p99_us", path_names[p]);
		json_object_object_add(j, key,
				       json_object_new_double(hist_percentile(&h[p], 99) / 1e3));
		snprintf(key, sizeof(key), "%s_p999_us", path_names[p]);
		json_object_object_add(j, key,
				       json_object_new_double(hist_percentile(&h[p], 99.9) / 1e3));
		snprintf(key, sizeof(key), "%s_requests_per_s", path_names[p]);
		json_object_object_add(j, key, json_object_new_double(rps[p]));
		snprintf(key, sizeof(key), "%s_requests", path_names[p]);
		json_object_object_add(j, key, json_object_new_int64((int64_t)h[p].count));
	}
	json_object_object_add(j, "clients", json_object_new_int(o->clients));
	json_object_object_add(j, "units", json_object_new_int64(o->units));
	json_object_object_add(j, "mode",
			       json_object_new_string(o->mode == SP_WAIT_POLL ? "poll" : "sleep"));
	json_object_object_add(j, "shm_requests_as",
			       json_object_new_string(o->per_unit ? "per-unit" : "vector"));
	rc = json_object_to_file_ext(o->json, j, JSON_C_TO_STRING_PRETTY);
	json_object_put(j);
	return rc ? -EIO : 0;
}

static void report(const struct bench_opts *o, struct worker *w, const uint64_t *wall_ns)
{
	struct hist h[N_PATHS];
	double rps[N_PATHS];
	uint64_t errors = 0;

	printf("%-5s %-6s %7s %6s %10s %12s %9s %9s %9s\n", "path", "mode", "clients", "units",
	       "requests", "requests/s", "p50_us", "p99_us", "p99.9_us");
	for (int p = 0; p < N_PATHS; p++) {
		hist_reset(&h[p]);
		for (int i = 0; i < o->clients; i++)
			hist_merge(&h[p], &w[i].hist[p]);
		rps[p] = wall_ns[p] ? h[p].count / (wall_ns[p] / 1e9) : 0;
		printf("%-5s %-6s %7d %6u %10llu %12.0f %9.1f %9.1f %9.1f\n", path_names[p],
		       p == PATH_ZMQ ? "-" : (o->mode == SP_WAIT_POLL ? "poll" : "sleep"),
		       o->clients, o->units, (unsigned long long)h[p].count, rps[p],
		       hist_percentile(&h[p], 50) / 1e3, hist_percentile(&h[p], 99) / 1e3,
		       hist_percentile(&h[p], 99.9) / 1e3);
	}
	for (int i = 0; i < o->clients; i++)
		errors += w[i].errors;
	printf("unit errors: %llu\n", (unsigned long long)errors);
	printf("shm forecasts: %s\n", o->per_unit ? "one ring entry per unit (--per-unit)"
						   : "vectored (units in the vector area)");
	if (o->json && write_json(o, h, rps))
		fprintf(stderr, "bench: cannot write %s\n", o->json);
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: sparda bench memsvc [--runtime-dir DIR] [--clients N] [--units M]\n"
	    "                           [--mode poll|sleep] [--seconds S | --requests R]\n"
	    "                           [--per-unit] [--json PATH]\n"
	    "  Without --runtime-dir a private sparda-memsvc (found next to sparda) is started.\n"
	    "  --per-unit: shared-memory Forecasts as one ring entry per unit instead of through\n"
	    "  the vector area (the client library's default).\n");
}

static int parse(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
	    {"runtime-dir", required_argument, NULL, 'd'},
	    {"clients", required_argument, NULL, 'c'},
	    {"units", required_argument, NULL, 'u'},
	    {"mode", required_argument, NULL, 'm'},
	    {"seconds", required_argument, NULL, 's'},
	    {"requests", required_argument, NULL, 'r'},
	    {"json", required_argument, NULL, 'j'},
	    {"per-unit", no_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	char *end;
	int ch;

	*o = (struct bench_opts){.clients = 2, .units = 96, .mode = SP_WAIT_POLL, .seconds = 2};
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		errno = 0;
		switch (ch) {
		case 'd':
			o->runtime_dir = optarg;
			continue; /* not a number: skip the number check below */
		case 'c':
			o->clients = (int)strtol(optarg, &end, 10);
			break;
		case 'u':
			o->units = (uint32_t)strtoul(optarg, &end, 10);
			break;
		case 's':
			o->seconds = strtod(optarg, &end);
			break;
		case 'r':
			o->requests = strtoull(optarg, &end, 10);
			break;
		case 'j':
			o->json = optarg;
			continue;
		case 'p':
			o->per_unit = true;
			continue;
		case 'm':
			if (!strcmp(optarg, "poll") || !strcmp(optarg, "sleep")) {
				o->mode = optarg[0] == 'p' ? SP_WAIT_POLL : SP_WAIT_SLEEP;
				continue;
			}
			fprintf(stderr, "bench: --mode must be poll or sleep\n");
			return -EINVAL;
		case 'h':
			usage();
			return 1;
		default:
			usage();
			return -EINVAL;
		}
		if (errno || *end) {
			fprintf(stderr, "bench: bad number '%s'\n", optarg);
			return -EINVAL;
		}
	}
	if (optind != argc || o->clients < 1 || o->clients > 256 || o->units < 1 ||
	    o->units > 4096 || o->seconds <= 0) {
		usage();
		return -EINVAL;
	}
	return 0;
}

static int run_bench(const struct bench_opts *o, const char *rundir)
{
	struct bench_shared sh = {.o = o, .rundir = rundir};
	struct worker *w = calloc((size_t)o->clients, sizeof(*w));
	uint64_t wall[N_PATHS], t;
	int failed = 0;

	if (!w)
		return 1;
	pthread_barrier_init(&sh.barrier, NULL, (unsigned)o->clients + 1);
	for (int i = 0; i < o->clients; i++) {
		w[i] = (struct worker){.sh = &sh, .index = i};
		if (pthread_create(&w[i].thread, NULL, worker_main, &w[i])) {
			fprintf(stderr, "bench: cannot start thread %d\n", i);
			exit(1); /* the barrier cannot be met any more */
		}
	}
	for (int p = 0; p < N_PATHS; p++) {
		pthread_barrier_wait(&sh.barrier);
		t = time_now_ns();
		if (p > 0)
			wall[p - 1] = t - wall[p - 1];
		wall[p] = t;
	}
	pthread_barrier_wait(&sh.barrier);
	wall[N_PATHS - 1] = time_now_ns() - wall[N_PATHS - 1];
	for (int i = 0; i < o->clients; i++) {
		pthread_join(w[i].thread, NULL);
		if (w[i].rc) {
			fprintf(stderr, "bench: client %d: %s\n", i, w[i].error);
			failed = 1;
		}
	}
	pthread_barrier_destroy(&sh.barrier);
	if (!failed)
		report(o, w, wall);
	free(w);
	return failed;
}

static int bench_memsvc(int argc, char **argv)
{
	struct memsvc_proc *daemon = NULL;
	struct bench_opts o;
	char bin[PATH_MAX];
	int rc, status = 0, ret;

	rc = parse(argc, argv, &o);
	if (rc)
		return rc > 0 ? 0 : 2;
	if (!o.runtime_dir) {
		struct memsvc_proc_opts po = {.binary = bin};

		rc = memsvc_proc_find_binary(bin, sizeof(bin));
		if (!rc)
			rc = memsvc_proc_start(&po, &daemon);
		if (rc) {
			fprintf(stderr, "bench: cannot start sparda-memsvc: %s\n", err_str(rc));
			memsvc_proc_free(daemon);
			return 1;
		}
	}
	ret = run_bench(&o, o.runtime_dir ? o.runtime_dir : memsvc_proc_runtime_dir(daemon));
	if (daemon) {
		rc = memsvc_proc_stop(daemon, SIGTERM, 10000, &status);
		if (rc || !WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "bench: sparda-memsvc did not exit cleanly\n");
			ret = 1;
		}
		memsvc_proc_free(daemon);
	}
	return ret;
}

int cmd_bench(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "memsvc"))
		return bench_memsvc(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "sweep"))
		return bench_sweep(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "report"))
		return bench_report(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "spill"))
		return bench_spill(argc - 1, argv + 1);
	fprintf(stderr, "usage: sparda bench memsvc|sweep|report|spill [--help]\n");
	return 2;
}
