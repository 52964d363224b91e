/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of the operator subcommands: flags, the runtime dir's pid file, and whether a
 * sparda-memsvc really runs there (a live pid whose /proc/PID/exe is the daemon, or a live
 * attach socket), so that `up`, `down` and `status` never trust a stale file.
 */
#include "ops_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "timeutil.h"

int ops_flag(int argc, char **argv, int *i, const char *flag, const char **val)
{
	size_t n = strlen(flag);
	const char *a = argv[*i];

	if (strncmp(a, flag, n) != 0)
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n] != '\0')
		return 0;
	if (*i + 1 >= argc)
		return -EINVAL;
	*val = argv[++*i];
	return 1;
}

int ops_common_args(int argc, char **argv, const char *cmd, const char *usage, const char **dir,
		    int *timeout_ms, bool *json)
{
	const char *v;
	int m;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 1;
		}
		if (json && !strcmp(argv[i], "--json")) {
			*json = true;
			continue;
		}
		if ((m = ops_flag(argc, argv, &i, "--runtime-dir", &v)) > 0)
			*dir = v;
		else if (!m && (m = ops_flag(argc, argv, &i, "--timeout-ms", &v)) > 0)
			*timeout_ms = atoi(v);
		if (m <= 0 || *timeout_ms <= 0) {
			fprintf(stderr, "sparda %s: bad argument '%s'\n%s", cmd, argv[i], usage);
			return -EINVAL;
		}
	}
	return 0;
}

int ops_runtime_dir(const char *dir, char *buf, size_t len)
{
	if (!dir || !*dir)
		return memclient_default_runtime_dir(buf, len);
	if ((size_t)snprintf(buf, len, "%s", dir) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int ops_path(const char *dir, const char *name, char *buf, size_t len)
{
	int w = snprintf(buf, len, "%s/%s", dir, name);

	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

int ops_pid_read(const char *dir, pid_t *pid)
{
	return ops_pid_read_name(dir, OPS_PID_FILE, pid);
}

int ops_pid_read_name(const char *dir, const char *name, pid_t *pid)
{
	char path[PATH_MAX], text[32] = "", *end;
	long v;
	ssize_t n;
	int fd, rc;

	if ((rc = ops_path(dir, name, path, sizeof(path))))
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	rc = n < 0 ? -errno : 0;
	close(fd);
	if (rc)
		return rc;
	text[n > 0 ? n : 0] = '\0';
	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || (*end && *end != '\n') || v <= 0 || v > INT_MAX)
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

int ops_pid_write(const char *dir, pid_t pid)
{
	return ops_pid_write_name(dir, OPS_PID_FILE, pid);
}

int ops_pid_write_name(const char *dir, const char *name, pid_t pid)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	char text[32];
	int fd, rc = 0, len;

	if ((rc = ops_path(dir, name, path, sizeof(path))) ||
	    (rc = ops_path(dir, name, tmp, sizeof(tmp) - 4)))
		return rc;
	strcat(tmp, ".tmp");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	len = snprintf(text, sizeof(text), "%d\n", (int)pid);
	if (write(fd, text, (size_t)len) != len || fsync(fd))
		rc = errno ? -errno : -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

/* The state letter of /proc/PID/stat (after the parenthesised name), or 0. */
static char proc_state(pid_t pid, unsigned long long *start_ticks)
{
	char path[64], buf[1024], *p;
	FILE *f;
	size_t n;
	char st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c", &st) != 1)
		return 0;
	/* Field 22 (starttime) is the 20th after the name: state is field 3. */
	if (start_ticks && sscanf(p + 2,
				  "%*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
				  "%*s %*s %*s %llu",
				  start_ticks) != 1)
		*start_ticks = 0;
	return st;
}

bool ops_pid_is_memsvc(pid_t pid)
{
	return ops_pid_is(pid, "sparda-memsvc");
}

bool ops_pid_is(pid_t pid, const char *binary)
{
	char path[64], exe[PATH_MAX];
	const char *base;
	size_t bl = strlen(binary);
	ssize_t n;
	char st = proc_state(pid, NULL);

	if (!st || st == 'Z' || st == 'X')
		return false;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	/* A rebuilt binary reads "sparda-memsvc (deleted)". */
	return !strncmp(base, binary, bl) && (base[bl] == '\0' || base[bl] == ' ');
}

bool ops_socket_live(const char *dir)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	bool live;
	int fd;

	if (ops_path(dir, "attach.sock", sa.sun_path, sizeof(sa.sun_path)))
		return false;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0); /* as fdpass.c */
	if (fd < 0)
		return false;
	live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

double ops_uptime_s(pid_t pid)
{
	unsigned long long start = 0;
	double up = -1;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;

	if (!proc_state(pid, &start) || !start || hz <= 0)
		return -1;
	f = fopen("/proc/uptime", "re");
	if (!f)
		return -1;
	if (fscanf(f, "%lf", &up) != 1)
		up = -1;
	fclose(f);
	return up < 0 ? -1 : up - (double)start / (double)hz;
}

int ops_attach(const char *dir, int timeout_ms, struct memclient **out)
{
	struct memclient_opts o = {
	    .runtime_dir = dir,
	    .client_name = "sparda-status",
	    .geom = {.n_layers = 1,
		     .n_kv_heads = 1,
		     .head_dim = 16,
		     .block_tokens = 16,
		     .dtype_bytes = 2},
	    .arena_bytes = 65536,
	    .max_seqs = 1,
	    .wait_mode = SP_WAIT_SLEEP,
	    .timeout_ms = timeout_ms,
	};

	return memclient_open(&o, out);
}

int ops_sibling(const char *name, char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return -errno;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	if ((size_t)snprintf(buf, len, "%s/%s", self, name) >= len)
		return -ENAMETOOLONG;
	return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

int ops_compute_path(const char *dir, int i, const char *suffix, char *buf, size_t len)
{
	int w = snprintf(buf, len, "%s/compute-%d%s", dir, i, suffix);

	return w < 0 || (size_t)w >= len ? -ENAMETOOLONG : 0;
}

int ops_stop(pid_t pid, const char *binary, int timeout_ms, bool *killed)
{
	uint64_t deadline = time_now_ms() + (uint64_t)timeout_ms;

	*killed = false;
	if (kill(pid, SIGTERM))
		return -errno;
	while (ops_pid_is(pid, binary)) {
		if (time_now_ms() >= deadline) {
			if (*killed)
				return -ETIMEDOUT;
			kill(pid, SIGKILL);
			*killed = true;
			deadline = time_now_ms() + 5000;
		}
		usleep(10000);
	}
	return 0;
}
