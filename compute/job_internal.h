/* SPDX-License-Identifier: Apache-2.0 */
/* State of one sparda-compute job, shared by job.c, job_modes.c and job_report.c. */
#ifndef SPARDA_COMPUTE_JOB_INTERNAL_H
#define SPARDA_COMPUTE_JOB_INTERNAL_H

#include "job.h"
#include "model.h"
#include "train.h"

#define JOB_MAX_RUNS (2 * RUNNER_MODE_COUNT)

struct job_result {
	enum runner_mode mode;     /* what was asked */
	enum runner_mode ran;      /* what ran (differs after a fallback) */
	bool done;
	bool failed;               /* the mode the job stopped at: why in rc and job.err */
	int rc;                    /* -errno of that failure */
	struct runner_stats st;    /* layer points into `layers` */
	struct runner_layer_stats *layers;
	int32_t *tokens;           /* [batch * new_tokens] */
	float *logits;             /* [batch * new_tokens * vocab] with --logits-out, else NULL */
	uint64_t host_rss_peak;    /* bytes: the process's peak resident set during this mode */
	bool inproc;               /* an inproc-modes run: the in-process host store */
	char note[320];
};

struct job {
	const struct job_config *cfg;
	FILE *out;
	struct model *model;
	char forecast_path[JOB_PATH_MAX + 32]; /* the Forecast file model_open loaded ("" none) */
	struct train_file_info forecast;       /* what that file says about its training */
	struct kb *kb;
	struct kvhost *host;
	struct kvhost_opts host_opts; /* what the open host was sized for (reuse when it fits) */
	struct kvhost *host_inproc;   /* the in-process store of the inproc-modes runs */
	struct kvhost_opts inproc_opts;
	struct cmetrics *metrics;  /* --metrics-port, or NULL */
	int host_rc;               /* why the host store could not be opened */
	char host_err[256];
	int32_t **prompts;
	uint32_t *lens;
	uint32_t batch;
	/* the runs in order: --modes, then --inproc-modes (inproc[i] set) */
	enum runner_mode modes[JOB_MAX_RUNS];
	bool inproc[JOB_MAX_RUNS];
	uint32_t n_modes;
	struct job_result res[JOB_MAX_RUNS];
	const char *json_each;     /* JSON rewritten after every finished mode, or NULL */
	char err[1024];
};

/* Log level, modes, model (into model_dir), metrics endpoint and backend; message in j->err. */
int job_open(struct job *j, char *model_dir, size_t len);
int job_parse_modes(struct job *j, char *err, size_t err_len);
int job_make_prompts(struct job *j, char *err, size_t err_len);
/*
 * Run the modes in order, stopping at the first that fails: that result is marked failed (rc,
 * message in j->err), those before it are done, those after it were not run.
 */
int job_run_modes(struct job *j);
/* Table of the modes that finished, and a line for the failed one. */
void job_print(struct job *j);
/* Twin pairs of DESIGN 3.5 that both ran: do their tokens match? (true when none ran) */
bool job_twins_equal(const struct job *j);
/* A finished run against its twin (an inproc run against the twin of the --modes runs):
 * 1 equal, 0 differ, -1 n/a */
int job_twin_state(const struct job *j, const struct job_result *r);
/* The run's name: the mode, "+inproc" for an inproc-modes run. */
const char *job_result_name(const struct job_result *r, char *buf, size_t len);
/* How mode m fetches its offloaded units under --gather (dma-prefetch: dma for sparda's
 * prefetch, bulk elsewhere), and that gather's --gather name (NULL for a mode that does not
 * offload). */
enum job_gather job_mode_gather(const struct job_config *cfg, enum runner_mode m);
const char *job_gather_name(const struct job_config *cfg, enum runner_mode m);
/* {mode: figures + "status": "ok"} for finished modes, {mode: {status: "failed", error, errno}}
 * for the failed one; modes not run are absent. Written to path.tmp, renamed to path. */
int job_write_json(const struct job *j, const char *path);
int job_write_logits(const struct job *j, const char *path);
void job_free(struct job *j);

#endif
