/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench report --out DIR`: reads every configuration record a sweep wrote into DIR and
 * writes DIR/report/report.md (a table per model, feasible batches, the headline ratios),
 * DIR/report/summary.json (every figure) and, when gnuplot is installed, PNG plots.
 */
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench_cmds.h"
#include "bench_report.h"
#include "err.h"

static const char *const mode_order[] = {
    "dense", "sparse", "sparse-offload", "sparda", "sparda-noprefetch", "sparda-nooffload"};

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
	if (mode_rank(x->mode) != mode_rank(y->mode))
		return mode_rank(x->mode) < mode_rank(y->mode) ? -1 : 1;
	return strcmp(x->mode, y->mode);
}

static double num(json_object *o, const char *key, double def)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return def;
	return json_object_get_double(v);
}

static void str(json_object *o, const char *key, char *buf, size_t len)
{
	json_object *v;

	if (json_object_object_get_ex(o, key, &v) && v)
		snprintf(buf, len, "%s", json_object_get_string(v));
}

static void row_result(json_object *res, struct report_row *w)
{
	json_object *v;
	double decode_s;

	w->tok_s = num(res, "decode_tokens_per_s", 0);
	w->step_ms = num(res, "decode_step_ms", 0);
	w->prefill_s = num(res, "prefill_s", 0);
	w->prefill_tok_s = w->prefill_s > 0 ? num(res, "prompt_tokens", 0) / w->prefill_s : 0;
	w->hit_rate = num(res, "hit_rate", -1);
	decode_s = w->tok_s > 0 ? num(res, "decode_tokens", 0) / w->tok_s : 0;
	w->h2d_gbs = decode_s > 0 ? num(res, "bytes_h2d", 0) / decode_s / 1e9 : 0;
	w->late_units = num(res, "late_units", 0);
	w->equals_twin = -1;
	if (json_object_object_get_ex(res, "equals_twin", &v) && v)
		w->equals_twin = json_object_get_boolean(v);
	if (json_object_object_get_ex(res, "tokens", &v) && v)
		w->tokens = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
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
 * Each configuration ran one mode, so compute could not compare it with its twin: compare the
 * token ids of the twin's record of the same model, context and batch instead.
 */
static void report_twins(struct report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		struct report_row *w = &r->rows[i];
		const char *twin = twin_of(w->mode);
		const struct report_row *t;

		if (!w->ok || w->equals_twin >= 0 || !twin || !w->tokens)
			continue;
		t = report_find(r, w->model, w->context, w->batch, twin);
		if (t && t->tokens)
			w->equals_twin = !strcmp(w->tokens, t->tokens);
	}
}

static void report_free(struct report *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->rows[i].tokens);
	free(r->rows);
}

/* Parse one record; -EINVAL when it is not a sweep record. */
static int row_load(const char *path, struct report_row *w)
{
	json_object *o = json_object_from_file(path), *res;
	int rc = -EINVAL;

	memset(w, 0, sizeof(*w));
	if (!o || !json_object_object_get_ex(o, "mode", NULL) ||
	    !json_object_object_get_ex(o, "context", NULL))
		goto out_put;
	str(o, "model", w->model, sizeof(w->model));
	str(o, "mode", w->mode, sizeof(w->mode));
	str(o, "status", w->status, sizeof(w->status));
	str(o, "error", w->error, sizeof(w->error));
	w->context = (int)num(o, "context", 0);
	w->batch = (int)num(o, "batch", 0);
	w->ok = !strcmp(w->status, "ok");
	if (w->ok && json_object_object_get_ex(o, "result", &res) && res)
		row_result(res, w);
	rc = 0;
out_put:
	json_object_put(o);
	return rc;
}

static bool is_record(const char *name)
{
	size_t n = strlen(name);

	return n > 5 && !strcmp(name + n - 5, ".json") && name[0] != '.';
}

static int report_load(const char *out, struct report *r)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(out);
	size_t cap = 0;
	int rc = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!is_record(e->d_name))
			continue;
		if (r->n == cap) {
			void *p = realloc(r->rows, (cap = cap ? 2 * cap : 64) * sizeof(*r->rows));

			if (!p) {
				rc = -ENOMEM;
				break;
			}
			r->rows = p;
		}
		snprintf(path, sizeof(path), "%s/%s", out, e->d_name);
		if (row_load(path, &r->rows[r->n]) == 0)
			r->n++;
	}
	closedir(d);
	if (r->n)
		qsort(r->rows, r->n, sizeof(*r->rows), row_cmp);
	report_twins(r);
	return rc;
}

const struct report_row *report_find(const struct report *r, const char *model, int context,
				     int batch, const char *mode)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (w->ok && w->context == context && w->batch == batch &&
		    !strcmp(w->model, model) && !strcmp(w->mode, mode))
			return w;
	}
	return NULL;
}

int report_feasible(const struct report *r, const char *model, int context, const char *mode)
{
	int best = 0;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (w->ok && w->context == context && w->batch > best && !strcmp(w->model, model) &&
		    !strcmp(w->mode, mode))
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

		if (!w->ok && w->context == context && w->batch > feasible &&
		    !strcmp(w->model, model) && !strcmp(w->mode, mode) &&
		    (!f || w->batch < f->batch))
			f = w;
	}
	return f ? f->status : "";
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

static json_object *row_json(const struct report_row *w)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "model", json_object_new_string(w->model));
	json_object_object_add(o, "context", json_object_new_int(w->context));
	json_object_object_add(o, "batch", json_object_new_int(w->batch));
	json_object_object_add(o, "mode", json_object_new_string(w->mode));
	json_object_object_add(o, "status", json_object_new_string(w->status));
	json_object_object_add(o, "error", w->ok ? NULL : json_object_new_string(w->error));
	json_object_object_add(o, "decode_tokens_per_s", jnum(w->tok_s, w->ok));
	json_object_object_add(o, "decode_step_ms", jnum(w->step_ms, w->ok));
	json_object_object_add(o, "prefill_s", jnum(w->prefill_s, w->ok));
	json_object_object_add(o, "prefill_tokens_per_s", jnum(w->prefill_tok_s, w->ok));
	json_object_object_add(o, "hit_rate", jnum(w->hit_rate, w->ok && w->hit_rate >= 0));
	json_object_object_add(o, "h2d_gb_per_s", jnum(w->h2d_gbs, w->ok));
	json_object_object_add(o, "late_units", jnum(w->late_units, w->ok));
	json_object_object_add(o, "equals_twin",
			       w->equals_twin < 0 ? NULL : json_object_new_boolean(w->equals_twin));
	return o;
}

static void md_row(FILE *f, const struct report_row *w)
{
	char b[8][32];
	bool ok = w->ok;

	fprintf(f, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w->model,
		w->context, w->batch, w->mode, cell(b[0], 32, "%.1f", w->tok_s, ok),
		cell(b[1], 32, "%.3f", w->step_ms, ok), cell(b[2], 32, "%.3f", w->prefill_s, ok),
		cell(b[3], 32, "%.0f", w->prefill_tok_s, ok),
		cell(b[4], 32, "%.3f", w->hit_rate, ok && w->hit_rate >= 0),
		cell(b[5], 32, "%.2f", w->h2d_gbs, ok), cell(b[6], 32, "%.0f", w->late_units, ok),
		!ok || w->equals_twin < 0 ? "-"
		: w->equals_twin	  ? "yes"
					  : "NO",
		ok ? "ok" : w->status);
}

/* One table per model, every configuration in (context, batch, mode) order. */
static void md_rows(FILE *f, const struct report *r, json_object *arr)
{
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (i == 0 || strcmp(w->model, r->rows[i - 1].model)) {
			fprintf(f, "\n## %s\n\n", w->model);
			fprintf(f, "| model | context | batch | mode | decode tok/s | step ms | "
				   "prefill s | prefill tok/s | hit rate | H2D GB/s | late units | "
				   "equals twin | status |\n");
			fprintf(f, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
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
		    (!with_mode || !strcmp(r->rows[j].mode, w->mode)))
			return true;
	return false;
}

static void md_feasible(FILE *f, const struct report *r, json_object *arr)
{
	fprintf(f, "\n## Feasible batch (largest batch that ran)\n\n");
	fprintf(f, "| model | context | mode | feasible batch | next batch failed with |\n");
	fprintf(f, "|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int fb;
		const char *lim;
		json_object *o;

		if (seen_before(r, i, true))
			continue;
		fb = report_feasible(r, w->model, w->context, w->mode);
		lim = limited_by(r, w->model, w->context, w->mode, fb);
		fprintf(f, "| %s | %d | %s | %d | %s |\n", w->model, w->context, w->mode, fb,
			lim[0] ? lim : "-");
		o = json_object_new_object();
		json_object_object_add(o, "model", json_object_new_string(w->model));
		json_object_object_add(o, "context", json_object_new_int(w->context));
		json_object_object_add(o, "mode", json_object_new_string(w->mode));
		json_object_object_add(o, "feasible_batch", json_object_new_int(fb));
		json_object_object_add(o, "limited_by",
				       lim[0] ? json_object_new_string(lim) : NULL);
		json_object_array_add(arr, o);
	}
}

struct ratio {
	double v;
	bool have;
};

static struct ratio ratio_of(double num_v, double den_v, bool have)
{
	return (struct ratio){.v = have && den_v > 0 ? num_v / den_v : 0,
			      .have = have && den_v > 0};
}

/* Ratios measured at one (model, context, batch); tok/s and prefill as speedups. */
static void ratios_at(FILE *f, const struct report *r, const struct report_row *w, json_object *arr)
{
	const struct report_row *a = report_find(r, w->model, w->context, w->batch, "sparda");
	const struct report_row *so =
	    report_find(r, w->model, w->context, w->batch, "sparse-offload");
	const struct report_row *s = report_find(r, w->model, w->context, w->batch, "sparse");
	const struct report_row *n =
	    report_find(r, w->model, w->context, w->batch, "sparda-nooffload");
	struct ratio d = ratio_of(a ? a->tok_s : 0, so ? so->tok_s : 0, a && so);
	struct ratio p = ratio_of(s ? s->prefill_s : 0, a ? a->prefill_s : 0, a && s);
	struct ratio st = ratio_of(a ? a->step_ms : 0, n ? n->step_ms : 0, a && n);
	json_object *o = json_object_new_object();
	char b[3][32];

	fprintf(f, "| %s | %d | %d | %s | %s | %s |\n", w->model, w->context, w->batch,
		cell(b[0], 32, "%.2fx", d.v, d.have), cell(b[1], 32, "%.2fx", p.v, p.have),
		cell(b[2], 32, "%.2fx", st.v, st.have));
	json_object_object_add(o, "model", json_object_new_string(w->model));
	json_object_object_add(o, "context", json_object_new_int(w->context));
	json_object_object_add(o, "batch", json_object_new_int(w->batch));
	json_object_object_add(o, "decode_sparda_vs_sparse_offload", jnum(d.v, d.have));
	json_object_object_add(o, "prefill_sparda_vs_sparse", jnum(p.v, p.have));
	json_object_object_add(o, "step_sparda_vs_nooffload", jnum(st.v, st.have));
	json_object_array_add(arr, o);
}

static void md_ratios(FILE *f, const struct report *r, json_object *arr)
{
	fprintf(f, "\n## Headline ratios\n\n"
		   "Decode: `sparda` tok/s over `sparse-offload` tok/s. Prefill: `sparse` prefill "
		   "time over `sparda`'s. Step: `sparda` step time over `sparda-nooffload`'s (the "
		   "cost of offloading through the memory service; 1.00x = free).\n\n");
	fprintf(f, "| model | context | batch | decode sparda / sparse-offload | "
		   "prefill sparda vs sparse | step sparda / sparda-nooffload |\n");
	fprintf(f, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *p = i ? &r->rows[i - 1] : NULL;

		if (p && p->context == w->context && p->batch == w->batch &&
		    !strcmp(p->model, w->model))
			continue;
		ratios_at(f, r, w, arr);
	}
}

/* Throughput of each mode at its own largest feasible batch: sparda over sparse. */
static void md_max_batch(FILE *f, const struct report *r, json_object *arr)
{
	char b[4][32];

	fprintf(f, "\n## Throughput at the largest feasible batch (sparda vs sparse)\n\n");
	fprintf(f,
		"| model | context | sparda batch | sparda tok/s | sparse batch | sparse tok/s | "
		"ratio | sparda limited by | sparse limited by |\n");
	fprintf(f, "|---|---|---|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i], *a, *s;
		int fa, fs;
		struct ratio q;
		const char *la, *ls;
		json_object *o;

		if (seen_before(r, i, false))
			continue;
		fa = report_feasible(r, w->model, w->context, "sparda");
		fs = report_feasible(r, w->model, w->context, "sparse");
		a = report_find(r, w->model, w->context, fa, "sparda");
		s = report_find(r, w->model, w->context, fs, "sparse");
		q = ratio_of(a ? a->tok_s : 0, s ? s->tok_s : 0, a && s);
		la = limited_by(r, w->model, w->context, "sparda", fa);
		ls = limited_by(r, w->model, w->context, "sparse", fs);
		fprintf(f, "| %s | %d | %d | %s | %d | %s | %s | %s | %s |\n", w->model, w->context,
			fa, cell(b[0], 32, "%.1f", a ? a->tok_s : 0, a), fs,
			cell(b[1], 32, "%.1f", s ? s->tok_s : 0, s),
			cell(b[2], 32, "%.2fx", q.v, q.have), la[0] ? la : "-", ls[0] ? ls : "-");
		o = json_object_new_object();
		json_object_object_add(o, "model", json_object_new_string(w->model));
		json_object_object_add(o, "context", json_object_new_int(w->context));
		json_object_object_add(o, "sparda_batch", json_object_new_int(fa));
		json_object_object_add(o, "sparse_batch", json_object_new_int(fs));
		json_object_object_add(o, "ratio", jnum(q.v, q.have));
		json_object_object_add(o, "sparda_limited_by",
				       la[0] ? json_object_new_string(la) : NULL);
		json_object_object_add(o, "sparse_limited_by",
				       ls[0] ? json_object_new_string(ls) : NULL);
		json_object_array_add(arr, o);
	}
}

static json_object *summary_new(const struct report *r, const char *out)
{
	json_object *s = json_object_new_object();
	size_t ok = 0;

	for (size_t i = 0; i < r->n; i++)
		ok += r->rows[i].ok;
	json_object_object_add(s, "out", json_object_new_string(out));
	json_object_object_add(s, "configurations", json_object_new_int64((int64_t)r->n));
	json_object_object_add(s, "ok", json_object_new_int64((int64_t)ok));
	json_object_object_add(s, "failed", json_object_new_int64((int64_t)(r->n - ok)));
	return s;
}

/* report.md and summary.json; the section writers fill the summary's arrays as they go. */
static int report_write(const struct report *r, const char *out)
{
	char path[PATH_MAX];
	json_object *s = summary_new(r, out), *rows = json_object_new_array(),
		    *feas = json_object_new_array(), *rat = json_object_new_array(),
		    *maxb = json_object_new_array();
	FILE *f;
	int rc = 0;

	json_object_object_add(s, "rows", rows);
	json_object_object_add(s, "feasible", feas);
	json_object_object_add(s, "ratios", rat);
	json_object_object_add(s, "max_batch", maxb);
	snprintf(path, sizeof(path), "%s/report.md", r->dir);
	if (!(f = fopen(path, "w"))) {
		rc = -errno;
		goto out_put;
	}
	fprintf(f,
		"# Sweep results (%s)\n\nWritten by `sparda bench report --out %s` from %zu "
		"configuration records.\n",
		out, out, r->n);
	md_rows(f, r, rows);
	md_feasible(f, r, feas);
	md_ratios(f, r, rat);
	md_max_batch(f, r, maxb);
	if (fclose(f))
		rc = -EIO;
	snprintf(path, sizeof(path), "%s/summary.json", r->dir);
	if (!rc && json_object_to_file_ext(path, s, JSON_C_TO_STRING_PRETTY))
		rc = -EIO;
out_put:
	json_object_put(s);
	return rc;
}

int bench_report(int argc, char **argv)
{
	struct report r = {0};
	char dir[PATH_MAX];
	const char *out = NULL;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--out") && i + 1 < argc)
			out = argv[++i];
		else if (!strncmp(argv[i], "--out=", 6))
			out = argv[i] + 6;
	}
	if (!out) {
		fprintf(stderr,
			"usage: sparda bench report --out DIR (a `sparda bench sweep` dir)\n"
			"Writes DIR/report/report.md, summary.json and gnuplot PNGs.\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/report", out);
	r.dir = dir;
	if ((rc = report_load(out, &r)) || (mkdir(dir, 0755) && errno != EEXIST && (rc = -errno)) ||
	    (rc = report_write(&r, out))) {
		fprintf(stderr, "sparda bench report: %s: %s\n", out, err_str(rc));
		report_free(&r);
		return 1;
	}
	rc = report_plot(&r);
	printf("report: %zu configurations -> %s/report.md, %s/summary.json%s\n", r.n, dir, dir,
	       rc == -ENOENT ? " (gnuplot not found: no plots)"
	       : rc	     ? " (gnuplot failed)"
			     : ", PNGs");
	report_free(&r);
	return rc && rc != -ENOENT ? 1 : 0;
}
