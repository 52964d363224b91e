/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Run a sparda-memsvc daemon as a child process in its own runtime directory: spawn, wait
 * until its endpoints exist, SIGKILL, SIGTERM with a bounded wait, and clean-up. Used by the
 * `sparda` tools (bench, demo) and by the integration tests (tests/helpers).
 * Not thread safe per handle.
 */
#ifndef SPARDA_TOOLS_MEMSVC_PROC_H
#define SPARDA_TOOLS_MEMSVC_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct memsvc_proc;

struct memsvc_proc_opts {
	const char *binary;	 /* path of sparda-memsvc (see memsvc_proc_find_binary) */
	const char *runtime_dir; /* NULL: a fresh unique temp dir, removed by memsvc_proc_free */
	const char *const *args; /* extra arguments, NULL-terminated (NULL: none) */
	bool capture_stderr;	 /* daemon stderr to <runtime_dir>/memsvc.log instead of ours */
	bool no_wait;		 /* do not wait for the endpoints (daemons expected to fail) */
	int ready_timeout_ms;	 /* <= 0: 10000 */
};

/*
 * Locate sparda-memsvc: next to the running executable, else $SPARDA_BUILD_DIR/bin. Writes the
 * path to buf. Returns 0, -ENOENT (not found, or not executable) or -ENAMETOOLONG.
 */
int memsvc_proc_find_binary(char *buf, size_t len);

/*
 * Start the daemon with --runtime-dir DIR and --metrics-port 0 (unless args names
 * --metrics-port) plus args, and wait until attach.sock and ctl.ipc exist in DIR.
 * On 0 the caller owns *out (memsvc_proc_free). Returns 0, -ECHILD (the daemon exited before
 * it was ready: *out is still set so its status and log can be read), -ETIMEDOUT (killed),
 * -ENOENT (no binary), or -errno of mkdtemp/fork.
 */
int memsvc_proc_start(const struct memsvc_proc_opts *o, struct memsvc_proc **out);

const char *memsvc_proc_runtime_dir(const struct memsvc_proc *p);
/* The captured log path ("" when stderr is not captured). */
const char *memsvc_proc_log_path(const struct memsvc_proc *p);
pid_t memsvc_proc_pid(const struct memsvc_proc *p);
/* Is the child still running (not yet reaped)? */
bool memsvc_proc_running(struct memsvc_proc *p);

/* SIGKILL and reap. Returns 0 or -ESRCH (already exited). */
int memsvc_proc_kill9(struct memsvc_proc *p);

/*
 * Wait up to timeout_ms for the child to exit (after sending sig unless sig is 0) and store
 * its wait status in *status (may be NULL). On timeout the child is killed with SIGKILL and
 * -ETIMEDOUT returned. An already reaped child returns its recorded status.
 */
int memsvc_proc_stop(struct memsvc_proc *p, int sig, int timeout_ms, int *status);

/* Print the end of a daemon's log to stderr (the reason it did not start). */
void memsvc_proc_log_tail(const char *log);

/* Kill (SIGKILL) if still running, reap, remove a temp runtime dir we created. NULL ok. */
void memsvc_proc_free(struct memsvc_proc *p);

#endif
