/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda bench sweep`: the evaluation grid (models x contexts x batches), each configuration
 * one memsvc + compute run of all its modes recorded as <out>/<name>.json. Resumable (existing
 * records are skipped, or joined by the modes they lack when made with the same pass-through
 * arguments), splittable (--part K/N, --budget-s), failure-tolerant (a failed mode is
 * recorded), with the feasible-batch search (a mode stops at its first out-of-memory batch;
 * --batch-refine bisects between that batch and its largest ok one).
 * Generated models get a fitted Forecast (`gen-model --train-forecast`, which keeps the
 * generator's where the fit scores lower on held-out sequences) unless asked otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bench_cmds.h"
#include "bench_sweep.h"
#include "err.h"
#include "timeutil.h"

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

bool sweep_parse_uint(const char *s, unsigned *out)
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
	    "                      missing ones are made with `sparda gen-model\n"
	    "                      --train-forecast` (a fitted Forecast, ridge, where it\n"
	    "                      beats the generator's on held-out sequences)\n"
	    "  --random-forecast   generate them without the fit: the generator's untrained\n"
	    "                      Forecast (models <preset>-l<layers>-random, recorded as\n"
	    "                      model <preset>:<layers>+random-forecast); the embedded model\n"
	    "                      (a preset without :layers) always has its fitted one\n"
	    "  --shared-activation F  generate them with `gen-model --shared-activation F`\n"
	    "                      (step-to-step locality of block selection; models\n"
	    "                      <preset>-l<layers>-sa<F>, recorded as model\n"
	    "                      <preset>:<layers>+shared<F>)\n"
	    "  --contexts LIST     prompt tokens per sequence (default 32768,65536,98304,131072)\n"
	    "  --batches LIST      batch sizes (default 1,4,8)\n"
	    "  --batch-max N       after the list, double the last batch up to N (default 0: no)\n"
	    "  --batch-refine N    then bisect where each mode runs out of memory: between its\n"
	    "                      largest ok batch and its first gpu-oom/host-oom one, run it\n"
	    "                      (and the modes that need the same batch) at the midpoint,\n"
	    "                      until they are at most N apart (default 0: off); done in\n"
	    "                      the part that holds that first out-of-memory batch, without\n"
	    "                      in-process runs, into OUT/<model>_c<ctx>_b<batch>.json\n"
	    "  --modes LIST        compute modes, run in one process per configuration\n"
	    "                      (default sparse,sparse-offload,sparda,sparda-nooffload)\n"
	    "  --inproc-modes LIST also run these modes with the in-process arena, in the\n"
	    "                      configuration's own process after its memsvc modes\n"
	    "                      (compute --inproc-modes; in a process of their own,\n"
	    "                      --host-store=inproc, where that one did not finish them):\n"
	    "                      OUT/<config>_inproc.json\n"
	    "  --new-tokens N      tokens generated per sequence (default 18)\n"
	    "  --backend B         auto, cpu or cuda (default auto)\n"
	    "  --part K/N          run only the K-th of N contiguous slices of the grid, which\n"
	    "                      goes batch by batch (run parts in order 1..N)\n"
	    "  --timeout-s S       kill and record a configuration running longer (default 600)\n"
	    "  --dry-run           print which configurations and modes would run; run nothing\n"
	    "  --budget-s S        start no configuration that could end after S seconds (its\n"
	    "                      time estimated from the record of the same model and context\n"
	    "                      at the largest batch up to its own, else its --timeout-s);\n"
	    "                      exit 3 when some are left (run the same command again)\n"
	    "  --memsvc-arg ARG    pass ARG to sparda-memsvc (repeatable, e.g. --ram-budget=2G)\n"
	    "  --compute-arg ARG   pass ARG to sparda-compute (repeatable)\n"
	    "Writes OUT/<model>_c<ctx>_b<batch>.json per configuration, skipping those that\n"
	    "exist; a failed mode is recorded with its reason (gpu-oom, host-oom, timeout,\n"
	    "error), the modes that finished before it keep their figures, and those not\n"
	    "reached run again in one process; a mode that ran out of memory (or time) is not\n"
	    "run at larger batches of the same model and context.\n"
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
	OPT_BATCH_MAX,
	OPT_INPROC,
	OPT_BUDGET,
	OPT_DRY_RUN,
	OPT_RANDOM_FC,
	OPT_SHARED,
	OPT_REFINE,
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
    {"batch-max", required_argument, NULL, OPT_BATCH_MAX},
    {"inproc-modes", required_argument, NULL, OPT_INPROC},
    {"budget-s", required_argument, NULL, OPT_BUDGET},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"random-forecast", no_argument, NULL, OPT_RANDOM_FC},
    {"shared-activation", required_argument, NULL, OPT_SHARED},
    {"batch-refine", required_argument, NULL, OPT_REFINE},
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
	case OPT_INPROC:
		return list_parse(&o->inproc, arg);
	case OPT_BATCH_MAX: /* 0: the list only */
		o->batch_max = 0;
		return !strcmp(arg, "0") || sweep_parse_uint(arg, &o->batch_max) ? 0 : -EINVAL;
	case OPT_REFINE: /* 0: off */
		o->refine = 0;
		return !strcmp(arg, "0") || sweep_parse_uint(arg, &o->refine) ? 0 : -EINVAL;
	case OPT_DRY_RUN:
		o->dry_run = true;
		return 0;
	case OPT_RANDOM_FC:
		o->random_forecast = true;
		return 0;
	case OPT_SHARED: { /* a fraction in (0, 1), kept as typed: it names the model */
		double f = strtod(arg, &end);

		o->shared = arg;
		return *end || end == arg || !(f > 0 && f < 1) || strlen(arg) > 16 ? -EINVAL : 0;
	}
	case OPT_BUDGET:
		o->budget_s = strtod(arg, &end);
		return *end || o->budget_s < 0 ? -EINVAL : 0;
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
		return sweep_parse_uint(arg, &o->new_tokens) ? 0 : -EINVAL;
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

/* label: what records call the model (the spec, marked when its Forecast is the random one). */
static int model_parse(const char *spec, const char *model_dir, bool random_fc, const char *shared,
		       struct model *m)
{
	const char *colon = strchr(spec, ':');
	size_t plen = colon ? (size_t)(colon - spec) : strlen(spec);

	memset(m, 0, sizeof(*m));
	if (!plen || plen >= sizeof(m->preset) ||
	    (colon && !sweep_parse_uint(colon + 1, &m->layers)))
		return -EINVAL;
	snprintf(m->spec, sizeof(m->spec), "%s", spec);
	snprintf(m->label, sizeof(m->label), "%s", spec);
	memcpy(m->preset, spec, plen);
	if (!m->layers) { /* the embedded model: sparda-compute generates and caches it */
		snprintf(m->stem, sizeof(m->stem), "%s", m->preset);
		m->ready = 1;
		return 0;
	}
	m->random_forecast = random_fc;
	m->shared = shared;
	snprintf(m->stem, sizeof(m->stem), "%s-l%u%s%s%s", m->preset, m->layers,
		 random_fc ? "-random" : "", shared ? "-sa" : "", shared ? shared : "");
	snprintf(m->label, sizeof(m->label), "%s%s%s%s", spec, random_fc ? "+random-forecast" : "",
		 shared ? "+shared" : "", shared ? shared : "");
	if ((size_t)snprintf(m->dir, sizeof(m->dir), "%s/%s", model_dir, m->stem) >= sizeof(m->dir))
		return -ENAMETOOLONG;
	return 0;
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

/*
 * `sparda gen-model --preset P --layers L --out DIR.part [--train-forecast --forecast-backend
 * B]`, then DIR.part -> DIR, unless DIR/config.json exists (a generation cut short never
 * leaves a DIR that looks complete).
 */
static int model_ensure(struct model *m, const char *out, const char *backend)
{
	char self[PATH_MAX], probe[PATH_MAX + 16], layers[16], log[PATH_MAX], part[PATH_MAX + 8];
	char *slash;
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
	snprintf(part, sizeof(part), "%s.part", m->dir);
	snprintf(probe, sizeof(probe), "%s", m->dir);
	if ((slash = strrchr(probe, '/')) && slash != probe) {
		*slash = 0;
		if ((status = mkdir_p(probe)))
			return m->ready = status;
	}
	printf("generating %s into %s with %s Forecast (log %s)\n", m->label, m->dir,
	       m->random_forecast ? "the generator's"
				  : "a fitted Forecast where it beats the generator's, else its",
	       log);
	fflush(stdout);
	if ((pid = fork()) < 0)
		return m->ready = -errno;
	if (pid == 0) {
		if (!freopen(log, "w", stdout) || dup2(fileno(stdout), STDERR_FILENO) < 0)
			_exit(127);
		char *av[] = {self,
			      "gen-model",
			      "--preset",
			      m->preset,
			      "--layers",
			      layers,
			      "--out",
			      part,
			      "--train-forecast",
			      "--forecast-backend",
			      (char *)backend,
			      NULL,
			      NULL,
			      NULL};
		int n = 11;

		if (m->random_forecast)
			n = 8; /* no --train-forecast and what follows it */
		if (m->shared) {
			av[n++] = "--shared-activation";
			av[n++] = (char *)m->shared;
		}
		av[n] = NULL;
		execv(self, av);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return m->ready = -errno;
	m->ready = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : -EIO;
	if (m->ready == 1 && rename(part, m->dir))
		m->ready = -errno;
	return m->ready < 0 ? m->ready : 0;
}

bool sweep_record_status(const struct sweep_opts *o, const char *stem, unsigned ctx, unsigned batch,
			 const char *suffix, const char *mode, char *buf, size_t len)
{
	char path[PATH_MAX];
	json_object *r, *modes, *m, *st;

	buf[0] = 0;
	snprintf(path, sizeof(path), "%s/%s_c%u_b%u%s.json", o->out, stem, ctx, batch, suffix);
	if (access(path, F_OK))
		return false;
	if (!(r = json_object_from_file(path)))
		return true;
	if (json_object_object_get_ex(r, "modes", &modes) &&
	    json_object_object_get_ex(modes, mode, &m) &&
	    json_object_object_get_ex(m, "status", &st))
		snprintf(buf, len, "%s", json_object_get_string(st));
	json_object_put(r);
	return true;
}

/* Does a failure end a mode's batch search? Out of memory does, and so does the time limit: a
 * larger batch would only run out of it again. */
static bool ends_search(const char *status)
{
	return !strcmp(status, "gpu-oom") || !strcmp(status, "host-oom") ||
	       !strcmp(status, "timeout");
}

/*
 * Which modes of a configuration run and which are skipped: a mode that ran out of memory (or
 * time) at a smaller batch of the ladder; for the in-process run, a mode that did not run with
 * memsvc.
 */
/*
 * Did a record of a smaller batch (ladder[0..bi)) of this model and context end mode's batch
 * search (out of memory or time)? Then why (e.g. "host-oom at batch 2") into why, and true.
 */
static bool search_ended(const struct sweep_opts *o, const struct model *m,
			 const struct sweep_cfg *c, int bi, const char *suffix, const char *mode,
			 char *why, size_t len)
{
	char st[32];

	for (int b = 0; b < bi; b++) {
		sweep_record_status(o, m->stem, c->context, o->ladder[b], suffix, mode, st,
				    sizeof(st));
		if (ends_search(st)) {
			snprintf(why, len, "%s at batch %u", st, o->ladder[b]);
			return true;
		}
	}
	return false;
}

static void plan_modes(const struct sweep_opts *o, const struct model *m, struct sweep_cfg *c,
		       int bi, bool inproc, const char **run, struct sweep_skip *skip)
{
	const struct list *l = inproc ? &o->inproc : &o->modes;
	const char *suffix = inproc ? "_inproc" : "";
	char st[32];

	c->n_modes = c->n_skips = 0;
	for (int i = 0; i < l->n; i++) {
		const char *mode = l->v[i];
		struct sweep_skip *sk = &skip[c->n_skips];

		sk->why[0] = 0;
		search_ended(o, m, c, bi, suffix, mode, sk->why, sizeof(sk->why));
		if (inproc && !sk->why[0]) {
			sweep_record_status(o, m->stem, c->context, c->batch, "", mode, st,
					    sizeof(st));
			if (strcmp(st, "ok"))
				snprintf(sk->why, sizeof(sk->why), "with memsvc: %s",
					 st[0] ? st : "not run");
		}
		if (sk->why[0]) {
			sk->mode = mode;
			c->n_skips++;
		} else {
			run[c->n_modes++] = mode;
		}
	}
	c->modes = run;
	c->skips = skip;
}

/*
 * The --inproc-modes the memsvc configuration's process runs again with the in-process arena:
 * those it runs itself, unless an in-process record of a smaller batch ended their search.
 */
static void plan_inproc(const struct sweep_opts *o, const struct model *m, struct sweep_cfg *c,
			int bi, const char **run)
{
	char why[96];

	c->n_inproc = 0;
	for (int i = 0; i < o->inproc.n; i++) {
		const char *mode = o->inproc.v[i];
		bool go = false;

		for (int k = 0; k < c->n_modes && !go; k++)
			go = !strcmp(c->modes[k], mode);
		if (go && !search_ended(o, m, c, bi, "_inproc", mode, why, sizeof(why)))
			run[c->n_inproc++] = mode;
	}
	c->inproc_modes = run;
}

static void print_plan(unsigned i, const char *name, const struct sweep_cfg *c)
{
	printf("[%u] %s: would run", i, name);
	for (int k = 0; k < c->n_modes; k++)
		printf("%s%s", k ? "," : " ", c->modes[k]);
	if (!c->n_modes)
		printf(" nothing");
	for (int k = 0; k < c->n_inproc; k++)
		printf("%s%s", k ? "," : ", then in-process ", c->inproc_modes[k]);
	for (int k = 0; k < c->n_skips; k++)
		printf("%s%s (%s)", k ? ", " : "; skipped: ", c->skips[k].mode, c->skips[k].why);
	printf("\n");
}

bool sweep_over_budget(const struct sweep_opts *o, const char *stem, const struct sweep_cfg *c)
{
	double el = (double)(time_now_ns() - o->t0) / 1e9, need;
	char from[256];
	bool capped;

	if (o->budget_s <= 0)
		return false;
	need = sweep_estimate_s(o, stem, c, from, sizeof(from));
	if (el + need <= o->budget_s)
		return false;
	capped = from[0] && o->timeout_s > 0 && need >= o->timeout_s;
	printf("sweep: %s may take %.0f s (%s%s%s), %.0f s of the budget are left\n", c->name, need,
	       from[0] ? "estimated from " : "its --timeout-s", from,
	       capped ? ", at most its --timeout-s" : "", o->budget_s - el);
	return true;
}

int sweep_run_planned(const struct sweep_opts *o, struct model *m, struct sweep_cfg *c,
		      const char *tag, struct tally *t, struct sweep_outcome *so)
{
	int rc;

	if (c->n_modes && (t->stopped || (t->stopped = sweep_over_budget(o, m->stem, c))))
		return 1;
	if (c->n_modes && (rc = model_ensure(m, o->out, o->backend))) {
		t->modes_failed += (unsigned)c->n_modes;
		printf("%s %s: model %s unavailable (%s), not recorded\n", tag, c->name, m->spec,
		       err_str(rc));
		return 1;
	}
	/* again: generating the model may have taken long */
	if (c->n_modes && (t->stopped = sweep_over_budget(o, m->stem, c)))
		return 1;
	c->model_spec = m->label;
	c->preset = m->preset;
	c->layers = m->layers;
	c->model_dir = m->dir;
	if ((rc = sweep_run_config(c, so))) {
		fprintf(stderr, "sparda bench sweep: cannot write %s/%s.json: %s\n", o->out,
			c->name, err_str(rc));
		return rc;
	}
	printf("%s %s: %d modes ok, %d failed, %d skipped, in %d run%s%s\n", tag, c->name, so->ok,
	       so->failed, c->n_skips, so->runs, so->runs == 1 ? "" : "s",
	       so->inproc_recorded ? " (and its in-process runs, same process)" : "");
	fflush(stdout);
	return 0;
}

/*
 * A record of this configuration exists (c->merge): keep only the modes and skips it does not
 * hold yet (e.g. it was written by another mode's --batch-refine, or a grid of other modes).
 * Returns whether any is left.
 */
static bool keep_missing(struct sweep_cfg *c, const char *path)
{
	const char **run = (const char **)c->modes;
	struct sweep_skip *skip = (struct sweep_skip *)c->skips;
	json_object *r = json_object_from_file(path), *modes = NULL;
	int n = 0, k = 0;

	if (r)
		json_object_object_get_ex(r, "modes", &modes);
	for (int i = 0; i < c->n_modes; i++)
		if (!modes || !json_object_object_get_ex(modes, run[i], NULL))
			run[n++] = run[i];
	for (int i = 0; i < c->n_skips; i++)
		if (!modes || !json_object_object_get_ex(modes, skip[i].mode, NULL))
			skip[k++] = skip[i];
	json_object_put(r);
	c->n_modes = n;
	c->n_skips = k;
	return n + k > 0;
}

/* Run (or skip) one configuration. Returns 0, or -errno when its record cannot be written. */
static int sweep_point(const struct sweep_opts *o, struct model *m, struct sweep_cfg *c, int bi,
		       bool inproc, struct tally *t)
{
	char name[256], path[PATH_MAX], mem[PATH_MAX], tag[16];
	const char *run[LIST_MAX], *inrun[LIST_MAX];
	struct sweep_skip skip[LIST_MAX];
	struct sweep_outcome so = {0};
	int rc;

	snprintf(name, sizeof(name), "%s_c%u_b%u%s", m->stem, c->context, c->batch,
		 inproc ? "_inproc" : "");
	snprintf(path, sizeof(path), "%s/%s.json", o->out, name);
	c->name = name;
	c->store = inproc ? "inproc" : "memsvc";
	c->merge = false;
	switch (sweep_record_mergeable(c, path)) {
	case 0:
		break;
	case 1: /* the modes it lacks join it, below */
		c->merge = true;
		break;
	default:
		t->skipped++;
		printf("[%u] %s: exists (with other --compute-arg/--memsvc-arg, or unreadable), "
		       "skipped\n",
		       t->total, name);
		return 0;
	}
	if (inproc) { /* after the memsvc record of the configuration, which it is compared with */
		snprintf(mem, sizeof(mem), "%s/%s_c%u_b%u.json", o->out, m->stem, c->context,
			 c->batch);
		if (access(mem, F_OK)) {
			t->left += t->stopped;
			if (o->dry_run)
				printf(
				    "[%u] %s: runs in the process of %s_c%u_b%u (in one of its own "
				    "if that one does not finish it)\n",
				    t->total, name, m->stem, c->context, c->batch);
			return 0;
		}
	}
	plan_modes(o, m, c, bi, inproc, run, skip);
	c->n_inproc = 0;
	if (c->merge && !keep_missing(c, path)) {
		t->skipped++;
		printf("[%u] %s: exists, skipped\n", t->total, name);
		return 0;
	}
	if (!inproc && !c->merge) /* a merge's in-process runs get a process of their own */
		plan_inproc(o, m, c, bi, inrun);
	if (o->dry_run) {
		t->planned += c->n_modes > 0;
		print_plan(t->total, name, c);
		return 0;
	}
	snprintf(tag, sizeof(tag), "[%u]", t->total);
	rc = sweep_run_planned(o, m, c, tag, t, &so);
	if (rc == 1 && t->stopped)
		t->left++;
	if (rc)
		return rc < 0 ? rc : 0;
	t->ran++;
	t->same = so.inproc_recorded;
	t->modes_ok += (unsigned)so.ok;
	t->modes_failed += (unsigned)so.failed;
	return 0;
}

void sweep_part_range(const struct sweep_opts *o, unsigned *lo, unsigned *hi)
{
	unsigned n = (unsigned)(o->n_ladder * o->models.n * o->contexts.n);

	*lo = (o->part - 1) * n / o->parts;
	*hi = o->part * n / o->parts;
}

static int sweep_grid(const struct sweep_opts *o, struct model *models, struct tally *t)
{
	struct sweep_cfg c = {.new_tokens = o->new_tokens,
			      .backend = o->backend,
			      .out = o->out,
			      .timeout_s = o->timeout_s,
			      .memsvc_args = o->memsvc_args,
			      .compute_args = o->compute_args};
	unsigned lo, hi;
	int rc;

	sweep_part_range(o, &lo, &hi);
	/* batch outermost: a part's configurations are contiguous in this order, so parts run in
	 * order 1..N see every smaller batch of a (model, context) recorded before a larger one */
	for (int bi = 0; bi < o->n_ladder; bi++)
		for (int mi = 0; mi < o->models.n; mi++)
			for (int ci = 0; ci < o->contexts.n; ci++) {
				unsigned idx = t->total++;

				if (idx < lo || idx >= hi)
					continue;
				t->selected++;
				sweep_parse_uint(o->contexts.v[ci], &c.context);
				c.batch = o->ladder[bi];
				t->same = false;
				if ((rc = sweep_point(o, &models[mi], &c, bi, false, t)))
					return rc;
				if (o->inproc.n && !t->same &&
				    (rc = sweep_point(o, &models[mi], &c, bi, true, t)))
					return rc;
			}
	return 0;
}

/* A grid the sweep cannot run: the problem on stderr, -EINVAL. */
static int __attribute__((format(printf, 1, 2))) grid_err(const char *fmt, ...)
{
	va_list ap;

	fputs("sparda bench sweep: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -EINVAL;
}

/* The batch list, then the last batch doubled while it stays <= batch_max. */
static int make_ladder(struct sweep_opts *o)
{
	unsigned v = 0;

	for (int i = 0; i < o->batches.n; i++) {
		if (!sweep_parse_uint(o->batches.v[i], &v))
			return grid_err("--batches: '%s' is not a positive integer",
					o->batches.v[i]);
		if (i && v <= o->ladder[i - 1]) /* the batch search relies on it */
			return grid_err("--batches: %u after %u: the list must be ascending", v,
					o->ladder[i - 1]);
		o->ladder[o->n_ladder++] = v;
	}
	while (o->batch_max && v <= o->batch_max / 2 && o->n_ladder < LIST_MAX)
		o->ladder[o->n_ladder++] = v *= 2;
	return 0;
}

static int sweep_check(struct sweep_opts *o, struct model *models)
{
	char dir[PATH_MAX];
	unsigned v;
	int rc;

	for (int i = 0; i < o->contexts.n; i++)
		if (!sweep_parse_uint(o->contexts.v[i], &v))
			return grid_err("--contexts: '%s' is not a positive integer",
					o->contexts.v[i]);
	if ((rc = make_ladder(o)))
		return rc;
	snprintf(dir, sizeof(dir), "%s/models", o->out);
	for (int i = 0; i < o->models.n; i++) {
		if ((rc = model_parse(o->models.v[i], o->model_dir ? o->model_dir : dir,
				      o->random_forecast, o->shared, &models[i])))
			return grid_err("--models: '%s': %s (PRESET or PRESET:LAYERS)",
					o->models.v[i], err_str(rc));
		if (o->random_forecast && !models[i].layers)
			printf("sweep: %s is the embedded model, whose Forecast is always fitted "
			       "(--random-forecast applies to preset:layers models)\n",
			       models[i].spec);
	}
	snprintf(dir, sizeof(dir), "%s/logs", o->out);
	if (!o->dry_run && (rc = mkdir_p(dir)))
		return grid_err("cannot create %s: %s", dir, err_str(rc));
	return 0;
}

int bench_sweep(int argc, char **argv)
{
	struct sweep_opts o = {.backend = "auto",
			       .new_tokens = 18,
			       .part = 1,
			       .parts = 1,
			       .timeout_s = 600,
			       .t0 = time_now_ns()};
	struct model models[LIST_MAX];
	struct tally t = {0};
	int rc = parse_args(argc, argv, &o), code = 2;

	if (rc)
		goto out_free;
	if ((rc = sweep_check(&o, models))) /* it named the problem */
		goto out_free;
	printf("sweep: %d models x %d contexts x %d batches (%d modes%s), part %u/%u, out %s\n",
	       o.models.n, o.contexts.n, o.n_ladder, o.modes.n,
	       o.inproc.n ? ", in-process arena too" : "", o.part, o.parts, o.out);
	rc = sweep_grid(&o, models, &t);
	if (!rc && o.refine)
		rc = sweep_refine(&o, models, &t);
	printf("sweep: %u of %u configurations in this part: %u ran (%u modes ok, %u failed), "
	       "%u skipped, %u left\n",
	       t.selected, t.total, t.ran, t.modes_ok, t.modes_failed, t.skipped, t.left);
	if (o.refine)
		printf("sweep: batch refinement: %u ran (%u modes ok, %u failed), %u left\n",
		       t.refine_ran, t.refine_ok, t.refine_failed, t.refine_left);
	if (t.left || t.refine_left)
		printf("sweep: budget of %.0f s reached: run the same command again\n", o.budget_s);
	if (o.dry_run)
		printf("sweep: dry run: %u configurations would run\n", t.planned);
	code = rc ? 1 : t.left || t.refine_left ? 3 : 0;
out_free:
	free(o.models.buf);
	free(o.contexts.buf);
	free(o.batches.buf);
	free(o.modes.buf);
	free(o.inproc.buf);
	return rc == 1 ? 0 : code;
}
