/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The real sparda-memsvc daemon, driven by raw protocol messages: the tcp endpoint (CURVE and
 * the ZAP allow-list: an unlisted key gets no answer, a listed key only its own tenant),
 * remote sessions (hello on tcp, write/commit/read of unit bytes in data frames, bad lengths,
 * bye), the drain request (refused for a remote session, obeyed for a local one of the
 * daemon's uid), and bad attach messages (each refused with a reason; the daemon serves on).
 * Exits 77 when the daemon is not built or libzmq lacks CURVE.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "fdpass.h"
#include "memsvc_proc.h"
#include "wire.h"

#define UNIT 512u /* 2 * 8 tokens * 16 dims * 2 bytes */
#define TIMEOUT_MS 3000

struct keys {
	char pub[41], sec[41];
};

struct fx {
	struct memsvc_proc *p;
	char dir[64];
	int port;
	struct keys server, alice, bob, eve;
	void *ctx;
	uint64_t next_id;
};

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void write_file(const char *dir, const char *name, const char *text, char *path)
{
	FILE *f;

	sprintf(path, "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char bin[4096], text[512], tenants[128], keyfile[128], secret[128], tcp[64];
	char port_arg[80], ten_arg[160], key_arg[160], sec_arg[160];

	assert_non_null(f);
	if (!zmq_has("curve") || memsvc_proc_find_binary(bin, sizeof(bin))) {
		fprintf(stderr, "skip: no CURVE in libzmq or sparda-memsvc not built\n");
		exit(77);
	}
	strcpy(f->dir, "/tmp/sparda-remote-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(zmq_curve_keypair(f->server.pub, f->server.sec), 0);
	assert_int_equal(zmq_curve_keypair(f->alice.pub, f->alice.sec), 0);
	assert_int_equal(zmq_curve_keypair(f->bob.pub, f->bob.sec), 0);
	assert_int_equal(zmq_curve_keypair(f->eve.pub, f->eve.sec), 0);
	snprintf(text, sizeof(text), "alice uid=%u quota=1M\nbob uid=%u quota=1M\n",
		 (unsigned)getuid(), (unsigned)getuid());
	write_file(f->dir, "tenants", text, tenants);
	snprintf(text, sizeof(text), "alice %s\nbob %s\n", f->alice.pub, f->bob.pub);
	write_file(f->dir, "keys", text, keyfile);
	snprintf(text, sizeof(text), "%s\n", f->server.sec);
	write_file(f->dir, "secret", text, secret);
	f->port = free_port();
	snprintf(tcp, sizeof(tcp), "tcp://127.0.0.1:%d", f->port);
	snprintf(port_arg, sizeof(port_arg), "--tcp=%s", tcp);
	snprintf(ten_arg, sizeof(ten_arg), "--tenants=%s", tenants);
	snprintf(key_arg, sizeof(key_arg), "--tcp-keys=%s", keyfile);
	snprintf(sec_arg, sizeof(sec_arg), "--curve-secret=%s", secret);
	const char *args[] = {port_arg, ten_arg, key_arg, sec_arg, "--ram-budget=16M", NULL};
	struct memsvc_proc_opts o = {.binary = bin, .args = args, .capture_stderr = true};
	assert_int_equal(memsvc_proc_start(&o, &f->p), 0);
	f->ctx = zmq_ctx_new();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];
	int status = -1;

	assert_int_equal(memsvc_proc_stop(f->p, SIGTERM, 10000, &status), 0);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	memsvc_proc_free(f->p);
	zmq_ctx_term(f->ctx);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	(void)!system(cmd);
	free(f);
	return 0;
}

static void *client(struct fx *f, const struct keys *k)
{
	void *s = zmq_socket(f->ctx, ZMQ_DEALER);
	char ep[64];
	int linger = 0;

	assert_non_null(s);
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, f->server.pub, 40), 0);
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, k->pub, 40), 0);
	assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, k->sec, 40), 0);
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f->port);
	assert_int_equal(zmq_connect(s, ep), 0);
	return s;
}

/* Send rq (+ data) and wait for the reply; *data_out gets a malloc'd copy of its data frame. */
static int rpc(struct fx *f, void *s, struct wire_request *rq, const void *data, size_t len,
	       struct wire_reply *rp, void **data_out, size_t *data_len, int timeout_ms)
{
	zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
	struct wire_frames fr;
	char err[256];
	void *buf;
	size_t n;
	int r;

	rq->protocol_version = 1;
	rq->request_id = ++f->next_id;
	assert_int_equal(wire_request_pack(rq, &buf, &n), 0);
	assert_int_equal(wire_zmq_send(s, NULL, 0, buf, n, data, len, 0), 0);
	free(buf);
	if (zmq_poll(&it, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	assert_int_equal(wire_zmq_recv(s, false, &fr, 0), 0);
	r = wire_reply_unpack(fr.payload, fr.len, rp, err, sizeof(err));
	assert_int_equal(r, 0);
	assert_int_equal(rp->request_id, rq->request_id);
	if (data_out) {
		*data_out = fr.data;
		*data_len = fr.data_len;
		fr.data = NULL;
	}
	wire_frames_fini(&fr);
	return 0;
}

struct sess {
	uint64_t id;
	uint8_t token[16];
	int sock; /* local sessions: the attach socket */
};

static int hello(struct fx *f, void *s, const char *tenant, struct sess *out)
{
	struct wire_request rq = {.kind = WIRE_HELLO};
	struct wire_reply rp;
	int r;

	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "%s", tenant);
	snprintf(rq.u.hello.client_name, sizeof(rq.u.hello.client_name), "remote-test");
	rq.u.hello.arena_bytes = 64 * UNIT;
	rq.u.hello.geom = (struct sp_geometry){2, 2, 16, 8, 2, 0};
	rq.u.hello.max_seqs = 4;
	assert_int_equal(rpc(f, s, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	r = rp.status;
	if (!r) {
		assert_int_equal(rp.kind, WIRE_HELLO);
		assert_int_equal(rp.u.hello.n_slots, 64);
		out->id = rp.u.hello.session_id;
		memcpy(out->token, rp.u.hello.token, 16);
	}
	wire_reply_fini(&rp);
	return r;
}

static void request(struct wire_request *rq, const struct sess *ss, enum wire_kind k)
{
	memset(rq, 0, sizeof(*rq));
	rq->kind = k;
	rq->session_id = ss->id;
	memcpy(rq->token, ss->token, 16);
}

/* A units request over one range; statuses into st[]; returns the reply status. */
static int units(struct fx *f, void *s, const struct sess *ss, enum wire_kind k,
		 struct wire_range g, const void *data, size_t len, int32_t *st, void **out)
{
	struct wire_request rq;
	struct wire_reply rp;
	size_t out_len = 0;
	int r;

	request(&rq, ss, k);
	rq.u.units.ranges = &g;
	rq.u.units.n_ranges = 1;
	rq.u.units.n_units = g.count;
	assert_int_equal(rpc(f, s, &rq, data, len, &rp, out, &out_len, TIMEOUT_MS), 0);
	r = rp.status;
	for (uint32_t i = 0; !r && i < rp.u.units.n; i++)
		st[i] = rp.u.units.results[i].status;
	if (out && !r)
		assert_int_equal(out_len, (size_t)g.count * UNIT);
	rq.u.units.ranges = NULL;
	wire_reply_fini(&rp);
	return r;
}

static void test_remote_roundtrip(void **state)
{
	struct fx *f = *state;
	void *s = client(f, &f->alice);
	struct wire_request rq;
	struct wire_reply rp;
	struct sess ss;
	uint8_t data[2 * UNIT], bad[UNIT];
	void *back = NULL;
	int32_t st[2];

	assert_int_equal(hello(f, s, "alice", &ss), 0);
	request(&rq, &ss, WIRE_SEQ_OPEN);
	rq.u.seq_open.max_blocks = 8;
	assert_int_equal(rpc(f, s, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, 0);
	struct wire_range g = {rp.u.seq_open.seq_index, rp.u.seq_open.seq_gen, 1, 1, 3, 2};
	wire_reply_fini(&rp);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	assert_int_equal(units(f, s, &ss, WIRE_ALLOC, g, NULL, 0, st, NULL), 0);
	assert_int_equal(st[0], 0);
	assert_int_equal(units(f, s, &ss, WIRE_WRITE, g, bad, sizeof(bad), st, NULL), -EBADMSG);
	assert_int_equal(units(f, s, &ss, WIRE_WRITE, g, data, sizeof(data), st, NULL), 0);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], 0);
	/* Not committed yet: a read is a miss. */
	assert_int_equal(units(f, s, &ss, WIRE_READ, g, NULL, 0, st, &back), 0);
	assert_int_equal(st[0], -ENOENT);
	free(back);
	assert_int_equal(units(f, s, &ss, WIRE_COMMIT, g, NULL, 0, st, NULL), 0);
	assert_int_equal(st[1], 0);
	assert_int_equal(units(f, s, &ss, WIRE_READ, g, NULL, 0, st, &back), 0);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], 0);
	assert_memory_equal(back, data, sizeof(data));
	free(back);
	/* Committed data cannot be overwritten; a data frame on another request is refused. */
	assert_int_equal(units(f, s, &ss, WIRE_WRITE, g, data, sizeof(data), st, NULL), 0);
	assert_int_equal(st[0], -EEXIST);
	assert_int_equal(units(f, s, &ss, WIRE_COMMIT, g, data, sizeof(data), st, NULL), -EBADMSG);
	request(&rq, &ss, WIRE_BYE);
	assert_int_equal(rpc(f, s, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, 0);
	request(&rq, &ss, WIRE_PING);
	assert_int_equal(rpc(f, s, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, -EPERM);
	wire_reply_fini(&rp);
	zmq_close(s);
}

static void test_remote_auth(void **state)
{
	struct fx *f = *state;
	void *a = client(f, &f->alice), *b = client(f, &f->bob), *e = client(f, &f->eve);
	struct wire_request rq;
	struct wire_reply rp;
	struct sess ss, other;

	/* An unlisted key never completes the handshake: no answer at all. */
	request(&rq, &(struct sess){0}, WIRE_PING);
	assert_int_equal(rpc(f, e, &rq, NULL, 0, &rp, NULL, NULL, 500), -ETIMEDOUT);
	/* A listed key speaks only for its own tenant. */
	assert_int_equal(hello(f, a, "bob", &other), -EACCES);
	assert_int_equal(hello(f, a, "alice", &ss), 0);
	request(&rq, &ss, WIRE_PING);
	assert_int_equal(rpc(f, b, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, -EPERM); /* bob holding alice's id and token */
	request(&rq, &ss, WIRE_PING);
	assert_int_equal(rpc(f, a, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, 0);
	zmq_close(a);
	zmq_close(b);
	zmq_close(e);
}

/* Attach locally over attach.sock; returns the session (descriptors closed again). */
static void local_attach(struct fx *f, struct sess *out)
{
	struct wire_request rq = {.kind = WIRE_HELLO, .protocol_version = 1, .request_id = 1};
	struct wire_reply rp;
	char path[128], err[256];
	uint8_t buf[4096];
	int fds[5], n_fds = 0, sock;
	void *msg;
	size_t len;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/attach.sock", memsvc_proc_runtime_dir(f->p));
	sock = fdpass_connect(path);
	assert_true(sock >= 0);
	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "alice");
	rq.u.hello.arena_bytes = 64 * UNIT;
	rq.u.hello.geom = (struct sp_geometry){2, 2, 16, 8, 2, 0};
	assert_int_equal(wire_request_pack(&rq, &msg, &len), 0);
	assert_int_equal(fdpass_send(sock, msg, len, NULL, 0), 0);
	free(msg);
	n = fdpass_recv(sock, buf, sizeof(buf), fds, 5, &n_fds, TIMEOUT_MS);
	assert_true(n > 0);
	assert_int_equal(n_fds, 5);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	assert_int_equal(wire_reply_unpack(buf, (size_t)n, &rp, err, sizeof(err)), 0);
	assert_int_equal(rp.status, 0);
	out->id = rp.u.hello.session_id;
	memcpy(out->token, rp.u.hello.token, 16);
	wire_reply_fini(&rp);
	/* The session lives as long as this socket: keep it open until the daemon exits. */
	out->sock = sock;
}

static void test_drain_request(void **state)
{
	struct fx *f = *state;
	void *r = client(f, &f->alice), *l = zmq_socket(f->ctx, ZMQ_DEALER);
	struct wire_request rq;
	struct wire_reply rp;
	struct sess remote, local;
	char ep[160];
	int linger = 0, status = -1;

	/* A remote session has no uid: drain is refused and the daemon keeps serving. */
	assert_int_equal(hello(f, r, "alice", &remote), 0);
	request(&rq, &remote, WIRE_DRAIN);
	assert_int_equal(rpc(f, r, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, -EPERM);
	request(&rq, &remote, WIRE_PING);
	assert_int_equal(rpc(f, r, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, 0);
	/* A local session of the daemon's own uid may drain it: it exits 0 on its own. */
	local_attach(f, &local);
	zmq_setsockopt(l, ZMQ_LINGER, &linger, sizeof(linger));
	snprintf(ep, sizeof(ep), "ipc://%s/ctl.ipc", memsvc_proc_runtime_dir(f->p));
	assert_int_equal(zmq_connect(l, ep), 0);
	request(&rq, &local, WIRE_DRAIN);
	rq.u.drain.deadline_ms = 2000;
	assert_int_equal(rpc(f, l, &rq, NULL, 0, &rp, NULL, NULL, TIMEOUT_MS), 0);
	assert_int_equal(rp.status, 0);
	request(&rq, &local, WIRE_SEQ_OPEN);
	rq.u.seq_open.max_blocks = 1;
	if (rpc(f, l, &rq, NULL, 0, &rp, NULL, NULL, 1000) == 0)
		assert_int_equal(rp.status, -ESHUTDOWN); /* unless it is already gone */
	assert_int_equal(memsvc_proc_stop(f->p, 0, 5000, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(local.sock);
	zmq_close(l);
	zmq_close(r);
}

/* Send one raw attach message (optionally with an fd) and return the reply's status. */
static int attach_raw(struct fx *f, const void *msg, size_t len, int pass_fd)
{
	struct wire_reply rp;
	char path[128], err[256];
	uint8_t buf[4096];
	int fds[5], n_fds = 0, sock, r;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/attach.sock", memsvc_proc_runtime_dir(f->p));
	sock = fdpass_connect(path);
	assert_true(sock >= 0);
	assert_int_equal(fdpass_send(sock, msg, len, &pass_fd, pass_fd >= 0 ? 1 : 0), 0);
	n = fdpass_recv(sock, buf, sizeof(buf), fds, 5, &n_fds, TIMEOUT_MS);
	assert_true(n > 0);
	assert_int_equal(n_fds, 0);
	assert_int_equal(wire_reply_unpack(buf, (size_t)n, &rp, err, sizeof(err)), 0);
	r = rp.status;
	assert_true(rp.error[0] != '\0'); /* every refusal says why */
	wire_reply_fini(&rp);
	/* The daemon closes a refused connection. */
	assert_int_equal(fdpass_recv(sock, buf, sizeof(buf), fds, 5, &n_fds, TIMEOUT_MS), 0);
	close(sock);
	return r;
}

static void test_attach_bad_input(void **state)
{
	struct fx *f = *state;
	struct wire_request rq = {.kind = WIRE_PING, .protocol_version = 1, .request_id = 9};
	static uint8_t big[100000];
	struct sess ok;
	void *msg;
	size_t len;

	assert_int_equal(attach_raw(f, "\xff\xff\xff garbage", 12, -1), -EBADMSG);
	assert_int_equal(attach_raw(f, big, sizeof(big), -1), -EMSGSIZE);
	rq.session_id = 1;
	memset(rq.token, 1, sizeof(rq.token));
	assert_int_equal(wire_request_pack(&rq, &msg, &len), 0);
	assert_int_equal(attach_raw(f, msg, len, -1), -EBADMSG); /* not a hello */
	free(msg);
	memset(&rq, 0, sizeof(rq));
	rq = (struct wire_request){.kind = WIRE_HELLO, .protocol_version = 1, .request_id = 3};
	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "alice");
	rq.u.hello.arena_bytes = 64 * UNIT;
	rq.u.hello.geom = (struct sp_geometry){2, 2, 16, 8, 2, 0};
	assert_int_equal(wire_request_pack(&rq, &msg, &len), 0);
	assert_int_equal(attach_raw(f, msg, len, 0), -EBADMSG); /* descriptors are not accepted */
	free(msg);
	rq.u.hello.arena_bytes = 1ull << 30; /* over the 16M budget */
	assert_int_equal(wire_request_pack(&rq, &msg, &len), 0);
	assert_int_equal(attach_raw(f, msg, len, -1), -ENOMEM);
	free(msg);
	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "nobody");
	rq.u.hello.arena_bytes = 64 * UNIT;
	assert_int_equal(wire_request_pack(&rq, &msg, &len), 0);
	assert_int_equal(attach_raw(f, msg, len, -1), -EACCES);
	free(msg);
	/* Still serving. */
	local_attach(f, &ok);
	close(ok.sock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_remote_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_remote_auth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_drain_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_attach_bad_input, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
