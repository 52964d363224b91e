/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client library's side of attach against a fake memsvc on attach.sock (a thread): a
 * daemon that closes, stays silent, refuses, sends too few descriptors, or hands over regions
 * whose headers are wrong (magic, epoch, geometry, sizes) gets a clean -errno from
 * memclient_open within the timeout, never a crash, a hang or a half-open handle.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_internal.h"
#include "fdpass.h"
#include "memsvc_harness.h"
#include "ring.h"
#include "timeutil.h"
#include "wire.h"

enum fake_mode {
	FAKE_CLOSE,	/* accept, then close */
	FAKE_SILENT,	/* read the hello, never answer */
	FAKE_REFUSE,	/* answer -EACCES */
	FAKE_NO_FDS,	/* a hello reply without descriptors */
	FAKE_BAD_MAGIC, /* regions whose ctl header has the wrong magic */
	FAKE_BAD_EPOCH, /* ctl header epoch differs from the reply's */
	FAKE_BAD_GEOM,	/* reply geometry differs from the request */
	FAKE_BAD_SIZE,	/* ctl memfd smaller than the reply says */
	FAKE_GOOD,	/* a consistent session (then closes when the client does) */
	FAKE_RING,	/* a consistent session whose ring answers are wrong, then closing */
	FAKE_SLOW,	/* a consistent session, answered SLOW_MS after the hello */
};

#define SLOW_MS 800 /* FAKE_SLOW: as a daemon pre-faulting a large arena */

struct fake {
	enum fake_mode mode;
	int listen_fd;
	pthread_t thread;
	char *dir;
	char path[256];
};

#define CTL_BYTES 8192u
#define SUB_BYTES 8192u
#define EPOCH 0x1234ull

static int memfd(size_t bytes)
{
	int fd = memfd_create("fake", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)bytes), 0);
	return fd;
}

static void *map(int fd, size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

/* Build ctl, sub and arena as memsvc would, with one defect chosen by mode. */
static void make_regions(enum fake_mode mode, const struct wire_request *rq, int *fds,
			 struct wire_reply *rp)
{
	struct sp_geometry g = rq->u.hello.geom;
	uint64_t arena = rq->u.hello.arena_bytes / g.unit_bytes * g.unit_bytes;
	struct sp_ctl_header *ch;
	struct sp_sub_header *sh;

	fds[0] = memfd(mode == FAKE_BAD_SIZE ? CTL_BYTES / 2 : CTL_BYTES);
	fds[1] = memfd(SUB_BYTES);
	fds[2] = memfd(arena);
	fds[3] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fds[4] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ch = map(fds[0], mode == FAKE_BAD_SIZE ? CTL_BYTES / 2 : CTL_BYTES);
	*ch = (struct sp_ctl_header){
	    .magic = mode == FAKE_BAD_MAGIC ? 0xdead : SP_SHM_MAGIC,
	    .layout_version = SP_SHM_LAYOUT_VERSION,
	    .header_bytes = sizeof(*ch),
	    .daemon_epoch = mode == FAKE_BAD_EPOCH ? EPOCH + 1 : EPOCH,
	    .session_id = 7,
	    .geom = g,
	    .wait_mode = rq->u.hello.wait_mode,
	    .max_seqs = 1,
	    .ctl_bytes = CTL_BYTES,
	    .arena_bytes = arena,
	    .n_slots = arena / g.unit_bytes,
	    .unit_words_cap = 64,
	    .seq_table_off = 256,
	    .unit_pool_off = 512,
	};
	munmap(ch, mode == FAKE_BAD_SIZE ? CTL_BYTES / 2 : CTL_BYTES);
	sh = map(fds[1], SUB_BYTES);
	*sh = (struct sp_sub_header){.magic = SP_SHM_MAGIC,
				     .layout_version = SP_SHM_LAYOUT_VERSION,
				     .header_bytes = sizeof(*sh),
				     .daemon_epoch = EPOCH,
				     .sq_off = 128,
				     .cq_off = 128 + 2048};
	assert_int_equal(ring_format((uint8_t *)sh + 128, 32, sizeof(struct sp_sqe)), 0);
	assert_int_equal(ring_format((uint8_t *)sh + 128 + 2048, 32, sizeof(struct sp_cqe)), 0);
	munmap(sh, SUB_BYTES);

	rp->kind = WIRE_HELLO;
	rp->u.hello.session_id = 7;
	rp->u.hello.daemon_epoch = EPOCH;
	rp->u.hello.arena_bytes = arena;
	rp->u.hello.n_slots = arena / g.unit_bytes;
	rp->u.hello.ctl_bytes = CTL_BYTES;
	rp->u.hello.sub_bytes = SUB_BYTES;
	rp->u.hello.unit_words_cap = 64;
	rp->u.hello.max_seqs = 1;
	rp->u.hello.geom = g;
	if (mode == FAKE_BAD_GEOM)
		rp->u.hello.geom.n_layers++;
}

/*
 * FAKE_RING: take the client's three SQEs and answer them: the first right, the second for
 * another unit, the third with a slot outside the arena; then mark the session closing.
 */
static void serve_ring(int *fds)
{
	struct sp_ctl_header *ch = map(fds[0], CTL_BYTES);
	uint8_t *sub = map(fds[1], SUB_BYTES);
	uint64_t end = time_now_ms() + 3000;
	struct sp_sqe e[3];
	struct sp_cqe q[3];
	struct ring sq, cq;
	uint32_t got = 0;

	assert_int_equal(ring_attach(&sq, sub + 128, 2048, sizeof(struct sp_sqe), fds[3]), 0);
	assert_int_equal(
	    ring_attach(&cq, sub + 2176, SUB_BYTES - 2176, sizeof(struct sp_cqe), fds[4]), 0);
	while (got < 3 && time_now_ms() < end) {
		got += ring_pop(&sq, e + got, 3 - got);
		time_sleep_ns(100000);
	}
	for (uint32_t i = 0; i < got; i++)
		q[i] = (struct sp_cqe){.op = e[i].op,
				       .req_id = e[i].req_id,
				       .slot = 0,
				       .seq_index = e[i].seq_index,
				       .layer = e[i].layer,
				       .head = e[i].head,
				       .block = e[i].block,
				       .gen = 1};
	if (got == 3) {
		q[1].block++;	      /* the answer of another unit */
		q[2].slot = 1u << 30; /* a slot outside the arena */
	}
	ring_push(&cq, q, got);
	(void)ring_doorbell(&cq);
	/* Release: the answers above are visible before the flag (as memsvc's drain does). */
	atomic_store_explicit(&ch->closing, 1, memory_order_release);
	munmap(ch, CTL_BYTES);
	munmap(sub, SUB_BYTES);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct wire_request rq;
	struct wire_reply rp = {.request_id = 1};
	char buf[4096], err[256];
	int fd, fds[5] = {-1, -1, -1, -1, -1}, n_fds = 0;
	void *out;
	size_t len;
	ssize_t n;

	fd = accept(f->listen_fd, NULL, NULL);
	if (fd < 0 || f->mode == FAKE_CLOSE)
		goto out;
	n = fdpass_recv(fd, buf, sizeof(buf), fds, 5, &n_fds, 5000); /* the hello has none */
	if (n <= 0 || wire_request_unpack(buf, (size_t)n, &rq, err, sizeof(err)))
		goto out;
	if (f->mode == FAKE_SILENT) {
		(void)!read(fd, buf, sizeof(buf)); /* until the client gives up and closes */
		goto out;
	}
	if (f->mode == FAKE_SLOW)
		time_sleep_ns(SLOW_MS * 1000000ull);
	if (f->mode == FAKE_REFUSE)
		wire_reply_error(&rp, 1, -EACCES, "uid not admitted");
	else
		make_regions(f->mode, &rq, fds, &rp);
	if (!wire_reply_pack(&rp, &out, &len)) {
		fdpass_send(fd, out, len, fds, f->mode == FAKE_NO_FDS || fds[0] < 0 ? 0 : 5);
		free(out);
	}
	if (f->mode == FAKE_RING)
		serve_ring(fds);
	(void)!read(fd, buf, sizeof(buf)); /* the session lasts until the client closes */
out:
	for (int i = 0; i < 5; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode, struct memclient_opts *o)
{
	*f = (struct fake){.mode = mode, .dir = harness_tmpdir()};
	snprintf(f->path, sizeof(f->path), "%s/attach.sock", f->dir);
	f->listen_fd = fdpass_listen(f->path, 4, 0600);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	*o = (struct memclient_opts){
	    .attach_path = f->path,
	    .ctl_endpoint = "inproc://none",
	    .geom = harness_geometry(),
	    .arena_bytes = 64 << 10,
	    .max_seqs = 1,
	    .timeout_ms = 500,
	};
}

static void fake_finish(struct fake *f)
{
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	harness_rmdir(f->dir);
}

/*
 * Attach to a fake daemon in mode, asking for arena_bytes (0: the fake's default) with an
 * attach_timeout_ms; returns memclient_open's result and its duration.
 */
static int attach_with(enum fake_mode mode, uint64_t arena_bytes, int attach_timeout_ms,
		       uint64_t *ms)
{
	struct memclient_opts o;
	struct memclient *c = (void *)1;
	struct fake f;
	uint64_t t0;
	int rc;

	fake_start(&f, mode, &o);
	if (arena_bytes)
		o.arena_bytes = arena_bytes;
	o.attach_timeout_ms = attach_timeout_ms;
	t0 = time_now_ms();
	rc = memclient_open(&o, &c);
	*ms = time_now_ms() - t0;
	if (rc)
		assert_null(c);
	memclient_close(rc ? NULL : c);
	fake_finish(&f);
	return rc;
}

static int attach(enum fake_mode mode, uint64_t *ms)
{
	return attach_with(mode, 0, 0, ms);
}

/*
 * The attach reply may come late: the daemon pre-faults the arena first. Request timeout 500 ms,
 * reply after SLOW_MS: a small arena's wait gives up; a 1 GiB arena's default wait (one more
 * second) and an explicit attach_timeout_ms both attach.
 */
static void test_attach_waits_for_large_arena(void **state)
{
	uint64_t ms;

	assert_int_equal(attach_with(FAKE_SLOW, 0, 0, &ms), -ETIMEDOUT);
	assert_true(ms < SLOW_MS);
	assert_int_equal(attach_with(FAKE_SLOW, 1ull << 30, 0, &ms), 0);
	assert_true(ms >= SLOW_MS);
	assert_int_equal(attach_with(FAKE_SLOW, 0, 3000, &ms), 0);
	assert_int_equal(memclient_attach_wait_ms(0, 500, 4ull << 30), 500 + 4000);
	assert_int_equal(memclient_attach_wait_ms(0, 500, 1ull << 62), INT_MAX);
	assert_int_equal(memclient_attach_wait_ms(2000, 500, 4ull << 30), 2000);
}

/* Ring answers are checked against the units asked for; closing ends the session. */
static void test_ring_answers_checked(void **state)
{
	struct memclient_opts o;
	struct memclient_unit u[3];
	struct memclient_result r[3];
	struct memclient *c;
	struct fake f;

	fake_start(&f, FAKE_RING, &o);
	assert_int_equal(memclient_open(&o, &c), 0);
	for (uint32_t i = 0; i < 3; i++)
		u[i] = (struct memclient_unit){{0, 0}, 1, 0, i};
	assert_int_equal(memclient_forecast(c, u, 3, 1, r), 0);
	assert_int_equal(r[0].status, 0);
	assert_int_equal(r[0].slot, 0);
	assert_int_equal(r[1].status, -EPROTO);
	assert_int_equal(r[1].slot, SP_UNIT_SLOT_NONE);
	assert_int_equal(r[2].status, -EPROTO);
	assert_int_equal(memclient_ping(c), -ESHUTDOWN);
	assert_int_equal(memclient_forecast(c, u, 1, 2, r), -ESHUTDOWN);
	memclient_close(c);
	fake_finish(&f);
}

static void test_attach_failures(void **state)
{
	uint64_t ms;

	assert_int_equal(attach(FAKE_CLOSE, &ms), -ECONNRESET);
	assert_int_equal(attach(FAKE_SILENT, &ms), -ETIMEDOUT);
	assert_true(ms >= 450 && ms < 1500);
	assert_int_equal(attach(FAKE_REFUSE, &ms), -EACCES);
	assert_int_equal(attach(FAKE_NO_FDS, &ms), -EPROTO);
	assert_int_equal(attach(FAKE_BAD_MAGIC, &ms), -EPROTO);
	assert_int_equal(attach(FAKE_BAD_EPOCH, &ms), -ESTALE);
	assert_int_equal(attach(FAKE_BAD_GEOM, &ms), -EPROTO);
	assert_int_equal(attach(FAKE_BAD_SIZE, &ms), -EPROTO);
	/* The control: the same fake with nothing wrong attaches. */
	assert_int_equal(attach(FAKE_GOOD, &ms), 0);
}

static void test_bad_opts(void **state)
{
	struct memclient_opts o = {.runtime_dir = "/nonexistent",
				   .geom = harness_geometry(),
				   .arena_bytes = 1 << 16,
				   .max_seqs = 1};
	struct memclient *c = NULL;

	memclient_close(NULL);
	assert_int_equal(memclient_open(NULL, &c), -EINVAL);
	o.arena_bytes = 0;
	assert_int_equal(memclient_open(&o, &c), -EINVAL);
	o.arena_bytes = 1 << 16;
	o.geom.unit_bytes = 12345; /* does not match the geometry */
	assert_int_equal(memclient_open(&o, &c), -EINVAL);
	o.geom = harness_geometry();
	o.geom.head_dim = 0;
	assert_int_equal(memclient_open(&o, &c), -EINVAL);
	o.geom = harness_geometry();
	o.wait_mode = 7;
	assert_int_equal(memclient_open(&o, &c), -EINVAL);
	o.wait_mode = SP_WAIT_SLEEP;
	o.attach_path = "/nonexistent/attach.sock"; /* without ctl_endpoint */
	assert_int_equal(memclient_open(&o, &c), -EINVAL);
	o.attach_path = NULL;
	assert_int_equal(memclient_open(&o, &c), -ENOENT);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_attach_failures),
	    cmocka_unit_test(test_attach_waits_for_large_arena),
	    cmocka_unit_test(test_ring_answers_checked),
	    cmocka_unit_test(test_bad_opts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
