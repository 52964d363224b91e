/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The limits of `sparda bench report`: what a configuration record's pass-through arguments
 * (--compute-arg, --memsvc-arg) say of the GPU memory limit and host RAM budget it ran under,
 * and the Markdown "Limits:" line under each model and context.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "bench_report.h"

/* The last value of flag in args ("--flag=V", or "--flag" then "V"), or NULL. */
static const char *arg_value(json_object *args, const char *flag)
{
	size_t n = strlen(flag), len = json_object_array_length(args);
	const char *v = NULL;

	for (size_t i = 0; i < len; i++) {
		const char *a = json_object_get_string(json_object_array_get_idx(args, i));

		if (!a || strncmp(a, flag, n))
			continue;
		if (a[n] == '=')
			v = a + n + 1;
		else if (!a[n] && i + 1 < len)
			v = json_object_get_string(json_object_array_get_idx(args, ++i));
	}
	return v;
}

/* The arguments as given, space-separated ("none" when there are none). */
static void args_text(json_object *args, char *buf, size_t len)
{
	size_t off = 0, n = json_object_array_length(args);

	snprintf(buf, len, "none");
	for (size_t i = 0; i < n && off < len; i++) {
		const char *a = json_object_get_string(json_object_array_get_idx(args, i));

		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? " " : "", a ? a : "");
	}
}

/* One limit as text: "<what> V" where flag=V sets it, "<zero> (flag=0)" where it is 0, else
 * "no flag (<who> args: ...)" with the arguments as given. */
static void one_limit(json_object *args, const char *flag, const char *what, const char *zero,
		      const char *who, char *buf, size_t len)
{
	const char *v = arg_value(args, flag);
	char all[160];

	if (v && strcmp(v, "0")) {
		snprintf(buf, len, "%s %s", what, v);
	} else if (v) {
		snprintf(buf, len, "%s (%s=0)", zero, flag);
	} else {
		args_text(args, all, sizeof(all));
		snprintf(buf, len, "no %s (%s args: %s)", flag, who, all);
	}
}

void report_limits_text(json_object *compute, json_object *memsvc, char *buf, size_t len)
{
	char gpu[200], host[200];

	one_limit(compute, "--gpu-mem-limit", "GPU memory limit", "no GPU memory limit", "compute",
		  gpu, sizeof(gpu));
	one_limit(memsvc, "--ram-budget", "host RAM budget", "memsvc's default RAM budget",
		  "memsvc", host, sizeof(host));
	snprintf(buf, len, "%s, %s", gpu, host);
}

void report_record_args(json_object *o, json_object **compute, json_object **memsvc)
{
	json_object *c, *m;

	*compute = *memsvc = NULL;
	if (!json_object_object_get_ex(o, "compute_args", &c) ||
	    !json_object_is_type(c, json_type_array) ||
	    !json_object_object_get_ex(o, "memsvc_args", &m) ||
	    !json_object_is_type(m, json_type_array))
		return;
	*compute = json_object_get(c);
	*memsvc = json_object_get(m);
}

/* Is row i of the same (model, context) as row first? */
static bool same_section(const struct report *r, size_t first, size_t i)
{
	return i < r->n && !strcmp(r->rows[i].model, r->rows[first].model) &&
	       r->rows[i].context == r->rows[first].context;
}

/* The batches of (model, context)'s memsvc rows whose limits are limits: " (batches 1, 2)". */
static void limits_batches(const struct report *r, size_t first, const char *limits, char *buf,
			   size_t len)
{
	size_t off = 0;
	int last = -1, n = 0;

	buf[0] = 0;
	for (size_t i = first; same_section(r, first, i) && off < len; i++) {
		const struct report_row *w = &r->rows[i];

		if (strcmp(w->store, "memsvc") || strcmp(w->limits, limits) || w->batch == last)
			continue;
		off += (size_t)snprintf(buf + off, len - off, "%s%d", n++ ? ", " : "", w->batch);
		last = w->batch;
	}
}

void report_md_limits(FILE *f, const struct report *r, size_t first)
{
	const char *seen[8];
	char batches[256];
	int n = 0, k;
	bool more = false; /* distinct ones past seen[] */

	for (size_t i = first; same_section(r, first, i); i++) {
		if (strcmp(r->rows[i].store, "memsvc"))
			continue;
		for (k = 0; k < n && strcmp(seen[k], r->rows[i].limits); k++)
			;
		if (k == n && n < (int)(sizeof(seen) / sizeof(seen[0])))
			seen[n++] = r->rows[i].limits;
		else if (k == n)
			more = true;
	}
	if (n == 1)
		fprintf(f, "Limits: %s.\n\n", seen[0]);
	if (n < 2)
		return;
	fprintf(f, "Limits differ between records:");
	for (k = 0; k < n; k++) {
		limits_batches(r, first, seen[k], batches, sizeof(batches));
		fprintf(f, "%s %s (batch%s %s)", k ? ";" : "", seen[k],
			strchr(batches, ',') ? "es" : "", batches);
	}
	fprintf(f, "%s.\n\n", more ? "; and others" : "");
}
