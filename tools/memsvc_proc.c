/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A sparda-memsvc child process in its own runtime directory: fork/exec, readiness by the
 * appearance of its endpoints (bounded wait, early exit noticed), signals with bounded waits,
 * and removal of the temp directory it ran in.
 */
#include "memsvc_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "timeutil.h"

#define MAX_ARGS 64
#define POLL_NS 2000000ull /* 2 ms between readiness / exit checks */

struct memsvc_proc {
	pid_t pid;
	pid_t parent; /* our pid, for the child's parent-death check */
	bool reaped;
	int status;
	bool own_dir;
	char dir[PATH_MAX];
	char log[PATH_MAX];
};

int memsvc_proc_find_binary(char *buf, size_t len)
{
	char self[PATH_MAX];
	const char *build = getenv("SPARDA_BUILD_DIR");
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int w;

	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			w = snprintf(buf, len, "%s/sparda-memsvc", self);
			if (w < 0 || (size_t)w >= len)
				return -ENAMETOOLONG;
			if (access(buf, X_OK) == 0)
				return 0;
		}
	}
	if (build && *build) {
		w = snprintf(buf, len, "%s/bin/sparda-memsvc", build);
		if (w < 0 || (size_t)w >= len)
			return -ENAMETOOLONG;
		if (access(buf, X_OK) == 0)
			return 0;
	}
	return -ENOENT;
}

static int make_dir(struct memsvc_proc *p, const char *want)
{
	const char *tmp = getenv("TMPDIR");

	if (want) {
		snprintf(p->dir, sizeof(p->dir), "%s", want);
		return 0;
	}
	/* Short names: the ipc:// and attach.sock paths must fit sun_path (108 bytes). */
	snprintf(p->dir, sizeof(p->dir), "%s/sparda-XXXXXX",
		 tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
	if (!mkdtemp(p->dir))
		return -errno;
	p->own_dir = true;
	return 0;
}

static void child_exec(const struct memsvc_proc_opts *o, struct memsvc_proc *p)
{
	const char *argv[MAX_ARGS + 8];
	bool has_port = false;
	int n = 0;

	argv[n++] = o->binary;
	argv[n++] = "--runtime-dir";
	argv[n++] = p->dir;
	for (int i = 0; o->args && o->args[i] && i < MAX_ARGS; i++) {
		has_port |= !strncmp(o->args[i], "--metrics-port", 14);
		argv[n++] = o->args[i];
	}
	if (!has_port) {
		argv[n++] = "--metrics-port";
		argv[n++] = "0";
	}
	argv[n] = NULL;
	/* Never outlive the process that started us (a failed test, a killed tool). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != p->parent)
		_exit(127);
	if (p->log[0]) {
		int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO); /* nor hold our stdout pipe open */
			dup2(fd, STDERR_FILENO);
		}
	}
	execv(o->binary, (char *const *)argv);
	_exit(127);
}

static bool reap(struct memsvc_proc *p, int flags)
{
	if (p->reaped)
		return true;
	pid_t r = waitpid(p->pid, &p->status, flags);
	if (r == p->pid || (r < 0 && errno == ECHILD))
		p->reaped = true;
	return p->reaped;
}

static bool endpoints_exist(const struct memsvc_proc *p)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/attach.sock", p->dir);
	if (stat(path, &st))
		return false;
	snprintf(path, sizeof(path), "%s/ctl.ipc", p->dir);
	return stat(path, &st) == 0;
}

int memsvc_proc_start(const struct memsvc_proc_opts *o, struct memsvc_proc **out)
{
	struct memsvc_proc *p;
	uint64_t deadline;
	int rc;

	if (!o || !o->binary || !out)
		return -EINVAL;
	*out = NULL;
	if (access(o->binary, X_OK))
		return -ENOENT;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	rc = make_dir(p, o->runtime_dir);
	if (rc)
		goto out_free;
	if (o->capture_stderr)
		snprintf(p->log, sizeof(p->log), "%.*s/memsvc.log", PATH_MAX - 16, p->dir);
	p->parent = getpid();
	p->pid = fork();
	if (p->pid < 0) {
		rc = -errno;
		goto out_free;
	}
	if (p->pid == 0)
		child_exec(o, p);
	*out = p;
	if (o->no_wait)
		return 0;
	deadline = time_now_ns() +
		   (uint64_t)(o->ready_timeout_ms > 0 ? o->ready_timeout_ms : 10000) * 1000000ull;
	while (!endpoints_exist(p)) {
		if (reap(p, WNOHANG))
			return -ECHILD;
		if (time_now_ns() >= deadline) {
			memsvc_proc_kill9(p);
			return -ETIMEDOUT;
		}
		time_sleep_ns(POLL_NS);
	}
	return 0;
out_free:
	if (p->own_dir)
		rmdir(p->dir);
	free(p);
	return rc;
}

const char *memsvc_proc_runtime_dir(const struct memsvc_proc *p)
{
	return p->dir;
}

const char *memsvc_proc_log_path(const struct memsvc_proc *p)
{
	return p->log;
}

pid_t memsvc_proc_pid(const struct memsvc_proc *p)
{
	return p->pid;
}

bool memsvc_proc_running(struct memsvc_proc *p)
{
	return !reap(p, WNOHANG);
}

int memsvc_proc_kill9(struct memsvc_proc *p)
{
	if (reap(p, WNOHANG))
		return -ESRCH;
	kill(p->pid, SIGKILL);
	reap(p, 0);
	return 0;
}

int memsvc_proc_stop(struct memsvc_proc *p, int sig, int timeout_ms, int *status)
{
	uint64_t deadline = time_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	if (!reap(p, WNOHANG) && sig)
		kill(p->pid, sig);
	while (!reap(p, WNOHANG)) {
		if (time_now_ns() >= deadline) {
			memsvc_proc_kill9(p);
			return -ETIMEDOUT;
		}
		time_sleep_ns(POLL_NS);
	}
	if (status)
		*status = p->status;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void memsvc_proc_free(struct memsvc_proc *p)
{
	if (!p)
		return;
	memsvc_proc_kill9(p);
	if (p->own_dir)
		nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(p);
}

void memsvc_proc_log_tail(const char *log)
{
	char buf[4096];
	FILE *f = fopen(log, "re");
	long end;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	end = ftell(f);
	fseek(f, end > (long)sizeof(buf) - 1 ? end - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	fprintf(stderr, "--- %s (end) ---\n%s", log, buf);
}
