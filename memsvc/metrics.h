/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP endpoint (libmicrohttpd, its own thread): /metrics in Prometheus text format (arena
 * bytes, slots, units by state, sessions, tenants, requests by path and op with latency
 * histograms, errors by kind) and /healthz (200 "ok" while serving, 503 while draining).
 */
#ifndef SPARDA_MEMSVC_METRICS_H
#define SPARDA_MEMSVC_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct metrics;
struct mstats;
struct server;
struct tenant_table;

/*
 * Listen on port (all interfaces). The sources are not owned and must outlive the endpoint.
 * Returns 0, or -EADDRINUSE / -EIO when the daemon cannot start (err says why).
 */
int metrics_open(uint16_t port, struct server *sv, struct tenant_table *tenants,
		 struct mstats *stats, struct metrics **out, char *err, size_t err_len);
void metrics_free(struct metrics *m);

/* Write the /metrics text to out (also used by tests and the stats tool). */
void metrics_render(struct server *sv, struct tenant_table *tenants, struct mstats *stats,
		    FILE *out);

#endif
