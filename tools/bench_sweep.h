/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What `sparda bench sweep` shares between its grid (bench_sweep.c) and its batch refinement
 * (bench_sweep_refine.c, --batch-refine): the options, the models, the tally, and the reading
 * and running of one configuration. Internal to tools/.
 */
#ifndef SPARDA_TOOLS_BENCH_SWEEP_H
#define SPARDA_TOOLS_BENCH_SWEEP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_cmds.h"

enum { LIST_MAX = 64, PASS_MAX = 32 };

struct list {
	char *buf;
	char *v[LIST_MAX];
	int n;
};

struct sweep_opts {
	struct list models, contexts, batches, modes, inproc;
	const char *model_dir, *out, *backend;
	unsigned new_tokens, part, parts, batch_max;
	unsigned refine;	   /* --batch-refine: bisect down to this gap (0: off) */
	unsigned ladder[LIST_MAX]; /* the batches, then doublings up to batch_max */
	int n_ladder;
	double timeout_s, budget_s;
	bool dry_run;
	bool random_forecast; /* generated models keep the generator's Forecast */
	const char *shared;   /* gen-model --shared-activation of generated models (NULL: none) */
	uint64_t t0;
	const char *memsvc_args[PASS_MAX + 1], *compute_args[PASS_MAX + 1];
	int n_memsvc, n_compute;
};

struct model {
	char spec[128], label[192], preset[64], stem[128], dir[PATH_MAX];
	unsigned layers;
	bool random_forecast; /* generated without the Forecast fit */
	const char *shared;   /* --shared-activation of the generator, or NULL */
	int ready;	      /* 0: not checked, 1: present, <0: generation failed */
};

struct tally {
	unsigned total, selected, skipped, ran, modes_ok, modes_failed, left, planned;
	/* --batch-refine's */
	unsigned refine_ran, refine_ok, refine_failed, refine_left;
	bool stopped; /* the budget ran out */
	bool same;    /* the last memsvc configuration recorded its in-process runs too */
};

/* s, a positive decimal that fits an unsigned, into *out; false (*out untouched) otherwise. */
bool sweep_parse_uint(const char *s, unsigned *out);

/*
 * Status of mode in the record <out>/<stem>_c<ctx>_b<batch><suffix>.json ("" when none).
 * Returns whether the record exists.
 */
bool sweep_record_status(const struct sweep_opts *o, const char *stem, unsigned ctx, unsigned batch,
			 const char *suffix, const char *mode, char *buf, size_t len);

/*
 * Would configuration c of the model with file stem `stem` overrun the budget if started now?
 * It may take its estimate (sweep_estimate_s); the first time it would, why is printed.
 */
bool sweep_over_budget(const struct sweep_opts *o, const char *stem, const struct sweep_cfg *c);

/*
 * Seconds configuration c (its context, batch and modes, of the model with file stem `stem`) may
 * take, from the record of the same model and context at the largest batch up to c->batch, its
 * name into `from` ("" when none): at most --timeout-s, which it is without such a record
 * (bench_sweep_estimate.c).
 */
double sweep_estimate_s(const struct sweep_opts *o, const char *stem, const struct sweep_cfg *c,
			char *from, size_t len);

/*
 * Run a planned configuration, its model made first unless the budget is spent (a
 * configuration without modes only records its skips). tag starts its lines ("[3]").
 * Returns 0 when it ran (*so says how), 1 when it did not (t->stopped: the budget; else its
 * model is unavailable and its modes count as failed), -errno when its record cannot be written.
 */
int sweep_run_planned(const struct sweep_opts *o, struct model *m, struct sweep_cfg *c,
		      const char *tag, struct tally *t, struct sweep_outcome *so);

/* The configuration indices [*lo, *hi) of this part, in the grid's order. */
void sweep_part_range(const struct sweep_opts *o, unsigned *lo, unsigned *hi);

/*
 * --batch-refine (bench_sweep_refine.c), after the grid: for each model and context, bisect
 * where each mode runs out of memory, in the part that holds its first out-of-memory batch.
 * Returns 0 or -errno (a record that cannot be written).
 */
int sweep_refine(const struct sweep_opts *o, struct model *models, struct tally *t);

#endif
