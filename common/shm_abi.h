/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shared-memory ABI between sparda-memsvc and its local clients: every structure that
 * crosses the process boundary. Fixed-width types, offsets (never pointers), and a header with
 * magic, layout version and daemon epoch that both sides check on attach.
 *
 * A session (one attached client) gets three memfds, all sealed against resizing:
 *   ctl   - written only by memsvc, mapped read-only by the client (sealed F_SEAL_FUTURE_WRITE
 *           after memsvc maps it): header, sequence table, unit table, completion ring (CQ).
 *   sub   - written by the client, read by memsvc: submission ring (SQ), the client's
 *           published epoch, and the completion ring (CQ) and vector area, which memsvc writes
 *           and the client reads (ctl is read-only to the client).
 *   arena - KV data: n_slots fixed-size unit slots. The client writes new units into slots
 *           memsvc allocated to it and reads resident units; memsvc reads/writes for spill.
 * plus two eventfds: sq_doorbell (client -> memsvc) and cq_doorbell (memsvc -> client).
 */
#ifndef SPARDA_COMMON_SHM_ABI_H
#define SPARDA_COMMON_SHM_ABI_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#define SP_SHM_MAGIC 0x53504441524441ull /* "SPDARDA" */
#define SP_SHM_LAYOUT_VERSION 2u
#define SP_PROTOCOL_VERSION 1u
#define SP_CACHELINE 64

/* ---- units ------------------------------------------------------------------------------- */

/*
 * A unit is one (sequence, layer, KV head, block): block_tokens keys then block_tokens values,
 * each head_dim elements of dtype_bytes: unit_bytes = 2 * block_tokens * head_dim * dtype_bytes
 * (32 KiB for head_dim 128, block 64, bf16). A unit's index inside its sequence is
 *   ((layer * n_kv_heads) + head) * max_blocks + block.
 */
struct sp_geometry {
	uint32_t n_layers;
	uint32_t n_kv_heads;
	uint32_t head_dim;
	uint32_t block_tokens;
	uint32_t dtype_bytes;
	uint32_t unit_bytes; /* derived; checked on both sides */
};
_Static_assert(sizeof(struct sp_geometry) == 24, "sp_geometry ABI");

/* Limits the daemon enforces on a declared geometry. */
#define SP_MAX_LAYERS 1024u
#define SP_MAX_KV_HEADS 256u
#define SP_MAX_HEAD_DIM 1024u
#define SP_MAX_BLOCK_TOKENS 4096u
#define SP_MAX_UNIT_BYTES (64u << 20)

/*
 * Residency of one unit, packed into one 64-bit word so readers see slot, generation and state
 * together: bits 0..31 slot, 32..55 generation (low 24 bits), 56..63 state.
 */
enum sp_unit_state {
	SP_UNIT_EMPTY = 0,     /* never allocated, or freed */
	SP_UNIT_ALLOCATED = 1, /* slot assigned; client writing; not readable yet */
	SP_UNIT_RESIDENT = 2,  /* committed and in its RAM slot */
	SP_UNIT_SPILLED = 3,   /* committed, on the NVMe tier only (slot field invalid) */
	SP_UNIT_LOADING = 4,   /* being restored from NVMe into the slot field's slot (or
				  SP_UNIT_SLOT_NONE while it waits for one); not readable yet */
};
#define SP_UNIT_SLOT_NONE 0xffffffffu

static inline uint64_t sp_unit_word(uint32_t slot, uint32_t gen, enum sp_unit_state st)
{
	return (uint64_t)slot | ((uint64_t)(gen & 0xffffffu) << 32) | ((uint64_t)st << 56);
}
static inline uint32_t sp_unit_word_slot(uint64_t w)
{
	return (uint32_t)w;
}
static inline uint32_t sp_unit_word_gen(uint64_t w)
{
	return (uint32_t)(w >> 32) & 0xffffffu;
}
static inline enum sp_unit_state sp_unit_word_state(uint64_t w)
{
	return (enum sp_unit_state)(w >> 56);
}

/* ---- sequences --------------------------------------------------------------------------- */

enum sp_seq_state { SP_SEQ_FREE = 0, SP_SEQ_OPEN = 1, SP_SEQ_CLOSING = 2 };

/*
 * One row of the sequence table (ctl region). A sequence handle is (index, gen): a stale handle
 * (gen mismatch) is rejected with -ESTALE. units_off is the byte offset in the ctl region of the
 * sequence's unit words (n_layers * n_kv_heads * max_blocks of _Atomic uint64_t).
 */
struct sp_seq_desc {
	/* memsvc stores with release after filling the row; clients load with acquire. */
	_Atomic uint32_t gen;
	uint32_t state; /* enum sp_seq_state */
	uint32_t max_blocks;
	uint32_t reserved;
	uint64_t units_off;
	uint64_t user_key; /* client's own id for the sequence, echoed back */
};
_Static_assert(sizeof(struct sp_seq_desc) == 32, "sp_seq_desc ABI");

/* ---- rings ------------------------------------------------------------------------------- */

enum sp_op {
	SP_OP_NOP = 0,
	SP_OP_FORECAST = 1, /* make unit resident and lease it until the client epoch passes step */
	SP_OP_COMMIT = 2,   /* unit written in its ALLOCATED slot; publish it as RESIDENT */
	SP_OP_ALLOC = 3,    /* allocate a slot for a new unit (state ALLOCATED) */
	SP_OP_FREE = 4,     /* drop one unit */
	/*
	 * FORECAST of a vector of units of one sequence held in the sub region's vector area
	 * (struct sp_vec_entry): entries [block, block + head) (head >= 1, layer 0), answered in
	 * place (slot, generation, status per entry) and by one CQE of this op naming the same
	 * range. A unit answered -EINPROGRESS gets its SP_CQE_F_DEFERRED CQE (op FORECAST, the
	 * unit's coordinates) later, as a plain FORECAST would. A range outside the area: -EINVAL.
	 */
	SP_OP_FORECAST_VEC = 5,
	SP_OP_MAX = 6,
};

#define SP_SQE_F_LAST 0x1u /* last entry of a request: memsvc may post the request's summary */
/*
 * CQEs come in submission order, one per SQE, with two exceptions for a FORECAST of a SPILLED
 * or LOADING unit (NVMe tier): its in-order CQE carries SP_CQE_F_PENDING and status
 * -EINPROGRESS (restore under way), and a second CQE with SP_CQE_F_DEFERRED follows once the
 * unit is resident (status 0, leased) or lost (-ENOENT: its copy failed verification or I/O),
 * possibly after CQEs of later entries. Clients match a DEFERRED CQE to the PENDING unit of
 * the same req_id with the same coordinates.
 */
#define SP_CQE_F_PENDING 0x200u
#define SP_CQE_F_DEFERRED 0x100u

/* Submission entry (client -> memsvc), one per unit. 32 bytes. */
struct sp_sqe {
	uint16_t op;    /* enum sp_op */
	uint16_t flags; /* SP_SQE_F_* */
	uint32_t req_id;
	uint32_t seq_index;
	uint32_t seq_gen;
	uint16_t layer;
	uint16_t head;
	uint32_t block;
	uint64_t step; /* client's decode step for leases (FORECAST), or user data */
};
_Static_assert(sizeof(struct sp_sqe) == 32, "sp_sqe ABI");

/* Completion entry (memsvc -> client), one per unit. 32 bytes. */
struct sp_cqe {
	uint16_t op;
	uint16_t flags;
	int32_t status; /* 0, or -errno: -ENOENT miss, -ESTALE stale handle, -EINVAL bad ids,
			   -EDQUOT quota, -ENOSPC no free slot, -EAGAIN no free slot yet
			   (eviction to the NVMe tier under way: retry), -EBUSY too many
			   deferred answers, -EIO tier failure */
	uint32_t req_id;
	uint32_t slot; /* RAM slot (SP_UNIT_SLOT_NONE on error) */
	uint32_t seq_index;
	uint16_t layer;
	uint16_t head;
	uint32_t block;
	uint32_t gen; /* unit generation at completion */
};
_Static_assert(sizeof(struct sp_cqe) == 32, "sp_cqe ABI");

/*
 * One unit of a vectored FORECAST (16 bytes, four to a cache line: a quarter of the bytes an
 * SQE and its CQE move between the two processes per unit). The client writes layer, head and
 * block; memsvc writes slot and gen_err (sp_vec_answer) before it posts the CQE.
 */
struct sp_vec_entry {
	uint16_t layer;
	uint16_t head;
	uint32_t block;
	uint32_t slot;	  /* RAM slot, SP_UNIT_SLOT_NONE unless the status is 0 */
	uint32_t gen_err; /* unit generation (bits 0..23), -status (bits 24..31) */
};
_Static_assert(sizeof(struct sp_vec_entry) == 16, "sp_vec_entry ABI");
#define SP_VEC_MAX_RUN 0xffffu /* entries per SQE (the SQE's 16-bit head field) */

/* A status (0 or -errno; errnos past 255 become -EIO, 5) and generation as gen_err. */
static inline uint32_t sp_vec_gen_err(uint32_t gen, int32_t status)
{
	uint32_t e = status >= 0 ? 0u : status < -255 ? 5u : (uint32_t)-status;
	return (gen & 0xffffffu) | (e << 24);
}
static inline int32_t sp_vec_status(uint32_t gen_err)
{
	return -(int32_t)(gen_err >> 24);
}
static inline uint32_t sp_vec_gen(uint32_t gen_err)
{
	return gen_err & 0xffffffu;
}

/*
 * Single-producer/single-consumer ring header; entries follow at entries_off from the header.
 * head is written only by the consumer, tail only by the producer; both are free-running
 * 32-bit counters (index = counter & mask). Each sits on its own cache line.
 */
struct sp_ring_hdr {
	uint32_t entries;    /* power of two */
	uint32_t entry_size; /* bytes */
	uint64_t entries_off;
	uint8_t pad0[SP_CACHELINE - 16];
	/* producer: store-release after writing entries; consumer: load-acquire before reading. */
	alignas(SP_CACHELINE) _Atomic uint32_t tail;
	uint8_t pad1[SP_CACHELINE - 4];
	/* consumer: store-release after reading entries; producer: load-acquire before reuse. */
	alignas(SP_CACHELINE) _Atomic uint32_t head;
	uint8_t pad2[SP_CACHELINE - 4];
	/*
	 * Consumer sets to 1 (seq_cst) before sleeping on the doorbell and re-checks the ring;
	 * producer loads it (seq_cst) after publishing tail and rings the doorbell only if set.
	 */
	alignas(SP_CACHELINE) _Atomic uint32_t consumer_sleeping;
	uint8_t pad3[SP_CACHELINE - 4];
};
_Static_assert(sizeof(struct sp_ring_hdr) == 4 * SP_CACHELINE, "sp_ring_hdr ABI");
_Static_assert(offsetof(struct sp_ring_hdr, tail) == SP_CACHELINE, "sp_ring_hdr tail");
_Static_assert(offsetof(struct sp_ring_hdr, head) == 2 * SP_CACHELINE, "sp_ring_hdr head");

/* ---- the ctl region (memsvc writes, client reads) ---------------------------------------- */

enum sp_wait_mode { SP_WAIT_SLEEP = 0, SP_WAIT_POLL = 1 };

struct sp_ctl_header {
	uint64_t magic;          /* SP_SHM_MAGIC */
	uint32_t layout_version; /* SP_SHM_LAYOUT_VERSION */
	uint32_t header_bytes;   /* sizeof(struct sp_ctl_header) */
	uint64_t daemon_epoch;   /* random per daemon start; a restarted daemon has another */
	uint64_t session_id;
	struct sp_geometry geom;
	uint32_t wait_mode; /* enum sp_wait_mode */
	uint32_t max_seqs;
	uint64_t ctl_bytes;
	uint64_t arena_bytes;
	uint64_t n_slots;
	uint64_t unit_words_cap; /* capacity of the unit-word pool */
	uint64_t seq_table_off;  /* struct sp_seq_desc[max_seqs] */
	uint64_t unit_pool_off;  /* _Atomic uint64_t[unit_words_cap] */
	/*
	 * Offset in ctl of the CQ ring, or 0 when the CQ lives in sub (sp_sub_header.cq_off).
	 * The CQ's consumer (the client) must write the ring's head and consumer_sleeping, which
	 * it cannot do in the read-only ctl mapping: memsvc places the CQ in sub and sets 0 here.
	 */
	uint64_t cq_off;
	/* Set to 1 (release) by memsvc when the session is being torn down or the daemon drains. */
	_Atomic uint32_t closing;
	uint32_t reserved0;
	uint8_t reserved[64];
};
_Static_assert(sizeof(struct sp_ctl_header) == 192, "sp_ctl_header ABI");

/* ---- the sub region (client writes, memsvc reads) ---------------------------------------- */

struct sp_sub_header {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t header_bytes;
	uint64_t daemon_epoch; /* copied by memsvc at creation; the client checks it */
	uint64_t sq_off;       /* struct sp_ring_hdr, then entries of struct sp_sqe */
	/*
	 * CQ ring (struct sp_ring_hdr, then entries of struct sp_cqe) in this region: memsvc is
	 * its producer (writes entries and tail), the client its consumer (writes head and
	 * consumer_sleeping). memsvc treats the header as hostile (ring_attach/ring_space clamp).
	 */
	uint64_t cq_off;
	/* The vector area (struct sp_vec_entry[vec_entries]), or 0 entries when there is none. */
	uint64_t vec_off;
	uint32_t vec_entries;
	uint32_t reserved0;
	/*
	 * The client's epoch: the last decode step all of whose reads of arena slots have
	 * completed. Client stores with release; memsvc loads with acquire before reusing a slot
	 * leased at a step <= this value.
	 */
	alignas(SP_CACHELINE) _Atomic uint64_t client_epoch;
	uint8_t pad[SP_CACHELINE - 8];
};
_Static_assert(sizeof(struct sp_sub_header) == 2 * SP_CACHELINE, "sp_sub_header ABI");
_Static_assert(offsetof(struct sp_sub_header, cq_off) == 32, "sp_sub_header cq_off");
_Static_assert(offsetof(struct sp_sub_header, vec_off) == 40, "sp_sub_header vec_off");

#endif
