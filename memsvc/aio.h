/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Async block I/O for the NVMe tier: read or write one contiguous buffer at a file offset, tagged
 * by the caller; submit in batches; reap completions (tag, bytes or -errno) with a timeout.
 * Backends behind one vtable: `uring` (liburing, fixed files, optional fixed buffers, SQPOLL) and
 * `sync` (pread/pwrite at submit time), plus a fault-injecting wrapper (aio_fault.h) for tests.
 */
#ifndef SPARDA_MEMSVC_AIO_H
#define SPARDA_MEMSVC_AIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aio;
struct aio_fault;

enum aio_kind {
	AIO_KIND_URING = 0,
	AIO_KIND_SYNC = 1,
	AIO_KIND_AUTO = 2, /* uring, else sync when io_uring is unavailable (ENOSYS/EPERM/...) */
};

enum aio_op_kind { AIO_OP_READ = 0, AIO_OP_WRITE = 1 };

struct aio_opts {
	uint32_t depth; /* most operations in flight at once (1..4096) */
	const int *fds; /* files, named by their index in this array; registered as fixed */
	uint32_t n_fds; /* 1..64 */
	bool sqpoll;	/* uring: IORING_SETUP_SQPOLL (falls back to a plain ring if refused) */
	struct aio_fault *fault; /* tests: wrap the backend with this fault injector (borrowed) */
};

/* One finished operation: its tag and the bytes moved (== len asked) or -errno. */
struct aio_cqe {
	uint64_t tag;
	int32_t res;
};

/*
 * Open an instance. AIO_KIND_AUTO tries uring then sync; aio_backend_name() says which one runs.
 * AIO_KIND_URING fails with the io_uring error (-ENOSYS, -EPERM, -ENOMEM, ...) so the caller can
 * fall back itself. Returns 0, -EINVAL (bad opts), -ENOMEM, or the backend's error.
 * The fds stay owned by the caller and must stay open until aio_free.
 */
int aio_open(enum aio_kind kind, const struct aio_opts *o, struct aio **out);
/*
 * Wait for every operation in flight (their buffers belong to the I/O until then), then free.
 * Accepts NULL.
 */
void aio_free(struct aio *a);

/* "uring", "sync" or "fault(uring)"-style names; static strings. */
const char *aio_backend_name(const struct aio *a);
#define AIO_MAX_REGIONS 4u /* buffer regions registered at once (staging, an arena, ...) */

/* True when the uring backend has registered buffer regions (fixed buffers) in use. */
bool aio_has_fixed_buffers(const struct aio *a);

/*
 * Add [base, base+len) to the registered buffers (uring: io_uring_register_buffers of every
 * region together, each split in chunks of at most 1 GiB); later operations whose buffer lies
 * inside one chunk of any region use the *_FIXED opcodes. sync: remembered, no effect.
 * Only with nothing in flight.
 * Returns 0, -EBUSY (operations in flight), -EEXIST (overlaps a registered region), -ENOSPC
 * (AIO_MAX_REGIONS registered already), -EINVAL, -ENOMEM / -EPERM (RLIMIT_MEMLOCK), or another
 * io_uring error; on error the regions registered before stay registered and I/O into this
 * one still works, without fixed buffers.
 */
int aio_buffers_register(struct aio *a, void *base, size_t len);
/* Drop every registered region. Returns 0 or -EBUSY (operations in flight). */
int aio_buffers_unregister(struct aio *a);
/* Regions registered now (sync: the ones remembered). */
uint32_t aio_buffers_regions(const struct aio *a);

/*
 * Queue one operation: len bytes between buf and file fds[file] at offset off. Not started until
 * aio_submit (sync) or started at once when the ring is full (uring).
 * OWNERSHIP: buf belongs to the I/O from this call until the completion with this tag has been
 * reaped; the caller must neither free nor reuse it before, even when aio_reap timed out (a hung
 * operation keeps its buffer forever rather than letting the kernel write into freed memory).
 * Returns 0, -EINVAL (file out of range, len 0 or > INT32_MAX), -EBUSY (depth in flight).
 */
int aio_prep(struct aio *a, enum aio_op_kind op, uint32_t file, void *buf, size_t len, uint64_t off,
	     uint64_t tag);
/* Start every queued operation. Returns 0 or -errno of the submit call. */
int aio_submit(struct aio *a);

/*
 * Reap up to max finished operations into out. Waits up to timeout_ms for the first one
 * (0: do not wait; -1: wait forever). Returns the count (0 on timeout) or -errno.
 * A short transfer is resubmitted for the rest, EAGAIN/EINTR are retried (up to a bound), so
 * res is len, or -errno (-EIO, -ENOSPC, ...), or for a read that hit end of file the bytes read.
 */
int aio_reap(struct aio *a, struct aio_cqe *out, uint32_t max, int timeout_ms);
/* Operations queued or in flight whose completion has not been reaped. */
uint32_t aio_inflight(const struct aio *a);
/* Internal retries so far (short transfers continued, EAGAIN/EINTR resubmitted). */
uint64_t aio_retries(const struct aio *a);

#endif
