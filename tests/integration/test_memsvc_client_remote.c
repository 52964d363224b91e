/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: the client library's remote sessions against a real sparda-memsvc with a tcp
 * endpoint (CURVE, ZAP allow-list): write, commit and read back unit bytes with zero wrong
 * bytes; shared-memory calls refuse a remote session; an unlisted key times out cleanly, a
 * listed key cannot claim another tenant; a tenants reload (SIGHUP) re-reads the allow-list;
 * a remote Hello's session is made off the daemon's loop; a drain refuses it while pending, and
 * one whose client gave up and left is undone.
 * Exits 77 without CURVE or the daemon.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "memsvc_harness.h"
#include "timeutil.h"

#define KEY 0x7e30ull

struct keys {
	char pub[41], sec[41];
};

struct fx {
	char *dir;
	struct memsvc_proc *p;
	char endpoint[64];
	struct keys server, alice, eve;
};

/* Start the daemon with a tcp endpoint; extra: one more argument, or NULL. */
static void start_args(struct fx *f, const char *extra)
{
	char text[512], arg[4][PATH_MAX + 32];
	char *tenants, *keys, *secret;

	if (!zmq_has("curve")) {
		fprintf(stderr, "skip: libzmq without CURVE\n");
		exit(HARNESS_SKIP);
	}
	f->dir = harness_tmpdir();
	assert_int_equal(zmq_curve_keypair(f->server.pub, f->server.sec), 0);
	assert_int_equal(zmq_curve_keypair(f->alice.pub, f->alice.sec), 0);
	assert_int_equal(zmq_curve_keypair(f->eve.pub, f->eve.sec), 0);
	snprintf(text, sizeof(text), "alice uid=%u quota=1M\nbob uid=%u quota=1M\n",
		 (unsigned)getuid(), (unsigned)getuid());
	tenants = harness_write_file(f->dir, "tenants", text);
	snprintf(text, sizeof(text), "alice %s\n", f->alice.pub);
	keys = harness_write_file(f->dir, "keys", text);
	snprintf(text, sizeof(text), "%s\n", f->server.sec);
	secret = harness_write_file(f->dir, "secret", text);
	snprintf(f->endpoint, sizeof(f->endpoint), "tcp://127.0.0.1:%d", harness_free_port());
	snprintf(arg[0], sizeof(arg[0]), "--tcp=%s", f->endpoint);
	snprintf(arg[1], sizeof(arg[1]), "--tenants=%s", tenants);
	snprintf(arg[2], sizeof(arg[2]), "--tcp-keys=%s", keys);
	snprintf(arg[3], sizeof(arg[3]), "--curve-secret=%s", secret);
	const char *args[] = {arg[0], arg[1], arg[2], arg[3], extra, NULL};
	f->p = harness_start(args);
	free(tenants);
	free(keys);
	free(secret);
}

static void start(struct fx *f)
{
	start_args(f, NULL);
}

static void stop(struct fx *f)
{
	memsvc_proc_free(f->p);
	harness_rmdir(f->dir);
}

/* attach_ms: how long the Hello's reply may take; 0: the library's default. */
static int open_remote_wait(struct fx *f, const struct keys *k, const char *tenant, int attach_ms,
			    struct memclient **out)
{
	struct memclient_remote_opts o = {
	    .endpoint = f->endpoint,
	    .server_key = f->server.pub,
	    .public_key = k->pub,
	    .secret_key = k->sec,
	    .tenant = tenant,
	    .client_name = "remote-test",
	    .geom = harness_geometry(),
	    .arena_bytes = 64 << 10,
	    .max_seqs = 2,
	    .timeout_ms = 1000,
	    .attach_timeout_ms = attach_ms,
	};
	return memclient_open_remote(&o, out);
}

static int open_remote(struct fx *f, const struct keys *k, const char *tenant,
		       struct memclient **out)
{
	return open_remote_wait(f, k, tenant, 0, out);
}

/* Write 8 units through c, commit and read them back: the number of wrong bytes. */
static size_t readback(struct memclient *c, struct memclient_unit *u)
{
	struct memclient_seq seq;
	struct memclient_result r[8];
	uint8_t *data = calloc(8, 1024), *back = calloc(8, 1024); /* 1 KiB units at most */
	size_t ub = memclient_geometry(c)->unit_bytes, wrong = 0;

	assert_true(ub <= 1024);
	assert_int_equal(memclient_seq_open(c, 5, 8, &seq), 0);
	for (uint32_t i = 0; i < 8; i++) {
		u[i] = (struct memclient_unit){seq, i % 2, i / 4, i};
		harness_fill(data + i * ub, ub, KEY, &u[i]);
	}
	assert_int_equal(memclient_alloc(c, u, 8, r), 0);
	assert_int_equal(memclient_write(c, u, 8, data, r), 0);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(r[i].status, 0);
	assert_int_equal(memclient_commit(c, u, 8, 1, r), 0);
	assert_int_equal(memclient_forecast_zmq(c, u, 8, 2, r), 0);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(r[i].status, 0);
	assert_int_equal(memclient_read(c, u, 8, 3, back, r), 0);
	for (uint32_t i = 0; i < 8; i++) {
		assert_int_equal(r[i].status, 0);
		wrong += harness_check(back + i * ub, ub, KEY, &u[i]);
	}
	free(data);
	free(back);
	return wrong;
}

static void test_remote_readback(void **state)
{
	struct fx f;
	struct memclient *c;
	struct memclient_unit u[8];
	struct memclient_result r[8];
	struct memclient_residency res;
	uint32_t id;
	void *base;
	size_t bytes;

	start(&f);
	assert_int_equal(open_remote(&f, &f.alice, "alice", &c), 0);
	assert_true(memclient_is_remote(c));
	assert_int_equal(memclient_ping(c), 0);
	assert_int_equal(readback(c, u), 0);

	/* No shared memory in a remote session. */
	assert_int_equal(memclient_forecast(c, u, 1, 4, r), -EOPNOTSUPP);
	assert_int_equal(memclient_forecast_submit(c, u, 1, 4, r, &id), -EOPNOTSUPP);
	assert_int_equal(memclient_lookup(c, &u[0], &res), -EOPNOTSUPP);
	assert_null(memclient_slot_ptr(c, 0));
	assert_null(memclient_unit_ptr(c, &u[0]));
	memclient_arena(c, &base, &bytes);
	assert_null(base);
	memclient_close(c);
	stop(&f);
}

static void test_remote_refused(void **state)
{
	struct fx f;
	struct memclient *c = NULL;
	uint64_t t0;
	int rc;

	start(&f);
	/* A key the daemon does not list: CURVE drops us, the open times out. */
	t0 = time_now_ms();
	assert_int_equal(open_remote(&f, &f.eve, "alice", &c), -ETIMEDOUT);
	assert_true(time_now_ms() - t0 < 1000 + 500);
	assert_null(c);
	/* A listed key claiming another tenant is refused by the daemon. */
	rc = open_remote(&f, &f.alice, "bob", &c);
	assert_true(rc == -EACCES || rc == -EPERM);
	assert_null(c);
	/* Bad options never reach the network. */
	struct memclient_remote_opts o = {.endpoint = "ipc:///x",
					  .server_key = f.server.pub,
					  .public_key = f.alice.pub,
					  .secret_key = f.alice.sec,
					  .geom = harness_geometry(),
					  .arena_bytes = 1 << 16,
					  .max_seqs = 1};
	assert_int_equal(memclient_open_remote(&o, &c), -EINVAL);
	o.endpoint = f.endpoint;
	o.server_key = "short";
	assert_int_equal(memclient_open_remote(&o, &c), -EINVAL);
	/* And the daemon still serves the right key. */
	assert_int_equal(open_remote(&f, &f.alice, "alice", &c), 0);
	assert_int_equal(memclient_ping(c), 0);
	memclient_close(c);
	stop(&f);
}

/* Rewrite the key file to the one line "tenant key" and reload; true when it was applied. */
static bool reload_keys(struct fx *f, const char *tenant, const char *key)
{
	char text[256];

	snprintf(text, sizeof(text), "%s %s\n", tenant, key);
	free(harness_write_file(f->dir, "keys", text));
	return harness_reload(f->p, NULL, 0);
}

/* A reload adds eve as bob's key and drops alice's: eve connects as bob, alice no longer. */
static void test_reload_keys(void **state)
{
	struct fx f;
	struct memclient *c = NULL;

	start(&f);
	assert_int_equal(open_remote(&f, &f.eve, "bob", &c), -ETIMEDOUT);
	assert_true(reload_keys(&f, "bob", f.eve.pub));
	assert_int_equal(open_remote(&f, &f.eve, "bob", &c), 0);
	assert_int_equal(memclient_ping(c), 0);
	memclient_close(c);
	c = NULL;
	assert_int_equal(open_remote(&f, &f.alice, "alice", &c), -ETIMEDOUT);
	/* a key file naming a tenant that does not exist: refused, the list in force stays */
	assert_false(reload_keys(&f, "mallory", f.alice.pub));
	assert_int_equal(open_remote(&f, &f.eve, "bob", &c), 0);
	memclient_close(c);
	stop(&f);
}

/* memsvc's attach threads wait this long before making the session (a test hook): long enough
 * for the checks that must happen while an attach is under way, on any machine */
#define ATTACH_DELAY_ENV "SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS"
#define ATTACH_DELAY "1500"
#define ATTACH_WAIT_MS 10000 /* the client's wait for the Hello reply: well past the delay */

struct pending_open {
	struct fx *f;
	struct memclient *c;
	int rc;
};

static void *pending_open_main(void *arg)
{
	struct pending_open *o = arg;

	o->rc = open_remote_wait(o->f, &o->f->alice, "alice", ATTACH_WAIT_MS, &o->c);
	return NULL;
}

/*
 * A remote client's session (memfds, the arena's pre-fault) is made off the daemon's loop, as
 * a local client's: another client's requests and /metrics are answered while its Hello is
 * pending, and the session then works. The daemon's attach threads start late (a test hook),
 * so "while" does not depend on how fast this machine pre-faults.
 */
static void test_remote_attach_off_loop(void **state)
{
	int pn = harness_free_port();
	struct pending_open o = {0};
	struct memclient_unit u[8];
	struct memclient *first;
	char port[32], *text;
	struct fx f;
	pthread_t t;

	(void)state;
	snprintf(port, sizeof(port), "--metrics-port=%d", pn);
	setenv(ATTACH_DELAY_ENV, ATTACH_DELAY, 1);
	start_args(&f, port);
	unsetenv(ATTACH_DELAY_ENV);
	o.f = &f;
	assert_int_equal(open_remote_wait(&f, &f.alice, "alice", ATTACH_WAIT_MS, &first), 0);
	assert_int_equal(pthread_create(&t, NULL, pending_open_main, &o), 0);
	assert_true(harness_log_wait(f.p, "remote session attaching\" session=2")); /* admitted */
	assert_int_equal(memclient_ping(first), 0); /* answered ... */
	text = harness_http_get(pn, "/metrics");    /* ... counted ... */
	assert_false(harness_log_contains(f.p, "remote session attached\" session=2")); /* before */
	assert_non_null(strstr(text, "\nsparda_memsvc_attaching_bytes 65536\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_pending_attaches 1\n"));
	free(text);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(o.rc, 0);
	assert_true(harness_log_wait(f.p, "remote session attached\" session=2"));
	assert_int_equal(readback(o.c, u), 0);
	text = harness_http_get(pn, "/metrics");
	assert_non_null(strstr(text, "\nsparda_memsvc_attaching_bytes 0\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_sessions 2\n"));
	free(text);
	memclient_close(o.c);
	memclient_close(first);
	stop(&f);
}

/* A drain while a remote Hello is pending: the client gets -ESHUTDOWN, the daemon exits 0. */
static void test_remote_attach_drained(void **state)
{
	struct pending_open o = {0};
	struct fx f;
	pthread_t t;
	int status;

	(void)state;
	setenv(ATTACH_DELAY_ENV, ATTACH_DELAY, 1);
	start(&f);
	unsetenv(ATTACH_DELAY_ENV);
	o.f = &f;
	assert_int_equal(pthread_create(&t, NULL, pending_open_main, &o), 0);
	assert_true(harness_log_wait(f.p, "remote session attaching\" session=1"));
	assert_int_equal(kill(memsvc_proc_pid(f.p), SIGTERM), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(o.rc, -ESHUTDOWN);
	assert_null(o.c);
	assert_int_equal(memsvc_proc_stop(f.p, 0, 10000, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(harness_log_contains(f.p, "attach refused\" status=ESHUTDOWN"));
	stop(&f);
}

/*
 * A remote client that gives up before its Hello's reply and closes its socket: the reply
 * cannot be routed (the router is ZMQ_ROUTER_MANDATORY and the peer is gone), so the attach
 * is undone and its bytes are back in the budget; the next client attaches.
 */
static void test_remote_attach_abandoned(void **state)
{
	int pn = harness_free_port();
	struct memclient *c = NULL;
	char port[32], *text;
	struct fx f;

	(void)state;
	snprintf(port, sizeof(port), "--metrics-port=%d", pn);
	setenv(ATTACH_DELAY_ENV, ATTACH_DELAY, 1);
	start_args(&f, port);
	unsetenv(ATTACH_DELAY_ENV);
	assert_int_equal(open_remote_wait(&f, &f.alice, "alice", 500, &c), -ETIMEDOUT);
	assert_null(c);
	assert_true(harness_log_contains(f.p, "remote session attaching\" session=1"));
	assert_true(harness_log_wait(f.p, "attach refused\" status=EHOSTUNREACH"));
	/* the refusal is logged just before its connection is closed: the gauges follow */
	for (int i = 0;; i++) {
		text = harness_http_get(pn, "/metrics");
		assert_non_null(text);
		if ((strstr(text, "\nsparda_memsvc_attaching_bytes 0\n") &&
		     strstr(text, "\nsparda_memsvc_pending_attaches 0\n") &&
		     strstr(text, "\nsparda_memsvc_sessions 0\n")) ||
		    i == 250)
			break;
		free(text);
		usleep(20000);
	}
	assert_non_null(strstr(text, "\nsparda_memsvc_attaching_bytes 0\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_pending_attaches 0\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_sessions 0\n"));
	free(text);
	assert_int_equal(open_remote_wait(&f, &f.alice, "alice", ATTACH_WAIT_MS, &c), 0);
	assert_int_equal(memclient_ping(c), 0);
	memclient_close(c);
	stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_remote_readback),
	    cmocka_unit_test(test_remote_refused),
	    cmocka_unit_test(test_reload_keys),
	    cmocka_unit_test(test_remote_attach_off_loop),
	    cmocka_unit_test(test_remote_attach_drained),
	    cmocka_unit_test(test_remote_attach_abandoned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
