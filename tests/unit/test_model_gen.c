// SPDX-License-Identifier: Apache-2.0
/*
 * Synthetic model generator: presets, byte-exact determinism (and per-tensor reproducibility),
 * weight scales, an informative Forecast (a noisy copy of the next layer's grouped query) and
 * the gen-model command line, with --train-forecast writing a trained Forecast over the
 * generated one.
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
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"
#include "model_cli.h"
#include "test_files.h"
#include "train.h"

struct env {
	char dir[64];
	char err[512];
	struct model_config tiny;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	if (!e)
		return -1;
	strcpy(e->dir, "/tmp/sparda-gen-XXXXXX");
	if (!mkdtemp(e->dir) || model_preset("tiny", &e->tiny))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	if (system(cmd) != 0)
		return -1;
	free(e);
	return 0;
}

static void sub(char *buf, size_t len, const struct env *e, const char *a, const char *b)
{
	snprintf(buf, len, "%s/%s%s%s", e->dir, a, b ? "/" : "", b ? b : "");
}

static void test_presets(void **state)
{
	struct model_config c;

	(void)state;
	assert_int_equal(model_preset("nope", &c), -ENOENT);
	assert_int_equal(model_preset("tiny", &c), 0);
	assert_int_equal(c.vocab, 512);
	assert_int_equal(c.hidden, 256);
	assert_int_equal(c.n_layers, 4);
	assert_int_equal(c.n_heads, 8);
	assert_int_equal(c.n_kv_heads, 2);
	assert_int_equal(c.head_dim, 32);
	assert_int_equal(c.ffn, 512);
	assert_int_equal(c.sparse.block, c.sparse.pool_stride * c.sparse.ck_stride);
	assert_int_equal(c.sparse.topk, 8);
	assert_int_equal(c.dense_len, 1024);
	assert_int_equal(model_preset("minicpm4-8b", &c), 0);
	assert_int_equal(c.family, MODEL_FAMILY_MINICPM);
	assert_int_equal(c.vocab, 73448);
	assert_int_equal(c.ffn, 16384);
	assert_int_equal(c.n_kv_heads, 2);
	assert_true(c.scale_emb == 12.0f);
	assert_true(fabsf(c.residual_scale - 1.4f / sqrtf(32.0f)) < 1e-6f);
	assert_true(c.logit_scale == 1.0f / 16.0f);
	assert_true(c.rope.theta == 10000.0);
	assert_int_equal(c.sparse.topk, 96);
	assert_int_equal(c.dense_len, 8192);
	assert_int_equal(model_preset("llama3-8b", &c), 0);
	assert_int_equal(c.family, MODEL_FAMILY_LLAMA);
	assert_int_equal(c.vocab, 128256);
	assert_int_equal(c.n_kv_heads, 8);
	assert_int_equal(c.ffn, 14336);
	assert_int_equal(c.rope.type, KB_ROPE_LLAMA3);
	assert_true(c.rope.theta == 500000.0 && c.rope.factor == 8.0);
	assert_true(c.rope.low_freq_factor == 1.0 && c.rope.high_freq_factor == 4.0);
	assert_int_equal(c.rope.original_max_pos, 8192);
	assert_int_equal(c.rope.head_dim, 128);
}

static void test_determinism(void **state)
{
	static const char *const files[] = {"config.json", "model.safetensors",
					    "forecast.safetensors"};
	struct env *e = *state;
	char a[256], b[256], c[256];
	struct model_config two = e->tiny;
	struct model *m4, *m2;

	sub(a, sizeof(a), e, "a", NULL);
	sub(b, sizeof(b), e, "b", NULL);
	sub(c, sizeof(c), e, "c", NULL);
	assert_int_equal(model_generate(a, &e->tiny, 5, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_generate(b, &e->tiny, 5, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_generate(c, &e->tiny, 6, e->err, sizeof(e->err)), 0);
	for (int i = 0; i < 3; i++) {
		sub(a, sizeof(a), e, "a", files[i]);
		sub(b, sizeof(b), e, "b", files[i]);
		sub(c, sizeof(c), e, "c", files[i]);
		assert_true(test_same_file(a, b));
		assert_true(test_same_file(a, c) == (i == 0)); /* only config.json is seed-free */
	}
#ifdef _OPENMP
	/* the generator fills tensors in parallel: one thread and three write the same bytes */
	omp_set_num_threads(1);
	sub(a, sizeof(a), e, "t1", NULL);
	assert_int_equal(model_generate(a, &e->tiny, 5, e->err, sizeof(e->err)), 0);
	omp_set_num_threads(3);
	sub(b, sizeof(b), e, "t3", NULL);
	assert_int_equal(model_generate(b, &e->tiny, 5, e->err, sizeof(e->err)), 0);
	for (int i = 1; i < 3; i++) {
		sub(a, sizeof(a), e, "t1", files[i]);
		sub(b, sizeof(b), e, "t3", files[i]);
		assert_true(test_same_file(a, b));
	}
#endif
	/* any subset is reproducible: a 2-layer model shares the 4-layer model's tensors */
	two.n_layers = 2;
	sub(b, sizeof(b), e, "two", NULL);
	sub(a, sizeof(a), e, "a", NULL);
	assert_int_equal(model_generate(b, &two, 5, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(a, NULL, &m4, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(b, NULL, &m2, e->err, sizeof(e->err)), 0);
	assert_memory_equal(m4->embed.data, m2->embed.data, 512 * 256 * 2);
	assert_memory_equal(m4->layers[1].wk.data, m2->layers[1].wk.data, 64 * 256 * 2);
	assert_memory_equal(m4->layers[0].wf.data, m2->layers[0].wf.data, 64 * 256 * 2);
	assert_memory_equal(m4->layers[0].wfc.data, m2->layers[0].wfc.data, 64 * 256 * 2);
	model_close(m2);
	model_close(m4);
}

static double mean_of(const struct model_tensor *t, double *std)
{
	size_t n = (size_t)t->rows * t->cols;
	double s = 0, s2 = 0;

	for (size_t i = 0; i < n; i++) {
		double v = kb_bf16_to_f32(t->data[i]);

		s += v;
		s2 += v * v;
	}
	*std = sqrt(s2 / n - (s / n) * (s / n));
	return s / n;
}

static void expect_near(double v, double want, double rel)
{
	if (fabs(v - want) > rel * fabs(want))
		fail_msg("%g not within %g%% of %g", v, rel * 100, want);
}

static void test_scales(void **state)
{
	struct env *e = *state;
	struct model *m;
	double sd, mu;

	assert_int_equal(model_generate(e->dir, &e->tiny, 3, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	mu = mean_of(&m->layers[1].attn_norm, &sd);
	expect_near(mu, 1.0, 0.02);
	expect_near(sd, 0.05, 0.3);
	mean_of(&m->layers[1].wq, &sd);
	expect_near(sd, 2.0 / 16.0, 0.05); /* x2 gain, 1/sqrt(256) */
	mean_of(&m->layers[1].wk, &sd);
	expect_near(sd, 2.0 / 16.0, 0.05);
	mean_of(&m->layers[1].wv, &sd);
	expect_near(sd, 1.0 / 16.0, 0.05);
	mean_of(&m->layers[1].w_down, &sd);
	expect_near(sd, 1.0 / sqrt(512.0), 0.05);
	mu = mean_of(&m->embed, &sd);
	assert_true(fabs(mu) < 0.02);
	expect_near(sd, 1.0, 0.05);
	model_close(m);
}

/* Pearson correlation of W_F(l) with the grouped mean of W_q(src). */
static double forecast_corr(const struct model *m, const struct model_tensor *wf, uint32_t src)
{
	const struct model_config *c = &m->cfg;
	uint32_t group = c->n_heads / c->n_kv_heads;
	double sxy = 0, sxx = 0, syy = 0;

	for (uint32_t r = 0; r < wf->rows; r++) {
		uint32_t g = r / c->head_dim, i = r % c->head_dim;

		for (uint32_t k = 0; k < c->hidden; k++) {
			double x = kb_bf16_to_f32(wf->data[(size_t)r * c->hidden + k]), y = 0;

			for (uint32_t h = g * group; h < (g + 1) * group; h++)
				y += kb_bf16_to_f32(
				    m->layers[src]
					.wq.data[((size_t)h * c->head_dim + i) * c->hidden + k]);
			y /= group;
			sxy += x * y;
			sxx += x * x;
			syy += y * y;
		}
	}
	return sxy / sqrt(sxx * syy);
}

static void test_forecast_informative(void **state)
{
	struct env *e = *state;
	struct model *m;

	assert_int_equal(model_generate(e->dir, &e->tiny, 11, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	for (uint32_t l = 0; l + 1 < m->cfg.n_layers; l++) {
		assert_true(forecast_corr(m, &m->layers[l].wf, l + 1) > 0.93);
		assert_true(fabs(forecast_corr(m, &m->layers[l].wf, l)) < 0.1);
	}
	assert_true(forecast_corr(m, &m->layers[0].wfc, 0) > 0.93);
	assert_true(fabs(forecast_corr(m, &m->layers[0].wfc, 1)) < 0.1);
	model_close(m);
}

/* A shrunk MiniCPM: muP scales survive the config round trip; embeddings are 1/scale_emb. */
static void test_minicpm_small(void **state)
{
	struct env *e = *state;
	struct model_config c;
	struct model *m;
	double sd;

	assert_int_equal(model_preset("minicpm4-8b", &c), 0);
	c.vocab = 300;
	c.hidden = 128;
	c.n_layers = 2;
	c.n_heads = 4;
	c.n_kv_heads = 2;
	c.head_dim = 32;
	c.rope.head_dim = 32;
	c.ffn = 64;
	assert_int_equal(model_generate(e->dir, &c, 1, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_int_equal(m->cfg.family, MODEL_FAMILY_MINICPM);
	assert_true(m->cfg.scale_emb == 12.0f);
	assert_true(fabsf(m->cfg.residual_scale - c.residual_scale) < 1e-6f);
	assert_true(fabsf(m->cfg.logit_scale - c.logit_scale) < 1e-6f);
	assert_false(m->cfg.tie_embeddings);
	mean_of(&m->embed, &sd);
	expect_near(sd, 1.0 / 12.0, 0.05);
	model_close(m);
}

static void test_generate_errors(void **state)
{
	struct env *e = *state;
	struct model_config c = e->tiny;
	char p[256];

	c.n_kv_heads = 3;
	assert_int_equal(model_generate(e->dir, &c, 1, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, "num_key_value_heads"));
	c = e->tiny;
	c.sparse.block = 32; /* != pool_stride * ck_stride */
	assert_int_equal(model_generate(e->dir, &c, 1, e->err, sizeof(e->err)), -EINVAL);
	assert_non_null(strstr(e->err, "sparse_config inconsistent"));
	sub(p, sizeof(p), e, "model.safetensors", NULL);
	assert_int_not_equal(access(p, F_OK), 0); /* nothing written past the bad config */
	sub(p, sizeof(p), e, "file", NULL);
	fclose(fopen(p, "w"));
	sub(p, sizeof(p), e, "file", "sub");
	assert_int_equal(model_generate(p, &e->tiny, 1, e->err, sizeof(e->err)), -ENOTDIR);
}

static int run_cli(int argc, const char *const *argv)
{
	return model_gen_main(argc, (char **)argv);
}

/* A tensor's column c (or row r) is all zero. */
static bool col_zero(const struct model_tensor *t, uint32_t c)
{
	for (uint32_t r = 0; r < t->rows; r++)
		if (t->data[(size_t)r * t->cols + c] & 0x7fff)
			return false;
	return true;
}

static bool row_zero(const struct model_tensor *t, uint32_t r)
{
	for (uint32_t c = 0; c < t->cols; c++)
		if (t->data[(size_t)r * t->cols + c] & 0x7fff)
			return false;
	return true;
}

/*
 * --shared-activation: every 64th channel of every embedding holds one shared value, carrying
 * the asked fraction of the embedding's energy; only W_q and W_k read those channels (the other
 * readers' columns are zero), the query heads of a KV group read them alike, nothing writes
 * them (o_proj and down_proj rows are zero), and everything else is the plain model's, byte for
 * byte. 0 is the plain model; 1 and negative
 * fractions are refused with a message.
 */
static void test_shared_activation(void **state)
{
	struct env *e = *state;
	char a[256], b[256];
	struct model *m, *p;
	const struct model_config *c;
	double shared = 0, total = 0;

	sub(a, sizeof(a), e, "sa", NULL);
	sub(b, sizeof(b), e, "plain", NULL);
	assert_int_equal(
	    model_generate_opts(a, &e->tiny,
				&(struct model_gen_opts){.seed = 4, .shared_activation = 0.8},
				e->err, sizeof(e->err)),
	    0);
	assert_int_equal(model_generate_opts(b, &e->tiny, &(struct model_gen_opts){.seed = 4},
					     e->err, sizeof(e->err)),
			 0);
	assert_int_equal(model_open(a, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(b, NULL, &p, e->err, sizeof(e->err)), 0);
	c = &m->cfg;
	assert_false(c->tie_embeddings);
	for (uint32_t v = 0; v < c->vocab; v++) {
		for (uint32_t k = 0; k < c->hidden; k++) {
			double x = kb_bf16_to_f32(m->embed.data[(size_t)v * c->hidden + k]);

			total += x * x;
			if (k % 64) { /* the token's own part: the plain model's */
				assert_int_equal(m->embed.data[(size_t)v * c->hidden + k],
						 p->embed.data[(size_t)v * c->hidden + k]);
				continue;
			}
			shared += x * x;
			assert_int_equal(m->embed.data[(size_t)v * c->hidden + k],
					 m->embed.data[k]); /* the same for every token */
		}
	}
	expect_near(shared / total, 0.8, 0.02);
	for (uint32_t l = 0; l < c->n_layers; l++) {
		const struct model_layer *L = &m->layers[l], *P = &p->layers[l];

		uint32_t group = c->n_heads / c->n_kv_heads;

		assert_memory_equal(L->wk.data, P->wk.data, (size_t)L->wk.rows * L->wk.cols * 2);
		/* W_q: the plain model's, except that on the massive channels every head of a KV
		 * group has its group's first head's column (the plain model's there) */
		for (uint32_t r = 0; r < L->wq.rows; r++) {
			uint32_t first =
			    (r / c->head_dim / group * group) * c->head_dim + r % c->head_dim;

			for (uint32_t k = 0; k < c->hidden; k++)
				assert_int_equal(
				    L->wq.data[(size_t)r * c->hidden + k],
				    P->wq.data[(size_t)(k % 64 ? r : first) * c->hidden + k]);
		}
		for (uint32_t r = 0; r < L->wf.rows; r++) /* the Forecast: off the massive ones */
			for (uint32_t k = 1; k < c->hidden; k += (k + 1) % 64 ? 1 : 2)
				assert_int_equal(L->wf.data[(size_t)r * c->hidden + k],
						 P->wf.data[(size_t)r * c->hidden + k]);
		for (uint32_t k = 0; k < c->hidden; k++) {
			bool massive = k % 64 == 0;

			assert_true(col_zero(&L->wv, k) == massive);
			assert_true(col_zero(&L->w_gate, k) == massive);
			assert_true(col_zero(&L->w_up, k) == massive);
			assert_true(row_zero(&L->wo, k) == massive);
			assert_true(row_zero(&L->w_down, k) == massive);
			assert_true(col_zero(&m->lm_head, k) == massive);
			assert_false(col_zero(&L->wq, k) || col_zero(&L->wk, k));
		}
	}
	model_close(p);
	model_close(m);
	/* 0 through the options is model_generate's model */
	sub(a, sizeof(a), e, "plain0", NULL);
	assert_int_equal(model_generate(a, &e->tiny, 4, e->err, sizeof(e->err)), 0);
	sub(a, sizeof(a), e, "plain0", "model.safetensors");
	sub(b, sizeof(b), e, "plain", "model.safetensors");
	assert_true(test_same_file(a, b));
	sub(a, sizeof(a), e, "bad", NULL);
	assert_int_equal(model_generate_opts(a, &e->tiny,
					     &(struct model_gen_opts){.shared_activation = 1.0},
					     e->err, sizeof(e->err)),
			 -EINVAL);
	assert_non_null(strstr(e->err, "shared activation 1"));
	assert_int_equal(model_generate_opts(a, &e->tiny,
					     &(struct model_gen_opts){.shared_activation = -0.1},
					     e->err, sizeof(e->err)),
			 -EINVAL);
	{
		const char *ok[] = {"gen-model", "--preset", "tiny", "--layers",
				    "1",	 "--out",    a,	     "--shared-activation",
				    "0.5",	 NULL};
		const char *bad1[] = {"gen-model",	     "--preset", "tiny", "--out", a,
				      "--shared-activation", "1",	 NULL};
		const char *bad2[] = {"gen-model",	     "--preset", "tiny", "--out", a,
				      "--shared-activation", "0.5x",	 NULL};

		assert_int_equal(run_cli(9, ok), 0);
		assert_int_equal(run_cli(7, bad1), 2);
		assert_int_equal(run_cli(7, bad2), 2);
	}
}

static void test_cli(void **state)
{
	struct env *e = *state;
	struct model *m;
	char out[256], p[256];

	sub(out, sizeof(out), e, "cli", NULL);
	{
		const char *argv[] = {"gen-model", "--preset", "tiny", "--out",	  out,	  "--seed",
				      "9",	   "--layers", "2",    "--vocab", "1000", NULL};

		assert_int_equal(run_cli(11, argv), 0);
	}
	assert_int_equal(model_open(out, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_int_equal(m->cfg.n_layers, 2);
	assert_int_equal(m->cfg.vocab, 1000);
	assert_int_equal(m->cfg.hidden, 256);
	model_close(m);
	/* same seed through the library: same bytes */
	e->tiny.n_layers = 2;
	e->tiny.vocab = 1000;
	sub(p, sizeof(p), e, "lib", NULL);
	assert_int_equal(model_generate(p, &e->tiny, 9, e->err, sizeof(e->err)), 0);
	sub(p, sizeof(p), e, "lib", "model.safetensors");
	sub(out, sizeof(out), e, "cli", "model.safetensors");
	assert_true(test_same_file(p, out));
	{
		const char *bad1[] = {"gen-model", "--preset", "huge", "--out", out, NULL};
		const char *bad2[] = {"gen-model", "--preset", "tiny", NULL};
		const char *bad3[] = {"gen-model", "--preset", "tiny", "--out",
				      out,	   "--layers", "x",    NULL};
		const char *bad4[] = {"gen-model", "--preset", "tiny", "--out",
				      out,	   "--bogus",  NULL};

		assert_int_equal(run_cli(5, bad1), 2);
		assert_int_equal(run_cli(3, bad2), 2);
		assert_int_equal(run_cli(7, bad3), 2);
		assert_int_equal(run_cli(6, bad4), 2);
	}
	/* a generation failure: the output directory lies under a regular file */
	sub(p, sizeof(p), e, "lib", "model.safetensors/sub");
	{
		const char *argv[] = {"gen-model", "--preset", "tiny", "--out", p, NULL};

		assert_int_equal(run_cli(5, argv), 1);
	}
}

static void test_cli_train_forecast(void **state)
{
	struct env *e = *state;
	struct train_file_info fi;
	struct model *m;
	char out[256], fc[256];

	sub(out, sizeof(out), e, "trained", NULL);
	sub(fc, sizeof(fc), e, "trained", "forecast.safetensors");
	{
		const char *argv[] = {
		    "gen-model",	"--preset",	      "tiny", "--layers", "2", "--out", out,
		    "--train-forecast", "--forecast-backend", "cpu",  NULL};

		assert_int_equal(run_cli(10, argv), 0);
	}
	assert_int_equal(train_file_info(fc, &fi), 0);
	assert_true(fi.trained);
	assert_string_equal(fi.fit, "ridge");
	assert_true(fi.recall > fi.recall_untrained);
	assert_int_equal(model_open(out, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_true(m->has_forecast);
	model_close(m);
	{
		/* --forecast-seqs 0 is the automatic count; a word is no count */
		const char *bad1[] = {"gen-model",	  "--preset",	     "tiny", "--out", out,
				      "--train-forecast", "--forecast-seqs", "x",    NULL};
		const char *bad2[] = {
		    "gen-model",	"--preset",	      "tiny", "--out", out,
		    "--train-forecast", "--forecast-backend", "tpu",  NULL};
		const char *bad3[] = {
		    "gen-model",	"--preset",	      "tiny", "--out", out,
		    "--train-forecast", "--forecast-seq-len", "600",  NULL};

		assert_int_equal(run_cli(8, bad1), 2);
		assert_int_equal(run_cli(8, bad2), 2);
		/* the model is written, but its sequences are too short for the fit: a failure */
		assert_int_equal(run_cli(8, bad3), 1);
	}
	/* without the flag the generator's Forecast stays: untrained */
	sub(out, sizeof(out), e, "random", NULL);
	sub(fc, sizeof(fc), e, "random", "forecast.safetensors");
	{
		const char *argv[] = {"gen-model", "--preset", "tiny", "--layers",
				      "2",	   "--out",    out,    NULL};

		assert_int_equal(run_cli(7, argv), 0);
	}
	assert_int_equal(train_file_info(fc, &fi), 0);
	assert_false(fi.trained);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_presets),
	    cmocka_unit_test_setup_teardown(test_determinism, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scales, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forecast_informative, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_minicpm_small, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generate_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cli_train_forecast, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_shared_activation, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
