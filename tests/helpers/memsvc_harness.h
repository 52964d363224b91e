/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Integration-test helpers around a real sparda-memsvc: start one in a unique temp runtime dir
 * (the test exits 77 when the binary was not built), attach clients with a tiny geometry,
 * write files into the runtime dir, search the daemon's log, fill and check unit patterns.
 * Failures inside helpers fail the calling cmocka test.
 */
#ifndef SPARDA_TESTS_MEMSVC_HARNESS_H
#define SPARDA_TESTS_MEMSVC_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "memsvc_proc.h"

#define HARNESS_SKIP 77

/* Tiny geometry: 2 layers, 2 KV heads, head_dim 16, 8-token blocks, bf16 -> 1 KiB units. */
struct sp_geometry harness_geometry(void);

/*
 * Start a daemon with extra args (NULL-terminated, may be NULL), stderr captured. Exits the
 * process with 77 when sparda-memsvc is absent; fails the test if it does not become ready.
 */
struct memsvc_proc *harness_start(const char *const *args);

/* Like harness_start but for a daemon expected to exit: returns its wait status. */
int harness_run_to_exit(const char *const *args, int timeout_ms, char *log, size_t log_len);

/* A fresh unique temp dir (removed by harness_rmdir). Caller frees the string. */
char *harness_tmpdir(void);
void harness_rmdir(char *dir);

/* Write text to dir/name; returns the malloc'd path (caller frees). */
char *harness_write_file(const char *dir, const char *name, const char *text);

/* Attach a client to p with the tiny geometry. Returns memclient_open's result. */
int harness_open(struct memsvc_proc *p, const char *tenant, enum sp_wait_mode mode,
		 uint64_t arena_bytes, struct memclient **out);

/*
 * SIGHUP the daemon (a tenants reload) and wait for its DIR/tenants.reload status line to
 * move on; fails the test after 5 s. True when the reload was applied ("result=ok"); the
 * line goes to line (may be NULL).
 */
bool harness_reload(struct memsvc_proc *p, char *line, size_t len);

/* Does the daemon's captured log contain needle? */
bool harness_log_contains(struct memsvc_proc *p, const char *needle);
/* Wait up to 10 s for a log line containing needle; true when it came. */
bool harness_log_wait(struct memsvc_proc *p, const char *needle);

/* Deterministic content of a unit, derived from (seq key, unit coordinates). */
void harness_fill(void *buf, size_t len, uint64_t key, const struct memclient_unit *u);
/* Number of bytes of buf that differ from harness_fill's pattern. */
size_t harness_check(const void *buf, size_t len, uint64_t key, const struct memclient_unit *u);

/* Stat value by name from memclient_stats; fails the test when missing. */
uint64_t harness_stat(struct memclient *c, const char *name);

/*
 * Send n_frames raw frames on a fresh DEALER connected to p's ctl.ipc and wait up to
 * timeout_ms for one reply, decoded into *rp (caller finis it with wire_reply_fini).
 * Returns 0, -ETIMEDOUT (no reply) or the decode error.
 */
struct wire_reply;
int harness_raw(struct memsvc_proc *p, const void *const *frames, const size_t *lens, int n_frames,
		struct wire_reply *rp, int timeout_ms);

/* HTTP GET of path on 127.0.0.1:port; returns the malloc'd response (headers + body). */
char *harness_http_get(int port, const char *path);

/* A TCP port that was free a moment ago on 127.0.0.1. */
int harness_free_port(void);

#endif
