/* SPDX-License-Identifier: Apache-2.0 */
/* The /metrics and /healthz endpoint over libmicrohttpd, shared by memsvc and compute. */
#include "httpd.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

struct httpd {
	struct MHD_Daemon *d;
	const struct httpd_ops *ops;
	void *ctx;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, char *body, size_t len,
			     const char *type)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (!body)
		return MHD_NO;
	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
	return reply(conn, code, strdup(text), strlen(text), "text/plain");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **con_cls)
{
	struct httpd *h = cls;
	const char *why = "unhealthy\n";
	char *body = NULL;
	size_t len = 0;
	FILE *out;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply_text(conn, 405, "method not allowed\n");
	if (strcmp(url, "/healthz") == 0) {
		if (h->ops->healthy && !h->ops->healthy(h->ctx, &why))
			return reply_text(conn, 503, why);
		return reply_text(conn, 200, "ok\n");
	}
	if (strcmp(url, "/metrics") != 0)
		return reply_text(conn, 404, "not found\n");
	out = open_memstream(&body, &len);
	if (!out)
		return MHD_NO;
	h->ops->metrics(h->ctx, out);
	fclose(out);
	return reply(conn, 200, body, len, "text/plain; version=0.0.4");
}

int httpd_open(uint16_t port, unsigned max_conns, const struct httpd_ops *ops, void *ctx,
	       struct httpd **out)
{
	struct httpd *h = calloc(1, sizeof(*h));

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->ops = ops;
	h->ctx = ctx;
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, port, NULL, NULL, handle, h,
				MHD_OPTION_CONNECTION_LIMIT, max_conns,
				MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (!h->d) {
		free(h);
		return -EADDRINUSE;
	}
	*out = h;
	return 0;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	free(h);
}
