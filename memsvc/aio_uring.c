/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `uring` aio backend: one io_uring per instance, the caller's files registered as fixed
 * files, up to AIO_MAX_REGIONS buffer regions (staging areas, an arena) registered together as
 * fixed buffers, and optional SQPOLL. liburing errors come back as -errno; this file never logs.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "aio_internal.h"

#define URING_BUF_CHUNK (1ull << 30) /* the kernel's limit for one registered buffer */

struct uring_be {
	struct aio_backend b;
	struct io_uring ring;
	bool sqpoll;
	struct aio_region regs[AIO_MAX_REGIONS]; /* registered, in the order of their chunks */
	uint32_t first_chunk[AIO_MAX_REGIONS];	 /* buffer index of each region's first chunk */
	uint32_t n_regs;
	bool bufs;
};

static const char *uring_name(const struct aio_backend *b)
{
	return ((const struct uring_be *)b)->sqpoll ? "uring(sqpoll)" : "uring";
}

/* Index of the registered chunk holding [buf, buf+len), or -1. */
static int uring_buf_index(const struct uring_be *u, const uint8_t *buf, uint32_t len)
{
	if (!u->bufs)
		return -1;
	for (uint32_t i = 0; i < u->n_regs; i++) {
		const struct aio_region *r = &u->regs[i];
		size_t off, idx;

		if (buf < r->base || buf + len > r->base + r->len)
			continue;
		off = (size_t)(buf - r->base);
		idx = off / URING_BUF_CHUNK;
		if ((off + len - 1) / URING_BUF_CHUNK != idx)
			return -1;
		return (int)(u->first_chunk[i] + idx);
	}
	return -1;
}

static int uring_prep(struct aio_backend *b, enum aio_op_kind op, uint32_t file, void *buf,
		      uint32_t len, uint64_t off, uint32_t id)
{
	struct uring_be *u = (struct uring_be *)b;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	int bi = uring_buf_index(u, buf, len);

	if (!sqe) { /* ring full: start what is queued to make room */
		int rc = io_uring_submit(&u->ring);
		if (rc < 0)
			return rc;
		sqe = io_uring_get_sqe(&u->ring);
		/* SQPOLL: the thread advances the ring's head after a batch, and a batch's writes
		 * may complete before that (their completions reaped, their entries not yet given
		 * back): wait for the space */
		if (!sqe && u->sqpoll && (rc = io_uring_sqring_wait(&u->ring)) < 0)
			return rc;
		if (!sqe)
			sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
	}
	if (op == AIO_OP_READ && bi >= 0)
		io_uring_prep_read_fixed(sqe, (int)file, buf, len, off, bi);
	else if (op == AIO_OP_READ)
		io_uring_prep_read(sqe, (int)file, buf, len, off);
	else if (bi >= 0)
		io_uring_prep_write_fixed(sqe, (int)file, buf, len, off, bi);
	else
		io_uring_prep_write(sqe, (int)file, buf, len, off);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, id);
	return 0;
}

static int uring_submit(struct aio_backend *b)
{
	struct uring_be *u = (struct uring_be *)b;
	int rc;

	do
		rc = io_uring_submit(&u->ring);
	while (rc == -EINTR);
	return rc < 0 ? rc : 0;
}

static int uring_wait(struct uring_be *u, int timeout_ms)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
				       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
	int rc;

	if (timeout_ms == 0)
		rc = io_uring_peek_cqe(&u->ring, &cqe);
	else if (timeout_ms < 0)
		rc = io_uring_wait_cqe(&u->ring, &cqe);
	else
		rc = io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts);
	if (rc == -ETIME || rc == -EAGAIN || rc == -EINTR)
		return 0;
	return rc < 0 ? rc : 1;
}

static int uring_reap(struct aio_backend *b, struct aio_raw_cqe *out, uint32_t max, int timeout_ms)
{
	struct uring_be *u = (struct uring_be *)b;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int rc = uring_wait(u, timeout_ms);

	if (rc <= 0)
		return rc;
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		if (n == max)
			break;
		out[n++] = (struct aio_raw_cqe){.id = (uint32_t)io_uring_cqe_get_data64(cqe),
						.res = cqe->res};
	}
	io_uring_cq_advance(&u->ring, n);
	return (int)n;
}

static size_t uring_chunks(size_t len)
{
	return (len + URING_BUF_CHUNK - 1) / URING_BUF_CHUNK;
}

/* Register regs[0..n) as one buffer table (the kernel takes one table per ring). */
static int uring_register_table(struct uring_be *u, const struct aio_region *regs, uint32_t n)
{
	size_t total = 0, k = 0;
	struct iovec *iov;
	int rc;

	for (uint32_t i = 0; i < n; i++)
		total += uring_chunks(regs[i].len);
	iov = calloc(total, sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		u->first_chunk[i] = (uint32_t)k;
		for (size_t o = 0; o < regs[i].len; o += URING_BUF_CHUNK, k++) {
			iov[k].iov_base = regs[i].base + o;
			iov[k].iov_len =
			    regs[i].len - o < URING_BUF_CHUNK ? regs[i].len - o : URING_BUF_CHUNK;
		}
	}
	rc = io_uring_register_buffers(&u->ring, iov, (unsigned)total);
	free(iov);
	if (rc < 0)
		return rc;
	memcpy(u->regs, regs, n * sizeof(*regs));
	u->n_regs = n;
	u->bufs = true;
	return 0;
}

static void uring_buffers_unregister(struct aio_backend *b)
{
	struct uring_be *u = (struct uring_be *)b;

	if (u->bufs)
		io_uring_unregister_buffers(&u->ring);
	u->bufs = false;
	u->n_regs = 0;
}

static int uring_buffers_register(struct aio_backend *b, const struct aio_region *regs, uint32_t n)
{
	struct uring_be *u = (struct uring_be *)b;
	struct aio_region old[AIO_MAX_REGIONS];
	uint32_t n_old = u->n_regs;
	int rc;

	if (n > AIO_MAX_REGIONS)
		return -EINVAL;
	memcpy(old, u->regs, n_old * sizeof(*old));
	uring_buffers_unregister(b);
	rc = uring_register_table(u, regs, n);
	/* keep what worked before (no fixed buffers at all if even that fails) */
	if (rc < 0 && n_old)
		(void)uring_register_table(u, old, n_old);
	return rc;
}

static bool uring_has_fixed_buffers(const struct aio_backend *b)
{
	return ((const struct uring_be *)b)->bufs;
}

static void uring_free(struct aio_backend *b)
{
	struct uring_be *u = (struct uring_be *)b;

	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u);
}

static const struct aio_backend_ops uring_ops = {
    .name = uring_name,
    .prep = uring_prep,
    .submit = uring_submit,
    .reap = uring_reap,
    .buffers_register = uring_buffers_register,
    .buffers_unregister = uring_buffers_unregister,
    .has_fixed_buffers = uring_has_fixed_buffers,
    .free = uring_free,
};

int aio_uring_open(const struct aio_opts *o, struct aio_backend **out)
{
	struct uring_be *u = calloc(1, sizeof(*u));
	int rc = -EINVAL;

	if (!u)
		return -ENOMEM;
	u->b.ops = &uring_ops;
	if (o->sqpoll) {
		struct io_uring_params p = {.flags = IORING_SETUP_SQPOLL, .sq_thread_idle = 50};
		rc = io_uring_queue_init_params(o->depth, &u->ring, &p);
		u->sqpoll = rc == 0;
	}
	if (!u->sqpoll)
		rc = io_uring_queue_init(o->depth, &u->ring, 0);
	if (rc < 0)
		goto out_free;
	rc = io_uring_register_files(&u->ring, o->fds, o->n_fds);
	if (rc < 0)
		goto out_exit;
	*out = &u->b;
	return 0;
out_exit:
	io_uring_queue_exit(&u->ring);
out_free:
	free(u);
	return rc;
}
