/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The rows `sparda bench report` reads back from a sweep's configuration records (one row per
 * mode of a configuration), shared by the loader and tables (bench_report.c), the limits the
 * records ran under (bench_report_limits.c), the decode phases of --phase-times records
 * (bench_report_phases.c) and the gnuplot plots (bench_report_plot.c).
 * Internal to tools/.
 */
#ifndef SPARDA_TOOLS_BENCH_REPORT_H
#define SPARDA_TOOLS_BENCH_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct json_object;

struct report_row {
	char model[128], mode[32], status[16], store[8], error[512];
	int context, batch;
	int run; /* index of the compute process within its configuration; -1: none */
	bool ok;
	bool same_process; /* an in-process row run by the memsvc row's own compute process */
	double tok_s, step_ms, prefill_s, prefill_tok_s;
	/* < 0: not reported */
	double step_median_ms; /* the median decode step (the peers record each step's time) */
	double hit_rate, recall, h2d_gbs, d2h_gbs, late_units;
	double gpu_gib, host_gib, memsvc_gib;
	double compute_ms, fetch_ms, fetch_exposed_ms;
	double gb_per_step; /* bytes moved host to device per decode step, 1e9 (< 0: unknown) */
	int equals_twin;	    /* -1: no twin */
	int forecast_trained;	    /* the Forecast compute loaded: 1 trained, 0 not, -1 unknown */
	char forecast_fit[16];	    /* how it was fitted ("ridge", "adamw"; "" untrained) */
	char *tokens;		    /* generated token ids as JSON text (owned), NULL when absent */
	struct json_object *result; /* the mode's figures without tokens (owned), NULL on failure */
	/* the record's pass-through arguments (owned arrays), NULL in records before them */
	struct json_object *compute_args, *memsvc_args;
	char limits[416]; /* the GPU memory limit and RAM budget they set, or "none recorded" */
};

struct report {
	struct report_row *rows;
	size_t n;
	const char *dir; /* <out>/report */
};

/*
 * The successful row of a configuration, or NULL. store "inproc" finds the in-process arena's
 * rows; any other value the sweep's own (memsvc) and the peers' rows.
 */
const struct report_row *report_find(const struct report *r, const char *store, const char *model,
				     int context, int batch, const char *mode);

/* Largest successful batch of (model, context, mode) outside the in-process rows; 0 when none. */
int report_feasible(const struct report *r, const char *model, int context, const char *mode);

/* Is the row one of the in-process arena's? */
bool report_inproc(const struct report_row *w);

/*
 * Draw, as PNGs in r->dir with gnuplot: decode tok/s against batch per mode and context; the
 * decode step split into compute, exposed fetch and the rest per mode and batch; step time of
 * sparda vs sparda-nooffload; prefill speedup of sparda over sparse against context. Returns 0,
 * -ENOENT (gnuplot absent: nothing drawn) or -EIO (gnuplot failed).
 */
int report_plot(const struct report *r);

/*
 * What a record's pass-through arguments say of the limits it ran under: the GPU memory limit
 * (compute --gpu-mem-limit) and the host RAM budget (memsvc --ram-budget), or the arguments
 * as given where they set none of them, into buf (bench_report_limits.c).
 */
void report_limits_text(struct json_object *compute, struct json_object *memsvc, char *buf,
			size_t len);

/* The record's compute_args and memsvc_args (new references), both NULL when it has none. */
void report_record_args(struct json_object *o, struct json_object **compute,
			struct json_object **memsvc);

/*
 * "Limits: GPU memory limit 80G, host RAM budget 100G." from the sweep's own (memsvc) records
 * of (model, context), each with its batches where they differ; nothing without such records.
 * first: the section's first row.
 */
void report_md_limits(FILE *f, const struct report *r, size_t first);

/*
 * "Where the decode step goes": each row whose result has compute's decode_phase_ms (a run with
 * --phase-times), its phases per step, into the Markdown and arr (bench_report_phases.c).
 * Nothing when no row has them.
 */
void report_md_phases(FILE *f, const struct report *r, struct json_object *arr);

#endif
