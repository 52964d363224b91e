/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus text rendering for the daemon's /metrics endpoint (common/httpd). Rendering takes a
 * snapshot under the server's and each tenant's locks; nothing here blocks the hot path for longer
 * than a histogram copy.
 */
#include "metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "mstats.h"
#include "server.h"
#include "spill.h"
#include "tenant.h"
#include "timeutil.h"
#include "wire.h"

struct metrics {
	struct httpd *http;
	struct server *sv;
	struct tenant_table *tenants;
	struct mstats *stats;
};

/* Prometheus bucket bounds in nanoseconds (le labels are written in seconds). */
static const uint64_t bounds_ns[] = {
    1000,   2000,    5000,    10000,   20000,	 50000,	   100000,    200000,
    500000, 1000000, 2000000, 5000000, 10000000, 50000000, 100000000, 1000000000,
};

/*
 * Upper edge of histogram bucket b; mirrors common/timeutil.c (16 sub-buckets per power of
 * two). A fine bucket counts toward a Prometheus bound only when all of it lies below, so a
 * sample within ~6% under a bound may show in the next one: latencies read high, never low.
 */
static uint64_t fine_upper(unsigned b)
{
	unsigned e;

	if (b < 16)
		return b;
	e = b / 16 + 3;
	if (e >= 63)
		return UINT64_MAX;
	return ((16 + (uint64_t)(b % 16) + 1) << (e - 4)) - 1;
}

static void render_hist(FILE *out, const char *path, const char *op, const struct hist *h)
{
	unsigned b = 0;
	uint64_t cum = 0;

	for (size_t i = 0; i < sizeof(bounds_ns) / sizeof(bounds_ns[0]); i++) {
		while (b < HIST_BUCKETS && fine_upper(b) <= bounds_ns[i])
			cum += h->bucket[b++];
		fprintf(out,
			"sparda_memsvc_request_seconds_bucket{path=\"%s\",op=\"%s\",le=\"%g\"} "
			"%llu\n",
			path, op, (double)bounds_ns[i] / 1e9, (unsigned long long)cum);
	}
	fprintf(out,
		"sparda_memsvc_request_seconds_bucket{path=\"%s\",op=\"%s\",le=\"+Inf\"} %llu\n",
		path, op, (unsigned long long)h->count);
	fprintf(out, "sparda_memsvc_request_seconds_sum{path=\"%s\",op=\"%s\"} %.9f\n", path, op,
		(double)h->sum_ns / 1e9);
	fprintf(out, "sparda_memsvc_request_seconds_count{path=\"%s\",op=\"%s\"} %llu\n", path, op,
		(unsigned long long)h->count);
}

static void gauge(FILE *out, const char *name, const char *help, uint64_t v)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
		(unsigned long long)v);
}

static void render_server(FILE *out, struct server *sv)
{
	struct server_snapshot s;

	server_snapshot(sv, &s);
	gauge(out, "sparda_memsvc_ram_budget_bytes", "RAM budget for all arenas", s.budget_bytes);
	gauge(out, "sparda_memsvc_arena_bytes", "bytes of arenas handed out", s.arena_bytes);
	gauge(out, "sparda_memsvc_arena_used_bytes", "bytes of slots in use or deferred",
	      s.slots_total ? s.arena_bytes / s.slots_total * (s.slots_used + s.slots_deferred)
			    : 0);
	gauge(out, "sparda_memsvc_sessions", "attached sessions", s.sessions);
	gauge(out, "sparda_memsvc_pending_attaches",
	      "connections without a session yet (no hello, or its arena being made)",
	      s.pending_attaches);
	gauge(out, "sparda_memsvc_attaching_bytes",
	      "bytes of arenas being made for admitted attaches (counted against the budget)",
	      s.attaching_bytes);
	gauge(out, "sparda_memsvc_seqs_open", "open sequences", s.seqs_open);
	gauge(out, "sparda_memsvc_draining", "1 while draining", s.draining);
	fprintf(out, "# HELP sparda_memsvc_slots arena slots by state\n"
		     "# TYPE sparda_memsvc_slots gauge\n");
	fprintf(out, "sparda_memsvc_slots{state=\"free\"} %llu\n",
		(unsigned long long)s.slots_free);
	fprintf(out, "sparda_memsvc_slots{state=\"used\"} %llu\n",
		(unsigned long long)s.slots_used);
	fprintf(out, "sparda_memsvc_slots{state=\"deferred\"} %llu\n",
		(unsigned long long)s.slots_deferred);
	fprintf(out,
		"# HELP sparda_memsvc_units units by state\n# TYPE sparda_memsvc_units gauge\n");
	fprintf(out, "sparda_memsvc_units{state=\"allocated\"} %llu\n",
		(unsigned long long)s.units_allocated);
	fprintf(out, "sparda_memsvc_units{state=\"resident\"} %llu\n",
		(unsigned long long)s.units_resident);
	fprintf(out, "sparda_memsvc_units{state=\"spilled\"} %llu\n",
		(unsigned long long)s.units_spilled);
	fprintf(out, "sparda_memsvc_units{state=\"loading\"} %llu\n",
		(unsigned long long)s.units_loading);
	fprintf(out,
		"# HELP sparda_memsvc_attaches_total attach attempts by result\n"
		"# TYPE sparda_memsvc_attaches_total counter\n"
		"sparda_memsvc_attaches_total{result=\"ok\"} %llu\n"
		"sparda_memsvc_attaches_total{result=\"refused\"} %llu\n",
		(unsigned long long)s.attaches_ok, (unsigned long long)s.attaches_refused);
}

static void counter(FILE *out, const char *name, const char *help, const char *labels, uint64_t v)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s counter\n%s%s %llu\n", name, help, name, name, labels,
		(unsigned long long)v);
}

static void render_hist_ns(FILE *out, const char *name, const struct hist *h)
{
	unsigned b = 0;
	uint64_t cum = 0;

	fprintf(out, "# TYPE %s histogram\n", name);
	for (size_t i = 0; i < sizeof(bounds_ns) / sizeof(bounds_ns[0]); i++) {
		while (b < HIST_BUCKETS && fine_upper(b) <= bounds_ns[i])
			cum += h->bucket[b++];
		fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds_ns[i] / 1e9,
			(unsigned long long)cum);
	}
	fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9f\n%s_count %llu\n", name,
		(unsigned long long)h->count, name, (double)h->sum_ns / 1e9, name,
		(unsigned long long)h->count);
}

/* The NVMe tier's restore outcomes, tier state changes and I/O counts. */
static void render_spill_counters(FILE *out, const struct spill_stats *t)
{
	counter(out, "sparda_memsvc_restore_misses_total",
		"restores that failed verification or I/O (answered as misses)", "",
		t->restore_misses);
	counter(out, "sparda_memsvc_restore_late_total",
		"restored units answered after the client epoch passed their step", "",
		t->answers_late);
	counter(out, "sparda_memsvc_restore_starved_total",
		"restores answered -ENOSPC: no slot could be had (RAM-only tier, or every slot "
		"leased by unfinished steps)",
		"", t->restores_starved);
	counter(out, "sparda_memsvc_spill_degraded_entries_total", "times a tier went RAM-only", "",
		t->degraded_entries);
	counter(out, "sparda_memsvc_spill_recoveries_total", "times a tier recovered", "",
		t->recoveries);
	counter(out, "sparda_memsvc_restore_direct_total",
		"restores read straight into their arena slot (spill-direct-restore)", "",
		t->units_direct);
	counter(out, "sparda_memsvc_spill_ios_total", "spill I/O operations", "{op=\"write\"}",
		t->write_ios);
	fprintf(out, "sparda_memsvc_spill_ios_total{op=\"read\"} %llu\n",
		(unsigned long long)t->read_ios);
}

/* The NVMe tier: units and bytes per tier and direction, failures, degraded state, backend. */
static void render_spill(FILE *out, struct server *sv)
{
	struct spill_stats *t = malloc(sizeof(*t));
	char lab[64];

	if (!t || !server_spill_stats(sv, t)) {
		free(t);
		return;
	}
	snprintf(lab, sizeof(lab), "{backend=\"%s\"}", t->aio);
	fprintf(out,
		"# HELP sparda_memsvc_spill_aio_backend spill I/O backend in use\n"
		"# TYPE sparda_memsvc_spill_aio_backend gauge\n"
		"sparda_memsvc_spill_aio_backend%s 1\n",
		lab);
	gauge(out, "sparda_memsvc_spill_sessions", "sessions with spill files", t->sessions);
	gauge(out, "sparda_memsvc_spill_degraded", "spill tiers RAM-only after ENOSPC now",
	      t->degraded_now);
	gauge(out, "sparda_memsvc_spill_arena_registered",
	      "tiered sessions whose arena is registered as io_uring fixed buffers now",
	      t->arena_registered);
	gauge(out, "sparda_memsvc_spill_extents_used", "spill extents holding a unit",
	      t->extents_used);
	gauge(out, "sparda_memsvc_spill_bytes_used", "bytes of spill extents in use",
	      t->bytes_used);
	gauge(out, "sparda_memsvc_spill_bytes_reserved", "spill file bytes reserved by sessions",
	      t->disk_bytes_reserved);
	fprintf(out,
		"# HELP sparda_memsvc_tier_units_total units moved between tiers\n"
		"# TYPE sparda_memsvc_tier_units_total counter\n"
		"sparda_memsvc_tier_units_total{direction=\"spill\"} %llu\n"
		"sparda_memsvc_tier_units_total{direction=\"restore\"} %llu\n"
		"sparda_memsvc_tier_units_total{direction=\"drop\"} %llu\n",
		(unsigned long long)t->units_spilled, (unsigned long long)t->units_restored,
		(unsigned long long)t->units_dropped);
	fprintf(out,
		"# HELP sparda_memsvc_tier_bytes_total bytes moved between tiers\n"
		"# TYPE sparda_memsvc_tier_bytes_total counter\n"
		"sparda_memsvc_tier_bytes_total{direction=\"spill\"} %llu\n"
		"sparda_memsvc_tier_bytes_total{direction=\"restore\"} %llu\n",
		(unsigned long long)t->bytes_spilled, (unsigned long long)t->bytes_restored);
	fprintf(out,
		"# HELP sparda_memsvc_spill_errors_total spill/restore failures by kind\n"
		"# TYPE sparda_memsvc_spill_errors_total counter\n"
		"sparda_memsvc_spill_errors_total{kind=\"crc\"} %llu\n"
		"sparda_memsvc_spill_errors_total{kind=\"identity\"} %llu\n"
		"sparda_memsvc_spill_errors_total{kind=\"io\"} %llu\n"
		"sparda_memsvc_spill_errors_total{kind=\"enospc\"} %llu\n"
		"sparda_memsvc_spill_errors_total{kind=\"write_failed\"} %llu\n",
		(unsigned long long)t->crc_failures, (unsigned long long)t->id_mismatches,
		(unsigned long long)t->io_errors, (unsigned long long)t->enospc_events,
		(unsigned long long)t->spill_failures);
	render_spill_counters(out, t);
	fprintf(out, "# HELP sparda_memsvc_restore_seconds ring Forecast of a spilled unit to "
		     "its answer\n");
	render_hist_ns(out, "sparda_memsvc_restore_seconds", &t->restore_ns);
	fprintf(out, "# HELP sparda_memsvc_spill_batch_seconds one eviction write batch\n");
	render_hist_ns(out, "sparda_memsvc_spill_batch_seconds", &t->spill_ns);
	free(t);
}

/* Tenants removed by a reload are listed while they still hold sessions. */
static void render_tenants(FILE *out, struct tenant_table *t)
{
	size_t n_total = tenant_count(t), active = 0;
	uint64_t ok, failed;

	for (size_t i = 0; i < n_total; i++)
		active += !tenant_removed(tenant_at(t, i));
	gauge(out, "sparda_memsvc_tenants", "configured tenants", active);
	tenant_reload_counts(t, &ok, &failed);
	counter(out, "sparda_memsvc_tenant_reloads_total", "tenants file reloads applied", "", ok);
	counter(out, "sparda_memsvc_tenant_reload_failures_total",
		"tenants file reloads refused (bad file; the old table stayed)", "", failed);
	fprintf(out, "# HELP sparda_memsvc_tenant_usage per-tenant use and limits (0 = none)\n"
		     "# TYPE sparda_memsvc_tenant_usage gauge\n");
	for (size_t i = 0; i < n_total; i++) {
		struct tenant *tn = tenant_at(t, i);
		struct tenant_usage u;
		const char *n = tenant_name(tn);
		tenant_get_usage(tn, &u);
		if (u.removed && !u.sessions)
			continue;
		fprintf(
		    out,
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"bytes\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"quota_bytes\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"sessions\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"seqs\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"inflight\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"rejected\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"disk_bytes\"} %llu\n"
		    "sparda_memsvc_tenant_usage{tenant=\"%s\",what=\"disk_quota_bytes\"} %llu\n",
		    n, (unsigned long long)u.bytes, n, (unsigned long long)u.quota_bytes, n,
		    (unsigned long long)u.sessions, n, (unsigned long long)u.seqs, n,
		    (unsigned long long)u.inflight, n, (unsigned long long)u.rejected, n,
		    (unsigned long long)u.disk_bytes, n, (unsigned long long)u.disk_quota);
	}
}

static void render_requests(FILE *out, struct mstats *st)
{
	struct hist *h = malloc(sizeof(*h));

	fprintf(out, "# HELP sparda_memsvc_requests_total requests by path and op\n"
		     "# TYPE sparda_memsvc_requests_total counter\n");
	for (int p = 0; p < MSTATS_PATH_MAX; p++)
		for (int k = 1; k < WIRE_KIND_MAX; k++)
			if (mstats_requests(st, p, k))
				fprintf(
				    out,
				    "sparda_memsvc_requests_total{path=\"%s\",op=\"%s\"} %llu\n",
				    mstats_path_name(p), wire_kind_name(k),
				    (unsigned long long)mstats_requests(st, p, k));
	fprintf(out, "# HELP sparda_memsvc_errors_total errors by kind\n"
		     "# TYPE sparda_memsvc_errors_total counter\n");
	for (int e = 0; e < MSTATS_ERR_MAX; e++)
		fprintf(out, "sparda_memsvc_errors_total{kind=\"%s\"} %llu\n", mstats_err_name(e),
			(unsigned long long)mstats_errors(st, e));
	if (!h)
		return;
	fprintf(out, "# HELP sparda_memsvc_request_seconds time to answer a request in memsvc\n"
		     "# TYPE sparda_memsvc_request_seconds histogram\n");
	for (int p = 0; p < MSTATS_PATH_MAX; p++) {
		for (int k = 1; k < WIRE_KIND_MAX; k++) {
			mstats_hist(st, p, k, h);
			if (h->count)
				render_hist(out, mstats_path_name(p), wire_kind_name(k), h);
		}
	}
	free(h);
}

void metrics_render(struct server *sv, struct tenant_table *tenants, struct mstats *stats,
		    FILE *out)
{
	render_server(out, sv);
	render_spill(out, sv);
	render_tenants(out, tenants);
	render_requests(out, stats);
}

static void render(void *ctx, FILE *out)
{
	struct metrics *m = ctx;
	metrics_render(m->sv, m->tenants, m->stats, out);
}

static bool healthy(void *ctx, const char **why)
{
	struct metrics *m = ctx;
	struct server_snapshot s;

	server_snapshot(m->sv, &s);
	*why = "draining\n";
	return !s.draining;
}

static const struct httpd_ops metrics_http = {.metrics = render, .healthy = healthy};

int metrics_open(uint16_t port, struct server *sv, struct tenant_table *tenants,
		 struct mstats *stats, struct metrics **out, char *err, size_t err_len)
{
	struct metrics *m = calloc(1, sizeof(*m));
	int r;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->sv = sv;
	m->tenants = tenants;
	m->stats = stats;
	r = httpd_open(port, 64, &metrics_http, m, &m->http);
	if (r) {
		if (r == -EADDRINUSE)
			snprintf(err, err_len, "metrics-port %u: cannot listen (in use?)",
				 (unsigned)port);
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	httpd_free(m->http);
	free(m);
}
