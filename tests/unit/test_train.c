// SPDX-License-Identifier: Apache-2.0
/*
 * Forecast training end to end on the tiny model (CPU backend): held-out KL falls and recall
 * beats the untrained and previous-step baselines, the file loads with model_open, two runs
 * give identical bytes (also with other host thread counts), a run stopped after a checkpoint
 * resumes to the same bytes, the loss falls on a repeated batch, the teacher grid, query cap
 * and validation options do what they say, the GEMM logits agree with the host's, the ranking
 * loss and the L2-SP pull towards the ridge start work, and bad inputs fail with clear errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "train.h"
#include "train_cli.h"
#include "test_files.h"

/* Built twice (TEST_TRAIN_PART 1 and 2, train.cmake); each part leaves the other's unused. */
#pragma GCC diagnostic ignored "-Wunused-function"

struct env {
	char dir[64], out[96], out2[96], ckpt[96], calib[96];
	char err[512];
	struct model *m;
	struct kb *kb;
	struct calib_set tr, ev, small_tr, small_ev;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct kb_opts ko = {.kind = KB_KIND_CPU, .cpu_threads = 2};
	struct model_config mc;

	if (!e)
		return -1;
	strcpy(e->dir, "/tmp/sparda-train-test-XXXXXX");
	if (!mkdtemp(e->dir) || model_preset("tiny", &mc) ||
	    model_generate(e->dir, &mc, 1234, e->err, sizeof(e->err)) ||
	    model_open(e->dir, NULL, &e->m, e->err, sizeof(e->err)) || kb_open(&ko, &e->kb))
		return -1;
	snprintf(e->out, sizeof(e->out), "%s/a.safetensors", e->dir);
	snprintf(e->out2, sizeof(e->out2), "%s/b.safetensors", e->dir);
	snprintf(e->ckpt, sizeof(e->ckpt), "%s/ckpt.safetensors", e->dir);
	snprintf(e->calib, sizeof(e->calib), "%s/calib.txt", e->dir);
	/* 6 training and 2 held-out sequences of 768 tokens; queries from position 512 (where
	 * the 8-block budget starts to choose), every 4th: 64 per sequence */
	if (calib_synth(8, 768, mc.vocab, 7, &e->tr) || calib_split(&e->tr, 2, &e->ev) ||
	    calib_synth(4, 640, mc.vocab, 8, &e->small_tr) ||
	    calib_split(&e->small_tr, 1, &e->small_ev))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	const char *f[] = {"config.json",   "model.safetensors", "forecast.safetensors",
			   "a.safetensors", "b.safetensors",	 "ckpt.safetensors",
			   "calib.txt"};
	char p[128];

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", e->dir, f[i]);
		unlink(p);
	}
	rmdir(e->dir);
	calib_fini(&e->tr);
	calib_fini(&e->ev);
	calib_fini(&e->small_tr);
	calib_fini(&e->small_ev);
	kb_destroy(e->kb);
	model_close(e->m);
	free(e);
	return 0;
}

static void opts(struct env *e, struct train_opts *o, uint32_t steps)
{
	train_opts_default(o);
	o->train = &e->tr;
	o->heldout = &e->ev;
	o->steps = steps;
	o->batch = 4;
	o->seed = 3;
	o->query_start = 512;
}

/* The small set (3 + 1 sequences of 640 tokens) for runs that compare files. */
static void small_opts(struct env *e, struct train_opts *o, uint32_t steps)
{
	opts(e, o, steps);
	o->train = &e->small_tr;
	o->heldout = &e->small_ev;
	o->batch = 2;
}

static void test_train_beats_baselines(void **state)
{
	struct env *e = *state;
	struct train_opts o;
	struct train_report r;
	struct model *m2 = NULL;

	opts(e, &o, 30);
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	assert_int_equal(r.n_slots, e->m->cfg.n_layers);
	assert_int_equal(r.fine_kernel, 2);
	for (uint32_t k = 0; k < r.n_slots; k++) {
		const struct train_layer_report *l = &r.layers[k];

		assert_true(l->kl_trained < l->kl_untrained);
		assert_true(l->recall_trained > l->recall_untrained);
		assert_true(l->recall_trained > l->recall_prev_step);
		assert_true(l->recall_target > l->recall_untrained && l->recall_target <= 1.0);
	}
	assert_true(train_report_mean(&r, offsetof(struct train_layer_report, recall_trained)) >
		    0.4);
	/* ranking by the regression target itself beats its linear prediction from x_l */
	assert_true(train_report_mean(&r, offsetof(struct train_layer_report, recall_target)) >
		    train_report_mean(&r, offsetof(struct train_layer_report, recall_ridge)));
	train_report_fini(&r);
	/* the file is a Forecast model_open accepts: every q_future_proj but the last, q_curr */
	assert_int_equal(model_open(e->dir, e->out, &m2, e->err, sizeof(e->err)), 0);
	assert_true(m2->has_forecast);
	for (uint32_t l = 0; l + 1 < m2->cfg.n_layers; l++)
		assert_non_null(m2->layers[l].wf.data);
	assert_null(m2->layers[m2->cfg.n_layers - 1].wf.data);
	assert_non_null(m2->layers[0].wfc.data);
	assert_int_equal(m2->layers[0].wf.rows, m2->cfg.n_kv_heads * m2->cfg.head_dim);
	assert_int_equal(m2->layers[0].wf.cols, m2->cfg.hidden);
	model_close(m2);
}

static void test_train_deterministic(void **state)
{
	struct env *e = *state;
	struct train_opts o;
	struct train_report r;

	small_opts(e, &o, 6);
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_true(test_same_file(e->out, e->out2));
	/* another seed draws other batches: other bytes (the test can tell files apart) */
	o.seed = 4;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_false(test_same_file(e->out, e->out2));
}

/* The teacher on the inference grid is the runtime's selector itself: its blocks are the true
 * ones. A query cap samples that many positions per sequence; the host loss threads do not
 * change a single byte of the result. */
static void test_train_options(void **state)
{
	struct env *e = *state;
	struct train_opts o;
	struct train_report r;
	double kl_gemm, kl_host;

	small_opts(e, &o, 0);
	o.teacher_kernel = TRAIN_TEACHER_SELECTOR;
	o.max_queries = 10;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	assert_int_equal(r.fine_kernel, e->m->cfg.sparse.ck_kernel);
	assert_int_equal(r.fine_stride, e->m->cfg.sparse.ck_stride);
	assert_int_equal(r.train_queries, 3 * 10 * e->m->cfg.n_kv_heads);
	assert_int_equal(r.eval_queries, 1 * 10 * e->m->cfg.n_kv_heads);
	assert_true(r.host_bytes > 0);
	for (uint32_t k = 0; k < r.n_slots; k++)
		assert_true(r.layers[k].teacher_agreement == 1.0);
	train_report_fini(&r);
	/* the fine teacher (kernel 2, stride 1) picks other blocks on this model */
	small_opts(e, &o, 3);
	o.host_threads = 1;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	assert_int_equal(r.fine_stride, 1);
	assert_true(train_report_mean(&r, offsetof(struct train_layer_report, teacher_agreement)) <
		    1.0);
	train_report_fini(&r);
	o.host_threads = 3;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_true(test_same_file(e->out, e->out2));
	/* the logits through the backend GEMM (bf16 F) and on the host in double agree */
	small_opts(e, &o, 0);
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	kl_gemm = train_report_mean(&r, offsetof(struct train_layer_report, kl_ridge));
	train_report_fini(&r);
	o.logits_host = true;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	kl_host = train_report_mean(&r, offsetof(struct train_layer_report, kl_ridge));
	train_report_fini(&r);
	assert_true(kl_gemm > 0.0 && fabs(kl_gemm - kl_host) < 0.01 * kl_host);
	/* validated on the held-out set itself: the written step never scores below the start */
	small_opts(e, &o, 6);
	o.val = &e->small_ev;
	o.val_every = 2;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	for (uint32_t k = 0; k < r.n_slots; k++) {
		assert_true(r.layers[k].recall_trained >= r.layers[k].recall_ridge);
		assert_true(r.layers[k].best_step % 2 == 0 && r.layers[k].best_step <= 6);
	}
	train_report_fini(&r);
}

static int stop_at_7(void *ctx, const struct train_progress *p)
{
	(void)ctx;
	return p->phase == TRAIN_PHASE_FIT && p->done == 7;
}

static void test_train_resume(void **state)
{
	struct env *e = *state;
	struct train_opts o;
	struct train_report r;

	small_opts(e, &o, 12);
	o.val = &e->small_ev; /* the best-so-far weights travel in the checkpoint too */
	o.val_every = 4;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	unlink(e->ckpt);
	unlink(e->out2);
	o.checkpoint = e->ckpt;
	o.checkpoint_every = 5;
	o.progress = stop_at_7;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)),
			 -ECANCELED);
	train_report_fini(&r);
	assert_int_equal(access(e->out2, F_OK), -1);
	o.progress = NULL;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	assert_int_equal(r.start_step, 5);
	train_report_fini(&r);
	assert_true(test_same_file(e->out, e->out2));
	/* a checkpoint of other settings is refused */
	o.lr *= 2.0f;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)),
			 -EINVAL);
	assert_non_null(strstr(e->err, "other settings"));
	train_report_fini(&r);
	unlink(e->ckpt);
}

static double losses[64];

static int record_loss(void *ctx, const struct train_progress *p)
{
	(void)ctx;
	if (p->phase == TRAIN_PHASE_FIT && p->done <= 64)
		losses[p->done - 1] = p->loss;
	return 0;
}

/* One sequence as the whole batch: AdamW on the analytic gradient must lower its loss. */
static void test_train_loss_falls(void **state)
{
	struct env *e = *state;
	struct calib_set one = e->small_tr;
	struct train_opts o;
	struct train_report r;

	one.n_seqs = 1;
	small_opts(e, &o, 20);
	o.train = &one;
	o.batch = 1;
	o.lr = 2e-3f;
	o.progress = record_loss;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_true(losses[19] < 0.9 * losses[0]);
}

/* Squared distance between the bf16 tensors of two Forecast files. */
static double file_dist2(const char *a, const char *b)
{
	struct st_file *fa = NULL, *fb = NULL;
	double d2 = 0.0;

	assert_int_equal(st_open(a, &fa, NULL, 0), 0);
	assert_int_equal(st_open(b, &fb, NULL, 0), 0);
	for (uint32_t i = 0; i < st_count(fa); i++) {
		const struct st_tensor *ta = st_at(fa, i), *tb = st_find(fb, ta->name);
		const uint16_t *x = ta->data, *y;

		assert_non_null(tb);
		assert_int_equal(ta->bytes, tb->bytes);
		y = tb->data;
		for (uint64_t j = 0; j < ta->bytes / 2; j++) {
			double t = (double)kb_bf16_to_f32(x[j]) - kb_bf16_to_f32(y[j]);

			d2 += t * t;
		}
	}
	st_close(fa);
	st_close(fb);
	return d2;
}

/* The ranking loss (selector teacher): the GEMM path agrees with the host's, AdamW lowers it
 * on a repeated batch; L2-SP keeps the weights nearer their ridge start than AdamW alone. */
static void test_train_rank_l2sp(void **state)
{
	struct env *e = *state;
	struct calib_set one = e->small_tr;
	struct train_opts o;
	struct train_report r;
	double l_gemm, l_host, d_free, d_sp;

	small_opts(e, &o, 0);
	o.teacher_kernel = TRAIN_TEACHER_SELECTOR;
	o.loss = TRAIN_LOSS_RANK;
	o.rank_gamma = 4.0f;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	l_gemm = train_report_mean(&r, offsetof(struct train_layer_report, kl_ridge));
	train_report_fini(&r);
	o.logits_host = true;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	l_host = train_report_mean(&r, offsetof(struct train_layer_report, kl_ridge));
	train_report_fini(&r);
	assert_true(l_gemm > 0.0 && fabs(l_gemm - l_host) < 0.01 * l_host);
	o.rank_gamma = 0.0f;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)),
			 -EINVAL);
	train_report_fini(&r);
	/* one sequence as the whole batch: the loss falls */
	one.n_seqs = 1;
	small_opts(e, &o, 20);
	o.teacher_kernel = TRAIN_TEACHER_SELECTOR;
	o.loss = TRAIN_LOSS_RANK;
	o.rank_gamma = 4.0f;
	o.train = &one;
	o.batch = 1;
	o.lr = 2e-3f;
	o.progress = record_loss;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	assert_true(losses[19] < 0.9 * losses[0]);
	/* the ridge start (0 steps) into e->out2; 10 steps without and with L2-SP */
	o.progress = NULL;
	o.steps = 0;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	o.steps = 10;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	d_free = file_dist2(e->out, e->out2);
	o.l2sp = 30.0f;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)), 0);
	train_report_fini(&r);
	d_sp = file_dist2(e->out, e->out2);
	assert_true(d_free > 0.0 && d_sp < 0.5 * d_free);
	o.l2sp = -1.0f;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out, &r, e->err, sizeof(e->err)),
			 -EINVAL);
	train_report_fini(&r);
}

static int write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (!fp)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

static void expect_calib_error(struct env *e, const char *text, const char *needle)
{
	struct calib_set s = {0};

	assert_int_equal(write_file(e->calib, text), 0);
	assert_int_equal(calib_read(e->calib, 512, 3, 100, &s, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, needle));
	assert_null(s.ids);
}

static void test_calib_read(void **state)
{
	struct env *e = *state;
	struct calib_set s = {0};

	assert_int_equal(write_file(e->calib, "1 2 3 4\n\n  5\t6 7 8 9\r\n"), 0);
	assert_int_equal(calib_read(e->calib, 512, 3, 4, &s, e->err, sizeof(e->err)), 0);
	assert_int_equal(s.n_seqs, 2);
	assert_int_equal(s.len[1], 4); /* truncated to max_len */
	assert_int_equal(s.ids[s.off[1] + 3], 8);
	calib_fini(&s);
	expect_calib_error(e, "1 2 3\n4 x 6\n", ":2: token 'x'");
	expect_calib_error(e, "1 2 3\n4 512 6\n", ":2: token '512' is not an id in [0, 512)");
	expect_calib_error(e, "1 2 -3\n", ":1: token '-3'");
	expect_calib_error(e, "1 2 3\n4 5\n", ":2: 2 tokens, at least 3");
	expect_calib_error(e, "\n\n", "no sequence");
	assert_int_equal(
	    calib_read("/nonexistent/calib.txt", 512, 1, 10, &s, e->err, sizeof(e->err)), -ENOENT);
	assert_non_null(strstr(e->err, "/nonexistent/calib.txt: cannot open"));
}

static void test_calib_synth(void **state)
{
	struct calib_set a = {0}, b = {0}, c = {0};
	uint32_t keys = 0;

	(void)state;
	assert_int_equal(calib_synth(3, 500, 512, 9, &a), 0);
	assert_int_equal(calib_synth(3, 500, 512, 9, &b), 0);
	assert_int_equal(calib_synth(3, 500, 512, 10, &c), 0);
	assert_true(calib_hash(&a) == calib_hash(&b));
	assert_true(calib_hash(&a) != calib_hash(&c));
	for (uint32_t i = 0; i < 3 * 500; i++) {
		assert_true(a.ids[i] >= 0 && a.ids[i] < 512);
		keys += a.ids[i] < 32;
	}
	assert_true(keys > 0); /* key markers of the retrieval pattern are present */
	assert_int_equal(calib_synth(1, 10, 16, 1, &c), -EINVAL);
	calib_fini(&a);
	calib_fini(&b);
	calib_fini(&c);
}

static void test_bad_inputs(void **state)
{
	struct env *e = *state;
	struct calib_set short_set = {0};
	struct train_opts o;
	struct train_report r;
	char *argv_model[] = {"train-forecast", "--model", "/nonexistent/model",
			      "--out",		e->out2,   "--quiet"};
	char *argv_calib[] = {"train-forecast", "--model", e->dir,  "--calib",
			      e->calib,		"--out",   e->out2, "--quiet"};
	char *argv_usage[] = {"train-forecast", "--steps", "ten", "--out", e->out2};

	/* sequences too short for the sparse config */
	assert_int_equal(calib_synth(3, 500, 512, 1, &short_set), 0);
	opts(e, &o, 2);
	o.train = &short_set;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)),
			 -EINVAL);
	assert_non_null(strstr(e->err, "calibration sequence 0 has 500 tokens"));
	train_report_fini(&r);
	calib_fini(&short_set);
	o.train = &e->tr;
	o.batch = 0;
	assert_int_equal(train_forecast(e->kb, e->m, &o, e->out2, &r, e->err, sizeof(e->err)),
			 -EINVAL);
	train_report_fini(&r);
	/* the command line: a missing model, a bad calibration file, a bad flag */
	unlink(e->out2);
	assert_int_equal(train_forecast_main(6, argv_model), 1);
	assert_int_equal(write_file(e->calib, "1 2 3 zebra\n"), 0);
	assert_int_equal(train_forecast_main(8, argv_calib), 1);
	assert_int_equal(train_forecast_main(5, argv_usage), 2);
	assert_int_equal(access(e->out2, F_OK), -1);
}

int main(void)
{
	/* Built twice (train.cmake): part 1 the data, errors and quality, part 2 the files. */
	const struct CMUnitTest tests[] = {
#if TEST_TRAIN_PART == 1
		cmocka_unit_test(test_calib_read),
		cmocka_unit_test(test_calib_synth),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_train_loss_falls),
		cmocka_unit_test(test_train_rank_l2sp),
		cmocka_unit_test(test_train_beats_baselines),
#else
		cmocka_unit_test(test_train_deterministic),
		cmocka_unit_test(test_train_resume),
		cmocka_unit_test(test_train_options),
#endif
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
