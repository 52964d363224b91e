/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda train-forecast`: flags from one table (which also drives --help) into train_opts,
 * the model (given, or the embedded tiny one generated into a temporary directory), the
 * calibration sets, the backend; then the run, the table and the JSON report.
 */
#include "train_cli.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train.h"

struct cli_args {
	const char *model, *out, *calib, *ckpt, *json, *backend, *teacher, *loss, *fit;
	uint32_t seqs, heldout, val, val_every, seq_len, steps, batch, threads, host_threads,
	    qstride, qstart, max_q, every;
	uint64_t seed;
	double lr, ridge, wd, l2sp, gamma;
	int quiet, ridge_prior;
	char tmp_dir[64];
};

enum cli_kind { CLI_STR, CLI_U32, CLI_U64, CLI_DBL, CLI_FLAG };

static const struct cli_flag {
	const char *name;
	enum cli_kind kind;
	size_t off;
	const char *help;
} cli_flags[] = {
    {"out", CLI_STR, offsetof(struct cli_args, out), "Forecast safetensors to write (required)"},
    {"model", CLI_STR, offsetof(struct cli_args, model),
     "model directory (HF layout); default: the embedded tiny model"},
    {"calib", CLI_STR, offsetof(struct cli_args, calib),
     "token ids, one sequence per line (default: synthetic sequences)"},
    {"seqs", CLI_U32, offsetof(struct cli_args, seqs), "synthetic training sequences (24)"},
    {"heldout", CLI_U32, offsetof(struct cli_args, heldout),
     "held-out sequences: synthetic, or the last N of --calib (4)"},
    {"val", CLI_U32, offsetof(struct cli_args, val),
     "validation sequences (synthetic, or the N lines of --calib before the held-out ones) "
     "choosing the step whose weight is written; 0: the last step's (4)"},
    {"val-every", CLI_U32, offsetof(struct cli_args, val_every), "steps between validations (25)"},
    {"seq-len", CLI_U32, offsetof(struct cli_args, seq_len), "tokens per sequence (2048)"},
    {"fit", CLI_STR, offsetof(struct cli_args, fit),
     "adamw (the ridge start, then AdamW on the KL with the teacher; default) or ridge (the "
     "closed-form ridge only: no teacher, no validation, no KL figures; seconds)"},
    {"steps", CLI_U32, offsetof(struct cli_args, steps), "AdamW steps (200)"},
    {"lr", CLI_DBL, offsetof(struct cli_args, lr), "learning rate (5e-4, the paper's)"},
    {"weight-decay", CLI_DBL, offsetof(struct cli_args, wd),
     "AdamW decoupled weight decay (0.01, the paper's)"},
    {"l2sp", CLI_DBL, offsetof(struct cli_args, l2sp),
     "L2-SP: X/2 ||W - W_ridge||^2 added to the loss, pulling W towards its ridge start (0)"},
    {"batch", CLI_U32, offsetof(struct cli_args, batch), "sequences per step (8; paper 32)"},
    {"seed", CLI_U64, offsetof(struct cli_args, seed), "seed of data, batches, baseline (1)"},
    {"threads", CLI_U32, offsetof(struct cli_args, threads),
     "CPU backend threads (1; 0 = all: its workers wait by spinning between the many small "
     "calls of the collection, which made 2 threads 8x slower on a busy 2-core machine)"},
    {"query-stride", CLI_U32, offsetof(struct cli_args, qstride),
     "every n-th query position past the dense region is a sample (4)"},
    {"query-start", CLI_U32, offsetof(struct cli_args, qstart),
     "first sampled position (0: max(dense_len, topk x block))"},
    {"max-queries", CLI_U32, offsetof(struct cli_args, max_q),
     "at most N sampled positions per sequence, spread evenly (0: no cap)"},
    {"ridge", CLI_DBL, offsetof(struct cli_args, ridge), "ridge lambda, relative (1e-3)"},
    {"ridge-prior", CLI_FLAG, offsetof(struct cli_args, ridge_prior),
     "shrink the ridge towards the model's own Forecast weights (without a Forecast file: "
     "the next layer's group-mean query weights) instead of 0 (false)"},
    {"teacher", CLI_STR, offsetof(struct cli_args, teacher),
     "teacher grid: fine (kernel ck_kernel/16, at least 2, stride 1: the paper's), "
     "selector (the inference grid: the runtime's original selector) or a kernel N, stride 1"},
    {"loss", CLI_STR, offsetof(struct cli_args, loss),
     "KL bins: paper (compressed entries, forced blocks in the rest bin; default), scored "
     "(the entries of the blocks the runtime ranks) or blocks (their max-pooled block scores); "
     "or rank: not a KL, a ranking loss putting the teacher's blocks above the others"},
    {"rank-gamma", CLI_DBL, offsetof(struct cli_args, gamma),
     "--loss rank: multiplier of the block scores (1; larger: a harder margin)"},
    {"host-threads", CLI_U32, offsetof(struct cli_args, host_threads),
     "host threads of the per-query loss (0: 1 with the CPU backend, else all cores)"},
    {"backend", CLI_STR, offsetof(struct cli_args, backend), "auto, cpu or cuda (auto)"},
    {"checkpoint", CLI_STR, offsetof(struct cli_args, ckpt),
     "checkpoint file: resumed from when present, written during the run"},
    {"checkpoint-every", CLI_U32, offsetof(struct cli_args, every),
     "steps between checkpoints (50)"},
    {"json", CLI_STR, offsetof(struct cli_args, json), "write the report as JSON here"},
    {"quiet", CLI_FLAG, offsetof(struct cli_args, quiet), "no progress on stderr"},
};
#define CLI_N (sizeof(cli_flags) / sizeof(cli_flags[0]))

static void cli_usage(FILE *fp)
{
	fprintf(fp, "usage: sparda train-forecast --out FILE [flags]\n");
	for (size_t i = 0; i < CLI_N; i++)
		fprintf(fp, "  --%-17s %s\n", cli_flags[i].name, cli_flags[i].help);
}

static int cli_value(const struct cli_flag *f, const char *s, struct cli_args *a)
{
	void *p = (char *)a + f->off;
	char *end = NULL;

	errno = 0;
	if (f->kind == CLI_STR) {
		*(const char **)p = s;
		return 0;
	}
	if (!*s || *s == '-')
		return -EINVAL;
	if (f->kind == CLI_DBL) {
		*(double *)p = strtod(s, &end);
	} else {
		unsigned long long v = strtoull(s, &end, 0);

		if (f->kind == CLI_U32 && v > UINT32_MAX)
			return -EINVAL;
		if (f->kind == CLI_U32)
			*(uint32_t *)p = (uint32_t)v;
		else
			*(uint64_t *)p = v;
	}
	return errno || *end ? -EINVAL : 0;
}

static int cli_parse(int argc, char **argv, struct cli_args *a)
{
	struct option opts[CLI_N + 2] = {{0}};
	int c;

	for (size_t i = 0; i < CLI_N; i++)
		opts[i] =
		    (struct option){cli_flags[i].name,
				    cli_flags[i].kind == CLI_FLAG ? no_argument : required_argument,
				    NULL, 256 + (int)i};
	opts[CLI_N] = (struct option){"help", no_argument, NULL, 'h'};
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage(stdout);
			return -1;
		}
		if (c < 256 || c >= 256 + (int)CLI_N) {
			cli_usage(stderr);
			return 2;
		}
		if (cli_flags[c - 256].kind == CLI_FLAG) {
			*(int *)((char *)a + cli_flags[c - 256].off) = 1;
		} else if (cli_value(&cli_flags[c - 256], optarg, a)) {
			fprintf(stderr, "train-forecast: bad --%s '%s'\n", cli_flags[c - 256].name,
				optarg);
			return 2;
		}
	}
	if (optind < argc || !a->out) {
		fprintf(stderr, "train-forecast: --out is required\n");
		cli_usage(stderr);
		return 2;
	}
	return 0;
}

/* The embedded tiny model (as sparda-compute generates it: preset tiny, seed 1234). */
static int cli_model(struct cli_args *a, struct model **m)
{
	struct model_config mc;
	char err[512];
	int rc;

	if (!a->model) {
		snprintf(a->tmp_dir, sizeof(a->tmp_dir), "%s/sparda-train-XXXXXX",
			 getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR")
									   : "/tmp");
		if (!mkdtemp(a->tmp_dir)) {
			fprintf(stderr, "train-forecast: cannot create %s: %s\n", a->tmp_dir,
				strerror(errno));
			a->tmp_dir[0] = '\0';
			return -errno;
		}
		model_preset("tiny", &mc);
		if ((rc = model_generate(a->tmp_dir, &mc, 1234, err, sizeof(err)))) {
			fprintf(stderr, "train-forecast: generating the tiny model: %s\n", err);
			return rc;
		}
		a->model = a->tmp_dir;
	}
	if ((rc = model_open(a->model, NULL, m, err, sizeof(err))))
		fprintf(stderr, "train-forecast: cannot open the model: %s\n", err);
	return rc;
}

static void cli_rm_tmp(struct cli_args *a)
{
	const char *files[] = {"config.json", "model.safetensors", "forecast.safetensors"};
	char p[128];

	if (!a->tmp_dir[0])
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", a->tmp_dir, files[i]);
		unlink(p);
	}
	rmdir(a->tmp_dir);
}

static int cli_data(const struct cli_args *a, const struct model *m, uint32_t min_len,
		    struct calib_set *tr, struct calib_set *ev, struct calib_set *va)
{
	char err[512];
	int rc;

	if (a->calib) {
		rc = calib_read(a->calib, m->cfg.vocab, min_len, a->seq_len, tr, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "train-forecast: calibration data: %s\n", err);
			return rc;
		}
		if (tr->n_seqs <= a->heldout + a->val) {
			fprintf(stderr,
				"train-forecast: %s holds %u sequences; --heldout %u and --val %u "
				"leave none to train on\n",
				a->calib, tr->n_seqs, a->heldout, a->val);
			return -EINVAL;
		}
	} else if ((rc = calib_synth(a->seqs + a->val + a->heldout, a->seq_len, m->cfg.vocab,
				     a->seed, tr))) {
		fprintf(stderr, "train-forecast: cannot generate calibration data: %s\n",
			strerror(-rc));
		return rc;
	}
	if ((rc = calib_split(tr, a->heldout, ev)))
		return rc;
	return a->val ? calib_split(tr, a->val, va) : 0;
}

static int cli_teacher(const struct cli_args *a, struct train_opts *o)
{
	char *end = NULL;
	unsigned long k;

	static const char *const losses[] = {"paper", "scored", "blocks", "rank"}; /* train_loss */
	uint32_t i = 0;

	while (i < 4 && strcmp(a->loss, losses[i]))
		i++;
	if (i == 4) {
		fprintf(stderr,
			"train-forecast: --loss is paper, scored, blocks or rank, not '%s'\n",
			a->loss);
		return -EINVAL;
	}
	o->loss = (enum train_loss)i;
	if (strcmp(a->teacher, "fine") == 0)
		return 0;
	if (strcmp(a->teacher, "selector") == 0) {
		o->teacher_kernel = TRAIN_TEACHER_SELECTOR;
		return 0;
	}
	errno = 0;
	k = strtoul(a->teacher, &end, 10);
	if (errno || *end || a->teacher[0] == '-' || k < 1 || k > 4096) {
		fprintf(stderr,
			"train-forecast: --teacher is fine, selector or a kernel in [1, 4096], "
			"not '%s'\n",
			a->teacher);
		return -EINVAL;
	}
	o->teacher_kernel = (uint32_t)k;
	return 0;
}

struct cli_progress {
	int quiet;
	uint32_t every;
};

static int cli_progress(void *ctx, const struct train_progress *p)
{
	const struct cli_progress *cp = ctx;
	static const char *const names[] = {"collect", "fit", "eval"};

	if (cp->quiet)
		return 0;
	if (p->phase != TRAIN_PHASE_FIT) {
		if (p->done == p->total)
			fprintf(stderr, "train-forecast: %s: %u sequences through the model\n",
				names[p->phase], p->total);
		return 0;
	}
	if (p->resumed)
		fprintf(stderr, "train-forecast: resumed from the checkpoint at step %u\n",
			p->done - 1);
	if (p->done % cp->every == 0 || p->done == p->total || p->resumed)
		fprintf(stderr, "train-forecast: step %u/%u loss %.5f elapsed %.1fs eta %.1fs\n",
			p->done, p->total, p->loss, p->elapsed_s,
			p->elapsed_s / (p->done - p->start) * (p->total - p->done));
	return 0;
}

#define FIELD(f) offsetof(struct train_layer_report, f)

/* A KL column: "-" where it was not measured (the ridge-only fit). */
static void cli_kl(const struct train_report *r, double v)
{
	if (r->kl_measured)
		printf(" %9.4f", v);
	else
		printf(" %9s", "-");
}

static void cli_table(const struct train_report *r)
{
	printf("%-16s %9s %9s %9s %9s %9s %9s %9s\n", "projection", "kl_untr", "kl_ridge",
	       "kl_after", "rec_untr", "rec_ridge", "rec_prev", "rec_train");
	for (uint32_t k = 0; k < r->n_slots; k++) {
		const struct train_layer_report *l = &r->layers[k];
		char name[32];

		if (l->curr)
			snprintf(name, sizeof(name), "L0 q_curr");
		else
			snprintf(name, sizeof(name), "L%u -> L%u", l->in_layer, l->tgt_layer);
		printf("%-16s", name);
		cli_kl(r, l->kl_untrained);
		cli_kl(r, l->kl_ridge);
		cli_kl(r, l->kl_trained);
		printf(" %9.4f %9.4f %9.4f %9.4f\n", l->recall_untrained, l->recall_ridge,
		       l->recall_prev_step, l->recall_trained);
	}
	printf("%-16s", "mean");
	cli_kl(r, train_report_mean(r, FIELD(kl_untrained)));
	cli_kl(r, train_report_mean(r, FIELD(kl_ridge)));
	cli_kl(r, train_report_mean(r, FIELD(kl_trained)));
	printf(" %9.4f %9.4f %9.4f %9.4f\n", train_report_mean(r, FIELD(recall_untrained)),
	       train_report_mean(r, FIELD(recall_ridge)),
	       train_report_mean(r, FIELD(recall_prev_step)),
	       train_report_mean(r, FIELD(recall_trained)));
	if (train_report_mean(r, FIELD(recall_model)) >= 0)
		printf("recall of the Forecast the model came with (its forecast.safetensors): "
		       "%.4f\n",
		       train_report_mean(r, FIELD(recall_model)));
	printf("recall of the target layer's own group-mean query (the ridge's target, i.e. a "
	       "perfect regression): %.4f\n",
	       train_report_mean(r, FIELD(recall_target)));
	if (!r->kl_measured) {
		printf("fit: ridge only (no teacher: no KL or teacher figures)\n");
		return;
	}
	printf("recall against the teacher's blocks (what the KL distils): untrained %.4f, "
	       "ridge %.4f, trained %.4f\n",
	       train_report_mean(r, FIELD(teacher_recall_untrained)),
	       train_report_mean(r, FIELD(teacher_recall_ridge)),
	       train_report_mean(r, FIELD(teacher_recall_trained)));
	printf("the teacher's blocks that the original selector also picks: %.4f\n",
	       train_report_mean(r, FIELD(teacher_agreement)));
	printf("step written per projection:");
	for (uint32_t k = 0; k < r->n_slots; k++)
		printf(" %u", r->layers[k].best_step);
	printf("\n");
}

static const struct {
	const char *key;
	size_t off;
	bool teacher; /* measured only with the teacher (not by the ridge-only fit) */
} cli_keys[] = {
    {"kl_before", FIELD(kl_untrained), true},
    {"kl_ridge", FIELD(kl_ridge), true},
    {"kl_after", FIELD(kl_trained), true},
    {"recall_untrained", FIELD(recall_untrained), false},
    {"recall_ridge", FIELD(recall_ridge), false},
    {"recall_prev_step", FIELD(recall_prev_step), false},
    {"recall_trained", FIELD(recall_trained), false},
    {"recall_target", FIELD(recall_target), false},
    {"teacher_recall_untrained", FIELD(teacher_recall_untrained), true},
    {"teacher_recall_ridge", FIELD(teacher_recall_ridge), true},
    {"teacher_recall_trained", FIELD(teacher_recall_trained), true},
    {"teacher_agreement", FIELD(teacher_agreement), true},
};
#define CLI_N_KEYS (sizeof(cli_keys) / sizeof(cli_keys[0]))

/* A report value as JSON: null where it was not measured. */
static json_object *cli_value_json(const struct train_report *r, size_t i, double v)
{
	return cli_keys[i].teacher && !r->kl_measured ? NULL : json_object_new_double(v);
}

static int cli_json(const char *path, const struct train_report *r, const struct cli_args *a)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array();
	int rc;

	for (size_t i = 0; i < CLI_N_KEYS; i++)
		json_object_object_add(o, cli_keys[i].key,
				       cli_value_json(r, i, train_report_mean(r, cli_keys[i].off)));
	for (uint32_t k = 0; k < r->n_slots; k++) {
		json_object *l = json_object_new_object();

		json_object_object_add(l, "in_layer", json_object_new_int(r->layers[k].in_layer));
		json_object_object_add(l, "target_layer",
				       json_object_new_int(r->layers[k].tgt_layer));
		json_object_object_add(l, "q_curr", json_object_new_boolean(r->layers[k].curr));
		json_object_object_add(l, "best_step",
				       json_object_new_int64(r->layers[k].best_step));
		json_object_object_add(l, "ridge_lambda",
				       json_object_new_double(r->layers[k].ridge_lambda));
		for (size_t i = 0; i < CLI_N_KEYS; i++)
			json_object_object_add(
			    l, cli_keys[i].key,
			    cli_value_json(
				r, i,
				*(const double *)((const char *)&r->layers[k] + cli_keys[i].off)));
		json_object_array_add(arr, l);
	}
	json_object_object_add(o, "layers", arr);
	json_object_object_add(o, "fit", json_object_new_string(a->fit));
	json_object_object_add(
	    o, "recall_model",
	    train_report_mean(r, FIELD(recall_model)) >= 0
		? json_object_new_double(train_report_mean(r, FIELD(recall_model)))
		: NULL);
	json_object_object_add(o, "steps", json_object_new_int64(r->steps));
	json_object_object_add(o, "start_step", json_object_new_int64(r->start_step));
	json_object_object_add(o, "lr", json_object_new_double(a->lr));
	json_object_object_add(o, "batch", json_object_new_int64(a->batch));
	json_object_object_add(o, "seed", json_object_new_int64((int64_t)a->seed));
	json_object_object_add(o, "fine_kernel", json_object_new_int64(r->fine_kernel));
	json_object_object_add(o, "teacher_kernel", json_object_new_int64(r->fine_kernel));
	json_object_object_add(o, "teacher_stride", json_object_new_int64(r->fine_stride));
	json_object_object_add(o, "loss", json_object_new_string(a->loss));
	json_object_object_add(o, "weight_decay", json_object_new_double(a->wd));
	json_object_object_add(o, "l2sp", json_object_new_double(a->l2sp));
	json_object_object_add(o, "ridge_prior", json_object_new_boolean(a->ridge_prior));
	json_object_object_add(o, "rank_gamma", json_object_new_double(a->gamma));
	json_object_object_add(o, "train_queries",
			       json_object_new_int64((int64_t)r->train_queries));
	json_object_object_add(o, "eval_queries", json_object_new_int64((int64_t)r->eval_queries));
	json_object_object_add(o, "collect_s", json_object_new_double(r->collect_s));
	json_object_object_add(o, "fit_s", json_object_new_double(r->fit_s));
	json_object_object_add(o, "ridge_s", json_object_new_double(r->ridge_s));
	json_object_object_add(o, "eval_s", json_object_new_double(r->eval_s));
	json_object_object_add(o, "step_s", json_object_new_double(r->step_s));
	json_object_object_add(o, "val", json_object_new_int64(a->val));
	json_object_object_add(o, "host_bytes", json_object_new_int64((int64_t)r->host_bytes));
	json_object_object_add(o, "max_queries", json_object_new_int64(a->max_q));
	json_object_object_add(o, "query_stride", json_object_new_int64(a->qstride));
	rc = json_object_to_file_ext(path, o, JSON_C_TO_STRING_PRETTY) ? -EIO : 0;
	json_object_put(o);
	return rc;
}

static int cli_run(struct cli_args *a, struct model *m, struct kb *kb)
{
	struct calib_set tr = {0}, ev = {0}, va = {0};
	struct train_opts o;
	struct train_report rep = {0};
	struct cli_progress cp = {.quiet = a->quiet, .every = a->steps / 20 ? a->steps / 20 : 1};
	char err[512];
	int rc;

	train_opts_default(&o);
	o.steps = a->steps;
	o.batch = a->batch;
	o.lr = (float)a->lr;
	o.ridge = (float)a->ridge;
	o.ridge_prior = a->ridge_prior;
	o.weight_decay = (float)a->wd;
	o.l2sp = (float)a->l2sp;
	o.rank_gamma = (float)a->gamma;
	o.seed = a->seed;
	o.query_stride = a->qstride;
	o.query_start = a->qstart;
	o.max_queries = a->max_q;
	o.host_threads = a->host_threads;
	if ((rc = cli_teacher(a, &o)))
		goto out;
	if (strcmp(a->fit, "adamw") && strcmp(a->fit, "ridge")) {
		fprintf(stderr, "train-forecast: --fit is adamw or ridge, not '%s'\n", a->fit);
		rc = -EINVAL;
		goto out;
	}
	o.fit = strcmp(a->fit, "ridge") ? TRAIN_FIT_ADAMW : TRAIN_FIT_RIDGE;
	o.checkpoint = a->ckpt;
	o.checkpoint_every = a->every;
	o.progress = cli_progress;
	o.progress_ctx = &cp;
	if (o.fit == TRAIN_FIT_RIDGE)
		a->val = 0; /* nothing to choose between: the ridge is the only weight */
	if ((rc = cli_data(a, m, m->cfg.sparse.block + 2, &tr, &ev, &va)))
		goto out;
	o.train = &tr;
	o.heldout = &ev;
	o.val = a->val && o.fit == TRAIN_FIT_ADAMW ? &va : NULL;
	o.val_every = a->val_every;
	if ((rc = train_forecast(kb, m, &o, a->out, &rep, err, sizeof(err)))) {
		fprintf(stderr, "train-forecast: %s\n", err);
		goto out;
	}
	cli_table(&rep);
	printf("train-forecast: wrote %s (%u projections, fit %s, %u steps, %.1fs collect, "
	       "%.1fs fit, %.3fs per step, %.1fs eval, %.2f GiB collected)\n",
	       a->out, rep.n_slots, a->fit, rep.steps, rep.collect_s, rep.fit_s, rep.step_s,
	       rep.eval_s, (double)rep.host_bytes / (1u << 30));
	if (a->json && (rc = cli_json(a->json, &rep, a)))
		fprintf(stderr, "train-forecast: cannot write %s\n", a->json);
out:
	train_report_fini(&rep);
	calib_fini(&tr);
	calib_fini(&ev);
	calib_fini(&va);
	return rc;
}

int train_forecast_main(int argc, char **argv)
{
	struct cli_args a = {.threads = 1,
			     .seqs = 24,
			     .heldout = 4,
			     .val = 4,
			     .val_every = 25,
			     .seq_len = 2048,
			     .steps = 200,
			     .lr = 5e-4,
			     .batch = 8,
			     .seed = 1,
			     .qstride = 4,
			     .ridge = 1e-3,
			     .wd = 0.01,
			     .gamma = 1.0,
			     .every = 50,
			     .backend = "auto",
			     .teacher = "fine",
			     .loss = "paper",
			     .fit = "adamw"};
	struct model *m = NULL;
	struct kb *kb = NULL;
	int rc = cli_parse(argc, argv, &a);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (!a.heldout || !a.seqs || !a.seq_len || !a.batch || !a.qstride) {
		fprintf(stderr, "train-forecast: --seqs, --heldout, --seq-len, --batch and "
				"--query-stride must be positive\n");
		return 2;
	}
	if ((rc = cli_model(&a, &m)))
		goto out;
	if ((rc = train_open_backend(a.backend, a.threads, &kb))) {
		fprintf(stderr, "train-forecast: cannot open the %s backend: %s\n", a.backend,
			strerror(-rc));
		goto out;
	}
	rc = cli_run(&a, m, kb);
out:
	kb_destroy(kb);
	model_close(m);
	cli_rm_tmp(&a);
	return rc ? 1 : 0;
}
