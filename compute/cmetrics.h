/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics endpoint of sparda-compute: Prometheus text over HTTP (libmicrohttpd) with the
 * runner's statistics per mode (steps, tokens, bytes per direction, and per layer the selected,
 * cached and fetched units, late units, fetch time and Forecast recall), updated after every
 * step, and /healthz.
 * Thread safe: the runner thread updates a snapshot under a lock; the HTTP thread renders it.
 */
#ifndef SPARDA_COMPUTE_CMETRICS_H
#define SPARDA_COMPUTE_CMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "runner.h"

struct cmetrics;

/* Listen on port (all interfaces). Returns 0, -EADDRINUSE (message in err) or -ENOMEM. */
int cmetrics_open(uint16_t port, uint32_t n_layers, struct cmetrics **out, char *err,
		  size_t err_len);
void cmetrics_free(struct cmetrics *m);

/* Replace mode's snapshot with st (a runner_stats of n_layers layers). */
void cmetrics_update(struct cmetrics *m, enum runner_mode mode, const struct runner_stats *st);

/* Write the Prometheus text of the current snapshots (used by the endpoint and tests). */
void cmetrics_render(struct cmetrics *m, FILE *out);

#endif
