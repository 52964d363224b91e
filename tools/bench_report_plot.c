/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plots of `sparda bench report`: one gnuplot script plus data files under
 * <out>/report/data, run once. decode_<model>_c<ctx>.png: decode tok/s against batch, a line
 * per mode (transformers peers included); breakdown_<model>_c<ctx>.png: the decode step split
 * into compute, exposed fetch and the rest, a stacked bar per mode and batch;
 * step_<model>.png: step time of sparda and sparda-nooffload against batch;
 * prefill_<model>.png: prefill speedup of sparda over sparse against context, a line per batch.
 * The in-process arena's rows are left out (the report's table compares them). A plot without
 * data (no `sparse` rows for the prefill speedup, no `sparda` ones for the step) is not drawn.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_report.h"

static bool gnuplot_present(void)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX], bin[PATH_MAX + 16];

	while (path && *path) {
		size_t n = strcspn(path, ":");

		snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
		snprintf(bin, sizeof(bin), "%s/gnuplot", n ? dir : ".");
		if (access(bin, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* File-name-safe copy of a model spec ("llama3-8b:32" -> "llama3-8b_32"). */
static void stem_of(const char *model, char *buf, size_t len)
{
	size_t i = 0;

	for (; model[i] && i + 1 < len; i++)
		buf[i] =
		    (model[i] == '-' || model[i] == '.' || (model[i] >= '0' && model[i] <= '9') ||
		     (model[i] >= 'a' && model[i] <= 'z') || (model[i] >= 'A' && model[i] <= 'Z'))
			? model[i]
			: '_';
	buf[i] = 0;
}

/* "batch value" lines of the successful rows; returns the number of points. */
static int series(const struct report *r, const char *model, int context, const char *mode,
		  bool step, const char *path)
{
	FILE *f = fopen(path, "w");
	int n = 0;

	if (!f)
		return 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (!w->ok || report_inproc(w) || w->context != context ||
		    strcmp(w->model, model) || strcmp(w->mode, mode))
			continue;
		fprintf(f, "%d %.6g\n", w->batch, step ? w->step_ms : w->tok_s);
		n++;
	}
	fclose(f);
	return n;
}

/* Append ", 'file' using 1:2 with linespoints title 'T'" when the series has points. */
static void plot_series(FILE *gp, const struct report *r, const struct report_row *w,
			const char *mode, bool step, int *count)
{
	char stem[128], path[PATH_MAX], title[96];

	stem_of(w->model, stem, sizeof(stem));
	snprintf(path, sizeof(path), "%s/data/%s_c%d_%s%s.dat", r->dir, stem, w->context, mode,
		 step ? "_step" : "");
	if (!series(r, w->model, w->context, mode, step, path))
		return;
	if (step)
		snprintf(title, sizeof(title), "%s ctx %d", mode, w->context);
	else
		snprintf(title, sizeof(title), "%s", mode);
	fprintf(gp, "%s'%s' using 1:2 with linespoints title '%s'", *count ? ", " : "plot ", path,
		title);
	(*count)++;
}

static bool first_of(const struct report *r, size_t i, bool per_context)
{
	for (size_t j = 0; j < i; j++)
		if (!strcmp(r->rows[j].model, r->rows[i].model) &&
		    (!per_context || r->rows[j].context == r->rows[i].context))
			return false;
	return true;
}

/* Is row i the first of its (model, context, mode)? */
static bool first_of_mode(const struct report *r, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (r->rows[j].context == r->rows[i].context &&
		    !strcmp(r->rows[j].model, r->rows[i].model) &&
		    !strcmp(r->rows[j].mode, r->rows[i].mode))
			return false;
	return true;
}

static void plot_header(FILE *gp, const char *dir, const char *png, const char *title,
			const char *ylabel)
{
	fprintf(gp,
		"set output '%s/%s'\nset title '%s' noenhanced\nset xlabel 'batch'\n"
		"set ylabel '%s'\nset key left top noenhanced\nset grid\n",
		dir, png, title, ylabel);
}

/* A plot's series, gathered before its header: gnuplot creates the PNG at `set output`, so a
 * plot without a series must not be started at all (it would leave an empty file). */
struct body {
	char *buf;
	size_t len;
};

static FILE *body_open(struct body *b)
{
	b->buf = NULL;
	b->len = 0;
	return open_memstream(&b->buf, &b->len);
}

/* The plot, when it has a series: header, settings, then the series; the body is closed. */
static void plot_emit(FILE *gp, const char *dir, const char *png, const char *title,
		      const char *ylabel, const char *settings, FILE *body, struct body *b,
		      int count)
{
	fclose(body);
	if (count && b->buf) {
		plot_header(gp, dir, png, title, ylabel);
		fprintf(gp, "%s%s\n", settings, b->buf);
	}
	free(b->buf);
}

/* Decode tok/s against batch, one line per mode, for each (model, context). */
static void plot_decode(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256];
	struct body b;
	FILE *body;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int count = 0;

		if (!first_of(r, i, true))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(png, sizeof(png), "decode_%s_c%d.png", stem, w->context);
		snprintf(title, sizeof(title), "%s, context %d: decode throughput", w->model,
			 w->context);
		if (!(body = body_open(&b)))
			return;
		for (size_t j = 0; j < r->n; j++)
			if (r->rows[j].context == w->context && !report_inproc(&r->rows[j]) &&
			    !strcmp(r->rows[j].model, w->model) && first_of_mode(r, j))
				plot_series(body, r, w, r->rows[j].mode, false, &count);
		plot_emit(gp, r->dir, png, title, "decode tokens/s", "set logscale x 2\n", body, &b,
			  count);
		fprintf(gp, "unset logscale x\n");
	}
}

/* Step time of sparda and sparda-nooffload against batch, a line per context, per model. */
static void plot_step(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256];
	struct body b;
	FILE *body;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int count = 0;

		if (!first_of(r, i, false))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(png, sizeof(png), "step_%s.png", stem);
		snprintf(title, sizeof(title), "%s: decode step, sparda vs sparda-nooffload",
			 w->model);
		if (!(body = body_open(&b)))
			return;
		for (size_t j = i; j < r->n; j++) {
			if (strcmp(r->rows[j].model, w->model) || !first_of(r, j, true))
				continue;
			plot_series(body, r, &r->rows[j], "sparda", true, &count);
			plot_series(body, r, &r->rows[j], "sparda-nooffload", true, &count);
		}
		plot_emit(gp, r->dir, png, title, "decode step ms", "", body, &b, count);
	}
}

/* "label compute exposed-fetch rest" per successful row that reports the split. */
static int breakdown_data(const struct report *r, const struct report_row *w, const char *path)
{
	FILE *f = fopen(path, "w");
	int n = 0;

	if (!f)
		return 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *x = &r->rows[i];
		double exposed, rest;

		if (!x->ok || report_inproc(x) || x->compute_ms < 0 || x->context != w->context ||
		    strcmp(x->model, w->model))
			continue;
		exposed = x->fetch_exposed_ms > 0 ? x->fetch_exposed_ms : 0;
		rest = x->step_ms - x->compute_ms - exposed;
		fprintf(f, "\"%s B=%d\" %.6g %.6g %.6g\n", x->mode, x->batch, x->compute_ms,
			exposed, rest > 0 ? rest : 0);
		n++;
	}
	fclose(f);
	return n;
}

/* The decode step as stacked bars (compute, exposed fetch, rest) per (model, context). */
static void plot_breakdown(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256], path[PATH_MAX];

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];

		if (!first_of(r, i, true))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(path, sizeof(path), "%s/data/%s_c%d_breakdown.dat", r->dir, stem,
			 w->context);
		if (!breakdown_data(r, w, path))
			continue;
		snprintf(png, sizeof(png), "breakdown_%s_c%d.png", stem, w->context);
		snprintf(title, sizeof(title), "%s, context %d: decode step breakdown", w->model,
			 w->context);
		plot_header(gp, r->dir, png, title, "ms per decode step");
		fprintf(
		    gp,
		    "set style data histograms\nset style histogram rowstacked\n"
		    "set style fill solid 0.8 border -1\nset boxwidth 0.7\n"
		    "set xtics rotate by -40 noenhanced\nset xlabel 'mode, batch'\n"
		    "set key outside right top\n"
		    "plot '%s' using 2:xtic(1) title 'compute', '' using 3 title 'exposed fetch', "
		    "'' using 4 title 'other'\n"
		    "unset style data\nset style data points\nset xtics norotate\n"
		    "set style fill empty\nset key left top\n",
		    path);
	}
}

/* "context speedup" of sparse's prefill time over sparda's at one batch; points written. */
static int prefill_data(const struct report *r, const char *model, int batch, const char *path)
{
	FILE *f = fopen(path, "w");
	int n = 0;

	if (!f)
		return 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *a = &r->rows[i], *s;

		if (!a->ok || report_inproc(a) || a->batch != batch || strcmp(a->mode, "sparda") ||
		    strcmp(a->model, model) || a->prefill_s <= 0 ||
		    !(s = report_find(r, "memsvc", model, a->context, batch, "sparse")))
			continue;
		fprintf(f, "%d %.6g\n", a->context, s->prefill_s / a->prefill_s);
		n++;
	}
	fclose(f);
	return n;
}

static bool first_batch(const struct report *r, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (r->rows[j].batch == r->rows[i].batch &&
		    !strcmp(r->rows[j].model, r->rows[i].model))
			return false;
	return true;
}

/* Prefill speedup of sparda over sparse against context, a line per batch, per model. */
static void plot_prefill(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256], path[PATH_MAX];
	struct body b;
	FILE *body;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int count = 0;

		if (!first_of(r, i, false))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(png, sizeof(png), "prefill_%s.png", stem);
		snprintf(title, sizeof(title), "%s: prefill speedup, sparse time / sparda time",
			 w->model);
		if (!(body = body_open(&b)))
			return;
		for (size_t j = i; j < r->n; j++) {
			if (strcmp(r->rows[j].model, w->model) || !first_batch(r, j))
				continue;
			snprintf(path, sizeof(path), "%s/data/%s_b%d_prefill.dat", r->dir, stem,
				 r->rows[j].batch);
			if (!prefill_data(r, w->model, r->rows[j].batch, path))
				continue;
			fprintf(body, "%s'%s' using 1:2 with linespoints title 'batch %d'",
				count++ ? ", " : "plot ", path, r->rows[j].batch);
		}
		plot_emit(gp, r->dir, png, title, "speedup (x)", "set xlabel 'context (tokens)'\n",
			  body, &b, count);
	}
}

/* gnuplot's warnings (an axis of one point) go to <dir>/gnuplot.log, not the terminal. */
static int run_gnuplot(const char *script, const char *log)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (!freopen(log, "w", stderr))
			_exit(127);
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

int report_plot(const struct report *r)
{
	char data[PATH_MAX], script[PATH_MAX], log[PATH_MAX];
	FILE *gp;

	if (!gnuplot_present())
		return -ENOENT;
	snprintf(data, sizeof(data), "%s/data", r->dir);
	if (mkdir(data, 0755) && errno != EEXIST)
		return -errno;
	snprintf(script, sizeof(script), "%s/plots.gp", r->dir);
	if (!(gp = fopen(script, "w")))
		return -errno;
	fprintf(gp, "set terminal png size 900,560\n");
	plot_decode(gp, r);
	plot_step(gp, r);
	plot_prefill(gp, r);
	plot_breakdown(gp, r);
	if (fclose(gp))
		return -EIO;
	fflush(NULL);
	snprintf(log, sizeof(log), "%s/gnuplot.log", r->dir);
	return run_gnuplot(script, log);
}
