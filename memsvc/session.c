/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Session regions: memfds sized, sealed and pre-faulted, headers and rings formatted, and the
 * per-session lock around the store. The client maps ctl read-only (F_SEAL_FUTURE_WRITE is
 * added once memsvc holds its writable mapping), so the index it reads is ours alone to write.
 */
#include "session_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "err.h"
#include "tenant.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

#define HUGE_PAGE (2ull << 20)
#define MIN_UNIT_WORDS 65536ull
#define MAX_UNIT_WORDS (1ull << 26)

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int session_arena_bytes(const struct sp_geometry *g, uint64_t want, bool huge, uint64_t *arena,
			uint32_t *n_slots)
{
	uint64_t n;

	if (!g->unit_bytes)
		return -EINVAL;
	n = want / g->unit_bytes;
	if (n == 0 || n >= SP_UNIT_SLOT_NONE)
		return -EINVAL;
	*n_slots = (uint32_t)n;
	*arena = n * g->unit_bytes;
	if (huge)
		*arena = align_up(*arena, HUGE_PAGE);
	return 0;
}

static int memfd_sized(const char *name, uint64_t bytes, unsigned flags, int *out)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);
	int r;

	if (fd < 0)
		return err_from_errno();
	if (ftruncate(fd, (off_t)bytes) < 0) {
		r = err_from_errno();
		close(fd);
		return r;
	}
	*out = fd;
	return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
#define PREFAULT_THREADS 8 /* the kernel zeroes new pages at about one core's rate each */

/* Chunks of one mapping handed out to the threads that populate it. */
struct pf_work {
	uint8_t *base;
	uint64_t bytes, chunk;
	_Atomic uint64_t next, done;
	_Atomic int err; /* the first -errno */
};

/* Populate chunks until none is left or one failed; returns after its own chunk when one. */
static void pf_chunks(struct pf_work *w, bool one)
{
	while (!atomic_load(&w->err)) {
		uint64_t off = atomic_fetch_add(&w->next, w->chunk);
		uint64_t len;

		if (off >= w->bytes)
			return;
		len = w->bytes - off < w->chunk ? w->bytes - off : w->chunk;
		if (madvise(w->base + off, len, MADV_POPULATE_WRITE) != 0) {
			int e = err_from_errno(), z = 0;
			atomic_compare_exchange_strong(&w->err, &z, e);
			return;
		}
		atomic_fetch_add(&w->done, 1);
		if (one)
			return;
	}
}

static void *pf_main(void *arg)
{
	pf_chunks(arg, false);
	return NULL;
}

/* The calling thread works too and calls progress once per finished chunk, whoever did it. */
static int prefault_parallel(struct pf_work *w, const struct session_opts *o)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t chunks = (w->bytes + w->chunk - 1) / w->chunk, reported = 0;
	pthread_t th[PREFAULT_THREADS - 1];
	int n = 0;

	for (; n < PREFAULT_THREADS - 1 && n + 1 < cpus && (uint64_t)n + 1 < chunks; n++)
		if (pthread_create(&th[n], NULL, pf_main, w))
			break; /* fewer helpers: still correct */
	for (;;) {
		uint64_t done;
		pf_chunks(w, true);
		done = atomic_load(&w->done);
		for (; o->progress && reported < done; reported++)
			o->progress(o->progress_ctx);
		if (atomic_load(&w->err) || atomic_load(&w->next) >= w->bytes)
			break;
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (; o->progress && reported < atomic_load(&w->done); reported++)
		o->progress(o->progress_ctx);
	return atomic_load(&w->err);
}

/*
 * Allocate every page now: first touch is slow in VMs, and a short machine fails here. Through
 * a mapping with MADV_POPULATE_WRITE from up to PREFAULT_THREADS threads; kernels without it
 * fallocate chunk by chunk (hugetlbfs: touched through a mapping). Chunks of prefault_chunk
 * with a progress call after each (see struct session_opts).
 */
static int prefault(int fd, uint64_t bytes, const struct session_opts *o)
{
	uint64_t chunk = o->prefault_chunk ? o->prefault_chunk : (1ull << 30);
	struct pf_work w = {.bytes = bytes, .chunk = chunk};
	bool use_mmap = false;
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int r;

	if (p == MAP_FAILED)
		return err_from_errno();
	w.base = p;
	r = prefault_parallel(&w, o);
	munmap(p, bytes);
	if (r != -EINVAL || atomic_load(&w.done))
		return r == -EFAULT ? -ENOMEM : r; /* EFAULT: a page could not be had (hugetlb) */
	for (uint64_t off = 0; off < bytes; off += chunk) { /* no MADV_POPULATE_WRITE */
		uint64_t len = bytes - off < chunk ? bytes - off : chunk;
		if (!use_mmap && fallocate(fd, 0, (off_t)off, (off_t)len) != 0) {
			if (errno == ENOSPC || errno == ENOMEM)
				return -ENOMEM;
			if (errno != EOPNOTSUPP)
				return err_from_errno();
			use_mmap = true; /* e.g. hugetlbfs: touch the pages through a mapping */
		}
		if (use_mmap) {
			p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
				 (off_t)off);
			if (p == MAP_FAILED)
				return err_from_errno();
			munmap(p, len);
		}
		if (o->progress)
			o->progress(o->progress_ctx);
	}
	return 0;
}

static int map_rw(int fd, uint64_t bytes, void **out)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);

	if (p == MAP_FAILED)
		return err_from_errno();
	*out = p;
	return 0;
}

static void fail(char *err, size_t len, const char *step, int r)
{
	snprintf(err, len, "session: %s: %s", step, err_str(r));
}

/* ctl: header | sequence table | unit-word pool. The CQ lives in sub (cq_off = 0). */
static int ctl_create(struct session *s, char *err, size_t err_len)
{
	uint64_t seq_off = align_up(sizeof(struct sp_ctl_header), SP_CACHELINE);
	uint64_t pool_off =
	    align_up(seq_off + (uint64_t)s->o.max_seqs * sizeof(struct sp_seq_desc), SP_CACHELINE);
	struct sp_ctl_header *h;
	int r;

	s->ctl_bytes = align_up(pool_off + s->unit_words_cap * sizeof(uint64_t), 4096);
	r = memfd_sized("sparda-ctl", s->ctl_bytes, 0, &s->ctl_fd);
	if (!r)
		r = map_rw(s->ctl_fd, s->ctl_bytes, &s->ctl);
	if (r) {
		fail(err, err_len, "ctl memfd", r);
		return r;
	}
	h = s->ctl_hdr = s->ctl;
	*h = (struct sp_ctl_header){
	    .magic = SP_SHM_MAGIC,
	    .layout_version = SP_SHM_LAYOUT_VERSION,
	    .header_bytes = sizeof(*h),
	    .daemon_epoch = s->o.daemon_epoch,
	    .session_id = s->o.id,
	    .geom = s->o.geom,
	    .wait_mode = s->o.wait_mode,
	    .max_seqs = s->o.max_seqs,
	    .ctl_bytes = s->ctl_bytes,
	    .arena_bytes = s->o.arena_bytes,
	    .n_slots = s->n_slots,
	    .unit_words_cap = s->unit_words_cap,
	    .seq_table_off = seq_off,
	    .unit_pool_off = pool_off,
	    .cq_off = 0,
	};
	return 0;
}

static int ctl_seal(struct session *s, char *err, size_t err_len)
{
	int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL;

	if (fcntl(s->ctl_fd, F_ADD_SEALS, seals) < 0) {
		int r = err_from_errno();
		fail(err, err_len, "sealing ctl", r);
		return r;
	}
	return 0;
}

/* sub: header | SQ ring | CQ ring | vector area (as many entries as the SQ). */
static int sub_create(struct session *s, char *err, size_t err_len)
{
	uint32_t n = s->o.ring_entries;
	uint64_t sq_off = align_up(sizeof(struct sp_sub_header), SP_CACHELINE);
	uint64_t cq_off = align_up(sq_off + ring_bytes(n, sizeof(struct sp_sqe)), SP_CACHELINE);
	uint64_t vec_off = align_up(cq_off + ring_bytes(n, sizeof(struct sp_cqe)), SP_CACHELINE);
	uint64_t end = vec_off + (uint64_t)n * sizeof(struct sp_vec_entry);
	struct sp_sub_header *h;
	uint8_t *base;
	int r;

	s->sub_bytes = align_up(end, 4096);
	r = memfd_sized("sparda-sub", s->sub_bytes, 0, &s->sub_fd);
	if (!r)
		r = map_rw(s->sub_fd, s->sub_bytes, &s->sub);
	if (!r && fcntl(s->sub_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		r = err_from_errno();
	if (r) {
		fail(err, err_len, "sub memfd", r);
		return r;
	}
	base = s->sub;
	h = s->sub_hdr = s->sub;
	memset(h, 0, sizeof(*h));
	h->magic = SP_SHM_MAGIC;
	h->layout_version = SP_SHM_LAYOUT_VERSION;
	h->header_bytes = sizeof(*h);
	h->daemon_epoch = s->o.daemon_epoch;
	h->sq_off = sq_off;
	h->cq_off = cq_off;
	h->vec_off = vec_off;
	h->vec_entries = n;
	s->vec = (struct sp_vec_entry *)(base + vec_off);
	s->vec_entries = n;
	atomic_store_explicit(&h->client_epoch, 0, memory_order_relaxed);
	r = ring_format(base + sq_off, n, sizeof(struct sp_sqe));
	if (!r)
		r = ring_format(base + cq_off, n, sizeof(struct sp_cqe));
	if (!r)
		r = ring_attach(&s->sq, base + sq_off, cq_off - sq_off, sizeof(struct sp_sqe),
				s->sq_bell);
	if (!r)
		r = ring_attach(&s->cq, base + cq_off, vec_off - cq_off, sizeof(struct sp_cqe),
				s->cq_bell);
	if (r)
		fail(err, err_len, "formatting rings", r);
	return r;
}

static int arena_create(struct session *s, char *err, size_t err_len)
{
	unsigned flags = s->o.huge_pages ? MFD_HUGETLB : 0;
	int r = memfd_sized("sparda-arena", s->o.arena_bytes, flags, &s->arena_fd);

	if (r) {
		if (s->o.huge_pages && (r == -EINVAL || r == -ENOENT))
			r = -EOPNOTSUPP;
		fail(err, err_len, s->o.huge_pages ? "arena memfd (huge pages)" : "arena memfd", r);
		return r;
	}
	r = prefault(s->arena_fd, s->o.arena_bytes, &s->o);
	if (!r && fcntl(s->arena_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		r = err_from_errno();
	if (r)
		fail(err, err_len,
		     s->o.huge_pages ? "arena pre-fault on huge pages (HugePages_Free too low?)"
				     : "arena pre-fault/seal",
		     r);
	return r;
}

static int store_create(struct session *s, char *err, size_t err_len)
{
	const struct sp_ctl_header *h = s->ctl_hdr;
	struct store_opts so = {
	    .geom = s->o.geom,
	    .max_seqs = s->o.max_seqs,
	    .unit_words_cap = s->unit_words_cap,
	    .n_slots = s->n_slots,
	    .seqs = (struct sp_seq_desc *)((uint8_t *)s->ctl + h->seq_table_off),
	    .units = (_Atomic uint64_t *)((uint8_t *)s->ctl + h->unit_pool_off),
	    .units_ctl_off = h->unit_pool_off,
	    .client_epoch = &s->sub_hdr->client_epoch,
	    .tiered = s->o.tiered,
	    .high_slots = (uint32_t)(s->n_slots * s->o.high_water),
	    .low_slots = (uint32_t)(s->n_slots * s->o.low_water),
	};
	int r = store_open(&so, &s->store);

	if (r)
		fail(err, err_len, "store", r);
	return r;
}

/* The tier reads and writes unit bytes through memsvc's own mapping of the arena. */
static int tier_create(struct session *s, char *err, size_t err_len)
{
	int r = session_arena_map(s);

	s->max_deferred = 4 * s->o.ring_entries;
	s->waiters = r ? NULL : calloc(s->max_deferred, sizeof(*s->waiters));
	s->outbox = r ? NULL : calloc(s->max_deferred, sizeof(*s->outbox));
	if (!r && (!s->waiters || !s->outbox))
		r = -ENOMEM;
	if (r)
		fail(err, err_len, "tier buffers", r);
	return r;
}

static int opts_check(struct session *s, char *err, size_t err_len)
{
	uint64_t words;
	uint64_t arena;

	if (!s->o.max_seqs)
		s->o.max_seqs = SESSION_DEFAULT_SEQS;
	if (s->o.max_seqs > 65536 || s->o.wait_mode > SP_WAIT_POLL || s->o.ring_entries < 2 ||
	    (s->o.ring_entries & (s->o.ring_entries - 1)) ||
	    session_arena_bytes(&s->o.geom, s->o.arena_bytes, s->o.huge_pages, &arena,
				&s->n_slots) ||
	    arena != s->o.arena_bytes ||
	    (s->o.tiered &&
	     !(s->o.low_water >= 0 && s->o.low_water <= s->o.high_water && s->o.high_water <= 1))) {
		snprintf(err, err_len, "session: bad options (max_seqs, wait_mode, ring or arena)");
		return -EINVAL;
	}
	words = (uint64_t)s->n_slots * (s->o.unit_words ? s->o.unit_words : 4);
	if (words < MIN_UNIT_WORDS)
		words = MIN_UNIT_WORDS;
	s->unit_words_cap = words > MAX_UNIT_WORDS ? MAX_UNIT_WORDS : words;
	return 0;
}

int session_create(const struct session_opts *o, struct session **out, char *err, size_t err_len)
{
	struct session *s = calloc(1, sizeof(*s));
	int r;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->o = *o;
	snprintf(s->client_name, sizeof(s->client_name), "%s",
		 o->client_name ? o->client_name : "");
	s->o.client_name = s->client_name;
	s->ctl_fd = s->sub_fd = s->arena_fd = s->sq_bell = s->cq_bell = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->cq_lock, NULL);
	r = opts_check(s, err, err_len);
	if (r)
		goto out_destroy;
	if (getrandom(s->token, sizeof(s->token), 0) != (ssize_t)sizeof(s->token)) {
		r = -EIO;
		fail(err, err_len, "token", r);
		goto out_destroy;
	}
	s->sq_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->cq_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->sq_bell < 0 || s->cq_bell < 0) {
		r = err_from_errno();
		fail(err, err_len, "eventfd", r);
		goto out_destroy;
	}
	r = ctl_create(s, err, err_len);
	if (!r)
		r = sub_create(s, err, err_len);
	if (!r)
		r = store_create(s, err, err_len);
	if (!r)
		r = ctl_seal(s, err, err_len);
	if (!r)
		r = arena_create(s, err, err_len);
	if (!r && s->o.tiered)
		r = tier_create(s, err, err_len);
	if (r)
		goto out_destroy;
	*out = s;
	return 0;
out_destroy:
	session_destroy(s);
	return r;
}

void session_destroy(struct session *s)
{
	if (!s)
		return;
	int *fds[] = {&s->ctl_fd, &s->sub_fd, &s->arena_fd, &s->sq_bell, &s->cq_bell};
	if (s->ctl_hdr)
		session_mark_closing(s);
	for (uint64_t i = 0; i < s->seqs_open; i++)
		tenant_seq_release(s->o.tenant);
	store_free(s->store);
	if (s->ctl)
		munmap(s->ctl, s->ctl_bytes);
	if (s->sub)
		munmap(s->sub, s->sub_bytes);
	if (s->arena)
		munmap(s->arena, s->o.arena_bytes);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->cq_lock);
	free(s->waiters);
	free(s->outbox);
	free(s);
}

void session_fds(const struct session *s, int fds[5])
{
	fds[0] = s->ctl_fd;
	fds[1] = s->sub_fd;
	fds[2] = s->arena_fd;
	fds[3] = s->sq_bell;
	fds[4] = s->cq_bell;
}

uint64_t session_id(const struct session *s)
{
	return s->o.id;
}
const uint8_t *session_token(const struct session *s)
{
	return s->token;
}
struct tenant *session_tenant(const struct session *s)
{
	return s->o.tenant;
}
uid_t session_uid(const struct session *s)
{
	return s->o.uid;
}
pid_t session_pid(const struct session *s)
{
	return s->o.pid;
}
const char *session_client_name(const struct session *s)
{
	return s->client_name;
}
uint32_t session_wait_mode(const struct session *s)
{
	return s->o.wait_mode;
}
uint64_t session_arena_size(const struct session *s)
{
	return s->o.arena_bytes;
}
uint32_t session_max_seqs(const struct session *s)
{
	return s->o.max_seqs;
}
uint64_t session_ctl_bytes(const struct session *s)
{
	return s->ctl_bytes;
}
uint64_t session_sub_bytes(const struct session *s)
{
	return s->sub_bytes;
}
uint64_t session_unit_words_cap(const struct session *s)
{
	return s->unit_words_cap;
}
const struct sp_geometry *session_geometry(const struct session *s)
{
	return &s->o.geom;
}
struct ring *session_sq(struct session *s)
{
	return &s->sq;
}
struct ring *session_cq(struct session *s)
{
	return &s->cq;
}

bool session_token_ok(const struct session *s, const uint8_t *token)
{
	uint8_t diff = 0;

	for (size_t i = 0; i < SESSION_TOKEN_BYTES; i++)
		diff |= s->token[i] ^ token[i];
	return diff == 0;
}

void session_mark_closing(struct session *s)
{
	/* Release: pairs with the client's acquire load before it trusts the regions. */
	atomic_store_explicit(&s->ctl_hdr->closing, 1, memory_order_release);
}

int session_seq_open(struct session *s, uint64_t user_key, uint32_t max_blocks, uint32_t *seq_index,
		     uint32_t *seq_gen)
{
	int r = tenant_seq_acquire(s->o.tenant);

	if (r)
		return r;
	pthread_mutex_lock(&s->lock);
	r = store_seq_open(s->store, user_key, max_blocks, seq_index, seq_gen);
	if (!r)
		s->seqs_open++;
	pthread_mutex_unlock(&s->lock);
	if (r)
		tenant_seq_release(s->o.tenant);
	return r;
}

int session_seq_close(struct session *s, uint32_t seq_index, uint32_t seq_gen)
{
	int r;

	pthread_mutex_lock(&s->lock);
	r = store_seq_close(s->store, seq_index, seq_gen);
	if (!r)
		s->seqs_open--;
	pthread_mutex_unlock(&s->lock);
	if (!r)
		tenant_seq_release(s->o.tenant);
	return r;
}

int session_units_apply(struct session *s, enum sp_op op, const struct store_unit_id *ids,
			uint32_t n, uint64_t step, int32_t *status, uint32_t *slot, uint32_t *gen)
{
	if (op != SP_OP_ALLOC && op != SP_OP_COMMIT && op != SP_OP_FREE && op != SP_OP_FORECAST)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < n; i++) {
		switch (op) {
		case SP_OP_ALLOC:
			status[i] = store_unit_alloc(s->store, &ids[i], &slot[i], &gen[i]);
			break;
		case SP_OP_COMMIT:
			status[i] = store_unit_commit(s->store, &ids[i], step, &slot[i], &gen[i]);
			break;
		case SP_OP_FREE:
			status[i] = store_unit_free(s->store, &ids[i], &slot[i], &gen[i]);
			break;
		default:
			status[i] = store_unit_forecast(s->store, &ids[i], step, &slot[i], &gen[i]);
			if (status[i] == -EINPROGRESS)
				status[i] = -EAGAIN; /* restore started: ask again */
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	session_tier_kick(s);
	return 0;
}

int32_t session_sqe_apply_locked(struct session *s, const struct sp_sqe *e, uint32_t *slot,
				 uint32_t *gen)
{
	struct store_unit_id u = {e->seq_index, e->seq_gen, e->layer, e->head, e->block};

	switch (e->op) {
	case SP_OP_FORECAST:
		return store_unit_forecast(s->store, &u, e->step, slot, gen);
	case SP_OP_COMMIT:
		return store_unit_commit(s->store, &u, e->step, slot, gen);
	case SP_OP_ALLOC:
		return store_unit_alloc(s->store, &u, slot, gen);
	case SP_OP_FREE:
		return store_unit_free(s->store, &u, slot, gen);
	default:
		return -EINVAL;
	}
}

int session_arena_map(struct session *s)
{
	void *p;

	if (s->arena)
		return 0;
	p = mmap(NULL, s->o.arena_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, s->arena_fd, 0);
	if (p == MAP_FAILED)
		return err_from_errno();
	s->arena = p;
	return 0;
}

void session_units_read(struct session *s, const struct store_unit_id *ids, uint32_t n,
			uint64_t step, int32_t *status, uint32_t *slot, uint32_t *gen, uint8_t *out)
{
	size_t ub = s->o.geom.unit_bytes;

	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < n; i++) {
		status[i] = s->arena
				? store_unit_forecast(s->store, &ids[i], step, &slot[i], &gen[i])
				: -EIO;
		if (status[i] == -EINPROGRESS)
			status[i] = -EAGAIN; /* restore started: ask again */
		if (!status[i])
			memcpy(out + i * ub, s->arena + (size_t)slot[i] * ub, ub);
		else
			memset(out + i * ub, 0, ub);
	}
	pthread_mutex_unlock(&s->lock);
	session_tier_kick(s);
}

void session_units_write(struct session *s, const struct store_unit_id *ids, uint32_t n,
			 const uint8_t *in, int32_t *status, uint32_t *slot, uint32_t *gen)
{
	size_t ub = s->o.geom.unit_bytes;
	enum sp_unit_state st;

	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < n; i++) {
		status[i] =
		    s->arena ? store_unit_lookup(s->store, &ids[i], &st, &slot[i], &gen[i]) : -EIO;
		if (status[i])
			continue;
		if (st != SP_UNIT_ALLOCATED) {
			status[i] = st == SP_UNIT_EMPTY ? -ENOENT : -EEXIST;
			continue;
		}
		memcpy(s->arena + (size_t)slot[i] * ub, in + i * ub, ub);
	}
	pthread_mutex_unlock(&s->lock);
}

void session_reclaim(struct session *s)
{
	pthread_mutex_lock(&s->lock);
	store_reclaim(s->store);
	pthread_mutex_unlock(&s->lock);
}

void session_get_stats(struct session *s, struct store_stats *st)
{
	pthread_mutex_lock(&s->lock);
	store_get_stats(s->store, st);
	pthread_mutex_unlock(&s->lock);
}
