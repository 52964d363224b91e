/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One configuration of `sparda bench sweep`: what `sparda run` does (a fresh sparda-memsvc,
 * sparda-compute against it, drain) with a wall-clock limit, logs kept under <out>/logs, and a
 * record JSON that says why a run failed: GPU or host memory, timeout, or another error.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_cmds.h"
#include "err.h"
#include "memsvc_proc.h"
#include "timeutil.h"

enum { MAX_ARGS = 48 };

struct outcome {
	int exit_status; /* exit code, 128+signal, or -1 when not started */
	bool timed_out;
	double wall_s;
	char error[512];  /* last error line of the compute log */
	char memsvc[512]; /* last refusal line of the memsvc log */
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

static int build_argv(const struct sweep_cfg *c, const char *bin, const char *rundir,
		      const char *json, char store[][PATH_MAX + 32], char **av)
{
	int n = 0, k = 0;

	av[n++] = (char *)bin;
	snprintf(store[k], sizeof(store[k]), "--runtime-dir=%s", rundir);
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
	snprintf(store[k], sizeof(store[k]), "--modes=%s", c->mode);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--backend=%s", c->backend);
	av[n++] = store[k++];
	snprintf(store[k], sizeof(store[k]), "--json=%s", json);
	av[n++] = store[k++];
	/* a benchmark measures the mode asked for, never the fallback */
	av[n++] = "--fallback=false";
	for (int i = 0; c->compute_args && c->compute_args[i] && n < MAX_ARGS - 1; i++)
		av[n++] = (char *)c->compute_args[i];
	av[n] = NULL;
	return 0;
}

/* Wait for pid, killing it when timeout_s passes (0: no limit). Stores the exit status. */
static int wait_limited(pid_t pid, double timeout_s, struct outcome *o)
{
	uint64_t t0 = time_now_ns();
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

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
	return 0;
}

static int run_compute(const struct sweep_cfg *c, const char *rundir, const char *json,
		       const char *log, struct outcome *o)
{
	char bin[PATH_MAX], store[10][PATH_MAX + 32];
	char *av[MAX_ARGS];
	int rc, fd;
	pid_t pid;

	if ((rc = sweep_sibling("sparda-compute", bin, sizeof(bin))))
		return rc;
	build_argv(c, bin, rundir, json, store, av);
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
	return wait_limited(pid, c->timeout_s, o);
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

/* "ok", "timeout", "gpu-oom" (device allocation), "host-oom" (memsvc budget/quota) or "error". */
static const char *classify(const struct outcome *o, const char *compute_log)
{
	char oom[512] = "";

	if (o->timed_out)
		return "timeout";
	if (o->exit_status == 0)
		return "ok";
	last_line(compute_log, "out of memory", oom, sizeof(oom));
	if (oom[0] || has(o->error, "cudaErrorMemoryAllocation"))
		return "gpu-oom";
	if (has(o->memsvc, "ENOMEM") || has(o->memsvc, "EDQUOT") || has(o->error, "EDQUOT") ||
	    (has(o->error, "memsvc") && has(o->error, "ENOMEM")))
		return "host-oom";
	if (has(o->error, "ENOMEM"))
		return has(o->error, "device") || has(o->error, "cuda") ? "gpu-oom" : "host-oom";
	return "error";
}

/*
 * The mode's object from compute's JSON (token ids kept: the report compares each mode with its
 * twin's record, since every configuration runs one mode). New reference or NULL.
 */
static json_object *mode_result(const char *json, const char *mode)
{
	json_object *root = json_object_from_file(json), *m = NULL;

	if (root && json_object_object_get_ex(root, mode, &m)) {
		json_object_get(m);
	} else {
		m = NULL;
	}
	json_object_put(root);
	return m;
}

static json_object *record_new(const struct sweep_cfg *c, const struct outcome *o,
			       const char *status, json_object *result)
{
	json_object *r = json_object_new_object();

	json_object_object_add(r, "model", json_object_new_string(c->model_spec));
	json_object_object_add(r, "preset", json_object_new_string(c->preset));
	json_object_object_add(r, "layers", c->layers ? json_object_new_int((int)c->layers) : NULL);
	json_object_object_add(r, "context", json_object_new_int((int)c->context));
	json_object_object_add(r, "batch", json_object_new_int((int)c->batch));
	json_object_object_add(r, "mode", json_object_new_string(c->mode));
	json_object_object_add(r, "new_tokens", json_object_new_int((int)c->new_tokens));
	json_object_object_add(r, "backend", json_object_new_string(c->backend));
	json_object_object_add(r, "ok", json_object_new_boolean(!strcmp(status, "ok")));
	json_object_object_add(r, "status", json_object_new_string(status));
	json_object_object_add(r, "exit_status", json_object_new_int(o->exit_status));
	json_object_object_add(r, "error", o->error[0] ? json_object_new_string(o->error) : NULL);
	json_object_object_add(r, "memsvc_error",
			       o->memsvc[0] ? json_object_new_string(o->memsvc) : NULL);
	json_object_object_add(r, "wall_s", json_object_new_double(o->wall_s));
	json_object_object_add(r, "result", result);
	return r;
}

/* Write the record atomically (tmp + rename) so a killed sweep never leaves a half file. */
static int record_write(const struct sweep_cfg *c, json_object *r)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];

	snprintf(path, sizeof(path), "%s/%s.json", c->out, c->name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_object_to_file_ext(tmp, r, JSON_C_TO_STRING_PRETTY))
		return -EIO;
	return rename(tmp, path) ? -errno : 0;
}

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

int sweep_run_one(const struct sweep_cfg *c, bool *ok)
{
	char json[PATH_MAX], log[PATH_MAX], mlog[PATH_MAX];
	struct outcome o = {.exit_status = -1};
	struct memsvc_proc *p = NULL;
	json_object *result = NULL, *rec;
	const char *status;
	int rc;

	snprintf(json, sizeof(json), "%s/logs/%s.compute.json", c->out, c->name);
	snprintf(log, sizeof(log), "%s/logs/%s.log", c->out, c->name);
	snprintf(mlog, sizeof(mlog), "%s/logs/%s.memsvc.log", c->out, c->name);
	unlink(json);
	if ((rc = start_memsvc(c, &p, &o)))
		goto out_record;
	rc = run_compute(c, memsvc_proc_runtime_dir(p), json, log, &o);
	memsvc_proc_stop(p, SIGTERM, 10000, NULL);
	keep_log(memsvc_proc_log_path(p), mlog, &o);
	if (rc) {
		snprintf(o.error, sizeof(o.error), "cannot run sparda-compute: %s", err_str(rc));
		goto out_record;
	}
	last_line(log, "level=error", o.error, sizeof(o.error));
	if (o.exit_status && !o.error[0])
		last_line(log, NULL, o.error, sizeof(o.error));
	if (o.exit_status == 0 && !(result = mode_result(json, c->mode))) {
		o.exit_status = -1;
		snprintf(o.error, sizeof(o.error), "no result for mode %s in compute's JSON",
			 c->mode);
	}
out_record:
	memsvc_proc_free(p);
	status = o.exit_status == -1 && !o.timed_out ? "error" : classify(&o, log);
	if (o.timed_out)
		snprintf(o.error, sizeof(o.error), "killed after the %.0f s timeout", c->timeout_s);
	rec = record_new(c, &o, status, result);
	*ok = !strcmp(status, "ok");
	rc = record_write(c, rec);
	json_object_put(rec);
	return rc;
}
