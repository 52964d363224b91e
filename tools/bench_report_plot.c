/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plots of `sparda bench report`: one gnuplot script plus data files under
 * <out>/report/data, run once. decode_<model>_c<ctx>.png: decode tok/s against batch, a line
 * per mode; step_<model>.png: step time of sparda and sparda-nooffload against batch.
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

		if (!w->ok || w->context != context || strcmp(w->model, model) ||
		    strcmp(w->mode, mode))
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

/* Decode tok/s against batch, one line per mode, for each (model, context). */
static void plot_decode(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256];

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int count = 0;

		if (!first_of(r, i, true))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(png, sizeof(png), "decode_%s_c%d.png", stem, w->context);
		snprintf(title, sizeof(title), "%s, context %d: decode throughput", w->model,
			 w->context);
		plot_header(gp, r->dir, png, title, "decode tokens/s");
		for (size_t j = 0; j < r->n; j++)
			if (r->rows[j].context == w->context &&
			    !strcmp(r->rows[j].model, w->model) && first_of_mode(r, j))
				plot_series(gp, r, w, r->rows[j].mode, false, &count);
		fprintf(gp, count ? "\n" : "set output\n");
	}
}

/* Step time of sparda and sparda-nooffload against batch, a line per context, per model. */
static void plot_step(FILE *gp, const struct report *r)
{
	char stem[128], png[256], title[256];

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		int count = 0;

		if (!first_of(r, i, false))
			continue;
		stem_of(w->model, stem, sizeof(stem));
		snprintf(png, sizeof(png), "step_%s.png", stem);
		snprintf(title, sizeof(title), "%s: decode step, sparda vs sparda-nooffload",
			 w->model);
		plot_header(gp, r->dir, png, title, "decode step ms");
		for (size_t j = i; j < r->n; j++) {
			if (strcmp(r->rows[j].model, w->model) || !first_of(r, j, true))
				continue;
			plot_series(gp, r, &r->rows[j], "sparda", true, &count);
			plot_series(gp, r, &r->rows[j], "sparda-nooffload", true, &count);
		}
		fprintf(gp, count ? "\n" : "set output\n");
	}
}

static int run_gnuplot(const char *script)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
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
	char data[PATH_MAX], script[PATH_MAX];
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
	if (fclose(gp))
		return -EIO;
	fflush(NULL);
	return run_gnuplot(script);
}
