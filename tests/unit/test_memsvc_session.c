/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc sessions and the ring consumer: region sizes and seals (the client cannot map ctl
 * writable nor resize anything), SQE -> CQE for every op and for bad ids, the tenant's
 * in-flight and sequence limits, CQ back-pressure, and the poll and sleep threads end to end.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "hotpath.h"
#include "mstats.h"
#include "ring.h"
#include "session.h"
#include "tenant.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

struct fx {
	struct tenant_table *tenants;
	struct mstats *stats;
	struct session *s;
	int fds[5];
	void *sub; /* the client's mapping of sub */
	uint64_t sub_bytes;
	struct ring sq, cq; /* the client's views */
};

static const char tenants_text[] = "t uid=0 quota=1G max-seqs=1 max-inflight=4\n";

static int open_session(struct fx *f, uint32_t wait_mode, uint32_t ring_entries)
{
	char err[256];
	struct session_opts o = {
	    .id = 7,
	    .daemon_epoch = 0x1234,
	    .client_name = "test",
	    .uid = 0,
	    .pid = 1,
	    .geom = {.n_layers = 2,
		     .n_kv_heads = 2,
		     .head_dim = 16,
		     .block_tokens = 8,
		     .dtype_bytes = 2,
		     .unit_bytes = 512},
	    .arena_bytes = 64 * 512,
	    .max_seqs = 4,
	    .wait_mode = wait_mode,
	    .ring_entries = ring_entries,
	    .unit_words = 4,
	};
	struct sp_sub_header *h;
	int r;

	o.tenant = tenant_find(f->tenants, "t");
	r = session_create(&o, &f->s, err, sizeof(err));
	if (r)
		return r;
	session_fds(f->s, f->fds);
	f->sub_bytes = session_sub_bytes(f->s);
	f->sub = mmap(NULL, f->sub_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->fds[1], 0);
	assert_true(f->sub != MAP_FAILED);
	h = f->sub;
	assert_int_equal(ring_attach(&f->sq, (uint8_t *)f->sub + h->sq_off, h->cq_off - h->sq_off,
				     sizeof(struct sp_sqe), f->fds[3]),
			 0);
	assert_int_equal(ring_attach(&f->cq, (uint8_t *)f->sub + h->cq_off,
				     f->sub_bytes - h->cq_off, sizeof(struct sp_cqe), f->fds[4]),
			 0);
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	assert_non_null(f);
	assert_int_equal(tenant_table_parse(tenants_text, "test", &f->tenants, err, sizeof(err)),
			 0);
	f->stats = mstats_new();
	assert_non_null(f->stats);
	assert_int_equal(open_session(f, SP_WAIT_SLEEP, 8), 0);
	*state = f;
	return 0;
}

static void close_session(struct fx *f)
{
	if (f->sub)
		munmap(f->sub, f->sub_bytes);
	f->sub = NULL;
	session_destroy(f->s);
	f->s = NULL;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	close_session(f);
	mstats_free(f->stats);
	tenant_table_free(f->tenants);
	free(f);
	return 0;
}

static void test_regions_and_seals(void **state)
{
	struct fx *f = *state;
	struct stat st;
	void *p;
	int seals;

	assert_int_equal(fstat(f->fds[2], &st), 0);
	assert_int_equal(st.st_size, 64 * 512);
	assert_int_equal(session_arena_size(f->s), 64 * 512);
	seals = fcntl(f->fds[0], F_GET_SEALS);
	assert_true(seals & F_SEAL_FUTURE_WRITE);
	assert_true(seals & F_SEAL_GROW);
	assert_true(seals & F_SEAL_SEAL);
	/* The client can map ctl read-only, never writable, and can resize nothing. */
	p = mmap(NULL, session_ctl_bytes(f->s), PROT_READ | PROT_WRITE, MAP_SHARED, f->fds[0], 0);
	assert_true(p == MAP_FAILED);
	p = mmap(NULL, session_ctl_bytes(f->s), PROT_READ, MAP_SHARED, f->fds[0], 0);
	assert_true(p != MAP_FAILED);
	const struct sp_ctl_header *h = p;
	assert_int_equal(h->magic, SP_SHM_MAGIC);
	assert_int_equal(h->session_id, 7);
	assert_int_equal(h->daemon_epoch, 0x1234);
	assert_int_equal(h->n_slots, 64);
	assert_int_equal(h->cq_off, 0);
	assert_int_equal(h->unit_words_cap, 65536); /* the floor */
	assert_int_equal(mprotect(p, 4096, PROT_READ | PROT_WRITE), -1);
	munmap(p, session_ctl_bytes(f->s));
	assert_int_equal(ftruncate(f->fds[2], 1 << 20), -1);
	assert_int_equal(ftruncate(f->fds[1], 1 << 20), -1);
	assert_int_equal(ftruncate(f->fds[0], 0), -1);
	assert_int_equal(fcntl(f->fds[2], F_ADD_SEALS, F_SEAL_WRITE), -1);
}

static void test_arena_size_rules(void **state)
{
	struct sp_geometry g = {.unit_bytes = 32768};
	uint64_t bytes;
	uint32_t n;

	assert_int_equal(session_arena_bytes(&g, 32767, false, &bytes, &n), -EINVAL);
	assert_int_equal(session_arena_bytes(&g, 100000, false, &bytes, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(bytes, 3 * 32768);
	assert_int_equal(session_arena_bytes(&g, 100000, true, &bytes, &n), 0);
	assert_int_equal(bytes, 2 << 20);
	assert_int_equal(n, 3);
}

/* Huge pages work when the machine has them; otherwise a clear refusal, never a crash. */
static void test_huge_pages(void **state)
{
	struct fx *f = *state;
	struct session_opts o = {.id = 8,
				 .tenant = tenant_find(f->tenants, "t"),
				 .geom = {.n_layers = 1,
					  .n_kv_heads = 1,
					  .head_dim = 16,
					  .block_tokens = 8,
					  .dtype_bytes = 2,
					  .unit_bytes = 512},
				 .ring_entries = 8,
				 .huge_pages = true};
	struct session *s = NULL;
	char err[256] = "";
	int r;

	assert_int_equal(session_arena_bytes(&o.geom, 4096, true, &o.arena_bytes, &(uint32_t){0}),
			 0);
	r = session_create(&o, &s, err, sizeof(err));
	if (r == 0) {
		assert_int_equal(session_arena_size(s), 2u << 20);
		session_destroy(s);
		return;
	}
	assert_true(r == -ENOMEM || r == -EOPNOTSUPP);
	assert_null(s);
	assert_non_null(strstr(err, "huge pages"));
}

static void count_progress(void *ctx)
{
	(*(int *)ctx)++;
}

/* A large arena is pre-faulted in chunks with a progress call after each (watchdog pings). */
static void test_prefault_progress(void **state)
{
	struct fx *f = *state;
	int calls = 0;
	struct session_opts o = {.id = 9,
				 .tenant = tenant_find(f->tenants, "t"),
				 .geom = {.n_layers = 1,
					  .n_kv_heads = 1,
					  .head_dim = 16,
					  .block_tokens = 8,
					  .dtype_bytes = 2,
					  .unit_bytes = 512},
				 .ring_entries = 8,
				 .prefault_chunk = 4u << 20,
				 .progress = count_progress,
				 .progress_ctx = &calls};
	struct session *s = NULL;
	char err[256] = "";
	struct stat st;
	int fds[5];

	assert_int_equal(session_arena_bytes(&o.geom, 18u << 20, false, &o.arena_bytes,
					     &(uint32_t){0}),
			 0);
	assert_int_equal(session_create(&o, &s, err, sizeof(err)), 0);
	assert_int_equal(calls, 5); /* 18 MiB in 4 MiB chunks */
	session_fds(s, fds);
	assert_int_equal(fstat(fds[2], &st), 0); /* every page of the arena is there */
	assert_true((uint64_t)st.st_blocks * 512 >= o.arena_bytes);
	session_destroy(s);
}

static struct sp_sqe sqe(uint16_t op, uint32_t id, uint32_t idx, uint32_t gen, uint32_t block,
			 uint64_t step)
{
	return (struct sp_sqe){.op = op,
			       .req_id = id,
			       .seq_index = idx,
			       .seq_gen = gen,
			       .layer = 1,
			       .head = 1,
			       .block = block,
			       .step = step};
}

static void test_ring_ops(void **state)
{
	struct fx *f = *state;
	struct sp_sqe in[4];
	struct sp_cqe out[8];
	uint32_t idx, gen;

	assert_int_equal(session_seq_open(f->s, 5, 4, &idx, &gen), 0);
	in[0] = sqe(SP_OP_ALLOC, 1, idx, gen, 2, 0);
	in[1] = sqe(SP_OP_COMMIT, 2, idx, gen, 2, 3);
	in[2] = sqe(SP_OP_FORECAST, 3, idx, gen, 2, 4);
	in[3] = sqe(SP_OP_FORECAST, 4, idx, gen, 3, 4); /* never written: a miss */
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	assert_int_equal(ring_pop(&f->cq, out, 8), 4);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(out[i].req_id, i + 1);
		assert_int_equal(out[i].status, 0);
		assert_int_equal(out[i].slot, out[0].slot);
		assert_int_equal(out[i].block, 2);
		assert_int_equal(out[i].layer, 1);
	}
	assert_int_equal(out[3].status, -ENOENT);
	assert_int_equal(out[3].slot, SP_UNIT_SLOT_NONE);
	/* Bad ids and an unknown op each get their own answer; nothing else changes. */
	in[0] = sqe(SP_OP_FREE, 5, idx, gen + 1, 2, 0);
	in[1] = sqe(SP_OP_ALLOC, 6, idx, gen, 4, 0);
	in[2] = sqe(99, 7, idx, gen, 0, 0);
	in[3] = sqe(SP_OP_FREE, 8, idx, gen, 2, 0);
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	assert_int_equal(ring_pop(&f->cq, out, 8), 4);
	assert_int_equal(out[0].status, -ESTALE);
	assert_int_equal(out[1].status, -EINVAL);
	assert_int_equal(out[2].status, -EINVAL);
	assert_int_equal(out[3].status, 0);
	assert_int_equal(mstats_requests(f->stats, MSTATS_PATH_SHM, WIRE_FORECAST), 2);
	assert_int_equal(mstats_errors(f->stats, MSTATS_ERR_STALE), 1);
	assert_int_equal(mstats_errors(f->stats, MSTATS_ERR_MISS), 1);
}

/* A vectored FORECAST: answers in the area, one CQE; ranges outside the area are -EINVAL. */
static void test_vector_forecast(void **state)
{
	struct fx *f = *state;
	struct sp_sub_header *h = f->sub;
	struct sp_vec_entry *v = (struct sp_vec_entry *)((uint8_t *)f->sub + h->vec_off);
	struct sp_sqe in[4];
	struct sp_cqe out[8];
	uint32_t idx, gen, slot, ugen;

	assert_int_equal(h->vec_entries, 8); /* as many entries as the SQ */
	assert_true(h->vec_off % SP_CACHELINE == 0);
	assert_true(h->vec_off + 8 * sizeof(*v) <= f->sub_bytes);
	assert_int_equal(session_seq_open(f->s, 5, 4, &idx, &gen), 0);
	in[0] = sqe(SP_OP_ALLOC, 1, idx, gen, 2, 0);
	in[1] = sqe(SP_OP_COMMIT, 2, idx, gen, 2, 3);
	assert_int_equal(ring_push(&f->sq, in, 2), 2);
	assert_int_equal(hotpath_serve(f->s, f->stats), 2);
	assert_int_equal(ring_pop(&f->cq, out, 8), 2);
	slot = out[1].slot;
	ugen = out[1].gen;
	/* entries 5, 6, 7: resident (layer 1 head 1 block 2), never written, out of range */
	memset(v, 0x5a, 8 * sizeof(*v));
	v[5] = (struct sp_vec_entry){.layer = 1, .head = 1, .block = 2};
	v[6] = (struct sp_vec_entry){.layer = 1, .head = 1, .block = 3};
	v[7] = (struct sp_vec_entry){.layer = 1, .head = 0, .block = 4};
	in[0] = (struct sp_sqe){.op = SP_OP_FORECAST_VEC, .flags = SP_SQE_F_LAST, .req_id = 9,
				.seq_index = idx, .seq_gen = gen, .head = 3, .block = 5, .step = 4};
	assert_int_equal(ring_push(&f->sq, in, 1), 1);
	assert_int_equal(hotpath_serve(f->s, f->stats), 1);
	assert_int_equal(ring_pop(&f->cq, out, 8), 1);
	assert_int_equal(out[0].op, SP_OP_FORECAST_VEC);
	assert_int_equal(out[0].status, 0);
	assert_int_equal(out[0].req_id, 9);
	assert_int_equal(out[0].block, 5);
	assert_int_equal(out[0].head, 3);
	assert_int_equal(v[5].slot, slot);
	assert_int_equal(sp_vec_status(v[5].gen_err), 0);
	assert_int_equal(sp_vec_gen(v[5].gen_err), ugen);
	assert_int_equal(sp_vec_status(v[6].gen_err), -ENOENT);
	assert_int_equal(v[6].slot, SP_UNIT_SLOT_NONE);
	assert_int_equal(sp_vec_status(v[7].gen_err), -EINVAL);
	assert_int_equal(v[7].block, 4); /* memsvc writes only the answer fields */
	assert_int_equal(mstats_errors(f->stats, MSTATS_ERR_MISS), 1);
	assert_int_equal(mstats_errors(f->stats, MSTATS_ERR_INVALID), 1);
	/* Ranges past the area, empty ones and a non-zero layer: -EINVAL, nothing answered. */
	v[0] = (struct sp_vec_entry){.layer = 1, .head = 1, .block = 2};
	in[0].block = 6, in[0].head = 3;   /* 6 + 3 > 8 */
	in[1] = in[0], in[1].block = 8, in[1].head = 1;
	in[2] = in[0], in[2].block = 0, in[2].head = 0;
	in[3] = in[0], in[3].block = 0, in[3].head = 1, in[3].layer = 1;
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	assert_int_equal(ring_pop(&f->cq, out, 8), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(out[i].status, -EINVAL);
	assert_int_equal(v[0].slot, 0); /* not answered */
	/* The session still serves. */
	in[0].block = 0, in[0].head = 1;
	assert_int_equal(ring_push(&f->sq, in, 1), 1);
	assert_int_equal(hotpath_serve(f->s, f->stats), 1);
	assert_int_equal(ring_pop(&f->cq, out, 8), 1);
	assert_int_equal(out[0].status, 0);
	assert_int_equal(v[0].slot, slot);
	/* gen_err's status field: errnos past 255 become -EIO */
	assert_int_equal(sp_vec_status(sp_vec_gen_err(7, -ENOENT)), -ENOENT);
	assert_int_equal(sp_vec_gen(sp_vec_gen_err(0x1234567, -ENOENT)), 0x234567);
	assert_int_equal(sp_vec_status(sp_vec_gen_err(7, -300)), -EIO);
	assert_int_equal(sp_vec_status(sp_vec_gen_err(7, 0)), 0);
}

static void test_limits_and_backpressure(void **state)
{
	struct fx *f = *state;
	struct tenant *tn = tenant_find(f->tenants, "t");
	struct tenant_usage u;
	struct sp_sqe in[8];
	struct sp_cqe out[8];
	uint32_t idx, gen, i2, g2;

	assert_int_equal(session_seq_open(f->s, 5, 4, &idx, &gen), 0);
	assert_int_equal(session_seq_open(f->s, 6, 4, &i2, &g2), -EDQUOT); /* max-seqs=1 */
	/* max-inflight=4: a batch of 5 is refused as a whole with -EBUSY. */
	for (uint32_t i = 0; i < 5; i++)
		in[i] = sqe(SP_OP_ALLOC, i, idx, gen, i % 4, 0);
	assert_int_equal(ring_push(&f->sq, in, 5), 5);
	assert_int_equal(hotpath_serve(f->s, f->stats), 5);
	assert_int_equal(ring_pop(&f->cq, out, 8), 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(out[i].status, -EBUSY);
	tenant_get_usage(tn, &u);
	assert_int_equal(u.inflight, 0);
	/* CQ of 8: a full CQ stops the consumer until the client reaps. */
	for (uint32_t i = 0; i < 8; i++)
		in[i] = sqe(SP_OP_FORECAST, i, idx, gen, 0, 0);
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	assert_int_equal(ring_push(&f->sq, in, 4), 4);
	assert_int_equal(hotpath_serve(f->s, f->stats), 0);
	assert_int_equal(ring_pop(&f->cq, out, 8), 8);
	assert_int_equal(hotpath_serve(f->s, f->stats), 4);
	/* Closing the session gives the tenant its sequence back. */
	close_session(f);
	tenant_get_usage(tn, &u);
	assert_int_equal(u.seqs, 0);
}

/* Push one FORECAST of a missing unit and wait for its answer through the threads. */
static void round_trip(struct fx *f)
{
	struct sp_sqe in = sqe(SP_OP_FORECAST, 42, 0, 1, 0, 0);
	struct sp_cqe out;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(ring_push(&f->sq, &in, 1), 1);
		assert_int_equal(ring_doorbell(&f->sq), 0);
		assert_int_equal(ring_wait(&f->cq, 0, 5000000000ull), 0);
		assert_int_equal(ring_pop(&f->cq, &out, 1), 1);
		assert_int_equal(out.req_id, 42);
		assert_int_equal(out.status, -ESTALE); /* no sequence open */
		usleep(20000); /* let a sleeping consumer really go to sleep */
	}
}

static void test_threads(void **state)
{
	struct fx *f = *state;
	struct hotpath_opts ho = {.spin_ns = 1000, .stats = f->stats};
	struct hotpath *hp;

	assert_int_equal(hotpath_open(&ho, &hp), 0);
	assert_int_equal(hotpath_add(hp, f->s), 0);
	round_trip(f);
	hotpath_remove(hp, f->s);
	close_session(f);
	assert_int_equal(open_session(f, SP_WAIT_POLL, 8), 0);
	assert_int_equal(hotpath_add(hp, f->s), 0);
	round_trip(f);
	hotpath_remove(hp, f->s);
	hotpath_free(hp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_regions_and_seals, setup, teardown),
	    cmocka_unit_test(test_arena_size_rules),
	    cmocka_unit_test_setup_teardown(test_huge_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prefault_progress, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ring_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vector_forecast, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits_and_backpressure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
