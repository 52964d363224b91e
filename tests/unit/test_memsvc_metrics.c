/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memsvc /metrics text: gauges from a real (not running) server, counters, and the latency
 * histograms folded into cumulative Prometheus buckets; the HTTP endpoint's /healthz and 404.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "mconfig.h"
#include "metrics.h"
#include "mstats.h"
#include "server.h"
#include "tenant.h"

struct fx {
	char dir[64];
	struct mconfig cfg;
	struct tenant_table *tenants;
	struct mstats *stats;
	struct server *sv;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char arg[128], err[512] = "";
	char *argv[] = {"sparda-memsvc", arg, "--ram-budget=1M", "--metrics-port=0", NULL};

	assert_non_null(f);
	strcpy(f->dir, "/tmp/sparda-metrics-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(arg, sizeof(arg), "--runtime-dir=%s", f->dir);
	assert_int_equal(mconfig_load(&f->cfg, 4, argv, stdout, err, sizeof(err)), 0);
	assert_int_equal(mconfig_resolve(&f->cfg, err, sizeof(err)), 0);
	assert_int_equal(tenant_table_load(NULL, getuid(), 0, &f->tenants, err, sizeof(err)), 0);
	f->stats = mstats_new();
	assert_non_null(f->stats);
	assert_int_equal(server_open(&f->cfg, f->tenants, f->stats, &f->sv, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	server_free(f->sv);
	mstats_free(f->stats);
	tenant_table_free(f->tenants);
	rmdir(f->dir);
	free(f);
	return 0;
}

static char *render(struct fx *f)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);

	assert_non_null(out);
	metrics_render(f->sv, f->tenants, f->stats, out);
	fclose(out);
	return buf;
}

static void has(const char *text, const char *line)
{
	if (!strstr(text, line))
		fail_msg("missing line: %s", line);
}

static void test_render(void **state)
{
	struct fx *f = *state;
	char *t;

	for (int i = 0; i < 3; i++)
		mstats_request(f->stats, MSTATS_PATH_SHM, WIRE_FORECAST, 1500);
	mstats_request(f->stats, MSTATS_PATH_SHM, WIRE_FORECAST, 3000000);
	mstats_request(f->stats, MSTATS_PATH_ZMQ, WIRE_ALLOC, 9000);
	mstats_errno(f->stats, -ESTALE);
	mstats_errno(f->stats, -EDQUOT);
	t = render(f);
	has(t, "\nsparda_memsvc_ram_budget_bytes 1048576\n");
	has(t, "\nsparda_memsvc_sessions 0\n");
	has(t, "\nsparda_memsvc_tenants 1\n");
	has(t, "\nsparda_memsvc_draining 0\n");
	has(t, "sparda_memsvc_tenant_usage{tenant=\"default\",what=\"sessions\"} 0\n");
	has(t, "sparda_memsvc_requests_total{path=\"shm\",op=\"forecast\"} 4\n");
	has(t, "sparda_memsvc_requests_total{path=\"zmq\",op=\"alloc\"} 1\n");
	has(t, "sparda_memsvc_errors_total{kind=\"stale\"} 1\n");
	has(t, "sparda_memsvc_errors_total{kind=\"quota\"} 1\n");
	has(t, "# TYPE sparda_memsvc_request_seconds histogram\n");
	/* Cumulative buckets: 1.5 us x3 then 3 ms x1. */
	has(t,
	    "sparda_memsvc_request_seconds_bucket{path=\"shm\",op=\"forecast\",le=\"1e-06\"} 0\n");
	has(t,
	    "sparda_memsvc_request_seconds_bucket{path=\"shm\",op=\"forecast\",le=\"2e-06\"} 3\n");
	has(t,
	    "sparda_memsvc_request_seconds_bucket{path=\"shm\",op=\"forecast\",le=\"0.002\"} 3\n");
	has(t,
	    "sparda_memsvc_request_seconds_bucket{path=\"shm\",op=\"forecast\",le=\"0.005\"} 4\n");
	has(t,
	    "sparda_memsvc_request_seconds_bucket{path=\"shm\",op=\"forecast\",le=\"+Inf\"} 4\n");
	has(t, "sparda_memsvc_request_seconds_count{path=\"shm\",op=\"forecast\"} 4\n");
	has(t, "sparda_memsvc_request_seconds_sum{path=\"shm\",op=\"forecast\"} 0.003004500\n");
	has(t, "sparda_memsvc_request_seconds_bucket{path=\"zmq\",op=\"alloc\",le=\"1e-05\"} 1\n");
	/* No samples, no series. */
	assert_null(strstr(t, "op=\"commit\""));
	free(t);
}

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void get(int port, const char *path, char *buf, size_t cap)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char req[128];
	size_t len = 0;
	ssize_t n;

	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fd);
}

static void test_http(void **state)
{
	struct fx *f = *state;
	struct metrics *m;
	char err[256], buf[65536];
	int port = free_port();

	assert_int_equal(
	    metrics_open((uint16_t)port, f->sv, f->tenants, f->stats, &m, err, sizeof(err)), 0);
	get(port, "/healthz", buf, sizeof(buf));
	assert_non_null(strstr(buf, " 200 "));
	get(port, "/metrics", buf, sizeof(buf));
	assert_non_null(strstr(buf, "sparda_memsvc_sessions 0"));
	get(port, "/nope", buf, sizeof(buf));
	assert_non_null(strstr(buf, " 404 "));
	/* The same port twice: the second refuses with a message naming it. */
	struct metrics *m2 = NULL;
	assert_int_equal(
	    metrics_open((uint16_t)port, f->sv, f->tenants, f->stats, &m2, err, sizeof(err)),
	    -EADDRINUSE);
	assert_non_null(strstr(err, "metrics-port"));
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_render, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_http, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
