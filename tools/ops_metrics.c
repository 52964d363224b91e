/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's Prometheus endpoint as seen by `sparda stats`: which port a running
 * sparda-memsvc serves /metrics on (from its command line), and one plain HTTP/1.0 GET of it.
 * The stats reply of a session holds gauges only; the cumulative counters (attaches, requests
 * by op, latency histograms) are published there. Also the daemon's effective config (its
 * binary's --dump-config with its own arguments, environment and working directory), for the
 * settings that are text (spill directories) and so are in neither.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ops_cmd.h"

#define DEFAULT_METRICS_PORT 9464
#define MAX_BODY (8u << 20)

int ops_metrics_port(pid_t pid)
{
	char path[64], buf[8192];
	int port = DEFAULT_METRICS_PORT;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* Arguments are NUL separated; the last --metrics-port wins, as in the daemon. */
	for (char *a = buf; a < buf + n; a += strlen(a) + 1) {
		if (!strncmp(a, "--metrics-port=", 15))
			port = atoi(a + 15);
		else if (!strcmp(a, "--metrics-port") && a + strlen(a) + 1 < buf + n)
			port = atoi(a + strlen(a) + 1);
	}
	return port;
}

static int http_connect(int port, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int ops_metrics_fetch(int port, int timeout_ms, char **body)
{
	static const char req[] = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
	size_t len = 0, cap = 65536;
	char *buf = NULL, *p;
	int fd, rc = 0;
	ssize_t n;

	if (port <= 0 || port > 65535)
		return -EINVAL;
	if ((fd = http_connect(port, timeout_ms)) < 0)
		return fd;
	if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
		rc = -EIO;
		goto out_close;
	}
	buf = malloc(cap + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out_close;
	}
	while ((n = read(fd, buf + len, cap - len)) > 0) {
		len += (size_t)n;
		if (len < cap)
			continue;
		if (cap >= MAX_BODY)
			break;
		p = realloc(buf, 2 * cap + 1);
		if (!p) {
			rc = -ENOMEM;
			goto out_free;
		}
		buf = p;
		cap *= 2;
	}
	buf[len] = '\0';
	p = strstr(buf, "\r\n\r\n");
	if (len < 12 || strncmp(buf, "HTTP/1.", 7) || strncmp(buf + 8, " 200", 4) || !p) {
		rc = -EPROTO;
		goto out_free;
	}
	memmove(buf, p + 4, len - (size_t)(p + 4 - buf) + 1);
	*body = buf;
	buf = NULL;
out_free:
	free(buf);
out_close:
	close(fd);
	return rc;
}

#define PROC_MAX (256u << 10)

/* /proc/PID/name (NUL separated strings) into a malloc'd buffer; *len its bytes. */
static char *proc_read(pid_t pid, const char *name, size_t *len)
{
	char path[64];
	char *buf = malloc(PROC_MAX + 1);
	ssize_t n = 0, r;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || !buf) {
		if (fd >= 0)
			close(fd);
		free(buf);
		return NULL;
	}
	while (n < (ssize_t)PROC_MAX && (r = read(fd, buf + n, PROC_MAX - (size_t)n)) > 0)
		n += r;
	close(fd);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* Split NUL separated strings into a NULL terminated vector with extra free slots. */
static char **proc_split(char *buf, size_t len, size_t extra)
{
	size_t n = 0, k = 0;
	char **v;

	for (size_t i = 0; i < len; i++)
		n += buf[i] == '\0';
	v = calloc(n + extra + 2, sizeof(*v));
	if (!v)
		return NULL;
	for (char *a = buf; a < buf + len; a += strlen(a) + 1)
		v[k++] = a;
	return v;
}

/* Find "key = value" in the dump text; value unquoted into val. */
static int dump_find(const char *text, const char *key, char *val, size_t len)
{
	size_t kl = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *v = l + kl, *end;
		if (strncmp(l, key, kl) || (*v != ' ' && *v != '='))
			continue;
		v += strspn(v, " =");
		end = strchr(v, '\n');
		end = end ? end : v + strlen(v);
		if (end > v && *v == '"' && end[-1] == '"' && end - v >= 2) {
			v++;
			end--;
		}
		if ((size_t)(end - v) >= len)
			return -ENAMETOOLONG;
		memcpy(val, v, (size_t)(end - v));
		val[end - v] = '\0';
		return 0;
	}
	return -ENOENT;
}

int ops_daemon_config(pid_t pid, const char *key, char *val, size_t len)
{
	size_t alen = 0, elen = 0, olen = 0;
	char *args = proc_read(pid, "cmdline", &alen), *envs = proc_read(pid, "environ", &elen);
	char **av = NULL, **ev = NULL, *out = malloc(PROC_MAX + 1), exe[64], cwd[64];
	int p[2] = {-1, -1}, st = 0, rc;
	pid_t child;
	ssize_t r;

	if (!args || !envs || !out || !alen || !(av = proc_split(args, alen, 1)) ||
	    !(ev = proc_split(envs, elen, 0))) {
		rc = -ESRCH;
		goto out;
	}
	for (size_t i = 0;; i++)
		if (!av[i]) {
			av[i] = "--dump-config";
			break;
		}
	snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
	snprintf(cwd, sizeof(cwd), "/proc/%d/cwd", (int)pid);
	if (pipe2(p, O_CLOEXEC)) {
		rc = -errno;
		goto out;
	}
	fflush(NULL);
	child = fork();
	if (child < 0) {
		rc = -errno;
		goto out;
	}
	if (!child) {
		int null = open("/dev/null", O_WRONLY);
		if (chdir(cwd) || dup2(p[1], 1) < 0 || (null >= 0 && dup2(null, 2) < 0))
			_exit(127);
		execve(exe, av, ev);
		_exit(127);
	}
	close(p[1]);
	p[1] = -1;
	while (olen < PROC_MAX && (r = read(p[0], out + olen, PROC_MAX - olen)) > 0)
		olen += (size_t)r;
	out[olen] = '\0';
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	rc = WIFEXITED(st) && !WEXITSTATUS(st) ? dump_find(out, key, val, len) : -EIO;
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	free(av);
	free(ev);
	free(args);
	free(envs);
	free(out);
	return rc;
}
