/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How long a configuration of `sparda bench sweep` may take, for --budget-s: from the record of
 * the same model and context at the largest batch up to its own, split into the time its modes
 * spent in prefill and decode (which grows with the batch and the number of modes) and the rest of
 * its processes' wall time (model load, daemon start, attach: taken as fixed), with a margin.
 * Without such a record, the configuration's --timeout-s, the most it can take.
 */
#include <dirent.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cmds.h"
#include "bench_sweep.h"

/* Estimates are this much larger than the records say, plus this many seconds. */
#define EST_MARGIN 1.5
#define EST_SLACK_S 10.0

/* Prefill + decode seconds of a record's modes that ran ("ok" with a result); their count. */
static double modes_time(json_object *rec, int *n)
{
	json_object *modes;
	double s = 0.0;

	*n = 0;
	if (!json_object_object_get_ex(rec, "modes", &modes))
		return 0.0;
	json_object_object_foreach(modes, name, m)
	{
		json_object *res, *v;

		(void)name;
		if (!json_object_object_get_ex(m, "result", &res) || !res)
			continue;
		if (json_object_object_get_ex(res, "prefill_s", &v))
			s += json_object_get_double(v);
		if (json_object_object_get_ex(res, "decode_s", &v))
			s += json_object_get_double(v);
		(*n)++;
	}
	return s;
}

/* Wall seconds of a record's compute processes. */
static double runs_wall(json_object *rec)
{
	json_object *runs, *v;
	double s = 0.0;

	if (!json_object_object_get_ex(rec, "runs", &runs))
		return 0.0;
	for (size_t i = 0; i < json_object_array_length(runs); i++)
		if (json_object_object_get_ex(json_object_array_get_idx(runs, i), "wall_s", &v))
			s += json_object_get_double(v);
	return s;
}

/* The estimate from the record <stem>_c<ctx>_b<batch>.json (and its same-process in-process
 * record), or -1 when it says nothing usable. */
static double from_record(const struct sweep_opts *o, const char *stem, unsigned ctx,
			  unsigned batch, const struct sweep_cfg *c)
{
	char path[PATH_MAX];
	json_object *rec, *in, *same;
	double wall, work, fixed;
	int n, ni = 0;

	snprintf(path, sizeof(path), "%s/%s_c%u_b%u.json", o->out, stem, ctx, batch);
	if (!(rec = json_object_from_file(path)))
		return -1.0;
	wall = runs_wall(rec);
	work = modes_time(rec, &n);
	json_object_put(rec);
	snprintf(path, sizeof(path), "%s/%s_c%u_b%u_inproc.json", o->out, stem, ctx, batch);
	if ((in = json_object_from_file(path))) { /* its modes ran in the same process: in wall */
		if (json_object_object_get_ex(in, "same_process", &same) &&
		    json_object_get_boolean(same))
			work += modes_time(in, &ni);
		json_object_put(in);
	}
	n += ni;
	if (n == 0 || wall <= 0.0)
		return -1.0;
	fixed = wall > work ? wall - work : 0.0;
	return fixed + work / n * (double)(c->n_modes + c->n_inproc) * (double)c->batch / batch;
}

double sweep_estimate_s(const struct sweep_opts *o, const char *stem, const struct sweep_cfg *c,
			char *from, size_t len)
{
	char prefix[192];
	size_t pl;
	double best = -1.0;
	unsigned best_b = 0;
	DIR *d;
	struct dirent *e;

	from[0] = 0;
	pl = (size_t)snprintf(prefix, sizeof(prefix), "%s_c%u_b", stem, c->context);
	if ((d = opendir(o->out))) {
		while ((e = readdir(d))) {
			char *end;
			unsigned long b;
			double est;

			if (strncmp(e->d_name, prefix, pl))
				continue;
			b = strtoul(e->d_name + pl, &end, 10);
			if (end == e->d_name + pl || strcmp(end, ".json") || !b || b > c->batch)
				continue;
			/* the record nearest below: the least extrapolated */
			if (b <= best_b ||
			    (est = from_record(o, stem, c->context, (unsigned)b, c)) < 0.0)
				continue;
			best = est;
			best_b = (unsigned)b;
			snprintf(from, len, "%.*s", (int)(end - e->d_name), e->d_name);
		}
		closedir(d);
	}
	if (best < 0.0) {
		from[0] = 0;
		return o->timeout_s;
	}
	best = best * EST_MARGIN + EST_SLACK_S;
	return o->timeout_s > 0 && best > o->timeout_s ? o->timeout_s : best;
}
