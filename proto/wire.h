/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire module: the only code that sees protobuf-c. It turns memsvc control messages
 * (proto/sparda.proto) into plain C structs and back, and no struct leaves decode without
 * passing validation: size cap before unpacking, ids in range, lengths that fit, enums known,
 * strings NUL-free and bounded. It also owns ZeroMQ framing and socket settings.
 * Thread safety: all functions are reentrant; sockets follow ZeroMQ's one-thread rule.
 */
#ifndef SPARDA_PROTO_WIRE_H
#define SPARDA_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

#define WIRE_MAX_MSG_BYTES (1u << 20) /* cap checked before unpacking; also ZMQ_MAXMSGSIZE */
#define WIRE_MAX_DATA_BYTES (64u << 20) /* cap on a remote data frame */
#define WIRE_MAX_RANGES 4096u
#define WIRE_MAX_UNITS 65536u /* sum of range counts in one request */
#define WIRE_MAX_STATS 512u
#define WIRE_NAME_MAX 64      /* tenant, client name and stat names, NUL included */
#define WIRE_ERROR_MAX 256
#define WIRE_TOKEN_BYTES 16
#define WIRE_MAX_SEQS 65536u
#define WIRE_HWM 1024 /* ZeroMQ send/receive high-water marks */

enum wire_kind {
	WIRE_NONE = 0,
	WIRE_HELLO,
	WIRE_SEQ_OPEN,
	WIRE_SEQ_CLOSE,
	WIRE_ALLOC,
	WIRE_COMMIT,
	WIRE_FREE,
	WIRE_FORECAST,
	WIRE_STATS,
	WIRE_DRAIN,
	WIRE_BYE,
	WIRE_READ,  /* remote clients: reply carries unit bytes in a data frame */
	WIRE_WRITE, /* remote clients: request carries unit bytes in a data frame */
	WIRE_PING,
	WIRE_KIND_MAX,
};
const char *wire_kind_name(enum wire_kind k);

struct wire_range {
	uint32_t seq_index, seq_gen, layer, head, block, count;
};

struct wire_request {
	uint32_t protocol_version;
	uint64_t request_id;
	uint64_t session_id;
	uint8_t token[WIRE_TOKEN_BYTES];
	enum wire_kind kind;
	union {
		struct {
			char tenant[WIRE_NAME_MAX];
			char client_name[WIRE_NAME_MAX];
			uint64_t arena_bytes;
			struct sp_geometry geom; /* unit_bytes filled in by decode */
			uint32_t wait_mode;      /* enum sp_wait_mode */
			uint32_t max_seqs;
		} hello;
		struct {
			uint64_t user_key;
			uint32_t max_blocks;
		} seq_open;
		struct {
			uint32_t seq_index, seq_gen;
		} seq_close;
		struct { /* ALLOC, COMMIT, FREE, FORECAST, READ, WRITE */
			struct wire_range *ranges; /* owned; freed by wire_request_fini */
			uint32_t n_ranges;
			uint32_t n_units; /* sum of counts, <= WIRE_MAX_UNITS */
			uint64_t step;
		} units;
		struct {
			uint32_t deadline_ms;
		} drain;
	} u;
};

struct wire_unit_result {
	int32_t status; /* 0 or -errno */
	uint32_t slot;
	uint32_t gen;
};

struct wire_stat {
	char name[WIRE_NAME_MAX];
	uint64_t value;
};

struct wire_reply {
	uint64_t request_id;
	int32_t status; /* 0 or -errno */
	char error[WIRE_ERROR_MAX];
	enum wire_kind kind; /* which body: WIRE_HELLO, WIRE_SEQ_OPEN, WIRE_FORECAST (units),
				WIRE_STATS, or WIRE_NONE for an empty body */
	union {
		struct {
			uint64_t session_id;
			uint8_t token[WIRE_TOKEN_BYTES];
			uint64_t daemon_epoch;
			uint64_t arena_bytes, n_slots, ctl_bytes, sub_bytes, unit_words_cap;
			uint32_t max_seqs;
			struct sp_geometry geom;
		} hello;
		struct {
			uint32_t seq_index, seq_gen;
		} seq_open;
		struct {
			struct wire_unit_result *results; /* owned */
			uint32_t n;
		} units;
		struct {
			struct wire_stat *stats; /* owned */
			uint32_t n;
		} stats;
	} u;
};

/*
 * Validate a geometry and fill geom->unit_bytes. Returns 0 or -EINVAL with a message naming
 * the field in err.
 */
int wire_geometry_check(struct sp_geometry *geom, char *err, size_t err_len);

/*
 * Encode into a malloc'd buffer (*buf, *len); the caller frees with free().
 * Returns 0, -EINVAL (the struct itself fails validation), -EMSGSIZE, -ENOMEM.
 */
int wire_request_pack(const struct wire_request *r, void **buf, size_t *len);
int wire_reply_pack(const struct wire_reply *r, void **buf, size_t *len);

/*
 * Decode and validate. On success the caller owns *out and releases it with *_fini.
 * Returns 0, -EMSGSIZE (over WIRE_MAX_MSG_BYTES; not unpacked), -EBADMSG (not a valid
 * protobuf message or no body), -EPROTONOSUPPORT (protocol version), -EINVAL (a field out of
 * range; err names it), -ENOMEM. On error *out is zeroed and needs no fini.
 */
int wire_request_unpack(const void *buf, size_t len, struct wire_request *out, char *err,
			size_t err_len);
int wire_reply_unpack(const void *buf, size_t len, struct wire_reply *out, char *err,
		      size_t err_len);
void wire_request_fini(struct wire_request *r);
void wire_reply_fini(struct wire_reply *r);

/* Convenience: a reply with status and a formatted error message, no body. */
void wire_reply_error(struct wire_reply *r, uint64_t request_id, int status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- ZeroMQ ------------------------------------------------------------------------------ */

/*
 * Apply the project's socket settings: linger 0, send/receive HWM WIRE_HWM, ZMQ_MAXMSGSIZE
 * (WIRE_MAX_DATA_BYTES + WIRE_MAX_MSG_BYTES), and ZMQ_ROUTER_MANDATORY on routers.
 * Returns 0 or -errno.
 */
int wire_zmq_setup(void *sock, bool router);

/*
 * Send one message: [identity] (routers only; NULL for dealers) [payload] [data] (data
 * optional). flags: 0 or ZMQ_DONTWAIT. Returns 0 or -errno (-EHOSTUNREACH: the router's peer is
 * gone; -EAGAIN: HWM reached with DONTWAIT).
 */
int wire_zmq_send(void *sock, const void *identity, size_t id_len, const void *payload,
		  size_t len, const void *data, size_t data_len, int flags);

/*
 * Receive one message. For routers the first frame is the identity. Up to one data frame.
 * Extra frames are drained and the message rejected with -EBADMSG. Buffers are malloc'd and
 * owned by the caller (wire_frames_fini). Returns 0 or -errno (-EAGAIN with ZMQ_DONTWAIT).
 * On error (-EBADMSG, -EMSGSIZE) a router's identity is kept so the sender can be answered:
 * call wire_frames_fini after every call, whatever it returned.
 */
struct wire_frames {
	void *identity;
	size_t id_len;
	void *payload;
	size_t len;
	void *data;
	size_t data_len;
};
int wire_zmq_recv(void *sock, bool router, struct wire_frames *f, int flags);
void wire_frames_fini(struct wire_frames *f);

#endif
