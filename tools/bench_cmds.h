/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The evaluation sweep of `sparda bench`: `sweep` runs memsvc + compute over a grid of models,
 * contexts, batches and modes (one JSON per configuration), `report` aggregates those JSON
 * files into Markdown, a summary JSON and gnuplot PNGs. Internal to tools/.
 */
#ifndef SPARDA_TOOLS_BENCH_CMDS_H
#define SPARDA_TOOLS_BENCH_CMDS_H

#include <stdbool.h>
#include <stddef.h>

/* `sparda bench sweep [...]` (bench_sweep.c). Returns the process exit code. */
int bench_sweep(int argc, char **argv);
/* `sparda bench report --out DIR` (bench_report.c). Returns the process exit code. */
int bench_report(int argc, char **argv);

/* One configuration of the grid and how to run it (bench_sweep_run.c). */
struct sweep_cfg {
	const char *model_spec; /* as given: "preset" or "preset:layers" */
	const char *preset;
	unsigned layers;       /* 0: the preset's own (embedded model) */
	const char *model_dir; /* "" : the embedded model (--preset) */
	unsigned context, batch, new_tokens;
	const char *mode, *backend;
	const char *name; /* file stem: <model>_c<ctx>_b<batch>_<mode> */
	const char *out;  /* output directory */
	double timeout_s;
	const char *const *memsvc_args; /* NULL-terminated pass-through */
	const char *const *compute_args;
};

/*
 * Run one configuration (a fresh sparda-memsvc, then sparda-compute against it) and write
 * <out>/<name>.json, success or failure. Returns 0 when the record was written (*ok says
 * whether the run succeeded), or -errno when it could not be (nothing written).
 */
int sweep_run_one(const struct sweep_cfg *c, bool *ok);

/* Path of a binary next to the running sparda. 0, -ENOENT or -ENAMETOOLONG. */
int sweep_sibling(const char *name, char *buf, size_t len);

#endif
