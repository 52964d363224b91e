/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc client: the attach exchange (Hello over attach.sock, five descriptors back), mapping
 * and checking the session's regions, session health, and direct reads of residency words.
 * Control requests are in client_zmq.c, the ring hot path in client_ring.c.
 */
#include "client_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdpass.h"
#include "timeutil.h"

#define ATTACH_REPLY_CAP 4096

enum { FD_CTL, FD_SUB, FD_ARENA, FD_SQ_DB, FD_CQ_DB, FD_COUNT };

int memclient_default_runtime_dir(char *buf, size_t len)
{
	const char *env = getenv("SPARDA_RUNTIME_DIR");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if (xdg && *xdg)
		n = snprintf(buf, len, "%s/sparda", xdg);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/run/sparda");
	else
		n = snprintf(buf, len, "/tmp/sparda-%u", (unsigned)geteuid());
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

uint64_t memclient_deadline(const struct memclient *c, int timeout_ms)
{
	if (timeout_ms < 0)
		timeout_ms = c->timeout_ms;
	return time_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int memclient_set_dead(struct memclient *c, int err)
{
	if (!c->dead)
		c->dead = err;
	return c->dead;
}

static int health(struct memclient *c, bool socket)
{
	struct pollfd pfd = {.fd = c->attach_fd, .events = POLLRDHUP};

	if (c->dead || c->remote)
		return c->dead;
	/* Acquire: pairs with memsvc's release store when it starts tearing the session down. */
	if (atomic_load_explicit(&c->ctl_hdr->closing, memory_order_acquire))
		return memclient_set_dead(c, -ESHUTDOWN);
	if (!socket)
		return 0;
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)))
		return memclient_set_dead(c, -ECONNRESET);
	return 0;
}

int memclient_health(struct memclient *c)
{
	return health(c, true);
}

int memclient_health_recent(struct memclient *c)
{
	uint64_t now = time_now_ns();
	bool socket = now - c->socket_check_ns >= MEMCLIENT_SOCKET_CHECK_NS;

	if (socket)
		c->socket_check_ns = now;
	return health(c, socket);
}

int memclient_geometry_fill(struct sp_geometry *g)
{
	uint64_t ub;

	if (!g->n_layers || !g->n_kv_heads || !g->head_dim || !g->block_tokens || !g->dtype_bytes)
		return -EINVAL;
	ub = 2ull * g->block_tokens * g->head_dim * g->dtype_bytes;
	if (ub > SP_MAX_UNIT_BYTES || (g->unit_bytes && g->unit_bytes != ub))
		return -EINVAL;
	g->unit_bytes = (uint32_t)ub;
	return 0;
}

static int send_hello(struct memclient *c, const struct memclient_opts *o)
{
	struct wire_request rq = {0};
	void *buf = NULL;
	size_t len = 0;
	int rc;

	rq.protocol_version = SP_PROTOCOL_VERSION;
	rq.request_id = ++c->next_zmq_id;
	rq.kind = WIRE_HELLO;
	snprintf(rq.u.hello.tenant, sizeof(rq.u.hello.tenant), "%s",
		 o->tenant ? o->tenant : "default");
	snprintf(rq.u.hello.client_name, sizeof(rq.u.hello.client_name), "%s",
		 o->client_name ? o->client_name : "memclient");
	rq.u.hello.arena_bytes = o->arena_bytes;
	rq.u.hello.geom = c->geom;
	rq.u.hello.wait_mode = o->wait_mode;
	rq.u.hello.max_seqs = o->max_seqs;
	rc = wire_request_pack(&rq, &buf, &len);
	if (rc)
		return rc;
	rc = fdpass_send(c->attach_fd, buf, len, NULL, 0);
	free(buf);
	return rc == -EPIPE ? -ECONNRESET : rc; /* the daemon closed on us */
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* Receive the HelloReply and its descriptors; on 0 fds[] holds FD_COUNT open descriptors. */
static int recv_hello(struct memclient *c, struct wire_reply *rp, int *fds)
{
	char err[WIRE_ERROR_MAX];
	void *buf = malloc(ATTACH_REPLY_CAP);
	int n_fds = 0, rc;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	n = fdpass_recv(c->attach_fd, buf, ATTACH_REPLY_CAP, fds, FD_COUNT, &n_fds,
			c->attach_timeout_ms);
	if (n <= 0) {
		rc = n == 0 ? -ECONNRESET : (int)n;
		goto out_free;
	}
	rc = wire_reply_unpack(buf, (size_t)n, rp, err, sizeof(err));
	if (rc) {
		snprintf(c->last_error, sizeof(c->last_error), "attach reply: %s", err);
		goto out_close;
	}
	if (rp->status) {
		snprintf(c->last_error, sizeof(c->last_error), "%s", rp->error);
		rc = rp->status < 0 ? rp->status : -EPROTO;
		goto out_fini;
	}
	if (rp->kind != WIRE_HELLO || n_fds != FD_COUNT) {
		snprintf(c->last_error, sizeof(c->last_error), "attach reply: kind %d, %d fds",
			 (int)rp->kind, n_fds);
		rc = -EPROTO;
		goto out_fini;
	}
	free(buf);
	return 0;
out_fini:
	wire_reply_fini(rp);
out_close:
	close_fds(fds, FD_COUNT);
out_free:
	free(buf);
	return rc;
}

static int map_fd(int fd, size_t bytes, int prot, void **out)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) < 0)
		return err_from_errno();
	if (bytes == 0 || (uint64_t)st.st_size != bytes)
		return -EPROTO;
	p = mmap(NULL, bytes, prot, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return err_from_errno();
	*out = p;
	return 0;
}

static bool range_fits(uint64_t off, uint64_t len, uint64_t total)
{
	return off <= total && len <= total - off;
}

static int check_ctl(struct memclient *c)
{
	const struct sp_ctl_header *h = c->ctl_hdr;

	if (c->ctl_bytes < sizeof(*h) || h->magic != SP_SHM_MAGIC ||
	    h->layout_version != SP_SHM_LAYOUT_VERSION || h->header_bytes != sizeof(*h))
		return -EPROTO;
	if (h->daemon_epoch != c->daemon_epoch)
		return -ESTALE;
	if (h->session_id != c->session_id || memcmp(&h->geom, &c->geom, sizeof(c->geom)) ||
	    h->wait_mode != (uint32_t)c->wait_mode || h->max_seqs != c->max_seqs ||
	    h->ctl_bytes != c->ctl_bytes || h->arena_bytes != c->arena_bytes ||
	    h->n_slots != c->n_slots || h->unit_words_cap != c->unit_words_cap)
		return -EPROTO;
	if (c->n_slots > c->arena_bytes / c->geom.unit_bytes || c->n_slots > UINT32_MAX)
		return -EPROTO;
	if (!range_fits(h->seq_table_off, (uint64_t)h->max_seqs * sizeof(struct sp_seq_desc),
			c->ctl_bytes) ||
	    !range_fits(h->unit_pool_off, h->unit_words_cap * sizeof(uint64_t), c->ctl_bytes) ||
	    h->seq_table_off % 8 || h->unit_pool_off % 8)
		return -EPROTO;
	return 0;
}

static int check_sub(struct memclient *c)
{
	const struct sp_sub_header *h = c->sub_hdr;
	int rc;

	if (c->sub_bytes < sizeof(*h) || h->magic != SP_SHM_MAGIC ||
	    h->layout_version != SP_SHM_LAYOUT_VERSION || h->header_bytes != sizeof(*h))
		return -EPROTO;
	if (h->daemon_epoch != c->daemon_epoch)
		return -ESTALE;
	if (h->sq_off < sizeof(*h) || h->sq_off >= c->sub_bytes || h->sq_off % SP_CACHELINE ||
	    h->cq_off < sizeof(*h) || h->cq_off >= c->sub_bytes || h->cq_off % SP_CACHELINE) {
		snprintf(c->last_error, sizeof(c->last_error),
			 "sub region: bad ring offsets sq_off=%llu cq_off=%llu",
			 (unsigned long long)h->sq_off, (unsigned long long)h->cq_off);
		return -EPROTO;
	}
	if (h->vec_entries && (h->vec_off < sizeof(*h) || h->vec_off % SP_CACHELINE ||
			       h->vec_off > c->sub_bytes ||
			       (c->sub_bytes - h->vec_off) / sizeof(struct sp_vec_entry) <
				   h->vec_entries)) {
		snprintf(c->last_error, sizeof(c->last_error),
			 "sub region: bad vector area vec_off=%llu vec_entries=%u",
			 (unsigned long long)h->vec_off, h->vec_entries);
		return -EPROTO;
	}
	if (h->vec_entries && !c->per_unit_forecast) {
		c->vec = (struct sp_vec_entry *)((uint8_t *)c->sub + h->vec_off);
		c->vec_entries = h->vec_entries;
	}
	rc = ring_attach(&c->sq, (uint8_t *)c->sub + h->sq_off, c->sub_bytes - h->sq_off,
			 sizeof(struct sp_sqe), c->sq_doorbell);
	if (rc)
		return rc;
	return ring_attach(&c->cq, (uint8_t *)c->sub + h->cq_off, c->sub_bytes - h->cq_off,
			   sizeof(struct sp_cqe), c->cq_doorbell);
}

/* Map the three regions and check them against the reply; takes ownership of fds. */
static int map_session(struct memclient *c, const struct wire_reply *rp, int *fds)
{
	int rc;

	c->session_id = rp->u.hello.session_id;
	memcpy(c->token, rp->u.hello.token, sizeof(c->token));
	c->daemon_epoch = rp->u.hello.daemon_epoch;
	c->arena_bytes = rp->u.hello.arena_bytes;
	c->n_slots = rp->u.hello.n_slots;
	c->ctl_bytes = rp->u.hello.ctl_bytes;
	c->sub_bytes = rp->u.hello.sub_bytes;
	c->unit_words_cap = rp->u.hello.unit_words_cap;
	c->max_seqs = rp->u.hello.max_seqs;
	c->sq_doorbell = fds[FD_SQ_DB];
	c->cq_doorbell = fds[FD_CQ_DB];
	fds[FD_SQ_DB] = fds[FD_CQ_DB] = -1;
	if (memcmp(&rp->u.hello.geom, &c->geom, sizeof(c->geom))) {
		rc = -EPROTO;
		goto out;
	}
	rc = map_fd(fds[FD_CTL], c->ctl_bytes, PROT_READ, &c->ctl);
	if (rc)
		goto out;
	c->ctl_hdr = c->ctl;
	rc = map_fd(fds[FD_SUB], c->sub_bytes, PROT_READ | PROT_WRITE, &c->sub);
	if (rc)
		goto out;
	c->sub_hdr = c->sub;
	rc = map_fd(fds[FD_ARENA], c->arena_bytes, PROT_READ | PROT_WRITE, (void **)&c->arena);
	if (rc)
		goto out;
	rc = check_ctl(c);
	if (!rc)
		rc = check_sub(c);
out:
	close_fds(fds, FD_COUNT); /* the mappings keep the memfds alive */
	return rc;
}

static int attach(struct memclient *c, const struct memclient_opts *o, const char *path)
{
	struct wire_reply rp;
	int fds[FD_COUNT], rc;

	for (int i = 0; i < FD_COUNT; i++)
		fds[i] = -1;
	c->attach_fd = fdpass_connect(path);
	if (c->attach_fd < 0)
		return c->attach_fd;
	rc = send_hello(c, o);
	if (rc)
		return rc;
	rc = recv_hello(c, &rp, fds);
	if (rc)
		return rc;
	rc = map_session(c, &rp, fds);
	wire_reply_fini(&rp);
	return rc;
}

int memclient_attach_wait_ms(int attach_timeout_ms, int timeout_ms, uint64_t arena_bytes)
{
	uint64_t ms =
	    (uint64_t)timeout_ms + (arena_bytes >> 20) * MEMCLIENT_ATTACH_MS_PER_GIB / 1024;

	if (attach_timeout_ms > 0)
		return attach_timeout_ms;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

int memclient_open(const struct memclient_opts *o, struct memclient **out)
{
	char dir[256], path[512], endpoint[520];
	struct memclient *c;
	int rc;

	if (o && o->error && o->error_len)
		o->error[0] = '\0';
	if (!o || !out || !o->arena_bytes || !o->max_seqs ||
	    (o->wait_mode != SP_WAIT_SLEEP && o->wait_mode != SP_WAIT_POLL) ||
	    (!!o->attach_path != !!o->ctl_endpoint))
		return -EINVAL;
	*out = NULL;
	if (o->attach_path) {
		snprintf(path, sizeof(path), "%s", o->attach_path);
		snprintf(endpoint, sizeof(endpoint), "%s", o->ctl_endpoint);
	} else {
		if (o->runtime_dir)
			snprintf(dir, sizeof(dir), "%s", o->runtime_dir);
		else if (memclient_default_runtime_dir(dir, sizeof(dir)))
			return -ENAMETOOLONG;
		snprintf(path, sizeof(path), "%s/attach.sock", dir);
		snprintf(endpoint, sizeof(endpoint), "ipc://%s/ctl.ipc", dir);
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->attach_fd = c->sq_doorbell = c->cq_doorbell = -1;
	c->geom = o->geom;
	c->wait_mode = o->wait_mode;
	c->per_unit_forecast = o->per_unit_forecast;
	c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : MEMCLIENT_DEFAULT_TIMEOUT_MS;
	c->attach_timeout_ms =
	    memclient_attach_wait_ms(o->attach_timeout_ms, c->timeout_ms, o->arena_bytes);
	rc = memclient_geometry_fill(&c->geom);
	if (rc)
		goto out_close;
	rc = attach(c, o, path);
	if (rc)
		goto out_close;
	rc = memclient_zmq_connect(c, endpoint);
	if (rc)
		goto out_close;
	*out = c;
	return 0;
out_close:
	if (o->error && o->error_len)
		snprintf(o->error, o->error_len, "%s", c->last_error);
	memclient_close(c);
	return rc;
}

void memclient_close(struct memclient *c)
{
	if (!c)
		return;
	if (c->remote && c->session_id)
		memclient_remote_bye(c);
	memclient_zmq_close(c);
	if (c->arena)
		munmap(c->arena, c->arena_bytes);
	if (c->sub)
		munmap(c->sub, c->sub_bytes);
	if (c->ctl)
		munmap(c->ctl, c->ctl_bytes);
	if (c->sq_doorbell >= 0)
		close(c->sq_doorbell);
	if (c->cq_doorbell >= 0)
		close(c->cq_doorbell);
	if (c->attach_fd >= 0)
		close(c->attach_fd); /* ends the session: memsvc reclaims everything */
	free(c);
}

/* The open row of seq, or NULL with *err set (-EINVAL out of range, -ESTALE not open/gen). */
static const struct sp_seq_desc *seq_row(struct memclient *c, struct memclient_seq seq, int *err)
{
	const struct sp_seq_desc *rows;
	const struct sp_seq_desc *row;

	*err = c->remote ? -EOPNOTSUPP : -EINVAL;
	if (c->remote || seq.index >= c->max_seqs)
		return NULL;
	rows = (const void *)((const uint8_t *)c->ctl + c->ctl_hdr->seq_table_off);
	row = &rows[seq.index];
	/* Acquire: memsvc fills the row, then stores gen with release. */
	if (atomic_load_explicit(&row->gen, memory_order_acquire) != seq.gen ||
	    row->state != SP_SEQ_OPEN) {
		*err = -ESTALE;
		return NULL;
	}
	*err = 0;
	return row;
}

void memclient_unit_words(struct memclient *c, const uint64_t **words, size_t *bytes)
{
	if (c->remote) {
		*words = NULL;
		*bytes = 0;
		return;
	}
	*words = (const uint64_t *)((const uint8_t *)c->ctl + c->ctl_hdr->unit_pool_off);
	*bytes = c->unit_words_cap * sizeof(uint64_t);
}

int memclient_seq_word_base(struct memclient *c, struct memclient_seq seq, int64_t *word_base)
{
	const struct sp_seq_desc *row;
	uint64_t pool = c->ctl_hdr->unit_pool_off, words;
	int err;

	row = seq_row(c, seq, &err);
	if (!row)
		return err;
	words = (uint64_t)c->geom.n_layers * c->geom.n_kv_heads * row->max_blocks;
	if (row->units_off < pool || (row->units_off - pool) % 8 ||
	    (row->units_off - pool) / 8 + words > c->unit_words_cap)
		return -EPROTO;
	*word_base = (int64_t)((row->units_off - pool) / 8);
	return 0;
}

/* The unit word of u, after checking the sequence row; NULL with *err set otherwise. */
static const _Atomic uint64_t *unit_word(struct memclient *c, const struct memclient_unit *u,
					 int *err)
{
	const struct sp_seq_desc *row;
	uint64_t idx, words;

	*err = c->remote ? -EOPNOTSUPP : -EINVAL;
	if (c->remote || u->layer >= c->geom.n_layers || u->head >= c->geom.n_kv_heads)
		return NULL;
	row = seq_row(c, u->seq, err);
	if (!row)
		return NULL;
	*err = -EINVAL;
	if (u->block >= row->max_blocks)
		return NULL;
	words = (uint64_t)c->geom.n_layers * c->geom.n_kv_heads * row->max_blocks;
	if (row->units_off % 8 || !range_fits(row->units_off, words * 8, c->ctl_bytes)) {
		*err = -EPROTO;
		return NULL;
	}
	idx = ((uint64_t)u->layer * c->geom.n_kv_heads + u->head) * row->max_blocks + u->block;
	*err = 0;
	return (const _Atomic uint64_t *)((const uint8_t *)c->ctl + row->units_off) + idx;
}

int memclient_lookup(struct memclient *c, const struct memclient_unit *u,
		     struct memclient_residency *out)
{
	const _Atomic uint64_t *wp;
	uint64_t w;
	int err;

	if (!c || !u || !out)
		return -EINVAL;
	wp = unit_word(c, u, &err);
	if (!wp)
		return err;
	/* Acquire: pairs with memsvc's release store after the slot's bytes are in place. */
	w = atomic_load_explicit(wp, memory_order_acquire);
	out->state = sp_unit_word_state(w);
	out->gen = sp_unit_word_gen(w);
	out->slot = sp_unit_word_slot(w);
	if (out->state != SP_UNIT_ALLOCATED && out->state != SP_UNIT_RESIDENT &&
	    out->state != SP_UNIT_LOADING)
		out->slot = SP_UNIT_SLOT_NONE;
	return 0;
}

void *memclient_slot_ptr(struct memclient *c, uint32_t slot)
{
	if (!c || !c->arena || slot >= c->n_slots)
		return NULL;
	return c->arena + (size_t)slot * c->geom.unit_bytes;
}

void *memclient_unit_ptr(struct memclient *c, const struct memclient_unit *u)
{
	struct memclient_residency r;

	if (memclient_lookup(c, u, &r) ||
	    (r.state != SP_UNIT_ALLOCATED && r.state != SP_UNIT_RESIDENT))
		return NULL;
	return memclient_slot_ptr(c, r.slot);
}

void memclient_epoch_publish(struct memclient *c, uint64_t step)
{
	if (c->remote)
		return; /* no shared sub region: nothing to publish into */
	/* Release: our reads of leased slots happen-before memsvc reuses them. */
	atomic_store_explicit(&c->sub_hdr->client_epoch, step, memory_order_release);
}

void memclient_arena(struct memclient *c, void **base, size_t *bytes)
{
	*base = c->arena;
	*bytes = c->arena_bytes;
}

const struct sp_geometry *memclient_geometry(const struct memclient *c)
{
	return &c->geom;
}

uint64_t memclient_n_slots(const struct memclient *c)
{
	return c->n_slots;
}

uint64_t memclient_daemon_epoch(const struct memclient *c)
{
	return c->daemon_epoch;
}

uint64_t memclient_session_id(const struct memclient *c)
{
	return c->session_id;
}

void memclient_token(const struct memclient *c, uint8_t token[MEMCLIENT_TOKEN_BYTES])
{
	memcpy(token, c->token, MEMCLIENT_TOKEN_BYTES);
}

const char *memclient_last_error(const struct memclient *c)
{
	return c->last_error;
}

uint64_t memclient_late_completions(const struct memclient *c)
{
	return c->late;
}

uint64_t memclient_forecasts_vectored(const struct memclient *c)
{
	return c->vec_orders;
}
