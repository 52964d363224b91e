/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda up` and `sparda down`: run sparda-memsvc as a detached daemon in a runtime dir.
 * up forks a small monitor in a new session (setsid) that starts the daemon, writes its pid
 * file atomically, waits for it, logs its exit status and removes the pid file; up itself
 * returns once the daemon answers a ping. With --compute=N it then starts N sparda-compute
 * --serve-dir services the same way and waits for their ready files. down sends SIGTERM,
 * waits for the drain and falls back to SIGKILL after its timeout.
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
	int n_compute;             /* --compute=N: sparda-compute --serve-dir processes */
	int compute_timeout_ms;
	bool gpu;                  /* no --compute-arg=--backend=cpu: one GPU per compute */
	const char *carg[MAX_EXTRA + 1];
	int n_carg;
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
    "file.\n"
    "--compute=N then starts N sparda-compute services (compute I gets CUDA_VISIBLE_DEVICES=I\n"
    "unless --compute-arg=--backend=cpu), each with --serve-dir=DIR/compute-I, --runtime-dir\n"
    "DIR and every --compute-arg=FLAG; pid file DIR/compute-I.pid, log DIR/compute-I.log.\n"
    "up waits until each wrote DIR/compute-I/ready (--compute-timeout-ms, default 120000).\n"
    "Requests: drop DIR/compute-I/in/NAME.prompt, read DIR/compute-I/out/NAME.json.\n"
    "Exit status: 0 running, 1 refused or failed, 2 usage.\n";

static int up_parse(int argc, char **argv, struct up_args *a)
{
	const char *v;
	int m;

	a->timeout_ms = 10000;
	a->compute_timeout_ms = 120000;
	a->gpu = true;
	for (int i = 1; i < argc; i++) {
		if ((m = ops_flag(argc, argv, &i, "--runtime-dir", &v)) > 0)
			a->dir = v;
		else if (!m && (m = ops_flag(argc, argv, &i, "--compute", &v)) > 0)
			a->n_compute = atoi(v);
		else if (!m && (m = ops_flag(argc, argv, &i, "--compute-timeout-ms", &v)) > 0)
			a->compute_timeout_ms = atoi(v);
		else if (!m && (m = ops_flag(argc, argv, &i, "--compute-arg", &v)) > 0) {
			if (a->n_carg == MAX_EXTRA)
				m = -E2BIG;
			else
				a->carg[a->n_carg++] = v;
			if (!strcmp(v, "--backend=cpu"))
				a->gpu = false;
		}
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
	return a->timeout_ms > 0 && a->compute_timeout_ms > 0 && a->n_compute >= 0 &&
			       a->n_compute <= 64
		       ? 0
		       : -EINVAL;
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

/*
 * The monitor: new session, daemon as its child (pid in DIR/pidfile), "<what> exited" logged.
 * Never returns.
 */
static void up_monitor(const char *bin, const char *dir, const char *log, const char **av,
		       const char *pidfile, const char *what)
{
	char msg[64];
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
	snprintf(msg, sizeof(msg), "%s exited", what);
	if (pid < 0 || ops_pid_write_name(dir, pidfile, pid)) {
		log_error("up", "cannot start or record the daemon", "pid=%d", (int)pid);
		if (pid > 0)
			kill(pid, SIGKILL);
		_exit(1);
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (WIFEXITED(st))
		log_write(code ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO, "up", msg, "pid=%d exit=%d",
			  (int)pid, code);
	else
		log_error("up", msg, "pid=%d signal=%d", (int)pid, WTERMSIG(st));
	if (!ops_pid_read_name(dir, pidfile, &cur) && cur == pid) {
		char path[PATH_MAX];
		if (!ops_path(dir, pidfile, path, sizeof(path)))
			unlink(path);
	}
	_exit(code);
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

/* Start compute i under its monitor (DIR/compute-I.pid, DIR/compute-I.log). */
static int compute_start(const struct up_args *a, const char *bin, const char *dir, int i,
			 pid_t *monitor)
{
	const char *av[MAX_EXTRA + 8];
	char serve[PATH_MAX], sarg[PATH_MAX + 16], rarg[PATH_MAX + 16], log[PATH_MAX];
	char ready[PATH_MAX + 8], pidname[32];
	int n = 0, rc;

	if ((rc = ops_compute_path(dir, i, "", serve, sizeof(serve))) ||
	    (rc = ops_compute_path(dir, i, ".log", log, sizeof(log))))
		return rc;
	snprintf(ready, sizeof(ready), "%s/ready", serve);
	unlink(ready); /* a ready file left by a killed process is not this one's */
	snprintf(sarg, sizeof(sarg), "--serve-dir=%s", serve);
	snprintf(rarg, sizeof(rarg), "--runtime-dir=%s", dir);
	snprintf(pidname, sizeof(pidname), "compute-%d.pid", i);
	av[n++] = bin;
	av[n++] = sarg;
	av[n++] = rarg;
	for (int k = 0; k < a->n_carg; k++)
		av[n++] = a->carg[k];
	av[n] = NULL;
	fflush(NULL);
	*monitor = fork();
	if (*monitor < 0)
		return -errno;
	if (*monitor == 0) {
		char dev[16];
		snprintf(dev, sizeof(dev), "%d", i);
		if (a->gpu)
			setenv("CUDA_VISIBLE_DEVICES", dev, 1);
		up_monitor(bin, dir, log, av, pidname, "sparda-compute");
	}
	return 0;
}

/* 1 when compute i wrote its ready file (with the pid its monitor recorded), 0 not yet,
 * -ECHILD when it exited. */
static int compute_ready(const char *dir, int i, pid_t monitor)
{
	char path[PATH_MAX + 8], pidname[32], line[64];
	pid_t pid;
	int st, ready_pid = -1;
	FILE *f;

	if (waitpid(monitor, &st, WNOHANG) == monitor)
		return -ECHILD;
	snprintf(pidname, sizeof(pidname), "compute-%d.pid", i);
	if (ops_pid_read_name(dir, pidname, &pid) || ops_compute_path(dir, i, "/ready", path,
								      sizeof(path)))
		return 0;
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "pid=%d", &ready_pid) == 1)
			break;
	fclose(f);
	return ready_pid == (int)pid;
}

/* Stop the computes 0..n-1 that run (SIGTERM, SIGKILL after timeout_ms). */
static void computes_stop(const char *dir, int n, int timeout_ms)
{
	char pidname[32];
	bool killed;
	pid_t pid;

	for (int i = 0; i < n; i++) {
		snprintf(pidname, sizeof(pidname), "compute-%d.pid", i);
		if (!ops_pid_read_name(dir, pidname, &pid) && ops_pid_is(pid, "sparda-compute"))
			ops_stop(pid, "sparda-compute", timeout_ms, &killed);
	}
}

/* Start --compute=N services and wait until each is ready; on failure stop them all. */
static int up_computes(const struct up_args *a, const char *dir)
{
	pid_t mon[64];
	bool ready[64] = { false };
	char bin[PATH_MAX], log[PATH_MAX];
	uint64_t deadline = time_now_ns() + (uint64_t)a->compute_timeout_ms * 1000000ull;
	int rc = 0, left = a->n_compute, bad = -1;

	if ((rc = ops_sibling("sparda-compute", bin, sizeof(bin)))) {
		fprintf(stderr, "sparda up: sparda-compute not found next to sparda: %s\n",
			err_str(rc));
		return rc;
	}
	for (int i = 0; i < a->n_compute && !rc; i++)
		if ((rc = compute_start(a, bin, dir, i, &mon[i])))
			bad = i;
	while (!rc && left) {
		for (int i = 0; i < a->n_compute && !rc; i++) {
			if (ready[i])
				continue;
			if ((rc = compute_ready(dir, i, mon[i])) < 0) {
				bad = i;
				fprintf(stderr, "sparda up: compute-%d (sparda-compute) exited before "
					"it was ready\n", i);
			} else if (rc) {
				ready[i] = true;
				left--;
				rc = 0;
			}
		}
		if (!rc && left && time_now_ns() >= deadline) {
			for (bad = 0; ready[bad]; bad++)
				;
			fprintf(stderr, "sparda up: compute-%d (sparda-compute) not ready within "
				"%d ms\n", bad, a->compute_timeout_ms);
			rc = -ETIMEDOUT;
		}
		if (!rc && left)
			usleep(POLL_US);
	}
	if (rc) {
		if (bad >= 0 && !ops_compute_path(dir, bad, ".log", log, sizeof(log)))
			memsvc_proc_log_tail(log);
		fprintf(stderr, "sparda up: stopping the compute processes\n");
		computes_stop(dir, a->n_compute, 5000);
		return rc;
	}
	for (int i = 0; i < a->n_compute; i++)
		printf("sparda-compute %d ready: requests in %s/compute-%d/in, results in "
		       "%s/compute-%d/out, log %s/compute-%d.log%s\n",
		       i, dir, i, dir, i, dir, i, a->gpu ? "" : " (cpu)");
	return 0;
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
		up_monitor(bin, dir, log, av, OPS_PID_FILE, "sparda-memsvc");
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
		memsvc_proc_log_tail(log);
		return rc;
	}
	if (ops_pid_read(dir, &pid))
		pid = 0;
	printf("sparda-memsvc running: pid %d, runtime dir %s\n  attach %s/attach.sock, "
	       "control ipc://%s/ctl.ipc\n  log %s, pid file %s/%s\n",
	       (int)pid, dir, dir, dir, log, dir, OPS_PID_FILE);
	if (a->n_compute && (rc = up_computes(a, dir))) {
		bool killed;
		fprintf(stderr, "sparda up: stopping sparda-memsvc (pid %d)\n", (int)pid);
		if (pid && ops_pid_is_memsvc(pid))
			ops_stop(pid, "sparda-memsvc", 15000, &killed);
		return rc;
	}
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
	for (int i = 0; i < 64; i++) {
		char pidname[32];
		pid_t pid;
		snprintf(pidname, sizeof(pidname), "compute-%d.pid", i);
		if (!ops_pid_read_name(dir, pidname, &pid) && ops_pid_is(pid, "sparda-compute")) {
			fprintf(stderr, "sparda up: sparda-compute already runs in %s (pid %d); "
				"`sparda down --runtime-dir %s` stops it\n", dir, (int)pid, dir);
			return 1;
		}
	}
	return up_start(&a, bin, dir, log) ? 1 : 0;
}
