/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: processes dying. A client killed with SIGKILL has its memory returned to the
 * pool (seen through stats); a memsvc killed with SIGKILL gives the client errors within its
 * timeout, never a hang or a crash; SIGTERM drains (in-flight answered, exit 0).
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
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdpass.h"
#include "memsvc_harness.h"
#include "timeutil.h"
#include "wire.h"

#define ARENA (512u << 10)
#define TIMEOUT_MS 2000

/* A stat that reflects bytes held by sessions (first name the daemon offers). */
static const char *const bytes_stats[] = {"tenant.bytes", "daemon.arena_bytes", "daemon.bytes",
					  NULL};

static uint64_t held_bytes(struct memclient *c)
{
	struct memclient_stat *s = NULL;
	uint32_t n = 0;
	uint64_t v = 0;

	assert_int_equal(memclient_stats(c, &s, &n), 0);
	for (int i = 0; bytes_stats[i]; i++) {
		if (memclient_stat_find(s, n, bytes_stats[i], &v)) {
			free(s);
			return v;
		}
	}
	for (uint32_t i = 0; i < n; i++)
		fprintf(stderr, "  stat %s=%llu\n", s[i].name, (unsigned long long)s[i].value);
	free(s);
	fail_msg("no bytes-in-use stat");
	return 0;
}

/* Child: attach, open a sequence, allocate and commit units, report, then wait to die. */
static void child(struct memsvc_proc *p, int wfd)
{
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u[8];
	struct memclient_result r[8];
	char ok = 'x';

	if (!harness_open(p, NULL, SP_WAIT_SLEEP, ARENA, &c) &&
	    !memclient_seq_open(c, 9, 8, &seq)) {
		for (uint32_t i = 0; i < 8; i++)
			u[i] = (struct memclient_unit){seq, 0, 0, i};
		if (!memclient_alloc(c, u, 8, r) && !memclient_commit(c, u, 8, 1, r))
			ok = 'y';
	}
	(void)!write(wfd, &ok, 1);
	for (;;)
		pause();
}

static void test_client_sigkill(void **state)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct memclient *c;
	uint64_t base, with, after = 0, deadline;
	int fds[2], status;
	char ok = 0;
	pid_t pid;

	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, 128 << 10, &c), 0);
	base = held_bytes(c);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child(p, fds[1]);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &ok, 1), 1);
	close(fds[0]);
	assert_int_equal(ok, 'y');
	with = held_bytes(c);
	assert_true(with >= base + ARENA);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	deadline = time_now_ms() + 5000;
	while (time_now_ms() < deadline && (after = held_bytes(c)) != base)
		time_sleep_ns(20000000);
	assert_int_equal(after, base);
	assert_int_equal(memclient_ping(c), 0);
	memclient_close(c);
	memsvc_proc_free(p);
}

static void test_memsvc_sigkill(void **state)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u = {{0, 0}, 0, 0, 0};
	struct memclient_result r;
	struct memclient_residency res;
	uint64_t t0;
	int rc;

	assert_int_equal(harness_open(p, NULL, SP_WAIT_POLL, 128 << 10, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, 4, &seq), 0);
	u.seq = seq;
	assert_int_equal(memsvc_proc_kill9(p), 0);

	t0 = time_now_ms();
	rc = memclient_forecast(c, &u, 1, 1, &r);
	assert_true(rc == -ECONNRESET || rc == -ESHUTDOWN);
	rc = memclient_ping(c);
	assert_true(rc == -ECONNRESET || rc == -ESHUTDOWN);
	rc = memclient_seq_open(c, 2, 4, &seq);
	assert_true(rc == -ECONNRESET || rc == -ESHUTDOWN);
	assert_true(time_now_ms() - t0 < TIMEOUT_MS);
	/* The mappings stay valid: reading them is safe. */
	assert_int_equal(memclient_lookup(c, &u, &res), 0);

	/* A new daemon in the same runtime dir: the old handle stays dead (its session is gone
	 * with the old epoch), a new handle attaches to the new epoch. */
	char bin[PATH_MAX], sock[PATH_MAX + 16];
	struct memsvc_proc_opts po = {
	    .binary = bin, .runtime_dir = memsvc_proc_runtime_dir(p), .capture_stderr = true};
	struct memsvc_proc *p2;
	struct memclient *c2;

	assert_int_equal(memsvc_proc_find_binary(bin, sizeof(bin)), 0);
	snprintf(sock, sizeof(sock), "%s/attach.sock", memsvc_proc_runtime_dir(p));
	assert_int_equal(unlink(sock), 0); /* so readiness means the new daemon's socket */
	assert_int_equal(memsvc_proc_start(&po, &p2), 0);
	assert_int_equal(memclient_ping(c), -ECONNRESET);
	assert_int_equal(harness_open(p2, NULL, SP_WAIT_SLEEP, 128 << 10, &c2), 0);
	assert_int_not_equal(memclient_daemon_epoch(c2), memclient_daemon_epoch(c));
	assert_int_equal(memclient_ping(c2), 0);
	rc = memclient_seq_open(c, 3, 4, &seq);
	assert_true(rc == -ECONNRESET || rc == -ESHUTDOWN);
	memclient_close(c2);
	memsvc_proc_free(p2);
	memclient_close(c);
	memsvc_proc_free(p);

	/* A fresh daemon: attaching to a dead runtime dir fails cleanly. */
	struct memclient_opts o = {.runtime_dir = "/nonexistent/sparda",
				   .geom = harness_geometry(),
				   .arena_bytes = 1 << 16,
				   .max_seqs = 1};
	assert_int_equal(memclient_open(&o, &c), -ENOENT);
}

static void test_sigterm_drain(void **state)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u[16];
	struct memclient_result r[16];
	uint32_t id;
	int status, rc;

	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, 128 << 10, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, 16, &seq), 0);
	for (uint32_t i = 0; i < 16; i++)
		u[i] = (struct memclient_unit){seq, 1, 0, i};
	assert_int_equal(memclient_alloc(c, u, 16, r), 0);
	assert_int_equal(memclient_commit(c, u, 16, 1, r), 0);
	assert_int_equal(memclient_forecast_submit(c, u, 16, 2, r, &id), 0);
	assert_int_equal(kill(memsvc_proc_pid(p), SIGTERM), 0);
	/* In flight when the signal arrived: answered, not dropped. */
	assert_int_equal(memclient_forecast_reap(c, id, TIMEOUT_MS), 0);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(r[i].status, 0);
	assert_int_equal(memsvc_proc_stop(p, 0, 10000, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	rc = memclient_ping(c);
	assert_true(rc == -ECONNRESET || rc == -ESHUTDOWN);
	memclient_close(c);
	memsvc_proc_free(p);
}

/*
 * A daemon that stops answering (SIGSTOP) costs each request its timeout, never more; once it
 * runs again, the late answers to abandoned requests are dropped, not taken for new ones.
 */
static void test_memsvc_stopped(void **state)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u[4];
	struct memclient_result r[4], r2[4];
	uint64_t t0, dt;
	uint32_t id;

	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, 128 << 10, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, 4, &seq), 0);
	for (uint32_t i = 0; i < 4; i++)
		u[i] = (struct memclient_unit){seq, 0, 1, i};
	assert_int_equal(memclient_alloc(c, u, 4, r), 0);
	assert_int_equal(memclient_commit(c, u, 4, 1, r), 0);
	assert_int_equal(kill(memsvc_proc_pid(p), SIGSTOP), 0);

	t0 = time_now_ms();
	assert_int_equal(memclient_ping(c), -ETIMEDOUT);
	dt = time_now_ms() - t0;
	assert_true(dt >= 2900 && dt < 3000 + 500); /* harness timeout is 3000 ms */
	assert_int_equal(memclient_forecast_submit(c, u, 4, 2, r, &id), 0);
	t0 = time_now_ms();
	assert_int_equal(memclient_forecast_reap(c, id, 300), -ETIMEDOUT);
	assert_true(time_now_ms() - t0 < 300 + 200);
	assert_int_equal(memclient_forecast_reap(c, id, 300), -ENOENT); /* abandoned */

	assert_int_equal(kill(memsvc_proc_pid(p), SIGCONT), 0);
	/* The late ping reply and the abandoned ring completions are dropped. */
	assert_int_equal(memclient_forecast_zmq(c, u, 4, 3, r2), 0);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(r2[i].status, 0);
	memset(r2, 0, sizeof(r2));
	assert_int_equal(memclient_forecast(c, u, 4, 4, r2), 0);
	for (uint32_t i = 0; i < 4; i++) {
		assert_int_equal(r2[i].status, 0);
		assert_int_equal(r2[i].slot, r[i].slot);
	}
	assert_int_equal(memclient_late_completions(c), 4);
	memclient_close(c);
	memsvc_proc_free(p);
}

#define BIG_ARENA (256ull << 20)
/* memsvc's attach threads wait this long before making the session (a test hook): long enough
 * for the checks that must happen while an attach is under way, on any machine */
#define ATTACH_DELAY_ENV "SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS"

struct big_attach {
	struct memsvc_proc *p;
	struct memclient *c;
	int rc;
};

static void *big_attach_main(void *arg)
{
	struct big_attach *b = arg;

	b->rc = harness_open(b->p, NULL, SP_WAIT_SLEEP, BIG_ARENA, &b->c);
	return NULL;
}

/* A client that sends its Hello and is gone before the reply: the socket, to be closed. */
static int hello_only(struct memsvc_proc *p, uint64_t arena_bytes)
{
	struct wire_request rq = {.protocol_version = SP_PROTOCOL_VERSION,
				  .request_id = 1,
				  .kind = WIRE_HELLO};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	void *buf = NULL;
	size_t len = 0;

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/attach.sock", memsvc_proc_runtime_dir(p));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "default");
	snprintf(rq.u.hello.client_name, sizeof(rq.u.hello.client_name), "leaver");
	rq.u.hello.arena_bytes = arena_bytes;
	rq.u.hello.geom = harness_geometry();
	rq.u.hello.max_seqs = 1;
	assert_int_equal(wire_request_pack(&rq, &buf, &len), 0);
	assert_int_equal(fdpass_send(fd, buf, len, NULL, 0), 0);
	free(buf);
	return fd;
}

/*
 * An attach's session (memfds, the arena's pre-fault) is made off the daemon's loop: another
 * client's control requests and /metrics are answered while it is, and a client that leaves
 * during it gets everything the attach held back to the pool. The daemon's attach threads
 * start 1.5 s late (a test hook), so "while" does not depend on how fast this machine
 * pre-faults.
 */
static void test_attach_off_loop(void **state)
{
	int pn = harness_free_port();
	char port[16];
	const char *const args[] = {"--ram-budget=384M", "--metrics-port", port, NULL};
	struct big_attach b = {0};
	struct memsvc_proc *p;
	struct memclient *small;
	pthread_t t;
	char *text;
	int fd;

	(void)state;
	snprintf(port, sizeof(port), "%d", pn);
	setenv(ATTACH_DELAY_ENV, "1500", 1); /* within harness_open's 3 s wait for the reply */
	p = harness_start(args);
	unsetenv(ATTACH_DELAY_ENV);
	b.p = p;
	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, ARENA, &small), 0);
	assert_int_equal(pthread_create(&t, NULL, big_attach_main, &b), 0);
	/* session 1 is small's, 2 the big one, 3 the client that leaves below */
	assert_true(harness_log_wait(p, "session attaching\" session=2")); /* admitted */
	assert_int_equal(memclient_ping(small), 0);			   /* answered ... */
	text = harness_http_get(pn, "/metrics");			   /* ... and counted ... */
	assert_false(harness_log_contains(p, "session attached\" session=2")); /* ... before */
	assert_non_null(strstr(text, "\nsparda_memsvc_attaching_bytes 268435456\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_pending_attaches 1\n"));
	free(text);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.rc, 0);
	/* logged after the reply */
	assert_true(harness_log_wait(p, "session attached\" session=2"));
	text = harness_http_get(pn, "/metrics");
	assert_non_null(strstr(text, "\nsparda_memsvc_attaching_bytes 0\n"));
	assert_non_null(strstr(text, "\nsparda_memsvc_sessions 2\n"));
	free(text);
	memclient_close(b.c);
	assert_true(harness_log_wait(p, "session closed\" session=2"));

	/* A client gone while its attach is under way: the attach is undone. */
	fd = hello_only(p, BIG_ARENA);
	assert_true(harness_log_wait(p, "session attaching\" session=3"));
	close(fd);
	assert_true(harness_log_wait(p, "attach undone\" session=3"));
	/* its bytes are back: 256 MiB fit the 384 MiB budget again */
	b = (struct big_attach){.p = p};
	big_attach_main(&b);
	assert_int_equal(b.rc, 0);
	memclient_close(b.c);
	memclient_close(small);
	memsvc_proc_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_client_sigkill),
	    cmocka_unit_test(test_memsvc_sigkill),
	    cmocka_unit_test(test_sigterm_drain),
	    cmocka_unit_test(test_memsvc_stopped),
	    cmocka_unit_test(test_attach_off_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
