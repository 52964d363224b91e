/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The backend vtable under aio.c. aio.c owns the operation table (tags, retries of short
 * transfers and EAGAIN/EINTR); a backend only moves bytes for an operation id and reports the raw
 * result. The fault injector is a backend that wraps another one, so faults hit below the retries.
 */
#ifndef SPARDA_MEMSVC_AIO_INTERNAL_H
#define SPARDA_MEMSVC_AIO_INTERNAL_H

#include "aio.h"

/* A raw completion: operation id (index in aio.c's table) and the syscall-level result. */
struct aio_raw_cqe {
	uint32_t id;
	int32_t res;
};

/* A registered buffer region (aio.c keeps up to AIO_MAX_REGIONS). */
struct aio_region {
	uint8_t *base;
	size_t len;
};

struct aio_backend;

struct aio_backend_ops {
	const char *(*name)(const struct aio_backend *b);
	/* Queue one transfer; never more than `depth` outstanding. 0 or -errno. */
	int (*prep)(struct aio_backend *b, enum aio_op_kind op, uint32_t file, void *buf,
		    uint32_t len, uint64_t off, uint32_t id);
	int (*submit)(struct aio_backend *b);
	/* Up to max raw completions, waiting up to timeout_ms (-1 forever) for the first. */
	int (*reap)(struct aio_backend *b, struct aio_raw_cqe *out, uint32_t max, int timeout_ms);
	/*
	 * Make regs[0..n) the registered buffers, replacing what was registered; on error the
	 * previous set stays registered (or, if even that cannot be restored, none).
	 */
	int (*buffers_register)(struct aio_backend *b, const struct aio_region *regs, uint32_t n);
	void (*buffers_unregister)(struct aio_backend *b);
	bool (*has_fixed_buffers)(const struct aio_backend *b);
	void (*free)(struct aio_backend *b);
};

struct aio_backend {
	const struct aio_backend_ops *ops;
};

int aio_uring_open(const struct aio_opts *o, struct aio_backend **out);
int aio_sync_open(const struct aio_opts *o, struct aio_backend **out);
/* Wrap inner (ownership passes to the wrapper, also on error). */
int aio_fault_wrap(struct aio_fault *f, struct aio_backend *inner, uint32_t depth,
		   struct aio_backend **out);

#endif
