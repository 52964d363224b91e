// SPDX-License-Identifier: Apache-2.0
/*
 * The ridge-only Forecast fit and the trained Forecast by default: the fit is deterministic,
 * equals the AdamW path's ridge start, beats the untrained recall and says so in the file's
 * metadata; a fitted model directory is what sparda-compute loads and reports as trained (the
 * generator's file as untrained); the embedded tiny model is generated with a trained Forecast.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "safetensors.h"
#include "test_files.h"
#include "train.h"

struct env {
	char dir[64], a[96], b[96], c[96], fc[96], json[96], cache[64];
	char err[512];
	struct model *m;
	struct kb *kb;
	struct calib_set tr, ev;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct kb_opts ko = {.kind = KB_KIND_CPU, .cpu_threads = 1};
	struct model_config mc;

	if (!e)
		return -1;
	strcpy(e->dir, "/tmp/sparda-ridge-test-XXXXXX");
	strcpy(e->cache, "/tmp/sparda-ridge-cache-XXXXXX");
	if (!mkdtemp(e->dir) || !mkdtemp(e->cache) || model_preset("tiny", &mc) ||
	    model_generate(e->dir, &mc, 1234, e->err, sizeof(e->err)) ||
	    model_open(e->dir, NULL, &e->m, e->err, sizeof(e->err)) || kb_open(&ko, &e->kb))
		return -1;
	snprintf(e->a, sizeof(e->a), "%s/a.safetensors", e->dir);
	snprintf(e->b, sizeof(e->b), "%s/b.safetensors", e->dir);
	snprintf(e->c, sizeof(e->c), "%s/c.safetensors", e->dir);
	snprintf(e->fc, sizeof(e->fc), "%s/forecast.safetensors", e->dir);
	snprintf(e->json, sizeof(e->json), "%s/run.json", e->dir);
	/* 3 training and 1 held-out sequences of 768 tokens, queries from 512 every 2nd */
	if (calib_synth(4, 768, mc.vocab, 5, &e->tr) || calib_split(&e->tr, 1, &e->ev))
		return -1;
	*state = e;
	return 0;
}

static void rm_dir(const char *dir, const char *const *files, size_t n)
{
	char p[160];

	for (size_t i = 0; i < n; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

static int teardown(void **state)
{
	struct env *e = *state;
	const char *f[] = {"config.json",   "model.safetensors", "forecast.safetensors",
			   "a.safetensors", "b.safetensors",	 "c.safetensors",
			   "run.json"};
	const char *mf[] = {"config.json", "model.safetensors", "forecast.safetensors"};
	char p[128];

	rm_dir(e->dir, f, sizeof(f) / sizeof(f[0]));
	snprintf(p, sizeof(p), "%s/sparda/model-tiny-v4", e->cache);
	rm_dir(p, mf, sizeof(mf) / sizeof(mf[0]));
	snprintf(p, sizeof(p), "%s/sparda", e->cache);
	rmdir(p);
	rmdir(e->cache);
	calib_fini(&e->tr);
	calib_fini(&e->ev);
	model_close(e->m);
	kb_destroy(e->kb);
	free(e);
	return 0;
}

static void ridge_opts(struct env *e, struct train_opts *o)
{
	train_opts_default(o);
	o->fit = TRAIN_FIT_RIDGE;
	o->train = &e->tr;
	o->heldout = &e->ev;
	o->query_start = 512;
	o->query_stride = 2;
}

#define MEAN(r, f) train_report_mean(r, offsetof(struct train_layer_report, f))

/* Every tensor of a holds the same bytes in b (the metadata may differ). */
static void assert_same_tensors(const char *a, const char *b)
{
	struct st_file *fa = NULL, *fb = NULL;

	assert_int_equal(st_open(a, &fa, NULL, 0), 0);
	assert_int_equal(st_open(b, &fb, NULL, 0), 0);
	assert_int_equal(st_count(fa), st_count(fb));
	for (uint32_t i = 0; i < st_count(fa); i++) {
		const struct st_tensor *ta = st_at(fa, i), *tb = st_find(fb, ta->name);

		assert_non_null(tb);
		assert_int_equal(ta->bytes, tb->bytes);
		assert_memory_equal(ta->data, tb->data, ta->bytes);
	}
	st_close(fa);
	st_close(fb);
}

static void test_ridge_fit(void **state)
{
	struct env *e = *state;
	struct train_opts o;
	struct train_report r, r2;
	struct train_file_info fi;

	ridge_opts(e, &o);
	o.steps = 50; /* not used by the ridge-only fit */
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->a, &r, e->err, sizeof(e->err)), 0);
	assert_int_equal(r.fit, TRAIN_FIT_RIDGE);
	assert_false(r.kl_measured);
	assert_int_equal(r.steps, 0);
	for (uint32_t k = 0; k < r.n_slots; k++) {
		const struct train_layer_report *l = &r.layers[k];

		assert_true(isnan(l->kl_ridge));
		assert_true(l->recall_trained == l->recall_ridge);

		/* measured 0.75-0.86 against 0.64-0.67 for both baselines */
		assert_true(l->recall_trained > l->recall_untrained + 0.05);
		assert_true(l->recall_trained > l->recall_prev_step + 0.05);
		/* the generator's Forecast (the file the model was opened with) is measured too:
		 * a noisy copy of the grouped query weights, 0.78-0.85 here */
		assert_true(l->recall_model > l->recall_untrained + 0.05);
	}
	/* deterministic: the same bytes again */
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->b, &r2, e->err, sizeof(e->err)), 0);
	assert_true(test_same_file(e->a, e->b));
	train_report_fini(&r2);
	/* the file says it was trained, how, and its held-out recall */
	assert_int_equal(train_file_info(e->a, &fi), 0);
	assert_true(fi.trained);
	assert_string_equal(fi.fit, "ridge");
	assert_true(fabs(fi.recall - MEAN(&r, recall_trained)) < 1e-4);
	assert_true(fabs(fi.recall_untrained - MEAN(&r, recall_untrained)) < 1e-4);
	/* the generator's file is the untrained baseline */
	assert_int_equal(train_file_info(e->fc, &fi), 0);
	assert_false(fi.trained);
	assert_string_equal(fi.fit, "");
	assert_true(fi.recall < 0);
	assert_int_equal(train_file_info("/nonexistent/forecast.safetensors", &fi), -ENOENT);
	/* the metadata writer refuses entries without a key or a value, and writes nothing */
	{
		const uint16_t one = 0x3f80;
		const struct st_wtensor t = {"x", ST_DTYPE_BF16, 1, {1}, &one};
		const struct st_meta_kv bad[][1] = {{{"", "v"}}, {{"k", NULL}}, {{NULL, "v"}}};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			assert_int_equal(
			    st_write_meta(e->b, &t, 1, NULL, bad[i], 1, e->err, sizeof(e->err)),
			    -EINVAL);
		assert_true(test_same_file(e->a, e->b)); /* b is still the fitted file */
	}
	/* the AdamW path with no steps and no validation writes the same ridge weights */
	o.fit = TRAIN_FIT_ADAMW;
	o.steps = 0;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->c, &r2, e->err, sizeof(e->err)), 0);
	assert_true(r2.kl_measured);
	assert_true(fabs(MEAN(&r2, recall_ridge) - MEAN(&r, recall_ridge)) < 1e-12);
	assert_same_tensors(e->a, e->c);
	assert_int_equal(train_file_info(e->c, &fi), 0);
	assert_string_equal(fi.fit, "adamw");
	train_report_fini(&r2);
	train_report_fini(&r);
}

/* Run sparda-compute's job once (in-process store, a short decode); parse its JSON. */
static json_object *run_job(struct env *e, const char *model, const char *forecast)
{
	struct job_config cfg;
	FILE *out = fopen("/dev/null", "w");
	const char *kv[][2] = {
	    {"model", model},	       {"forecast", forecast}, {"modes", "sparda-nooffload"},
	    {"host-store", "inproc"},  {"backend", "cpu"},     {"threads", "1"},
	    {"prompt-tokens", "1100"}, {"new-tokens", "3"},    {"recall-every", "1"},
	    {"json", e->json},	       {"log-level", "warn"}};
	json_object *root, *mode;

	assert_non_null(out);
	assert_int_equal(config_defaults(&job_config_table, &cfg), 0);
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		assert_int_equal(config_set(&job_config_table, &cfg, kv[i][0], kv[i][1], "test",
					    e->err, sizeof(e->err)),
				 0);
	unlink(e->json);
	assert_int_equal(job_run(&cfg, out), 0);
	fclose(out);
	root = json_object_from_file(e->json);
	assert_non_null(root);
	assert_true(json_object_object_get_ex(root, "sparda-nooffload", &mode));
	json_object_get(mode);
	json_object_put(root);
	return mode;
}

/* The "forecast" object of a mode's result: its path and whether it was trained. */
static void assert_forecast(json_object *mode, const char *path, bool trained)
{
	json_object *f, *v;

	assert_true(json_object_object_get_ex(mode, "forecast", &f));
	assert_true(json_object_object_get_ex(f, "path", &v));
	assert_string_equal(json_object_get_string(v), path);
	assert_true(json_object_object_get_ex(f, "trained", &v));
	assert_int_equal(json_object_get_boolean(v), trained);
	assert_true(json_object_object_get_ex(f, "fit", &v));
	if (trained)
		assert_string_equal(json_object_get_string(v), "ridge");
	else
		assert_null(v);
	/* and the recall of the run is measured */
	assert_true(json_object_object_get_ex(mode, "recall", &v));
	assert_true(json_object_get_double(v) > 0.0);
}

static void test_compute_reports_forecast(void **state)
{
	struct env *e = *state;
	struct train_dir_opts o;
	struct train_report r;
	json_object *before, *after, *picked;

	/* the generator's own Forecast: untrained */
	before = run_job(e, e->dir, "");
	assert_forecast(before, e->fc, false);
	/* fitted in place (what gen-model --train-forecast does): trained */
	train_dir_opts_default(&o);
	o.backend = "cpu";
	o.seqs = 2;
	o.heldout = 1;
	o.seq_len = 1536;
	o.keep_better = false; /* written whatever it scores */
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), 0);
	assert_true(MEAN(&r, recall_trained) > MEAN(&r, recall_untrained) + 0.1);
	train_report_fini(&r);
	after = run_job(e, e->dir, "");
	assert_forecast(after, e->fc, true);
	/* --forecast names another file: that one is reported */
	picked = run_job(e, e->dir, e->a);
	assert_forecast(picked, e->a, true);
	json_object_put(picked);
	json_object_put(after);
	json_object_put(before);
	o.heldout = 0;
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), -EINVAL);
	o.heldout = 1;
	o.backend = "tpu";
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, "tpu"));
}

/* The whole file at path (malloc'd), its size in *n. */
static char *file_bytes(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len > 0);
	rewind(f);
	b = malloc((size_t)len);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return b;
}

/*
 * keep_better: a fit that does not beat the Forecast already in the directory leaves that file
 * as it was (and no temporary behind); without keep_better the fit is written regardless.
 */
static void test_fit_keeps_better(void **state)
{
	struct env *e = *state;
	struct train_dir_opts o;
	struct train_report r;
	char fit[128], *before, *after;
	size_t nb, na;

	snprintf(fit, sizeof(fit), "%s/forecast.fit.safetensors", e->dir);
	train_dir_opts_default(&o);
	o.backend = "cpu";
	o.seqs = 2;
	o.heldout = 1;
	o.seq_len = 1536;
	o.keep_better = false;
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), 0);
	assert_false(r.kept_model);
	train_report_fini(&r);
	before = file_bytes(e->fc, &nb);
	/* four sampled queries per sequence and no prior: a poor fit against a good one */
	o.keep_better = true;
	o.ridge_prior = false;
	o.max_queries = 4;
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), 0);
	assert_true(r.kept_model);
	assert_true(MEAN(&r, recall_trained) < MEAN(&r, recall_model));
	train_report_fini(&r);
	after = file_bytes(e->fc, &na);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb);
	assert_int_equal(access(fit, F_OK), -1);
	free(after);
	/* the same poor fit without keep_better replaces it */
	o.keep_better = false;
	assert_int_equal(train_forecast_dir(e->dir, &o, &r, e->err, sizeof(e->err)), 0);
	assert_false(r.kept_model);
	train_report_fini(&r);
	after = file_bytes(e->fc, &na);
	assert_true(na != nb || memcmp(after, before, nb) != 0);
	free(after);
	free(before);
}

/*
 * ridge_prior: from one short training sequence the plain ridge has too few rows and falls well
 * below the generator's Forecast; shrunk towards that Forecast instead of 0 it does better than
 * both (fresh 2-layer tiny model, the same data both ways). Without a Forecast file, shrunk
 * towards the next layer's query weights it gains as much over the plain ridge (0.09).
 */
static void test_ridge_prior(void **state)
{
	struct env *e = *state;
	const char *f[] = {"config.json", "model.safetensors", "forecast.safetensors"};
	struct model_config mc;
	struct train_dir_opts o;
	struct train_report r;
	double plain, prior, own;
	char dir[96];

	snprintf(dir, sizeof(dir), "%s.prior", e->dir);
	assert_int_equal(model_preset("tiny", &mc), 0);
	mc.n_layers = 2;
	assert_int_equal(model_generate(dir, &mc, 0, e->err, sizeof(e->err)), 0);
	train_dir_opts_default(&o);
	o.backend = "cpu";
	o.seqs = 1;
	o.seq_len = 1536;
	o.keep_better = true; /* neither is written unless it beats the generator's */
	o.ridge_prior = false;
	assert_int_equal(train_forecast_dir(dir, &o, &r, e->err, sizeof(e->err)), 0);
	plain = MEAN(&r, recall_trained);
	own = MEAN(&r, recall_model);
	assert_true(r.kept_model);
	train_report_fini(&r);
	o.ridge_prior = true;
	assert_int_equal(train_forecast_dir(dir, &o, &r, e->err, sizeof(e->err)), 0);
	prior = MEAN(&r, recall_trained);
	assert_false(r.kept_model);
	train_report_fini(&r);
	print_message("ridge %.4f, ridge towards the generator's %.4f, generator's %.4f\n", plain,
		      prior, own);
	assert_true(plain < own);
	assert_true(prior > own);
	/* without a Forecast file the prior is the target layer's group-mean query weights */
	for (int with = 0; with < 2; with++) {
		char fc[128];

		snprintf(fc, sizeof(fc), "%s/forecast.safetensors", dir);
		assert_int_equal(unlink(fc), 0);
		o.ridge_prior = with;
		assert_int_equal(train_forecast_dir(dir, &o, &r, e->err, sizeof(e->err)), 0);
		assert_false(r.kept_model);
		assert_true(MEAN(&r, recall_model) < 0); /* there was none */
		*(with ? &prior : &plain) = MEAN(&r, recall_trained);
		train_report_fini(&r);
	}
	print_message("no Forecast file: ridge %.4f, ridge towards the query weights %.4f\n", plain,
		      prior);
	assert_true(prior > plain + 0.05);
	rm_dir(dir, f, sizeof(f) / sizeof(f[0]));
}

/*
 * A model with a shared activation (64th channels nearly collinear) makes X^T X + lambda I
 * numerically indefinite at a small lambda: the fit raises lambda tenfold until the
 * factorisation holds (at most 10^4 x, the lambda used in the report), and beats the untrained
 * recall; when even that is too small the error names the problem and the largest lambda tried.
 */
static void test_ridge_ill_conditioned(void **state)
{
	struct env *e = *state;
	const char *f[] = {"config.json", "model.safetensors", "forecast.safetensors"};
	struct model_config mc;
	struct model *m;
	struct train_opts o;
	struct train_report r;
	uint32_t raised;
	char dir[96];

	snprintf(dir, sizeof(dir), "%s.sa", e->dir);
	assert_int_equal(model_preset("tiny", &mc), 0);
	mc.n_layers = 2;
	assert_int_equal(
	    model_generate_opts(dir, &mc,
				&(struct model_gen_opts){.seed = 3, .shared_activation = 0.9},
				e->err, sizeof(e->err)),
	    0);
	assert_int_equal(model_open(dir, NULL, &m, e->err, sizeof(e->err)), 0);
	ridge_opts(e, &o);
	/* asked for 2^-20 (~1e-6) of the mean diagonal, the factorisation fails on these rows
	 * (where it first holds depends on the build's rounding: 1e-5 to 1e-3) */
	o.ridge = 1.0f / (1 << 20);
	assert_int_equal(train_forecast(e->kb, m, &o, e->b, &r, e->err, sizeof(e->err)), 0);
	raised = 0;
	for (uint32_t k = 0; k < r.n_slots; k++) {
		double tens = log10(r.layers[k].ridge_lambda / o.ridge);

		print_message("projection %u: lambda %g of the mean diagonal\n", k,
			      r.layers[k].ridge_lambda);
		assert_true(r.layers[k].recall_trained > r.layers[k].recall_untrained);
		/* a power of ten above the asked one, at most 10^4 */
		assert_true(fabs(tens - round(tens)) < 1e-9 && tens > -0.5 && tens < 4.5);
		raised += tens > 0.5;
	}
	assert_true(raised > 0);
	train_report_fini(&r);
	o.ridge = 1e-12f;
	assert_int_equal(train_forecast(e->kb, m, &o, e->b, &r, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, "not positive definite (lambda up to"));
	model_close(m);
	rm_dir(dir, f, sizeof(f) / sizeof(f[0]));
}

/* The embedded default (no --model): generated into the cache with a trained Forecast. */
/* The automatic training-sequence count: 3 sampled rows per hidden unit, at least 4. */
static void test_auto_seqs(void **state)
{
	struct model_config tiny, mc8b;
	struct train_dir_opts o;

	(void)state;
	train_dir_opts_default(&o);
	assert_int_equal(o.seqs, 0);
	assert_int_equal(model_preset("tiny", &tiny), 0);
	assert_int_equal(model_preset("minicpm4-8b", &mc8b), 0);
	/* tiny: 2048 tokens, sampled from 1024 every 2nd: 512 rows each; 768 needed -> the floor */
	assert_int_equal(train_dir_auto_seqs(&tiny, &o, 2048), TRAIN_DIR_MIN_SEQS);
	/* 8B: 16384 tokens, 4096 positions capped at 1024 rows; 3 x 4096 rows -> 12 */
	assert_int_equal(train_dir_auto_seqs(&mc8b, &o, 16384), 12);
	/* no cap: 4096 rows each -> 3 */
	o.max_queries = 0;
	assert_int_equal(train_dir_auto_seqs(&mc8b, &o, 16384), TRAIN_DIR_MIN_SEQS);
	/* a sequence with nothing to sample past its first query, and a tiny cap: the bounds */
	o.max_queries = 1;
	assert_int_equal(train_dir_auto_seqs(&mc8b, &o, 100), TRAIN_DIR_MIN_SEQS);
	assert_int_equal(train_dir_auto_seqs(&mc8b, &o, 16384), TRAIN_DIR_MAX_SEQS);
}

static void test_default_model_trained(void **state)
{
	struct env *e = *state;
	char dir[128], fc[160];
	struct train_file_info fi;
	json_object *mode;

	setenv("XDG_CACHE_HOME", e->cache, 1);
	assert_int_equal(job_default_model_dir(dir, sizeof(dir)), 0);
	snprintf(fc, sizeof(fc), "%s/sparda/model-tiny-v4", e->cache);
	assert_string_equal(dir, fc);
	snprintf(fc, sizeof(fc), "%s/forecast.safetensors", dir);
	mode = run_job(e, "", "");
	assert_int_equal(train_file_info(fc, &fi), 0);
	assert_true(fi.trained);
	assert_string_equal(fi.fit, "ridge");
	assert_true(fi.recall > fi.recall_untrained + 0.2);
	assert_forecast(mode, fc, true);
	json_object_put(mode);
	unsetenv("XDG_CACHE_HOME");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ridge_fit),
	    cmocka_unit_test(test_compute_reports_forecast),
	    cmocka_unit_test(test_fit_keeps_better),
	    cmocka_unit_test(test_ridge_prior),
	    cmocka_unit_test(test_ridge_ill_conditioned),
	    cmocka_unit_test(test_auto_seqs),
	    cmocka_unit_test(test_default_model_trained),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
