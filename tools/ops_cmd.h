/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared pieces of the operator subcommands (`sparda up|down|status|stats|config`): the
 * runtime dir and its pid file, liveness checks of a detached sparda-memsvc, and a short
 * status session over the client library. Internal to tools/.
 */
#ifndef SPARDA_TOOLS_OPS_CMD_H
#define SPARDA_TOOLS_OPS_CMD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct memclient;

#define OPS_PID_FILE "memsvc.pid"
#define OPS_LOG_FILE "memsvc.log"

/*
 * Match argv[*i] against flag ("--x=V" or "--x V"); on a match store V in *val, advance *i
 * past a separate value and return 1. Returns 0 (no match) or -EINVAL (value missing).
 */
int ops_flag(int argc, char **argv, int *i, const char *flag, const char **val);

/*
 * The arguments `sparda down|reload|status|stats` share: --help/-h, --runtime-dir DIR,
 * --timeout-ms N (> 0, *timeout_ms keeps its value otherwise) and, with json non-NULL,
 * --json. Returns 0; 1 after printing usage for --help; -EINVAL after printing "sparda CMD:
 * bad argument" and the usage.
 */
int ops_common_args(int argc, char **argv, const char *cmd, const char *usage, const char **dir,
		    int *timeout_ms, bool *json);

/* dir, or the default runtime dir when dir is NULL or "". Returns 0 or -ENAMETOOLONG. */
int ops_runtime_dir(const char *dir, char *buf, size_t len);

/* DIR/name into buf. Returns 0 or -ENAMETOOLONG. */
int ops_path(const char *dir, const char *name, char *buf, size_t len);

/* The pid in DIR/memsvc.pid. Returns 0, -ENOENT (no file), -EINVAL (not a pid), -errno. */
int ops_pid_read(const char *dir, pid_t *pid);

/* The same for the pid file DIR/name. */
int ops_pid_read_name(const char *dir, const char *name, pid_t *pid);

/* Write DIR/memsvc.pid atomically (temp file + rename). Returns 0 or -errno. */
int ops_pid_write(const char *dir, pid_t pid);

/* The same for the pid file DIR/name. */
int ops_pid_write_name(const char *dir, const char *name, pid_t pid);

/* Is pid a live (not zombie) process whose executable is sparda-memsvc? */
bool ops_pid_is_memsvc(pid_t pid);

/* Is pid a live (not zombie) process whose executable is binary? */
bool ops_pid_is(pid_t pid, const char *binary);

/* The compute processes of `sparda up --compute=N`: DIR/compute-I<suffix> ("" is the serve
 * dir, ".pid", ".log"). Returns 0 or -ENAMETOOLONG. */
int ops_compute_path(const char *dir, int i, const char *suffix, char *buf, size_t len);

/*
 * SIGTERM pid, wait up to timeout_ms until it is no longer a live binary, then SIGKILL
 * (*killed) and wait 5 s more. Returns 0 once it is gone, -ETIMEDOUT, or -errno of kill.
 */
int ops_stop(pid_t pid, const char *binary, int timeout_ms, bool *killed);

/* Does something accept connections on DIR/attach.sock? */
bool ops_socket_live(const char *dir);

/* Seconds since pid started (from /proc), or a negative value when unknown. */
double ops_uptime_s(pid_t pid);

/*
 * Attach a tiny status session (one layer, one head, a 64 KiB arena). On 0 the caller owns
 * *out (memclient_close). Returns 0 or the -errno of memclient_open.
 */
int ops_attach(const char *dir, int timeout_ms, struct memclient **out);

/* A binary installed next to `sparda` into buf. Returns 0, -ENOENT or -ENAMETOOLONG. */
int ops_sibling(const char *name, char *buf, size_t len);

/*
 * The port of the /metrics endpoint of daemon pid: its last --metrics-port flag, else the
 * default 9464 (0 = off). Returns the port or -errno reading /proc/PID/cmdline.
 */
int ops_metrics_port(pid_t pid);

/*
 * GET http://127.0.0.1:port/metrics. On 0 *body is the malloc'd text (the caller frees).
 * Returns 0, -EINVAL (bad port), -ECONNREFUSED and other connect errors, -EPROTO (not a 200
 * reply), -ENOMEM.
 */
int ops_metrics_fetch(int port, int timeout_ms, char **body);

/*
 * The value of key in daemon pid's effective config: its binary run with its arguments,
 * environment and working directory plus --dump-config. Returns 0, -ENOENT (no such key),
 * -ESRCH (cannot read its /proc entries), -EIO (the dump failed), -ENAMETOOLONG, -errno.
 */
int ops_daemon_config(pid_t pid, const char *key, char *val, size_t len);

#endif
