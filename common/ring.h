/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lock-free single-producer/single-consumer rings over struct sp_ring_hdr in shared memory,
 * with an eventfd doorbell for consumers that sleep. A ring handle is a process-local view: the
 * header pointer, the entries pointer and the doorbell fd. Never shared between threads of one
 * side (one producer thread, one consumer thread).
 */
#ifndef SPARDA_COMMON_RING_H
#define SPARDA_COMMON_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_abi.h"

struct ring {
	struct sp_ring_hdr *hdr;
	uint8_t *entries;
	uint32_t mask;
	uint32_t entry_size;
	int doorbell_fd; /* eventfd, or -1 for a pure polling ring */
};

/* Bytes needed for a ring of `entries` entries of `entry_size` (header included). */
size_t ring_bytes(uint32_t entries, uint32_t entry_size);

/*
 * Initialise a ring header at mem (owned by the creator; mem must be ring_bytes() long and
 * cache-line aligned). entries must be a power of two >= 2. Returns 0 or -EINVAL.
 */
int ring_format(void *mem, uint32_t entries, uint32_t entry_size);

/*
 * Attach a view to a formatted ring at mem of `bytes` bytes, checking the header against the
 * expected entry size and the mapping size (-EPROTO when it does not fit: a hostile or
 * corrupt header never makes us read outside the mapping).
 */
int ring_attach(struct ring *r, void *mem, size_t bytes, uint32_t entry_size, int doorbell_fd);

/* Producer: copy up to n entries in; returns the number pushed (0 when full). Does not ring. */
uint32_t ring_push(struct ring *r, const void *entries, uint32_t n);
/* Producer: wake the consumer if it said it sleeps. Returns 0 or -errno from write(2). */
int ring_doorbell(struct ring *r);
/* Consumer: copy up to n entries out; returns the number popped. */
uint32_t ring_pop(struct ring *r, void *entries, uint32_t n);
/* Entries ready for the consumer / free for the producer. */
uint32_t ring_count(const struct ring *r);
uint32_t ring_space(const struct ring *r);

/*
 * Consumer: wait until the ring is non-empty or timeout_ns passes (0 = return at once,
 * UINT64_MAX = forever). spin_ns of busy polling first, then sleep on the doorbell (if any).
 * Returns 0 when entries are ready, -ETIMEDOUT, -EINTR, or -errno from poll/read.
 */
int ring_wait(struct ring *r, uint64_t spin_ns, uint64_t timeout_ns);

#endif
