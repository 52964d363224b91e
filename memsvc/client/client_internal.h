/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside the memsvc client library: the handle shared by client.c (attach, mappings),
 * client_zmq.c (control requests) and client_ring.c (the shared-memory hot path).
 * Never included from outside memsvc/client/.
 */
#ifndef SPARDA_MEMSVC_CLIENT_INTERNAL_H
#define SPARDA_MEMSVC_CLIENT_INTERNAL_H

#include "client.h"
#include "err.h"
#include "ring.h"
#include "wire.h"

/*
 * An outstanding ring request. Completions come in submission order, one per unit; a PENDING
 * one (a unit being restored) leaves its result MEMCLIENT_AWAITING until the DEFERRED answer
 * naming that unit arrives.
 */
#define MEMCLIENT_AWAITING INT32_MIN
struct memclient_pending {
	bool used;
	uint16_t op;
	uint32_t req_id;
	uint32_t n;
	uint32_t done; /* final answers filed */
	uint32_t next; /* in-order answers filed (PENDING ones included) */
	/* A vectored FORECAST: its entries [vec_first, vec_first + n) of the vector area, and
	 * the order of that reservation (the oldest outstanding one bounds the free space). */
	bool vec;
	uint32_t vec_first;
	uint64_t vec_order;
	const struct memclient_unit *units;
	struct memclient_result *results;
};

struct memclient {
	struct sp_geometry geom;
	enum sp_wait_mode wait_mode;
	int timeout_ms;
	int attach_timeout_ms; /* the wait for the attach reply */
	int dead;    /* 0, or the sticky -ECONNRESET / -ESHUTDOWN once the session is gone */
	bool remote; /* tcp session: no attach socket, no shared memory */

	int attach_fd;            /* the session lives as long as this socket */
	uint64_t socket_check_ns; /* when memclient_health_recent last polled attach_fd */
	int sq_doorbell;
	int cq_doorbell;

	void *ctl; /* read-only */
	size_t ctl_bytes;
	void *sub;
	size_t sub_bytes;
	uint8_t *arena;
	size_t arena_bytes;
	const struct sp_ctl_header *ctl_hdr;
	struct sp_sub_header *sub_hdr;
	struct ring sq; /* we produce */
	struct ring cq; /* we consume */
	bool per_unit_forecast;	  /* memclient_opts.per_unit_forecast */
	struct sp_vec_entry *vec; /* the vector area (NULL: none, or the client asked for none) */
	uint32_t vec_entries;
	uint32_t vec_tail;   /* where the newest reservation ends */
	uint64_t vec_orders; /* reservations made */

	uint64_t session_id;
	uint8_t token[WIRE_TOKEN_BYTES];
	uint64_t daemon_epoch;
	uint64_t n_slots;
	uint32_t max_seqs;
	uint64_t unit_words_cap;

	void *zctx;
	void *zsock;
	uint64_t next_zmq_id;
	uint32_t next_req_id;
	struct memclient_pending pending[MEMCLIENT_MAX_INFLIGHT];
	uint64_t late;
	char last_error[WIRE_ERROR_MAX + 64];
};

/*
 * Is the session still alive? Checks the sticky state, ctl.closing and the attach socket
 * (POLLHUP: the daemon is gone). Returns 0, -ESHUTDOWN or -ECONNRESET (then sticky).
 */
int memclient_health(struct memclient *c);
/*
 * The same on the submit path: the sticky state and ctl.closing every call, the attach socket
 * (a poll(2) system call) at most once per MEMCLIENT_SOCKET_CHECK_NS. A daemon that died since
 * is found by the reap's wait, which polls the socket while it spins.
 */
#define MEMCLIENT_SOCKET_CHECK_NS 1000000ull
int memclient_health_recent(struct memclient *c);
/* Mark the session dead with err (sticky) and return err. */
int memclient_set_dead(struct memclient *c, int err);

/*
 * One control round trip with optional data frames (client_zmq.c). On 0 the caller finis *rp
 * and *in (the reply's data frame, if any); on error both need nothing. A non-zero reply
 * status is the result, its text kept in last_error. memclient_call_wait waits timeout_ms for
 * the reply (< 0: the handle's timeout, as memclient_call does).
 */
int memclient_call(struct memclient *c, struct wire_request *rq, const void *data, size_t data_len,
		   struct wire_reply *rp, struct wire_frames *in);
int memclient_call_wait(struct memclient *c, struct wire_request *rq, const void *data,
			size_t data_len, struct wire_reply *rp, struct wire_frames *in,
			int timeout_ms);
/* A units request (ranges built from u) with optional data frames; results into res. */
int memclient_units_call(struct memclient *c, enum wire_kind kind, const struct memclient_unit *u,
			 uint32_t n, uint64_t step, struct memclient_result *res, const void *data,
			 size_t data_len, struct wire_frames *in);

/* Remote sessions: tell the daemon we leave (best effort, bounded by the timeout). */
void memclient_remote_bye(struct memclient *c);

/* ZeroMQ socket set-up and teardown (client_zmq.c). Returns 0 or -errno. */
int memclient_zmq_connect(struct memclient *c, const char *endpoint);
void memclient_zmq_close(struct memclient *c);

#define MEMCLIENT_DEFAULT_TIMEOUT_MS 5000
/* The attach reply's allowance per GiB of arena when attach_timeout_ms is not set. */
#define MEMCLIENT_ATTACH_MS_PER_GIB 1000

/* The wait for a Hello's reply: attach_timeout_ms if > 0, else timeout_ms plus the allowance
 * for arena_bytes (the daemon pre-faults the arena before it answers). */
int memclient_attach_wait_ms(int attach_timeout_ms, int timeout_ms, uint64_t arena_bytes);

/* Check a geometry's fields and derive unit_bytes (a non-zero one must match). 0 or -EINVAL. */
int memclient_geometry_fill(struct sp_geometry *g);

/* Deadline in ns from a timeout in ms (< 0: the handle's). */
uint64_t memclient_deadline(const struct memclient *c, int timeout_ms);

#endif
