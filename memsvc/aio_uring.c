/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `uring` aio backend: one io_uring per instance, the caller's files registered as fixed
 * files, an optional buffer region (the arena, or a staging area) registered as fixed buffers,
 * and optional SQPOLL. liburing errors come back as -errno; this file never logs.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "aio_internal.h"

#define URING_BUF_CHUNK (1ull << 30) /* the kernel's limit for one registered buffer */

struct uring_be {
	struct aio_backend b;
	struct io_uring ring;
	bool sqpoll;
	uint8_t *rbase;
	size_t rlen;
	bool bufs;
};

static const char *uring_name(const struct aio_backend *b)
{
	return ((const struct uring_be *)b)->sqpoll ? "uring(sqpoll)" : "uring";
}

/* Index of the registered chunk holding [buf, buf+len), or -1. */
static int uring_buf_index(const struct uring_be *u, const uint8_t *buf, uint32_t len)
{
	size_t off, idx;

	if (!u->bufs || buf < u->rbase || buf + len > u->rbase + u->rlen)
		return -1;
	off = (size_t)(buf - u->rbase);
	idx = off / URING_BUF_CHUNK;
	if ((off + len - 1) / URING_BUF_CHUNK != idx)
		return -1;
	return (int)idx;
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

static int uring_buffers_register(struct aio_backend *b, void *base, size_t len)
{
	struct uring_be *u = (struct uring_be *)b;
	size_t n = (len + URING_BUF_CHUNK - 1) / URING_BUF_CHUNK;
	struct iovec *iov = calloc(n, sizeof(*iov));
	int rc;

	if (!iov)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t o = i * URING_BUF_CHUNK;
		iov[i].iov_base = (uint8_t *)base + o;
		iov[i].iov_len = len - o < URING_BUF_CHUNK ? len - o : URING_BUF_CHUNK;
	}
	rc = io_uring_register_buffers(&u->ring, iov, (unsigned)n);
	free(iov);
	if (rc < 0)
		return rc;
	u->rbase = base;
	u->rlen = len;
	u->bufs = true;
	return 0;
}

static void uring_buffers_unregister(struct aio_backend *b)
{
	struct uring_be *u = (struct uring_be *)b;

	if (u->bufs)
		io_uring_unregister_buffers(&u->ring);
	u->bufs = false;
	u->rbase = NULL;
	u->rlen = 0;
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
