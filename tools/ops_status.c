/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda status`, `sparda stats` and `sparda config`: look at a running sparda-memsvc (pid
 * file, /proc, a ping and the stats reply of a short status session) and print the effective
 * config of either process (the config tables live in the binaries: --dump-config).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "ops_cmd.h"
#include "sparda.h"
#include "timeutil.h"

/* What one look at a runtime dir found. */
struct ops_query {
	char dir[PATH_MAX];
	pid_t pid;	 /* from the pid file; 0 when none */
	bool stale;	 /* a pid file that names no running sparda-memsvc */
	bool running;	 /* the pid is a live sparda-memsvc or the attach socket answers */
	int rc;		 /* 0, or why the status session failed */
	double uptime_s; /* < 0: unknown */
	double ping_ms;
	struct memclient_stat *st;
	uint32_t n;
	char spill_dirs[1024]; /* the daemon's spill-dirs setting; "" when unknown */
	uint64_t self_id;      /* the status session's own id */
};

struct query_args {
	const char *dir;
	int timeout_ms;
	bool json;
};

static int query_parse(const char *cmd, int argc, char **argv, struct query_args *a,
		       const char *usage)
{
	a->timeout_ms = 5000;
	return ops_common_args(argc, argv, cmd, usage, &a->dir, &a->timeout_ms, &a->json);
}

static uint64_t stat_or0(const struct ops_query *q, const char *name)
{
	uint64_t v = 0;

	memclient_stat_find(q->st, q->n, name, &v);
	return v;
}

/* Fill q: pid file, /proc, then ping and stats over a status session. */
static void query_run(struct ops_query *q, const struct query_args *a)
{
	struct memclient *c = NULL;
	uint64_t t0;
	int rc = ops_runtime_dir(a->dir, q->dir, sizeof(q->dir));

	q->uptime_s = -1;
	q->rc = rc;
	if (rc)
		return;
	rc = ops_pid_read(q->dir, &q->pid);
	if (rc != -ENOENT) {
		q->running = !rc && ops_pid_is_memsvc(q->pid);
		q->stale = !q->running;
	}
	if (!q->running && !(q->running = ops_socket_live(q->dir)))
		return;
	if (q->pid && !q->stale)
		q->uptime_s = ops_uptime_s(q->pid);
	if ((q->rc = ops_attach(q->dir, a->timeout_ms, &c)))
		return;
	t0 = time_now_ns();
	q->rc = memclient_ping(c);
	q->ping_ms = (double)(time_now_ns() - t0) / 1e6;
	q->self_id = memclient_session_id(c);
	if (!q->rc)
		q->rc = memclient_stats(c, &q->st, &q->n);
	memclient_close(c);
	if (!q->rc && q->pid && !q->stale && stat_or0(q, "daemon.spill.enabled") &&
	    ops_daemon_config(q->pid, "spill-dirs", q->spill_dirs, sizeof(q->spill_dirs)))
		q->spill_dirs[0] = '\0';
}

static json_object *stats_json(const struct ops_query *q)
{
	json_object *o = json_object_new_object();

	for (uint32_t i = 0; i < q->n; i++)
		json_object_object_add(o, q->st[i].name, json_object_new_uint64(q->st[i].value));
	return o;
}

/*
 * The groups of the stats reply named prefix.<name>.<what> (tenants.<name>.*, sessions.<id>.*)
 * in reply order: calls fn once per group with the index of its first stat.
 */
static void for_each_group(const struct ops_query *q, const char *prefix,
			   void (*fn)(const struct ops_query *q, const char *name, void *arg),
			   void *arg)
{
	size_t pl = strlen(prefix);

	for (uint32_t i = 0; i < q->n; i++) {
		const char *nm = q->st[i].name, *dot = strrchr(nm, '.');
		char group[MEMCLIENT_NAME_MAX];
		bool seen = false;

		if (strncmp(nm, prefix, pl) || !dot || dot <= nm + pl)
			continue;
		snprintf(group, sizeof(group), "%.*s", (int)(dot - nm - pl), nm + pl);
		for (uint32_t j = 0; j < i && !seen; j++)
			seen = !strncmp(q->st[j].name, nm, (size_t)(dot - nm + 1)) &&
			       !strchr(q->st[j].name + (dot - nm + 1), '.');
		if (!seen)
			fn(q, group, arg);
	}
}

/* prefix.group.what, or 0. */
static uint64_t group_stat(const struct ops_query *q, const char *prefix, const char *group,
			   const char *what)
{
	char key[MEMCLIENT_NAME_MAX * 2];

	snprintf(key, sizeof(key), "%s%s.%s", prefix, group, what);
	return stat_or0(q, key);
}

static const char *const tenant_keys[] = {
    "sessions",	     "bytes",	   "quota_bytes",      "seqs", "rejected", "units_resident",
    "units_spilled", "disk_bytes", "disk_quota_bytes", NULL};
static const char *const session_keys[] = {
    "uid", "arena_bytes", "slots_used", "slots_free", "units_resident", "units_spilled", NULL};

/* daemon.spill.aio_backend (see memsvc/ctlreq.c) as its name. */
static const char *aio_name(const struct ops_query *q)
{
	static const char *const names[] = {"none yet", "uring", "uring(sqpoll)", "sync"};
	uint64_t c = 0;

	if (!memclient_stat_find(q->st, q->n, "daemon.spill.aio_backend", &c))
		return stat_or0(q, "daemon.spill.aio_uring") ? "uring" : "unknown";
	return c < sizeof(names) / sizeof(names[0]) ? names[c] : "other";
}

static double share(uint64_t part, uint64_t whole)
{
	return whole ? (double)part / (double)whole : 0.0;
}

static void tenant_json(const struct ops_query *q, const char *name, void *arg)
{
	json_object *t = json_object_new_object();

	json_object_object_add(t, "name", json_object_new_string(name));
	for (int k = 0; tenant_keys[k]; k++)
		json_object_object_add(
		    t, tenant_keys[k],
		    json_object_new_uint64(group_stat(q, "tenants.", name, tenant_keys[k])));
	json_object_object_add(
	    t, "quota_use",
	    json_object_new_double(share(group_stat(q, "tenants.", name, "bytes"),
					 group_stat(q, "tenants.", name, "quota_bytes"))));
	json_object_array_add(arg, t);
}

static void session_json(const struct ops_query *q, const char *id, void *arg)
{
	json_object *t = json_object_new_object();

	json_object_object_add(t, "session", json_object_new_uint64(strtoull(id, NULL, 10)));
	json_object_object_add(t, "self",
			       json_object_new_boolean(strtoull(id, NULL, 10) == q->self_id));
	for (int k = 0; session_keys[k]; k++)
		json_object_object_add(
		    t, session_keys[k],
		    json_object_new_uint64(group_stat(q, "sessions.", id, session_keys[k])));
	json_object_array_add(arg, t);
}

/* daemon.spill.<name> of the reply as the key name of o. */
static void spill_add(json_object *o, const struct ops_query *q, const char *key, const char *name)
{
	char k[MEMCLIENT_NAME_MAX];

	snprintf(k, sizeof(k), "daemon.spill.%s", name);
	json_object_object_add(o, key, json_object_new_uint64(stat_or0(q, k)));
}

static json_object *tiers_json(const struct ops_query *q)
{
	json_object *t = json_object_new_object(), *ram = json_object_new_object();
	json_object *nv = json_object_new_object();
	static const char *const nvme_keys[] = {
	    "bytes_cap",      "bytes_reserved",	  "bytes_used",
	    "units_spilled",  "bytes_spilled",	  "units_restored",
	    "bytes_restored", "units_dropped",	  "restore_misses",
	    "spill_failures", "degraded_entries", "recoveries",
	    "enospc_events",  "crc_failures",	  "id_mismatches",
	    "io_errors",      "sessions",	  NULL};
	bool on = stat_or0(q, "daemon.spill.enabled");

	json_object_object_add(ram, "budget_bytes",
			       json_object_new_uint64(stat_or0(q, "daemon.budget_bytes")));
	json_object_object_add(ram, "arena_bytes",
			       json_object_new_uint64(stat_or0(q, "daemon.arena_bytes")));
	json_object_object_add(ram, "use",
			       json_object_new_double(share(stat_or0(q, "daemon.arena_bytes"),
							    stat_or0(q, "daemon.budget_bytes"))));
	json_object_object_add(t, "ram", ram);
	json_object_object_add(nv, "enabled", json_object_new_boolean(on));
	if (on) {
		json_object *dirs = json_object_new_array();
		char list[sizeof(q->spill_dirs)], *save = NULL;
		json_object_object_add(nv, "aio", json_object_new_string(aio_name(q)));
		for (char *d = strtok_r(strcpy(list, q->spill_dirs), ",", &save); d;
		     d = strtok_r(NULL, ",", &save))
			json_object_array_add(dirs, json_object_new_string(d));
		json_object_object_add(nv, "dirs", dirs);
		spill_add(nv, q, "n_dirs", "dirs");
		json_object_object_add(
		    nv, "degraded", json_object_new_boolean(stat_or0(q, "daemon.spill.degraded")));
		spill_add(nv, q, "tiers_degraded", "degraded");
		for (int k = 0; nvme_keys[k]; k++)
			spill_add(nv, q, nvme_keys[k], nvme_keys[k]);
	}
	json_object_object_add(t, "nvme", nv);
	return t;
}

static void status_print_json(const struct ops_query *q)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "runtime_dir", json_object_new_string(q->dir));
	json_object_object_add(o, "running", json_object_new_boolean(q->running));
	json_object_object_add(o, "pid", json_object_new_int(q->stale ? 0 : (int)q->pid));
	json_object_object_add(o, "stale_pid_file", json_object_new_boolean(q->stale));
	if (q->running) {
		json_object *a = json_object_new_array(), *t = json_object_new_array();
		uint64_t ns = stat_or0(q, "daemon.sessions");
		json_object_object_add(o, "healthy", json_object_new_boolean(q->rc == 0));
		if (q->rc)
			json_object_object_add(o, "error", json_object_new_string(err_str(q->rc)));
		json_object_object_add(o, "uptime_s", json_object_new_double(q->uptime_s));
		json_object_object_add(o, "ping_ms", json_object_new_double(q->ping_ms));
		json_object_object_add(o, "draining",
				       json_object_new_boolean(stat_or0(q, "daemon.draining")));
		/* The status query is a session itself: clients are the others. */
		json_object_object_add(o, "clients", json_object_new_uint64(ns ? ns - 1 : 0));
		for_each_group(q, "tenants.", tenant_json, t);
		json_object_object_add(o, "tenants", t);
		for_each_group(q, "sessions.", session_json, a);
		json_object_object_add(o, "arenas", a);
		json_object_object_add(o, "tiers", tiers_json(q));
		json_object_object_add(o, "stats", stats_json(q));
	}
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
}

/* Bytes for people: "512.0 MiB". */
static const char *human(uint64_t b, char *buf, size_t len)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)b;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

static void tenant_row(const struct ops_query *q, const char *name, void *arg)
{
	char b[4][24];
	uint64_t quota = group_stat(q, "tenants.", name, "quota_bytes");
	uint64_t dq = group_stat(q, "tenants.", name, "disk_quota_bytes");

	(void)arg;
	printf("  %-16s %8llu %11s %11s %6.1f%% %10llu %10llu %11s %11s %8llu\n", name,
	       (unsigned long long)group_stat(q, "tenants.", name, "sessions"),
	       human(group_stat(q, "tenants.", name, "bytes"), b[0], sizeof(b[0])),
	       quota ? human(quota, b[1], sizeof(b[1])) : "none",
	       100.0 * share(group_stat(q, "tenants.", name, "bytes"), quota),
	       (unsigned long long)group_stat(q, "tenants.", name, "units_resident"),
	       (unsigned long long)group_stat(q, "tenants.", name, "units_spilled"),
	       human(group_stat(q, "tenants.", name, "disk_bytes"), b[2], sizeof(b[2])),
	       dq ? human(dq, b[3], sizeof(b[3])) : "none",
	       (unsigned long long)group_stat(q, "tenants.", name, "rejected"));
}

static void session_row(const struct ops_query *q, const char *id, void *arg)
{
	char b[24], name[80];

	(void)arg;
	snprintf(name, sizeof(name), "%s%s", id,
		 strtoull(id, NULL, 10) == q->self_id ? " (status)" : "");
	printf("  %-16s %8llu %11s %10llu %10llu %10llu %10llu\n", name,
	       (unsigned long long)group_stat(q, "sessions.", id, "uid"),
	       human(group_stat(q, "sessions.", id, "arena_bytes"), b, sizeof(b)),
	       (unsigned long long)group_stat(q, "sessions.", id, "slots_used"),
	       (unsigned long long)group_stat(q, "sessions.", id, "slots_free"),
	       (unsigned long long)group_stat(q, "sessions.", id, "units_resident"),
	       (unsigned long long)group_stat(q, "sessions.", id, "units_spilled"));
}

#define SP(k) (unsigned long long)stat_or0(q, "daemon.spill." k)

static void tiers_print(const struct ops_query *q)
{
	char b[4][24];

	printf("tiers\n  %-22s budget %s, arenas %s (%.1f%%)\n", "RAM",
	       human(stat_or0(q, "daemon.budget_bytes"), b[0], sizeof(b[0])),
	       human(stat_or0(q, "daemon.arena_bytes"), b[1], sizeof(b[1])),
	       100.0 *
		   share(stat_or0(q, "daemon.arena_bytes"), stat_or0(q, "daemon.budget_bytes")));
	if (!stat_or0(q, "daemon.spill.enabled")) {
		printf("  %-22s disabled (no spill dirs: RAM only)\n", "NVMe");
		return;
	}
	printf("  %-22s enabled, aio %s, dirs %s\n", "NVMe", aio_name(q),
	       q->spill_dirs[0] ? q->spill_dirs : "(unknown)");
	printf("  %-22s cap %s, reserved %s, on disk %s\n", "",
	       stat_or0(q, "daemon.spill.bytes_cap")
		   ? human(stat_or0(q, "daemon.spill.bytes_cap"), b[0], sizeof(b[0]))
		   : "none",
	       human(stat_or0(q, "daemon.spill.bytes_reserved"), b[1], sizeof(b[1])),
	       human(stat_or0(q, "daemon.spill.bytes_used"), b[2], sizeof(b[2])));
	printf("  %-22s spilled %llu (%s), restored %llu (%s), dropped %llu\n", "units",
	       SP("units_spilled"),
	       human(stat_or0(q, "daemon.spill.bytes_spilled"), b[0], sizeof(b[0])),
	       SP("units_restored"),
	       human(stat_or0(q, "daemon.spill.bytes_restored"), b[1], sizeof(b[1])),
	       SP("units_dropped"));
	printf("  %-22s %s (%llu tiers RAM-only now; %llu entries, %llu recoveries, %llu ENOSPC)\n",
	       "degraded", stat_or0(q, "daemon.spill.degraded") ? "yes" : "no", SP("degraded"),
	       SP("degraded_entries"), SP("recoveries"), SP("enospc_events"));
	printf("  %-22s crc %llu, identity %llu, io %llu, write %llu, restore misses %llu\n",
	       "failures", SP("crc_failures"), SP("id_mismatches"), SP("io_errors"),
	       SP("spill_failures"), SP("restore_misses"));
}

static void status_print_table(const struct ops_query *q)
{
	uint64_t errors = 0, ns;

	printf("sparda-memsvc in %s: %s\n", q->dir, q->running ? "running" : "not running");
	if (q->stale)
		printf("  stale pid file: pid %d is not a running sparda-memsvc\n", (int)q->pid);
	if (!q->running)
		return;
	printf("  %-22s %d\n", "pid", q->stale ? 0 : (int)q->pid);
	printf("  %-22s %.1f s\n", "uptime", q->uptime_s);
	if (q->rc) {
		printf("  %-22s unhealthy: %s\n", "health", err_str(q->rc));
		return;
	}
	ns = stat_or0(q, "daemon.sessions");
	printf("  %-22s ok (ping %.3f ms)\n", "health", q->ping_ms);
	printf("  %-22s %s\n", "draining", stat_or0(q, "daemon.draining") ? "yes" : "no");
	printf("  %-22s %llu sessions (and this query's)\n", "clients",
	       (unsigned long long)(ns ? ns - 1 : 0));
	tiers_print(q);
	printf("tenants\n  %-16s %8s %11s %11s %7s %10s %10s %11s %11s %8s\n", "NAME", "SESSIONS",
	       "RAM", "QUOTA", "USE", "UNITS RAM", "UNITS DISK", "DISK", "DISK QUOTA", "REJECTED");
	for_each_group(q, "tenants.", tenant_row, NULL);
	printf("arenas (sessions; the first %s listed)\n  %-16s %8s %11s %10s %10s %10s %10s\n",
	       "32", "SESSION", "UID", "ARENA", "SLOTS USED", "SLOTS FREE", "UNITS RAM",
	       "UNITS DISK");
	for_each_group(q, "sessions.", session_row, NULL);
	printf("errors\n");
	for (uint32_t i = 0; i < q->n; i++)
		if (!strncmp(q->st[i].name, "daemon.errors.", 14) && q->st[i].value) {
			printf("  %-22s %llu\n", q->st[i].name + 14,
			       (unsigned long long)q->st[i].value);
			errors += q->st[i].value;
		}
	if (!errors)
		printf("  none\n");
}

/* The compute services of `sparda up --compute=N`: pid, ready, requests answered. */
static void computes_print(const char *dir)
{
	char name[32], path[PATH_MAX], line[128];
	unsigned long long served = 0, failed = 0;
	bool header = false;
	pid_t pid;

	for (int i = 0; i < 64; i++) {
		FILE *f;
		snprintf(name, sizeof(name), "compute-%d.pid", i);
		if (ops_pid_read_name(dir, name, &pid))
			continue;
		if (!header)
			printf("compute services\n");
		header = true;
		served = failed = 0;
		f = ops_compute_path(dir, i, "/ready", path, sizeof(path)) ? NULL
									    : fopen(path, "re");
		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "served=%llu", &served) != 1)
				sscanf(line, "failed=%llu", &failed);
		printf("  compute-%-13d pid %d, %s, %s, %llu served, %llu failed\n", i, (int)pid,
		       ops_pid_is(pid, "sparda-compute") ? "running" : "not running",
		       f ? "ready" : "not ready", served, failed);
		if (f)
			fclose(f);
	}
}

static const char status_usage[] =
    "usage: sparda status [--runtime-dir DIR] [--json] [--timeout-ms N]\n"
    "Is sparda-memsvc running in DIR (pid file, /proc), is it healthy (ping round trip), and\n"
    "what it reports (a short status session asks for its stats): clients; tiers (RAM budget\n"
    "and use; NVMe enabled or not, I/O backend, spill dirs, bytes, units spilled and\n"
    "restored, degraded after ENOSPC, failures); tenants (sessions, RAM and disk bytes, units\n"
    "in RAM and on disk, quota use); arenas per session (bytes, slots used and free); error\n"
    "counters; then a line per compute service of `sparda up --compute=N` (pid, ready,\n"
    "requests served and failed). --json prints one object (the raw stats reply under\n"
    "\"stats\").\n"
    "Exit status: 0 running and healthy, 1 running but not answering, 3 not running, 2 usage.\n";

int cmd_status(int argc, char **argv)
{
	struct query_args a = {0};
	struct ops_query q = {0};
	int rc = query_parse("status", argc, argv, &a, status_usage);

	if (rc)
		return rc > 0 ? 0 : 2;
	query_run(&q, &a);
	if (a.json)
		status_print_json(&q);
	else
		status_print_table(&q);
	if (!a.json)
		computes_print(q.dir);
	free(q.st);
	return !q.running ? 3 : q.rc ? 1 : 0;
}

/*
 * The daemon's /metrics samples ("name{labels} value"): printed as lines, or added to jo as
 * "metrics" (name -> number). Unavailable metrics are a note, not an error.
 */
static void add_metrics(const struct ops_query *q, int timeout_ms, json_object *jo)
{
	int port = q->pid && !q->stale ? ops_metrics_port(q->pid) : -ESRCH;
	json_object *m = jo ? json_object_new_object() : NULL;
	char *body = NULL, *save = NULL;
	int rc = port > 0 ? ops_metrics_fetch(port, timeout_ms, &body) : port ? port : -ENOTCONN;

	if (rc) {
		fprintf(stderr,
			"sparda stats: no /metrics (%s): counters of the stats reply only\n",
			rc == -ENOTCONN ? "the daemon runs with --metrics-port=0" : err_str(rc));
		json_object_put(m);
		return;
	}
	for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strrchr(line, ' ');
		if (line[0] == '#' || !sp)
			continue;
		if (!m) {
			printf("%s\n", line);
			continue;
		}
		*sp = '\0';
		json_object_object_add(m, line, json_object_new_double(strtod(sp + 1, NULL)));
	}
	if (jo)
		json_object_object_add(jo, "metrics", m);
	free(body);
}

static const char stats_usage[] =
    "usage: sparda stats [--runtime-dir DIR] [--json] [--timeout-ms N]\n"
    "Every name/value pair of sparda-memsvc's stats reply (session.* are the query's own\n"
    "session, tenant.* this uid's tenant, daemon.* the whole daemon), then the samples of its\n"
    "/metrics endpoint (the cumulative counters: attaches, requests by op, latencies; port\n"
    "from the daemon's --metrics-port, default 9464), one per line, or a JSON object\n"
    "{\"stats\": {...}, \"metrics\": {...}}.\n"
    "Exit status: 0, 1 not running or not answering, 2 usage.\n";

int cmd_stats(int argc, char **argv)
{
	struct query_args a = {0};
	struct ops_query q = {0};
	int rc = query_parse("stats", argc, argv, &a, stats_usage);

	if (rc)
		return rc > 0 ? 0 : 2;
	query_run(&q, &a);
	if (!q.running || q.rc) {
		fprintf(stderr, "sparda stats: sparda-memsvc in %s: %s\n", q.dir,
			q.running ? err_str(q.rc) : "not running");
		free(q.st);
		return 1;
	}
	if (a.json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "stats", stats_json(&q));
		add_metrics(&q, a.timeout_ms, o);
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
		json_object_put(o);
	} else {
		for (uint32_t i = 0; i < q.n; i++)
			printf("%-40s %llu\n", q.st[i].name, (unsigned long long)q.st[i].value);
		add_metrics(&q, a.timeout_ms, NULL);
	}
	free(q.st);
	return 0;
}

static const char config_usage[] =
    "usage: sparda config --dump memsvc|compute [flags...]\n"
    "Print the effective config of sparda-memsvc or sparda-compute with these flags (and the\n"
    "config file and SPARDA_* environment they name) as a config file: it runs\n"
    "`sparda-memsvc --dump-config` or `sparda-compute --dump-config`, whose tables hold every\n"
    "key. Exit status: that of the binary (0, or 2 for a bad key or value); 2 usage.\n";

int cmd_config(int argc, char **argv)
{
	char bin[PATH_MAX];
	char **av;
	int rc;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(config_usage, stdout);
		return 0;
	}
	if (argc < 3 || strcmp(argv[1], "--dump") ||
	    (strcmp(argv[2], "memsvc") && strcmp(argv[2], "compute"))) {
		fputs(config_usage, stderr);
		return 2;
	}
	rc = ops_sibling(!strcmp(argv[2], "memsvc") ? "sparda-memsvc" : "sparda-compute", bin,
			 sizeof(bin));
	if (rc) {
		fprintf(stderr, "sparda config: sparda-%s not found next to sparda: %s\n", argv[2],
			err_str(rc));
		return 1;
	}
	av = calloc((size_t)argc + 1, sizeof(*av));
	if (!av)
		return 1;
	av[0] = bin;
	for (int i = 3; i < argc; i++)
		av[i - 2] = argv[i];
	av[argc - 2] = "--dump-config";
	fflush(NULL);
	execv(bin, av);
	fprintf(stderr, "sparda config: cannot execute %s: %s\n", bin, strerror(errno));
	free(av);
	return 1;
}
