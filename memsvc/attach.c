/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attach: a local client's Hello on attach.sock (SO_PEERCRED, tenant, quota, budget) or a
 * remote client's on tcp is admitted on the loop, its session (memfds, the arena's pre-fault)
 * is made on a thread of its own, and the loop completes it - the reply with the session's
 * descriptors over SCM_RIGHTS, or through the ZeroMQ router for a remote one - or undoes it
 * when the client left or a drain began meanwhile.
 */
#include "server_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "fdpass.h"
#include "hotpath.h"
#include "log.h"
#include "mconfig.h"
#include "mstats.h"
#include "remote.h"
#include "ring.h"
#include "session.h"
#include "spill.h"
#include "tenant.h"
#include "timeutil.h"
#include "wire.h"

#define TAG "server"
#define ATTACH_MSG_MAX (64u << 10)
#define ZMQ_ID_MAX 255 /* a ROUTER peer's routing id (ZMTP caps it at 255 bytes) */

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

void attach_job_orphan(struct attach_job *j)
{
	j->c = NULL;
}

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
	if (server_n_sessions(sv) >= sv->cfg->max_sessions) {
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

/*
 * Session options of an admitted Hello. The client name is copied into the job (rq does not
 * outlive the loop's turn); no pre-fault progress callback: the session is made off the loop,
 * which keeps feeding the watchdog.
 */
static void opts_fill(struct server *sv, const struct wire_request *rq, struct attach_job *j)
{
	struct session_opts *so = &j->so;

	snprintf(j->client_name, sizeof(j->client_name), "%s", rq->u.hello.client_name);
	so->id = sv->next_id++;
	so->client_name = j->client_name;
	so->max_seqs = rq->u.hello.max_seqs;
	/* a remote client has no rings */
	so->wait_mode = j->zsock ? SP_WAIT_SLEEP : rq->u.hello.wait_mode;
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
static int tier_attach(struct server *sv, struct attach_job *j)
{
	int r;

	if (!j->tier_bytes)
		return 0;
	r = spill_session_add(sv->spill, j->s, j->tier_bytes);
	if (r) {
		tier_unreserve(sv, &j->so, j->tier_bytes);
		snprintf(j->err, sizeof(j->err), "opening the session's spill files: %s",
			 err_str(r));
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
	opts_fill(sv, rq, j);
	j->so.uid = uid;
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
	if (server_conns_push(sv, c)) {
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
			server_conn_close(sv, c, "attach refused");
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
	server_tier_detach(sv, j->s);
	session_destroy(j->s);
	tenant_session_release(j->so.tenant, j->so.arena_bytes);
	if (j->c) {
		attach_refuse(sv, j->c, j, j->req_id, r, j->err);
		server_conn_close(sv, j->c, "attach refused");
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
		r = tier_attach(sv, j);
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
void attach_collect(struct server *sv)
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
void attach_handle(struct server *sv, struct conn *c)
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
			server_conn_close(sv, c, "closed before hello");
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
		server_conn_close(sv, c, "attach refused");
		return;
	}
	wire_request_fini(&rq);
}
