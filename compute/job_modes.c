/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job's inputs and runs: the mode list, the prompts (a file of token ids, or synthetic
 * prompts with repeated passages so attention has long-range structure), the host store, and
 * one runner per mode over the same prompts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "err.h"
#include "cmetrics.h"
#include "job_internal.h"
#include "log.h"

/* --inproc-modes: offloading modes, appended after the --modes runs with inproc set. */
static int parse_inproc_modes(struct job *j, char *err, size_t err_len)
{
	char buf[sizeof(j->cfg->inproc_modes)], *save = NULL;
	uint32_t first = j->n_modes;

	if (!j->cfg->inproc_modes[0])
		return 0;
	if (j->cfg->store == JOB_STORE_INPROC) {
		snprintf(err, err_len,
			 "key inproc-modes: host-store is already inproc (the "
			 "in-process runs compare with memsvc)");
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", j->cfg->inproc_modes);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		enum runner_mode m;

		if (runner_mode_parse(t, &m) || !runner_mode_offloads(m)) {
			snprintf(
			    err, err_len,
			    "key inproc-modes: '%s' is not an offloading mode (sparse-offload, "
			    "sparda, sparda-noprefetch)",
			    t);
			return -EINVAL;
		}
		for (uint32_t i = first; i < j->n_modes; i++)
			if (j->modes[i] == m)
				goto next;
		j->inproc[j->n_modes] = true;
		j->modes[j->n_modes++] = m;
	next:;
	}
	return 0;
}

int job_parse_modes(struct job *j, char *err, size_t err_len)
{
	char buf[sizeof(j->cfg->modes)], *save = NULL;

	if (strcmp(j->cfg->modes, "all") == 0) {
		for (int m = 0; m < RUNNER_MODE_COUNT; m++)
			j->modes[j->n_modes++] = (enum runner_mode)m;
		return parse_inproc_modes(j, err, err_len);
	}
	snprintf(buf, sizeof(buf), "%s", j->cfg->modes);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		enum runner_mode m;
		if (runner_mode_parse(t, &m)) {
			snprintf(err, err_len, "key modes: unknown mode '%s'", t);
			return -EINVAL;
		}
		for (uint32_t i = 0; i < j->n_modes; i++)
			if (j->modes[i] == m)
				goto next;
		j->modes[j->n_modes++] = m;
	next:;
	}
	if (!j->n_modes) {
		snprintf(err, err_len, "key modes: no mode given");
		return -EINVAL;
	}
	return parse_inproc_modes(j, err, err_len);
}

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Passages of 48 tokens; half of them repeat an earlier passage (retrieval structure). */
static void synth_prompt(int32_t *p, uint32_t n, uint32_t vocab, uint64_t seed)
{
	const uint32_t seg = 48;
	uint64_t s = seed * 0x100000001b3ull + 7;

	for (uint32_t i = 0; i < n; i += seg) {
		uint32_t len = n - i < seg ? n - i : seg;
		bool repeat = i >= 4 * seg && (mix(&s) & 1);
		uint32_t src = repeat ? (uint32_t)(mix(&s) % (i / seg)) * seg : 0;
		for (uint32_t t = 0; t < len; t++)
			p[i + t] = repeat ? p[src + t] : (int32_t)(mix(&s) % vocab);
	}
}

static int read_prompt_file(struct job *j, char *err, size_t err_len)
{
	FILE *f = fopen(j->cfg->prompt_file, "r");
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	if (!f) {
		rc = err_from_errno();
		snprintf(err, err_len, "key prompt-file: cannot open %s: %s", j->cfg->prompt_file,
			 err_str(rc));
		return rc;
	}
	j->prompts = calloc(j->cfg->batch, sizeof(*j->prompts));
	j->lens = calloc(j->cfg->batch, sizeof(*j->lens));
	if (!j->prompts || !j->lens) {
		rc = -ENOMEM;
		goto out;
	}
	while (j->batch < j->cfg->batch && getline(&line, &cap, f) > 0) {
		uint32_t n = 0, cap_t = 1024;
		int32_t *p = malloc(cap_t * sizeof(int32_t));
		char *save = NULL;
		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		for (char *t = strtok_r(line, " \t\r\n,", &save); t;
		     t = strtok_r(NULL, " \t\r\n,", &save)) {
			char *end;
			long v = strtol(t, &end, 10);
			if (*end || v < 0 || v >= (long)j->model->cfg.vocab) {
				snprintf(err, err_len,
					 "prompt-file %s line %u: '%s' is not a token id "
					 "in [0, %u)",
					 j->cfg->prompt_file, j->batch + 1, t, j->model->cfg.vocab);
				free(p);
				rc = -EINVAL;
				goto out;
			}
			if (n == cap_t) {
				int32_t *np = realloc(p, (cap_t *= 2) * sizeof(int32_t));
				if (!np) {
					free(p);
					rc = -ENOMEM;
					goto out;
				}
				p = np;
			}
			p[n++] = (int32_t)v;
		}
		if (!n) {
			free(p);
			continue;
		}
		j->prompts[j->batch] = p;
		j->lens[j->batch++] = n;
	}
	if (!j->batch) {
		snprintf(err, err_len, "prompt-file %s holds no token ids", j->cfg->prompt_file);
		rc = -EINVAL;
	}
out:
	free(line);
	fclose(f);
	return rc;
}

int job_make_prompts(struct job *j, char *err, size_t err_len)
{
	if (j->cfg->prompt_file[0])
		return read_prompt_file(j, err, err_len);
	j->batch = (uint32_t)j->cfg->batch;
	j->prompts = calloc(j->batch, sizeof(*j->prompts));
	j->lens = calloc(j->batch, sizeof(*j->lens));
	if (!j->prompts || !j->lens)
		return -ENOMEM;
	for (uint32_t i = 0; i < j->batch; i++) {
		j->lens[i] = (uint32_t)j->cfg->prompt_tokens;
		j->prompts[i] = malloc(sizeof(int32_t) * j->lens[i]);
		if (!j->prompts[i])
			return -ENOMEM;
		synth_prompt(j->prompts[i], j->lens[i], j->model->cfg.vocab, j->cfg->seed + i);
	}
	return 0;
}

static uint32_t max_tokens(const struct job *j)
{
	uint32_t m = 0;
	for (uint32_t i = 0; i < j->batch; i++)
		m = j->lens[i] > m ? j->lens[i] : m;
	return m + (uint32_t)j->cfg->new_tokens;
}

/* Does a request sized o fit in a host store opened for have? */
static bool host_fits(const struct kvhost_opts *o, const struct kvhost_opts *have)
{
	return o->arena_bytes <= have->arena_bytes && o->max_seqs <= have->max_seqs &&
	       o->max_units <= have->max_units;
}

/* The host store of the --modes runs (cfg->store), or with inproc the in-process one of the
 * --inproc-modes runs; reused while the request fits in it. */
static int open_host(struct job *j, bool inproc)
{
	const struct model_config *c = &j->model->cfg;
	uint32_t blk = c->sparse.block, maxb = (max_tokens(j) + blk - 1) / blk;
	uint64_t units = (uint64_t)j->batch * maxb * c->n_layers * c->n_kv_heads;
	struct kvhost_opts o = {
	    .geom = {.n_layers = c->n_layers,
		     .n_kv_heads = c->n_kv_heads,
		     .head_dim = c->head_dim,
		     .block_tokens = blk,
		     .dtype_bytes = 2},
	    .max_seqs = j->batch + 1,
	    .max_units = units + 1,
	    .runtime_dir = j->cfg->runtime_dir[0] ? j->cfg->runtime_dir : NULL,
	    .tenant = j->cfg->tenant,
	    .poll = j->cfg->poll,
	    .timeout_ms = (uint32_t)j->cfg->timeout_ms,
	};
	o.geom.unit_bytes = 2 * blk * c->head_dim * 2;
	/* Exactly the units the job can hold: the sequences free theirs when a mode ends, before
	 * the next mode allocates, so nothing more is needed (an arena with 1/8 more than this
	 * was refused under RAM budgets that the KV itself fitted). */
	o.arena_bytes = j->cfg->arena_bytes ? j->cfg->arena_bytes : units * o.geom.unit_bytes;
	if (inproc) {
		if (j->host_inproc && host_fits(&o, &j->inproc_opts))
			return 0;
		kvhost_close(j->host_inproc);
		j->host_inproc = NULL;
		j->inproc_opts = o;
		return kvhost_inproc_open(&o, &j->host_inproc);
	}
	if (j->host_rc)
		return j->host_rc;
	/* A service keeps its session between requests: reused while this one fits in it. */
	if (j->host && host_fits(&o, &j->host_opts))
		return 0;
	if (j->host) {
		log_info("job", "host store reopened for a larger request",
			 "arena_bytes=%llu max_seqs=%u", (unsigned long long)o.arena_bytes,
			 o.max_seqs);
		kvhost_close(j->host);
		j->host = NULL;
	}
	j->host_opts = o;
	if (j->cfg->store == JOB_STORE_INPROC)
		j->host_rc = kvhost_inproc_open(&o, &j->host);
	else
		j->host_rc = kvhost_memsvc_open(&o, &j->host, j->host_err, sizeof(j->host_err));
	if (j->host_rc && !j->host_err[0])
		snprintf(j->host_err, sizeof(j->host_err), "host store: %s", err_str(j->host_rc));
	return j->host_rc;
}

static void publish_step(void *ctx, enum runner_mode mode, const struct runner_stats *st)
{
	struct job *j = ctx;
	cmetrics_update(j->metrics, mode, st);
}

/* Reset the peak resident set (Linux: "5" to clear_refs), so each mode reports its own. */
static void rss_peak_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (!f)
		return;
	fputs("5", f);
	fclose(f);
}

/* Peak resident set since the last reset (VmHWM), else the process's (ru_maxrss). */
static uint64_t rss_peak_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long kb = 0;
	struct rusage ru;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	if (!kb && getrusage(RUSAGE_SELF, &ru) == 0)
		kb = (unsigned long long)ru.ru_maxrss;
	return (uint64_t)kb * 1024;
}

enum job_gather job_mode_gather(const struct job_config *cfg, enum runner_mode m)
{
	if (cfg->gather != JOB_GATHER_DMA_PREFETCH)
		return (enum job_gather)cfg->gather;
	return m == RUNNER_MODE_SPARDA ? JOB_GATHER_DMA : JOB_GATHER_BULK;
}

static int run_one(struct job *j, struct job_result *res, enum runner_mode mode)
{
	const struct job_config *cfg = j->cfg;
	enum job_gather gather = job_mode_gather(cfg, mode);
	struct runner_opts ro = {.mode = mode,
				 .max_batch = j->batch,
				 .max_tokens = max_tokens(j),
				 .gather_ctas = (uint32_t)cfg->gather_ctas,
				 .cache_slots = (uint32_t)cfg->cache_slots,
				 .gather_dma = gather == JOB_GATHER_DMA,
				 .dma_max_bytes = cfg->dma_max_bytes,
				 .dma_streams = (uint32_t)cfg->dma_streams,
				 /* with dma, the layers over dma_max_bytes */
				 .gather_bulk = gather != JOB_GATHER_KERNEL,
				 .prefill_kv_side = cfg->prefill_kv_stream == 1,
				 .phase_times = cfg->phase_times,
				 .seed_cache = cfg->seed_cache,
				 .on_step = j->metrics ? publish_step : NULL,
				 .on_step_ctx = j,
				 .recall_every = (uint32_t)cfg->recall_every};
	struct runner_sampling smp = {.temperature = (float)cfg->temperature,
				      .top_k = (uint32_t)cfg->top_k,
				      .seed = cfg->seed};
	struct runner *r = NULL;
	int rc;

	res->ran = mode;
	if (res->inproc) { /* no fallback: these runs measure the in-process store */
		/* they come after every memsvc run: give its arena back first, so the host holds
		 * one arena at a time, as two processes would */
		kvhost_close(j->host);
		j->host = NULL;
		if ((rc = open_host(j, true))) {
			snprintf(j->err, sizeof(j->err),
				 "mode %s+inproc: in-process host store: %s",
				 runner_mode_name(mode), err_str(rc));
			return rc;
		}
		ro.host = j->host_inproc;
	} else if (runner_mode_offloads(mode)) {
		if ((rc = open_host(j, false))) {
			if (mode != RUNNER_MODE_SPARDA || !cfg->fallback) {
				snprintf(j->err, sizeof(j->err), "mode %s: %s",
					 runner_mode_name(mode), j->host_err);
				return rc;
			}
			log_warn("job", "memsvc unavailable: sparda falls back to sparda-nooffload",
				 "reason=\"%s\"", j->host_err);
			snprintf(res->note, sizeof(res->note), "fell back to sparda-nooffload: %s",
				 j->host_err);
			res->ran = mode = ro.mode = RUNNER_MODE_SPARDA_NOOFFLOAD;
		}
		ro.host = runner_mode_offloads(mode) ? j->host : NULL;
	}
	rss_peak_reset();
	rc = runner_open(j->model, j->kb, &ro, &r, j->err, sizeof(j->err));
	if (rc)
		return rc;
	res->tokens = calloc((size_t)j->batch * cfg->new_tokens, sizeof(int32_t));
	if (cfg->logits_out[0]) {
		res->logits =
		    calloc((size_t)j->batch * cfg->new_tokens * j->model->cfg.vocab, sizeof(float));
		if (!res->logits) {
			runner_close(r);
			return -ENOMEM;
		}
	}
	res->layers = calloc(j->model->cfg.n_layers, sizeof(*res->layers));
	if (!res->tokens || !res->layers) {
		runner_close(r);
		return -ENOMEM;
	}
	rc = runner_generate(r, (const int32_t *const *)j->prompts, j->lens, j->batch,
			     (uint32_t)cfg->new_tokens, &smp, res->tokens, res->logits, j->err,
			     sizeof(j->err));
	if (!rc) {
		res->st = *runner_get_stats(r);
		memcpy(res->layers, res->st.layer, sizeof(*res->layers) * j->model->cfg.n_layers);
		res->st.layer = res->layers;
		res->host_rss_peak = rss_peak_bytes();
		res->done = true;
	}
	runner_close(r);
	return rc;
}

/*
 * sparda lost its host store during the run (the daemon died or stopped answering): with
 * --fallback, regenerate from the prompts with every layer's KV on the device. Returns true when
 * the caller should rerun the result in sparda-nooffload.
 */
static bool fall_back_mid_run(struct job *j, struct job_result *res)
{
	int hrc;

	if (res->mode != RUNNER_MODE_SPARDA || res->ran != RUNNER_MODE_SPARDA ||
	    !j->cfg->fallback || res->inproc || !j->host || !(hrc = j->host->ops->health(j->host)))
		return false;
	log_warn("job", "memsvc failed mid-run: sparda regenerates in sparda-nooffload",
		 "reason=\"%s\" health=%s", j->err, err_name(hrc));
	snprintf(res->note, sizeof(res->note),
		 "memsvc failed mid-run (%.200s); regenerated in sparda-nooffload", j->err);
	free(res->tokens);
	free(res->logits);
	free(res->layers);
	res->tokens = NULL;
	res->logits = NULL;
	res->layers = NULL;
	j->err[0] = 0;
	return true;
}

/*
 * One untimed short generation so the first timed mode does not pay the device's lazy
 * initialisation (module loading, library handles): the first sequence only, its prompt cut to
 * just past where attention turns sparse (so the selection kernels run too), 2 new tokens. At
 * the whole batch and prompt it cost as much as the mode itself (53 s at 128 x 32K).
 */
static int warm_up(struct job *j)
{
	struct job_result tmp = {0};
	struct job_config c = *j->cfg;
	const struct job_config *saved = j->cfg;
	uint32_t batch = j->batch, len = j->lens[0];
	uint64_t warm = model_first_sparse_pos(&j->model->cfg) + 4ull * j->model->cfg.sparse.block;
	int rc;

	c.new_tokens = 2;
	j->cfg = &c;
	j->batch = 1;
	j->lens[0] = warm < len ? (uint32_t)warm : len;
	log_info("job", "warm-up", "mode=%s prompt=%u", runner_mode_name(j->modes[0]), j->lens[0]);
	rc = run_one(j, &tmp, j->modes[0]);
	j->batch = batch;
	j->lens[0] = len;
	j->cfg = saved;
	free(tmp.tokens);
	free(tmp.layers);
	free(tmp.logits);
	return rc;
}

int job_run_modes(struct job *j)
{
	if (j->kb->kind == KB_KIND_CUDA) {
		int rc = warm_up(j);
		if (rc) { /* the first mode's failure: it is what the warm-up ran */
			if (!j->err[0])
				snprintf(j->err, sizeof(j->err),
					 "mode %s failed in the warm-up: %s",
					 runner_mode_name(j->modes[0]), err_str(rc));
			j->res[0].mode = j->modes[0];
			j->res[0].failed = true;
			j->res[0].rc = rc;
			return rc;
		}
	}
	for (uint32_t i = 0; i < j->n_modes; i++) {
		struct job_result *res = &j->res[i];
		char name[48];

		res->mode = j->modes[i];
		res->inproc = j->inproc[i];
		log_info("job", "running", "mode=%s batch=%u prompt=%u new=%llu backend=%s",
			 job_result_name(res, name, sizeof(name)), j->batch, j->lens[0],
			 (unsigned long long)j->cfg->new_tokens, j->kb->ops->name);
		int rc = run_one(j, res, res->mode);
		if (rc && fall_back_mid_run(j, res))
			rc = run_one(j, res, RUNNER_MODE_SPARDA_NOOFFLOAD);
		if (rc) {
			if (!j->err[0])
				snprintf(j->err, sizeof(j->err), "mode %s failed: %s",
					 job_result_name(res, name, sizeof(name)), err_str(rc));
			res->failed = true;
			res->rc = rc;
			return rc;
		}
		/* a process killed later (time limit, the OOM killer) still leaves this mode */
		if (j->json_each && (rc = job_write_json(j, j->json_each)))
			log_warn("job", "cannot write the JSON", "path=%s err=%s", j->json_each,
				 err_name(rc));
	}
	return 0;
}

void job_free(struct job *j)
{
	for (uint32_t i = 0; i < JOB_MAX_RUNS; i++) {
		free(j->res[i].tokens);
		free(j->res[i].layers);
		free(j->res[i].logits);
	}
	for (uint32_t i = 0; j->prompts && i < j->cfg->batch; i++)
		free(j->prompts[i]);
	free(j->prompts);
	free(j->lens);
	kvhost_close(j->host);
	kvhost_close(j->host_inproc);
	cmetrics_free(j->metrics);
	kb_destroy(j->kb);
	model_close(j->model);
}
