/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The rows `sparda bench report` reads back from a sweep's records, shared by the tables
 * (bench_report.c) and the gnuplot plots (bench_report_plot.c). Internal to tools/.
 */
#ifndef SPARDA_TOOLS_BENCH_REPORT_H
#define SPARDA_TOOLS_BENCH_REPORT_H

#include <stdbool.h>
#include <stddef.h>

struct report_row {
	char model[128], mode[32], status[16], error[512];
	int context, batch;
	bool ok;
	double tok_s, step_ms, prefill_s, prefill_tok_s, hit_rate; /* hit_rate < 0: none */
	double h2d_gbs, late_units;
	int equals_twin; /* -1: no twin */
	char *tokens;	 /* generated token ids as JSON text (owned), NULL when absent */
};

struct report {
	struct report_row *rows;
	size_t n;
	const char *dir; /* <out>/report */
};

/* The successful row of a configuration, or NULL. */
const struct report_row *report_find(const struct report *r, const char *model, int context,
				     int batch, const char *mode);

/* Largest successful batch of (model, context, mode); 0 when none. */
int report_feasible(const struct report *r, const char *model, int context, const char *mode);

/*
 * Draw decode tok/s against batch per mode and context, and step time sparda vs
 * sparda-nooffload, as PNGs in r->dir with gnuplot. Returns 0, -ENOENT (gnuplot absent: nothing
 * drawn) or -EIO (gnuplot failed).
 */
int report_plot(const struct report *r);

#endif
