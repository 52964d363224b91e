/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench sweep`: the evaluation grid (models x contexts x modes x batches), each
 * configuration one memsvc + compute run recorded as <out>/<name>.json. Resumable (existing
 * records are skipped), splittable (--part K/N) and failure-tolerant (a failed run is recorded).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_cmds.h"
#include "err.h"

enum { LIST_MAX = 64, PASS_MAX = 32 };

struct list {
	char *buf;
	char *v[LIST_MAX];
	int n;
};

struct sweep_opts {
	struct list models, contexts, batches, modes;
	const char *model_dir, *out, *backend;
	unsigned new_tokens, part, parts;
	double timeout_s;
	const char *memsvc_args[PASS_MAX + 1], *compute_args[PASS_MAX + 1];
	int n_memsvc, n_compute;
};

static int list_parse(struct list *l, const char *s)
{
	char *save = NULL, *t;

	free(l->buf);
	l->n = 0;
	if (!(l->buf = strdup(s)))
		return -ENOMEM;
	for (t = strtok_r(l->buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (l->n == LIST_MAX)
			return -E2BIG;
		l->v[l->n++] = t;
	}
	return l->n ? 0 : -EINVAL;
}

static bool parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v == 0 || v > UINT_MAX)
		return false;
	*out = (unsigned)v;
	return true;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sparda bench sweep --out DIR [options]\n"
	    "  --models LIST       preset[:layers],... (default tiny: the embedded model)\n"
	    "  --model-dir DIR     where preset:layers models live (default OUT/models);\n"
	    "                      missing ones are made with `sparda gen-model`\n"
	    "  --contexts LIST     prompt tokens per sequence (default 32768,65536,98304,131072)\n"
	    "  --batches LIST      batch sizes (default 1,4,8)\n"
	    "  --modes LIST        compute modes (default sparse,sparse-offload,sparda,"
	    "sparda-nooffload)\n"
	    "  --new-tokens N      tokens generated per sequence (default 18)\n"
	    "  --backend B         auto, cpu or cuda (default auto)\n"
	    "  --part K/N          run only configurations K, K+N, K+2N, ... (1-based)\n"
	    "  --timeout-s S       kill and record a configuration running longer (default 600)\n"
	    "  --memsvc-arg ARG    pass ARG to sparda-memsvc (repeatable, e.g. --ram-budget=2G)\n"
	    "  --compute-arg ARG   pass ARG to sparda-compute (repeatable)\n"
	    "Writes OUT/<model>_c<ctx>_b<batch>_<mode>.json per configuration, skipping those\n"
	    "that exist; a failed run is recorded with its reason (gpu-oom, host-oom, timeout,\n"
	    "error).\n"
	    "Then: sparda bench report --out DIR\n");
}

enum {
	OPT_MODELS = 256,
	OPT_MODEL_DIR,
	OPT_CONTEXTS,
	OPT_BATCHES,
	OPT_MODES,
	OPT_NEW,
	OPT_OUT,
	OPT_BACKEND,
	OPT_PART,
	OPT_TIMEOUT,
	OPT_MEMSVC,
	OPT_COMPUTE,
	OPT_HELP
};

static const struct option long_opts[] = {
    {"models", required_argument, NULL, OPT_MODELS},
    {"model-dir", required_argument, NULL, OPT_MODEL_DIR},
    {"contexts", required_argument, NULL, OPT_CONTEXTS},
    {"batches", required_argument, NULL, OPT_BATCHES},
    {"modes", required_argument, NULL, OPT_MODES},
    {"new-tokens", required_argument, NULL, OPT_NEW},
    {"out", required_argument, NULL, OPT_OUT},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"part", required_argument, NULL, OPT_PART},
    {"timeout-s", required_argument, NULL, OPT_TIMEOUT},
    {"memsvc-arg", required_argument, NULL, OPT_MEMSVC},
    {"compute-arg", required_argument, NULL, OPT_COMPUTE},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int parse_part(struct sweep_opts *o, const char *s)
{
	unsigned k, n;
	char tail;

	if (sscanf(s, "%u/%u%c", &k, &n, &tail) != 2 || k < 1 || n < 1 || k > n)
		return -EINVAL;
	o->part = k;
	o->parts = n;
	return 0;
}

static int parse_one(struct sweep_opts *o, int c, const char *arg)
{
	char *end;

	switch (c) {
	case OPT_MODELS:
		return list_parse(&o->models, arg);
	case OPT_CONTEXTS:
		return list_parse(&o->contexts, arg);
	case OPT_BATCHES:
		return list_parse(&o->batches, arg);
	case OPT_MODES:
		return list_parse(&o->modes, arg);
	case OPT_MODEL_DIR:
		o->model_dir = arg;
		return 0;
	case OPT_OUT:
		o->out = arg;
		return 0;
	case OPT_BACKEND:
		o->backend = arg;
		return 0;
	case OPT_NEW:
		return parse_uint(arg, &o->new_tokens) ? 0 : -EINVAL;
	case OPT_PART:
		return parse_part(o, arg);
	case OPT_TIMEOUT:
		o->timeout_s = strtod(arg, &end);
		return *end || o->timeout_s < 0 ? -EINVAL : 0;
	case OPT_MEMSVC:
		if (o->n_memsvc == PASS_MAX)
			return -E2BIG;
		o->memsvc_args[o->n_memsvc++] = arg;
		return 0;
	case OPT_COMPUTE:
		if (o->n_compute == PASS_MAX)
			return -E2BIG;
		o->compute_args[o->n_compute++] = arg;
		return 0;
	default:
		return -EINVAL;
	}
}

/* 0, 1 (--help printed) or -errno with a message printed. */
static int parse_args(int argc, char **argv, struct sweep_opts *o)
{
	int c, rc = 0;

	if (list_parse(&o->models, "tiny") ||
	    list_parse(&o->contexts, "32768,65536,98304,131072") ||
	    list_parse(&o->batches, "1,4,8") ||
	    list_parse(&o->modes, "sparse,sparse-offload,sparda,sparda-nooffload"))
		return -ENOMEM;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		if (c == OPT_HELP) {
			usage(stdout);
			return 1;
		}
		if (c == '?' || (rc = parse_one(o, c, optarg))) {
			fprintf(stderr, "sparda bench sweep: bad option %s%s\n",
				c == '?' ? "" : "value ", c == '?' ? argv[optind - 1] : optarg);
			usage(stderr);
			return rc ? rc : -EINVAL;
		}
	}
	if (!o->out || optind < argc) {
		fprintf(stderr, "sparda bench sweep: --out DIR is required, no positional args\n");
		return -EINVAL;
	}
	return 0;
}

struct model {
	char spec[128], preset[64], stem[96], dir[PATH_MAX];
	unsigned layers;
	int ready; /* 0: not checked, 1: present, <0: generation failed */
};

static int model_parse(const char *spec, const char *model_dir, struct model *m)
{
	const char *colon = strchr(spec, ':');
	size_t plen = colon ? (size_t)(colon - spec) : strlen(spec);

	memset(m, 0, sizeof(*m));
	if (!plen || plen >= sizeof(m->preset) || (colon && !parse_uint(colon + 1, &m->layers)))
		return -EINVAL;
	snprintf(m->spec, sizeof(m->spec), "%s", spec);
	memcpy(m->preset, spec, plen);
	if (!m->layers) { /* the embedded model: sparda-compute generates and caches it */
		snprintf(m->stem, sizeof(m->stem), "%s", m->preset);
		m->ready = 1;
		return 0;
	}
	snprintf(m->stem, sizeof(m->stem), "%s-l%u", m->preset, m->layers);
	if ((size_t)snprintf(m->dir, sizeof(m->dir), "%s/%s", model_dir, m->stem) >= sizeof(m->dir))
		return -ENAMETOOLONG;
	return 0;
}

/* `sparda gen-model --preset P --layers L --out DIR` unless DIR/config.json exists. */
static int model_ensure(struct model *m, const char *out)
{
	char self[PATH_MAX], probe[PATH_MAX + 16], layers[16], log[PATH_MAX];
	int status;
	pid_t pid;

	snprintf(probe, sizeof(probe), "%s/config.json", m->dir);
	if (m->ready)
		return m->ready < 0 ? m->ready : 0;
	if (access(probe, F_OK) == 0)
		return m->ready = 1, 0;
	if (sweep_sibling("sparda", self, sizeof(self)))
		return m->ready = -ENOENT;
	snprintf(layers, sizeof(layers), "%u", m->layers);
	snprintf(log, sizeof(log), "%s/logs/gen-%s.log", out, m->stem);
	printf("generating %s into %s (log %s)\n", m->spec, m->dir, log);
	fflush(stdout);
	if ((pid = fork()) < 0)
		return m->ready = -errno;
	if (pid == 0) {
		if (!freopen(log, "w", stdout) || dup2(fileno(stdout), STDERR_FILENO) < 0)
			_exit(127);
		execl(self, self, "gen-model", "--preset", m->preset, "--layers", layers, "--out",
		      m->dir, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return m->ready = -errno;
	m->ready = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : -EIO;
	return m->ready < 0 ? m->ready : 0;
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(buf, 0755) && errno != EEXIST ? -errno : 0;
}

struct tally {
	unsigned total, selected, skipped, ok, failed;
};

/* Run (or skip) one grid point. Returns 0, or -errno when its record cannot be written. */
static int sweep_point(const struct sweep_opts *o, struct model *m, struct sweep_cfg *c,
		       struct tally *t)
{
	char name[256], path[PATH_MAX];
	bool ok = false;
	int rc;

	snprintf(name, sizeof(name), "%s_c%u_b%u_%s", m->stem, c->context, c->batch, c->mode);
	snprintf(path, sizeof(path), "%s/%s.json", o->out, name);
	c->name = name;
	t->selected++;
	if (access(path, F_OK) == 0) {
		t->skipped++;
		printf("[%u] %s: exists, skipped\n", t->total, name);
		return 0;
	}
	if ((rc = model_ensure(m, o->out))) {
		t->failed++;
		printf("[%u] %s: model %s unavailable (%s), not recorded\n", t->total, name,
		       m->spec, err_str(rc));
		return 0;
	}
	c->model_spec = m->spec;
	c->preset = m->preset;
	c->layers = m->layers;
	c->model_dir = m->dir;
	if ((rc = sweep_run_one(c, &ok))) {
		fprintf(stderr, "sparda bench sweep: cannot write %s: %s\n", path, err_str(rc));
		return rc;
	}
	ok ? t->ok++ : t->failed++;
	printf("[%u] %s: %s\n", t->total, name, ok ? "ok" : "FAILED (see its record)");
	fflush(stdout);
	return 0;
}

static int sweep_grid(const struct sweep_opts *o, struct model *models, struct tally *t)
{
	struct sweep_cfg c = {.new_tokens = o->new_tokens,
			      .backend = o->backend,
			      .out = o->out,
			      .timeout_s = o->timeout_s,
			      .memsvc_args = o->memsvc_args,
			      .compute_args = o->compute_args};
	int rc;

	for (int mi = 0; mi < o->models.n; mi++)
		for (int ci = 0; ci < o->contexts.n; ci++)
			for (int di = 0; di < o->modes.n; di++)
				for (int bi = 0; bi < o->batches.n; bi++) {
					if (t->total++ % o->parts != o->part - 1)
						continue;
					parse_uint(o->contexts.v[ci], &c.context);
					parse_uint(o->batches.v[bi], &c.batch);
					c.mode = o->modes.v[di];
					if ((rc = sweep_point(o, &models[mi], &c, t)))
						return rc;
				}
	return 0;
}

static int sweep_check(struct sweep_opts *o, struct model *models)
{
	char dir[PATH_MAX];
	unsigned v;
	int rc;

	for (int i = 0; i < o->contexts.n; i++)
		if (!parse_uint(o->contexts.v[i], &v))
			return -EINVAL;
	for (int i = 0; i < o->batches.n; i++)
		if (!parse_uint(o->batches.v[i], &v))
			return -EINVAL;
	snprintf(dir, sizeof(dir), "%s/models", o->out);
	for (int i = 0; i < o->models.n; i++)
		if ((rc = model_parse(o->models.v[i], o->model_dir ? o->model_dir : dir,
				      &models[i])))
			return rc;
	snprintf(dir, sizeof(dir), "%s/logs", o->out);
	return mkdir_p(dir);
}

int bench_sweep(int argc, char **argv)
{
	struct sweep_opts o = {
	    .backend = "auto", .new_tokens = 18, .part = 1, .parts = 1, .timeout_s = 600};
	struct model models[LIST_MAX];
	struct tally t = {0};
	int rc = parse_args(argc, argv, &o), code = 2;

	if (rc)
		goto out_free;
	if ((rc = sweep_check(&o, models))) {
		fprintf(stderr, "sparda bench sweep: bad grid or output dir: %s\n", err_str(rc));
		goto out_free;
	}
	printf("sweep: %d models x %d contexts x %d modes x %d batches, part %u/%u, out %s\n",
	       o.models.n, o.contexts.n, o.modes.n, o.batches.n, o.part, o.parts, o.out);
	rc = sweep_grid(&o, models, &t);
	printf("sweep: %u of %u configurations in this part: %u ok, %u failed, %u skipped\n",
	       t.selected, t.total, t.ok, t.failed, t.skipped);
	code = rc ? 1 : 0;
out_free:
	free(o.models.buf);
	free(o.contexts.buf);
	free(o.batches.buf);
	free(o.modes.buf);
	return rc == 1 ? 0 : code;
}
