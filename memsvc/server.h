/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon's event loop: the attach socket (sessions live as long as their socket), the
 * ZeroMQ ROUTER on ipc://<runtime-dir>/ctl.ipc, SIGTERM/SIGINT through a signalfd, and a
 * housekeeping timer (deferred-slot reclaim, watchdog, drain deadline). One thread runs it;
 * the hot path has its own threads; /metrics reads server_snapshot from its own thread.
 */
#ifndef SPARDA_MEMSVC_SERVER_H
#define SPARDA_MEMSVC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

struct mconfig;
struct mstats;
struct server;
struct tenant_table;

/*
 * Create the runtime dir, refuse when a live daemon serves it, bind the ZeroMQ endpoint,
 * start the hot-path worker, block SIGTERM/SIGINT/SIGHUP/SIGPIPE for the process (call before
 * starting other threads). Nothing is owned but the server's own resources.
 * Returns 0, or -errno with err naming the endpoint or step (-EADDRINUSE: a live daemon
 * already serves this runtime dir).
 */
int server_open(const struct mconfig *cfg, struct tenant_table *tenants, struct mstats *stats,
		struct server **out, char *err, size_t err_len);

/*
 * Bind attach.sock (last: its appearance means every endpoint is up), log "ready", notify
 * READY=1 and serve until a drain completes. Returns 0, or -errno of the bind or the loop.
 */
int server_run(struct server *sv);

/* Close every session and endpoint (removes the socket files). NULL ok. */
void server_free(struct server *sv);

/* Numbers for /metrics; thread safe. */
struct server_snapshot {
	uint64_t sessions, pending_attaches, budget_bytes, arena_bytes;
	uint64_t attaching_bytes; /* arenas of admitted attaches still being made */
	uint64_t slots_total, slots_free, slots_used, slots_deferred;
	uint64_t units_allocated, units_resident, seqs_open;
	uint64_t units_spilled, units_loading, units_lost;
	uint64_t attaches_ok, attaches_refused;
	bool draining;
};
void server_snapshot(struct server *sv, struct server_snapshot *out);

/* The NVMe tier's counters; false (and nothing written) when no spill dir is configured. */
struct spill_stats;
bool server_spill_stats(struct server *sv, struct spill_stats *out);

#endif
