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
};

struct query_args {
	const char *dir;
	int timeout_ms;
	bool json;
};

static int query_parse(const char *cmd, int argc, char **argv, struct query_args *a,
		       const char *usage)
{
	const char *v;
	int m;

	a->timeout_ms = 5000;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 1;
		}
		if (!strcmp(argv[i], "--json")) {
			a->json = true;
			continue;
		}
		if ((m = ops_flag(argc, argv, &i, "--runtime-dir", &v)) > 0)
			a->dir = v;
		else if (!m && (m = ops_flag(argc, argv, &i, "--timeout-ms", &v)) > 0)
			a->timeout_ms = atoi(v);
		if (m <= 0 || a->timeout_ms <= 0) {
			fprintf(stderr, "sparda %s: bad argument '%s'\n%s", cmd, argv[i], usage);
			return -EINVAL;
		}
	}
	return 0;
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
	if (!q->rc)
		q->rc = memclient_stats(c, &q->st, &q->n);
	memclient_close(c);
}

static uint64_t stat_or0(const struct ops_query *q, const char *name)
{
	uint64_t v = 0;

	memclient_stat_find(q->st, q->n, name, &v);
	return v;
}

static json_object *stats_json(const struct ops_query *q)
{
	json_object *o = json_object_new_object();

	for (uint32_t i = 0; i < q->n; i++)
		json_object_object_add(o, q->st[i].name, json_object_new_uint64(q->st[i].value));
	return o;
}

static void status_print_json(const struct ops_query *q)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "runtime_dir", json_object_new_string(q->dir));
	json_object_object_add(o, "running", json_object_new_boolean(q->running));
	json_object_object_add(o, "pid", json_object_new_int(q->stale ? 0 : (int)q->pid));
	json_object_object_add(o, "stale_pid_file", json_object_new_boolean(q->stale));
	if (q->running) {
		json_object_object_add(o, "healthy", json_object_new_boolean(q->rc == 0));
		if (q->rc)
			json_object_object_add(o, "error", json_object_new_string(err_str(q->rc)));
		json_object_object_add(o, "uptime_s", json_object_new_double(q->uptime_s));
		json_object_object_add(o, "ping_ms", json_object_new_double(q->ping_ms));
		json_object_object_add(o, "stats", stats_json(q));
	}
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
}

static void status_print_table(const struct ops_query *q)
{
	uint64_t errors = 0;

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
	printf("  %-22s ok (ping %.3f ms)\n", "health", q->ping_ms);
	printf("  %-22s %llu (this query's session included)\n", "sessions",
	       (unsigned long long)stat_or0(q, "daemon.sessions"));
	printf("  %-22s %llu of %llu budget bytes\n", "arena bytes",
	       (unsigned long long)stat_or0(q, "daemon.arena_bytes"),
	       (unsigned long long)stat_or0(q, "daemon.budget_bytes"));
	printf("  %-22s %s\n", "draining", stat_or0(q, "daemon.draining") ? "yes" : "no");
	printf("  %-22s bytes %llu, quota %llu, sessions %llu, seqs %llu, rejected %llu\n",
	       "tenant (this uid's)", (unsigned long long)stat_or0(q, "tenant.bytes"),
	       (unsigned long long)stat_or0(q, "tenant.quota_bytes"),
	       (unsigned long long)stat_or0(q, "tenant.sessions"),
	       (unsigned long long)stat_or0(q, "tenant.seqs"),
	       (unsigned long long)stat_or0(q, "tenant.rejected"));
	for (uint32_t i = 0; i < q->n; i++)
		if (!strncmp(q->st[i].name, "daemon.errors.", 14) && q->st[i].value) {
			printf("  %-22s %llu\n", q->st[i].name, (unsigned long long)q->st[i].value);
			errors += q->st[i].value;
		}
	if (!errors)
		printf("  %-22s none\n", "daemon.errors");
}

static const char status_usage[] =
    "usage: sparda status [--runtime-dir DIR] [--json] [--timeout-ms N]\n"
    "Is sparda-memsvc running in DIR (pid file, /proc), is it healthy (ping round trip), and\n"
    "what it reports (a short status session asks for its stats: sessions, arena bytes,\n"
    "tenant use, error counters). --json prints one object.\n"
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
