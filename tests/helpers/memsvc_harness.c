/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration-test helpers: a real sparda-memsvc per test in a unique temp dir, tiny-geometry
 * clients, log search and a per-unit byte pattern that is the checksum oracle of read-back
 * tests (every byte depends on the unit's identity, so a wrong slot shows at once).
 */
#include "memsvc_harness.h"
#include "timeutil.h"
#include "wire.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

struct sp_geometry harness_geometry(void)
{
	return (struct sp_geometry){
	    .n_layers = 2, .n_kv_heads = 2, .head_dim = 16, .block_tokens = 8, .dtype_bytes = 2};
}

static void find_binary(char *buf, size_t len)
{
	if (memsvc_proc_find_binary(buf, len)) {
		fprintf(stderr, "skip: sparda-memsvc not built (SPARDA_BUILD_DIR=%s)\n",
			getenv("SPARDA_BUILD_DIR") ? getenv("SPARDA_BUILD_DIR") : "");
		exit(HARNESS_SKIP);
	}
}

struct memsvc_proc *harness_start(const char *const *args)
{
	char bin[PATH_MAX];
	struct memsvc_proc_opts o = {.binary = bin, .args = args, .capture_stderr = true};
	struct memsvc_proc *p = NULL;
	int rc;

	find_binary(bin, sizeof(bin));
	rc = memsvc_proc_start(&o, &p);
	if (rc && p) {
		char cmd[PATH_MAX + 16];
		snprintf(cmd, sizeof(cmd), "cat %s >&2", memsvc_proc_log_path(p));
		(void)!system(cmd);
	}
	if (rc)
		fail_msg("sparda-memsvc did not start: %s", strerror(-rc));
	return p;
}

int harness_run_to_exit(const char *const *args, int timeout_ms, char *log, size_t log_len)
{
	char bin[PATH_MAX];
	struct memsvc_proc_opts o = {
	    .binary = bin, .args = args, .capture_stderr = true, .no_wait = true};
	struct memsvc_proc *p = NULL;
	int status = -1;
	FILE *f;

	find_binary(bin, sizeof(bin));
	assert_int_equal(memsvc_proc_start(&o, &p), 0);
	assert_int_equal(memsvc_proc_stop(p, 0, timeout_ms, &status), 0);
	log[0] = '\0';
	f = fopen(memsvc_proc_log_path(p), "r");
	if (f) {
		size_t n = fread(log, 1, log_len - 1, f);
		log[n] = '\0';
		fclose(f);
	}
	memsvc_proc_free(p);
	return status;
}

char *harness_tmpdir(void)
{
	char *d = strdup("/tmp/sparda-t-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void harness_rmdir(char *dir)
{
	if (!dir)
		return;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

char *harness_write_file(const char *dir, const char *name, const char *text)
{
	char *path = NULL;
	FILE *f;

	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

int harness_open(struct memsvc_proc *p, const char *tenant, enum sp_wait_mode mode,
		 uint64_t arena_bytes, struct memclient **out)
{
	struct memclient_opts o = {
	    .runtime_dir = memsvc_proc_runtime_dir(p),
	    .tenant = tenant,
	    .client_name = "test",
	    .geom = harness_geometry(),
	    .arena_bytes = arena_bytes,
	    .max_seqs = 8,
	    .wait_mode = mode,
	    .timeout_ms = 3000,
	};
	return memclient_open(&o, out);
}

/* The generation in DIR/tenants.reload (0 before the first reload); line gets the text. */
static unsigned long long reload_gen(struct memsvc_proc *p, char *line, size_t len)
{
	char path[PATH_MAX];
	unsigned long long gen = 0;
	FILE *st;

	snprintf(path, sizeof(path), "%s/tenants.reload", memsvc_proc_runtime_dir(p));
	line[0] = '\0';
	if (!(st = fopen(path, "r")))
		return 0;
	if (fgets(line, (int)len, st))
		(void)sscanf(line, "generation=%llu", &gen);
	fclose(st);
	return gen;
}

bool harness_reload(struct memsvc_proc *p, char *line, size_t len)
{
	char buf[600];
	unsigned long long gen;

	if (!line) {
		line = buf;
		len = sizeof(buf);
	}
	gen = reload_gen(p, line, len);
	assert_int_equal(kill(memsvc_proc_pid(p), SIGHUP), 0);
	for (int i = 0; i < 500 && reload_gen(p, line, len) == gen; i++)
		usleep(10000);
	assert_int_equal(reload_gen(p, line, len), gen + 1);
	return strstr(line, " result=ok") != NULL;
}

bool harness_log_contains(struct memsvc_proc *p, const char *needle)
{
	FILE *f = fopen(memsvc_proc_log_path(p), "r");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

bool harness_log_wait(struct memsvc_proc *p, const char *needle)
{
	uint64_t end = time_now_ms() + 10000;

	while (!harness_log_contains(p, needle) && time_now_ms() < end)
		usleep(1000);
	return harness_log_contains(p, needle);
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t unit_seed(uint64_t key, const struct memclient_unit *u)
{
	return key * 0x100000001b3ull ^ ((uint64_t)u->layer << 48) ^ ((uint64_t)u->head << 32) ^
	       u->block;
}

void harness_fill(void *buf, size_t len, uint64_t key, const struct memclient_unit *u)
{
	uint64_t s = unit_seed(key, u);
	uint8_t *b = buf;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = splitmix(&s);
		memcpy(b + i, &v, len - i < 8 ? len - i : 8);
	}
}

size_t harness_check(const void *buf, size_t len, uint64_t key, const struct memclient_unit *u)
{
	uint64_t s = unit_seed(key, u);
	const uint8_t *b = buf;
	size_t wrong = 0;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = splitmix(&s);
		const uint8_t *e = (const uint8_t *)&v;
		for (size_t j = 0; j < 8 && i + j < len; j++)
			wrong += b[i + j] != e[j];
	}
	return wrong;
}

uint64_t harness_stat(struct memclient *c, const char *name)
{
	struct memclient_stat *s = NULL;
	uint32_t n = 0;
	uint64_t v = 0;

	assert_int_equal(memclient_stats(c, &s, &n), 0);
	if (!memclient_stat_find(s, n, name, &v)) {
		for (uint32_t i = 0; i < n; i++)
			fprintf(stderr, "  stat %s=%llu\n", s[i].name,
				(unsigned long long)s[i].value);
		free(s);
		fail_msg("stat %s missing", name);
	}
	free(s);
	return v;
}

int harness_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

int harness_raw(struct memsvc_proc *p, const void *const *frames, const size_t *lens, int n_frames,
		struct wire_reply *rp, int timeout_ms)
{
	char ep[PATH_MAX + 16], err[WIRE_ERROR_MAX];
	void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
	zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
	int linger = 0, rc = -ETIMEDOUT;

	snprintf(ep, sizeof(ep), "ipc://%s/ctl.ipc", memsvc_proc_runtime_dir(p));
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
	assert_int_equal(zmq_connect(s, ep), 0);
	for (int i = 0; i < n_frames; i++)
		assert_true(zmq_send(s, frames[i], lens[i], i + 1 < n_frames ? ZMQ_SNDMORE : 0) >=
			    0);
	if (zmq_poll(&it, 1, timeout_ms) == 1) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		assert_true(zmq_msg_recv(&m, s, 0) >= 0);
		rc = wire_reply_unpack(zmq_msg_data(&m), zmq_msg_size(&m), rp, err, sizeof(err));
		zmq_msg_close(&m);
	}
	zmq_close(s);
	zmq_ctx_term(ctx);
	return rc;
}

char *harness_http_get(int port, const char *path)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	size_t cap = 1 << 20, len = 0;
	char *buf = calloc(1, cap), req[256];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = 5};
	ssize_t n;

	assert_non_null(buf);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	return buf;
}
