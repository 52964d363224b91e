/* SPDX-License-Identifier: Apache-2.0 */
/*
 * State shared by the server's own files (server.c: loop, connections, drain; attach.c: attach;
 * ctlreq.c: ZeroMQ requests). Never included outside memsvc/.
 */
#ifndef SPARDA_MEMSVC_SERVER_INTERNAL_H
#define SPARDA_MEMSVC_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "server.h"

struct hotpath;
struct notify;
struct remote;
struct session;
struct spill;
struct tenant;
struct wire_frames;
struct wire_reply;
struct wire_request;

enum src_kind { SRC_LISTEN, SRC_CONN, SRC_SIGNAL, SRC_TIMER, SRC_ZMQ, SRC_TCP, SRC_ATTACH };

struct attach_job;

struct evsrc {
	enum src_kind kind;
};

/*
 * One accepted attach socket: pending (no session yet) or carrying a session; or a remote
 * (tcp) session, which has no socket (fd -1), is pending (job) from its admitted Hello to the
 * reply, and ends on bye or after remote-idle-ms without a request.
 */
struct conn {
	struct evsrc src; /* first: epoll data.ptr points here */
	int fd;
	struct session *s;
	uint64_t accepted_ms;
	uint64_t last_ms; /* last request (remote sessions' idle clock) */
	bool remote;
	bool dead;
	bool bye; /* the session asked to end (ZeroMQ bye): torn down after the reply */
	struct attach_job *job; /* admitted; its session is being created off the loop */
	struct conn *next_dead; /* closed in this loop turn; freed after the event batch */
};

struct server {
	const struct mconfig *cfg;
	struct tenant_table *tenants;
	struct mstats *stats;
	struct hotpath *hp;
	struct notify *notify;
	uint64_t daemon_epoch, next_id;
	uid_t self_uid;
	int epfd, listen_fd, sig_fd, timer_fd, zmq_fd;
	struct evsrc listen_src, sig_src, timer_src, zmq_src;
	void *zctx, *router;
	struct remote *remote; /* the tcp endpoint, or NULL */
	struct spill *spill;   /* the NVMe tier, or NULL (RAM only) */
	struct evsrc tcp_src;
	char attach_path[300], ctl_endpoint[300]; /* runtime dir (<= 255) + file name */
	/* Guards conns[] and the budget against the metrics thread; the loop is the only writer. */
	pthread_mutex_t lock;
	struct conn **conns;
	struct conn *dead; /* closed conns whose memory a pending event may still name */
	size_t n_conns, cap_conns;
	uint64_t budget_used, attaches_ok, attaches_refused;
	/*
	 * Attaches whose session (memfds, the arena's pre-fault: seconds for tens of GB) is being
	 * created on a thread of its own, so the loop keeps serving: their bytes count against
	 * the budget (budget_pending, under lock); finished jobs queue on jobs_done (jobs_lock)
	 * and attach_fd wakes the loop, which completes or undoes them.
	 */
	uint64_t budget_pending;
	size_t n_jobs; /* running or finished, not yet collected (loop thread) */
	pthread_mutex_t jobs_lock;
	struct attach_job *jobs_done;
	int attach_fd;
	struct evsrc attach_src;
	uint64_t test_attach_delay_ms; /* SPARDA_MEMSVC_TEST_ATTACH_DELAY_MS: tests only */
	bool draining, done;
	uint64_t drain_deadline_ms;
};

/* Serve every ZeroMQ message waiting on the ipc router (ctlreq.c). */
void ctlreq_serve(struct server *sv);
/*
 * Answer one received message (ctlreq.c): recv_status is wire_zmq_recv's result; auth is the
 * tenant of the sender's CURVE key on tcp (requests may then only name its sessions and a
 * hello creates a remote session), NULL on ipc. f stays the caller's.
 */
void ctlreq_handle(struct server *sv, void *sock, struct tenant *auth, struct wire_frames *f,
		   int recv_status);
/*
 * A hello on tcp, from the peer f->identity on router sock: admit it for tenant tn and start
 * making its remote session off the loop, as a local attach (attach.c). Returns 0 when it is
 * under way: the server sends the reply (hello or error) itself once the session is made;
 * or -errno (refused: -ESHUTDOWN draining, -EUSERS, -EACCES, -EINVAL, -ENOMEM, -EDQUOT ...)
 * with the error reply in rp, for the caller to send. Loop thread.
 */
int server_remote_hello(struct server *sv, struct tenant *tn, const struct wire_request *rq,
			void *sock, const struct wire_frames *f, struct wire_reply *rp);
/* Append c to the connections (server.c). */
int server_conns_push(struct server *sv, struct conn *c);
/* Close a connection; with a session, reclaim everything it held at once (server.c). */
void server_conn_close(struct server *sv, struct conn *c, const char *why);
/* Stop a session's spill work and give its disk back (server.c). */
void server_tier_detach(struct server *sv, struct session *s);
/* Sessions attached or being attached (server.c). */
size_t server_n_sessions(const struct server *sv);
/* Read and act on a pending connection's Hello (attach.c). */
void attach_handle(struct server *sv, struct conn *c);
/* Complete or undo the attaches whose sessions are made (attach.c; attach_fd woke the loop). */
void attach_collect(struct server *sv);
/* The job's connection closed: the job is undone when collected (attach.c). */
void attach_job_orphan(struct attach_job *j);
/* The conn carrying session id, or NULL (loop thread). */
struct conn *server_find_session(struct server *sv, uint64_t id);
/* Start draining (idempotent); deadline_ms 0 = the configured drain timeout. */
void server_drain(struct server *sv, uint64_t deadline_ms, const char *why);

#endif
