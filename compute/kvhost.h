/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host KV store as the runner sees it: sequences of units in arena slots, with residency
 * words the gather reads. Two implementations behind one vtable: `memsvc` (the real thing: a
 * session of sparda-memsvc through the client library) and `inproc` (an arena and residency
 * table in this process, for measuring the cost of the process boundary and for tests).
 * Not thread safe: one runner thread drives it.
 */
#ifndef SPARDA_COMPUTE_KVHOST_H
#define SPARDA_COMPUTE_KVHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

struct kvhost;

/* One unit of a sequence opened on the store. */
struct kvhost_unit {
	uint32_t seq, layer, head, block;
};

struct kvhost_ops {
	const char *name;
	void (*close)(struct kvhost *h);
	/* Open a sequence of max_blocks blocks per (layer, head). *seq is an opaque handle; *word_base
	 * is the index in words() of the unit word of (layer 0, head 0, block 0) of the sequence. */
	int (*seq_open)(struct kvhost *h, uint64_t key, uint32_t max_blocks, uint32_t *seq,
			int64_t *word_base);
	int (*seq_close)(struct kvhost *h, uint32_t seq);
	/* Allocate slots for blocks [block, block + count) of (seq, layer, head); slots[i] out. */
	int (*alloc)(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
		     uint32_t block, uint32_t count, int32_t *slots);
	/* Publish blocks [block, block + count) as resident (their bytes are in their slots). */
	int (*commit)(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
		      uint32_t block, uint32_t count);
	/* Many single units in one request (one control round trip): slots[i] for units[i]. */
	int (*alloc_units)(struct kvhost *h, const struct kvhost_unit *units, uint32_t n,
			   int32_t *slots);
	int (*commit_units)(struct kvhost *h, const struct kvhost_unit *units, uint32_t n);
	/* The client's epoch: all reads of slots for steps <= step have completed. */
	int (*epoch)(struct kvhost *h, uint64_t step);
	/* Live check of the service: 0, or -errno describing why it is gone. */
	int (*health)(struct kvhost *h);
	/*
	 * A Forecast: the units a layer will read at decode step `step`. The store leases their
	 * RAM slots until the client's epoch passes step (so they are not reused under a read),
	 * records them as selected (eviction prefers units not selected recently), restores
	 * those on its NVMe tier and waits until every one is resident. Returns 0, -ENOENT (a
	 * unit's copy could not be read back: its data is lost), -ETIMEDOUT or a transport
	 * error. NULL for stores that never spill (their units are always resident).
	 */
	int (*forecast)(struct kvhost *h, const struct kvhost_unit *units, uint32_t n,
			uint64_t step);
};

struct kvhost {
	const struct kvhost_ops *ops;
	void *arena;            /* n_slots * unit_bytes, writable */
	size_t arena_bytes;
	size_t unit_bytes;
	const uint64_t *words;  /* residency words (sp_unit_word), read-only */
	size_t words_bytes;
	bool may_spill;         /* units can leave RAM for an NVMe tier (then ops->forecast) */
	/*
	 * Added by the runner to every step it sends (forecast, epoch) and advanced past them
	 * when a generation ends, so steps only grow over the runs that share this store (the
	 * modes of one job, the requests of a service). A later run starting again at step 1
	 * would otherwise lease slots at steps the published epoch has already passed: the store
	 * could reuse them under a read.
	 */
	uint64_t step_base;
	void *priv;
};

struct kvhost_opts {
	struct sp_geometry geom; /* unit_bytes filled by the caller */
	uint64_t arena_bytes;
	uint32_t max_seqs;
	uint64_t max_units;      /* residency words to reserve (inproc) */
	/* memsvc only */
	const char *runtime_dir; /* NULL: the default runtime directory */
	const char *tenant;      /* NULL: "default" */
	int poll;                /* 1: polling hot path, 0: sleeping */
	uint32_t timeout_ms;
};

/* In-process store. Returns 0 or -errno (-ENOMEM, -EINVAL). */
int kvhost_inproc_open(const struct kvhost_opts *o, struct kvhost **out);
/* A session of sparda-memsvc. Returns 0 or -errno (-ECONNREFUSED / -ENOENT when the daemon is
 * not running, -EDQUOT / -ENOMEM when it refuses the arena); err names the problem. */
int kvhost_memsvc_open(const struct kvhost_opts *o, struct kvhost **out, char *err,
		       size_t err_len);

static inline void kvhost_close(struct kvhost *h)
{
	if (h)
		h->ops->close(h);
}

#endif
