/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench sweep --batch-refine N`: after the grid, bisect between each mode's largest ok
 * batch and its first out-of-memory one until they are at most N apart, reading where each mode
 * stands from the records alone, so that a rerun runs only what is missing.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench_sweep.h"

/* Where a mode's --batch-refine stands, read from the records. */
enum bisect_state {
	BISECT_PENDING, /* a batch of the ladder before its first out of memory is not recorded */
	BISECT_NONE,	/* nothing to refine: it never ran out of memory, or never ran before */
	BISECT_RUN,	/* next is to run */
	BISECT_DONE,	/* lo and hi are at most the gap apart */
	BISECT_STOPPED, /* a batch between failed otherwise, or its record lacks the mode (why) */
};

struct bisect {
	enum bisect_state state;
	unsigned lo, hi, next; /* largest ok batch below hi, smallest out-of-memory batch */
	int hi_index;	       /* index in the ladder of its first out-of-memory batch */
	char hi_status[32], why[96];
};

static bool out_of_memory(const char *status)
{
	return !strcmp(status, "gpu-oom") || !strcmp(status, "host-oom");
}

/* Path of the (memsvc) record of a batch. */
static void record_path(const struct sweep_opts *o, const struct model *m, unsigned ctx,
			unsigned batch, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s_c%u_b%u.json", o->out, m->stem, ctx, batch);
}

/* Was the record of the batch made with this sweep's pass-through arguments? */
static bool mergeable(const struct sweep_opts *o, const struct model *m, unsigned ctx,
		      unsigned batch)
{
	struct sweep_cfg c = {
	    .store = "memsvc", .compute_args = o->compute_args, .memsvc_args = o->memsvc_args};
	char path[PATH_MAX];

	record_path(o, m, ctx, batch, path, sizeof(path));
	return sweep_record_mergeable(&c, path) == 1;
}

/*
 * The ladder's records give a mode's lo and hi; the records of the midpoints narrow them until
 * one is missing (BISECT_RUN) or they are at most o->refine apart. The walk depends on the
 * records only, so a rerun finds where the last one stopped.
 */
static void bisect_walk(const struct sweep_opts *o, const struct model *m, unsigned ctx,
			const char *mode, struct bisect *b)
{
	char st[32];

	memset(b, 0, sizeof(*b));
	b->state = BISECT_NONE;
	for (int i = 0; i < o->n_ladder && !b->hi; i++) {
		if (!sweep_record_status(o, m->stem, ctx, o->ladder[i], "", mode, st, sizeof(st))) {
			b->state = BISECT_PENDING;
			return;
		}
		if (!strcmp(st, "ok")) {
			b->lo = o->ladder[i];
		} else if (out_of_memory(st)) {
			b->hi = o->ladder[i];
			b->hi_index = i;
			snprintf(b->hi_status, sizeof(b->hi_status), "%s", st);
		} else if (!strcmp(st, "timeout")) {
			return; /* out of time: a larger batch is not tried, nor one between */
		}
	}
	if (!b->lo || !b->hi)
		return;
	while (b->hi - b->lo > o->refine) {
		unsigned mid = b->lo + (b->hi - b->lo) / 2;

		if (!sweep_record_status(o, m->stem, ctx, mid, "", mode, st, sizeof(st))) {
			b->state = BISECT_RUN;
			b->next = mid;
			return;
		}
		if (!strcmp(st, "ok")) {
			b->lo = mid;
		} else if (out_of_memory(st)) {
			b->hi = mid;
			snprintf(b->hi_status, sizeof(b->hi_status), "%s", st);
		} else if (!st[0] && mergeable(o, m, ctx, mid)) {
			b->state = BISECT_RUN; /* the mode joins the record (another mode's, or a
						* grid's of other modes, with the same arguments) */
			b->next = mid;
			return;
		} else { /* a timeout or an error says nothing of memory; a record without the mode
			  * made with other arguments is left as it is */
			b->state = BISECT_STOPPED;
			snprintf(b->why, sizeof(b->why), "%s at batch %u",
				 st[0] ? st : "not recorded", mid);
			return;
		}
	}
	b->state = BISECT_DONE;
}

/*
 * "sparse (ok at 1, gpu-oom at 8)" for the modes whose next batch is next. Returns whether one
 * of them may need another batch after it.
 */
static bool print_between(const struct sweep_opts *o, const struct bisect *b, const bool *ours,
			  unsigned next)
{
	bool first = true, more = false;

	for (int i = 0; i < o->modes.n; i++) {
		if (!ours[i] || b[i].state != BISECT_RUN || b[i].next != next)
			continue;
		printf("%s%s (ok at %u, %s at %u)", first ? "" : ", ", o->modes.v[i], b[i].lo,
		       b[i].hi_status, b[i].hi);
		first = false;
		more |= b[i].hi - next > o->refine; /* the larger half, mid rounding down */
	}
	return more;
}

/* The smallest batch above after that one of the modes needs next (0: none). */
static unsigned next_batch(const struct list *modes, const struct bisect *b, const bool *ours,
			   unsigned after)
{
	unsigned next = 0;

	for (int i = 0; i < modes->n; i++)
		if (ours[i] && b[i].state == BISECT_RUN && b[i].next > after &&
		    (!next || b[i].next < next))
			next = b[i].next;
	return next;
}

/* What the refinement of (m, ctx) came to, mode by mode; for a dry run what it waits for. */
static void refine_summary(const struct sweep_opts *o, const struct model *m, unsigned ctx,
			   const struct bisect *b, const bool *ours, bool here)
{
	bool pending = false;

	for (int i = 0; i < o->modes.n; i++) {
		if (b[i].state == BISECT_PENDING) {
			pending = true;
			continue;
		}
		if (!ours[i] || (b[i].state != BISECT_DONE && b[i].state != BISECT_STOPPED))
			continue;
		printf("refine: %s_c%u %s: ok at %u, %s at %u%s%s\n", m->stem, ctx, o->modes.v[i],
		       b[i].lo, b[i].hi_status, b[i].hi, b[i].why[0] ? "; stopped: " : "",
		       b[i].why);
	}
	if (o->dry_run && pending && here)
		printf("refine: %s_c%u: depends on the results of batches not recorded yet\n",
		       m->stem, ctx);
}

/* Is configuration (ladder index bi, model and context cell) one of this part's? */
static bool in_part(const struct sweep_opts *o, int bi, unsigned cell)
{
	unsigned lo, hi, idx = (unsigned)(bi * o->models.n * o->contexts.n) + cell;

	sweep_part_range(o, &lo, &hi);
	return idx >= lo && idx < hi;
}

/*
 * Where each mode's refinement of (m, ctx) stands; ours: its first out-of-memory batch of the
 * ladder is a configuration of this part, which refines it. Returns the smallest batch one of
 * ours needs next (0: none).
 */
static unsigned refine_walk(const struct sweep_opts *o, const struct model *m, unsigned ctx,
			    unsigned cell, struct bisect *b, bool *ours)
{
	for (int i = 0; i < o->modes.n; i++) {
		bisect_walk(o, m, ctx, o->modes.v[i], &b[i]);
		ours[i] = b[i].hi && in_part(o, b[i].hi_index, cell);
	}
	return next_batch(&o->modes, b, ours, 0);
}

/* The batches the modes need next, from next up: printed (dry run) or counted as left. */
static void refine_plan(const struct sweep_opts *o, const struct model *m, unsigned ctx,
			const struct bisect *b, const bool *ours, unsigned next, struct tally *t)
{
	for (; next; next = next_batch(&o->modes, b, ours, next)) {
		if (!o->dry_run) {
			t->refine_left++;
			continue;
		}
		t->planned++;
		printf("[refine] %s_c%u_b%u: would run ", m->stem, ctx, next);
		if (print_between(o, b, ours, next))
			printf("; what follows depends on the results");
		printf("\n");
	}
}

/*
 * One step: the modes that need batch next, in one configuration (memsvc, no in-process runs)
 * recorded as <stem>_c<ctx>_b<next>.json. Returns 0 when it ran, 1 when it did not (the budget:
 * t->stopped, or the model), -errno when its record cannot be written.
 */
static int refine_step(const struct sweep_opts *o, struct model *m, struct sweep_cfg *c,
		       const struct bisect *b, const bool *ours, unsigned next, struct tally *t)
{
	const char *run[LIST_MAX];
	struct sweep_outcome so = {0};
	char name[256], path[PATH_MAX];
	int rc;

	c->n_modes = 0;
	for (int i = 0; i < o->modes.n; i++)
		if (ours[i] && b[i].state == BISECT_RUN && b[i].next == next)
			run[c->n_modes++] = o->modes.v[i];
	snprintf(name, sizeof(name), "%s_c%u_b%u", m->stem, c->context, next);
	c->name = name;
	c->batch = next;
	c->modes = run;
	/* a record there lacks these modes and has this sweep's arguments (bisect_walk) */
	record_path(o, m, c->context, next, path, sizeof(path));
	c->merge = access(path, F_OK) == 0;
	if (t->stopped || (t->stopped = sweep_over_budget(o, m->stem, c)))
		return 1;
	printf("[refine] %s: ", name);
	print_between(o, b, ours, next);
	printf("\n");
	if ((rc = sweep_run_planned(o, m, c, "[refine]", t, &so)))
		return rc;
	t->refine_ran++;
	t->refine_ok += (unsigned)so.ok;
	t->refine_failed += (unsigned)so.failed;
	return 0;
}

/*
 * --batch-refine for (model mi, context ci): the modes whose first out-of-memory batch of the
 * ladder is in this part, bisected step by step; each step runs the modes that need the
 * smallest missing batch together. Returns 0 or -errno (a record that cannot be written).
 */
static int refine_point(const struct sweep_opts *o, struct model *m, int mi, int ci,
			struct tally *t)
{
	unsigned cell = (unsigned)(mi * o->contexts.n + ci), next;
	struct sweep_cfg c = {.new_tokens = o->new_tokens,
			      .backend = o->backend,
			      .out = o->out,
			      .timeout_s = o->timeout_s,
			      .memsvc_args = o->memsvc_args,
			      .compute_args = o->compute_args,
			      .store = "memsvc"};
	struct bisect b[LIST_MAX];
	bool ours[LIST_MAX], here = false;
	int rc = 0;

	for (int bi = 0; bi < o->n_ladder; bi++)
		here |= in_part(o, bi, cell);
	sweep_parse_uint(o->contexts.v[ci], &c.context);
	while ((next = refine_walk(o, m, c.context, cell, b, ours))) {
		if (o->dry_run || t->stopped) {
			refine_plan(o, m, c.context, b, ours, next, t);
			break;
		}
		if ((rc = refine_step(o, m, &c, b, ours, next, t)) < 0)
			return rc;
		if (rc && !t->stopped) /* the model is unavailable */
			break;
	}
	refine_summary(o, m, c.context, b, ours, here);
	return 0;
}

int sweep_refine(const struct sweep_opts *o, struct model *models, struct tally *t)
{
	int rc;

	for (int mi = 0; mi < o->models.n; mi++)
		for (int ci = 0; ci < o->contexts.n; ci++)
			if ((rc = refine_point(o, &models[mi], mi, ci, t)))
				return rc;
	return 0;
}
