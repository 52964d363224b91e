/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda up` and `sparda down`: run sparda-memsvc as a detached daemon in a runtime dir.
 * up forks a small monitor in a new session (setsid) that starts the daemon, writes its pid
 * file atomically, waits for it, logs its exit status and removes the pid file; up itself
 * returns once the daemon answers a ping. down sends SIGTERM, waits for the drain and falls
 * back to SIGKILL after its timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "log.h"
#include "memsvc_proc.h"
#include "ops_cmd.h"
#include "sparda.h"
#include "timeutil.h"

#define MAX_EXTRA 64
#define POLL_US 20000

struct up_args {
	const char *dir;
	const char *config;
	int timeout_ms;
	const char *extra[MAX_EXTRA + 1];
	int n_extra;
};

static const char up_usage[] =
    "usage: sparda up [--runtime-dir DIR] [--config FILE] [--timeout-ms N] [memsvc flags...]\n"
    "Start sparda-memsvc (found next to sparda) as a detached daemon serving DIR (default: the\n"
    "protocol's runtime dir: $SPARDA_RUNTIME_DIR, $XDG_RUNTIME_DIR/sparda, /run/sparda or\n"
    "/tmp/sparda-$UID). Its output is appended to DIR/" OPS_LOG_FILE ", its pid goes to\n"
    "DIR/" OPS_PID_FILE ".\n"
    "Returns once the daemon answers a ping (at most --timeout-ms, default 10000). Refuses\n"
    "when a sparda-memsvc already runs there. Other flags go to sparda-memsvc (see\n"
    "`sparda-memsvc --help`; e.g. --ram-budget=8G --metrics-port=0); --config is its config\n"
    "file. sparda-compute is a batch job (one generation, then it exits), so `up` starts no\n"
    "compute process: run sparda-compute --runtime-dir=DIR for each job.\n"
    "Exit status: 0 running, 1 refused or failed, 2 usage.\n";

static int up_parse(int argc, char **argv, struct up_args *a)
{
	const char *v;
	int m;

	a->timeout_ms = 10000;
	for (int i = 1; i < argc; i++) {
		if ((m = ops_flag(argc, argv, &i, "--runtime-dir", &v)) > 0)
			a->dir = v;
		else if (!m && (m = ops_flag(argc, argv, &i, "--config", &v)) > 0)
			a->config = v;
		else if (!m && (m = ops_flag(argc, argv, &i, "--timeout-ms", &v)) > 0)
			a->timeout_ms = atoi(v);
		else if (!m && a->n_extra < MAX_EXTRA)
			a->extra[a->n_extra++] = argv[i];
		else if (!m)
			m = -E2BIG;
		if (m < 0) {
			fprintf(stderr, "sparda up: bad argument '%s': %s\n", argv[i], err_str(m));
			return m;
		}
	}
	return a->timeout_ms > 0 ? 0 : -EINVAL;
}

static int mkdir_p(const char *dir)
{
	char buf[PATH_MAX];

	if ((size_t)snprintf(buf, sizeof(buf), "%s", dir) >= sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* -EEXIST (with a message) when a daemon serves dir; a stale pid file is removed. */
static int up_check_free(const char *dir)
{
	char path[PATH_MAX];
	pid_t pid = 0;
	int rc = ops_pid_read(dir, &pid);

	if (!rc && ops_pid_is_memsvc(pid)) {
		fprintf(stderr,
			"sparda up: sparda-memsvc already runs in %s (pid %d); "
			"`sparda down --runtime-dir %s` stops it\n",
			dir, (int)pid, dir);
		return -EEXIST;
	}
	if (rc != -ENOENT && !ops_path(dir, OPS_PID_FILE, path, sizeof(path))) {
		fprintf(stderr, "sparda up: removing stale pid file %s (%s)\n", path,
			rc ? err_str(rc) : "that pid is not a running sparda-memsvc");
		unlink(path);
	}
	if (ops_socket_live(dir)) {
		fprintf(stderr,
			"sparda up: a sparda-memsvc already answers on %s/attach.sock (not started "
			"by sparda up: no pid file)\n",
			dir);
		return -EEXIST;
	}
	return 0;
}

/* The monitor: new session, daemon as its child, exit status logged. Never returns. */
static void up_monitor(const char *bin, const char *dir, const char *log, const char **av)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int st = 0, code;
	pid_t pid, cur;

	setsid();
	signal(SIGHUP, SIG_IGN);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		_exit(126);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	log_set_process("sparda-up");
	log_set_level(LOG_LEVEL_INFO); /* the exit line is what `sparda down` reads */
	pid = fork();
	if (pid == 0) {
		execv(bin, (char *const *)av);
		log_error("up", "cannot execute", "binary=%s error=\"%s\"", bin, strerror(errno));
		_exit(127);
	}
	if (pid < 0 || ops_pid_write(dir, pid)) {
		log_error("up", "cannot start or record the daemon", "pid=%d", (int)pid);
		if (pid > 0)
			kill(pid, SIGKILL);
		_exit(1);
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (WIFEXITED(st))
		log_write(code ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO, "up", "sparda-memsvc exited",
			  "pid=%d exit=%d", (int)pid, code);
	else
		log_error("up", "sparda-memsvc exited", "pid=%d signal=%d", (int)pid, WTERMSIG(st));
	if (!ops_pid_read(dir, &cur) && cur == pid) {
		char path[PATH_MAX];
		if (!ops_path(dir, OPS_PID_FILE, path, sizeof(path)))
			unlink(path);
	}
	_exit(code);
}

/* Print the last lines of the daemon's log (the reason it did not start). */
static void print_log_tail(const char *log)
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

/* Wait until the daemon answers a ping. Returns 0, -ECHILD (it exited) or -ETIMEDOUT. */
static int up_wait_ready(pid_t monitor, const char *dir, int timeout_ms, int *status)
{
	uint64_t deadline = time_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	char sock[PATH_MAX];
	struct stat sb;
	pid_t pid;

	if (ops_path(dir, "attach.sock", sock, sizeof(sock)))
		return -ENAMETOOLONG;
	while (time_now_ns() < deadline) {
		struct memclient *c = NULL;
		int rc;

		if (waitpid(monitor, status, WNOHANG) == monitor)
			return -ECHILD;
		/* Ours: the pid the monitor recorded is the daemon, and the socket answers. */
		if (!ops_pid_read(dir, &pid) && ops_pid_is_memsvc(pid) && !stat(sock, &sb) &&
		    !ops_attach(dir, 1000, &c)) {
			rc = memclient_ping(c);
			memclient_close(c);
			if (!rc && waitpid(monitor, status, WNOHANG) == 0)
				return 0;
		}
		usleep(POLL_US);
	}
	return -ETIMEDOUT;
}

static int up_start(const struct up_args *a, const char *bin, const char *dir, const char *log)
{
	const char *av[MAX_EXTRA + 8];
	char cfg[PATH_MAX + 16];
	pid_t monitor, pid = 0;
	int n = 0, status = 0, rc;

	av[n++] = bin;
	av[n++] = "--runtime-dir";
	av[n++] = dir;
	if (a->config) {
		snprintf(cfg, sizeof(cfg), "--config=%s", a->config);
		av[n++] = cfg;
	}
	for (int i = 0; i < a->n_extra; i++)
		av[n++] = a->extra[i];
	av[n] = NULL;
	fflush(NULL);
	monitor = fork();
	if (monitor < 0)
		return -errno;
	if (monitor == 0)
		up_monitor(bin, dir, log, av);
	rc = up_wait_ready(monitor, dir, a->timeout_ms, &status);
	if (rc == -ECHILD) {
		fprintf(stderr, "sparda up: sparda-memsvc exited before it was ready (status %d)\n",
			WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	} else if (rc) {
		fprintf(stderr, "sparda up: sparda-memsvc not ready within %d ms; killing it\n",
			a->timeout_ms);
		if (!ops_pid_read(dir, &pid) && ops_pid_is_memsvc(pid))
			kill(pid, SIGKILL);
	}
	if (rc) {
		print_log_tail(log);
		return rc;
	}
	if (ops_pid_read(dir, &pid))
		pid = 0;
	printf("sparda-memsvc running: pid %d, runtime dir %s\n  attach %s/attach.sock, "
	       "control ipc://%s/ctl.ipc\n  log %s, pid file %s/%s\n",
	       (int)pid, dir, dir, dir, log, dir, OPS_PID_FILE);
	return 0;
}

int cmd_up(int argc, char **argv)
{
	struct up_args a = {0};
	char dir[PATH_MAX], bin[PATH_MAX], log[PATH_MAX];
	int rc;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(up_usage, stdout);
			return 0;
		}
	if (up_parse(argc, argv, &a)) {
		fputs(up_usage, stderr);
		return 2;
	}
	if ((rc = ops_runtime_dir(a.dir, dir, sizeof(dir))) ||
	    (rc = ops_path(dir, OPS_LOG_FILE, log, sizeof(log)))) {
		fprintf(stderr, "sparda up: runtime dir: %s\n", err_str(rc));
		return 1;
	}
	if ((rc = memsvc_proc_find_binary(bin, sizeof(bin)))) {
		fprintf(stderr, "sparda up: sparda-memsvc not found next to sparda: %s\n",
			err_str(rc));
		return 1;
	}
	if ((rc = mkdir_p(dir))) {
		fprintf(stderr, "sparda up: cannot create %s: %s\n", dir, err_str(rc));
		return 1;
	}
	if (up_check_free(dir))
		return 1;
	return up_start(&a, bin, dir, log) ? 1 : 0;
}
