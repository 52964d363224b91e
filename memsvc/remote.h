/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The optional tcp:// control endpoint for remote clients: a ROUTER with CURVE (server secret
 * key from a file) and a ZAP handler thread on inproc://zeromq.zap.01 that admits only client
 * public keys listed in the tcp-keys file and names each one's tenant. Remote clients attach
 * with a hello on this socket and move unit bytes with read/write (a data frame).
 */
#ifndef SPARDA_MEMSVC_REMOTE_H
#define SPARDA_MEMSVC_REMOTE_H

#include <stddef.h>

struct mconfig;
struct remote;
struct server;
struct tenant_table;

/*
 * Load the key list into the tenant table and the secret key, start the ZAP handler, bind
 * the endpoint in context zctx. Returns 0, -EINVAL (a bad key file: err names the line),
 * -ENOENT/-EACCES (files), -EOPNOTSUPP (libzmq without CURVE), or a bind error.
 */
int remote_open(void *zctx, const struct mconfig *cfg, struct tenant_table *tenants,
		struct remote **out, char *err, size_t err_len);
/* Close the socket and stop the ZAP thread (before the context is terminated). NULL ok. */
void remote_free(struct remote *rm);

/* The fd to poll (ZMQ_FD) and the server's z85 public key (for clients). */
int remote_fd(const struct remote *rm);
const char *remote_public_key(const struct remote *rm);

/* Answer every message waiting on the endpoint (server thread). */
void remote_serve(struct remote *rm, struct server *sv);

#endif
