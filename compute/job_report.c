/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The job's results: which Forecast ran, one table row per mode (tokens/s, prefill, hit rate,
 * bytes, late units, recall, equality with its twin), a per-layer table, and the same figures
 * as JSON (json-c); a mode that failed is listed with its error.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "job_internal.h"

static enum runner_mode twin_of(enum runner_mode m)
{
	switch (m) {
	case RUNNER_MODE_SPARSE_OFFLOAD:
		return RUNNER_MODE_SPARSE;
	case RUNNER_MODE_SPARDA:
	case RUNNER_MODE_SPARDA_NOPREFETCH:
		return RUNNER_MODE_SPARDA_NOOFFLOAD;
	default:
		return RUNNER_MODE_COUNT;
	}
}

/* The finished --modes run of mode m (not an inproc one), or NULL. */
static const struct job_result *find(const struct job *j, enum runner_mode m)
{
	for (uint32_t i = 0; i < j->n_modes; i++)
		if (j->res[i].done && !j->res[i].inproc && j->res[i].mode == m)
			return &j->res[i];
	return NULL;
}

int job_twin_state(const struct job *j, const struct job_result *r)
{
	const struct job_result *b = find(j, twin_of(r->mode));
	if (!r->done || !b)
		return -1;
	size_t n = (size_t)j->batch * j->cfg->new_tokens;
	return memcmp(r->tokens, b->tokens, n * sizeof(int32_t)) == 0;
}

bool job_twins_equal(const struct job *j)
{
	for (uint32_t i = 0; i < j->n_modes; i++)
		if (job_twin_state(j, &j->res[i]) == 0)
			return false;
	return true;
}

const char *job_result_name(const struct job_result *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", runner_mode_name(r->mode), r->inproc ? "+inproc" : "");
	return buf;
}

struct totals {
	uint64_t hits, loads, late_units, selected;
	double late_ms, fetch_ms;
	bool offloaded;
};

static struct totals sum_layers(const struct job *j, const struct job_result *r)
{
	struct totals t = {0};
	for (uint32_t l = 0; l < r->st.n_layers; l++) {
		const struct runner_layer_stats *ls = &r->st.layer[l];
		t.hits += ls->hits;
		t.loads += ls->loads;
		t.late_units += ls->late_units;
		t.late_ms += ls->late_ms;
		t.fetch_ms += ls->fetch_ms;
		t.selected += ls->selected;
	}
	t.offloaded = runner_mode_offloads(r->ran);
	return t;
}

static double tok_per_s(const struct job_result *r)
{
	return r->st.decode_s > 0 ? (double)r->st.decode_tokens / r->st.decode_s : 0.0;
}

static double hit_rate(const struct totals *t)
{
	return t->hits + t->loads ? (double)t->hits / (double)(t->hits + t->loads) : 1.0;
}

/* Time the compute stream waited for fetches: sparda overlaps them on the copy stream (the
 * waits are its late time); sparse-offload and sparda-noprefetch fetch inside the layer. */
static double fetch_exposed_ms(const struct job_result *r, const struct totals *t)
{
	if (r->ran == RUNNER_MODE_SPARDA)
		return t->late_ms;
	return t->offloaded ? t->fetch_ms : 0.0;
}

/* GB/s (1e9 bytes) of bytes moved during decode, over the decode wall time. */
static double gbps(const struct job_result *r, uint64_t bytes)
{
	return r->st.decode_s > 0 ? (double)bytes / r->st.decode_s * 1e-9 : 0.0;
}

static void fmt_recall(char *buf, size_t len, double v)
{
	if (v < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.3f", v);
}

static void print_layer(FILE *o, uint32_t l, const struct runner_layer_stats *ls, double hr,
			double recall)
{
	char rc[16];
	fmt_recall(rc, sizeof(rc), recall);
	fprintf(o, "%5u %10llu %10llu %10llu %8.3f %10llu %10.3f %10.3f %7s\n", l,
		(unsigned long long)ls->selected, (unsigned long long)ls->hits,
		(unsigned long long)ls->loads, hr, (unsigned long long)ls->late_units, ls->late_ms,
		ls->fetch_ms, rc);
}

/* Wall time of a decode step, ms. */
static double step_ms(const struct job_result *r)
{
	return r->st.decode_steps ? r->st.decode_s * 1e3 / (double)r->st.decode_steps : 0.0;
}

/* Device time of every phase per step, their sum (the step's span on the compute stream), the
 * rest of the step's wall time (the host's work between the steps, and sampling), and of that
 * the time in the host store's calls; then careful mode's host time in its fetches: the wait
 * for the load lists (f.wait) and their resolve and queueing (f.queue), host time that may run
 * beside the device's work, so it is not contained in `host`. */
static void print_phases(const struct job *j, FILE *o)
{
	fprintf(o, "\ndecode step phases on the compute stream, ms per step:\n%-21s", "mode");
	for (int p = 0; p < RUNNER_PHASE_N; p++)
		fprintf(o, " %8s", runner_phase_name((enum runner_phase)p));
	fprintf(o, " %8s %8s %8s %8s %8s %8s\n", "span", "step", "host", "store", "f.wait",
		"f.queue");
	for (uint32_t i = 0; i < j->n_modes; i++) {
		const struct job_result *r = &j->res[i];
		double n = (double)r->st.phase_steps, span = 0.0;
		char name[48];

		if (!r->done || !r->st.phase_steps)
			continue;
		fprintf(o, "%-21s", job_result_name(r, name, sizeof(name)));
		for (int p = 0; p < RUNNER_PHASE_N; p++) {
			fprintf(o, " %8.3f", r->st.phase_ms[p] / n);
			span += r->st.phase_ms[p] / n;
		}
		double per = 1e3 / (double)r->st.decode_steps;
		fprintf(o, " %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", span, step_ms(r),
			step_ms(r) - span, r->st.decode_store_s * per, r->st.fetch_wait_s * per,
			(r->st.fetch_resolve_s + r->st.fetch_enqueue_s) * per);
	}
}

void job_print(struct job *j)
{
	FILE *o = j->out;
	if (j->forecast_path[0] && j->forecast.trained)
		fprintf(o, "\nforecast: %s (trained: %s, held-out recall %.3f, untrained %.3f)",
			j->forecast_path, j->forecast.fit, j->forecast.recall,
			j->forecast.recall_untrained);
	else if (j->forecast_path[0])
		fprintf(o, "\nforecast: %s (untrained)", j->forecast_path);
	fprintf(o, "\n%-21s %12s %10s %9s %12s %12s %10s %7s %s\n", "mode", "decode tok/s",
		"prefill s", "hit rate", "bytes H2D", "bytes D2H", "late units", "recall",
		"equals twin");
	for (uint32_t i = 0; i < j->n_modes; i++) {
		const struct job_result *r = &j->res[i];
		struct totals t;
		int tw = job_twin_state(j, r);
		char hr[16], rc[16], name[48];

		job_result_name(r, name, sizeof(name));
		if (r->failed)
			fprintf(o, "%-21s failed (%s)\n", name, err_name(r->rc));
		if (!r->done)
			continue;
		t = sum_layers(j, r);
		fmt_recall(rc, sizeof(rc), runner_recall_value(&r->st, -1));
		if (t.offloaded)
			snprintf(hr, sizeof(hr), "%.3f", hit_rate(&t));
		else
			snprintf(hr, sizeof(hr), "-");
		fprintf(o, "%-21s %12.1f %10.3f %9s %12llu %12llu %10llu %7s %s%s%s\n", name,
			tok_per_s(r), r->st.prefill_s, hr, (unsigned long long)r->st.bytes_h2d,
			(unsigned long long)r->st.bytes_d2h, (unsigned long long)t.late_units, rc,
			tw < 0 ? "-"
			: tw   ? "yes ("
			       : "NO (",
			tw < 0 ? "" : runner_mode_name(twin_of(r->mode)), tw < 0 ? "" : ")");
		if (r->note[0])
			fprintf(o, "  note: %s\n", r->note);
	}
	if (j->cfg->layer_table) {
		for (uint32_t i = 0; i < j->n_modes; i++) {
			const struct job_result *r = &j->res[i];
			char name[48];

			if (!r->done)
				continue;
			fprintf(o, "\n%s per layer:\n%5s %10s %10s %10s %8s %10s %10s %10s %7s\n",
				job_result_name(r, name, sizeof(name)), "layer", "selected", "hits",
				"fetched", "hit rate", "late", "late ms", "fetch ms", "recall");
			for (uint32_t l = 0; l < r->st.n_layers; l++) {
				const struct runner_layer_stats *ls = &r->st.layer[l];
				double hr = ls->hits + ls->loads
						? (double)ls->hits / (double)(ls->hits + ls->loads)
						: 1.0;
				print_layer(o, l, ls, hr, runner_recall_value(&r->st, (int)l));
			}
		}
	}
	if (j->cfg->phase_times)
		print_phases(j, o);
	if (j->cfg->print_tokens) {
		for (uint32_t i = 0; i < j->n_modes; i++) {
			const struct job_result *r = &j->res[i];
			char name[48];

			job_result_name(r, name, sizeof(name));
			for (uint32_t b = 0; r->done && b < j->batch; b++) {
				fprintf(o, "%s[%u]:", name, b);
				for (uint64_t t = 0; t < j->cfg->new_tokens; t++)
					fprintf(o, " %d", r->tokens[b * j->cfg->new_tokens + t]);
				fprintf(o, "\n");
			}
		}
	}
	fflush(o);
}

static json_object *layers_json(const struct job_result *r)
{
	json_object *arr = json_object_new_array();
	for (uint32_t l = 0; l < r->st.n_layers; l++) {
		const struct runner_layer_stats *ls = &r->st.layer[l];
		json_object *o = json_object_new_object();
		json_object_object_add(o, "selected", json_object_new_int64((int64_t)ls->selected));
		json_object_object_add(o, "hits", json_object_new_int64((int64_t)ls->hits));
		json_object_object_add(o, "loads", json_object_new_int64((int64_t)ls->loads));
		json_object_object_add(o, "late_units",
				       json_object_new_int64((int64_t)ls->late_units));
		json_object_object_add(o, "late_ms", json_object_new_double(ls->late_ms));
		json_object_object_add(o, "fetch_ms", json_object_new_double(ls->fetch_ms));
		json_object_object_add(o, "recall_true",
				       json_object_new_int64((int64_t)ls->recall_true));
		json_object_object_add(o, "recall_hits",
				       json_object_new_int64((int64_t)ls->recall_hits));
		json_object_array_add(arr, o);
	}
	return arr;
}

static json_object *opt_double(double v)
{
	return v < 0 ? NULL : json_object_new_double(v);
}

/* recall, recall_per_layer (null where nothing was measured) and recall_samples. */
static void recall_json(json_object *o, const struct job_result *r)
{
	double all = runner_recall_value(&r->st, -1);
	json_object *arr = NULL;

	if (all >= 0) {
		arr = json_object_new_array();
		for (uint32_t l = 0; l < r->st.n_layers; l++)
			json_object_array_add(arr, opt_double(runner_recall_value(&r->st, (int)l)));
	}
	json_object_object_add(o, "recall", opt_double(all));
	json_object_object_add(o, "recall_per_layer", arr);
	json_object_object_add(o, "recall_samples",
			       json_object_new_int64((int64_t)r->st.recall_samples));
}

/* Memory, PCIe rates and the decode time split into compute and fetch. */
static void resources_json(json_object *o, const struct job_result *r, const struct totals *t)
{
	double exposed = fetch_exposed_ms(r, t), compute = r->st.decode_s * 1e3 - exposed;

	json_object_object_add(o, "gpu_mem_peak_bytes",
			       json_object_new_int64((int64_t)r->st.gpu_mem_peak_bytes));
	json_object_object_add(o, "host_rss_peak_bytes",
			       json_object_new_int64((int64_t)r->host_rss_peak));
	json_object_object_add(o, "pcie_h2d_gbps",
			       json_object_new_double(gbps(r, r->st.bytes_h2d)));
	json_object_object_add(o, "pcie_d2h_gbps",
			       json_object_new_double(gbps(r, r->st.bytes_d2h_decode)));
	json_object_object_add(o, "decode_s", json_object_new_double(r->st.decode_s));
	json_object_object_add(o, "decode_compute_ms",
			       json_object_new_double(compute > 0 ? compute : 0.0));
	json_object_object_add(o, "decode_fetch_ms", json_object_new_double(t->fetch_ms));
	json_object_object_add(o, "decode_fetch_exposed_ms", json_object_new_double(exposed));
	json_object_object_add(o, "decode_store_ms",
			       json_object_new_double(r->st.decode_store_s * 1e3));
	json_object *calls = json_object_new_object();
	for (int c = 0; c < RUNNER_STORE_N; c++) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "calls",
				       json_object_new_int64((int64_t)r->st.store_calls[c]));
		json_object_object_add(e, "ms",
				       json_object_new_double(r->st.store_call_s[c] * 1e3));
		json_object_object_add(calls, runner_store_call_name((enum runner_store_call)c), e);
	}
	json_object_object_add(o, "decode_store_calls", calls);
	json_object *fh = json_object_new_object();
	json_object_object_add(fh, "layers",
			       json_object_new_int64((int64_t)r->st.fetch_host_layers));
	json_object_object_add(fh, "wait_ms", json_object_new_double(r->st.fetch_wait_s * 1e3));
	json_object_object_add(fh, "resolve_ms",
			       json_object_new_double(r->st.fetch_resolve_s * 1e3));
	json_object_object_add(fh, "enqueue_ms",
			       json_object_new_double(r->st.fetch_enqueue_s * 1e3));
	json_object_object_add(o, "decode_fetch_host", fh);
}

/* "forecast": {path, trained, fit, recall_heldout}, or null when the model has none. */
static json_object *forecast_json(const struct job *j)
{
	json_object *o;

	if (!j->forecast_path[0])
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "path", json_object_new_string(j->forecast_path));
	json_object_object_add(o, "trained", json_object_new_boolean(j->forecast.trained));
	json_object_object_add(
	    o, "fit", j->forecast.trained ? json_object_new_string(j->forecast.fit) : NULL);
	json_object_object_add(o, "recall_heldout", opt_double(j->forecast.recall));
	return o;
}

static json_object *tokens_json(const struct job *j, const struct job_result *r)
{
	json_object *seqs = json_object_new_array();
	for (uint32_t b = 0; b < j->batch; b++) {
		json_object *a = json_object_new_array();
		for (uint64_t t = 0; t < j->cfg->new_tokens; t++)
			json_object_array_add(
			    a, json_object_new_int(r->tokens[b * j->cfg->new_tokens + t]));
		json_object_array_add(seqs, a);
	}
	return seqs;
}

/* Where the run's offloaded KV lived: memsvc, inproc, or none (its mode keeps KV on the GPU). */
static const char *result_store(const struct job *j, const struct job_result *r)
{
	if (!runner_mode_offloads(r->ran))
		return "none";
	return r->inproc || j->cfg->store == JOB_STORE_INPROC ? "inproc" : "memsvc";
}

/* {"embed": ms, ..., "head": ms, "span": sum, "host": step - span}, per decode step. */
static json_object *phases_json(const struct job_result *r)
{
	json_object *o = json_object_new_object();
	double n = (double)r->st.phase_steps, span = 0.0;

	for (int p = 0; p < RUNNER_PHASE_N; p++) {
		json_object_object_add(o, runner_phase_name((enum runner_phase)p),
				       json_object_new_double(r->st.phase_ms[p] / n));
		span += r->st.phase_ms[p] / n;
	}
	json_object_object_add(o, "span", json_object_new_double(span));
	json_object_object_add(o, "host", json_object_new_double(step_ms(r) - span));
	return o;
}

static json_object *mode_json(const struct job *j, const struct job_result *r)
{
	struct totals t = sum_layers(j, r);
	json_object *o = json_object_new_object();
	int tw = job_twin_state(j, r);

	json_object_object_add(o, "status", json_object_new_string("ok"));
	json_object_object_add(o, "ran", json_object_new_string(runner_mode_name(r->ran)));
	json_object_object_add(o, "store", json_object_new_string(result_store(j, r)));
	json_object_object_add(o, "backend", json_object_new_string(j->kb->ops->name));
	json_object_object_add(o, "batch", json_object_new_int((int)j->batch));
	json_object_object_add(o, "prompt_tokens",
			       json_object_new_int64((int64_t)r->st.prefill_tokens));
	json_object_object_add(o, "decode_tokens",
			       json_object_new_int64((int64_t)r->st.decode_tokens));
	json_object_object_add(o, "decode_tokens_per_s", json_object_new_double(tok_per_s(r)));
	json_object_object_add(o, "decode_step_ms", json_object_new_double(step_ms(r)));
	json_object_object_add(o, "prefill_s", json_object_new_double(r->st.prefill_s));
	json_object_object_add(o, "hit_rate",
			       t.offloaded ? json_object_new_double(hit_rate(&t)) : NULL);
	json_object_object_add(o, "units_selected", json_object_new_int64((int64_t)t.selected));
	json_object_object_add(o, "units_fetched", json_object_new_int64((int64_t)t.loads));
	json_object_object_add(o, "bytes_h2d", json_object_new_int64((int64_t)r->st.bytes_h2d));
	json_object_object_add(o, "bytes_d2h", json_object_new_int64((int64_t)r->st.bytes_d2h));
	json_object_object_add(o, "late_units", json_object_new_int64((int64_t)t.late_units));
	json_object_object_add(o, "late_ms", json_object_new_double(t.late_ms));
	const char *gather = job_gather_name(j->cfg, r->ran);
	json_object_object_add(o, "gather", gather ? json_object_new_string(gather) : NULL);
	json_object_object_add(o, "dma_streams",
			       gather && job_mode_gather(j->cfg, r->ran) == JOB_GATHER_DMA
				   ? json_object_new_int64((int64_t)j->cfg->dma_streams)
				   : NULL);
	json_object_object_add(o, "units_written_side",
			       json_object_new_int64((int64_t)r->st.units_written_side));
	json_object_object_add(o, "units_fetched_dma",
			       json_object_new_int64((int64_t)r->st.units_dma));
	json_object_object_add(o, "units_seeded",
			       json_object_new_int64((int64_t)r->st.units_seeded));
	json_object_object_add(o, "units_forecast",
			       json_object_new_int64((int64_t)r->st.units_forecast));
	json_object_object_add(o, "equals_twin", tw < 0 ? NULL : json_object_new_boolean(tw));
	json_object_object_add(o, "forecast", forecast_json(j));
	recall_json(o, r);
	resources_json(o, r, &t);
	if (r->st.phase_steps)
		json_object_object_add(o, "decode_phase_ms", phases_json(r));
	if (r->note[0])
		json_object_object_add(o, "note", json_object_new_string(r->note));
	json_object_object_add(o, "layers", layers_json(r));
	json_object_object_add(o, "tokens", tokens_json(j, r));
	return o;
}

/* The mode the job stopped at: why, in words and as an errno name. */
static json_object *failed_json(const struct job *j, const struct job_result *r)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "status", json_object_new_string("failed"));
	json_object_object_add(o, "ran", json_object_new_string(runner_mode_name(r->ran)));
	json_object_object_add(o, "store", json_object_new_string(result_store(j, r)));
	json_object_object_add(o, "backend", json_object_new_string(j->kb->ops->name));
	json_object_object_add(o, "batch", json_object_new_int((int)j->batch));
	json_object_object_add(o, "error", json_object_new_string(j->err));
	json_object_object_add(o, "errno", json_object_new_string(err_name(r->rc)));
	json_object_object_add(o, "forecast", forecast_json(j));
	return o;
}

int job_write_json(const struct job *j, const char *path)
{
	json_object *root = json_object_new_object();
	char tmp[JOB_PATH_MAX + 352];
	int rc = 0;

	for (uint32_t i = 0; i < j->n_modes; i++) {
		const struct job_result *r = &j->res[i];
		char name[48];

		if (r->done || r->failed)
			json_object_object_add(root, job_result_name(r, name, sizeof(name)),
					       r->done ? mode_json(j, r) : failed_json(j, r));
	}
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		rc = -ENAMETOOLONG;
	else if (json_object_to_file_ext(tmp, root, JSON_C_TO_STRING_PRETTY) != 0)
		rc = -EIO;
	else if (rename(tmp, path) != 0)
		rc = -errno;
	if (rc && rc != -ENAMETOOLONG)
		unlink(tmp);
	json_object_put(root);
	return rc;
}

int job_write_logits(const struct job *j, const char *path)
{
	FILE *f = fopen(path, "wb");
	size_t n = (size_t)j->batch * j->cfg->new_tokens * j->model->cfg.vocab;
	int rc = 0;

	if (!f)
		return -errno;
	for (uint32_t i = 0; i < j->n_modes && !rc; i++)
		if (j->res[i].done && j->res[i].logits &&
		    fwrite(j->res[i].logits, sizeof(float), n, f) != n)
			rc = -EIO;
	if (fclose(f) != 0 && !rc)
		rc = -EIO;
	return rc;
}
