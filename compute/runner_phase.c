/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decode phase timing (runner_opts.phase_times): an event is recorded on the compute stream at
 * the start of each decode step, after the embedding, after each of a layer's six phases and
 * after the head; once the step has synchronised, the time between consecutive events is added
 * to the phase that ended at the later one. The phases cover the compute stream's work from the
 * step's first launch to the statistics read-back without gaps, so their sum is the step's
 * device span; the rest of the step's wall time is the host's (uploads, statistics, the host
 * store's calls) and sampling.
 */
#include <errno.h>
#include <stdlib.h>

#include "runner_internal.h"

static const char *const phase_names[RUNNER_PHASE_N] = {
    [RUNNER_PHASE_EMBED] = "embed",   [RUNNER_PHASE_QKVF] = "qkvf",
    [RUNNER_PHASE_SELECT] = "select", [RUNNER_PHASE_RECALL] = "recall",
    [RUNNER_PHASE_UNITS] = "units",   [RUNNER_PHASE_STORE_KV] = "store_kv",
    [RUNNER_PHASE_ATTEND] = "attend", [RUNNER_PHASE_FFN] = "ffn",
    [RUNNER_PHASE_HEAD] = "head",
};

#define LAYER_PHASES (RUNNER_PHASE_FFN - RUNNER_PHASE_QKVF + 1)

static const char *const store_call_names[RUNNER_STORE_N] = {
    [RUNNER_STORE_ALLOC] = "alloc",	  [RUNNER_STORE_COMMIT] = "commit",
    [RUNNER_STORE_EPOCH] = "epoch",	  [RUNNER_STORE_HEALTH] = "health",
    [RUNNER_STORE_FORECAST] = "forecast",
};

const char *runner_store_call_name(enum runner_store_call c)
{
	return (unsigned)c < RUNNER_STORE_N ? store_call_names[c] : "?";
}

const char *runner_phase_name(enum runner_phase p)
{
	return (unsigned)p < RUNNER_PHASE_N ? phase_names[p] : "?";
}

int runner_phase_open(struct runner *r)
{
	const struct kb_ops *k = r->kb->ops;
	int rc;

	if (!r->o.phase_times)
		return 0;
	r->ph_n = 3 + LAYER_PHASES * r->L;
	r->ph_ev = calloc(r->ph_n, sizeof(*r->ph_ev));
	if (!r->ph_ev)
		return runner_fail(r, -ENOMEM, "phase timing: host allocation failed"), -ENOMEM;
	for (uint32_t i = 0; i < r->ph_n; i++)
		if ((rc = k->event_new(r->kb, &r->ph_ev[i])))
			return runner_fail(r, rc, "phase timing: event creation failed"), rc;
	return 0;
}

void runner_phase_close(struct runner *r)
{
	for (uint32_t i = 0; r->ph_ev && i < r->ph_n; i++)
		if (r->ph_ev[i])
			r->kb->ops->event_free(r->kb, r->ph_ev[i]);
	free(r->ph_ev);
	r->ph_ev = NULL;
}

static int mark(struct runner *r, uint32_t i)
{
	return r->ph_ev ? r->kb->ops->event_record(r->kb, r->ph_ev[i], KB_STREAM_COMPUTE) : 0;
}

int runner_phase_step_start(struct runner *r)
{
	return mark(r, 0);
}

int runner_phase_end(struct runner *r, uint32_t l, enum runner_phase p)
{
	if (p == RUNNER_PHASE_EMBED)
		return mark(r, 1);
	if (p == RUNNER_PHASE_HEAD)
		return mark(r, r->ph_n - 1);
	return mark(r, 2 + l * LAYER_PHASES + (uint32_t)(p - RUNNER_PHASE_QKVF));
}

/* The phase whose end is event i (i >= 1). */
static enum runner_phase phase_of(const struct runner *r, uint32_t i)
{
	if (i == 1)
		return RUNNER_PHASE_EMBED;
	if (i == r->ph_n - 1)
		return RUNNER_PHASE_HEAD;
	return (enum runner_phase)(RUNNER_PHASE_QKVF + (i - 2) % LAYER_PHASES);
}

int runner_phase_collect(struct runner *r)
{
	const struct kb_ops *k = r->kb->ops;
	int rc;

	if (!r->ph_ev)
		return 0;
	if ((rc = k->sync(r->kb, KB_STREAM_COMPUTE)))
		return rc;
	for (uint32_t i = 1; i < r->ph_n; i++) {
		float ms = 0.0f;
		if ((rc = k->event_elapsed(r->kb, r->ph_ev[i - 1], r->ph_ev[i], &ms)))
			return runner_fail(r, rc, "phase timing: reading event %u failed", i), rc;
		r->st.phase_ms[phase_of(r, i)] += ms > 0.0f ? ms : 0.0f;
	}
	r->st.phase_steps++;
	return 0;
}
