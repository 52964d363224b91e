/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics HTTP endpoint both processes serve (libmicrohttpd, its own thread): GET /metrics
 * renders Prometheus text through a callback, GET /healthz answers 200 "ok" or 503 with the
 * callback's reason, anything else 404/405.
 */
#ifndef SPARDA_COMMON_HTTPD_H
#define SPARDA_COMMON_HTTPD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct httpd;

struct httpd_ops {
	/* Write the /metrics body to out. Called on the HTTP thread. */
	void (*metrics)(void *ctx, FILE *out);
	/* NULL, or: false (with *why, a short static text) makes /healthz answer 503. */
	bool (*healthy)(void *ctx, const char **why);
};

/*
 * Listen on port (all interfaces) with at most max_conns connections. ops and ctx must outlive
 * the endpoint. Returns 0, -EADDRINUSE (cannot listen) or -ENOMEM.
 */
int httpd_open(uint16_t port, unsigned max_conns, const struct httpd_ops *ops, void *ctx,
	       struct httpd **out);
/* Stop serving (waits for the HTTP thread); NULL ok. */
void httpd_free(struct httpd *h);

#endif
