/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The memsvc client library: attach to a running sparda-memsvc (UNIX socket + SCM_RIGHTS), map
 * the session's ctl/sub/arena regions, and talk to it over the shared-memory rings (hot path)
 * and ZeroMQ (control path). Used by compute/ and by any other engine that wants the KV store.
 * The protocol is docs/memsvc-protocol.md; the shared structures are common/shm_abi.h.
 *
 * Errors: every call returns 0 or -errno and never aborts or hangs past the handle's
 * timeout_ms. A dead daemon (attach socket closed) is -ECONNRESET from then on; a draining
 * daemon or a closing session (ctl.closing) is -ESHUTDOWN; a request that gets no answer in
 * time is -ETIMEDOUT; a stale sequence handle is -ESTALE.
 *
 * Threads: a handle is NOT thread safe: one thread at a time per handle (the rings are SPSC
 * and the ZeroMQ socket follows ZeroMQ's one-thread rule). Use one handle per thread.
 */
#ifndef SPARDA_MEMSVC_CLIENT_H
#define SPARDA_MEMSVC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

struct memclient;

#define MEMCLIENT_NAME_MAX 64 /* tenant, client and stat names, NUL included */
#define MEMCLIENT_TOKEN_BYTES 16

struct memclient_opts {
	/* Where the daemon listens: runtime_dir (attach.sock and ctl.ipc inside it), or the
	 * explicit attach_path and ctl_endpoint (both then required; they win over runtime_dir).
	 * NULL runtime_dir and attach_path: the default runtime dir of the protocol document. */
	const char *runtime_dir;
	const char *attach_path;
	const char *ctl_endpoint; /* "ipc://..." or "tcp://..." */
	const char *tenant;	  /* NULL: "default" */
	const char *client_name;  /* NULL: "memclient" */
	struct sp_geometry geom;  /* unit_bytes may be 0 (derived and checked) */
	uint64_t arena_bytes;	  /* wanted; the daemon sizes the arena in whole slots */
	uint32_t max_seqs;	  /* sequence rows wanted */
	enum sp_wait_mode wait_mode;
	int timeout_ms; /* per request; <= 0: 5000 */
	/* The wait for the attach reply, for which the daemon first sizes, pre-faults and maps
	 * the arena (about a second per GiB on a slow host). <= 0: timeout_ms plus 1000 ms per
	 * GiB of arena_bytes. */
	int attach_timeout_ms;
	/* Forecasts as one ring entry per unit instead of through the vector area (the default
	 * packs a request's units four to a cache line; this is the comparison). */
	bool per_unit_forecast;
	/* Where memclient_open copies why an attach failed, in words (the daemon's refusal, e.g.
	 * the RAM budget the arena exceeds, or the check that failed), "" when it has none; NULL:
	 * not wanted. */
	char *error;
	size_t error_len;
};

/* A sequence handle: a row of the session's sequence table and its generation. */
struct memclient_seq {
	uint32_t index;
	uint32_t gen;
};

/* One unit: (sequence, layer, KV head, block). */
struct memclient_unit {
	struct memclient_seq seq;
	uint32_t layer;
	uint32_t head;
	uint32_t block;
};

/* The answer for one unit: status 0 or -errno; slot valid when status is 0. */
struct memclient_result {
	int32_t status;
	uint32_t slot;
	uint32_t gen;
};

/* What the residency word of a unit says (memclient_lookup). */
struct memclient_residency {
	enum sp_unit_state state;
	uint32_t slot; /* SP_UNIT_SLOT_NONE unless ALLOCATED, RESIDENT or LOADING */
	uint32_t gen;
};

struct memclient_stat {
	char name[MEMCLIENT_NAME_MAX];
	uint64_t value;
};

/*
 * Default runtime directory per the protocol document ($SPARDA_RUNTIME_DIR, else
 * $XDG_RUNTIME_DIR/sparda, else /run/sparda for root, else /tmp/sparda-$UID) written to buf.
 * Returns 0 or -ENAMETOOLONG.
 */
int memclient_default_runtime_dir(char *buf, size_t len);

/*
 * Attach: connect to attach.sock, send Hello, receive the five descriptors, map ctl read-only
 * and sub/arena read-write, check both headers against the reply and the request (magic,
 * layout version, daemon epoch, sizes, geometry), connect a ZeroMQ DEALER to the control
 * endpoint. On success *out is owned by the caller (memclient_close).
 * Returns 0, -EINVAL (bad opts or geometry), -ENOENT/-ECONNREFUSED (no daemon), -EACCES (uid
 * not admitted by the tenant), -EDQUOT (tenant quota), -ENOMEM (daemon budget or local),
 * -ETIMEDOUT, -EPROTO (headers or sizes do not match), -ESTALE (daemon epoch mismatch),
 * -ESHUTDOWN (daemon draining), or another -errno of the daemon's reply or of a syscall.
 */
int memclient_open(const struct memclient_opts *o, struct memclient **out);

/*
 * A remote session over tcp:// with CURVE (no shared memory: unit bytes travel with
 * memclient_read / memclient_write; the ring, lookup and arena calls return -EOPNOTSUPP, NULL
 * or empty). The Hello goes over ZeroMQ; the daemon's ZAP handler maps the client's public key
 * to its tenant. Keys are z85 text (40 characters).
 */
struct memclient_remote_opts {
	const char *endpoint;	/* "tcp://HOST:PORT" */
	const char *server_key; /* the daemon's public key */
	const char *public_key; /* this client's key pair */
	const char *secret_key;
	const char *tenant;	 /* NULL: "default" (the key decides; a mismatch is refused) */
	const char *client_name; /* NULL: "memclient" */
	struct sp_geometry geom;
	uint64_t arena_bytes;
	uint32_t max_seqs;
	int timeout_ms;	       /* per request; <= 0: 5000 */
	int attach_timeout_ms; /* the Hello's reply; <= 0: as memclient_opts says */
};

/*
 * Open a remote session. Returns 0, -EINVAL (bad opts or keys), -ETIMEDOUT (no answer: also
 * what a key the daemon does not admit looks like, since CURVE drops the connection),
 * -EOPNOTSUPP (libzmq without CURVE), or the daemon's -errno (-EACCES, -EDQUOT, -ENOMEM ...).
 */
int memclient_open_remote(const struct memclient_remote_opts *o, struct memclient **out);
/* Is this a remote session (no shared memory)? */
bool memclient_is_remote(const struct memclient *c);

/*
 * Remote sessions: copy unit bytes. write: data holds n units back to back (n * unit_bytes),
 * each unit must be ALLOCATED (write then commit). read: fills data the same way for RESIDENT
 * units, leased like a Forecast with step. Per-unit statuses in results; returns 0 when the
 * daemon answered, -EOPNOTSUPP on a local session, or a transport error.
 */
int memclient_write(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		    const void *data, struct memclient_result *results);
int memclient_read(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		   uint64_t step, void *data, struct memclient_result *results);

/* Detach: the session ends when the attach socket closes (memsvc reclaims it all); a remote
 * session sends bye. NULL ok. */
void memclient_close(struct memclient *c);

/* ---- sequences and units over ZeroMQ ----------------------------------------------------- */

/*
 * Open a sequence of max_blocks blocks per (layer, head). Returns 0 (*out filled), -ENOSPC (no
 * free row), -EDQUOT (tenant limit), -EINVAL, or a transport error (-ETIMEDOUT, -ECONNRESET,
 * -ESHUTDOWN, -EPERM when the daemon no longer knows the session).
 */
int memclient_seq_open(struct memclient *c, uint64_t user_key, uint32_t max_blocks,
		       struct memclient_seq *out);
/* Close a sequence and free its units. Returns 0, -ESTALE, -EINVAL or a transport error. */
int memclient_seq_close(struct memclient *c, struct memclient_seq seq);

/*
 * Batched unit requests over ZeroMQ (consecutive blocks are sent as ranges). results[i] is the
 * answer for units[i] (caller-owned arrays of n, n <= MEMCLIENT_MAX_BATCH).
 * Return 0 when the daemon answered (per-unit statuses in results: -EEXIST, -ENOSPC, -ESTALE,
 * -EINVAL, -ENOENT ...), or the request's -errno (then results are unspecified).
 * alloc: EMPTY -> ALLOCATED with a slot; the client then writes the slot's bytes.
 * commit: ALLOCATED -> RESIDENT, leased until the client epoch passes step.
 * free: any -> EMPTY.
 * forecast_zmq: the Forecast request of memclient_forecast, carried over ZeroMQ.
 */
#define MEMCLIENT_MAX_BATCH 65536u
int memclient_alloc(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		    struct memclient_result *results);
int memclient_commit(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		     uint64_t step, struct memclient_result *results);
int memclient_free_units(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			 struct memclient_result *results);
int memclient_forecast_zmq(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			   uint64_t step, struct memclient_result *results);

/*
 * With the NVMe tier (docs/memsvc-protocol.md), alloc answers -EAGAIN for a unit when no slot
 * is free yet while eviction to disk is under way, and forecast_zmq answers -EAGAIN for a
 * unit being restored. These variants resend such units until they get another answer or
 * timeout_ms passes (< 0: the handle's timeout; then -ETIMEDOUT).
 */
int memclient_alloc_wait(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			 struct memclient_result *results, int timeout_ms);
int memclient_forecast_zmq_wait(struct memclient *c, const struct memclient_unit *units,
				uint32_t n, uint64_t step, struct memclient_result *results,
				int timeout_ms);

/* Liveness round trip. Returns 0 or a transport error. */
int memclient_ping(struct memclient *c);

/*
 * Counters of the session, its tenant and the daemon. On 0, *out is a malloc'd array of *n
 * entries owned by the caller (free()). Returns 0, -ENOMEM or a transport error.
 */
int memclient_stats(struct memclient *c, struct memclient_stat **out, uint32_t *n);
/* Find name in a stats list; returns true and *value when present. */
bool memclient_stat_find(const struct memclient_stat *s, uint32_t n, const char *name,
			 uint64_t *value);

/* ---- the hot path: shared-memory rings ---------------------------------------------------- */

/*
 * Push one FORECAST entry per unit onto the SQ and ring the doorbell when memsvc sleeps.
 * results (n entries) receive the completions as memclient_forecast_reap pops them; units and
 * results must stay valid until the request is reaped or has failed. *req_id names the
 * request. At most MEMCLIENT_MAX_INFLIGHT requests are outstanding per handle.
 * Returns 0, -EAGAIN (not enough SQ space or request slots: reap first; nothing pushed),
 * -E2BIG (n larger than the rings), -EINVAL, -ECONNRESET, -ESHUTDOWN.
 */
#define MEMCLIENT_MAX_INFLIGHT 64u
int memclient_forecast_submit(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			      uint64_t step, struct memclient_result *results, uint32_t *req_id);

/*
 * Pop completions until request req_id is complete or timeout_ms passes (< 0: the handle's
 * timeout). Completions of other outstanding requests are filed into their results on the
 * way; completions of abandoned requests are dropped. Completions are matched to units by
 * coordinates: a unit restored from the NVMe tier is answered after later ones
 * (SP_CQE_F_DEFERRED), status 0 once resident or -ENOENT when its copy could not be read. Poll mode spins; sleep mode spins
 * briefly then sleeps on the CQ doorbell. Both watch the attach socket and ctl.closing.
 * Returns 0 (results filled; a completion that does not match its unit has -EPROTO),
 * -ETIMEDOUT, -ECONNRESET or -ESHUTDOWN (completions already posted are still taken: a
 * request fully answered before the session closed returns 0; otherwise it is abandoned),
 * -ENOENT (unknown or already reaped req_id).
 */
int memclient_forecast_reap(struct memclient *c, uint32_t req_id, int timeout_ms);

/*
 * Blocking Forecast over the rings: submit (in pieces that fit the rings) and reap. Needs a
 * free request slot: with MEMCLIENT_MAX_INFLIGHT submitted requests not yet reaped it waits
 * for one until the timeout (-ETIMEDOUT).
 * Returns as memclient_forecast_reap; per-unit statuses in results (-ENOENT: miss).
 */
int memclient_forecast(struct memclient *c, const struct memclient_unit *units, uint32_t n,
		       uint64_t step, struct memclient_result *results);

/* Blocking COMMIT over the rings (same contract as memclient_commit). */
int memclient_commit_ring(struct memclient *c, const struct memclient_unit *units, uint32_t n,
			  uint64_t step, struct memclient_result *results);

/*
 * Publish the client epoch: every read of arena slots for decode steps <= step has completed
 * (store-release into sub.client_epoch). Slots leased at a step <= step may then be reused.
 */
void memclient_epoch_publish(struct memclient *c, uint64_t step);

/* ---- direct reads of the shared regions -------------------------------------------------- */

/*
 * Read a unit's residency word (acquire). Returns 0, -ESTALE (the sequence row's generation
 * differs or the row is not open), -EINVAL (ids out of range).
 */
int memclient_lookup(struct memclient *c, const struct memclient_unit *u,
		     struct memclient_residency *out);

/* Bytes of an arena slot (unit_bytes long), or NULL when slot is out of range. */
void *memclient_slot_ptr(struct memclient *c, uint32_t slot);
/*
 * Bytes of a unit that is ALLOCATED (to write) or RESIDENT (to read; stable only while
 * leased), or NULL otherwise.
 */
void *memclient_unit_ptr(struct memclient *c, const struct memclient_unit *u);

/*
 * The unit-word pool of the ctl region (read-only; memsvc stores each word with release, so
 * readers load with acquire or through a device mapping after a fence): base and size in
 * bytes. Owned by the handle. For the gather kernel, which resolves slots itself.
 */
void memclient_unit_words(struct memclient *c, const uint64_t **words, size_t *bytes);
/*
 * Index in memclient_unit_words() of the word of (layer 0, head 0, block 0) of seq; the word
 * of (l, h, b) is at that index + (l * n_kv_heads + h) * max_blocks + b.
 * Returns 0, -ESTALE (the row is not open with seq.gen), -EINVAL (index out of range),
 * -EPROTO (the row points outside the pool).
 */
int memclient_seq_word_base(struct memclient *c, struct memclient_seq seq, int64_t *word_base);

/* The arena mapping (for cudaHostRegister): base and size in bytes. Owned by the handle. */
void memclient_arena(struct memclient *c, void **base, size_t *bytes);
const struct sp_geometry *memclient_geometry(const struct memclient *c);
uint64_t memclient_n_slots(const struct memclient *c);
uint64_t memclient_daemon_epoch(const struct memclient *c);
/* The session id and token of the attach reply (for tools that speak raw ZeroMQ). */
uint64_t memclient_session_id(const struct memclient *c);
void memclient_token(const struct memclient *c, uint8_t token[MEMCLIENT_TOKEN_BYTES]);
/* The daemon's error text of the last failed request ("" when none). Owned by the handle. */
const char *memclient_last_error(const struct memclient *c);
/* Unit answers dropped because their request had been abandoned (timed out). */
uint64_t memclient_late_completions(const struct memclient *c);
/*
 * Forecast requests sent through the vector area (the rest went as one ring entry per unit:
 * per_unit_forecast, a daemon without the area, or the area full of outstanding requests).
 */
uint64_t memclient_forecasts_vectored(const struct memclient *c);

#endif
