/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fault injection for aio (tests): an aio_fault controller, handed to aio_open in
 * aio_opts.fault, wraps the backend and can fail the Nth operation (or every matching one) with
 * an errno, shorten a transfer, corrupt a byte of a read's data, or delay a completion. Faults
 * act below aio.c's retries, so "EAGAIN once" is retried and "short" is continued.
 * Not thread safe; the controller must outlive every aio opened with it.
 */
#ifndef SPARDA_MEMSVC_AIO_FAULT_H
#define SPARDA_MEMSVC_AIO_FAULT_H

#include <stdint.h>

#include "aio.h"

enum aio_fault_action {
	AIO_FAULT_OFF = 0,
	AIO_FAULT_ERRNO = 1,   /* the operation is not performed; completes with -err */
	AIO_FAULT_SHORT = 2,   /* performed for len - short_by bytes (only transfers > short_by) */
	AIO_FAULT_CORRUPT = 3, /* reads only: one byte of the data read is flipped */
	AIO_FAULT_DELAY = 4,   /* the completion is held back delay_ms */
};

#define AIO_FAULT_MATCH_READ 0x1u
#define AIO_FAULT_MATCH_WRITE 0x2u

struct aio_fault_rule {
	enum aio_fault_action action;
	uint32_t match;	   /* AIO_FAULT_MATCH_*; 0 means both kinds */
	uint64_t nth;	   /* 1-based: hit only the nth matching operation; 0: every one */
	uint32_t times;	   /* with nth == 0: stop after this many hits (0: no limit) */
	int err;	   /* ERRNO: a positive errno (EIO, ENOSPC, EAGAIN, ...) */
	uint32_t short_by; /* SHORT: bytes left out */
	uint32_t delay_ms; /* DELAY */
};

/* Returns NULL on allocation failure. */
struct aio_fault *aio_fault_new(void);
/* Accepts NULL. Only after every aio using it is freed. */
void aio_fault_free(struct aio_fault *f);
/* Replace the rule and zero the counters (a rule with AIO_FAULT_OFF only counts). */
void aio_fault_set(struct aio_fault *f, const struct aio_fault_rule *r);
/* Backend transfers seen since the last aio_fault_set (retries and continuations included). */
uint64_t aio_fault_ops(const struct aio_fault *f);
/* Faults injected since the last aio_fault_set. */
uint64_t aio_fault_hits(const struct aio_fault *f);

#endif
