/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda down`: stop the sparda-compute services, then the sparda-memsvc, that `sparda up`
 * started in a runtime dir. SIGTERM makes memsvc drain (finish in-flight requests, close
 * sessions, exit 0) and a compute finish its request; after --timeout-ms a process is killed
 * with SIGKILL and the command says so. The exit status comes from the line the
 * monitor of `sparda up` writes to the log.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "ops_cmd.h"
#include "sparda.h"
#include "timeutil.h"

static const char down_usage[] =
    "usage: sparda down [--runtime-dir DIR] [--timeout-ms N]\n"
    "Stop the sparda-compute services of `sparda up --compute=N` in DIR (SIGTERM: each\n"
    "finishes its current request; SIGKILL after --timeout-ms), then\n"
    "the sparda-memsvc that `sparda up` started in DIR: SIGTERM (it drains: in-flight\n"
    "requests are answered, sessions closed), wait up to --timeout-ms (default 15000), then\n"
    "SIGKILL. Removes DIR/" OPS_PID_FILE ".\n"
    "Exit status: 0 drained and exited 0; 1 nothing runs there (no or stale pid file), it had\n"
    "to be killed, or it exited with an error (an unknown status is not one); 2 usage.\n";

/* Wait until pid is no longer a running sparda-memsvc. Returns true when it is gone. */
static bool wait_gone(pid_t pid, int timeout_ms)
{
	uint64_t deadline = time_now_ms() + (uint64_t)timeout_ms;

	while (ops_pid_is_memsvc(pid)) {
		if (time_now_ms() >= deadline)
			return false;
		usleep(10000);
	}
	return true;
}

/*
 * The exit line the monitor wrote for pid ("exit=N" or "signal=N"), waiting up to 2 s for it.
 * Returns 0 with *code (exit status, or 128 + signal), or -ENOENT.
 */
static int exit_status_from_log(const char *dir, const char *logname, const char *msg,
				pid_t pid, int *code)
{
	char path[PATH_MAX], line[1024], key[32];
	uint64_t deadline = time_now_ms() + 2000;
	size_t klen = (size_t)snprintf(key, sizeof(key), "pid=%d ", (int)pid);

	if (ops_path(dir, logname, path, sizeof(path)))
		return -ENAMETOOLONG;
	do {
		FILE *f = fopen(path, "re");
		int found = 0;
		while (f && fgets(line, sizeof(line), f)) {
			const char *p = strstr(line, key);
			if (!p || !strstr(line, msg))
				continue;
			if (sscanf(p + klen, "exit=%d", code) == 1)
				found = 1;
			else if (sscanf(p + klen, "signal=%d", code) == 1)
				*code += 128, found = 1;
		}
		if (f)
			fclose(f);
		if (found)
			return 0;
		usleep(20000);
	} while (time_now_ms() < deadline);
	return -ENOENT;
}

/*
 * Stop the compute services of `sparda up --compute=N` (DIR/compute-I.pid): SIGTERM to all
 * (each finishes its current request), then wait for each. Returns how many failed (killed or
 * a nonzero exit status); *found counts those that ran.
 */
static int down_computes(const char *dir, int timeout_ms, int *found)
{
	char name[32], path[PATH_MAX];
	pid_t pids[64] = { 0 };
	int failed = 0;

	*found = 0;
	for (int i = 0; i < 64; i++) {
		snprintf(name, sizeof(name), "compute-%d.pid", i);
		if (ops_pid_read_name(dir, name, &pids[i]))
			continue;
		if (!ops_pid_is(pids[i], "sparda-compute")) {
			pids[i] = 0;
			if (!ops_path(dir, name, path, sizeof(path)))
				unlink(path);
			continue;
		}
		(*found)++;
		kill(pids[i], SIGTERM);
		printf("sparda down: SIGTERM sent to sparda-compute %d (pid %d)\n", i, (int)pids[i]);
	}
	fflush(stdout);
	for (int i = 0; i < 64; i++) {
		bool killed = false;
		int code = -1;
		if (!pids[i])
			continue;
		if (ops_stop(pids[i], "sparda-compute", timeout_ms, &killed)) {
			fprintf(stderr, "sparda down: sparda-compute %d (pid %d) survives SIGKILL\n",
				i, (int)pids[i]);
			failed++;
			continue;
		}
		snprintf(name, sizeof(name), "compute-%d.log", i);
		if (exit_status_from_log(dir, name, "msg=\"sparda-compute exited\"", pids[i],
					 &code))
			code = -1;
		snprintf(name, sizeof(name), "compute-%d.pid", i);
		if (!ops_path(dir, name, path, sizeof(path)))
			unlink(path);
		printf("sparda-compute %d (pid %d) %s, exit status %d\n", i, (int)pids[i],
		       killed ? "killed" : "stopped", code);
		failed += killed || code > 0;
	}
	return failed;
}

/* No live daemon behind the pid file: say why, remove a stale one. Returns exit status 1. */
static int down_nothing(const char *dir, int rc, pid_t pid)
{
	char path[PATH_MAX];

	if (rc == -ENOENT && ops_socket_live(dir)) {
		fprintf(
		    stderr,
		    "sparda down: a sparda-memsvc answers on %s/attach.sock but there is no pid "
		    "file: it was not started by `sparda up`; stop it where it was started\n",
		    dir);
		return 1;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "sparda down: nothing runs in %s (no %s)\n", dir, OPS_PID_FILE);
		return 1;
	}
	if (!ops_path(dir, OPS_PID_FILE, path, sizeof(path)))
		unlink(path);
	if (rc)
		fprintf(stderr, "sparda down: unreadable pid file %s (%s): removed it\n", path,
			err_str(rc));
	else
		fprintf(stderr,
			"sparda down: stale pid file %s: pid %d is not a running sparda-memsvc; "
			"removed it, nothing to stop\n",
			path, (int)pid);
	return 1;
}

/* SIGTERM, wait up to timeout_ms, then SIGKILL (*killed). Returns 0 once pid is gone. */
static int down_signal(pid_t pid, int timeout_ms, bool *killed)
{
	if (kill(pid, SIGTERM)) {
		int rc = -errno;
		fprintf(stderr, "sparda down: cannot signal pid %d: %s\n", (int)pid, err_str(rc));
		return rc;
	}
	printf("sparda down: SIGTERM sent to sparda-memsvc (pid %d), draining...\n", (int)pid);
	fflush(stdout);
	if (wait_gone(pid, timeout_ms))
		return 0;
	fprintf(stderr,
		"sparda down: sparda-memsvc (pid %d) did not exit within %d ms of SIGTERM; "
		"sent SIGKILL\n",
		(int)pid, timeout_ms);
	kill(pid, SIGKILL);
	*killed = true;
	if (wait_gone(pid, 5000))
		return 0;
	fprintf(stderr, "sparda down: pid %d survives SIGKILL\n", (int)pid);
	return -ETIMEDOUT;
}

int cmd_down(int argc, char **argv)
{
	const char *dir_arg = NULL;
	char dir[PATH_MAX], path[PATH_MAX];
	int timeout_ms = 15000, rc, m, code = -1, computes = 0, cfail = 0;
	bool killed = false;
	uint64_t t0;
	pid_t pid = 0;

	if ((m = ops_common_args(argc, argv, "down", down_usage, &dir_arg, &timeout_ms, NULL)))
		return m > 0 ? 0 : 2;
	if ((rc = ops_runtime_dir(dir_arg, dir, sizeof(dir))) ||
	    (rc = ops_path(dir, OPS_PID_FILE, path, sizeof(path)))) {
		fprintf(stderr, "sparda down: runtime dir: %s\n", err_str(rc));
		return 1;
	}
	cfail = down_computes(dir, timeout_ms, &computes);
	rc = ops_pid_read(dir, &pid);
	if (rc || !ops_pid_is_memsvc(pid))
		return computes ? (cfail ? 1 : 0) : down_nothing(dir, rc, pid);
	t0 = time_now_ms();
	if ((rc = down_signal(pid, timeout_ms, &killed)))
		return 1;
	unlink(path);
	if (exit_status_from_log(dir, OPS_LOG_FILE, "msg=\"sparda-memsvc exited\"", pid, &code))
		code = -1;
	printf("sparda-memsvc (pid %d) %s after %llu ms, ", (int)pid, killed ? "killed" : "stopped",
	       (unsigned long long)(time_now_ms() - t0));
	if (code < 0)
		printf("exit status unknown (no exit line in %s)\n", OPS_LOG_FILE);
	else
		printf("exit status %d\n", code);
	return killed || code > 0 || cfail ? 1 : 0;
}
