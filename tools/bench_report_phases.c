/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The decode phases of `sparda bench report`: for records whose compute ran with --phase-times
 * (`bench sweep --compute-arg=--phase-times`), the device time per decode step of each phase
 * on the compute stream, their sum and the step's host time, per model, context, batch and mode.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "bench_report.h"

/* compute's phase names, in its order (runner_phase_name), then the sum and the host's rest. */
static const char *const phase_keys[] = {"embed", "qkvf", "select", "recall", "units", "store_kv",
					 "attend", "ffn", "head", "span", "host"};
#define N_PHASE_KEYS (sizeof(phase_keys) / sizeof(phase_keys[0]))

/* The row's decode_phase_ms object, or NULL. */
static json_object *phases_of(const struct report_row *w)
{
	json_object *p = NULL;

	if (!w->ok || !w->result || !json_object_object_get_ex(w->result, "decode_phase_ms", &p) ||
	    !json_object_is_type(p, json_type_object))
		return NULL;
	return p;
}

void report_md_phases(FILE *f, const struct report *r, json_object *arr)
{
	bool head = false;

	for (size_t i = 0; i < r->n; i++) {
		const struct report_row *w = &r->rows[i];
		json_object *p = phases_of(w), *o, *v;
		char mode[48];

		if (!p)
			continue;
		if (!head) {
			fprintf(
			    f, "\n## Where the decode step goes (`--phase-times` records)\n\n"
			       "Device ms per decode step of each phase on the compute stream "
			       "(`select` includes waiting for the layer's fetch), their sum "
			       "(span) and the rest of the step's wall time (host), from "
			       "compute's `decode_phase_ms`. The events that time them add a "
			       "little work to every layer.\n\n| model | context | batch | mode |");
			for (size_t k = 0; k < N_PHASE_KEYS; k++)
				fprintf(f, " %s |", phase_keys[k]);
			fprintf(f, " step |\n|---|---|---|---|");
			for (size_t k = 0; k <= N_PHASE_KEYS; k++)
				fprintf(f, "---|");
			fprintf(f, "\n");
			head = true;
		}
		snprintf(mode, sizeof(mode), "%s%s", w->mode, report_inproc(w) ? " (inproc)" : "");
		fprintf(f, "| %s | %d | %d | %s |", w->model, w->context, w->batch, mode);
		o = json_object_new_object();
		json_object_object_add(o, "model", json_object_new_string(w->model));
		json_object_object_add(o, "context", json_object_new_int(w->context));
		json_object_object_add(o, "batch", json_object_new_int(w->batch));
		json_object_object_add(o, "mode", json_object_new_string(w->mode));
		json_object_object_add(o, "store", json_object_new_string(w->store));
		for (size_t k = 0; k < N_PHASE_KEYS; k++) {
			if (json_object_object_get_ex(p, phase_keys[k], &v)) {
				fprintf(f, " %.3f |", json_object_get_double(v));
				json_object_object_add(
				    o, phase_keys[k],
				    json_object_new_double(json_object_get_double(v)));
			} else {
				fprintf(f, " - |");
				json_object_object_add(o, phase_keys[k], NULL);
			}
		}
		fprintf(f, " %.3f |\n", w->step_ms);
		json_object_object_add(o, "step_ms", json_object_new_double(w->step_ms));
		json_object_array_add(arr, o);
	}
}
