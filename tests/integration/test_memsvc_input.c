/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration: bad input at a real sparda-memsvc. Malformed, truncated, oversized and
 * multi-frame raw ZeroMQ messages get error replies and the daemon keeps serving; a bad config
 * makes it exit non-zero naming the key; the metrics endpoint answers and its counters move.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "memsvc_harness.h"
#include "wire.h"

static int raw_status(struct memsvc_proc *p, const void *const *frames, const size_t *lens, int n,
		      uint64_t *request_id)
{
	struct wire_reply rp;
	int rc = harness_raw(p, frames, lens, n, &rp, 3000);

	assert_int_equal(rc, 0);
	*request_id = rp.request_id;
	rc = rp.status;
	assert_true(rp.error[0] != '\0'); /* the error text names the problem */
	wire_reply_fini(&rp);
	return rc;
}

static void test_malformed(void **state)
{
	struct memsvc_proc *p = harness_start(NULL);
	struct wire_request rq = {.protocol_version = SP_PROTOCOL_VERSION,
				  .request_id = 5,
				  .session_id = 1,
				  .kind = WIRE_PING};
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99, 0x01};
	struct memclient *c;
	uint64_t id;
	void *buf;
	size_t len, lens[4];
	int rc;

	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, 128 << 10, &c), 0);
	/* Garbage. */
	const void *g[] = {garbage};
	lens[0] = sizeof(garbage);
	assert_int_equal(raw_status(p, g, lens, 1, &id), -EBADMSG);
	assert_int_equal(id, 0);
	/* Truncated: a valid request cut short. */
	memclient_token(c, rq.token);
	rq.session_id = memclient_session_id(c);
	assert_int_equal(wire_request_pack(&rq, &buf, &len), 0);
	const void *t[] = {buf};
	lens[0] = len - 3;
	rc = raw_status(p, t, lens, 1, &id);
	assert_true(rc == -EBADMSG || rc == -EINVAL);
	/* Empty frame. */
	lens[0] = 0;
	assert_true(raw_status(p, t, lens, 1, &id) < 0);
	/* Too many frames. */
	const void *m[] = {buf, buf, buf, buf};
	lens[0] = lens[1] = lens[2] = lens[3] = len;
	assert_true(raw_status(p, m, lens, 4, &id) < 0);
	/* Oversized: past the message cap but under ZeroMQ's limit. */
	size_t big_len = WIRE_MAX_MSG_BYTES + 4096;
	void *big = calloc(1, big_len);
	assert_non_null(big);
	const void *b[] = {big};
	lens[0] = big_len;
	assert_int_equal(raw_status(p, b, lens, 1, &id), -EMSGSIZE);
	free(big);
	/* The same request intact works, and so does the client. */
	lens[0] = len;
	struct wire_reply rp;
	assert_int_equal(harness_raw(p, t, lens, 1, &rp, 3000), 0);
	assert_int_equal(rp.status, 0);
	assert_int_equal(rp.request_id, 5);
	wire_reply_fini(&rp);
	free(buf);
	assert_int_equal(memclient_ping(c), 0);
	memclient_close(c);
	memsvc_proc_free(p);
}

static void test_bad_config(void **state)
{
	static const char *const unknown[] = {"--no-such-key", "1", NULL};
	static const char *const bad_size[] = {"--ram-budget", "12Q", NULL};
	char log[8192];
	int status;

	status = harness_run_to_exit(unknown, 10000, log, sizeof(log));
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
	assert_non_null(strstr(log, "no-such-key"));
	status = harness_run_to_exit(bad_size, 10000, log, sizeof(log));
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
	assert_non_null(strstr(log, "ram-budget"));
}

/* Sum of every sample value of the metrics text (changes when any counter moves). */
static double metrics_sum(const char *text, bool *found)
{
	const char *body = strstr(text, "\r\n\r\n");
	double sum = 0;

	*found = false;
	for (const char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *sp;
		if (*l == '#' || *l == '\r' || *l == '\n')
			continue;
		sp = strpbrk(l, " \n");
		if (sp && *sp == ' ') {
			sum += strtod(sp + 1, NULL);
			*found = true;
		}
	}
	return sum;
}

static void test_metrics(void **state)
{
	char port[16];
	int pn = harness_free_port();
	struct memclient *c;
	struct memclient_seq seq;
	struct memclient_unit u = {{0, 0}, 0, 0, 0};
	struct memclient_result r;
	double before, after;
	bool found;
	char *text;

	snprintf(port, sizeof(port), "%d", pn);
	const char *args[] = {"--metrics-port", port, NULL};
	struct memsvc_proc *p = harness_start(args);

	text = harness_http_get(pn, "/healthz");
	assert_non_null(strstr(text, " 200 "));
	free(text);
	text = harness_http_get(pn, "/metrics");
	assert_non_null(strstr(text, " 200 "));
	before = metrics_sum(text, &found);
	assert_true(found);
	free(text);

	assert_int_equal(harness_open(p, NULL, SP_WAIT_SLEEP, 128 << 10, &c), 0);
	assert_int_equal(memclient_seq_open(c, 1, 4, &seq), 0);
	u.seq = seq;
	assert_int_equal(memclient_alloc(c, &u, 1, &r), 0);
	assert_int_equal(memclient_commit(c, &u, 1, 1, &r), 0);
	assert_int_equal(memclient_forecast(c, &u, 1, 2, &r), 0);
	text = harness_http_get(pn, "/metrics");
	after = metrics_sum(text, &found);
	free(text);
	assert_true(after > before);
	memclient_close(c);
	memsvc_proc_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_bad_config),
	    cmocka_unit_test(test_metrics),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
