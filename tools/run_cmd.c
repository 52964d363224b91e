/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda run`: the main job. Starts sparda-memsvc in a fresh runtime directory, runs
 * sparda-compute against it (by default every mode on the embedded tiny model, printing the
 * results table), then drains memsvc with SIGTERM. --memsvc-arg=ARG (repeatable) goes to
 * sparda-memsvc; every other flag to sparda-compute.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "memsvc_proc.h"
#include "ops_cmd.h"
#include "sparda.h"

/* Path of a binary installed next to this one. */
static int sibling(const char *name, char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -errno;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	if ((size_t)snprintf(buf, len, "%s/%s", self, name) >= len)
		return -ENAMETOOLONG;
	return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
	size_t n = strlen(flag);
	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], flag, n) && (argv[i][n] == 0 || argv[i][n] == '='))
			return true;
	return false;
}

static int run_compute(const char *bin, const char *rundir, int argc, char **argv)
{
	char **av = calloc((size_t)argc + 4, sizeof(char *));
	char rd[PATH_MAX + 16];
	int n = 0, status;
	pid_t pid;

	if (!av)
		return -ENOMEM;
	snprintf(rd, sizeof(rd), "--runtime-dir=%s", rundir);
	av[n++] = (char *)bin;
	av[n++] = rd;
	if (!has_flag(argc, argv, "--modes"))
		av[n++] = "--modes=all";
	for (int i = 1; i < argc; i++)
		av[n++] = argv[i];
	av[n] = NULL;
	pid = fork();
	if (pid < 0) {
		free(av);
		return -errno;
	}
	if (pid == 0) {
		execv(bin, av);
		fprintf(stderr, "sparda run: cannot execute %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	free(av);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * Split argv: --memsvc-arg=ARG and --memsvc-arg ARG into margs (NULL-terminated), the rest
 * (argv[0] first) into cargs. Returns the count of cargs, or -EINVAL for a --memsvc-arg
 * without its value.
 */
static int split_args(int argc, char **argv, char **cargs, const char **margs)
{
	int nc = 0, nm = 0, m;

	cargs[nc++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if ((m = ops_flag(argc, argv, &i, "--memsvc-arg", &margs[nm])) < 0)
			return m;
		if (m)
			nm++;
		else
			cargs[nc++] = argv[i];
	}
	margs[nm] = NULL;
	cargs[nc] = NULL;
	return nc;
}

/* The job: memsvc with margs, then sparda-compute with argv[1..]; the exit status. */
static int run_job(int argc, char **argv, const char **margs)
{
	char memsvc[PATH_MAX], compute[PATH_MAX];
	struct memsvc_proc_opts po = { 0 };
	struct memsvc_proc *p = NULL;
	int rc, status = 0, code;

	if (has_flag(argc, argv, "--help")) {
		printf(
		    "usage: sparda run [--memsvc-arg=ARG]... [sparda-compute flags]\n"
		    "Starts sparda-memsvc in a fresh runtime directory (with each --memsvc-arg,\n"
		    "e.g. --memsvc-arg=--ram-budget=100G), runs sparda-compute (default\n"
		    "--modes=all on the embedded tiny model) and stops memsvc.\n"
		    "sparda-compute's flags:\n\n");
		fflush(stdout);
	}
	if ((rc = sibling("sparda-compute", compute, sizeof(compute)))) {
		fprintf(stderr, "sparda run: sparda-compute not found next to sparda: %s\n",
			err_str(rc));
		return 1;
	}
	if (has_flag(argc, argv, "--help"))
		return run_compute(compute, "/nonexistent", argc, argv);
	if ((rc = memsvc_proc_find_binary(memsvc, sizeof(memsvc)))) {
		fprintf(stderr, "sparda run: sparda-memsvc not found: %s\n", err_str(rc));
		return 1;
	}
	po.binary = memsvc;
	po.args = margs;
	po.capture_stderr = true;
	if ((rc = memsvc_proc_start(&po, &p))) {
		if (rc == -ECHILD)
			fprintf(stderr, "sparda run: sparda-memsvc exited before it was ready\n");
		else
			fprintf(stderr, "sparda run: sparda-memsvc did not start: %s\n",
				err_str(rc));
		if (p)
			memsvc_proc_log_tail(memsvc_proc_log_path(p));
		memsvc_proc_free(p);
		return 1;
	}
	printf("sparda-memsvc running (pid %d, runtime dir %s)\n", (int)memsvc_proc_pid(p),
	       memsvc_proc_runtime_dir(p));
	fflush(stdout);
	code = run_compute(compute, memsvc_proc_runtime_dir(p), argc, argv);
	rc = memsvc_proc_stop(p, SIGTERM, 10000, &status);
	if (rc)
		fprintf(stderr, "sparda run: sparda-memsvc did not drain: %s\n", err_str(rc));
	else
		printf("sparda-memsvc drained and exited with status %d\n",
		       WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	memsvc_proc_free(p);
	if (code < 0) {
		fprintf(stderr, "sparda run: cannot run sparda-compute: %s\n", err_str(code));
		return 1;
	}
	return code ? code : (rc || !WIFEXITED(status) || WEXITSTATUS(status) ? 1 : 0);
}

int cmd_run(int argc, char **argv)
{
	char **cargs = calloc((size_t)argc + 1, sizeof(char *));
	const char **margs = calloc((size_t)argc + 1, sizeof(char *));
	int code;

	if (!cargs || !margs) {
		free(cargs), free(margs);
		fprintf(stderr, "sparda run: %s\n", err_str(-ENOMEM));
		return 1;
	}
	if ((argc = split_args(argc, argv, cargs, margs)) < 0) {
		free(cargs), free(margs);
		fprintf(stderr, "sparda run: --memsvc-arg needs a value, e.g. "
				"--memsvc-arg=--ram-budget=100G\n");
		return 2;
	}
	code = run_job(argc, cargs, margs);
	free(cargs), free(margs);
	return code;
}
