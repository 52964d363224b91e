/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event loop and the session lifecycle: connections (attach itself is attach.c), teardown
 * when the attach socket closes, housekeeping on a timer, the drain that SIGTERM/SIGINT or a
 * drain request starts, and the tenants reload on SIGHUP.
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

static int open_attach(struct server *sv, char *err, size_t err_len);

/* ---- connections ------------------------------------------------------------------------- */

/* Append c to conns[] (under the lock, for the metrics thread). */
int server_conns_push(struct server *sv, struct conn *c)
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
	r = server_conns_push(sv, c);
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
void server_tier_detach(struct server *sv, struct session *s)
{
	if (s && sv->spill && spill_session_remove(sv->spill, s))
		tenant_disk_release(session_tenant(s), session_tier_bytes(s));
}

/* Close a connection; with a session, reclaim everything it held at once. */
void server_conn_close(struct server *sv, struct conn *c, const char *why)
{
	struct session *s = c->s;

	if (c->job) { /* its session is still being made: attach_finish undoes it */
		attach_job_orphan(c->job);
		c->job = NULL;
	}

	if (s && !c->remote)
		hotpath_remove(sv->hp, s);
	server_tier_detach(sv, s);
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

size_t server_n_sessions(const struct server *sv)
{
	size_t n = 0;

	for (size_t i = 0; i < sv->n_conns; i++)
		n += sv->conns[i]->s != NULL || sv->conns[i]->job != NULL;
	return n;
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
		server_conn_close(sv, c, "closed while attaching");
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
	server_conn_close(sv, c,
			  (events & (EPOLLHUP | EPOLLRDHUP)) ? "socket closed" : "socket error");
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
	log_info(TAG, "draining", "reason=%s sessions=%zu deadline_ms=%llu", why,
		 server_n_sessions(sv), (unsigned long long)deadline_ms);
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
			server_conn_close(sv, c, "remote idle");
			i--;
		} else if (c->s) {
			session_reclaim(c->s);
		} else if (!c->job && now - c->accepted_ms > ATTACH_TIMEOUT_MS) {
			server_conn_close(sv, c, "no hello");
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
			server_conn_close(sv, sv->conns[i], "bye");
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
	log_info(TAG, "drained", "sessions_left=%zu", server_n_sessions(sv));
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
		server_conn_close(sv, sv->conns[0], "shutdown");
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
