/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The evaluation sweep of `sparda bench`: `sweep` runs memsvc + compute over a grid of models,
 * contexts and batches, the modes of a configuration in one run (one JSON per configuration),
 * `report` aggregates those JSON files into Markdown, a summary JSON and gnuplot PNGs.
 * Internal to tools/.
 */
#ifndef SPARDA_TOOLS_BENCH_CMDS_H
#define SPARDA_TOOLS_BENCH_CMDS_H

#include <stdbool.h>
#include <stddef.h>

/* `sparda bench sweep [...]` (bench_sweep.c). Returns the process exit code. */
int bench_sweep(int argc, char **argv);
/* `sparda bench report --out DIR` (bench_report.c). Returns the process exit code. */
int bench_report(int argc, char **argv);
/* `sparda bench spill --dir DIR [...]` (bench_spill.c). Returns the process exit code. */
int bench_spill(int argc, char **argv);

/* A mode left out of a configuration, and why ("gpu-oom at batch 4"). */
struct sweep_skip {
	const char *mode;
	char why[96];
};

/*
 * One configuration of the grid, (model, context, batch) with a store, and how to run it
 * (bench_sweep_run.c): every mode of the configuration in one sparda-compute process.
 */
struct sweep_cfg {
	const char *model_spec; /* as given: "preset" or "preset:layers" */
	const char *preset;
	unsigned layers;       /* 0: the preset's own (embedded model) */
	const char *model_dir; /* "" : the embedded model (--preset) */
	unsigned context, batch, new_tokens;
	const char *backend;
	const char *store;	  /* "memsvc" (a fresh daemon) or "inproc" (in-process arena) */
	const char *const *modes; /* modes to run, n_modes of them */
	int n_modes;
	const struct sweep_skip *skips; /* modes not run (recorded with the reason), n_skips */
	int n_skips;
	/* memsvc configurations: modes the same compute process runs again with the in-process
	 * arena (--inproc-modes), recorded as <name>_inproc.json when all of them finish */
	const char *const *inproc_modes;
	int n_inproc;
	const char *name;		/* file stem: <model>_c<ctx>_b<batch>[_inproc] */
	const char *out;		/* output directory */
	double timeout_s;		/* for the whole configuration, reruns included */
	const char *const *memsvc_args; /* NULL-terminated pass-through */
	const char *const *compute_args;
	/* <name>.json exists with other modes, recorded with the same pass-through arguments
	 * (sweep_record_mergeable): these modes join it instead of replacing it */
	bool merge;
};

/* What a configuration came to, mode by mode. */
struct sweep_outcome {
	int ok, failed, runs;
	bool inproc_recorded; /* <name>_inproc.json written from the same process */
};

/*
 * Run one configuration and write <out>/<name>.json, success or failure. The modes run in one
 * sparda-compute process; when that process fails, the modes it finished are recorded ok with
 * their figures (from its JSON), the mode it failed in with the reason (gpu-oom, host-oom,
 * timeout, error), and only the modes it did not reach run again in one process.
 * Returns 0 when the record was written (*o says how the modes fared), or -errno when it could
 * not be (nothing written).
 */
int sweep_run_config(const struct sweep_cfg *c, struct sweep_outcome *o);

/*
 * Can modes be added to the record at path (sweep_cfg.merge)? 1: it exists and was made with
 * the same --compute-arg and --memsvc-arg (the same limits); 0: there is none; -1: it exists
 * but cannot be read or was made with other arguments (then it is left as it is).
 */
int sweep_record_mergeable(const struct sweep_cfg *c, const char *path);

/* Is the mode one whose KV lives in the host store? */
bool sweep_mode_offloads(const char *mode);

/* Path of a binary next to the running sparda. 0, -ENOENT or -ENAMETOOLONG. */
int sweep_sibling(const char *name, char *buf, size_t len);

#endif
