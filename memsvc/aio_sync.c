/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `sync` aio backend for hosts where io_uring is blocked (seccomp, old kernels): queued
 * operations run as pread/pwrite at submit time, and their results wait in a list for reap, so
 * callers see the same prep / submit / reap cycle as with io_uring.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "aio_internal.h"

struct sync_op {
	enum aio_op_kind op;
	uint32_t file, len, id;
	void *buf;
	uint64_t off;
};

struct sync_be {
	struct aio_backend b;
	int *fds;
	uint32_t depth;
	struct sync_op *queued;
	uint32_t n_queued;
	struct aio_raw_cqe *done;
	uint32_t n_done;
	bool region;
};

static const char *sync_name(const struct aio_backend *b)
{
	return "sync";
}

static int sync_prep(struct aio_backend *b, enum aio_op_kind op, uint32_t file, void *buf,
		     uint32_t len, uint64_t off, uint32_t id)
{
	struct sync_be *s = (struct sync_be *)b;

	if (s->n_queued == s->depth)
		return -EBUSY;
	s->queued[s->n_queued++] =
	    (struct sync_op){.op = op, .file = file, .len = len, .id = id, .buf = buf, .off = off};
	return 0;
}

/* One call, no loop: a short count or EINTR goes back to aio.c like a ring completion would. */
static int sync_submit(struct aio_backend *b)
{
	struct sync_be *s = (struct sync_be *)b;

	for (uint32_t i = 0; i < s->n_queued; i++) {
		const struct sync_op *q = &s->queued[i];
		ssize_t r;

		if (q->op == AIO_OP_READ)
			r = pread(s->fds[q->file], q->buf, q->len, (off_t)q->off);
		else
			r = pwrite(s->fds[q->file], q->buf, q->len, (off_t)q->off);
		s->done[s->n_done++] =
		    (struct aio_raw_cqe){.id = q->id, .res = r < 0 ? -errno : (int32_t)r};
	}
	s->n_queued = 0;
	return 0;
}

static int sync_reap(struct aio_backend *b, struct aio_raw_cqe *out, uint32_t max, int timeout_ms)
{
	struct sync_be *s = (struct sync_be *)b;
	uint32_t n = s->n_done < max ? s->n_done : max;

	for (uint32_t i = 0; i < n; i++)
		out[i] = s->done[i];
	for (uint32_t i = n; i < s->n_done; i++)
		s->done[i - n] = s->done[i];
	s->n_done -= n;
	return (int)n;
}

static int sync_buffers_register(struct aio_backend *b, const struct aio_region *regs, uint32_t n)
{
	((struct sync_be *)b)->region = regs && n > 0; /* remembered; plain pread/pwrite */
	return 0;
}

static void sync_buffers_unregister(struct aio_backend *b)
{
	((struct sync_be *)b)->region = false;
}

static bool sync_has_fixed_buffers(const struct aio_backend *b)
{
	return false;
}

static void sync_free(struct aio_backend *b)
{
	struct sync_be *s = (struct sync_be *)b;

	if (!s)
		return;
	free(s->fds);
	free(s->queued);
	free(s->done);
	free(s);
}

static const struct aio_backend_ops sync_ops = {
    .name = sync_name,
    .prep = sync_prep,
    .submit = sync_submit,
    .reap = sync_reap,
    .buffers_register = sync_buffers_register,
    .buffers_unregister = sync_buffers_unregister,
    .has_fixed_buffers = sync_has_fixed_buffers,
    .free = sync_free,
};

int aio_sync_open(const struct aio_opts *o, struct aio_backend **out)
{
	struct sync_be *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->b.ops = &sync_ops;
	s->depth = o->depth;
	s->fds = calloc(o->n_fds, sizeof(*s->fds));
	s->queued = calloc(o->depth, sizeof(*s->queued));
	s->done = calloc(o->depth, sizeof(*s->done));
	if (!s->fds || !s->queued || !s->done) {
		sync_free(&s->b);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < o->n_fds; i++)
		s->fds[i] = o->fds[i];
	*out = &s->b;
	return 0;
}
