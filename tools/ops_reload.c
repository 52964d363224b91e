/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda reload`: make the sparda-memsvc serving a runtime dir re-read its tenants file.
 * The daemon is found through DIR/memsvc.pid (`sparda up`) or, without one (systemd, a job
 * script), through the peer credentials of DIR/attach.sock; it gets SIGHUP and writes the
 * outcome to DIR/tenants.reload, which this command waits for and prints.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "err.h"
#include "ops_cmd.h"
#include "sparda.h"
#include "timeutil.h"

#define RELOAD_FILE "tenants.reload"

static const char reload_usage[] =
    "usage: sparda reload [--runtime-dir DIR] [--timeout-ms N]\n"
    "Make the sparda-memsvc serving DIR re-read its tenants file (SIGHUP): new tenants admit\n"
    "attaches, changed limits apply to new allocations, removed tenants refuse new sessions\n"
    "while their open ones run on; a bad file is refused whole and the old tenants stay.\n"
    "Waits up to --timeout-ms (default 5000) for the daemon's answer in DIR/" RELOAD_FILE ".\n"
    "Exit status: 0 reloaded; 1 refused (the error is printed) or no answer; 2 usage;\n"
    "3 no sparda-memsvc serves DIR.\n";

/* The pid of the process listening on DIR/attach.sock (SO_PEERCRED), or -errno. */
static int socket_pid(const char *dir, pid_t *pid)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd, r = 0;

	if ((r = ops_path(dir, "attach.sock", sa.sun_path, sizeof(sa.sun_path))))
		return r;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_from_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		r = err_from_errno();
	else
		*pid = cred.pid;
	close(fd);
	return r;
}

/* The daemon's pid: the pid file when it names a live sparda-memsvc, else the socket's. */
static int daemon_pid(const char *dir, pid_t *pid)
{
	int r = ops_pid_read(dir, pid);

	if (!r && ops_pid_is_memsvc(*pid))
		return 0;
	r = socket_pid(dir, pid);
	if (!r && !ops_pid_is_memsvc(*pid))
		r = -ESRCH;
	return r;
}

/* DIR/tenants.reload's generation (0 when absent); its line into buf. */
static unsigned long long reload_gen(const char *dir, char *buf, size_t len)
{
	char path[PATH_MAX];
	unsigned long long gen = 0;
	FILE *f;

	buf[0] = '\0';
	if (ops_path(dir, RELOAD_FILE, path, sizeof(path)) || !(f = fopen(path, "re")))
		return 0;
	if (fgets(buf, (int)len, f))
		(void)sscanf(buf, "generation=%llu", &gen);
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return gen;
}

int cmd_reload(int argc, char **argv)
{
	const char *dir_arg = NULL;
	char dir[PATH_MAX], line[1024];
	int timeout_ms = 5000, rc, m;
	unsigned long long gen;
	uint64_t deadline;
	pid_t pid = 0;

	if ((m = ops_common_args(argc, argv, "reload", reload_usage, &dir_arg, &timeout_ms, NULL)))
		return m > 0 ? 0 : 2;
	if ((rc = ops_runtime_dir(dir_arg, dir, sizeof(dir)))) {
		fprintf(stderr, "sparda reload: runtime dir: %s\n", err_str(rc));
		return 1;
	}
	if ((rc = daemon_pid(dir, &pid))) {
		fprintf(stderr, "sparda reload: no sparda-memsvc serves %s (%s)\n", dir,
			err_str(rc));
		return 3;
	}
	gen = reload_gen(dir, line, sizeof(line));
	if (kill(pid, SIGHUP)) {
		rc = err_from_errno();
		fprintf(stderr, "sparda reload: cannot signal pid %d: %s\n", (int)pid, err_str(rc));
		return 1;
	}
	deadline = time_now_ms() + (uint64_t)timeout_ms;
	while (reload_gen(dir, line, sizeof(line)) == gen) {
		if (time_now_ms() >= deadline) {
			fprintf(stderr, "sparda reload: no answer from pid %d within %d ms\n",
				(int)pid, timeout_ms);
			return 1;
		}
		usleep(10000);
	}
	if (!strstr(line, " result=ok")) {
		fprintf(stderr, "sparda reload: refused by sparda-memsvc (pid %d): %s\n", (int)pid,
			line);
		return 1;
	}
	printf("sparda reload: sparda-memsvc (pid %d) %s\n", (int)pid, line);
	return 0;
}
