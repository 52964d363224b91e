/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A generation job of sparda-compute: the process's config table, model and backend set-up,
 * the host store (a memsvc session, or in-process), one runner per requested mode on the same
 * prompts, the results table (with the twin-equality check of DESIGN 3.5) and its JSON.
 */
#ifndef SPARDA_COMPUTE_JOB_H
#define SPARDA_COMPUTE_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "runner.h"

#define JOB_PATH_MAX 512

enum job_backend { JOB_BACKEND_AUTO = 0, JOB_BACKEND_CPU, JOB_BACKEND_CUDA };
enum job_store { JOB_STORE_MEMSVC = 0, JOB_STORE_INPROC };
/* How offloaded layers fetch their units (--gather). DMA_PREFETCH: sparda's prefetch by the copy
 * engines (DMA), the fetches on the critical path (sparse-offload, sparda-noprefetch) by BULK. */
enum job_gather { JOB_GATHER_KERNEL = 0, JOB_GATHER_DMA, JOB_GATHER_BULK, JOB_GATHER_DMA_PREFETCH };

struct job_config {
	char model[JOB_PATH_MAX];     /* model directory; "" = the embedded tiny model */
	char forecast[JOB_PATH_MAX];  /* Forecast safetensors; "" = <model>/forecast.safetensors */
	char preset[32];              /* geometry generated when model is "" */
	char modes[160];              /* comma list of modes, or "all" */
	char inproc_modes[160];       /* offloading modes run again with an in-process store */
	int backend;                  /* enum job_backend */
	uint64_t batch;
	uint64_t prompt_tokens;
	char prompt_file[JOB_PATH_MAX];
	uint64_t new_tokens;
	uint64_t seed;
	double temperature;
	uint64_t top_k;
	int store;                    /* enum job_store */
	char runtime_dir[JOB_PATH_MAX];
	char tenant[64];
	uint64_t arena_bytes;         /* 0 = sized from batch and tokens */
	bool poll;
	bool fallback;                /* sparda -> sparda-nooffload when memsvc is unavailable */
	uint64_t gather_ctas;
	uint64_t cache_slots;
	bool seed_cache;
	int gather;                   /* enum job_gather */
	uint64_t dma_max_bytes;       /* dma, dma-prefetch: larger layer fetches go the device's way */
	uint64_t dma_streams;         /* dma, dma-prefetch: streams a layer's copies are split over */
	int prefill_kv_stream;        /* 0 compute, 1 side (runner_opts.prefill_kv_side) */
	uint64_t threads;
	uint64_t gpu_mem_limit;       /* kb_opts.mem_limit: 0 = the whole device */
	uint64_t timeout_ms;
	char json[JOB_PATH_MAX];
	bool print_tokens;
	bool layer_table;             /* print the per-layer statistics of every mode */
	bool phase_times;             /* time the decode step's phases (runner_opts.phase_times) */
	char logits_out[JOB_PATH_MAX];/* raw float32 logits [mode][batch][new][vocab], or "" */
	char log_level[16];
	uint64_t metrics_port;        /* Prometheus endpoint during the run, 0 = off */
	uint64_t recall_every;        /* Forecast recall every N decode steps, 0 = off */
	char serve_dir[JOB_PATH_MAX]; /* serve prompt files dropped in DIR/in; "" = one batch job */
};

extern const struct config_table job_config_table;

/* Run the job; prints the table to out. Returns a process exit status (0 ok, 1 failure). */
int job_run(const struct job_config *cfg, FILE *out);

/*
 * Serve requests from cfg->serve_dir until SIGTERM or SIGINT (compute/job_serve.c): prompt
 * files DIR/in/NAME.prompt give DIR/out/NAME.json (or NAME.error). Returns an exit status.
 */
int job_serve(const struct job_config *cfg, FILE *out);

/* Where the embedded tiny model lives (generated on first use). */
int job_default_model_dir(char *buf, size_t len);

#endif
