/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench report --out DIR`: reads every configuration record a sweep (and the
 * transformers peers) wrote into DIR and writes DIR/report/report.md (a table per model and
 * context, feasible batches, the headline ratios, the process boundary, the peers),
 * DIR/report/summary.json (every figure) and, when gnuplot is installed, PNG plots.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_cmds.h"
#include "bench_report.h"
#include "err.h"

static const char *const mode_order[] = {"dense",
					 "sparse",
					 "sparse-offload",
					 "sparda",
					 "sparda-noprefetch",
					 "sparda-nooffload",
					 "hf-dynamic",
					 "hf-offloaded"};

static int mode_rank(const char *m)
{
	for (size_t i = 0; i < sizeof(mode_order) / sizeof(mode_order[0]); i++)
		if (!strcmp(m, mode_order[i]))
			return (int)i;
	return 99;
}

static int row_cmp(const void *a, const void *b)
{
	const struct report_row *x = a, *y = b;
	int c = strcmp(x->model, y->model);

	if (c)
		return c;
	if (x->context != y->context)
		return x->context < y->context ? -1 : 1;
	if (x->batch != y->batch)
		return x->batch < y->batch ? -1 : 1;
	if (report_inproc(x) != report_inproc(y))
		return report_inproc(x) ? 1 : -1;
	if (mode_rank(x->mode) != mode_rank(y->mode))
		return mode_rank(x->mode) < mode_rank(y->mode) ? -1 : 1;
	return strcmp(x->mode, y->mode);
}

static double num(json_object *o, const char *key, double def)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !v)
		return def;
	return json_object_get_double(v);
}

static void str(json_object *o, const char *key, char *buf, size_t len)
{
	json_object *v;

	if (json_object_object_get_ex(o, key, &v) && v)
		snprintf(buf, len, "%s", json_object_get_string(v));
}

static double gib(double bytes)
{
	return bytes >= 0 ? bytes / (1024.0 * 1024.0 * 1024.0) : -1;
}

/* The GB/s compute reported, else bytes over the decode time. */
static double gbps(json_object *res, const char *key, const char *bytes_key, double decode_s)
{
	double v = num(res, key, -1), bytes = num(res, bytes_key, -1);

	if (v >= 0)
		return v;
	return decode_s > 0 && bytes >= 0 ? bytes / decode_s / 1e9 : -1;
}

/* The figures of a successful mode; entry holds the per-process figures of its run. */
static void row_result(json_object *res, json_object *entry, struct report_row *w)
{
	json_object *v, *copy = NULL;
	double decode_s, host;

	w->tok_s = num(res, "decode_tokens_per_s", 0);
	w->step_ms = num(res, "decode_step_ms", 0);
	w->step_median_ms = num(res, "decode_step_ms_median", -1);
	w->prefill_s = num(res, "prefill_s", 0);
	w->prefill_tok_s = w->prefill_s > 0 ? num(res, "prompt_tokens", 0) / w->prefill_s : 0;
	w->hit_rate = num(res, "hit_rate", -1);
	w->recall = num(res, "recall", -1);
	decode_s = w->tok_s > 0 ? num(res, "decode_tokens", 0) / w->tok_s : 0;
	w->h2d_gbs = gbps(res, "pcie_h2d_gbps", "bytes_h2d", decode_s);
	w->d2h_gbs = gbps(res, "pcie_d2h_gbps", "bytes_d2h", decode_s);
	w->late_units = num(res, "late_units", -1);
	w->gpu_gib = gib(num(res, "gpu_mem_peak_bytes", -1));
	host = num(res, "host_rss_peak_bytes", -1);
	w->host_gib = gib(host >= 0 ? host : num(entry, "compute_maxrss_bytes", -1));
	w->memsvc_gib = gib(num(entry, "memsvc_rss_peak_bytes", -1));
	/* compute reports the split as totals over the decode (decode_s); per step here */
	double total_ms = num(res, "decode_s", 0) * 1e3;
	double per_step = total_ms > 0 && w->step_ms > 0 ? w->step_ms / total_ms : -1;
	w->compute_ms = per_step > 0 ? num(res, "decode_compute_ms", -1) * per_step : -1;
	w->fetch_ms = per_step > 0 ? num(res, "decode_fetch_ms", -1) * per_step : -1;
	w->fetch_exposed_ms =
	    per_step > 0 ? num(res, "decode_fetch_exposed_ms", -1) * per_step : -1;
	w->gb_per_step = per_step > 0 && num(res, "bytes_h2d", -1) >= 0
			     ? num(res, "bytes_h2d", 0) * 1e-9 * per_step
			     : -1;
	w->equals_twin = -1;
	if (json_object_object_get_ex(res, "equals_twin", &v) && v)
		w->equals_twin = json_object_get_boolean(v);
	if (json_object_object_get_ex(res, "forecast", &v) && v &&
	    json_object_object_get_ex(v, "trained", NULL)) {
		w->forecast_trained = json_object_get_boolean(json_object_object_get(v, "trained"));
		str(v, "fit", w->forecast_fit, sizeof(w->forecast_fit));
	}
	if (json_object_object_get_ex(res, "tokens", &v) && v)
		w->tokens = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	/* every figure goes to the summary, the token ids excepted */
	if (json_object_deep_copy(res, &copy, NULL) == 0) {
		json_object_object_del(copy, "tokens");
		w->result = copy;
	}
}

static const char *twin_of(const char *mode)
{
	if (!strcmp(mode, "sparse-offload"))
		return "sparse";
	if (!strcmp(mode, "sparda") || !strcmp(mode, "sparda-noprefetch"))
		return "sparda-nooffload";
	return NULL;
}

/*
 * A mode whose twin ran in another process of its configuration (the first failed) has no
 * equals_twin from compute: compare the token ids of the twin's row instead.
 */
static void report_twins(struct report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		struct report_row *w = &r->rows[i];
		const char *twin = twin_of(w->mode);
		const struct report_row *t;

		if (!w->ok || w->equals_twin >= 0 || !twin || !w->tokens)
			continue;
		t = report_find(r, w->store, w->model, w->context, w->batch, twin);
		if (t && t->tokens && !strcmp(t->store, w->store))
			w->equals_twin = !strcmp(w->tokens, t->tokens);
	}
}

static void report_free(struct report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->rows[i].tokens);
		json_object_put(r->rows[i].result);
		json_object_put(r->rows[i].compute_args);
		json_object_put(r->rows[i].memsvc_args);
	}
	free(r->rows);
}

static int rows_grow(struct report *r, size_t *cap)
{
	void *p;

	if (r->n < *cap)
		return 0;
	if (!(p = realloc(r->rows, (*cap = *cap ? 2 * *cap : 64) * sizeof(*r->rows))))
		return -ENOMEM;
	r->rows = p;
	return 0;
}

/* The rows of one configuration record (one per mode, skipped modes left out). */
static int record_load(const char *path, struct report *r, size_t *cap)
{
	json_object *o = json_object_from_file(path), *modes, *res;
	char model[128] = "", store[8] = "memsvc", limits[sizeof(r->rows->limits)];
	json_object *same, *cargs = NULL, *margs = NULL;
	int rc = 0;

	if (!o || !json_object_object_get_ex(o, "modes", &modes) ||
	    !json_object_object_get_ex(o, "context", NULL))
		goto out_put; /* not a configuration record */
	str(o, "model", model, sizeof(model));
	str(o, "store", store, sizeof(store));
	report_record_args(o, &cargs, &margs);
	if (cargs)
		report_limits_text(cargs, margs, limits, sizeof(limits));
	else
		snprintf(limits, sizeof(limits), "none recorded");
	json_object_object_foreach(modes, mode, entry)
	{
		struct report_row *w;

		if (!entry ||
		    !strcmp(json_object_get_string(json_object_object_get(entry, "status")),
			    "skipped"))
			continue;
		if ((rc = rows_grow(r, cap)))
			break;
		w = &r->rows[r->n++];
		memset(w, 0, sizeof(*w));
		snprintf(w->model, sizeof(w->model), "%s", model);
		snprintf(w->store, sizeof(w->store), "%s", store);
		snprintf(w->mode, sizeof(w->mode), "%s", mode);
		str(entry, "status", w->status, sizeof(w->status));
		str(entry, "error", w->error, sizeof(w->error));
		w->context = (int)num(o, "context", 0);
		w->batch = (int)num(o, "batch", 0);
		w->run = (int)num(entry, "run", -1);
		w->ok = !strcmp(w->status, "ok");
		w->same_process = json_object_object_get_ex(o, "same_process", &same) &&
				  json_object_get_boolean(same);
		w->equals_twin = -1;
		w->forecast_trained = -1;
		w->compute_args = cargs ? json_object_get(cargs) : NULL;
		w->memsvc_args = margs ? json_object_get(margs) : NULL;
		snprintf(w->limits, sizeof(w->limits), "%s", limits);
		if (w->ok && json_object_object_get_ex(entry, "result", &res) && res)
			row_result(res, entry, w);
	}
out_put:
	json_object_put(cargs);
	json_object_put(margs);
	json_object_put(o);
	return rc;
}

static bool is_record(const char *name)
{
	size_t n = strlen(name);

	return n > 5 && !strcmp(name + n - 5, ".json") && name[0] != '.';
}

/* Has an earlier directory of the list a file of this name? */
static bool loaded_before(char *const *dirs, size_t k, const char *name)
{
	char path[PATH_MAX];

	for (size_t j = 0; j < k; j++) {
		snprintf(path, sizeof(path), "%s/%s", dirs[j], name);
		if (!access(path, F_OK))
			return true;
	}
	return false;
}

/* The records of every directory; a record name found in several is read from the first.
 * *bad: the directory an error came from. */
static int report_load(char *const *dirs, size_t n_dirs, struct report *r, const char **bad)
{
	char path[PATH_MAX];
	size_t cap = 0;
	int rc = 0;

	for (size_t k = 0; !rc && k < n_dirs; k++) {
		struct dirent *e;
		DIR *d = opendir(dirs[k]);

		*bad = dirs[k];
		if (!d)
			return -errno;
		while (!rc && (e = readdir(d))) {
			if (!is_record(e->d_name) || loaded_before(dirs, k, e->d_name))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirs[k], e->d_name);
			rc = record_load(path, r, &cap);
		}
		closedir(d);
	}
	if (r->n)
		qsort(r->rows, r->n, sizeof(*r->rows), row_cmp);
	report_twins(r);
	return rc;
}

bool report_inproc(const struct report_row *w)
{
	return !strcmp(w->store, "inproc");
}

/* The row of a configuration's mode (only a successful one with ok_only), or NULL. */
static const struct report_row *find_row(const struct report *r, bool inproc, const char *model,
					 int context, int batch, const char *mode, bool ok_only)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if ((w->ok || !ok_only) && w->context == context && w->batch == batch &&
		    report_inproc(w) == inproc && !strcmp(w->model, model) &&
		    !strcmp(w->mode, mode))
			return w;
	}
	return NULL;
}

const struct report_row *report_find(const struct report *r, const char *store, const char *model,
				     int context, int batch, const char *mode)
{
	return find_row(r, store && !strcmp(store, "inproc"), model, context, batch, mode, true);
}

int report_feasible(const struct report *r, const char *model, int context, const char *mode)
{
	int best = 0;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (w->ok && !report_inproc(w) && w->context == context && w->batch > best &&
		    !strcmp(w->model, model) && !strcmp(w->mode, mode))
			best = w->batch;
	}
	return best;
}

/* Status of the smallest failed batch above the feasible one ("" when none failed). */
static const char *limited_by(const struct report *r, const char *model, int context,
			      const char *mode, int feasible)
{
	const struct report_row *f = NULL;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (!w->ok && !report_inproc(w) && w->context == context && w->batch > feasible &&
		    !strcmp(w->model, model) && !strcmp(w->mode, mode) &&
		    (!f || w->batch < f->batch))
			f = w;
	}
	return f ? f->status : "";
}

/* Whether a larger batch than the feasible one failed (the limit was found) or every batch
 * tried ran (false: the largest tried is a lower bound); null where nothing ran. */
static json_object *reached_json(const char *limited, int feasible)
{
	return feasible > 0 ? json_object_new_boolean(limited[0] != '\0') : NULL;
}

/* Which memory a failure status names. */
static const char *memory_of(const char *status)
{
	if (!strcmp(status, "gpu-oom"))
		return "GPU memory";
	if (!strcmp(status, "host-oom"))
		return "host memory";
	return NULL;
}

static const char *cell(char *buf, size_t len, const char *fmt, double v, bool have)
{
	if (!have)
		return "-";
	snprintf(buf, len, fmt, v);
	return buf;
}

static json_object *jnum(double v, bool have)
{
	return have ? json_object_new_double(v) : NULL;
}

static json_object *jstr(const char *s)
{
	return s && s[0] ? json_object_new_string(s) : NULL;
}

static json_object *row_json(const struct report_row *w)
{
	json_object *o = json_object_new_object();
	bool ok = w->ok;

	json_object_object_add(o, "model", json_object_new_string(w->model));
	json_object_object_add(o, "context", json_object_new_int(w->context));
	json_object_object_add(o, "batch", json_object_new_int(w->batch));
	json_object_object_add(o, "mode", json_object_new_string(w->mode));
	json_object_object_add(o, "store", json_object_new_string(w->store));
	json_object_object_add(o, "run", w->run >= 0 ? json_object_new_int(w->run) : NULL);
	json_object_object_add(o, "status", json_object_new_string(w->status));
	json_object_object_add(o, "error", ok ? NULL : jstr(w->error));
	json_object_object_add(o, "decode_tokens_per_s", jnum(w->tok_s, ok));
	json_object_object_add(o, "decode_step_ms", jnum(w->step_ms, ok));
	json_object_object_add(o, "prefill_s", jnum(w->prefill_s, ok));
	json_object_object_add(o, "prefill_tokens_per_s", jnum(w->prefill_tok_s, ok));
	json_object_object_add(o, "hit_rate", jnum(w->hit_rate, ok && w->hit_rate >= 0));
	json_object_object_add(o, "recall", jnum(w->recall, ok && w->recall >= 0));
	json_object_object_add(o, "h2d_gb_per_s", jnum(w->h2d_gbs, ok && w->h2d_gbs >= 0));
	json_object_object_add(o, "d2h_gb_per_s", jnum(w->d2h_gbs, ok && w->d2h_gbs >= 0));
	json_object_object_add(o, "gpu_gib", jnum(w->gpu_gib, ok && w->gpu_gib >= 0));
	json_object_object_add(o, "host_gib", jnum(w->host_gib, ok && w->host_gib >= 0));
	json_object_object_add(o, "memsvc_gib", jnum(w->memsvc_gib, ok && w->memsvc_gib >= 0));
	json_object_object_add(o, "late_units", jnum(w->late_units, ok && w->late_units >= 0));
	json_object_object_add(o, "equals_twin",
			       w->equals_twin < 0 ? NULL : json_object_new_boolean(w->equals_twin));
	json_object_object_add(
	    o, "forecast_trained",
	    w->forecast_trained < 0 ? NULL : json_object_new_boolean(w->forecast_trained));
	json_object_object_add(o, "forecast_fit", jstr(w->forecast_fit));
	json_object_object_add(o, "compute_args",
			       w->compute_args ? json_object_get(w->compute_args) : NULL);
	json_object_object_add(o, "memsvc_args",
			       w->memsvc_args ? json_object_get(w->memsvc_args) : NULL);
	json_object_object_add(o, "result", w->result ? json_object_get(w->result) : NULL);
	return o;
}

static void md_row(FILE *f, const struct report_row *w)
{
	char b[13][32], mode[48];
	bool ok = w->ok;

	snprintf(mode, sizeof(mode), "%s%s", w->mode, report_inproc(w) ? " (inproc)" : "");
	fprintf(f,
		"| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | "
		"%s |\n",
		w->batch, mode, cell(b[0], 32, "%.1f", w->tok_s, ok),
		cell(b[1], 32, "%.3f", w->step_ms, ok), cell(b[2], 32, "%.3f", w->prefill_s, ok),
		cell(b[3], 32, "%.0f", w->prefill_tok_s, ok),
		cell(b[4], 32, "%.3f", w->hit_rate, ok && w->hit_rate >= 0),
		cell(b[5], 32, "%.3f", w->recall, ok && w->recall >= 0),
		cell(b[6], 32, "%.2f", w->h2d_gbs, ok && w->h2d_gbs >= 0),
		cell(b[7], 32, "%.2f", w->d2h_gbs, ok && w->d2h_gbs >= 0),
		cell(b[8], 32, "%.2f", w->gpu_gib, ok && w->gpu_gib >= 0),
		cell(b[9], 32, "%.2f", w->host_gib, ok && w->host_gib >= 0),
		cell(b[10], 32, "%.2f", w->memsvc_gib, ok && w->memsvc_gib >= 0),
		cell(b[11], 32, "%.0f", w->late_units, ok && w->late_units >= 0),
		!ok || w->equals_twin < 0 ? "-"
		: w->equals_twin	  ? "yes"
					  : "NO",
		cell(b[12], 32, "%.0f", w->run + 1.0, w->run >= 0), ok ? "ok" : w->status);
}

/*
 * "Forecast: trained (ridge)." for the rows of (model, context) that say which Forecast they
 * ran with (untrained, or mixed when they differ); nothing when none says.
 */
static void md_forecast(FILE *f, const struct report *r, size_t first)
{
	const struct report_row *a = &r->rows[first];
	int trained = -1;
	bool mixed = false;
	const char *fit = "";

	for (size_t i = first;
	     i < r->n && !strcmp(r->rows[i].model, a->model) && r->rows[i].context == a->context;
	     i++) {
		const struct report_row *w = &r->rows[i];

		if (w->forecast_trained < 0) /* failed, or run by a peer */
			continue;
		mixed |= trained >= 0 &&
			 (w->forecast_trained != trained || strcmp(w->forecast_fit, fit));
		trained = w->forecast_trained;
		fit = w->forecast_fit;
	}
	if (mixed)
		fprintf(f, "Forecast: mixed (trained in some records, not in others).\n\n");
	else if (trained == 1)
		fprintf(f, "Forecast: trained (%s).\n\n", fit);
	else if (trained == 0)
		fprintf(f, "Forecast: untrained (the synthetic generator's).\n\n");
}

/* One table per (model, context): batch x mode, every configuration record's rows. */
static void md_rows(FILE *f, const struct report *r, json_object *arr)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *p = i ? &r->rows[i - 1] : NULL;

		if (!p || strcmp(w->model, p->model) || w->context != p->context) {
			fprintf(f, "\n## %s, context %d\n\n", w->model, w->context);
			md_forecast(f, r, i);
			report_md_limits(f, r, i);
			fprintf(
			    f,
			    "| batch | mode | decode tok/s | step ms | prefill s | prefill tok/s "
			    "| hit rate | recall | H2D GB/s | D2H GB/s | GPU GiB | host GiB | "
			    "memsvc GiB | late units | equals twin | run | status |\n");
			fprintf(f,
				"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
				"---|\n");
		}
		md_row(f, w);
		json_object_array_add(arr, row_json(w));
	}
}

static bool seen_before(const struct report *r, size_t i, bool with_mode)
{
	const struct report_row *w = &r->rows[i];

	for (size_t j = 0; j < i; j++)
		if (r->rows[j].context == w->context && !strcmp(r->rows[j].model, w->model) &&
		    (!with_mode || (!strcmp(r->rows[j].mode, w->mode) &&
				    report_inproc(&r->rows[j]) == report_inproc(w))))
			return true;
	return false;
}

static void md_feasible(FILE *f, const struct report *r, json_object *arr)
{
	fprintf(f, "\n## Feasible batch (largest batch that ran)\n\n"
		   "A mode that ran out of memory (or time) is not run at larger batches.\n\n");
	fprintf(f,
		"| model | context | mode | feasible batch | next batch failed with | memory |\n");
	fprintf(f, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		const char *lim, *mem;
		json_object *o;
		int fb;

		if (report_inproc(w) || seen_before(r, i, true))
			continue;
		fb = report_feasible(r, w->model, w->context, w->mode);
		lim = limited_by(r, w->model, w->context, w->mode, fb);
		mem = memory_of(lim);
		fprintf(f, "| %s | %d | %s | %d | %s | %s |\n", w->model, w->context, w->mode, fb,
			lim[0] ? lim : "-", mem ? mem : "-");
		o = json_object_new_object();
		json_object_object_add(o, "model", json_object_new_string(w->model));
		json_object_object_add(o, "context", json_object_new_int(w->context));
		json_object_object_add(o, "mode", json_object_new_string(w->mode));
		json_object_object_add(o, "feasible_batch", json_object_new_int(fb));
		json_object_object_add(o, "limited_by", jstr(lim));
		json_object_object_add(o, "limit_reached", reached_json(lim, fb));
		json_object_object_add(o, "memory", jstr(mem));
		json_object_array_add(arr, o);
	}
}

struct ratio {
	double v;
	bool have, one_run; /* one_run: both figures from one compute process */
};

static struct ratio ratio_of(const struct report_row *a, double num_v, const struct report_row *b,
			     double den_v)
{
	bool have = a && b && den_v > 0;

	return (struct ratio){.v = have ? num_v / den_v : 0,
			      .have = have,
			      .one_run = have && a->run >= 0 && a->run == b->run &&
					 !strcmp(a->store, b->store)};
}

static const char *rcell(char *buf, size_t len, struct ratio q)
{
	if (!q.have)
		return "-";
	snprintf(buf, len, "%.2fx%s", q.v, q.one_run ? "" : " (2 runs)");
	return buf;
}

static void jratio(json_object *o, const char *key, struct ratio q)
{
	char k[96];

	json_object_object_add(o, key, jnum(q.v, q.have));
	snprintf(k, sizeof(k), "%s_one_run", key);
	json_object_object_add(o, k, q.have ? json_object_new_boolean(q.one_run) : NULL);
}

static json_object *at_json(const struct report_row *w)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "model", json_object_new_string(w->model));
	json_object_object_add(o, "context", json_object_new_int(w->context));
	json_object_object_add(o, "batch", json_object_new_int(w->batch));
	return o;
}

#define FIND(mode) report_find(r, "memsvc", w->model, w->context, w->batch, mode)

/* Ratios measured at one (model, context, batch); tok/s and prefill as speedups. */
static void ratios_at(FILE *f, const struct report *r, const struct report_row *w, json_object *arr)
{
	const struct report_row *a = FIND("sparda"), *so = FIND("sparse-offload"),
				*s = FIND("sparse"), *n = FIND("sparda-nooffload");
	struct ratio d = ratio_of(a, a ? a->tok_s : 0, so, so ? so->tok_s : 0);
	struct ratio p = ratio_of(s, s ? s->prefill_s : 0, a, a ? a->prefill_s : 0);
	struct ratio st = ratio_of(a, a ? a->step_ms : 0, n, n ? n->step_ms : 0);
	json_object *o = at_json(w);
	char b[3][48];

	fprintf(f, "| %s | %d | %d | %s | %s | %s |\n", w->model, w->context, w->batch,
		rcell(b[0], 48, d), rcell(b[1], 48, p), rcell(b[2], 48, st));
	jratio(o, "decode_sparda_vs_sparse_offload", d);
	jratio(o, "prefill_sparda_vs_sparse", p);
	jratio(o, "step_sparda_vs_nooffload", st);
	json_object_array_add(arr, o);
}

static bool first_at(const struct report *r, size_t i)
{
	const struct report_row *w = &r->rows[i], *p = i ? &r->rows[i - 1] : NULL;

	return !p || p->context != w->context || p->batch != w->batch || strcmp(p->model, w->model);
}

static void md_ratios(FILE *f, const struct report *r, json_object *arr)
{
	fprintf(f, "\n## Headline ratios\n\n"
		   "Decode: `sparda` tok/s over `sparse-offload` tok/s. Prefill: `sparse` prefill "
		   "time over `sparda`'s. Step: `sparda` step time over `sparda-nooffload`'s (the "
		   "cost of offloading through the memory service; 1.00x = free). Each ratio comes "
		   "from one compute process unless marked (2 runs): then a mode of the "
		   "configuration failed and the others ran again.\n\n");
	fprintf(f, "| model | context | batch | decode sparda / sparse-offload | "
		   "prefill sparda vs sparse | step sparda / sparda-nooffload |\n");
	fprintf(f, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++)
		if (first_at(r, i))
			ratios_at(f, r, &r->rows[i], arr);
}

/*
 * What overlap can give, per (model, context, batch): C, the step of sparda-nooffload (compute
 * only), F, what sparse-offload's serial fetch adds to it; overlapping that fetch with the
 * compute at best takes the step to max(C, F), a decode ratio of (C + F) / max(C, F) over
 * sparse-offload, next to the measured one. The bytes per step say whether sparda fetched as
 * much as sparse-offload (its Forecast selection may keep more blocks from step to step);
 * sparda's compute and exposed fetch per step say where its step went past max(C, F): the
 * layers slowed while the copy stream worked (compute over C), or waiting for the fetch.
 */
static void md_overlap(FILE *f, const struct report *r, json_object *arr)
{
	char b[4][32];
	bool head = false;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *so, *no;
		double c, fe, bound, measured;
		json_object *o;

		if (!w->ok || report_inproc(w) || strcmp(w->mode, "sparda") ||
		    !(so = FIND("sparse-offload")) || !(no = FIND("sparda-nooffload")) ||
		    no->step_ms <= 0 || w->step_ms <= 0)
			continue;
		if (!head) {
			fprintf(
			    f,
			    "\n## Decode: what overlap can give\n\n"
			    "C: `sparda-nooffload`'s step (compute only). F: what "
			    "`sparse-offload`'s fetch adds to it (its step - C). Hiding that fetch "
			    "under the compute takes the step to max(C, F) at best: a bound of "
			    "(C + F) / max(C, F) on `sparda` / `sparse-offload`, for the same "
			    "bytes. "
			    "GB per step: host-to-device bytes of each decode step. `sparda`'s "
			    "step splits into its compute (C, plus what the offload path costs "
			    "the layers while the copy stream works) and the fetch it waited for "
			    "(exposed).\n\n"
			    "| model | context | batch | C ms | F ms | bound | measured | "
			    "GB/step sparse-offload | GB/step sparda | sparda step ms | "
			    "sparda compute ms | sparda exposed fetch ms |\n"
			    "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
			head = true;
		}
		c = no->step_ms;
		fe = so->step_ms > c ? so->step_ms - c : 0;
		bound = (c + fe) / (c > fe ? c : fe);
		measured = so->step_ms / w->step_ms;
		fprintf(
		    f,
		    "| %s | %d | %d | %.3f | %.3f | %.2fx | %.2fx | %s | %s | %.3f | %s | %s |\n",
		    w->model, w->context, w->batch, c, fe, bound, measured,
		    cell(b[0], 32, "%.4f", so->gb_per_step, so->gb_per_step >= 0),
		    cell(b[1], 32, "%.4f", w->gb_per_step, w->gb_per_step >= 0), w->step_ms,
		    cell(b[2], 32, "%.3f", w->compute_ms, w->compute_ms >= 0),
		    cell(b[3], 32, "%.3f", w->fetch_exposed_ms, w->fetch_exposed_ms >= 0));
		o = at_json(w);
		json_object_object_add(o, "compute_ms", json_object_new_double(c));
		json_object_object_add(o, "serial_fetch_ms", json_object_new_double(fe));
		json_object_object_add(o, "overlap_bound", json_object_new_double(bound));
		json_object_object_add(o, "measured", json_object_new_double(measured));
		json_object_object_add(o, "gb_per_step_sparse_offload",
				       jnum(so->gb_per_step, so->gb_per_step >= 0));
		json_object_object_add(o, "gb_per_step_sparda",
				       jnum(w->gb_per_step, w->gb_per_step >= 0));
		json_object_object_add(o, "sparda_compute_ms",
				       jnum(w->compute_ms, w->compute_ms >= 0));
		json_object_object_add(o, "sparda_exposed_fetch_ms",
				       jnum(w->fetch_exposed_ms, w->fetch_exposed_ms >= 0));
		json_object_array_add(arr, o);
	}
}

/* Decode step with memsvc over the same mode with the in-process arena, per configuration. */
static void md_boundary(FILE *f, const struct report *r, json_object *arr)
{
	char b[3][32];
	bool head = false;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *in = &r->rows[i], *m;
		struct ratio q;
		json_object *o;

		if (!in->ok || !report_inproc(in) ||
		    !(m = report_find(r, "memsvc", in->model, in->context, in->batch, in->mode)))
			continue;
		if (!head) {
			fprintf(
			    f,
			    "\n## Process boundary (memsvc vs in-process arena)\n\n"
			    "Decode step time with `sparda-memsvc` over the step time of the "
			    "same configuration with the in-process arena (target <= 1.02x): "
			    "measured in the same compute process (`--inproc-modes`), or in "
			    "separate runs where the column says so.\n\n"
			    "| model | context | batch | mode | step ms memsvc | step ms inproc | "
			    "cost | measured |\n|---|---|---|---|---|---|---|---|\n");
			head = true;
		}
		q = ratio_of(m, m->step_ms, in, in->step_ms);
		fprintf(f, "| %s | %d | %d | %s | %s | %s | %s | %s |\n", in->model, in->context,
			in->batch, in->mode, cell(b[0], 32, "%.3f", m->step_ms, true),
			cell(b[1], 32, "%.3f", in->step_ms, true),
			cell(b[2], 32, "%.3fx", q.v, q.have),
			in->same_process ? "same process" : "separate runs");
		o = at_json(in);
		json_object_object_add(o, "mode", json_object_new_string(in->mode));
		json_object_object_add(o, "step_ms_memsvc", json_object_new_double(m->step_ms));
		json_object_object_add(o, "step_ms_inproc", json_object_new_double(in->step_ms));
		json_object_object_add(o, "step_memsvc_vs_inproc", jnum(q.v, q.have));
		json_object_object_add(o, "same_process",
				       json_object_new_boolean(in->same_process));
		json_object_array_add(arr, o);
	}
}

/*
 * The "limited by" cell of a mode's largest feasible batch: the memory that ran out, else the
 * failure; when none failed above it, that its largest batch tried ran ("-": it never ran).
 */
static const char *limit_cell(const char *memory, const char *limited, int feasible)
{
	if (memory)
		return memory;
	if (limited[0])
		return limited;
	return feasible > 0 ? "not reached (largest batch tried)" : "-";
}

/* Throughput of each mode at its own largest feasible batch: sparda over sparse. */
static void md_max_batch(FILE *f, const struct report *r, json_object *arr)
{
	char b[5][32];

	fprintf(f, "\n## Throughput at the largest feasible batch (sparda vs sparse)\n\n");
	fprintf(f,
		"| model | context | sparda batch | sparda tok/s | sparse batch | sparse tok/s | "
		"ratio | sparda limited by | sparse limited by |\n");
	fprintf(f, "|---|---|---|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *a, *s;
		int fa, fs;
		struct ratio q;
		const char *la, *ls, *ma, *ms;
		json_object *o;

		if (seen_before(r, i, false))
			continue;
		fa = report_feasible(r, w->model, w->context, "sparda");
		fs = report_feasible(r, w->model, w->context, "sparse");
		a = report_find(r, "memsvc", w->model, w->context, fa, "sparda");
		s = report_find(r, "memsvc", w->model, w->context, fs, "sparse");
		q = ratio_of(a, a ? a->tok_s : 0, s, s ? s->tok_s : 0);
		la = limited_by(r, w->model, w->context, "sparda", fa);
		ls = limited_by(r, w->model, w->context, "sparse", fs);
		ma = memory_of(la);
		ms = memory_of(ls);
		fprintf(
		    f, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", w->model, w->context,
		    cell(b[3], 32, "%.0f", fa, fa > 0), cell(b[0], 32, "%.1f", a ? a->tok_s : 0, a),
		    cell(b[4], 32, "%.0f", fs, fs > 0), cell(b[1], 32, "%.1f", s ? s->tok_s : 0, s),
		    cell(b[2], 32, "%.2fx", q.v, q.have), limit_cell(ma, la, fa),
		    limit_cell(ms, ls, fs));
		o = json_object_new_object();
		json_object_object_add(o, "model", json_object_new_string(w->model));
		json_object_object_add(o, "context", json_object_new_int(w->context));
		json_object_object_add(o, "sparda_batch", json_object_new_int(fa));
		json_object_object_add(o, "sparse_batch", json_object_new_int(fs));
		json_object_object_add(o, "ratio", jnum(q.v, q.have));
		json_object_object_add(o, "sparda_limited_by", jstr(la));
		json_object_object_add(o, "sparse_limited_by", jstr(ls));
		json_object_object_add(o, "sparda_limit_reached", reached_json(la, fa));
		json_object_object_add(o, "sparse_limit_reached", reached_json(ls, fs));
		json_object_object_add(o, "sparda_memory", jstr(ma));
		json_object_object_add(o, "sparse_memory", jstr(ms));
		json_object_array_add(arr, o);
	}
}

/* A peer's tok/s, or why it has none: the status of its failed run ("gpu-oom"), "-" if none. */
static const char *peer_cell(char *buf, size_t len, const struct report_row *p)
{
	if (p && !p->ok)
		return p->status;
	return cell(buf, len, "%.1f", p ? p->tok_s : 0, p != NULL);
}

/* A run's mean and median step, the median where recorded: one slow step moves the mean only. */
static const char *step_cell(char *buf, size_t len, const struct report_row *p)
{
	if (p && p->ok && p->step_median_ms >= 0) {
		snprintf(buf, len, "%.1f / %.1f", p->step_ms, p->step_median_ms);
		return buf;
	}
	return cell(buf, len, "%.1f", p && p->ok ? p->step_ms : 0, p && p->ok);
}

/* sparda next to transformers' dynamic and offloaded caches, where the peers ran; a peer that
 * failed (out of GPU or host memory) shows its status in place of its tok/s. */
static void md_peers(FILE *f, const struct report *r, json_object *arr)
{
	char b[10][32];
	bool head = false;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *a = FIND("sparda"),
					*hd = FIND("hf-dynamic"), *ho = FIND("hf-offloaded");
		/* where a peer did not run, its failed row says why */
		const struct report_row *hdr = hd ? hd
						  : find_row(r, false, w->model, w->context,
							     w->batch, "hf-dynamic", false),
					*hor = ho ? ho
						  : find_row(r, false, w->model, w->context,
							     w->batch, "hf-offloaded", false);
		struct ratio qd = ratio_of(a, a ? a->tok_s : 0, hd, hd ? hd->tok_s : 0);
		struct ratio qo = ratio_of(a, a ? a->tok_s : 0, ho, ho ? ho->tok_s : 0);
		struct ratio pd = ratio_of(hd, hd ? hd->prefill_s : 0, a, a ? a->prefill_s : 0);
		json_object *o;

		if (!first_at(r, i) || (!hdr && !hor))
			continue;
		if (!head) {
			fprintf(f,
				"\n## Peers: Hugging Face transformers on the same checkpoint\n\n"
				"A peer that did not run shows why (`gpu-oom`, `host-oom`: out of "
				"GPU or host memory). Step ms: the mean and the median decode "
				"step.\n\n"
				"| model | context | batch | sparda tok/s | hf-dynamic tok/s | "
				"hf-dynamic step ms (mean / median) | "
				"hf-offloaded tok/s | hf-offloaded step ms (mean / median) | "
				"sparda / hf-dynamic | sparda / hf-offloaded | "
				"sparda prefill s | hf-dynamic prefill s | prefill speedup |\n"
				"|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
			head = true;
		}
		fprintf(f, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			w->model, w->context, w->batch, cell(b[0], 32, "%.1f", a ? a->tok_s : 0, a),
			peer_cell(b[1], 32, hdr), step_cell(b[8], 32, hdr),
			peer_cell(b[2], 32, hor), step_cell(b[9], 32, hor),
			cell(b[3], 32, "%.2fx", qd.v, qd.have),
			cell(b[4], 32, "%.2fx", qo.v, qo.have),
			cell(b[5], 32, "%.3f", a ? a->prefill_s : 0, a),
			cell(b[6], 32, "%.3f", hd ? hd->prefill_s : 0, hd),
			cell(b[7], 32, "%.2fx", pd.v, pd.have));
		o = at_json(w);
		json_object_object_add(o, "decode_sparda_vs_hf_dynamic", jnum(qd.v, qd.have));
		json_object_object_add(o, "decode_sparda_vs_hf_offloaded", jnum(qo.v, qo.have));
		json_object_object_add(o, "prefill_sparda_vs_hf_dynamic", jnum(pd.v, pd.have));
		json_object_object_add(
		    o, "hf_dynamic_step_ms_median",
		    jnum(hd ? hd->step_median_ms : 0, hd && hd->step_median_ms >= 0));
		json_object_object_add(
		    o, "hf_offloaded_step_ms_median",
		    jnum(ho ? ho->step_median_ms : 0, ho && ho->step_median_ms >= 0));
		json_object_object_add(o, "hf_dynamic_status", jstr(hdr ? hdr->status : NULL));
		json_object_object_add(o, "hf_offloaded_status", jstr(hor ? hor->status : NULL));
		json_object_array_add(arr, o);
	}
}

#undef FIND

static json_object *summary_new(const struct report *r, const char *out)
{
	json_object *s = json_object_new_object();
	size_t ok = 0;

	for (size_t i = 0; i < r->n; i++)
		ok += r->rows[i].ok;
	json_object_object_add(s, "out", json_object_new_string(out));
	json_object_object_add(s, "results", json_object_new_int64((int64_t)r->n));
	json_object_object_add(s, "ok", json_object_new_int64((int64_t)ok));
	json_object_object_add(s, "failed", json_object_new_int64((int64_t)(r->n - ok)));
	return s;
}

/* report.md and summary.json; the section writers fill the summary's arrays as they go. */
static int report_write(const struct report *r, char *const *dirs, size_t n_dirs)
{
	const char *out = dirs[0];
	char path[PATH_MAX];
	json_object *s = summary_new(r, out), *rows = json_object_new_array(),
		    *feas = json_object_new_array(), *rat = json_object_new_array(),
		    *maxb = json_object_new_array(), *bound = json_object_new_array(),
		    *peers = json_object_new_array(), *overlap = json_object_new_array(),
		    *phases = json_object_new_array();
	FILE *f;
	int rc = 0;

	json_object_object_add(s, "rows", rows);
	json_object_object_add(s, "feasible", feas);
	json_object_object_add(s, "ratios", rat);
	json_object_object_add(s, "max_batch", maxb);
	json_object_object_add(s, "process_boundary", bound);
	json_object_object_add(s, "overlap", overlap);
	json_object_object_add(s, "peers", peers);
	json_object_object_add(s, "phases", phases);
	snprintf(path, sizeof(path), "%s/report.md", r->dir);
	if (!(f = fopen(path, "w"))) {
		rc = -errno;
		goto out_put;
	}
	fprintf(f, "# Sweep results (%s)\n\nWritten by `sparda bench report --out %s", out, out);
	for (size_t k = 1; k < n_dirs; k++)
		fprintf(f, " --with %s", dirs[k]);
	fprintf(f, "` from %zu mode results%s.\n", r->n,
		n_dirs > 1 ? " (a record named in several directories is read from the first)"
			   : "");
	md_rows(f, r, rows);
	md_feasible(f, r, feas);
	md_ratios(f, r, rat);
	md_overlap(f, r, overlap);
	md_boundary(f, r, bound);
	md_max_batch(f, r, maxb);
	md_peers(f, r, peers);
	report_md_phases(f, r, phases);
	if (fclose(f))
		rc = -EIO;
	snprintf(path, sizeof(path), "%s/summary.json", r->dir);
	if (!rc && json_object_to_file_ext(path, s, JSON_C_TO_STRING_PRETTY))
		rc = -EIO;
out_put:
	json_object_put(s);
	return rc;
}

/* --out and every --with directory: the records a report reads. */
#define REPORT_DIRS_MAX 16

static void report_usage(FILE *f)
{
	fprintf(
	    f, "usage: sparda bench report --out DIR [--with DIR2]...\n"
	       "Writes DIR/report/report.md, summary.json and gnuplot PNGs from the records of\n"
	       "the `sparda bench sweep` directory DIR and of each --with directory (e.g. a batch\n"
	       "bisection run elsewhere, so the feasible batches and limits count it); a record\n"
	       "named in several directories is read from the first.\n");
}

int bench_report(int argc, char **argv)
{
	static const struct option long_opts[] = {{"out", required_argument, NULL, 'o'},
						  {"with", required_argument, NULL, 'w'},
						  {"help", no_argument, NULL, 'h'},
						  {NULL, 0, NULL, 0}};
	struct report r = {0};
	char dir[PATH_MAX], *dirs[REPORT_DIRS_MAX] = {NULL};
	const char *bad;
	size_t n_with = 0;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		if (c == 'h') {
			report_usage(stdout);
			return 0;
		}
		if (c == 'o') {
			dirs[0] = optarg;
		} else if (c == 'w' && n_with + 1 < REPORT_DIRS_MAX) {
			dirs[1 + n_with++] = optarg;
		} else {
			if (c == 'w')
				fprintf(stderr,
					"sparda bench report: at most %d --with directories\n",
					REPORT_DIRS_MAX - 1);
			report_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sparda bench report: unexpected argument '%s'\n", argv[optind]);
		report_usage(stderr);
		return 2;
	}
	if (!dirs[0] || !dirs[0][0]) {
		report_usage(stderr);
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/report", dirs[0]);
	r.dir = dir;
	bad = dirs[0];
	if ((rc = report_load(dirs, 1 + n_with, &r, &bad)) ||
	    (bad = dirs[0], mkdir(dir, 0755) && errno != EEXIST && (rc = -errno)) ||
	    (rc = report_write(&r, dirs, 1 + n_with))) {
		fprintf(stderr, "sparda bench report: %s: %s\n", bad, err_str(rc));
		report_free(&r);
		return 1;
	}
	rc = report_plot(&r);
	printf("report: %zu mode results -> %s/report.md, %s/summary.json%s\n", r.n, dir, dir,
	       rc == -ENOENT ? " (gnuplot not found: no plots)"
	       : rc	     ? " (gnuplot failed)"
			     : ", PNGs");
	report_free(&r);
	return rc && rc != -ENOENT ? 1 : 0;
}
