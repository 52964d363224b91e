/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The aio front end: operation table, tags, and the rules every backend shares: a short transfer
 * is continued for the rest, EAGAIN/EINTR are resubmitted a bounded number of times, and only a
 * finished operation (all bytes, an error, or end of file) is handed to the caller.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aio_internal.h"
#include "timeutil.h"

#define AIO_MAX_DEPTH 4096u
#define AIO_MAX_FDS 64u
#define AIO_MAX_TRIES 64u /* EAGAIN/EINTR resubmissions of one operation */

struct aio_slot {
	uint64_t tag;
	uint8_t *buf;
	uint64_t off;
	uint32_t len, done, file, tries;
	enum aio_op_kind op;
	bool busy;
};

struct aio {
	struct aio_backend *be;
	uint32_t depth, n_fds;
	struct aio_slot *slots;
	uint32_t *free_ids, n_free;
	struct aio_raw_cqe *raw;
	struct aio_cqe *ready; /* finished, not yet handed out (FIFO) */
	uint32_t n_ready;
	uint64_t retries;
	struct aio_region regions[AIO_MAX_REGIONS];
	uint32_t n_regions;
};

static int aio_backend_open(enum aio_kind kind, const struct aio_opts *o, struct aio_backend **be)
{
	int rc;

	if (kind == AIO_KIND_SYNC)
		rc = aio_sync_open(o, be);
	else {
		rc = aio_uring_open(o, be);
		if (rc < 0 && kind == AIO_KIND_AUTO)
			rc = aio_sync_open(o, be);
	}
	if (rc < 0 || !o->fault)
		return rc;
	return aio_fault_wrap(o->fault, *be, o->depth, be);
}

int aio_open(enum aio_kind kind, const struct aio_opts *o, struct aio **out)
{
	struct aio *a;
	int rc = -ENOMEM;

	if (!o || !out || o->depth == 0 || o->depth > AIO_MAX_DEPTH || !o->fds || o->n_fds == 0 ||
	    o->n_fds > AIO_MAX_FDS || kind > AIO_KIND_AUTO)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->depth = o->depth;
	a->n_fds = o->n_fds;
	a->slots = calloc(o->depth, sizeof(*a->slots));
	a->free_ids = calloc(o->depth, sizeof(*a->free_ids));
	a->raw = calloc(o->depth, sizeof(*a->raw));
	a->ready = calloc(o->depth, sizeof(*a->ready));
	if (!a->slots || !a->free_ids || !a->raw || !a->ready)
		goto out_free;
	for (uint32_t i = 0; i < o->depth; i++)
		a->free_ids[i] = o->depth - 1 - i;
	a->n_free = o->depth;
	rc = aio_backend_open(kind, o, &a->be);
	if (rc < 0)
		goto out_free;
	*out = a;
	return 0;
out_free:
	free(a->slots);
	free(a->free_ids);
	free(a->raw);
	free(a->ready);
	free(a);
	return rc;
}

uint32_t aio_inflight(const struct aio *a)
{
	return a->depth - a->n_free;
}

void aio_free(struct aio *a)
{
	struct aio_cqe c;

	if (!a)
		return;
	/* Buffers belong to the I/O until it completes: wait rather than free under the kernel. */
	while (aio_inflight(a) > 0) {
		a->be->ops->submit(a->be);
		if (aio_reap(a, &c, 1, -1) < 0)
			break;
	}
	if (a->n_regions)
		a->be->ops->buffers_unregister(a->be);
	a->be->ops->free(a->be);
	free(a->slots);
	free(a->free_ids);
	free(a->raw);
	free(a->ready);
	free(a);
}

const char *aio_backend_name(const struct aio *a)
{
	return a->be->ops->name(a->be);
}

bool aio_has_fixed_buffers(const struct aio *a)
{
	return a->be->ops->has_fixed_buffers(a->be);
}

int aio_buffers_register(struct aio *a, void *base, size_t len)
{
	uint8_t *b = base;
	int rc;

	if (!base || len == 0 || (uintptr_t)b + len < (uintptr_t)b)
		return -EINVAL;
	if (aio_inflight(a) > 0)
		return -EBUSY;
	for (uint32_t i = 0; i < a->n_regions; i++) {
		const struct aio_region *r = &a->regions[i];
		if (b < r->base + r->len && r->base < b + len)
			return -EEXIST;
	}
	if (a->n_regions == AIO_MAX_REGIONS)
		return -ENOSPC;
	a->regions[a->n_regions] = (struct aio_region){.base = b, .len = len};
	rc = a->be->ops->buffers_register(a->be, a->regions, a->n_regions + 1);
	if (rc == 0)
		a->n_regions++;
	return rc;
}

int aio_buffers_unregister(struct aio *a)
{
	if (aio_inflight(a) > 0)
		return -EBUSY;
	if (a->n_regions)
		a->be->ops->buffers_unregister(a->be);
	a->n_regions = 0;
	return 0;
}

uint32_t aio_buffers_regions(const struct aio *a)
{
	return a->n_regions;
}

static int aio_slot_issue(struct aio *a, uint32_t id)
{
	struct aio_slot *s = &a->slots[id];

	return a->be->ops->prep(a->be, s->op, s->file, s->buf + s->done, s->len - s->done,
				s->off + s->done, id);
}

int aio_prep(struct aio *a, enum aio_op_kind op, uint32_t file, void *buf, size_t len, uint64_t off,
	     uint64_t tag)
{
	struct aio_slot *s;
	uint32_t id;
	int rc;

	if (file >= a->n_fds || !buf || len == 0 || len > INT32_MAX || op > AIO_OP_WRITE)
		return -EINVAL;
	if (a->n_free == 0)
		return -EBUSY;
	id = a->free_ids[--a->n_free];
	s = &a->slots[id];
	*s = (struct aio_slot){.tag = tag,
			       .buf = buf,
			       .off = off,
			       .len = (uint32_t)len,
			       .file = file,
			       .op = op,
			       .busy = true};
	rc = aio_slot_issue(a, id);
	if (rc < 0) {
		s->busy = false;
		a->free_ids[a->n_free++] = id;
	}
	return rc;
}

int aio_submit(struct aio *a)
{
	return a->be->ops->submit(a->be);
}

static void aio_finish(struct aio *a, uint32_t id, int32_t res)
{
	struct aio_slot *s = &a->slots[id];

	a->ready[a->n_ready++] = (struct aio_cqe){.tag = s->tag, .res = res};
	s->busy = false;
	a->free_ids[a->n_free++] = id;
}

/* One raw completion: finish the operation, or continue / retry it. Returns 1 if resubmitted. */
static int aio_raw_complete(struct aio *a, const struct aio_raw_cqe *r)
{
	struct aio_slot *s;
	int32_t res = r->res;

	if (r->id >= a->depth || !a->slots[r->id].busy)
		return 0; /* not ours: a backend bug; never touch a free slot */
	s = &a->slots[r->id];
	if ((res == -EAGAIN || res == -EINTR) && ++s->tries <= AIO_MAX_TRIES)
		goto again;
	if (res < 0) {
		aio_finish(a, r->id, res);
		return 0;
	}
	if (res == 0) { /* read: end of file; write: no progress is an error */
		aio_finish(a, r->id, s->op == AIO_OP_READ ? (int32_t)s->done : -EIO);
		return 0;
	}
	s->done += (uint32_t)res > s->len - s->done ? s->len - s->done : (uint32_t)res;
	if (s->done == s->len) {
		aio_finish(a, r->id, (int32_t)s->len);
		return 0;
	}
again:
	a->retries++;
	res = aio_slot_issue(a, r->id);
	if (res < 0) {
		aio_finish(a, r->id, res);
		return 0;
	}
	return 1;
}

static uint32_t aio_hand_out(struct aio *a, struct aio_cqe *out, uint32_t max)
{
	uint32_t n = a->n_ready < max ? a->n_ready : max;

	memcpy(out, a->ready, n * sizeof(*out));
	memmove(a->ready, a->ready + n, (a->n_ready - n) * sizeof(*out));
	a->n_ready -= n;
	return n;
}

int aio_reap(struct aio *a, struct aio_cqe *out, uint32_t max, int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : time_now_ms() + (uint64_t)timeout_ms;

	if (!out || max == 0)
		return -EINVAL;
	if (a->be->ops->submit(a->be) < 0) /* nothing queued may wait forever unsubmitted */
		return -EIO;
	for (;;) {
		int wait, n, resub = 0;
		uint64_t now;

		if (a->n_ready > 0)
			return (int)aio_hand_out(a, out, max);
		if (aio_inflight(a) == 0)
			return 0;
		now = time_now_ms();
		if (now >= deadline && timeout_ms != 0)
			return 0;
		wait = timeout_ms < 0 ? -1 : (int)(deadline > now ? deadline - now : 0);
		n = a->be->ops->reap(a->be, a->raw, a->depth, wait);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			resub += aio_raw_complete(a, &a->raw[i]);
		if (resub > 0) {
			int rc = a->be->ops->submit(a->be);
			if (rc < 0)
				return rc;
		}
		if (a->n_ready == 0 && timeout_ms == 0 && resub == 0)
			return 0;
	}
}

uint64_t aio_retries(const struct aio *a)
{
	return a->retries;
}
