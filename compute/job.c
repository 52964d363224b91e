/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparda-compute job: config table, model (the embedded tiny model is generated, and its
 * Forecast fitted, on first use), backend choice, prompts, the host store, one runner per
 * mode, and the results.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "job.h"
#include "cmetrics.h"
#include "job_internal.h"
#include "log.h"

static const char *const backend_names[] = { "auto", "cpu", "cuda", NULL };
static const char *const store_names[] = { "memsvc", "inproc", NULL };
static const char *const gather_names[] = { "kernel", "dma", "bulk", "dma-prefetch", NULL };
static const char *const kv_stream_names[] = { "compute", "side", NULL };

#define K(n, t, f, d, lo, hi, h)                                                               \
	{ .name = n, .type = CONFIG_TYPE_##t, .offset = offsetof(struct job_config, f),         \
	  .str_cap = sizeof(((struct job_config *)0)->f), .def = d, .min = lo, .max = hi,      \
	  .help = h }
static const struct config_key job_keys[] = {
	K("model", STRING, model, "", 0, 0, "model directory (HF layout); empty: the embedded tiny model"),
	K("forecast", STRING, forecast, "", 0, 0, "Forecast safetensors (default <model>/forecast.safetensors)"),
	K("preset", STRING, preset, "tiny", 0, 0, "geometry of the embedded model when --model is empty"),
	K("modes", STRING, modes, "sparda", 0, 0, "comma list of dense,sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload, or all"),
	K("inproc-modes", STRING, inproc_modes, "", 0, 0, "offloading modes (sparse-offload, sparda, sparda-noprefetch) to run again after --modes, in this process, with an in-process host store instead of memsvc: the process boundary's cost measured in one run (named <mode>+inproc in the table and JSON)"),
	{ .name = "backend", .type = CONFIG_TYPE_ENUM, .offset = offsetof(struct job_config, backend),
	  .def = "auto", .enum_names = backend_names, .help = "compute backend: auto (CUDA when a GPU is present), cpu, cuda" },
	K("batch", UINT, batch, "1", 1, 4096, "sequences decoded together"),
	K("prompt-tokens", UINT, prompt_tokens, "3072", 1, 1 << 22, "length of each synthetic prompt"),
	K("prompt-file", STRING, prompt_file, "", 0, 0, "token ids, one sequence per line (overrides the synthetic prompt)"),
	K("new-tokens", UINT, new_tokens, "128", 1, 1 << 20, "tokens to generate per sequence"),
	K("seed", UINT, seed, "1", 0, 0, "seed of the synthetic prompts and of sampling"),
	K("temperature", DOUBLE, temperature, "0", 0, 100, "sampling temperature (0 = greedy)"),
	K("top-k", UINT, top_k, "0", 0, 1 << 20, "sample among the k most likely tokens (0 = all)"),
	{ .name = "host-store", .type = CONFIG_TYPE_ENUM, .offset = offsetof(struct job_config, store),
	  .def = "memsvc", .enum_names = store_names, .help = "where offloaded KV lives: memsvc (the daemon) or inproc" },
	K("runtime-dir", STRING, runtime_dir, "", 0, 0, "sparda-memsvc runtime directory (default: the protocol's default)"),
	K("tenant", STRING, tenant, "default", 0, 0, "memsvc tenant"),
	K("arena-bytes", SIZE, arena_bytes, "0", 0, 0, "host arena to ask memsvc for (0 = sized from batch and tokens)"),
	K("poll", BOOL, poll, "false", 0, 0, "memsvc hot path in polling mode"),
	K("fallback", BOOL, fallback, "true", 0, 0, "sparda falls back to sparda-nooffload when memsvc is unavailable"),
	K("cache-slots", UINT, cache_slots, "0", 0, 1 << 20, "GPU block-cache slots per (sequence, offloaded layer, KV head): 0 = top-k, each step's selection (DESIGN 3.3); more keep blocks no longer selected until their slot is needed, the least recently selected first (hits when they come back; more GPU memory)"),
	K("seed-cache", BOOL, seed_cache, "true", 0, 0, "at the end of an offloaded layer's prefill, fill its GPU block cache with the full blocks the prompt's last query block selected (a retaining cache also those of the query blocks before it, while slots are left), from the prompt's KV still on the GPU, so the first decode step finds them cached instead of fetching its whole selection (false: that step starts from an empty cache)"),
	K("gather-ctas", UINT, gather_ctas, "0", 0, 1024, "CTAs of the gather and the write-back (CUDA; 0 = 8 for the bulk copy on sm_90, else 16)"),
	{ .name = "gather", .type = CONFIG_TYPE_ENUM, .offset = offsetof(struct job_config, gather),
	  .def = "bulk", .enum_names = gather_names, .help = "how offloaded layers fetch their units: bulk (the device-made index lists, moved by the bulk-copy engine from one thread per CTA in 8 KiB chunks, no host round trip; CUDA sm_90, elsewhere the kernel), kernel (a gather kernel's threads read the arena), dma (the load list comes back to the host, which resolves it and queues one batch of copy-engine copies per layer) or dma-prefetch (sparda's prefetch as dma, the fetches on the critical path of sparse-offload and sparda-noprefetch as bulk)" },
	K("dma-streams", UINT, dma_streams, "1", 1, KB_DMA_STREAMS_MAX, "with --gather=dma or dma-prefetch: the streams one layer's copy-engine copies are split over, by bytes (CUDA; the driver may give each its own copy engine; 1 = one batch on one stream)"),
	K("dma-max-bytes", SIZE, dma_max_bytes, "0", 0, 0, "with --gather=dma or dma-prefetch: the copy engines take at most this many bytes of a layer's fetch in a decode step (whole units, from the start of its list) and the device's resolve and bulk copy move the rest beside them, so the copy engines take only what they can move before the layer needs it (0 = no limit; under one unit: every fetch the device's way; units_fetched_dma in the JSON counts what they moved)"),
	{ .name = "prefill-kv-stream", .type = CONFIG_TYPE_ENUM, .offset = offsetof(struct job_config, prefill_kv_stream),
	  .def = "side", .enum_names = kv_stream_names, .help = "prefill of offloaded layers: pack the prompt's KV into the host arena on the copy stream, overlapping the next layer, each layer's units committed when the next one starts (side, DESIGN 3.4), or on the compute stream, which waits for it (compute)" },
	K("threads", UINT, threads, "0", 0, 1024, "CPU backend threads (0 = all cores)"),
	K("gpu-mem-limit", SIZE, gpu_mem_limit, "0", 0, 0, "device memory this process may use (0 = all): an allocation past it fails as out of device memory, as on a smaller GPU (CUDA counts the device's memory in use as the driver reports it; the CPU backend its own device-side allocations)"),
	K("timeout-ms", UINT, timeout_ms, "5000", 1, 3600000, "per-request timeout towards memsvc"),
	K("json", STRING, json, "", 0, 0, "write the results as JSON to this path"),
	K("print-tokens", BOOL, print_tokens, "false", 0, 0, "print the generated token ids"),
	K("layer-table", BOOL, layer_table, "false", 0, 0, "print per-layer statistics of every mode"),
	K("phase-times", BOOL, phase_times, "false", 0, 0, "time each phase of the decode step on the compute stream with events (ms per step, printed per mode and in the JSON as decode_phase_ms); the events add a little work to every layer, so use it to see where a step goes, not for tok/s"),
	K("logits-out", STRING, logits_out, "", 0, 0, "write the logits of every generated token (float32, [mode][batch][new][vocab] in --modes order, then the --inproc-modes runs)"),
	K("log-level", STRING, log_level, "info", 0, 0, "debug, info, warn, error"),
	K("recall-every", UINT, recall_every, "8", 0, 1 << 20, "Forecast modes: measure the Forecast's recall against the original selector every N decode steps (0 = off)"),
	K("metrics-port", UINT, metrics_port, "0", 0, 65535, "serve /metrics and /healthz (Prometheus text) on this port during the run; 0 = off"),
	K("serve-dir", STRING, serve_dir, "", 0, 0, "serve requests: prompt files dropped in DIR/in, results in DIR/out (see docs/operations.md); empty: one batch job"),
};
#undef K

const struct config_table job_config_table = {
	.program = "sparda-compute",
	.summary = "the SparDA compute process: prefill and decode with Forecast lookahead",
	.keys = job_keys,
	.n_keys = sizeof(job_keys) / sizeof(job_keys[0]),
	.env_prefix = "SPARDA_COMPUTE_",
};

int job_default_model_dir(char *buf, size_t len)
{
	const char *base = getenv("XDG_CACHE_HOME");
	int n;
	if (base && base[0])
		n = snprintf(buf, len, "%s/sparda/model-tiny-v4", base);
	else
		n = snprintf(buf, len, "/tmp/sparda-model-tiny-v4-%u", (unsigned)getuid());
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/*
 * The tiny preset's Forecast is fitted (ridge only, CPU backend with one thread, so every
 * machine writes the same bytes) over the generator's untrained one, a few seconds once.
 * Larger presets keep the generator's: on the CPU their fit would take minutes (`sparda
 * gen-model --train-forecast` does it where a GPU is).
 */
static int fit_forecast(const char *preset, const char *dir, char *err, size_t err_len)
{
	struct train_dir_opts o;
	struct train_report rep;
	int rc;

	if (strcmp(preset, "tiny") != 0)
		return 0;
	train_dir_opts_default(&o);
	o.backend = "cpu";
	if ((rc = train_forecast_dir(dir, &o, &rep, err, err_len)))
		return rc;
	log_info("job",
		 rep.kept_model ? "kept the embedded model's generated Forecast (the fit scored lower)"
				: "fitted the embedded model's Forecast",
		 "fit=ridge recall=%.4f generated=%.4f untrained=%.4f",
		 train_report_mean(&rep, offsetof(struct train_layer_report, recall_trained)),
		 train_report_mean(&rep, offsetof(struct train_layer_report, recall_model)),
		 train_report_mean(&rep, offsetof(struct train_layer_report, recall_untrained)));
	train_report_fini(&rep);
	return 0;
}

/* A generation that failed half way leaves nothing behind. */
static void remove_partial(const char *dir)
{
	static const char *const files[] = { "config.json",
					     "model.safetensors",
					     "model.safetensors.tmp",
					     "forecast.safetensors",
					     "forecast.safetensors.tmp",
					     "forecast.fit.safetensors",
					     "forecast.fit.safetensors.tmp" };
	char p[JOB_PATH_MAX + 64];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Generate the preset into a temp dir and rename it into place (concurrent jobs race safely). */
static int ensure_model(const struct job_config *cfg, char *dir, size_t len, char *err,
			size_t err_len)
{
	struct model_config mc;
	char tmp[JOB_PATH_MAX + 32], probe[JOB_PATH_MAX + 16];
	struct stat st;
	int rc;

	if (cfg->model[0]) {
		snprintf(dir, len, "%s", cfg->model);
		return 0;
	}
	if ((rc = job_default_model_dir(dir, len)))
		return rc;
	if (strcmp(cfg->preset, "tiny") != 0) {
		char *t = strstr(dir, "model-tiny");
		char rest[64];
		snprintf(rest, sizeof(rest), "%s", t + strlen("model-tiny"));
		snprintf(t, len - (size_t)(t - dir), "model-%s%s", cfg->preset, rest);
	}
	snprintf(probe, sizeof(probe), "%s/config.json", dir);
	if (stat(probe, &st) == 0)
		return 0;
	if ((rc = model_preset(cfg->preset, &mc))) {
		snprintf(err, err_len, "unknown model preset '%s'", cfg->preset);
		return rc;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", dir, (int)getpid());
	log_info("job", "generating the embedded model", "preset=%s dir=%s", cfg->preset, dir);
	if ((rc = model_generate(tmp, &mc, 1234, err, err_len)) ||
	    (rc = fit_forecast(cfg->preset, tmp, err, err_len))) {
		remove_partial(tmp);
		return rc;
	}
	if (rename(tmp, dir) != 0 && stat(probe, &st) != 0) {
		rc = err_from_errno();
		snprintf(err, err_len, "cannot move the generated model to %s: %s", dir, err_str(rc));
		return rc;
	}
	return 0;
}

static int open_backend(const struct job_config *cfg, struct kb **kb, char *err, size_t err_len)
{
	struct kb_opts ko = { .kind = KB_KIND_CPU, .cpu_threads = (int)cfg->threads,
			      .mem_limit = cfg->gpu_mem_limit };
	int rc;

	if (cfg->backend == JOB_BACKEND_CUDA ||
	    (cfg->backend == JOB_BACKEND_AUTO && kb_cuda_available()))
		ko.kind = KB_KIND_CUDA;
	rc = kb_open(&ko, kb);
	if (rc && ko.kind == KB_KIND_CUDA && cfg->backend == JOB_BACKEND_AUTO) {
		log_warn("job", "CUDA backend unavailable, using the CPU", "err=%s", err_name(rc));
		ko.kind = KB_KIND_CPU;
		rc = kb_open(&ko, kb);
	}
	if (rc)
		snprintf(err, err_len, "cannot open the %s backend: %s",
			 ko.kind == KB_KIND_CUDA ? "cuda" : "cpu", err_str(rc));
	return rc;
}

/* Which Forecast file the model holds and whether it was trained (its metadata), logged. */
static void forecast_describe(struct job *j, const char *model_dir)
{
	const struct train_file_info *fi = &j->forecast;
	int rc;

	j->forecast_path[0] = '\0';
	memset(&j->forecast, 0, sizeof(j->forecast));
	if (!j->model->has_forecast) {
		log_info("job", "no Forecast", "model=%s", model_dir);
		return;
	}
	if (j->cfg->forecast[0])
		snprintf(j->forecast_path, sizeof(j->forecast_path), "%s", j->cfg->forecast);
	else
		snprintf(j->forecast_path, sizeof(j->forecast_path), "%s/forecast.safetensors",
			 model_dir);
	rc = train_file_info(j->forecast_path, &j->forecast);
	if (rc == -ENOENT && !j->cfg->forecast[0]) /* the tensors are in the model's own files */
		snprintf(j->forecast_path, sizeof(j->forecast_path), "%s", model_dir);
	else if (rc)
		log_warn("job", "cannot read the Forecast file's metadata", "path=%s err=%s",
			 j->forecast_path, err_name(rc));
	log_info("job", "Forecast", "path=%s trained=%s fit=%s recall_heldout=%.4f",
		 j->forecast_path, fi->trained ? "true" : "false", fi->trained ? fi->fit : "none",
		 fi->recall);
}

const char *job_gather_name(const struct job_config *cfg, enum runner_mode m)
{
	return runner_mode_offloads(m) ? gather_names[job_mode_gather(cfg, m)] : NULL;
}

int job_open(struct job *j, char *model_dir, size_t len)
{
	const struct job_config *cfg = j->cfg;
	enum log_level lvl;
	int rc;

	if (log_level_parse(cfg->log_level, &lvl) == 0)
		log_set_level(lvl);
	if ((cfg->dma_max_bytes || cfg->dma_streams > 1) && cfg->gather != JOB_GATHER_DMA &&
	    cfg->gather != JOB_GATHER_DMA_PREFETCH) {
		snprintf(j->err, sizeof(j->err),
			 "key %s: only with gather=dma or gather=dma-prefetch (it shapes what the "
			 "copy engines fetch)",
			 cfg->dma_max_bytes ? "dma-max-bytes" : "dma-streams");
		return -EINVAL;
	}
	if ((rc = job_parse_modes(j, j->err, sizeof(j->err))) ||
	    (rc = ensure_model(cfg, model_dir, len, j->err, sizeof(j->err))))
		return rc;
	rc = model_open(model_dir, cfg->forecast[0] ? cfg->forecast : NULL, &j->model, j->err,
			sizeof(j->err));
	if (rc)
		return rc;
	forecast_describe(j, model_dir);
	if (cfg->metrics_port &&
	    (rc = cmetrics_open((uint16_t)cfg->metrics_port, j->model->cfg.n_layers, &j->metrics,
				j->err, sizeof(j->err))))
		return rc;
	return open_backend(cfg, &j->kb, j->err, sizeof(j->err));
}

int job_run(const struct job_config *cfg, FILE *out)
{
	struct job j = { .cfg = cfg, .out = out };
	char dir[JOB_PATH_MAX];
	int rc, wrc = 0, status = 1;

	if ((rc = job_open(&j, dir, sizeof(dir))) ||
	    (rc = job_make_prompts(&j, j.err, sizeof(j.err))))
		goto out;
	/* a mode that fails ends the job, but the modes before it keep their table and JSON */
	j.json_each = cfg->json[0] ? cfg->json : NULL;
	rc = job_run_modes(&j);
	job_print(&j);
	if (cfg->json[0] && (wrc = job_write_json(&j, cfg->json)))
		log_error("job", "cannot write the JSON", "path=%s err=%s", cfg->json,
			  err_name(wrc));
	if (rc || wrc)
		goto out;
	if (cfg->logits_out[0] && (rc = job_write_logits(&j, cfg->logits_out))) {
		snprintf(j.err, sizeof(j.err), "cannot write %s: %s", cfg->logits_out,
			 err_str(rc));
		goto out;
	}
	status = job_twins_equal(&j) ? 0 : 1;
	if (status)
		snprintf(j.err, sizeof(j.err), "a mode's tokens differ from its twin's");
out:
	if (status && j.err[0]) /* rc is 0 when only the twins differ */
		log_error("job", j.err, "rc=%s status=%d", rc ? err_name(rc) : "0", status);
	job_free(&j);
	return status;
}
