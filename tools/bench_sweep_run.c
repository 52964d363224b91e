/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One configuration of `sparda bench sweep`: its modes in one sparda-compute process (against
 * a fresh sparda-memsvc, or with the in-process arena), with a wall-clock limit, logs kept under
 * <out>/logs, and a record JSON that says per mode what it measured or why it failed: GPU or
 * host memory, timeout, or another error, and which Forecast compute loaded (trained or not).
 * When a process fails (or is killed), the modes it finished keep their figures (compute rewrites
 * its JSON after each mode) and only the modes it did not reach run again, in a new process.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_cmds.h"
#include "err.h"
#include "memsvc_proc.h"
#include "timeutil.h"

enum { MAX_ARGS = 48, MODES_MAX = 16 };

/* One sparda-compute process of a configuration. */
struct outcome {
	int exit_status; /* exit code, 128+signal, or -1 when not started */
	bool timed_out;
	bool memsvc_killed; /* the daemon died of a SIGKILL during the run */
	double wall_s;
	long long compute_maxrss;	    /* bytes, from wait4 */
	long long memsvc_hwm, memsvc_shmem; /* bytes, from /proc before the drain; -1: none */
	char error[512];		    /* last error line of the compute log */
	char memsvc[512];		    /* last refusal line of the memsvc log */
	char failed_mode[32];		    /* the mode running when it failed ("" unknown) */
	const char *status;		    /* see classify() */
};

int sweep_sibling(const char *name, char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return -errno;
	self[n] = 0;
	if (!(slash = strrchr(self, '/')))
		return -ENOENT;
	*slash = 0;
	if ((size_t)snprintf(buf, len, "%s/%s", self, name) >= len)
		return -ENAMETOOLONG;
	return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

bool sweep_mode_offloads(const char *mode)
{
	return !strcmp(mode, "sparse-offload") || !strcmp(mode, "sparda") ||
	       !strcmp(mode, "sparda-noprefetch");
}

static void copy_str(char *buf, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(buf, src, n);
	buf[n] = 0;
}

/* The last line of path containing needle (or any non-empty line when needle is NULL). */
static void last_line(const char *path, const char *needle, char *buf, size_t len)
{
	char line[1024];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (line[0] && (!needle || strstr(line, needle)))
			copy_str(buf, len, line);
	}
	fclose(f);
}

/* The mode compute last announced (`msg="running" mode=X` or the warm-up's) in its log. */
static void last_mode(const char *log, char *buf, size_t len)
{
	char run[1024] = "", warm[1024] = "", *m;

	last_line(log, "msg=\"running\" mode=", run, sizeof(run));
	if (!run[0])
		last_line(log, "msg=\"warm-up\" mode=", warm, sizeof(warm));
	m = strstr(run[0] ? run : warm, " mode=");
	if (!m)
		return;
	m += 6;
	snprintf(buf, len, "%.*s", (int)strcspn(m, " \t"), m);
}

/* "<flag>a,b,c" of the n names into buf. */
static void list_flag(char *buf, size_t len, const char *flag, const char *const *v, int n)
{
	int off = snprintf(buf, len, "%s", flag);

	for (int i = 0; i < n; i++)
		off += snprintf(buf + off, len - (size_t)off, "%s%s", i ? "," : "", v[i]);
}

static void build_argv(const struct sweep_cfg *c, const char *const *modes, int n_modes,
		       bool inproc, const char *bin, const char *rundir, const char *json,
		       char store[][PATH_MAX + 32], char **av)
{
	int n = 0, k = 0;

	av[n++] = (char *)bin;
	if (rundir)
		snprintf(store[k], sizeof(store[k]), "--runtime-dir=%s", rundir);
	else
		snprintf(store[k], sizeof(store[k]), "--host-store=inproc");
	av[n++] = store[k++];
	if (c->model_dir[0])
		snprintf(store[k], sizeof(store[k]), "--model=%s", c->model_dir);
	else
		snprintf(store[k], sizeof(store[k]), "--preset=%s", c->preset);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--prompt-tokens=%u", c->context);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--batch=%u", c->batch);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--new-tokens=%u", c->new_tokens);
	av[n++] = store[k++];
	list_flag(store[k], sizeof(store[k]), "--modes=", modes, n_modes);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--backend=%s", c->backend);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--json=%s", json);
	av[n++] = store[k++];
	if (inproc && c->n_inproc) {
		list_flag(store[k], sizeof(store[k]), "--inproc-modes=", c->inproc_modes,
			  c->n_inproc);
		av[n++] = store[k++];
	}
	/* a benchmark measures the mode asked for, never the fallback */
	av[n++] = "--fallback=false";
	for (int i = 0; c->compute_args && c->compute_args[i] && n < MAX_ARGS - 1; i++)
		av[n++] = (char *)c->compute_args[i];
	av[n] = NULL;
}

/* Wait for pid, killing it when timeout_s passes (0: no limit). Stores the exit status. */
static int wait_limited(pid_t pid, double timeout_s, struct outcome *o)
{
	uint64_t t0 = time_now_ns();
	struct rusage ru = {0};
	int status;

	for (;;) {
		pid_t r = wait4(pid, &status, WNOHANG, &ru);

		if (r < 0 && errno != EINTR)
			return -errno;
		if (r == pid)
			break;
		if (!o->timed_out && timeout_s > 0 &&
		    (double)(time_now_ns() - t0) / 1e9 > timeout_s) {
			kill(pid, SIGKILL);
			o->timed_out = true;
		}
		nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
	}
	o->wall_s = (double)(time_now_ns() - t0) / 1e9;
	o->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	o->compute_maxrss = (long long)ru.ru_maxrss * 1024;
	return 0;
}

static int run_compute(const char *bin, char **av, double timeout_s, const char *log,
		       struct outcome *o)
{
	int rc, fd;
	pid_t pid;

	if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (pid == 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execv(bin, av);
		fprintf(stderr, "cannot execute %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(fd);
	return wait_limited(pid, timeout_s, o);
}

/* A "Key:   N kB" line of /proc/<pid>/status in bytes, or -1. */
static long long proc_status_kb(pid_t pid, const char *key)
{
	char path[64], line[256];
	long long v = -1;
	size_t n = strlen(key);
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':') {
			v = strtoll(line + n + 1, NULL, 10) * 1024;
			break;
		}
	fclose(f);
	return v;
}

/* Copy the daemon's log out of its runtime dir before memsvc_proc_free removes it. */
static void keep_log(const char *from, const char *to, struct outcome *o)
{
	char buf[8192];
	FILE *in = fopen(from, "r"), *out = in ? fopen(to, "w") : NULL;
	size_t n;

	while (out && (n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	if (out)
		fclose(out);
	if (in)
		fclose(in);
	last_line(to, "refused", o->memsvc, sizeof(o->memsvc));
}

static bool has(const char *s, const char *needle)
{
	return strstr(s, needle) != NULL;
}

/*
 * "ok", "timeout", "gpu-oom" (a device allocation failed), "host-oom" (memsvc's budget or a
 * tenant quota, a failed pinned-host allocation, or a SIGKILL that was not ours: the kernel's
 * OOM killer) or "error".
 */
static const char *classify(const struct outcome *o, const char *compute_log)
{
	char oom[512] = "";

	if (o->timed_out)
		return "timeout";
	if (o->exit_status == 0)
		return "ok";
	if (o->exit_status == -1)
		return "error";
	if (o->exit_status == 128 + SIGKILL || o->memsvc_killed)
		return "host-oom";
	/* the CUDA backend logs "cuda call failed call=X err=out of memory" */
	last_line(compute_log, "err=out of memory", oom, sizeof(oom));
	if (oom[0])
		return has(oom, "cudaHostRegister") || has(oom, "cudaHostAlloc") ||
			       has(oom, "cudaMallocHost")
			   ? "host-oom"
			   : "gpu-oom";
	if (has(o->error, "cudaErrorMemoryAllocation"))
		return "gpu-oom";
	if (has(o->memsvc, "ENOMEM") || has(o->memsvc, "EDQUOT") || has(o->error, "EDQUOT") ||
	    (has(o->error, "memsvc") && has(o->error, "ENOMEM")))
		return "host-oom";
	if (has(o->error, "ENOMEM") || has(o->error, "out of memory"))
		return has(o->error, "device") || has(o->error, "cuda") ? "gpu-oom" : "host-oom";
	return "error";
}

/* Start a daemon for a memsvc run; its failure is recorded as the run's error. */
static int start_memsvc(const struct sweep_cfg *c, struct memsvc_proc **p, struct outcome *o)
{
	char bin[PATH_MAX];
	struct memsvc_proc_opts po = {
	    .binary = bin, .args = c->memsvc_args, .capture_stderr = true};
	int rc = memsvc_proc_find_binary(bin, sizeof(bin));

	if (!rc)
		rc = memsvc_proc_start(&po, p);
	if (rc)
		snprintf(o->error, sizeof(o->error), "sparda-memsvc did not start: %s",
			 err_str(rc));
	return rc;
}

/* The mode compute's JSON marks "failed" (compute stops at it), into buf ("" when none). */
static void json_failed_mode(json_object *root, char *buf, size_t len)
{
	json_object_object_foreach(root, mode, val)
	{
		json_object *st;

		if (json_object_object_get_ex(val, "status", &st) &&
		    !strcmp(json_object_get_string(st), "failed")) {
			copy_str(buf, len, mode);
			return;
		}
	}
}

/*
 * One process over the given modes. *root gets compute's JSON (new reference) when it wrote
 * one: it does after every mode that finished and, when one failed, with that mode marked
 * "failed".
 */
static void run_once(const struct sweep_cfg *c, const char *const *modes, int n_modes, int k,
		     double timeout_s, struct outcome *o, json_object **root)
{
	char json[PATH_MAX], log[PATH_MAX], mlog[PATH_MAX], bin[PATH_MAX];
	char store[11][PATH_MAX + 32], *av[MAX_ARGS];
	struct memsvc_proc *p = NULL;
	bool memsvc = strcmp(c->store, "inproc") != 0;
	int rc, st;

	*o = (struct outcome){.exit_status = -1, .memsvc_hwm = -1, .memsvc_shmem = -1};
	snprintf(json, sizeof(json), "%s/logs/%s.r%d.compute.json", c->out, c->name, k);
	snprintf(log, sizeof(log), "%s/logs/%s.r%d.log", c->out, c->name, k);
	snprintf(mlog, sizeof(mlog), "%s/logs/%s.r%d.memsvc.log", c->out, c->name, k);
	unlink(json);
	if ((rc = sweep_sibling("sparda-compute", bin, sizeof(bin)))) {
		snprintf(o->error, sizeof(o->error), "sparda-compute not found: %s", err_str(rc));
		return;
	}
	if (memsvc && start_memsvc(c, &p, o))
		goto out_free;
	/* the in-process runs go with the first process only: a rerun's modes are what is left */
	build_argv(c, modes, n_modes, memsvc && k == 0, bin, p ? memsvc_proc_runtime_dir(p) : NULL,
		   json, store, av);
	rc = run_compute(bin, av, timeout_s, log, o);
	if (p) {
		o->memsvc_hwm = proc_status_kb(memsvc_proc_pid(p), "VmHWM");
		o->memsvc_shmem = proc_status_kb(memsvc_proc_pid(p), "RssShmem");
		if (!memsvc_proc_running(p) && memsvc_proc_stop(p, 0, 0, &st) == 0 &&
		    WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
			o->memsvc_killed = true; /* died during the run, not by our drain */
		memsvc_proc_stop(p, SIGTERM, 10000, NULL);
		keep_log(memsvc_proc_log_path(p), mlog, o);
	}
	if (rc) {
		snprintf(o->error, sizeof(o->error), "cannot run sparda-compute: %s", err_str(rc));
		goto out_free;
	}
	last_line(log, "level=error", o->error, sizeof(o->error));
	if (o->exit_status && !o->error[0])
		last_line(log, NULL, o->error, sizeof(o->error));
	/* compute rewrites it after every finished mode: a killed process leaves those too */
	if (access(json, F_OK) == 0)
		*root = json_object_from_file(json);
	if (!*root && o->exit_status == 0) { /* every mode ran, but their figures are lost */
		o->exit_status = -1;
		snprintf(o->error, sizeof(o->error), "sparda-compute exited 0 without its JSON");
	} else if (o->exit_status) {
		if (*root)
			json_failed_mode(*root, o->failed_mode, sizeof(o->failed_mode));
		if (!o->failed_mode[0] && (!*root || o->exit_status >= 128)) /* killed */
			last_mode(log, o->failed_mode, sizeof(o->failed_mode));
	}
	if (o->timed_out)
		snprintf(o->error, sizeof(o->error), "killed after the %.0f s timeout", timeout_s);
	else if (o->exit_status == 128 + SIGKILL)
		snprintf(o->error, sizeof(o->error),
			 "killed by SIGKILL, not by the sweep (the kernel's OOM killer?)");
	else if (o->memsvc_killed && o->exit_status)
		snprintf(o->error + strlen(o->error), sizeof(o->error) - strlen(o->error),
			 "%ssparda-memsvc was killed by SIGKILL (the kernel's OOM killer?)",
			 o->error[0] ? "; " : "");
out_free:
	memsvc_proc_free(p);
	o->status = classify(o, log);
}

static json_object *jstr(const char *s)
{
	return s && s[0] ? json_object_new_string(s) : NULL;
}

static json_object *jbytes(long long v)
{
	return v >= 0 ? json_object_new_int64(v) : NULL;
}

static json_object *run_json(const struct outcome *o, const char *const *modes, int n, int k)
{
	json_object *r = json_object_new_object(), *m = json_object_new_array();

	for (int i = 0; i < n; i++)
		json_object_array_add(m, json_object_new_string(modes[i]));
	json_object_object_add(r, "run", json_object_new_int(k));
	json_object_object_add(r, "modes", m);
	json_object_object_add(r, "status", json_object_new_string(o->status));
	json_object_object_add(r, "exit_status", json_object_new_int(o->exit_status));
	json_object_object_add(r, "wall_s", json_object_new_double(o->wall_s));
	json_object_object_add(r, "error", jstr(o->error));
	json_object_object_add(r, "memsvc_error", jstr(o->memsvc));
	json_object_object_add(r, "failed_mode", jstr(o->failed_mode));
	json_object_object_add(r, "compute_maxrss_bytes",
			       o->compute_maxrss > 0 ? jbytes(o->compute_maxrss) : NULL);
	json_object_object_add(r, "memsvc_rss_peak_bytes", jbytes(o->memsvc_hwm));
	json_object_object_add(r, "memsvc_rss_shmem_bytes", jbytes(o->memsvc_shmem));
	return r;
}

/* Per-mode entry: its status, the run it belongs to (-1: none), why it failed, its figures. */
static void mode_add(json_object *modes, const char *mode, const char *status, int run,
		     const char *error, json_object *result, const struct outcome *o)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "status", json_object_new_string(status));
	json_object_object_add(m, "run", run >= 0 ? json_object_new_int(run) : NULL);
	json_object_object_add(m, "error", jstr(error));
	json_object_object_add(m, "compute_maxrss_bytes",
			       o && o->compute_maxrss > 0 ? jbytes(o->compute_maxrss) : NULL);
	json_object_object_add(m, "memsvc_rss_peak_bytes", o ? jbytes(o->memsvc_hwm) : NULL);
	json_object_object_add(m, "result", result ? json_object_get(result) : NULL);
	json_object_object_add(modes, mode, m);
}

static int find_mode(const char *const *modes, int n, const char *mode)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(modes[i], mode))
			return i;
	return -1;
}

/*
 * Record the modes of a failed run: the mode it failed in, or every mode when it cannot be
 * told (timeout, failure before the first mode), or every offloading mode when the host store
 * was refused (they share it). Removes them from todo; returns how many are left.
 */
static int fail_modes(json_object *modes, const char **todo, int n, const struct outcome *o, int k)
{
	int at = o->timed_out ? -1 : find_mode(todo, n, o->failed_mode), left = 0;
	bool host = at >= 0 && !strcmp(o->status, "host-oom") && sweep_mode_offloads(todo[at]);

	for (int i = 0; i < n; i++) {
		bool fails = at < 0 || i == at || (host && sweep_mode_offloads(todo[i]));

		if (fails)
			mode_add(modes, todo[i], o->status, k, o->error, NULL, o);
		else
			todo[left++] = todo[i];
	}
	return left;
}

/* The Forecast compute reports (path, trained, fit) from the first mode that has one. */
static void record_forecast(json_object *rec, json_object *root, const char *const *todo, int n)
{
	json_object *m, *f;

	if (json_object_object_get_ex(rec, "forecast", NULL))
		return;
	for (int i = 0; i < n; i++)
		if (json_object_object_get_ex(root, todo[i], &m) && m &&
		    json_object_object_get_ex(m, "forecast", &f) && f) {
			json_object_object_add(rec, "forecast", json_object_get(f));
			return;
		}
}

/* Did compute finish the mode? ("status": "ok", or no status: a compute before the field) */
static json_object *finished(json_object *root, const char *mode)
{
	json_object *m = NULL, *st;

	if (!json_object_object_get_ex(root, mode, &m) || !m)
		return NULL;
	if (json_object_object_get_ex(m, "status", &st) && strcmp(json_object_get_string(st), "ok"))
		return NULL;
	return m;
}

/*
 * The todo modes compute finished, recorded ok with their figures and removed from todo;
 * returns how many are left. After a run that exited 0, a mode missing is an error (none left).
 */
static int take_results(json_object *modes, json_object *root, const char **todo, int n,
			const struct outcome *o, int k)
{
	int left = 0;

	for (int i = 0; i < n; i++) {
		json_object *m = finished(root, todo[i]);

		if (m)
			mode_add(modes, todo[i], "ok", k, NULL, m, o);
		else if (o->exit_status == 0)
			mode_add(modes, todo[i], "error", k,
				 "no result for the mode in compute's JSON", NULL, o);
		else
			todo[left++] = todo[i];
	}
	return left;
}

/* The NULL-terminated pass-through arguments as a JSON array (empty when none). */
static json_object *args_json(const char *const *args)
{
	json_object *a = json_object_new_array();

	for (int i = 0; args && args[i]; i++)
		json_object_array_add(a, json_object_new_string(args[i]));
	return a;
}

static json_object *record_new(const struct sweep_cfg *c)
{
	json_object *r = json_object_new_object(), *asked = json_object_new_array();
	bool memsvc = strcmp(c->store, "inproc") != 0;

	for (int i = 0; i < c->n_modes; i++)
		json_object_array_add(asked, json_object_new_string(c->modes[i]));
	for (int i = 0; i < c->n_skips; i++)
		json_object_array_add(asked, json_object_new_string(c->skips[i].mode));
	json_object_object_add(r, "kind", json_object_new_string("sweep-config"));
	json_object_object_add(r, "model", json_object_new_string(c->model_spec));
	json_object_object_add(r, "preset", json_object_new_string(c->preset));
	json_object_object_add(r, "layers", c->layers ? json_object_new_int((int)c->layers) : NULL);
	json_object_object_add(r, "context", json_object_new_int((int)c->context));
	json_object_object_add(r, "batch", json_object_new_int((int)c->batch));
	json_object_object_add(r, "new_tokens", json_object_new_int((int)c->new_tokens));
	json_object_object_add(r, "backend", json_object_new_string(c->backend));
	json_object_object_add(r, "store", json_object_new_string(c->store));
	json_object_object_add(r, "modes_asked", asked);
	/* the limits it ran under (--gpu-mem-limit, --ram-budget, ...): what was passed, and no
	 * memsvc arguments where no daemon ran */
	json_object_object_add(r, "compute_args", args_json(c->compute_args));
	json_object_object_add(r, "memsvc_args", args_json(memsvc ? c->memsvc_args : NULL));
	return r;
}

/* Write the record atomically (tmp + rename) so a killed sweep never leaves a half file. */
static int record_write(const struct sweep_cfg *c, json_object *r)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s.json", c->out, c->name) >= sizeof(path))
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_object_to_file_ext(tmp, r, JSON_C_TO_STRING_PRETTY))
		return -EIO;
	return rename(tmp, path) ? -errno : 0;
}

/*
 * The first process also ran c->inproc_modes with the in-process arena ("<mode>+inproc" in its
 * JSON): when every one of them finished, write them as the configuration's _inproc record,
 * marked same_process. Otherwise nothing is written and the sweep runs them in a process of
 * their own, as without this.
 */
static bool record_inproc(const struct sweep_cfg *c, json_object *root, json_object *run,
			  const struct outcome *o)
{
	char name[PATH_MAX], key[64];
	struct sweep_cfg ci = *c;
	struct outcome oi;
	json_object *rec, *modes, *runs;
	bool ok;

	oi = *o;
	oi.memsvc_hwm = oi.memsvc_shmem = -1; /* memsvc's peak is the memsvc runs' */
	modes = json_object_new_object();
	for (int i = 0; i < c->n_inproc; i++) {
		json_object *m;

		snprintf(key, sizeof(key), "%s+inproc", c->inproc_modes[i]);
		if (!(m = finished(root, key))) {
			json_object_put(modes);
			return false;
		}
		mode_add(modes, c->inproc_modes[i], "ok", 0, NULL, m, &oi);
	}
	snprintf(name, sizeof(name), "%s_inproc", c->name);
	ci.name = name;
	ci.store = "inproc";
	ci.modes = c->inproc_modes;
	ci.n_modes = c->n_inproc;
	ci.n_skips = 0;
	rec = record_new(&ci);
	runs = json_object_new_array();
	record_forecast(rec, root, c->modes, c->n_modes);
	json_object_array_add(runs, json_object_get(run));
	json_object_object_add(rec, "same_process", json_object_new_boolean(true));
	json_object_object_add(rec, "runs", runs);
	json_object_object_add(rec, "modes", modes);
	ok = record_write(&ci, rec) == 0;
	json_object_put(rec);
	return ok;
}

/* Are the record's arguments (a JSON array, or absent in older records) exactly args? */
static bool args_equal(json_object *rec, const char *key, const char *const *args)
{
	json_object *a = NULL;
	size_t n = 0;

	while (args && args[n])
		n++;
	if (!json_object_object_get_ex(rec, key, &a) || !json_object_is_type(a, json_type_array))
		return n == 0;
	if (json_object_array_length(a) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		const char *v = json_object_get_string(json_object_array_get_idx(a, i));
		if (!v || strcmp(v, args[i]))
			return false;
	}
	return true;
}

int sweep_record_mergeable(const struct sweep_cfg *c, const char *path)
{
	json_object *r;
	bool same;

	if (access(path, F_OK))
		return 0;
	if (!(r = json_object_from_file(path)))
		return -1;
	same = args_equal(r, "compute_args", c->compute_args) &&
	       args_equal(r, "memsvc_args", strcmp(c->store, "inproc") ? c->memsvc_args : NULL);
	json_object_put(r);
	return same ? 1 : -1;
}

/*
 * c->merge: the existing record with this run's modes added. Its runs come first, so this
 * run's modes point past them; the asked modes are the union. Returns the record to write (a
 * new reference), or NULL when the old one cannot be read (then this run's is written alone).
 */
static json_object *merge_record(const struct sweep_cfg *c, json_object *rec)
{
	char path[PATH_MAX];
	json_object *old, *oruns, *omodes, *oasked, *runs, *modes, *asked, *fc;
	size_t base;

	snprintf(path, sizeof(path), "%s/%s.json", c->out, c->name);
	if (!(old = json_object_from_file(path)))
		return NULL;
	if (!json_object_object_get_ex(old, "runs", &oruns) ||
	    !json_object_object_get_ex(old, "modes", &omodes) ||
	    !json_object_object_get_ex(rec, "runs", &runs) ||
	    !json_object_object_get_ex(rec, "modes", &modes)) {
		json_object_put(old);
		return NULL;
	}
	base = json_object_array_length(oruns);
	for (size_t i = 0; i < json_object_array_length(runs); i++)
		json_object_array_add(oruns, json_object_get(json_object_array_get_idx(runs, i)));
	json_object_object_foreach(modes, name, m)
	{
		json_object *run;

		if (json_object_object_get_ex(m, "run", &run) && run)
			json_object_object_add(
			    m, "run",
			    json_object_new_int((int)(base + (size_t)json_object_get_int(run))));
		json_object_object_add(omodes, name, json_object_get(m));
	}
	if (json_object_object_get_ex(old, "modes_asked", &oasked) &&
	    json_object_object_get_ex(rec, "modes_asked", &asked))
		for (size_t i = 0; i < json_object_array_length(asked); i++) {
			json_object *a = json_object_array_get_idx(asked, i);
			bool seen = false;
			for (size_t j = 0; j < json_object_array_length(oasked) && !seen; j++)
				seen = !strcmp(
				    json_object_get_string(a),
				    json_object_get_string(json_object_array_get_idx(oasked, j)));
			if (!seen)
				json_object_array_add(oasked, json_object_get(a));
		}
	if ((!json_object_object_get_ex(old, "forecast", &fc) || !fc) &&
	    json_object_object_get_ex(rec, "forecast", &fc) && fc)
		json_object_object_add(old, "forecast", json_object_get(fc));
	return old;
}

int sweep_run_config(const struct sweep_cfg *c, struct sweep_outcome *so)
{
	const char *todo[MODES_MAX];
	json_object *rec = record_new(c), *runs = json_object_new_array(),
		    *modes = json_object_new_object();
	uint64_t t0 = time_now_ns();
	int n = c->n_modes < MODES_MAX ? c->n_modes : MODES_MAX, rc;

	memcpy(todo, c->modes, sizeof(*todo) * (size_t)n);
	for (int k = 0; n > 0; k++) {
		double left = c->timeout_s - (double)(time_now_ns() - t0) / 1e9;
		json_object *root = NULL;
		struct outcome o;

		if (c->timeout_s > 0 && left <= 1) {
			for (int i = 0; i < n; i++)
				mode_add(modes, todo[i], "timeout", -1,
					 "no time left in the configuration's limit for a rerun",
					 NULL, NULL);
			break;
		}
		run_once(c, todo, n, k, c->timeout_s > 0 ? left : 0, &o, &root);
		json_object_array_add(runs, run_json(&o, todo, n, k));
		so->runs++;
		if (root && k == 0 && c->n_inproc && strcmp(c->store, "inproc"))
			so->inproc_recorded = record_inproc(
			    c, root,
			    json_object_array_get_idx(runs, json_object_array_length(runs) - 1),
			    &o);
		if (root) {
			record_forecast(rec, root, todo, n);
			n = take_results(modes, root, todo, n, &o, k);
			json_object_put(root);
		}
		if (n > 0)
			n = fail_modes(modes, todo, n, &o, k);
	}
	for (int i = 0; i < c->n_skips; i++)
		mode_add(modes, c->skips[i].mode, "skipped", -1, c->skips[i].why, NULL, NULL);
	json_object_object_foreach(modes, key, val)
	{
		json_object *st = json_object_object_get(val, "status");

		(void)key;
		if (!strcmp(json_object_get_string(st), "ok"))
			so->ok++;
		else if (strcmp(json_object_get_string(st), "skipped"))
			so->failed++;
	}
	if (!json_object_object_get_ex(rec, "forecast", NULL)) /* no mode ran */
		json_object_object_add(rec, "forecast", NULL);
	json_object_object_add(rec, "runs", runs);
	json_object_object_add(rec, "modes", modes);
	if (c->merge) {
		json_object *merged = merge_record(c, rec);
		if (merged) {
			json_object_put(rec);
			rec = merged;
		}
	}
	rc = record_write(c, rec);
	json_object_put(rec);
	return rc;
}
