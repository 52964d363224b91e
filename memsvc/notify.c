/* SPDX-License-Identifier: Apache-2.0 */
/* sd_notify, or a NOTIFY_SOCKET datagram writer when libsystemd is absent. */
#include "notify.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "err.h"

struct notify {
	bool enabled;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t watchdog_ms; /* half of WATCHDOG_USEC; 0 = none */
	uint64_t last_ms;
};

int notify_open(struct notify **out)
{
	struct notify *n = calloc(1, sizeof(*n));
	const char *sock = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");

	*out = NULL;
	if (!n)
		return -ENOMEM;
	if (sock && sock[0] && strlen(sock) < sizeof(n->path)) {
		n->enabled = true;
		snprintf(n->path, sizeof(n->path), "%s", sock);
	}
	if (n->enabled && wd)
		n->watchdog_ms = strtoull(wd, NULL, 10) / 2000;
	*out = n;
	return 0;
}

void notify_free(struct notify *n)
{
	free(n);
}

#ifndef HAVE_SYSTEMD
static int send_dgram(const char *path, const char *state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	int fd, r = 0;

	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_from_errno();
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
		r = err_from_errno();
	close(fd);
	return r;
}
#endif

int notify_send(struct notify *n, const char *state)
{
	if (!n || !n->enabled)
		return 0;
#ifdef HAVE_SYSTEMD
	int r = sd_notify(0, state);
	return r < 0 ? r : 0;
#else
	return send_dgram(n->path, state);
#endif
}

void notify_watchdog(struct notify *n, uint64_t now_ms)
{
	if (!n || !n->watchdog_ms || now_ms - n->last_ms < n->watchdog_ms)
		return;
	n->last_ms = now_ms;
	(void)notify_send(n, "WATCHDOG=1");
}
