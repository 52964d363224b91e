/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's Prometheus endpoint as seen by `sparda stats`: which port a running
 * sparda-memsvc serves /metrics on (from its command line), and one plain HTTP/1.0 GET of it.
 * The stats reply of a session holds gauges only; the cumulative counters (attaches, requests
 * by op, latency histograms) are published there.
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
