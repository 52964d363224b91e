/* SPDX-License-Identifier: Apache-2.0 */
/*
 * systemd readiness protocol: READY=1, STOPPING=1 and WATCHDOG=1 at half of WATCHDOG_USEC.
 * Uses libsystemd's sd_notify when built with it, else writes the datagram to NOTIFY_SOCKET
 * itself. Without NOTIFY_SOCKET every call is a no-op. Used from the server thread only.
 */
#ifndef SPARDA_MEMSVC_NOTIFY_H
#define SPARDA_MEMSVC_NOTIFY_H

#include <stdint.h>

struct notify;

/* Read NOTIFY_SOCKET and WATCHDOG_USEC. Returns 0 or -ENOMEM. */
int notify_open(struct notify **out);
void notify_free(struct notify *n);

/* Send one state line ("READY=1"). Returns 0 (also when not under systemd) or -errno. */
int notify_send(struct notify *n, const char *state);
/* Send WATCHDOG=1 when half of the watchdog interval passed since the last one. */
void notify_watchdog(struct notify *n, uint64_t now_ms);

#endif
