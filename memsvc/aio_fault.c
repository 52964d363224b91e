/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fault-injecting aio backend: wraps uring or sync and applies an aio_fault_rule to the
 * transfers passing through. Injected errors complete without touching the file; corruption and
 * delay act on the real completion.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "aio_fault.h"
#include "aio_internal.h"
#include "timeutil.h"

struct aio_fault {
	struct aio_fault_rule rule;
	uint64_t ops, matched, hits;
};

struct fault_op {
	enum aio_fault_action act;
	uint8_t *buf;
	uint64_t release_ms; /* DELAY: when the held completion may go out */
	int32_t res;	     /* held (DELAY) or injected (ERRNO) result */
	bool held;
};

struct fault_be {
	struct aio_backend b;
	struct aio_backend *inner;
	struct aio_fault *f;
	uint32_t depth;
	struct fault_op *op;	   /* by operation id */
	struct aio_raw_cqe *synth; /* injected errors waiting for reap */
	uint32_t n_synth;
	char name[32];
};

struct aio_fault *aio_fault_new(void)
{
	return calloc(1, sizeof(struct aio_fault));
}

void aio_fault_free(struct aio_fault *f)
{
	free(f);
}

void aio_fault_set(struct aio_fault *f, const struct aio_fault_rule *r)
{
	f->rule = *r;
	f->ops = f->matched = f->hits = 0;
}

uint64_t aio_fault_ops(const struct aio_fault *f)
{
	return f->ops;
}

uint64_t aio_fault_hits(const struct aio_fault *f)
{
	return f->hits;
}

/* Count one transfer; returns the action to apply to it. */
static enum aio_fault_action fault_decide(struct aio_fault *f, enum aio_op_kind op, uint32_t len)
{
	const struct aio_fault_rule *r = &f->rule;
	uint32_t bit = op == AIO_OP_READ ? AIO_FAULT_MATCH_READ : AIO_FAULT_MATCH_WRITE;

	f->ops++;
	if (r->action == AIO_FAULT_OFF || (r->match && !(r->match & bit)))
		return AIO_FAULT_OFF;
	/* kinds the action cannot apply to do not match: corrupting a write, shortening by all */
	if ((r->action == AIO_FAULT_CORRUPT && op != AIO_OP_READ) ||
	    (r->action == AIO_FAULT_SHORT && r->short_by >= len))
		return AIO_FAULT_OFF;
	f->matched++;
	if (r->nth ? f->matched != r->nth : (r->times && f->hits >= r->times))
		return AIO_FAULT_OFF;
	f->hits++;
	return r->action;
}

static const char *fault_name(const struct aio_backend *b)
{
	return ((const struct fault_be *)b)->name;
}

static int fault_prep(struct aio_backend *b, enum aio_op_kind op, uint32_t file, void *buf,
		      uint32_t len, uint64_t off, uint32_t id)
{
	struct fault_be *w = (struct fault_be *)b;
	enum aio_fault_action act = fault_decide(w->f, op, len);
	uint32_t short_by = w->f->rule.short_by;

	w->op[id] = (struct fault_op){.act = act, .buf = buf};
	if (act == AIO_FAULT_ERRNO) {
		w->synth[w->n_synth++] = (struct aio_raw_cqe){.id = id, .res = -w->f->rule.err};
		return 0;
	}
	if (act == AIO_FAULT_SHORT)
		len -= short_by;
	return w->inner->ops->prep(w->inner, op, file, buf, len, off, id);
}

static int fault_submit(struct aio_backend *b)
{
	struct fault_be *w = (struct fault_be *)b;

	return w->inner->ops->submit(w->inner);
}

/* Move injected and matured held completions to out; returns how many, *next_ms the earliest. */
static uint32_t fault_ready(struct fault_be *w, struct aio_raw_cqe *out, uint32_t max,
			    uint64_t *next_ms)
{
	uint64_t now = time_now_ms();
	uint32_t n = 0;

	while (w->n_synth > 0 && n < max)
		out[n++] = w->synth[--w->n_synth];
	*next_ms = UINT64_MAX;
	for (uint32_t id = 0; id < w->depth; id++) {
		struct fault_op *o = &w->op[id];
		if (!o->held)
			continue;
		if (o->release_ms <= now && n < max) {
			o->held = false;
			out[n++] = (struct aio_raw_cqe){.id = id, .res = o->res};
		} else if (o->release_ms < *next_ms) {
			*next_ms = o->release_ms;
		}
	}
	return n;
}

/* Apply the per-operation action to one real completion; false when it is held back. */
static bool fault_on_done(struct fault_be *w, struct aio_raw_cqe *c)
{
	struct fault_op *o = &w->op[c->id];

	if (o->act == AIO_FAULT_CORRUPT && c->res > 0)
		o->buf[c->res / 2] ^= 0x5a;
	if (o->act == AIO_FAULT_DELAY) {
		o->held = true;
		o->res = c->res;
		o->release_ms = time_now_ms() + w->f->rule.delay_ms;
		o->act = AIO_FAULT_OFF;
		return false;
	}
	return true;
}

/* A sync inner backend returns at once: wait for a held completion here, within the timeout. */
static uint32_t fault_wait_held(struct fault_be *w, struct aio_raw_cqe *out, uint32_t max,
				uint64_t deadline)
{
	uint64_t next_ms, now;
	uint32_t n = fault_ready(w, out, max, &next_ms);

	if (n > 0 || next_ms == UINT64_MAX)
		return n;
	now = time_now_ms();
	if (next_ms > deadline)
		next_ms = deadline;
	if (next_ms > now)
		time_sleep_ns((next_ms - now) * 1000000ull);
	return fault_ready(w, out, max, &next_ms);
}

static int fault_reap(struct aio_backend *b, struct aio_raw_cqe *out, uint32_t max, int timeout_ms)
{
	struct fault_be *w = (struct fault_be *)b;
	uint64_t next_ms, now = time_now_ms();
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now + (uint64_t)timeout_ms;
	uint32_t n = fault_ready(w, out, max, &next_ms);
	int wait = timeout_ms, got;

	if (n > 0)
		wait = 0;
	else if (next_ms != UINT64_MAX) {
		uint64_t until = next_ms > now ? next_ms - now : 0;
		if (timeout_ms < 0 || until < (uint64_t)timeout_ms)
			wait = (int)until;
	}
	got = w->inner->ops->reap(w->inner, out + n, max - n, wait);
	if (got < 0)
		return n > 0 ? (int)n : got;
	for (uint32_t i = 0, base = n; i < (uint32_t)got; i++) {
		struct aio_raw_cqe c = out[base + i];
		if (fault_on_done(w, &c))
			out[n++] = c;
	}
	if (n == 0 && timeout_ms != 0)
		n = fault_wait_held(w, out, max, deadline);
	return (int)n;
}

static int fault_buffers_register(struct aio_backend *b, const struct aio_region *regs, uint32_t n)
{
	struct fault_be *w = (struct fault_be *)b;

	return w->inner->ops->buffers_register(w->inner, regs, n);
}

static void fault_buffers_unregister(struct aio_backend *b)
{
	struct fault_be *w = (struct fault_be *)b;

	w->inner->ops->buffers_unregister(w->inner);
}

static bool fault_has_fixed_buffers(const struct aio_backend *b)
{
	const struct fault_be *w = (const struct fault_be *)b;

	return w->inner->ops->has_fixed_buffers(w->inner);
}

static void fault_free(struct aio_backend *b)
{
	struct fault_be *w = (struct fault_be *)b;

	if (!w)
		return;
	if (w->inner)
		w->inner->ops->free(w->inner);
	free(w->op);
	free(w->synth);
	free(w);
}

static const struct aio_backend_ops fault_ops = {
    .name = fault_name,
    .prep = fault_prep,
    .submit = fault_submit,
    .reap = fault_reap,
    .buffers_register = fault_buffers_register,
    .buffers_unregister = fault_buffers_unregister,
    .has_fixed_buffers = fault_has_fixed_buffers,
    .free = fault_free,
};

int aio_fault_wrap(struct aio_fault *f, struct aio_backend *inner, uint32_t depth,
		   struct aio_backend **out)
{
	struct fault_be *w = calloc(1, sizeof(*w));

	if (!w) {
		inner->ops->free(inner);
		return -ENOMEM;
	}
	w->b.ops = &fault_ops;
	w->inner = inner;
	w->f = f;
	w->depth = depth;
	w->op = calloc(depth, sizeof(*w->op));
	w->synth = calloc(depth, sizeof(*w->synth));
	if (!w->op || !w->synth) {
		fault_free(&w->b);
		return -ENOMEM;
	}
	snprintf(w->name, sizeof(w->name), "fault(%s)", inner->ops->name(inner));
	*out = &w->b;
	return 0;
}
