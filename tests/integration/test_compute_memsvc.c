/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-compute as a process against a real sparda-memsvc: all modes agree with their twins
 * through the daemon; with no daemon, sparda falls back to sparda-nooffload (or, with
 * --fallback=false, fails with a message naming memsvc, and the JSON keeps the modes that
 * finished before it and says why it failed; it is rewritten after each mode, so a killed
 * compute leaves the modes it finished); memsvc killed mid-generation gives a
 * clear error and no hang; with an NVMe tier and an arena smaller than the KV, every offloading
 * mode still equals its twin; bad model files and bad flags are refused with the problem named.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "memsvc_harness.h"

static char g_compute[PATH_MAX];

struct proc {
	pid_t pid;
	char log[PATH_MAX];
};

/* Start sparda-compute with args (NULL-terminated); stdout and stderr go to a log file. */
static void spawn(struct proc *p, const char *const *args)
{
	const char *av[32];
	int n = 0;

	snprintf(p->log, sizeof(p->log), "/tmp/sparda-test-compute-%d-%ld.log", (int)getpid(),
		 (long)time(NULL) + rand());
	av[n++] = g_compute;
	for (int i = 0; args && args[i] && n < 30; i++)
		av[n++] = args[i];
	av[n] = NULL;
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		/* a failed assertion must not leave a generation running: die with the test */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(g_compute, (char *const *)av);
		_exit(127);
	}
}

/* Wait up to timeout_ms; returns the exit code (or 128+signal); fails on a hang. */
static int wait_exit(struct proc *p, int timeout_ms)
{
	int st;
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(20000);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &st, 0);
	fail_msg("sparda-compute did not exit within %d ms (log %s)", timeout_ms, p->log);
	return -1;
}

static bool log_has(const struct proc *p, const char *needle)
{
	FILE *f = fopen(p->log, "r");
	char buf[1 << 16];
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

static void dump_log(const struct proc *p)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "tail -20 %s >&2", p->log);
	(void)!system(cmd);
}

static int run_compute(const char *const *args, int timeout_ms, struct proc *p)
{
	spawn(p, args);
	int rc = wait_exit(p, timeout_ms);
	if (rc)
		dump_log(p);
	return rc;
}

/* A compute run that must end with exit status `code` and a log that names `needle`. */
static void expect_exit(struct proc *p, const char *const *args, int timeout_ms, int code,
			const char *needle)
{
	spawn(p, args);
	assert_int_equal(wait_exit(p, timeout_ms), code);
	assert_true(log_has(p, needle));
}

static json_object *mode_obj(json_object *root, const char *mode)
{
	json_object *o = NULL;
	if (!json_object_object_get_ex(root, mode, &o))
		fail_msg("no '%s' in the JSON", mode);
	return o;
}

static const char *str_of(json_object *o, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static double num_of(json_object *o, const char *key)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in the JSON", key);
	return json_object_get_double(v);
}

/* decode_fetch_host.<name> of a mode's JSON. */
static double fetch_host(json_object *o, const char *name)
{
	json_object *fh;
	assert_true(json_object_object_get_ex(o, "decode_fetch_host", &fh));
	return num_of(fh, name);
}

/* decode_store_calls.<name>.calls of a mode's JSON, after checking that the calls' ms add up to
 * decode_store_ms. */
static double store_calls(json_object *o, const char *name)
{
	json_object *all, *e;
	double ms = 0.0;
	assert_true(json_object_object_get_ex(o, "decode_store_calls", &all));
	json_object_object_foreach(all, key, v)
	{
		(void)key;
		ms += num_of(v, "ms");
	}
	assert_true(fabs(ms - num_of(o, "decode_store_ms")) <= 1e-6 + 1e-6 * ms);
	assert_true(json_object_object_get_ex(all, name, &e));
	return num_of(e, "calls");
}

/* Recall is a number in [0, 1] (with one per layer) in the Forecast modes, null elsewhere; the
 * resource figures exist and are consistent with the bytes and the decode time. */
static void check_recall_and_resources(json_object *root)
{
	const char *modes[] = { "dense", "sparse", "sparse-offload", "sparda", "sparda-noprefetch",
				"sparda-nooffload" };
	for (int i = 0; i < 6; i++) {
		json_object *o = mode_obj(root, modes[i]), *rc, *per;
		bool forecast = i >= 3;
		assert_true(json_object_object_get_ex(o, "recall", &rc));
		assert_true(json_object_object_get_ex(o, "recall_per_layer", &per));
		if (forecast) {
			double v = json_object_get_double(rc);
			assert_true(json_object_is_type(rc, json_type_double) && v >= 0 && v <= 1);
			assert_true(json_object_is_type(per, json_type_array));
			assert_true(json_object_array_length(per) == 4);
			for (size_t l = 0; l < 4; l++) {
				json_object *lv = json_object_array_get_idx(per, l);
				assert_true(json_object_get_double(lv) >= 0);
				assert_true(json_object_get_double(lv) <= 1);
			}
			assert_true(num_of(o, "recall_samples") >= 1);
		} else {
			assert_null(rc);
			assert_null(per);
			assert_true(num_of(o, "recall_samples") == 0);
		}
		assert_true(num_of(o, "host_rss_peak_bytes") > 0);
		assert_true(num_of(o, "gpu_mem_peak_bytes") >= 0);
		double ds = num_of(o, "decode_s"), h2d = num_of(o, "bytes_h2d");
		double g = num_of(o, "pcie_h2d_gbps");
		assert_true(fabs(g - h2d / ds * 1e-9) <= 1e-9 + 1e-6 * g);
		assert_true(num_of(o, "pcie_d2h_gbps") >= 0);
		double comp = num_of(o, "decode_compute_ms"), fetch = num_of(o, "decode_fetch_ms");
		double exposed = num_of(o, "decode_fetch_exposed_ms");
		assert_true(comp >= 0 && exposed >= 0 && exposed <= ds * 1e3 + 1e-6);
		assert_true(fabs(comp + exposed - ds * 1e3) < 1e-3 || comp == 0);
		/* fetch time exists exactly where KV is fetched from the host store */
		assert_true((fetch > 0) == (i == 2 || i == 3 || i == 4));
		/* the host store's calls: an epoch each decode step of an offloading mode */
		assert_true((store_calls(o, "epoch") > 0) == (i == 2 || i == 3 || i == 4));
		assert_true(store_calls(o, "forecast") == 0); /* no NVMe tier */
	}
}

/* --runtime-dir of the daemon d, and --json into its runtime directory (out.json). */
static void daemon_args(struct memsvc_proc *d, char rd[PATH_MAX + 32], char js[PATH_MAX])
{
	snprintf(rd, PATH_MAX + 32, "--runtime-dir=%s", memsvc_proc_runtime_dir(d));
	snprintf(js, PATH_MAX, "--json=%s/out.json", memsvc_proc_runtime_dir(d));
}

static void test_modes_through_memsvc(void **state)
{
	struct memsvc_proc *d = harness_start(NULL);
	char rd[PATH_MAX + 32], js[PATH_MAX];
	struct proc p;

	daemon_args(d, rd, js);
	const char *args[] = { rd, js, "--modes=all", "--batch=2", "--prompt-tokens=1100",
			       "--new-tokens=16", NULL };
	assert_int_equal(run_compute(args, 240000, &p), 0);
	json_object *root = json_object_from_file(js + strlen("--json="));
	assert_non_null(root);
	const char *twins[] = { "sparse-offload", "sparda", "sparda-noprefetch" };
	for (int i = 0; i < 3; i++) {
		json_object *o = mode_obj(root, twins[i]), *eq, *h2d;
		assert_true(json_object_object_get_ex(o, "equals_twin", &eq));
		assert_true(json_object_get_boolean(eq));
		assert_true(json_object_object_get_ex(o, "bytes_h2d", &h2d));
		assert_true(json_object_get_int64(h2d) > 0);
		assert_string_equal(str_of(o, "ran"), twins[i]);
	}
	check_recall_and_resources(root);
	json_object_put(root);
	/* compute detached: the daemon still serves and drains cleanly */
	int st = 0;
	assert_int_equal(memsvc_proc_stop(d, SIGTERM, 10000, &st), 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	memsvc_proc_free(d);
	unlink(p.log);
}

/*
 * --inproc-modes: the offloading modes run again in the same process with the in-process host
 * store, after the memsvc runs: "<mode>+inproc" results with store "inproc" that equal the twin
 * and fetch the same units as the memsvc run (the process boundary changes the timing only);
 * a mode that does not offload, or host-store=inproc, is refused with the key named.
 */
static void test_inproc_modes_same_process(void **state)
{
	struct memsvc_proc *d = harness_start(NULL);
	char rd[PATH_MAX + 32], js[PATH_MAX];
	struct proc p;

	daemon_args(d, rd, js);
	const char *args[] = {rd,
			      js,
			      "--modes=sparda,sparda-nooffload,sparse-offload,sparse",
			      "--inproc-modes=sparda,sparse-offload,sparda",
			      "--prompt-tokens=1100",
			      "--new-tokens=12",
			      NULL};
	assert_int_equal(run_compute(args, 240000, &p), 0);
	assert_true(log_has(&p, "mode=sparda+inproc"));
	json_object *root = json_object_from_file(js + strlen("--json="));
	assert_non_null(root);
	assert_int_equal(json_object_object_length(root), 6); /* the repeated sparda runs once */
	const char *modes[] = {"sparda", "sparse-offload"};
	for (int i = 0; i < 2; i++) {
		char name[64];
		json_object *m = mode_obj(root, modes[i]), *in, *eq;

		snprintf(name, sizeof(name), "%s+inproc", modes[i]);
		in = mode_obj(root, name);
		assert_string_equal(str_of(m, "store"), "memsvc");
		assert_string_equal(str_of(in, "store"), "inproc");
		assert_string_equal(str_of(in, "ran"), modes[i]);
		assert_true(json_object_object_get_ex(in, "equals_twin", &eq));
		assert_true(json_object_get_boolean(eq));
		assert_true(num_of(in, "units_fetched") == num_of(m, "units_fetched"));
		assert_true(num_of(in, "bytes_h2d") == num_of(m, "bytes_h2d"));
		assert_true(num_of(in, "decode_step_ms") > 0);
	}
	assert_string_equal(str_of(mode_obj(root, "sparse"), "store"), "none");
	json_object_put(root);
	unlink(p.log);
	/* refused: a mode that keeps its KV on the GPU, and an inproc job */
	const char *bad1[] = {rd, "--modes=sparda", "--inproc-modes=sparda-nooffload", NULL};
	expect_exit(&p, bad1, 30000, 1,
		    "inproc-modes: 'sparda-nooffload' is not an offloading mode");
	unlink(p.log);
	const char *bad2[] = {"--host-store=inproc", "--modes=sparda", "--inproc-modes=sparda", NULL};
	expect_exit(&p, bad2, 30000, 1, "host-store is already inproc");
	unlink(p.log);
	int st = 0;
	assert_int_equal(memsvc_proc_stop(d, SIGTERM, 10000, &st), 0);
	memsvc_proc_free(d);
}

/*
 * --gather=dma-prefetch: sparda's prefetch through the copy engines' path (its load lists come
 * back to the host, which resolves them), sparse-offload's and sparda-noprefetch's fetches on
 * the critical path through the bulk copy, in one process. Each equals its twin, the JSON names
 * each mode's gather, and sparda fetches the same units as with --gather=bulk, all of them by
 * the copy engines (split over two streams: --dma-streams=2, which the JSON records); with
 * --dma-max-bytes=1 none of them (a cap under one unit leaves every fetch to the device). The
 * JSON's decode_fetch_host says what the host did for those fetches. The other gathers refuse
 * both flags.
 */
static void test_gather_dma_prefetch(void **state)
{
	struct memsvc_proc *d = harness_start(NULL);
	char rd[PATH_MAX + 32], js[PATH_MAX];
	const char *gathers[] = {"--gather=dma-prefetch", "--gather=bulk", "--gather=dma-prefetch"};
	const char *extra[] = {"--dma-streams=2", NULL, "--dma-max-bytes=1"};
	const char *offl[] = {"sparse-offload", "sparda", "sparda-noprefetch"};
	double fetched[3] = {0};
	struct proc p;

	(void)state;
	daemon_args(d, rd, js);
	for (int g = 0; g < 3; g++) {
		const char *args[] = {rd,
				      js,
				      "--modes=sparse,sparse-offload,sparda,sparda-noprefetch,"
				      "sparda-nooffload",
				      "--prompt-tokens=1100",
				      "--new-tokens=12",
				      gathers[g],
				      extra[g],
				      NULL};
		const char *want[] = {"bulk", g == 1 ? "bulk" : "dma", "bulk"};
		json_object *root, *gs;

		assert_int_equal(run_compute(args, 240000, &p), 0);
		unlink(p.log);
		assert_non_null(root = json_object_from_file(js + strlen("--json=")));
		for (int i = 0; i < 3; i++) {
			json_object *o = mode_obj(root, offl[i]), *eq;
			assert_true(json_object_object_get_ex(o, "equals_twin", &eq));
			assert_true(json_object_get_boolean(eq));
			assert_string_equal(str_of(o, "gather"), want[i]);
		}
		assert_true(json_object_object_get_ex(mode_obj(root, "sparse"), "gather", &gs));
		assert_null(gs); /* it fetches nothing */
		fetched[g] = num_of(mode_obj(root, "sparda"), "units_fetched");
		assert_true(num_of(mode_obj(root, "sparda"), "units_fetched_dma") ==
			    (g == 0 ? fetched[g] : 0));
		assert_true(num_of(mode_obj(root, "sparse-offload"), "units_fetched_dma") == 0);
		json_object *ns;
		assert_true(
		    json_object_object_get_ex(mode_obj(root, "sparda"), "dma_streams", &ns));
		if (g == 1)
			assert_null(ns);
		else
			assert_int_equal(json_object_get_int(ns), g == 0 ? 2 : 1);
		assert_true(json_object_object_get_ex(mode_obj(root, "sparse-offload"),
						      "dma_streams", &ns));
		assert_null(ns); /* its fetch is the bulk copy's */
		/* the host's part of careful mode's fetches: with the copy engines it resolves and
		 * queues them; under a cap of one byte it only waits for the load lists; the bulk
		 * copy's fetch (sparse-offload, and --gather=bulk) has no host part */
		json_object *sp = mode_obj(root, "sparda");
		assert_true((fetch_host(sp, "layers") > 0) == (g != 1));
		assert_true((fetch_host(sp, "enqueue_ms") > 0) == (g == 0));
		assert_true((fetch_host(sp, "resolve_ms") > 0) == (g == 0));
		assert_true(fetch_host(mode_obj(root, "sparse-offload"), "layers") == 0);
		json_object_put(root);
	}
	assert_true(fetched[0] > 0 && fetched[0] == fetched[1] && fetched[2] == fetched[1]);
	const char *bad[] = {rd, "--modes=sparda", "--gather=bulk", "--dma-max-bytes=1M", NULL};
	expect_exit(&p, bad, 30000, 1, "key dma-max-bytes: only with gather=dma");
	unlink(p.log);
	bad[3] = "--dma-streams=2";
	expect_exit(&p, bad, 30000, 1, "key dma-streams: only with gather=dma");
	unlink(p.log);
	bad[3] = "--dma-streams=5";
	bad[2] = "--gather=dma";
	expect_exit(&p, bad, 30000, 2, "key dma-streams: value '5' out of range"); /* usage */
	unlink(p.log);
	int st = 0;
	assert_int_equal(memsvc_proc_stop(d, SIGTERM, 10000, &st), 0);
	memsvc_proc_free(d);
}

/*
 * KV larger than RAM: memsvc with an NVMe tier and a 1 MiB arena (a 1600-token prompt of the tiny
 * model is ~1.2 MiB of units). compute runs in careful mode (each layer's loads go to memsvc as a
 * Forecast first): every offloading mode still equals its twin, its units went through the
 * Forecasts, and memsvc restored units from disk.
 */
static void test_kv_larger_than_ram(void **state)
{
	char *dir = harness_tmpdir();
	char spill[PATH_MAX + 16], rd[PATH_MAX + 32], js[PATH_MAX];
	snprintf(spill, sizeof(spill), "--spill-dirs=%s", dir);
	const char *margs[] = { spill, NULL };
	struct memsvc_proc *d = harness_start(margs);
	struct memclient *c = NULL;
	struct memclient_stat *st = NULL;
	uint32_t n = 0;
	uint64_t restored = 0, spilled = 0;
	struct proc p;

	daemon_args(d, rd, js);
	/* the prompt's KV packed on the compute stream, then on the copy stream (its commits two
	 * layers behind, so the daemon can spill them while later layers are allocated), then the
	 * same with a retaining GPU cache of twice top-k (8): fewer units fetched, same tokens */
	const char *streams[] = { "--prefill-kv-stream=compute", "--prefill-kv-stream=side",
				  "--prefill-kv-stream=side" };
	double fetched[3] = { 0 };
	for (int s = 0; s < 3; s++) {
		const char *args[] = { rd, js, "--modes=sparse,sparse-offload,sparda,sparda-nooffload",
				       "--prompt-tokens=1600", "--arena-bytes=1M", "--new-tokens=16",
				       streams[s], s == 2 ? "--cache-slots=16" : NULL, NULL };
		assert_int_equal(run_compute(args, 240000, &p), 0);
		unlink(p.log);
		json_object *root = json_object_from_file(js + strlen("--json="));
		assert_non_null(root);
		const char *twins[] = { "sparse-offload", "sparda" };
		for (int i = 0; i < 2; i++) {
			json_object *o = mode_obj(root, twins[i]), *eq;
			assert_true(json_object_object_get_ex(o, "equals_twin", &eq));
			assert_true(json_object_get_boolean(eq));
			assert_true(num_of(o, "units_forecast") > 0);
			assert_true(store_calls(o, "forecast") > 0);
			assert_true((num_of(o, "units_written_side") > 0) == (s >= 1));
			/* --seed-cache is on by default: the first step's caches filled in prefill */
			assert_true(num_of(o, "units_seeded") > 0);
		}
		fetched[s] = num_of(mode_obj(root, "sparda"), "units_fetched");
		assert_true(num_of(mode_obj(root, "sparda-nooffload"), "units_forecast") == 0);
		assert_true(num_of(mode_obj(root, "sparda-nooffload"), "units_seeded") == 0);
		json_object_put(root);
	}
	print_message("sparda units fetched: %.0f with the top-k cache, %.0f with 16 slots\n",
		      fetched[1], fetched[2]);
	assert_true(fetched[2] > 0 && fetched[2] < fetched[1]);
	assert_int_equal(harness_open(d, "default", SP_WAIT_SLEEP, 64 << 10, &c), 0);
	assert_int_equal(memclient_stats(c, &st, &n), 0);
	assert_true(memclient_stat_find(st, n, "daemon.spill.units_restored", &restored));
	assert_true(memclient_stat_find(st, n, "daemon.spill.units_spilled", &spilled));
	assert_true(restored > 0 && spilled > 0);
	free(st);
	memclient_close(c);
	int ws = 0;
	assert_int_equal(memsvc_proc_stop(d, SIGTERM, 10000, &ws), 0);
	memsvc_proc_free(d);
	harness_rmdir(dir);
	unlink(p.log);
}

/*
 * The default arena is exactly the job's KV: every offloading mode runs in a memsvc whose RAM
 * budget is that size (batch 2, 1600 + 16 tokens of the tiny model: 2 x 26 blocks x 4 layers x
 * 2 KV heads = 416 units of 8 KiB), and one unit less is refused with an error naming the
 * budget.
 */
static void test_arena_exact_budget(void **state)
{
	const uint64_t kv = 416ull * 8192;
	char budget[64], rd[PATH_MAX + 32], js[PATH_MAX];
	struct proc p;

	for (int less = 0; less < 2; less++) {
		snprintf(budget, sizeof(budget), "--ram-budget=%llu",
			 (unsigned long long)(kv - (less ? 8192 : 0)));
		const char *margs[] = { budget, NULL };
		struct memsvc_proc *d = harness_start(margs);
		daemon_args(d, rd, js);
		const char *args[] = { rd, js, "--modes=sparse-offload,sparda,sparda-noprefetch",
				       "--batch=2", "--prompt-tokens=1600", "--new-tokens=16",
				       "--fallback=false", NULL };
		if (!less) {
			assert_int_equal(run_compute(args, 240000, &p), 0);
			json_object *root = json_object_from_file(js + strlen("--json="));
			assert_non_null(root);
			assert_string_equal(str_of(mode_obj(root, "sparda"), "status"), "ok");
			json_object_put(root);
		} else {
			expect_exit(&p, args, 240000, 1, "RAM budget");
		}
		unlink(p.log);
		int ws = 0;
		assert_int_equal(memsvc_proc_stop(d, SIGTERM, 10000, &ws), 0);
		memsvc_proc_free(d);
	}
}

static void test_no_memsvc_fallback(void **state)
{
	char *dir = harness_tmpdir(), rd[PATH_MAX + 32], js[PATH_MAX];
	struct proc p;

	snprintf(rd, sizeof(rd), "--runtime-dir=%s", dir);
	snprintf(js, sizeof(js), "--json=%s/out.json", dir);
	const char *args[] = { rd, js, "--modes=sparda", "--prompt-tokens=1200",
			       "--new-tokens=8", "--timeout-ms=2000", NULL };
	assert_int_equal(run_compute(args, 60000, &p), 0);
	assert_true(log_has(&p, "falls back"));
	json_object *root = json_object_from_file(js + strlen("--json="));
	assert_non_null(root);
	assert_string_equal(str_of(mode_obj(root, "sparda"), "ran"), "sparda-nooffload");
	json_object_put(root);
	unlink(p.log);

	/* without fallback sparda fails; sparse, before it, keeps its figures; dense, after it,
	 * does not run */
	unlink(js + strlen("--json="));
	const char *strict[] = { rd, js, "--modes=sparse,sparda,dense", "--prompt-tokens=1200",
				 "--new-tokens=8", "--fallback=false", "--timeout-ms=2000", NULL };
	expect_exit(&p, strict, 60000, 1, "sparda-memsvc");
	assert_true(log_has(&p, "failed (E"));
	root = json_object_from_file(js + strlen("--json="));
	assert_non_null(root);
	json_object *ok = mode_obj(root, "sparse"), *bad = mode_obj(root, "sparda"), *toks;
	assert_string_equal(str_of(ok, "status"), "ok");
	assert_true(num_of(ok, "decode_tokens_per_s") > 0 && num_of(ok, "prefill_s") > 0);
	assert_true(json_object_object_get_ex(ok, "tokens", &toks));
	assert_int_equal(json_object_array_length(toks), 1);
	assert_int_equal(json_object_array_length(json_object_array_get_idx(toks, 0)), 8);
	assert_string_equal(str_of(bad, "status"), "failed");
	assert_non_null(strstr(str_of(bad, "error"), "sparda-memsvc"));
	assert_true(str_of(bad, "errno")[0] == 'E' && strlen(str_of(bad, "errno")) > 1);
	assert_false(json_object_object_get_ex(bad, "tokens", NULL));
	assert_false(json_object_object_get_ex(root, "dense", NULL));
	json_object_put(root);
	unlink(p.log);
	harness_rmdir(dir);
}

/* compute killed in its second mode: the JSON already holds the first, and only it. */
static void test_killed_keeps_finished(void **state)
{
	char *dir = harness_tmpdir(), js[PATH_MAX + 16], path[PATH_MAX];
	struct proc p;
	int st;

	snprintf(path, sizeof(path), "%s/out.json", dir);
	snprintf(js, sizeof(js), "--json=%s", path);
	const char *args[] = { js, "--host-store=inproc", "--modes=sparse,dense",
			       "--prompt-tokens=2400", "--new-tokens=4", "--threads=2", NULL };
	spawn(&p, args);
	for (int i = 0; i < 3000 && !log_has(&p, "mode=dense"); i++)
		usleep(20000);
	assert_true(log_has(&p, "mode=dense"));
	kill(p.pid, SIGKILL);
	assert_int_equal(waitpid(p.pid, &st, 0), p.pid);
	assert_true(WIFSIGNALED(st)); /* killed during dense, not after it */
	json_object *root = json_object_from_file(path);
	assert_non_null(root);
	assert_string_equal(str_of(mode_obj(root, "sparse"), "status"), "ok");
	assert_true(num_of(mode_obj(root, "sparse"), "decode_tokens_per_s") > 0);
	assert_false(json_object_object_get_ex(root, "dense", NULL));
	json_object_put(root);
	unlink(p.log);
	harness_rmdir(dir);
}

/* Start compute against a fresh daemon, kill the daemon once decoding runs; returns the exit. */
static int kill_mid_run(struct proc *p, const char *fallback, const char *json)
{
	struct memsvc_proc *d = harness_start(NULL);
	char rd[PATH_MAX + 32];

	snprintf(rd, sizeof(rd), "--runtime-dir=%s", memsvc_proc_runtime_dir(d));
	const char *args[] = { rd, "--modes=sparda", "--prompt-tokens=1100", "--new-tokens=1200",
			       "--timeout-ms=2000", fallback, json, NULL };
	spawn(p, args);
	/* wait until the sparda run started, then kill the daemon under it */
	for (int i = 0; i < 600 && !log_has(p, "mode=sparda"); i++)
		usleep(50000);
	usleep(500000);
	assert_int_equal(memsvc_proc_kill9(d), 0);
	int rc = wait_exit(p, 240000);
	memsvc_proc_free(d);
	return rc;
}

static void test_memsvc_killed_mid_run(void **state)
{
	char *dir = harness_tmpdir(), js[PATH_MAX];
	struct proc p;

	/* without fallback: a clear error naming the host store, no hang */
	assert_int_equal(kill_mid_run(&p, "--fallback=false", "--print-tokens=false"), 1);
	assert_true(log_has(&p, "host store"));
	unlink(p.log);
	/* with fallback: sparda regenerates with device-resident KV and finishes */
	snprintf(js, sizeof(js), "--json=%s/out.json", dir);
	assert_int_equal(kill_mid_run(&p, "--fallback=true", js), 0);
	assert_true(log_has(&p, "memsvc failed mid-run"));
	json_object *root = json_object_from_file(js + strlen("--json="));
	assert_non_null(root);
	assert_string_equal(str_of(mode_obj(root, "sparda"), "ran"), "sparda-nooffload");
	json_object_put(root);
	unlink(p.log);
	harness_rmdir(dir);
}

/* A ragged batch (one prompt below dense_len, one above) runs every mode and twins agree. */
static void test_ragged_prompt_file(void **state)
{
	char *dir = harness_tmpdir(), pf[PATH_MAX + 32], path[PATH_MAX + 16];
	struct proc p;

	snprintf(path, sizeof(path), "%s/prompts.txt", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 300; i++)
		fprintf(f, "%d ", (i * 7) % 500);
	fputc('\n', f);
	for (int i = 0; i < 1500; i++)
		fprintf(f, "%d ", (i * 13 + i / 97) % 500);
	fputc('\n', f);
	fclose(f);
	snprintf(pf, sizeof(pf), "--prompt-file=%s", path);
	const char *args[] = { pf, "--batch=2", "--new-tokens=8", "--host-store=inproc",
			       "--modes=sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload",
			       NULL };
	assert_int_equal(run_compute(args, 120000, &p), 0);
	assert_true(log_has(&p, "yes (sparse)"));
	assert_true(log_has(&p, "yes (sparda-nooffload)"));
	unlink(p.log);
	harness_rmdir(dir);
}

/* Value of the first sample of `name{labels...}` in a Prometheus text body, or -1. */
static double sample(const char *body, const char *prefix)
{
	const char *p = body;
	while ((p = strstr(p, prefix))) {
		if (p == body || p[-1] == '\n') {
			const char *sp = strchr(p, ' ');
			return sp ? strtod(sp + 1, NULL) : -1;
		}
		p++;
	}
	return -1;
}

static bool port_open(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* --metrics-port serves the run's counters while it runs; they parse and move. */
static void test_compute_metrics(void **state)
{
	int port = harness_free_port();
	char mp[64];
	struct proc p;

	snprintf(mp, sizeof(mp), "--metrics-port=%d", port);
	const char *args[] = { mp, "--host-store=inproc", "--modes=sparda", "--prompt-tokens=1100",
			       "--new-tokens=100000", "--recall-every=1", NULL };
	spawn(&p, args);
	for (int i = 0; i < 600 && !port_open(port); i++)
		usleep(50000);
	double steps[2] = { -1, -1 }, recall_blocks[2] = { -1, -1 };
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < 600 && steps[k] <= (k ? steps[0] : 0); i++) {
			char *body = harness_http_get(port, "/metrics");
			if (body) {
				steps[k] = sample(body, "sparda_compute_decode_steps_total{mode=\"sparda\"}");
				recall_blocks[k] = sample(body, "sparda_compute_layer_recall_"
							  "blocks_total{mode=\"sparda\",layer=\"2\"}");
				if (k == 1) {
					double v = sample(body, "sparda_compute_forecast_recall{"
							  "mode=\"sparda\"}");
					assert_true(v >= 0 && v <= 1);
					v = sample(body, "sparda_compute_layer_forecast_recall{"
						   "mode=\"sparda\",layer=\"1\"}");
					assert_true(v >= 0 && v <= 1);
					assert_true(sample(body, "sparda_compute_bytes_total{mode=\"sparda\","
								 "direction=\"h2d\"}") > 0);
					assert_true(sample(body, "sparda_compute_layer_fetched_units_total{"
								 "mode=\"sparda\",layer=\"1\"}") > 0);
				}
				free(body);
			}
			usleep(100000);
		}
	}
	char *health = harness_http_get(port, "/healthz");
	kill(p.pid, SIGKILL);
	waitpid(p.pid, NULL, 0);
	assert_true(steps[0] > 0 && steps[1] > steps[0]);
	/* the recall counters move with the steps (every step sampled) */
	assert_true(recall_blocks[0] >= 0 && recall_blocks[1] > recall_blocks[0]);
	assert_non_null(health);
	assert_non_null(strstr(health, "ok"));
	free(health);
	unlink(p.log);
}

static void test_bad_inputs(void **state)
{
	char *dir = harness_tmpdir(), md[PATH_MAX + 16], path[PATH_MAX + 32];
	struct proc p;

	/* a model directory whose config.json is not JSON */
	snprintf(path, sizeof(path), "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("{ not json", f);
	fclose(f);
	snprintf(md, sizeof(md), "--model=%s", dir);
	const char *a1[] = { md, "--host-store=inproc", NULL };
	expect_exit(&p, a1, 30000, 1, "config.json");
	unlink(p.log);
	/* a model directory that does not exist */
	const char *a2[] = { "--model=/nonexistent/sparda-model", "--host-store=inproc", NULL };
	expect_exit(&p, a2, 30000, 1, "/nonexistent/sparda-model");
	unlink(p.log);
	/* bad flags name the key */
	const char *a3[] = { "--batch=zero", NULL };
	expect_exit(&p, a3, 30000, 2, "batch");
	unlink(p.log);
	const char *a4[] = { "--modes=sparda,fast", "--host-store=inproc", NULL };
	expect_exit(&p, a4, 30000, 1, "unknown mode 'fast'");
	unlink(p.log);
	/* a device smaller than the model's weights: the allocation fails, named, as out of
	 * device memory; a limit that holds them runs */
	const char *a5[] = { "--gpu-mem-limit=2M", "--host-store=inproc", "--modes=sparda",
			     "--new-tokens=2", NULL };
	expect_exit(&p, a5, 60000, 1, "device memory limit reached");
	assert_true(log_has(&p, "device allocation of"));
	unlink(p.log);
	const char *a6[] = { "--gpu-mem-limit=1G", "--host-store=inproc", "--modes=sparda",
			     "--new-tokens=2", NULL };
	assert_int_equal(run_compute(a6, 120000, &p), 0);
	unlink(p.log);
	harness_rmdir(dir);
}

int main(void)
{
	const char *bd = getenv("SPARDA_BUILD_DIR");
	snprintf(g_compute, sizeof(g_compute), "%s/bin/sparda-compute", bd ? bd : ".");
	if (access(g_compute, X_OK) != 0) {
		fprintf(stderr, "skip: %s not built\n", g_compute);
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_modes_through_memsvc),
		cmocka_unit_test(test_inproc_modes_same_process),
		cmocka_unit_test(test_gather_dma_prefetch),
		cmocka_unit_test(test_kv_larger_than_ram),
		cmocka_unit_test(test_arena_exact_budget),
		cmocka_unit_test(test_no_memsvc_fallback),
		cmocka_unit_test(test_memsvc_killed_mid_run),
		cmocka_unit_test(test_killed_keeps_finished),
		cmocka_unit_test(test_ragged_prompt_file),
		cmocka_unit_test(test_compute_metrics),
		cmocka_unit_test(test_bad_inputs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
