/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-compute --serve-dir=DIR: load the model and the backend once, warm up (which also
 * attaches to memsvc under the usual fallback rules), write DIR/ready, then serve prompt files:
 * DIR/in/NAME.prompt is claimed into DIR/work, generated exactly as a batch job would, answered
 * with DIR/out/NAME.json (the --json document) or DIR/out/NAME.error, and moved to DIR/done.
 * The memsvc session stays open from one request to the next (no arena to map again) while
 * the requests fit in it and it answers; a larger request, or one that failed, opens a new one.
 * SIGTERM or SIGINT: finish the current request, remove DIR/ready, exit 0.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "job_internal.h"
#include "log.h"

#define SERVE_POLL_MS 50
#define SERVE_WARM_TOKENS 256
#define SERVE_SUFFIX ".prompt"

static volatile sig_atomic_t serve_stop;

static void on_stop(int sig)
{
	(void)sig;
	serve_stop = 1;
}

/* DIR/sub[/name] into buf. Returns 0 or -ENAMETOOLONG. */
static int spath(char *buf, size_t len, const char *dir, const char *sub, const char *name)
{
	int n = name ? snprintf(buf, len, "%s/%s/%s", dir, sub, name)
		     : snprintf(buf, len, "%s/%s", dir, sub);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int make_dirs(const char *dir)
{
	static const char *const subs[] = { "in", "work", "out", "done" };
	char p[JOB_PATH_MAX + 16];

	if (mkdir(dir, 0755) && errno != EEXIST)
		return err_from_errno();
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (spath(p, sizeof(p), dir, subs[i], NULL))
			return -ENAMETOOLONG;
		if (mkdir(p, 0755) && errno != EEXIST)
			return err_from_errno();
	}
	return 0;
}

/* Write text to path through a temp file and a rename. Returns 0 or -errno. */
static int write_atomic(const char *path, const char *text)
{
	char tmp[JOB_PATH_MAX + 48];
	FILE *f;
	int rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	if (!(f = fopen(tmp, "w")))
		return err_from_errno();
	if (fputs(text, f) == EOF)
		rc = -EIO;
	if (fclose(f) && !rc)
		rc = err_from_errno();
	if (!rc && rename(tmp, path))
		rc = err_from_errno();
	if (rc)
		unlink(tmp);
	return rc;
}

/* systemd's readiness datagram when NOTIFY_SOCKET is set (sd_notify without libsystemd). */
static void notify(const char *state)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t n;
	int fd;

	if (!sock || (sock[0] != '/' && sock[0] != '@') || (n = strlen(sock)) >= sizeof(a.sun_path))
		return;
	memcpy(a.sun_path, sock, n);
	if (a.sun_path[0] == '@')
		a.sun_path[0] = '\0';
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return;
	if (sendto(fd, state, strlen(state), 0, (struct sockaddr *)&a,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
		log_warn("serve", "cannot notify systemd", "state=%s err=%s", state, strerror(errno));
	close(fd);
}

/*
 * Drop a request's prompts and results. The host session stays for the next request when
 * keep_host and it still answers; otherwise it is closed (the next request opens one).
 */
static void reset_request(struct job *j, bool keep_host)
{
	for (uint32_t i = 0; i < JOB_MAX_RUNS; i++) {
		free(j->res[i].tokens);
		free(j->res[i].layers);
		free(j->res[i].logits);
		memset(&j->res[i], 0, sizeof(j->res[i]));
	}
	for (uint32_t i = 0; j->prompts && i < j->cfg->batch; i++)
		free(j->prompts[i]);
	free(j->prompts);
	free(j->lens);
	j->prompts = NULL;
	j->lens = NULL;
	j->batch = 0;
	if (j->host && (!keep_host || j->host->ops->health(j->host))) {
		kvhost_close(j->host);
		j->host = NULL;
	}
	j->host_rc = 0;
	j->host_err[0] = '\0';
}

/* A short synthetic generation in every mode: device warm-up and a first memsvc attach. */
static int warm_up(struct job *j, const struct job_config *base, char *host, size_t len)
{
	struct job_config c = *base;
	int rc;

	c.prompt_file[0] = '\0';
	c.batch = 1;
	c.new_tokens = 2;
	c.prompt_tokens = base->prompt_tokens < SERVE_WARM_TOKENS ? base->prompt_tokens
								  : SERVE_WARM_TOKENS;
	j->cfg = &c;
	rc = job_make_prompts(j, j->err, sizeof(j->err));
	if (!rc)
		rc = job_run_modes(j);
	snprintf(host, len, "%s", base->store == JOB_STORE_INPROC ? "inproc" : "none");
	for (uint32_t i = 0; !rc && i < j->n_modes; i++)
		if (runner_mode_offloads(j->res[i].ran))
			snprintf(host, len, "%s", base->store == JOB_STORE_INPROC ? "inproc"
										  : "memsvc");
		else if (j->res[i].note[0])
			snprintf(host, len, "fallback");
	if (rc && !j->err[0])
		snprintf(j->err, sizeof(j->err), "warm-up failed: %s", err_str(rc));
	reset_request(j, rc == 0);
	j->cfg = base;
	return rc;
}

static int write_ready(const char *dir, const struct job *j, const char *model_dir,
		       const char *host, uint64_t served, uint64_t failed)
{
	char path[JOB_PATH_MAX + 16], text[2 * JOB_PATH_MAX];

	if (spath(path, sizeof(path), dir, "ready", NULL))
		return -ENAMETOOLONG;
	snprintf(text, sizeof(text),
		 "pid=%d\nbackend=%s\nmodel=%s\nmodes=%s\nhost=%s\nserved=%llu\nfailed=%llu\n",
		 (int)getpid(), j->kb->ops->name, model_dir, j->cfg->modes, host,
		 (unsigned long long)served, (unsigned long long)failed);
	return write_atomic(path, text);
}

/* One claimed request (work/NAME.prompt): out/NAME.json or out/NAME.error. 0 = answered ok. */
static int serve_one(struct job *j, const struct job_config *base, const char *dir,
		     const char *name)
{
	struct job_config c = *base;
	char stem[256], out[JOB_PATH_MAX + 300], tmp[JOB_PATH_MAX + 340];
	int rc;

	snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(name) - strlen(SERVE_SUFFIX)), name);
	if (spath(c.prompt_file, sizeof(c.prompt_file), dir, "work", name))
		return -ENAMETOOLONG;
	j->cfg = &c;
	j->err[0] = '\0';
	log_info("serve", "request", "name=%s", stem);
	if (!(rc = job_make_prompts(j, j->err, sizeof(j->err))) && !(rc = job_run_modes(j))) {
		job_print(j);
		snprintf(out, sizeof(out), "%s/out/%s.json", dir, stem);
		snprintf(tmp, sizeof(tmp), "%s/out/.%s.json.tmp", dir, stem);
		if ((rc = job_write_json(j, tmp)) || rename(tmp, out)) {
			rc = rc ? rc : err_from_errno();
			snprintf(j->err, sizeof(j->err), "cannot write %s: %s", out, err_str(rc));
			unlink(tmp);
		} else if (!job_twins_equal(j)) {
			log_error("serve", "a mode's tokens differ from its twin's", "name=%s", stem);
		}
	}
	if (rc) {
		char msg[sizeof(j->err) + 2];
		if (!j->err[0])
			snprintf(j->err, sizeof(j->err), "%s", err_str(rc));
		log_error("serve", j->err, "name=%s rc=%s", stem, err_name(rc));
		snprintf(msg, sizeof(msg), "%s\n", j->err);
		snprintf(out, sizeof(out), "%s/out/%s.error", dir, stem);
		if (write_atomic(out, msg))
			log_error("serve", "cannot write the error file", "path=%s", out);
	}
	snprintf(out, sizeof(out), "%s/done/%s", dir, name);
	if (rename(c.prompt_file, out))
		log_warn("serve", "cannot move the prompt to done/", "name=%s", name);
	reset_request(j, true); /* a failed request keeps the session too, while it answers */
	j->cfg = base;
	return rc;
}

/* The smallest NAME.prompt of DIR/sub into name (""; none). */
static void next_prompt(const char *dir, const char *sub, char *name, size_t len)
{
	char p[JOB_PATH_MAX + 16];
	struct dirent *e;
	DIR *d;
	size_t sl = strlen(SERVE_SUFFIX);

	name[0] = '\0';
	if (spath(p, sizeof(p), dir, sub, NULL) || !(d = opendir(p)))
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (e->d_name[0] == '.' || n <= sl || n >= len ||
		    strcmp(e->d_name + n - sl, SERVE_SUFFIX) != 0)
			continue;
		if (!name[0] || strcmp(e->d_name, name) < 0)
			snprintf(name, len, "%s", e->d_name);
	}
	closedir(d);
}

/* Move src/name to dst/name. Returns 0 or -errno (-ENOENT: someone else took it). */
static int move(const char *dir, const char *src, const char *dst, const char *name)
{
	char a[JOB_PATH_MAX + 300], b[JOB_PATH_MAX + 300];

	if (spath(a, sizeof(a), dir, src, name) || spath(b, sizeof(b), dir, dst, name))
		return -ENAMETOOLONG;
	return rename(a, b) ? err_from_errno() : 0;
}

int job_serve(const struct job_config *cfg, FILE *out)
{
	struct job j = { .cfg = cfg, .out = out };
	struct sigaction sa = { .sa_handler = on_stop, .sa_flags = SA_RESTART };
	struct timespec nap = { .tv_nsec = SERVE_POLL_MS * 1000000L };
	char model_dir[JOB_PATH_MAX], host[16], name[256], ready[JOB_PATH_MAX + 16];
	uint64_t served = 0, failed = 0;
	int rc = -ENAMETOOLONG, status = 1;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (spath(ready, sizeof(ready), cfg->serve_dir, "ready", NULL) ||
	    (rc = make_dirs(cfg->serve_dir))) {
		snprintf(j.err, sizeof(j.err), "cannot create the serve dir %s", cfg->serve_dir);
		goto out;
	}
	/* Requests a previous process claimed but did not answer go back to in/. */
	for (next_prompt(cfg->serve_dir, "work", name, sizeof(name)); name[0];
	     next_prompt(cfg->serve_dir, "work", name, sizeof(name)))
		if (move(cfg->serve_dir, "work", "in", name))
			break;
	if ((rc = job_open(&j, model_dir, sizeof(model_dir))) ||
	    (rc = warm_up(&j, cfg, host, sizeof(host))))
		goto out;
	if ((rc = write_ready(cfg->serve_dir, &j, model_dir, host, 0, 0))) {
		snprintf(j.err, sizeof(j.err), "cannot write %s: %s", ready, err_str(rc));
		goto out;
	}
	notify("READY=1");
	log_info("serve", "ready", "dir=%s backend=%s host=%s", cfg->serve_dir,
		 j.kb->ops->name, host);
	fflush(out);
	while (!serve_stop) {
		next_prompt(cfg->serve_dir, "in", name, sizeof(name));
		if (!name[0]) {
			nanosleep(&nap, NULL);
			continue;
		}
		if (move(cfg->serve_dir, "in", "work", name))
			continue;
		if (serve_one(&j, cfg, cfg->serve_dir, name))
			failed++;
		else
			served++;
		write_ready(cfg->serve_dir, &j, model_dir, host, served, failed);
		fflush(out);
	}
	notify("STOPPING=1");
	log_info("serve", "stopping", "served=%llu failed=%llu", (unsigned long long)served,
		 (unsigned long long)failed);
	status = 0;
out:
	unlink(ready);
	if (status && j.err[0])
		log_error("serve", j.err, "rc=%s", err_name(rc));
	job_free(&j);
	return status;
}
