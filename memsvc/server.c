/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event loop and the session lifecycle: attach (SO_PEERCRED, tenant, quota, budget,
 * session regions made off the loop, descriptors over SCM_RIGHTS; a remote Hello the same way,
 * answered through its router), teardown when the attach socket closes, housekeeping on a
 * timer, the drain that SIGTERM/SIGINT or a drain request starts, and the tenants reload on
 * SIGHUP.
 */
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "fdpass.h"
#include "hotpath.h"
#include "log.h"
#include "mconfig.h"
#include "mstats.h"
#include "notify.h"
#include "remote.h"
#include "ring.h"
#include "session.h"
#include "spill.h"
#include "tenant.h"
#include "timeutil.h"
#include "wire.h"

#define TAG "server"
#define ATTACH_TIMEOUT_MS 5000 /* a connection that sends no Hello in this time is closed */
#define ATTACH_MSG_MAX (64u << 10)
#define ZMQ_ID_MAX 255 /* a ROUTER peer's routing id (ZMTP caps it at 255 bytes) */

static int open_attach(struct server *sv, char *err, size_t err_len);

/* ---- connections ------------------------------------------------------------------------- */

/* Append c to conns[] (under the lock, for the metrics thread). */
static int conns_push(struct server *sv, struct conn *c)
{
	int r = 0;

	pthread_mutex_lock(&sv->lock);
	if (sv->n_conns == sv->cap_conns) {
		size_t ncap = sv->cap_conns ? sv->cap_conns * 2 : 16;
		void *p = realloc(sv->conns, ncap * sizeof(*sv->conns));
		if (p) {
			sv->conns = p;
			sv->cap_conns = ncap;
		} else {
			r = -ENOMEM;
		}
	}
	if (!r)
		sv->conns[sv->n_conns++] = c;
	pthread_mutex_unlock(&sv->lock);
	return r;
}

static int conn_add(struct server *sv, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
	int r;

	if (!c)
		return -ENOMEM;
	c->src.kind = SRC_CONN;
	c->fd = fd;
	c->accepted_ms = time_now_ms();
	ev.data.ptr = &c->src;
	r = conns_push(sv, c);
	if (!r && epoll_ctl(sv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = err_from_errno();
		pthread_mutex_lock(&sv->lock);
		sv->n_conns--;
		pthread_mutex_unlock(&sv->lock);
	}
	if (r)
		free(c);
	return r;
}

/* Stop a session's spill work (waits for its disk I/O; its files go) and give its disk back. */
static void tier_detach(struct server *sv, struct session *s)
{
	if (s && sv->spill && spill_session_remove(sv->spill, s))
		tenant_disk_release(session_tenant(s), session_tier_bytes(s));
}

/*
 * An attach whose session is being created; the loop completes or undoes it (attach_finish).
 * A local Hello is answered on its conn's attach socket; a remote (tcp) one through the
 * ZeroMQ router it came on, to the peer whose identity frame it carried.
 */
struct attach_job {
	struct server *sv;
	struct conn *c; /* NULL once the connection closed: the job is then undone */
	struct session_opts so;
	char client_name[WIRE_NAME_MAX];
	uint64_t req_id, tier_bytes;
	void *zsock; /* remote: the router; NULL for a local attach */
	uint8_t zid[ZMQ_ID_MAX];
	size_t zid_len;
	pthread_t thread;
	struct session *s;
	int r;
	char err[WIRE_ERROR_MAX];
	struct attach_job *next;
};

/* Close a connection; with a session, reclaim everything it held at once. */
static void conn_close(struct server *sv, struct conn *c, const char *why)
{
	struct session *s = c->s;

	if (c->job) { /* its session is still being made: attach_finish undoes it */
		c->job->c = NULL;
		c->job = NULL;
	}

	if (s && !c->remote)
		hotpath_remove(sv->hp, s);
	tier_detach(sv, s);
	if (s) {
		log_info(TAG, "session closed", "session=%llu tenant=%s pid=%d reason=%s",
			 (unsigned long long)session_id(s), tenant_name(session_tenant(s)),
			 (int)session_pid(s), why);
	}
	pthread_mutex_lock(&sv->lock);
	for (size_t i = 0; i < sv->n_conns; i++) {
		if (sv->conns[i] == c) {
			sv->conns[i] = sv->conns[--sv->n_conns];
			break;
		}
	}
	if (s)
		sv->budget_used -= session_arena_size(s);
	pthread_mutex_unlock(&sv->lock);
	if (s) {
		tenant_session_release(session_tenant(s), session_arena_size(s));
		session_destroy(s);
	}
	if (c->fd >= 0) {
		(void)epoll_ctl(sv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->dead = true;
	c->s = NULL;
	c->next_dead = sv->dead;
	sv->dead = c;
}

static void dead_sweep(struct server *sv)
{
	while (sv->dead) {
		struct conn *c = sv->dead;
		sv->dead = c->next_dead;
		free(c);
	}
}

struct conn *server_find_session(struct server *sv, uint64_t id)
{
	for (size_t i = 0; i < sv->n_conns; i++)
		if (sv->conns[i]->s && session_id(sv->conns[i]->s) == id)
			return sv->conns[i];
	return NULL;
}

static size_t n_sessions(const struct server *sv)
{
	size_t n = 0;

	for (size_t i = 0; i < sv->n_conns; i++)
		n += sv->conns[i]->s != NULL || sv->conns[i]->job != NULL;
	return n;
}

/* ---- attach ------------------------------------------------------------------------------ */

/* A packed reply to a Hello: on the attach socket, or (a remote Hello's job) via its router. */
static int reply_send(const struct conn *c, const struct attach_job *j, const void *buf, size_t len,
		      const int *fds, int n_fds)
{
	if (j && j->zsock)
		return wire_zmq_send(j->zsock, j->zid, j->zid_len, buf, len, NULL, 0, ZMQ_DONTWAIT);
	return fdpass_send(c->fd, buf, len, fds, n_fds);
}

/* The error reply to a Hello; j: its job once admitted (NULL before: a local Hello). */
static void attach_refuse(struct server *sv, struct conn *c, const struct attach_job *j,
			  uint64_t req_id, int status, const char *msg)
{
	struct wire_reply rp;
	void *buf = NULL;
	size_t len = 0;

	wire_reply_error(&rp, req_id, status, "%s", msg);
	if (wire_reply_pack(&rp, &buf, &len) == 0)
		(void)reply_send(c, j, buf, len, NULL, 0);
	free(buf);
	pthread_mutex_lock(&sv->lock);
	sv->attaches_refused++;
	pthread_mutex_unlock(&sv->lock);
	mstats_errno(sv->stats, status);
	log_warn(TAG, "attach refused", "status=%s error=\"%s\"", err_name(status), msg);
}

/* Tenant, uid, geometry, arena size, quota and budget. On 0 the tenant holds the bytes. */
static int attach_admit(struct server *sv, const struct wire_request *rq, uid_t uid,
			struct session_opts *so, char *err, size_t err_len)
{
	struct tenant *tn = so->tenant ? so->tenant : tenant_find(sv->tenants, rq->u.hello.tenant);
	int r;

	if (sv->draining) {
		snprintf(err, err_len, "daemon is draining");
		return -ESHUTDOWN;
	}
	if (n_sessions(sv) >= sv->cfg->max_sessions) {
		snprintf(err, err_len, "max-sessions (%llu) reached",
			 (unsigned long long)sv->cfg->max_sessions);
		return -EUSERS;
	}
	if (!tn || tenant_removed(tn)) {
		snprintf(err, err_len, "no tenant '%.64s' (unknown, or removed by a reload)",
			 rq->u.hello.tenant);
		return -EACCES;
	}
	if (so->tenant && strcmp(tenant_name(so->tenant), rq->u.hello.tenant) != 0) {
		snprintf(err, err_len, "this tcp key belongs to tenant '%s', not '%s'",
			 tenant_name(so->tenant), rq->u.hello.tenant);
		return -EACCES;
	}
	if (!so->tenant && !tenant_admits_uid(tn, uid)) {
		snprintf(err, err_len, "uid %u is not admitted by tenant '%s'", (unsigned)uid,
			 rq->u.hello.tenant);
		return -EACCES;
	}
	so->geom = rq->u.hello.geom;
	r = wire_geometry_check(&so->geom, err, err_len);
	if (r)
		return r;
	if (rq->u.hello.arena_bytes > sv->cfg->max_arena ||
	    session_arena_bytes(&so->geom, rq->u.hello.arena_bytes, sv->cfg->huge_pages,
				&so->arena_bytes, &(uint32_t){0})) {
		snprintf(err, err_len,
			 "arena_bytes %llu: not 1 to 2^32-2 units of %u bytes "
			 "within max-arena",
			 (unsigned long long)rq->u.hello.arena_bytes, so->geom.unit_bytes);
		return -EINVAL;
	}
	if (sv->budget_used + sv->budget_pending + so->arena_bytes > sv->cfg->ram_budget) {
		snprintf(err, err_len,
			 "arena of %llu bytes exceeds the daemon's RAM budget "
			 "(%llu of %llu used, %llu being attached)",
			 (unsigned long long)so->arena_bytes, (unsigned long long)sv->budget_used,
			 (unsigned long long)sv->cfg->ram_budget,
			 (unsigned long long)sv->budget_pending);
		return -ENOMEM;
	}
	if (tenant_session_acquire(tn, so->arena_bytes)) {
		snprintf(err, err_len, "tenant '%s' over its quota (bytes or sessions)",
			 tenant_name(tn));
		return -EDQUOT;
	}
	so->tenant = tn;
	return 0;
}

static void hello_fill(struct server *sv, struct session *s, uint64_t req_id, struct wire_reply *rp)
{
	*rp = (struct wire_reply){.request_id = req_id, .kind = WIRE_HELLO};
	rp->u.hello.session_id = session_id(s);
	memcpy(rp->u.hello.token, session_token(s), WIRE_TOKEN_BYTES);
	rp->u.hello.daemon_epoch = sv->daemon_epoch;
	rp->u.hello.arena_bytes = session_arena_size(s);
	rp->u.hello.n_slots = session_arena_size(s) / session_geometry(s)->unit_bytes;
	rp->u.hello.ctl_bytes = session_ctl_bytes(s);
	rp->u.hello.sub_bytes = session_sub_bytes(s);
	rp->u.hello.unit_words_cap = session_unit_words_cap(s);
	rp->u.hello.max_seqs = session_max_seqs(s);
	rp->u.hello.geom = *session_geometry(s);
}

/* The Hello reply; a local client gets the session's five descriptors with it. */
static int attach_reply(struct server *sv, const struct attach_job *j, struct session *s)
{
	struct wire_reply rp;
	void *buf = NULL;
	size_t len = 0;
	int fds[5], r;

	hello_fill(sv, s, j->req_id, &rp);
	r = wire_reply_pack(&rp, &buf, &len);
	if (r)
		return r;
	session_fds(s, fds);
	r = reply_send(j->c, j, buf, len, fds, j->zsock ? 0 : 5);
	free(buf);
	return r;
}

/* Session options from an admitted hello. */
/* Called between pre-fault chunks of a large arena: keep systemd's watchdog fed. */
static void prefault_progress(void *ctx)
{
	struct server *sv = ctx;
	notify_watchdog(sv->notify, time_now_ms());
}

static void opts_fill(struct server *sv, const struct wire_request *rq, struct session_opts *so)
{
	so->progress = prefault_progress;
	so->progress_ctx = sv;
	so->id = sv->next_id++;
	so->client_name = rq->u.hello.client_name;
	so->max_seqs = rq->u.hello.max_seqs;
	so->wait_mode = rq->u.hello.wait_mode;
	so->ring_entries = (uint32_t)sv->cfg->sq_entries;
	so->unit_words = (uint32_t)sv->cfg->unit_words;
	so->huge_pages = sv->cfg->huge_pages;
}

/*
 * Reserve the session's disk (the tier is sized before the session exists). No room: the
 * session is RAM only, with one log line. Returns the bytes reserved per directory.
 */
static uint64_t tier_reserve(struct server *sv, struct session_opts *so)
{
	uint64_t bytes = 0;

	if (!sv->spill)
		return 0;
	if (spill_reserve(sv->spill, so->arena_bytes, so->geom.unit_bytes, &bytes)) {
		log_warn(TAG, "spill-bytes exhausted: session is RAM only", "arena_bytes=%llu",
			 (unsigned long long)so->arena_bytes);
		return 0;
	}
	if (tenant_disk_acquire(so->tenant, bytes * spill_n_dirs(sv->spill))) {
		log_warn(TAG, "tenant disk-quota reached: session is RAM only",
			 "tenant=%s spill_bytes=%llu", tenant_name(so->tenant),
			 (unsigned long long)(bytes * spill_n_dirs(sv->spill)));
		spill_unreserve(sv->spill, bytes);
		return 0;
	}
	so->tiered = true;
	so->tier_bytes = bytes * spill_n_dirs(sv->spill);
	so->high_water = sv->cfg->spill_high_water;
	so->low_water = sv->cfg->spill_low_water;
	so->tier_kick = spill_kick;
	so->tier_ctx = sv->spill;
	return bytes;
}

static void tier_unreserve(struct server *sv, const struct session_opts *so, uint64_t bytes)
{
	spill_unreserve(sv->spill, bytes);
	tenant_disk_release(so->tenant, so->tier_bytes);
}

/* Open a tiered session's spill files; on error the reservation is returned. */
static int tier_attach(struct server *sv, struct session *s, uint64_t bytes, char *err,
		       size_t err_len)
{
	int r;

	if (!bytes)
		return 0;
	r = spill_session_add(sv->spill, s, bytes);
	if (r) {
		spill_unreserve(sv->spill, bytes);
		tenant_disk_release(session_tenant(s), session_tier_bytes(s));
		snprintf(err, err_len, "opening the session's spill files: %s", err_str(r));
	}
	return r;
}

/* The session of an admitted attach, made off the loop (memfds, the arena's pre-fault). */
static void *attach_job_main(void *arg)
{
	struct attach_job *j = arg;
	struct server *sv = j->sv;
	uint64_t one = 1;

	if (sv->test_attach_delay_ms) /* tests: an attach that takes a known time */
		time_sleep_ns(sv->test_attach_delay_ms * 1000000ull);
	j->r = session_create(&j->so, &j->s, j->err, sizeof(j->err));
	/* a remote client has no shared memory: memsvc maps the arena to move its bytes */
	if (!j->r && j->zsock && (j->r = session_arena_map(j->s)))
		snprintf(j->err, sizeof(j->err), "mapping the arena: %s", err_str(j->r));
	pthread_mutex_lock(&sv->jobs_lock);
	j->next = sv->jobs_done;
	sv->jobs_done = j;
	pthread_mutex_unlock(&sv->jobs_lock);
	(void)!write(sv->attach_fd, &one, sizeof(one));
	return NULL;
}

/*
 * Admit the Hello of conn c (j: its job, with sv, c and so.tenant/daemon_epoch/pid set) and
 * start making its session on a thread (attach_collect finishes it), so a large arena's
 * pre-fault does not stop the loop's other clients. On error nothing is held; j stays the
 * caller's.
 */
static int job_start(struct server *sv, struct attach_job *j, const struct wire_request *rq,
		     uid_t uid, char *err, size_t err_len)
{
	int r = attach_admit(sv, rq, uid, &j->so, err, err_len);

	if (r)
		return r;
	opts_fill(sv, rq, &j->so);
	snprintf(j->client_name, sizeof(j->client_name), "%s", rq->u.hello.client_name);
	j->so.client_name = j->client_name;
	j->so.progress = NULL; /* the loop keeps feeding the watchdog */
	j->so.uid = uid;
	if (j->zsock)
		j->so.wait_mode = SP_WAIT_SLEEP; /* no rings for a remote client */
	j->tier_bytes = tier_reserve(sv, &j->so);
	pthread_mutex_lock(&sv->lock);
	sv->budget_pending += j->so.arena_bytes;
	pthread_mutex_unlock(&sv->lock);
	r = -pthread_create(&j->thread, NULL, attach_job_main, j);
	if (r) {
		snprintf(err, err_len, "starting the attach thread: %s", err_str(r));
		pthread_mutex_lock(&sv->lock);
		sv->budget_pending -= j->so.arena_bytes;
		pthread_mutex_unlock(&sv->lock);
		if (j->tier_bytes)
			tier_unreserve(sv, &j->so, j->tier_bytes);
		tenant_session_release(j->so.tenant, j->so.arena_bytes);
		return r;
	}
	j->c->job = j;
	sv->n_jobs++;
	return 0;
}

/* A local Hello on conn c: its peer's credentials, then job_start. */
static int attach_start(struct server *sv, struct conn *c, struct wire_request *rq, char *err,
			size_t err_len)
{
	struct attach_job *j = calloc(1, sizeof(*j));
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int r = j ? fdpass_peercred(c->fd, &pid, &uid, &gid) : -ENOMEM;

	if (r) {
		snprintf(err, err_len, j ? "SO_PEERCRED: %s" : "%s", err_str(r));
		free(j);
		return r;
	}
	*j = (struct attach_job){.sv = sv, .c = c, .req_id = rq->request_id};
	j->so.daemon_epoch = sv->daemon_epoch;
	j->so.pid = pid;
	r = job_start(sv, j, rq, uid, err, err_len);
	if (r) {
		free(j);
		return r;
	}
	log_info(TAG, "session attaching",
		 "session=%llu tenant=%s client=%s pid=%d arena_bytes=%llu",
		 (unsigned long long)j->so.id, tenant_name(j->so.tenant), j->client_name, (int)pid,
		 (unsigned long long)j->so.arena_bytes);
	return 0;
}

/* A remote session's conn: no socket (the session is found by id); see server_remote_hello. */
static struct conn *remote_conn_add(struct server *sv)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	*c = (struct conn){.src.kind = SRC_CONN, .fd = -1, .remote = true};
	c->accepted_ms = c->last_ms = time_now_ms();
	if (conns_push(sv, c)) {
		free(c);
		return NULL;
	}
	return c;
}

int server_remote_hello(struct server *sv, struct tenant *tn, const struct wire_request *rq,
			void *sock, const struct wire_frames *f, struct wire_reply *rp)
{
	struct attach_job *j = calloc(1, sizeof(*j));
	struct conn *c = j ? remote_conn_add(sv) : NULL;
	char err[WIRE_ERROR_MAX] = "";
	int r = c ? 0 : -ENOMEM;

	if (!r && f->id_len > sizeof(j->zid))
		r = -EMSGSIZE;
	if (!r) {
		*j = (struct attach_job){.sv = sv, .c = c, .req_id = rq->request_id, .zsock = sock};
		memcpy(j->zid, f->identity, f->id_len);
		j->zid_len = f->id_len;
		j->so.daemon_epoch = sv->daemon_epoch;
		j->so.tenant = tn;
		r = job_start(sv, j, rq, (uid_t)-1, err, sizeof(err));
	}
	if (r) {
		if (c)
			conn_close(sv, c, "attach refused");
		free(j);
		pthread_mutex_lock(&sv->lock);
		sv->attaches_refused++;
		pthread_mutex_unlock(&sv->lock);
		wire_reply_error(rp, rq->request_id, r, "%s", err[0] ? err : err_str(r));
		return r;
	}
	log_info(TAG, "remote session attaching",
		 "session=%llu tenant=%s client=%s arena_bytes=%llu", (unsigned long long)j->so.id,
		 tenant_name(tn), j->client_name, (unsigned long long)j->so.arena_bytes);
	return 0;
}

/* An attach that failed, whose client left or that a drain stopped: give back what it held. */
static void attach_undo(struct server *sv, struct attach_job *j, int r)
{
	tier_detach(sv, j->s);
	session_destroy(j->s);
	tenant_session_release(j->so.tenant, j->so.arena_bytes);
	if (j->c) {
		attach_refuse(sv, j->c, j, j->req_id, r, j->err);
		conn_close(sv, j->c, "attach refused");
	} else {
		log_info(TAG, "attach undone", "session=%llu error=\"%s\"",
			 (unsigned long long)j->so.id, j->err);
	}
}

static void attached_log(const struct attach_job *j)
{
	const struct session_opts *so = &j->so;

	if (j->zsock) {
		log_info(TAG, "remote session attached",
			 "session=%llu tenant=%s client=%s arena_bytes=%llu",
			 (unsigned long long)so->id, tenant_name(so->tenant), so->client_name,
			 (unsigned long long)so->arena_bytes);
		return;
	}
	log_info(TAG, "session attached",
		 "session=%llu tenant=%s client=%s pid=%d uid=%u arena_bytes=%llu slots=%llu "
		 "wait=%s",
		 (unsigned long long)so->id, tenant_name(so->tenant), so->client_name, (int)so->pid,
		 (unsigned)so->uid, (unsigned long long)so->arena_bytes,
		 (unsigned long long)(so->arena_bytes / so->geom.unit_bytes),
		 so->wait_mode == SP_WAIT_POLL ? "poll" : "sleep");
}

/*
 * The loop's half of an attach whose session is made: its spill files, the reply (with the
 * descriptors for a local client), the ring consumer (local); or, when anything failed, the
 * client left or the daemon drains, everything the attach held is given back (and the
 * client, if still there, gets the error).
 *
 * A remote client has no connection to lose: c stays set. A remote peer whose ZeroMQ
 * connection is gone by now fails the send (the router is ZMQ_ROUTER_MANDATORY:
 * -EHOSTUNREACH) and the attach is undone like any other; one that is still connected but
 * gave up waiting gets the reply, drops it (clients drop replies of abandoned requests), and
 * its session stays until remote-idle-ms without a request closes it (timer_event).
 */
static void attach_finish(struct server *sv, struct attach_job *j)
{
	struct conn *c = j->c;
	char *err = j->err;
	size_t err_len = sizeof(j->err);
	int r = j->r;

	if (c)
		c->job = NULL;
	if (!r && !c) {
		r = -ECONNRESET;
		snprintf(err, err_len, "the client left before its session was ready");
	} else if (!r && sv->draining) {
		r = -ESHUTDOWN;
		snprintf(err, err_len, "daemon is draining");
	}
	if (r && j->tier_bytes)
		tier_unreserve(sv, &j->so, j->tier_bytes); /* the tier was not attached yet */
	if (!r)
		r = tier_attach(sv, j->s, j->tier_bytes, err, err_len);
	if (!r && (r = attach_reply(sv, j, j->s)))
		snprintf(err, err_len, "sending the %s: %s", j->zsock ? "reply" : "descriptors",
			 err_str(r));
	if (!r && !j->zsock && (r = hotpath_add(sv->hp, j->s)))
		snprintf(err, err_len, "starting the ring consumer: %s", err_str(r));
	if (r) {
		attach_undo(sv, j, r);
		return;
	}
	pthread_mutex_lock(&sv->lock);
	c->s = j->s;
	c->last_ms = time_now_ms();
	sv->budget_used += j->so.arena_bytes;
	sv->attaches_ok++;
	pthread_mutex_unlock(&sv->lock);
	attached_log(j);
}

/* attach_fd: finish every attach whose session is made (loop thread). */
static void attach_collect(struct server *sv)
{
	struct attach_job *j;
	uint64_t v;

	(void)!read(sv->attach_fd, &v, sizeof(v));
	pthread_mutex_lock(&sv->jobs_lock);
	j = sv->jobs_done;
	sv->jobs_done = NULL;
	pthread_mutex_unlock(&sv->jobs_lock);
	while (j) {
		struct attach_job *next = j->next;

		pthread_join(j->thread, NULL);
		sv->n_jobs--;
		pthread_mutex_lock(&sv->lock);
		sv->budget_pending -= j->so.arena_bytes;
		pthread_mutex_unlock(&sv->lock);
		attach_finish(sv, j);
		free(j);
		j = next;
	}
}

/* A pending connection became readable: its Hello (or its end). */
static void attach_handle(struct server *sv, struct conn *c)
{
	struct wire_request rq;
	char err[WIRE_ERROR_MAX] = "";
	uint8_t *buf = malloc(ATTACH_MSG_MAX);
	int no_fds[1], n_fds = 0, r;
	ssize_t n;

	if (!buf)
		return;
	/* No descriptors are accepted (max 0); fdpass copies into fds even then. */
	n = fdpass_recv(c->fd, buf, ATTACH_MSG_MAX, no_fds, 0, &n_fds, 0);
	if (n <= 0) {
		free(buf);
		if (n == 0 || (n != -EAGAIN && n != -ETIMEDOUT)) {
			if (n < 0) {
				attach_refuse(sv, c, NULL, 0, (int)n, "unreadable attach message");
			}
			conn_close(sv, c, "closed before hello");
		}
		return;
	}
	r = wire_request_unpack(buf, (size_t)n, &rq, err, sizeof(err));
	free(buf);
	if (!r && rq.kind != WIRE_HELLO) {
		snprintf(err, sizeof(err), "expected hello on the attach socket, got %s",
			 wire_kind_name(rq.kind));
		r = -EBADMSG;
	}
	if (!r)
		r = attach_start(sv, c, &rq, err, sizeof(err));
	if (r) {
		attach_refuse(sv, c, NULL, r == -EBADMSG || r == -EMSGSIZE ? 0 : rq.request_id, r,
			      err);
		if (rq.kind != WIRE_NONE)
			wire_request_fini(&rq);
		conn_close(sv, c, "attach refused");
		return;
	}
	wire_request_fini(&rq);
}

static void conn_event(struct server *sv, struct conn *c, uint32_t events)
{
	char junk[256];
	ssize_t n;

	if (c->dead)
		return; /* closed earlier in this batch */
	if (c->job) {
		/* Attaching: nothing more is expected; whatever it sends is dropped. */
		if (!(events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) &&
		    recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT) != 0)
			return;
		conn_close(sv, c, "closed while attaching");
		return;
	}
	if (!c->s) {
		attach_handle(sv, c);
		return;
	}
	if (events & EPOLLIN) {
		/* An attached client has nothing more to say here; a read of 0 is its exit. */
		n = recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT);
		if (n > 0)
			return;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
	}
	conn_close(sv, c, (events & (EPOLLHUP | EPOLLRDHUP)) ? "socket closed" : "socket error");
}

static void listen_event(struct server *sv)
{
	for (;;) {
		int fd = accept4(sv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn(TAG, "accept failed", "error=\"%s\"",
					 err_str(err_from_errno()));
			return;
		}
		if (conn_add(sv, fd)) {
			mstats_error(sv->stats, MSTATS_ERR_DROPPED);
			close(fd);
		}
	}
}

/* ---- drain, signals, housekeeping -------------------------------------------------------- */

void server_drain(struct server *sv, uint64_t deadline_ms, const char *why)
{
	if (sv->draining)
		return;
	if (!deadline_ms || deadline_ms > sv->cfg->drain_timeout_ms)
		deadline_ms = sv->cfg->drain_timeout_ms;
	pthread_mutex_lock(&sv->lock);
	sv->draining = true;
	pthread_mutex_unlock(&sv->lock);
	sv->drain_deadline_ms = time_now_ms() + deadline_ms;
	(void)notify_send(sv->notify, "STOPPING=1");
	/* Stop accepting: new attaches fail to connect at once instead of hanging. */
	if (sv->listen_fd >= 0) {
		(void)epoll_ctl(sv->epfd, EPOLL_CTL_DEL, sv->listen_fd, NULL);
		close(sv->listen_fd);
		sv->listen_fd = -1;
		unlink(sv->attach_path);
	}
	log_info(TAG, "draining", "reason=%s sessions=%zu deadline_ms=%llu", why, n_sessions(sv),
		 (unsigned long long)deadline_ms);
}

/*
 * DIR/tenants.reload: one line "generation=N result=ok|failed ..." rewritten (temp + rename)
 * after every reload, so `sparda reload` can wait for the one it asked for.
 */
static void reload_status_write(struct server *sv, uint64_t gen, int r,
				const struct tenant_reload *rl, const char *err)
{
	char path[320], tmp[330];
	FILE *f;

	snprintf(path, sizeof(path), "%s/tenants.reload", sv->cfg->runtime_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		goto fail;
	if (r)
		fprintf(f, "generation=%llu result=failed status=%s error=\"%s\"\n",
			(unsigned long long)gen, err_name(r), err);
	else
		fprintf(f,
			"generation=%llu result=ok tenants=%zu added=%zu changed=%zu "
			"unchanged=%zu removed=%zu\n",
			(unsigned long long)gen, rl->active, rl->added, rl->changed, rl->unchanged,
			rl->removed);
	if (fclose(f) == 0 && rename(tmp, path) == 0)
		return;
fail:
	log_warn(TAG, "cannot write the reload status", "path=%s status=%s", path,
		 err_name(err_from_errno()));
	unlink(tmp);
}

/* SIGHUP: re-read the tenants file (server thread; see tenant_table_reload). */
static void tenants_reload(struct server *sv)
{
	struct tenant_reload rl;
	char err[512] = "";
	uint64_t ok, failed;
	/* with a tcp endpoint, its allow-list is re-read with the tenants it names */
	int r = tenant_table_reload(sv->tenants, sv->cfg->tenants,
				    sv->remote ? sv->cfg->tcp_keys : NULL, &rl, err, sizeof(err));

	tenant_reload_counts(sv->tenants, &ok, &failed);
	if (r) {
		log_error(TAG, "tenants reload refused, the previous table stays in force",
			  "status=%s error=\"%s\"", err_name(r), err);
	} else {
		log_info(TAG, "tenants reloaded",
			 "file=%s tenants=%zu added=%zu changed=%zu unchanged=%zu removed=%zu "
			 "tcp_keys=%zu",
			 sv->cfg->tenants, rl.active, rl.added, rl.changed, rl.unchanged,
			 rl.removed, rl.keys);
		if (rl.removed_sessions)
			log_info(TAG, "removed tenants keep their open sessions until they close",
				 "sessions=%llu", (unsigned long long)rl.removed_sessions);
	}
	reload_status_write(sv, ok + failed, r, &rl, err);
}

static void signal_event(struct server *sv)
{
	struct signalfd_siginfo si;

	while (read(sv->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			server_drain(sv, 0, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
		else if (si.ssi_signo == SIGHUP)
			tenants_reload(sv);
	}
}

/*
 * Drain is complete once no ring entry waits for an answer: ZeroMQ requests are answered as
 * they arrive, so only the SQs and restores under way (NVMe tier) can hold in-flight work.
 */
static bool rings_idle(struct server *sv)
{
	for (size_t i = 0; i < sv->n_conns; i++) {
		struct session *s = sv->conns[i]->s;
		if (s && (ring_count(session_sq(s)) || session_answers_pending(s)))
			return false;
	}
	return true;
}

static void timer_event(struct server *sv)
{
	uint64_t ticks, now = time_now_ms();

	(void)!read(sv->timer_fd, &ticks, sizeof(ticks));
	notify_watchdog(sv->notify, now);
	for (size_t i = 0; i < sv->n_conns; i++) {
		struct conn *c = sv->conns[i];
		/* a remote attach under way is not idle: its clock starts with the reply */
		if (c->remote && !c->job && now - c->last_ms > sv->cfg->remote_idle_ms) {
			conn_close(sv, c, "remote idle");
			i--;
		} else if (c->s) {
			session_reclaim(c->s);
		} else if (!c->job && now - c->accepted_ms > ATTACH_TIMEOUT_MS) {
			conn_close(sv, c, "no hello");
			i--;
		}
	}
	/* ZMQ_FD only signals edges; a missed one must not strand a request. */
	ctlreq_serve(sv);
	if (sv->remote)
		remote_serve(sv->remote, sv);
	/* Attaches under way end first (refused: the daemon drains), even past the deadline. */
	if (sv->draining && !sv->n_jobs && (rings_idle(sv) || now >= sv->drain_deadline_ms)) {
		/* In-flight entries are answered: now tell the clients, then close. */
		for (size_t i = 0; i < sv->n_conns; i++)
			if (sv->conns[i]->s)
				session_mark_closing(sv->conns[i]->s);
		sv->done = true;
	}
}

static void bye_sweep(struct server *sv)
{
	for (size_t i = 0; i < sv->n_conns; i++) {
		if (sv->conns[i]->bye) {
			conn_close(sv, sv->conns[i], "bye");
			i--;
		}
	}
}

int server_run(struct server *sv)
{
	struct epoll_event ev[32];
	char err[512];
	int r = open_attach(sv, err, sizeof(err));

	if (r) {
		log_error(TAG, "cannot listen", "status=%s error=\"%s\"", err_name(r), err);
		return r;
	}
	log_info(TAG, "ready",
		 "runtime_dir=%s attach=%s ctl=%s budget_bytes=%llu tenants=%zu "
		 "epoch=%016llx pid=%d",
		 sv->cfg->runtime_dir, sv->attach_path, sv->ctl_endpoint,
		 (unsigned long long)sv->cfg->ram_budget, tenant_count(sv->tenants),
		 (unsigned long long)sv->daemon_epoch, (int)getpid());
	(void)notify_send(sv->notify, "READY=1");
	while (!sv->done) {
		int n = epoll_wait(sv->epfd, ev, 32, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_from_errno();
		for (int i = 0; i < n; i++) {
			struct evsrc *src = ev[i].data.ptr;
			switch (src->kind) {
			case SRC_LISTEN:
				listen_event(sv);
				break;
			case SRC_CONN:
				conn_event(sv, (struct conn *)src, ev[i].events);
				break;
			case SRC_SIGNAL:
				signal_event(sv);
				break;
			case SRC_TIMER:
				timer_event(sv);
				break;
			case SRC_ZMQ:
				ctlreq_serve(sv);
				break;
			case SRC_TCP:
				remote_serve(sv->remote, sv);
				break;
			case SRC_ATTACH:
				attach_collect(sv);
				break;
			}
		}
		bye_sweep(sv);
		dead_sweep(sv);
	}
	log_info(TAG, "drained", "sessions_left=%zu", n_sessions(sv));
	return 0;
}

/* ---- setup and teardown ------------------------------------------------------------------ */

static int mkdir_p(const char *dir)
{
	char tmp[MCONFIG_PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return err_from_errno();
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return err_from_errno();
	return 0;
}

static int epoll_add(struct server *sv, int fd, struct evsrc *src, enum src_kind kind)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = src};

	src->kind = kind;
	return epoll_ctl(sv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? err_from_errno() : 0;
}

static int check_not_served(struct server *sv, char *err, size_t err_len)
{
	int fd = fdpass_connect(sv->attach_path);

	if (fd >= 0) {
		close(fd);
		snprintf(err, err_len, "%s: another sparda-memsvc is serving it", sv->attach_path);
		return -EADDRINUSE;
	}
	return 0;
}

/*
 * Bound last, from server_run: the socket file appearing is what clients and tests take as
 * "ready", so every other endpoint (metrics included) must be up by then.
 */
static int open_attach(struct server *sv, char *err, size_t err_len)
{
	char tmp[sizeof(sv->attach_path) + 8];

	/*
	 * Listen under a temporary name and rename: the path appears only once connect() works
	 * (between bind and listen a client would get ECONNREFUSED).
	 */
	snprintf(tmp, sizeof(tmp), "%s.new", sv->attach_path);
	sv->listen_fd = fdpass_listen(tmp, 64, 0666);
	if (sv->listen_fd >= 0 && rename(tmp, sv->attach_path) < 0) {
		int r = err_from_errno();
		close(sv->listen_fd);
		unlink(tmp);
		sv->listen_fd = r;
	}
	if (sv->listen_fd < 0) {
		int r = sv->listen_fd;
		snprintf(err, err_len, "listen %s: %s", sv->attach_path, err_str(r));
		return r;
	}
	/* listen_event accepts until EAGAIN: a blocking socket would stall the loop. */
	if (fcntl(sv->listen_fd, F_SETFL, fcntl(sv->listen_fd, F_GETFL) | O_NONBLOCK) < 0)
		return err_from_errno();
	return epoll_add(sv, sv->listen_fd, &sv->listen_src, SRC_LISTEN);
}

static int open_zmq(struct server *sv, char *err, size_t err_len)
{
	size_t sz = sizeof(sv->zmq_fd);
	int r;

	sv->zctx = zmq_ctx_new();
	sv->router = sv->zctx ? zmq_socket(sv->zctx, ZMQ_ROUTER) : NULL;
	if (!sv->router) {
		r = err_from_errno();
		snprintf(err, err_len, "zmq socket: %s", zmq_strerror(-r));
		return r;
	}
	r = wire_zmq_setup(sv->router, true);
	if (!r && zmq_bind(sv->router, sv->ctl_endpoint) != 0)
		r = -zmq_errno();
	if (!r && zmq_getsockopt(sv->router, ZMQ_FD, &sv->zmq_fd, &sz) != 0)
		r = -zmq_errno();
	if (r) {
		snprintf(err, err_len, "bind %s: %s", sv->ctl_endpoint, zmq_strerror(-r));
		return r;
	}
	chmod(sv->ctl_endpoint + strlen("ipc://"), 0666);
	return epoll_add(sv, sv->zmq_fd, &sv->zmq_src, SRC_ZMQ);
}

static int open_signals_timer(struct server *sv)
{
	sigset_t set;
	uint64_t ms = sv->cfg->watchdog_ms;
	struct itimerspec its = {
	    .it_interval = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000},
	};
	int r;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP); /* reload the tenants file */
	r = -pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (r)
		return r;
	its.it_value = its.it_interval;
	sv->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	sv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (sv->sig_fd < 0 || sv->timer_fd < 0 || timerfd_settime(sv->timer_fd, 0, &its, NULL))
		return err_from_errno();
	r = epoll_add(sv, sv->sig_fd, &sv->sig_src, SRC_SIGNAL);
	if (!r)
		r = epoll_add(sv, sv->timer_fd, &sv->timer_src, SRC_TIMER);
	return r;
}

static int open_paths(struct server *sv, char *err, size_t err_len)
{
	int r = mkdir_p(sv->cfg->runtime_dir);

	if (r) {
		snprintf(err, err_len, "runtime-dir %s: %s", sv->cfg->runtime_dir, err_str(r));
		return r;
	}
	snprintf(sv->attach_path, sizeof(sv->attach_path), "%s/attach.sock", sv->cfg->runtime_dir);
	snprintf(sv->ctl_endpoint, sizeof(sv->ctl_endpoint), "ipc://%s/ctl.ipc",
		 sv->cfg->runtime_dir);
	return 0;
}

static int open_spill(struct server *sv, char *err, size_t err_len)
{
	const struct mconfig *c = sv->cfg;
	struct spill_opts so = {
	    .dirs = c->spill_dirs,
	    .dir_bytes = c->spill_bytes,
	    .session_bytes = c->spill_session_bytes,
	    .aio_kind = (enum aio_kind)c->spill_aio,
	    .sqpoll = c->spill_sqpoll,
	    .direct = c->spill_direct,
	    .no_direct_restore = !c->spill_direct_restore,
	    .batch_bytes = (uint32_t)c->spill_batch_bytes,
	    .queue_depth = (uint32_t)c->spill_queue_depth,
	    .header_bytes = (uint32_t)c->spill_header_bytes,
	    .io_timeout_ms = (int)c->spill_io_timeout_ms,
	    .backoff_ms = (uint32_t)c->spill_backoff_ms,
	    .starve_ms = (uint32_t)c->spill_starve_ms,
	    .test_fault = getenv("SPARDA_MEMSVC_TEST_AIO_FAULT"),
	};

	return spill_open(&so, &sv->spill, err, err_len);
}

int server_open(const struct mconfig *cfg, struct tenant_table *tenants, struct mstats *stats,
		struct server **out, char *err, size_t err_len)
{
	struct hotpath_opts ho = {.spin_ns = cfg->poll_spin_us * 1000, .stats = stats};
	struct server *sv = calloc(1, sizeof(*sv));
	int r;

	*out = NULL;
	if (!sv)
		return -ENOMEM;
	sv->cfg = cfg;
	sv->tenants = tenants;
	sv->stats = stats;
	sv->self_uid = geteuid();
	sv->next_id = 1;
	sv->listen_fd = sv->sig_fd = sv->timer_fd = sv->zmq_fd = -1;
	pthread_mutex_init(&sv->lock, NULL);
	pthread_mutex_init(&sv->jobs_lock, NULL);
	sv->attach_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (getenv("SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS")) {
		sv->test_attach_delay_ms =
		    strtoull(getenv("SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS"), NULL, 10);
		log_warn(TAG, "test hook: every attach waits before its session is made",
			 "SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS=%llu",
			 (unsigned long long)sv->test_attach_delay_ms);
	}
	if (getrandom(&sv->daemon_epoch, sizeof(sv->daemon_epoch), 0) != sizeof(sv->daemon_epoch))
		sv->daemon_epoch = time_now_ns() ^ ((uint64_t)getpid() << 32);
	sv->epfd = epoll_create1(EPOLL_CLOEXEC);
	r = sv->epfd < 0 ? err_from_errno() : 0;
	if (r)
		snprintf(err, err_len, "epoll: %s", err_str(r));
	if (!r) {
		r = open_signals_timer(sv);
		if (r)
			snprintf(err, err_len, "signalfd/timerfd: %s", err_str(r));
	}
	if (!r) {
		r = sv->attach_fd < 0 ? -EMFILE
				      : epoll_add(sv, sv->attach_fd, &sv->attach_src, SRC_ATTACH);
		if (r)
			snprintf(err, err_len, "attach eventfd: %s", err_str(r));
	}
	if (!r)
		r = open_paths(sv, err, err_len);
	if (!r)
		r = check_not_served(sv, err, err_len);
	if (!r)
		r = open_zmq(sv, err, err_len);
	if (!r && cfg->tcp[0]) {
		r = remote_open(sv->zctx, cfg, tenants, &sv->remote, err, err_len);
		if (!r)
			r = epoll_add(sv, remote_fd(sv->remote), &sv->tcp_src, SRC_TCP);
	}
	if (!r && (r = notify_open(&sv->notify)))
		snprintf(err, err_len, "notify: %s", err_str(r));
	if (!r && (r = hotpath_open(&ho, &sv->hp)))
		snprintf(err, err_len, "hot path threads: %s", err_str(r));
	if (!r && cfg->spill_dirs[0])
		r = open_spill(sv, err, err_len);
	if (r) {
		server_free(sv);
		return r;
	}
	*out = sv;
	return 0;
}

void server_free(struct server *sv)
{
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	sv->draining = true; /* attaches still under way are undone */
	pthread_mutex_unlock(&sv->lock);
	while (sv->n_jobs) {
		struct pollfd pfd = {.fd = sv->attach_fd, .events = POLLIN};
		(void)poll(&pfd, 1, 1000);
		attach_collect(sv);
	}
	while (sv->n_conns)
		conn_close(sv, sv->conns[0], "shutdown");
	dead_sweep(sv);
	spill_free(sv->spill);
	hotpath_free(sv->hp);
	notify_free(sv->notify);
	remote_free(sv->remote);
	if (sv->router)
		zmq_close(sv->router);
	if (sv->zctx)
		zmq_ctx_term(sv->zctx);
	if (sv->ctl_endpoint[0] && sv->router)
		unlink(sv->ctl_endpoint + strlen("ipc://"));
	if (sv->listen_fd >= 0) {
		close(sv->listen_fd);
		unlink(sv->attach_path);
	}
	if (sv->sig_fd >= 0)
		close(sv->sig_fd);
	if (sv->timer_fd >= 0)
		close(sv->timer_fd);
	if (sv->attach_fd >= 0)
		close(sv->attach_fd);
	if (sv->epfd >= 0)
		close(sv->epfd);
	free(sv->conns);
	pthread_mutex_destroy(&sv->jobs_lock);
	pthread_mutex_destroy(&sv->lock);
	free(sv);
}

void server_snapshot(struct server *sv, struct server_snapshot *o)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_lock(&sv->lock);
	for (size_t i = 0; i < sv->n_conns; i++) {
		struct session *s = sv->conns[i]->s;
		struct store_stats st;
		if (!s) {
			o->pending_attaches++;
			continue;
		}
		session_get_stats(s, &st);
		o->sessions++;
		o->arena_bytes += session_arena_size(s);
		o->slots_total += st.n_slots;
		o->slots_free += st.slots_free;
		o->slots_used += st.slots_used;
		o->slots_deferred += st.slots_deferred;
		o->units_allocated += st.units_allocated;
		o->units_resident += st.units_resident;
		o->units_spilled += st.units_spilled;
		o->units_loading += st.units_loading;
		o->units_lost += st.units_lost;
		o->seqs_open += st.seqs_open;
	}
	o->budget_bytes = sv->cfg->ram_budget;
	o->attaching_bytes = sv->budget_pending;
	o->attaches_ok = sv->attaches_ok;
	o->attaches_refused = sv->attaches_refused;
	o->draining = sv->draining;
	pthread_mutex_unlock(&sv->lock);
}

bool server_spill_stats(struct server *sv, struct spill_stats *out)
{
	if (!sv->spill)
		return false;
	spill_get_stats(sv->spill, out);
	return true;
}
