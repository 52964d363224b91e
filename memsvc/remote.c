/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tcp + CURVE endpoint and its ZAP handler. The handler is the only gate: a key not in the
 * list fails the CURVE handshake, so an unknown peer never reaches the request code. Each
 * message then carries the tenant the ZAP handler named (ZeroMQ's "User-Id" property), and
 * ctlreq confines the request to that tenant's sessions.
 */
#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "err.h"
#include "log.h"
#include "mconfig.h"
#include "server_internal.h"
#include "tenant.h"
#include "wire.h"

#define TAG "remote"
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES 7
#define KEY_FILE_MAX (1u << 20)

struct remote {
	struct tenant_table *tenants;
	void *zap, *router;
	int fd;
	pthread_t zap_thread;
	bool zap_started;
	_Atomic bool stop;
	char public_key[TENANT_KEY_Z85 + 1];
	uint64_t zap_denied, zap_allowed;
};

static int read_text(const char *path, char **out, char *err, size_t err_len)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f) {
		int r = err_from_errno();
		snprintf(err, err_len, "%s: %s", path, err_str(r));
		return r;
	}
	buf = malloc(KEY_FILE_MAX + 1);
	n = buf ? fread(buf, 1, KEY_FILE_MAX, f) : 0;
	fclose(f);
	if (!buf)
		return -ENOMEM;
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* ---- ZAP (ZeroMQ RFC 27) ----------------------------------------------------------------- */

static void zap_reply(void *sock, zmq_msg_t *req, const char *code, const char *text,
		      const char *user)
{
	zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
	zmq_send(sock, zmq_msg_data(&req[1]), zmq_msg_size(&req[1]), ZMQ_SNDMORE);
	zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
	zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
	zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
	zmq_send(sock, "", 0, 0);
}

/* Frames: version, request id, domain, address, identity, mechanism, credentials. */
static void zap_handle(struct remote *rm, zmq_msg_t *m, int n)
{
	char z85[TENANT_KEY_Z85 + 1];
	struct tenant *tn = NULL;

	if (n == ZAP_FRAMES && zmq_msg_size(&m[5]) == 5 &&
	    !memcmp(zmq_msg_data(&m[5]), "CURVE", 5) && zmq_msg_size(&m[6]) == 32 &&
	    zmq_z85_encode(z85, zmq_msg_data(&m[6]), 32))
		tn = tenant_find_key(rm->tenants, z85);
	if (n < 2) {
		/* REP must answer every request; without an id the reply can only say no. */
		zmq_send(rm->zap, "1.0", 3, ZMQ_SNDMORE);
		zmq_send(rm->zap, "", 0, ZMQ_SNDMORE);
		zmq_send(rm->zap, "500", 3, ZMQ_SNDMORE);
		zmq_send(rm->zap, "malformed", 9, ZMQ_SNDMORE);
		zmq_send(rm->zap, "", 0, ZMQ_SNDMORE);
		zmq_send(rm->zap, "", 0, 0);
		return;
	}
	if (!tn) {
		rm->zap_denied++;
		zap_reply(rm->zap, m, "400", "key not allowed", "");
		log_warn(TAG, "tcp client refused", "reason=\"key not in tcp-keys\"");
		return;
	}
	rm->zap_allowed++;
	zap_reply(rm->zap, m, "200", "OK", tenant_name(tn));
}

static void *zap_main(void *arg)
{
	struct remote *rm = arg;
	zmq_pollitem_t it = {.socket = rm->zap, .events = ZMQ_POLLIN};

	while (!atomic_load_explicit(&rm->stop, memory_order_acquire)) {
		zmq_msg_t m[ZAP_FRAMES + 1];
		int n = 0, more = 1;
		size_t sz = sizeof(more);

		if (zmq_poll(&it, 1, 100) <= 0)
			continue;
		while (more) {
			zmq_msg_t *cur = &m[n < ZAP_FRAMES + 1 ? n : ZAP_FRAMES];
			zmq_msg_init(cur);
			if (zmq_msg_recv(cur, rm->zap, 0) < 0) {
				zmq_msg_close(cur);
				break;
			}
			zmq_getsockopt(rm->zap, ZMQ_RCVMORE, &more, &sz);
			if (n < ZAP_FRAMES + 1)
				n++;
			else
				zmq_msg_close(cur);
		}
		zap_handle(rm, m, n);
		for (int i = 0; i < n; i++)
			zmq_msg_close(&m[i]);
	}
	return NULL;
}

/* ---- the endpoint ------------------------------------------------------------------------ */

static int load_keys(struct remote *rm, const struct mconfig *cfg, char *secret, char *err,
		     size_t err_len)
{
	char *text = NULL, source[MCONFIG_PATH_MAX + 8];
	int r = read_text(cfg->tcp_keys, &text, err, err_len);

	if (r)
		return r;
	snprintf(source, sizeof(source), "file %s", cfg->tcp_keys);
	r = tenant_table_parse_keys(rm->tenants, text, source, err, err_len);
	free(text);
	if (r)
		return r;
	r = read_text(cfg->curve_secret, &text, err, err_len);
	if (r)
		return r;
	/* The secret is the first word of the file: 40 z85 characters. */
	if (sscanf(text, "%40s", secret) != 1 || strlen(secret) != TENANT_KEY_Z85 ||
	    zmq_curve_public(rm->public_key, secret) != 0) {
		snprintf(err, err_len, "%s: not a z85 CURVE secret key (40 characters)",
			 cfg->curve_secret);
		r = -EINVAL;
	}
	memset(text, 0, strlen(text));
	free(text);
	return r;
}

static int open_zap(struct remote *rm, void *zctx, char *err, size_t err_len)
{
	int r;

	rm->zap = zmq_socket(zctx, ZMQ_REP);
	if (!rm->zap || zmq_bind(rm->zap, ZAP_ENDPOINT) != 0) {
		r = -zmq_errno();
		snprintf(err, err_len, "ZAP handler: %s", zmq_strerror(-r));
		return r;
	}
	r = -pthread_create(&rm->zap_thread, NULL, zap_main, rm);
	if (r)
		snprintf(err, err_len, "ZAP thread: %s", err_str(r));
	rm->zap_started = !r;
	return r;
}

static int open_router(struct remote *rm, void *zctx, const char *endpoint, const char *secret,
		       char *err, size_t err_len)
{
	int one = 1;
	size_t sz = sizeof(rm->fd);
	int r;

	rm->router = zmq_socket(zctx, ZMQ_ROUTER);
	if (!rm->router)
		return -zmq_errno();
	r = wire_zmq_setup(rm->router, true);
	if (!r &&
	    (zmq_setsockopt(rm->router, ZMQ_CURVE_SERVER, &one, sizeof(one)) ||
	     zmq_setsockopt(rm->router, ZMQ_CURVE_SECRETKEY, secret, TENANT_KEY_Z85) ||
	     zmq_setsockopt(rm->router, ZMQ_ZAP_DOMAIN, "sparda", 6) ||
	     zmq_bind(rm->router, endpoint) || zmq_getsockopt(rm->router, ZMQ_FD, &rm->fd, &sz)))
		r = -zmq_errno();
	if (r)
		snprintf(err, err_len, "bind %s: %s", endpoint, zmq_strerror(-r));
	return r;
}

int remote_open(void *zctx, const struct mconfig *cfg, struct tenant_table *tenants,
		struct remote **out, char *err, size_t err_len)
{
	struct remote *rm;
	char secret[TENANT_KEY_Z85 + 8] = "";
	int r;

	*out = NULL;
	if (!zmq_has("curve")) {
		snprintf(err, err_len, "key tcp: this libzmq has no CURVE support");
		return -EOPNOTSUPP;
	}
	rm = calloc(1, sizeof(*rm));
	if (!rm)
		return -ENOMEM;
	rm->tenants = tenants;
	rm->fd = -1;
	r = load_keys(rm, cfg, secret, err, err_len);
	if (!r)
		r = open_zap(rm, zctx, err, err_len);
	if (!r)
		r = open_router(rm, zctx, cfg->tcp, secret, err, err_len);
	memset(secret, 0, sizeof(secret));
	if (r) {
		remote_free(rm);
		return r;
	}
	log_info(TAG, "tcp listening", "endpoint=%s server_key=%s", cfg->tcp, rm->public_key);
	*out = rm;
	return 0;
}

void remote_free(struct remote *rm)
{
	if (!rm)
		return;
	if (rm->router)
		zmq_close(rm->router);
	if (rm->zap_started) {
		atomic_store_explicit(&rm->stop, true, memory_order_release);
		pthread_join(rm->zap_thread, NULL);
	}
	if (rm->zap)
		zmq_close(rm->zap);
	free(rm);
}

int remote_fd(const struct remote *rm)
{
	return rm->fd;
}

const char *remote_public_key(const struct remote *rm)
{
	return rm->public_key;
}

/* Copy a frame out, returning -EMSGSIZE past cap (the frame is consumed either way). */
static int take(zmq_msg_t *m, size_t cap, void **buf, size_t *len)
{
	size_t n = zmq_msg_size(m);

	if (n > cap)
		return -EMSGSIZE;
	*buf = malloc(n ? n : 1);
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, zmq_msg_data(m), n);
	*len = n;
	return 0;
}

static bool more(void *sock)
{
	int more = 0;
	size_t sz = sizeof(more);

	return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more;
}

/*
 * wire_zmq_recv, keeping the "User-Id" ZAP gave the connection: [identity] [payload] [data].
 * Returns 0, -EAGAIN, or -errno with the identity kept so the sender can be answered.
 */
static int recv_msg(void *sock, struct wire_frames *f, char *user, size_t user_len)
{
	zmq_msg_t m;
	const char *uid;
	int r;

	memset(f, 0, sizeof(*f));
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
		zmq_msg_close(&m);
		return -zmq_errno();
	}
	r = take(&m, 255, &f->identity, &f->id_len);
	zmq_msg_close(&m);
	if (!r && !more(sock))
		return -EBADMSG;
	zmq_msg_init(&m);
	if (!r && zmq_msg_recv(&m, sock, 0) < 0)
		r = -zmq_errno();
	uid = r ? NULL : zmq_msg_gets(&m, "User-Id");
	snprintf(user, user_len, "%s", uid ? uid : "");
	if (!r)
		r = take(&m, WIRE_MAX_MSG_BYTES, &f->payload, &f->len);
	zmq_msg_close(&m);
	if (!r && more(sock)) {
		zmq_msg_init(&m);
		r = zmq_msg_recv(&m, sock, 0) < 0
			? -zmq_errno()
			: take(&m, WIRE_MAX_DATA_BYTES, &f->data, &f->data_len);
		zmq_msg_close(&m);
		if (!r && more(sock))
			r = -EBADMSG;
	}
	while (more(sock)) { /* keep the socket in step */
		zmq_msg_init(&m);
		zmq_msg_recv(&m, sock, 0);
		zmq_msg_close(&m);
	}
	return r;
}

void remote_serve(struct remote *rm, struct server *sv)
{
	for (int i = 0; i < 256; i++) {
		struct wire_frames f;
		char user[TENANT_NAME_MAX];
		struct tenant *tn;
		int r = recv_msg(rm->router, &f, user, sizeof(user));

		if (r == -EAGAIN) {
			wire_frames_fini(&f);
			return;
		}
		tn = tenant_find(rm->tenants, user);
		/* Never fall back to the ipc rules (auth NULL) for a tcp message. */
		if (!r && !tn)
			r = -EPERM;
		ctlreq_handle(sv, rm->router, tn ? tn : tenant_at(rm->tenants, 0), &f, r);
		wire_frames_fini(&f);
	}
}
