/* SPDX-License-Identifier: Apache-2.0 */
/* sparda-compute's Prometheus endpoint: per-mode snapshots of the runner's statistics. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmetrics.h"
#include "httpd.h"

struct cmetrics {
	struct httpd *http;
	pthread_mutex_t lock;
	uint32_t n_layers;
	bool seen[RUNNER_MODE_COUNT];
	struct runner_stats st[RUNNER_MODE_COUNT];
	struct runner_layer_stats *layers; /* [RUNNER_MODE_COUNT * n_layers] */
};

void cmetrics_update(struct cmetrics *m, enum runner_mode mode, const struct runner_stats *st)
{
	if (!m || (unsigned)mode >= RUNNER_MODE_COUNT || st->n_layers != m->n_layers)
		return;
	pthread_mutex_lock(&m->lock);
	m->st[mode] = *st;
	m->st[mode].layer = m->layers + (size_t)mode * m->n_layers;
	memcpy(m->st[mode].layer, st->layer, sizeof(*st->layer) * m->n_layers);
	m->seen[mode] = true;
	pthread_mutex_unlock(&m->lock);
}

static void counter(FILE *o, const char *name, const char *help)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
}

static void render_totals(struct cmetrics *m, FILE *o)
{
	counter(o, "sparda_compute_decode_steps_total", "decode steps of the current generation");
	counter(o, "sparda_compute_decode_tokens_total", "tokens decoded");
	counter(o, "sparda_compute_prefill_tokens_total", "prompt tokens prefilled");
	counter(o, "sparda_compute_bytes_total", "KV bytes moved between host store and device");
	for (int i = 0; i < RUNNER_MODE_COUNT; i++) {
		const struct runner_stats *s = &m->st[i];
		const char *mode = runner_mode_name((enum runner_mode)i);
		if (!m->seen[i])
			continue;
		fprintf(o, "sparda_compute_decode_steps_total{mode=\"%s\"} %llu\n", mode,
			(unsigned long long)s->decode_steps);
		fprintf(o, "sparda_compute_decode_tokens_total{mode=\"%s\"} %llu\n", mode,
			(unsigned long long)s->decode_tokens);
		fprintf(o, "sparda_compute_prefill_tokens_total{mode=\"%s\"} %llu\n", mode,
			(unsigned long long)s->prefill_tokens);
		fprintf(o, "sparda_compute_bytes_total{mode=\"%s\",direction=\"h2d\"} %llu\n", mode,
			(unsigned long long)s->bytes_h2d);
		fprintf(o, "sparda_compute_bytes_total{mode=\"%s\",direction=\"d2h\"} %llu\n", mode,
			(unsigned long long)s->bytes_d2h);
	}
}

#define LAYER_FIELD(field) offsetof(struct runner_layer_stats, field)
static const struct {
	const char *name, *help;
	size_t off;
	bool seconds; /* a double in milliseconds, exported in seconds */
} layer_metrics[] = {
	{ "sparda_compute_layer_selected_units_total", "selected (sequence, head, block) units",
	  LAYER_FIELD(selected), false },
	{ "sparda_compute_layer_cached_units_total", "selected units already in the device cache",
	  LAYER_FIELD(hits), false },
	{ "sparda_compute_layer_fetched_units_total", "units gathered from the host store",
	  LAYER_FIELD(loads), false },
	{ "sparda_compute_layer_late_units_total", "units whose gather finished after attention "
	  "wanted them", LAYER_FIELD(late_units), false },
	{ "sparda_compute_layer_late_seconds_total", "time attention waited for the gather",
	  LAYER_FIELD(late_ms), true },
	{ "sparda_compute_layer_fetch_seconds_total", "device time of diff, resolve and gather",
	  LAYER_FIELD(fetch_ms), true },
	{ "sparda_compute_layer_recall_blocks_total", "sampled steps: non-forced blocks the "
	  "original selector chose", LAYER_FIELD(recall_true), false },
	{ "sparda_compute_layer_recall_hits_total", "sampled steps: of those, blocks the Forecast "
	  "had selected", LAYER_FIELD(recall_hits), false },
};

static void gauge(FILE *o, const char *name, const char *help)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* Recall gauges of the modes that measured it (Forecast modes with recall sampling on). */
static void render_recall(struct cmetrics *m, FILE *o)
{
	counter(o, "sparda_compute_recall_samples_total", "decode steps whose Forecast recall was "
		"measured");
	for (int i = 0; i < RUNNER_MODE_COUNT; i++)
		if (m->seen[i])
			fprintf(o, "sparda_compute_recall_samples_total{mode=\"%s\"} %llu\n",
				runner_mode_name((enum runner_mode)i),
				(unsigned long long)m->st[i].recall_samples);
	gauge(o, "sparda_compute_forecast_recall", "share of the original selector's non-forced "
	      "blocks that the Forecast selected, all layers");
	gauge(o, "sparda_compute_layer_forecast_recall", "the same per layer");
	for (int i = 0; i < RUNNER_MODE_COUNT; i++) {
		const char *mode = runner_mode_name((enum runner_mode)i);
		double v = m->seen[i] ? runner_recall_value(&m->st[i], -1) : -1.0;
		if (v < 0)
			continue;
		fprintf(o, "sparda_compute_forecast_recall{mode=\"%s\"} %.6f\n", mode, v);
		for (uint32_t l = 0; l < m->n_layers; l++) {
			double lv = runner_recall_value(&m->st[i], (int)l);
			if (lv >= 0)
				fprintf(o, "sparda_compute_layer_forecast_recall{mode=\"%s\","
					"layer=\"%u\"} %.6f\n", mode, l, lv);
		}
	}
	gauge(o, "sparda_compute_gpu_mem_peak_bytes", "device memory in use at its peak (CUDA)");
	for (int i = 0; i < RUNNER_MODE_COUNT; i++)
		if (m->seen[i])
			fprintf(o, "sparda_compute_gpu_mem_peak_bytes{mode=\"%s\"} %llu\n",
				runner_mode_name((enum runner_mode)i),
				(unsigned long long)m->st[i].gpu_mem_peak_bytes);
}

static void render_layers(struct cmetrics *m, FILE *o)
{
	for (size_t k = 0; k < sizeof(layer_metrics) / sizeof(layer_metrics[0]); k++) {
		counter(o, layer_metrics[k].name, layer_metrics[k].help);
		for (int i = 0; i < RUNNER_MODE_COUNT; i++) {
			if (!m->seen[i])
				continue;
			for (uint32_t l = 0; l < m->n_layers; l++) {
				const char *p = (const char *)&m->st[i].layer[l] + layer_metrics[k].off;
				fprintf(o, "%s{mode=\"%s\",layer=\"%u\"} ", layer_metrics[k].name,
					runner_mode_name((enum runner_mode)i), l);
				if (layer_metrics[k].seconds)
					fprintf(o, "%.9f\n", *(const double *)p / 1e3);
				else
					fprintf(o, "%llu\n", (unsigned long long)*(const uint64_t *)p);
			}
		}
	}
}

void cmetrics_render(struct cmetrics *m, FILE *out)
{
	pthread_mutex_lock(&m->lock);
	render_totals(m, out);
	render_layers(m, out);
	render_recall(m, out);
	pthread_mutex_unlock(&m->lock);
}

static void render(void *ctx, FILE *out)
{
	cmetrics_render(ctx, out);
}

static const struct httpd_ops cmetrics_http = { .metrics = render };

int cmetrics_open(uint16_t port, uint32_t n_layers, struct cmetrics **out, char *err,
		  size_t err_len)
{
	struct cmetrics *m = calloc(1, sizeof(*m));
	int r;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->n_layers = n_layers;
	m->layers = calloc((size_t)RUNNER_MODE_COUNT * n_layers, sizeof(*m->layers));
	if (!m->layers) {
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	r = httpd_open(port, 16, &cmetrics_http, m, &m->http);
	if (r) {
		if (r == -EADDRINUSE)
			snprintf(err, err_len, "key metrics-port: port %u: cannot listen (in use?)",
				 (unsigned)port);
		pthread_mutex_destroy(&m->lock);
		free(m->layers);
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void cmetrics_free(struct cmetrics *m)
{
	if (!m)
		return;
	httpd_free(m->http);
	pthread_mutex_destroy(&m->lock);
	free(m->layers);
	free(m);
}
