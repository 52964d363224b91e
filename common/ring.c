/* SPDX-License-Identifier: Apache-2.0 */
/* SPSC rings in shared memory: free-running counters, acquire/release, eventfd doorbell. */
#include "ring.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "timeutil.h"

size_t ring_bytes(uint32_t entries, uint32_t entry_size)
{
	return sizeof(struct sp_ring_hdr) + (size_t)entries * entry_size;
}

static bool is_pow2(uint32_t v)
{
	return v >= 2 && (v & (v - 1)) == 0;
}

int ring_format(void *mem, uint32_t entries, uint32_t entry_size)
{
	struct sp_ring_hdr *h = mem;

	if (!mem || !is_pow2(entries) || entry_size == 0 || entry_size % 8)
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	h->entries = entries;
	h->entry_size = entry_size;
	h->entries_off = sizeof(*h);
	atomic_store_explicit(&h->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&h->head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->consumer_sleeping, 0, memory_order_release);
	return 0;
}

int ring_attach(struct ring *r, void *mem, size_t bytes, uint32_t entry_size, int doorbell_fd)
{
	struct sp_ring_hdr *h = mem;
	uint32_t entries;

	if (!r || !mem || bytes < sizeof(*h))
		return -EINVAL;
	entries = h->entries;
	if (!is_pow2(entries) || h->entry_size != entry_size || h->entries_off != sizeof(*h) ||
	    ring_bytes(entries, entry_size) > bytes)
		return -EPROTO;
	r->hdr = h;
	r->entries = (uint8_t *)mem + sizeof(*h);
	r->mask = entries - 1;
	r->entry_size = entry_size;
	r->doorbell_fd = doorbell_fd;
	return 0;
}

uint32_t ring_count(const struct ring *r)
{
	uint32_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
	uint32_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
	uint32_t n = tail - head;
	/* A hostile peer could publish a tail far ahead; never report more than capacity. */
	return n > r->mask + 1 ? r->mask + 1 : n;
}

uint32_t ring_space(const struct ring *r)
{
	uint32_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
	uint32_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
	uint32_t used = tail - head;
	return used > r->mask + 1 ? 0 : r->mask + 1 - used;
}

/* Entries at ring positions [pos, pos + n) are at most two runs: up to the end, then from 0. */
static uint32_t first_run(const struct ring *r, uint32_t pos, uint32_t n)
{
	uint32_t to_end = r->mask + 1 - (pos & r->mask);
	return n < to_end ? n : to_end;
}

static void copy_in(struct ring *r, uint32_t pos, const uint8_t *src, uint32_t n)
{
	uint32_t a = first_run(r, pos, n);
	size_t es = r->entry_size;

	memcpy(r->entries + (size_t)(pos & r->mask) * es, src, a * es);
	if (n > a)
		memcpy(r->entries, src + a * es, (n - a) * es);
}

static void copy_out(const struct ring *r, uint32_t pos, uint8_t *dst, uint32_t n)
{
	uint32_t a = first_run(r, pos, n);
	size_t es = r->entry_size;

	memcpy(dst, r->entries + (size_t)(pos & r->mask) * es, a * es);
	if (n > a)
		memcpy(dst + a * es, r->entries, (n - a) * es);
}

uint32_t ring_push(struct ring *r, const void *entries, uint32_t n)
{
	uint32_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
	uint32_t space = ring_space(r);
	const uint8_t *src = entries;

	if (n > space)
		n = space;
	copy_in(r, tail, src, n);
	/* Release: the entries are visible before the consumer sees the new tail. */
	atomic_store_explicit(&r->hdr->tail, tail + n, memory_order_release);
	return n;
}

int ring_doorbell(struct ring *r)
{
	/*
	 * seq_cst fence pairs with the consumer's seq_cst store of consumer_sleeping followed by
	 * its re-check of tail: either we see it sleeping, or it sees our tail.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if (r->doorbell_fd < 0 ||
	    !atomic_load_explicit(&r->hdr->consumer_sleeping, memory_order_seq_cst))
		return 0;
	uint64_t one = 1;
	if (write(r->doorbell_fd, &one, sizeof(one)) != sizeof(one))
		return errno == EAGAIN ? 0 : -errno;
	return 0;
}

uint32_t ring_pop(struct ring *r, void *entries, uint32_t n)
{
	uint32_t head = atomic_load_explicit(&r->hdr->head, memory_order_relaxed);
	uint32_t avail = ring_count(r);
	uint8_t *dst = entries;

	if (n > avail)
		n = avail;
	copy_out(r, head, dst, n);
	/* Release: we are done reading the entries before the producer may overwrite them. */
	atomic_store_explicit(&r->hdr->head, head + n, memory_order_release);
	return n;
}

int ring_wait(struct ring *r, uint64_t spin_ns, uint64_t timeout_ns)
{
	uint64_t start = time_now_ns();
	uint64_t deadline = timeout_ns == UINT64_MAX ? UINT64_MAX : start + timeout_ns;

	for (;;) {
		if (ring_count(r))
			return 0;
		uint64_t now = time_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (now - start < spin_ns || r->doorbell_fd < 0) {
			__builtin_ia32_pause();
			continue;
		}
		atomic_store_explicit(&r->hdr->consumer_sleeping, 1, memory_order_seq_cst);
		if (ring_count(r)) {
			atomic_store_explicit(&r->hdr->consumer_sleeping, 0, memory_order_relaxed);
			return 0;
		}
		struct pollfd pfd = { .fd = r->doorbell_fd, .events = POLLIN };
		uint64_t left = deadline - now;
		int ms = deadline == UINT64_MAX ? -1 : (int)((left + 999999) / 1000000);
		if (ms > 1000)
			ms = 1000; /* re-check periodically: a peer may die without ringing */
		int pr = poll(&pfd, 1, ms);
		atomic_store_explicit(&r->hdr->consumer_sleeping, 0, memory_order_relaxed);
		if (pr < 0 && errno == EINTR)
			return -EINTR;
		if (pr < 0)
			return -errno;
		if (pr > 0) {
			uint64_t v;
			if (read(r->doorbell_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return -errno;
		}
	}
}
