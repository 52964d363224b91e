// SPDX-License-Identifier: Apache-2.0
/*
 * Model loading: config.json parsing (Llama, MiniCPM muP, rope scaling, sparse_config
 * defaults), a generated tiny model, sharded checkpoints, Forecast files, and one error per
 * kind of bad input with a message naming file, tensor and problem.
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
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"

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
	strcpy(e->dir, "/tmp/sparda-model-XXXXXX");
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

static void path_of(char *buf, size_t len, const struct env *e, const char *name)
{
	snprintf(buf, len, "%s/%s", e->dir, name);
}

static void write_text(const struct env *e, const char *name, const char *text)
{
	char p[256];
	FILE *fp;

	path_of(p, sizeof(p), e, name);
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
}

static void expect_msg(const struct env *e, const char *frag)
{
	if (!strstr(e->err, frag))
		fail_msg("message '%s' lacks '%s'", e->err, frag);
}

static void gen_tiny(struct env *e)
{
	assert_int_equal(model_generate(e->dir, &e->tiny, 7, e->err, sizeof(e->err)), 0);
}

/* model_open must fail with rc and a message containing frag (and the file when given). */
static void expect_open_fail(struct env *e, const char *fc, int rc, const char *file,
			     const char *frag)
{
	struct model *m = (struct model *)0x1;
	char p[256];

	e->err[0] = 0;
	assert_int_equal(model_open(e->dir, fc, &m, e->err, sizeof(e->err)), rc);
	assert_null(m);
	expect_msg(e, frag);
	if (file) {
		path_of(p, sizeof(p), e, file);
		expect_msg(e, p);
	}
}

/* ---- config.json ---- */

static const char *llama_cfg =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": 512,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024,"
    " \"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-05, \"max_position_embeddings\": 131072,"
    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";

static void test_config_llama3(void **state)
{
	struct env *e = *state;
	struct model_config c;

	write_text(e, "config.json", llama_cfg);
	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), 0);
	assert_int_equal(c.family, MODEL_FAMILY_LLAMA);
	assert_int_equal(c.n_kv_heads, 8); /* defaults to num_attention_heads */
	assert_int_equal(c.head_dim, 64);  /* defaults to hidden / heads */
	assert_false(c.tie_embeddings);	   /* LlamaConfig default */
	assert_int_equal(c.max_pos, 131072);
	assert_true(fabsf(c.rms_eps - 1e-5f) < 1e-12f);
	assert_int_equal(c.rope.type, KB_ROPE_LLAMA3);
	assert_int_equal(c.rope.head_dim, 64);
	assert_true(c.rope.theta == 500000.0);
	assert_true(c.rope.factor == 8.0);
	assert_true(c.rope.low_freq_factor == 1.0 && c.rope.high_freq_factor == 4.0);
	assert_int_equal(c.rope.original_max_pos, 8192);
	assert_true(c.scale_emb == 1.0f && c.residual_scale == 1.0f && c.logit_scale == 1.0f);
}

/* The layout newer transformers write: theta and scaling together under rope_parameters. */
static const char *llama_cfg_rope_parameters =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": 512,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024,"
    " \"rms_norm_eps\": 1e-05, \"max_position_embeddings\": 131072,"
    " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0,"
    " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
    " \"original_max_position_embeddings\": 8192}}";

static void test_config_rope_parameters(void **state)
{
	struct env *e = *state;
	struct model_config c;

	write_text(e, "config.json", llama_cfg_rope_parameters);
	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), 0);
	assert_int_equal(c.rope.type, KB_ROPE_LLAMA3);
	assert_true(c.rope.theta == 500000.0);
	assert_true(c.rope.factor == 8.0);
	assert_int_equal(c.rope.original_max_pos, 8192);
}

static void test_config_sparse_defaults(void **state)
{
	struct env *e = *state;
	struct model_config c;

	write_text(e, "config.json", llama_cfg);
	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), 0);
	assert_int_equal(c.sparse.block, 64);
	assert_int_equal(c.sparse.ck_kernel, 32);
	assert_int_equal(c.sparse.ck_stride, 16);
	assert_int_equal(c.sparse.pool_kernel, 5);
	assert_int_equal(c.sparse.pool_stride, 4);
	assert_int_equal(c.sparse.pool_pad, 1);
	assert_int_equal(c.sparse.sink, 1);
	assert_int_equal(c.sparse.local, 32);
	assert_int_equal(c.sparse.topk, 96);
	assert_int_equal(c.dense_len, 8192);
	/* a partial sparse_config keeps the defaults of the keys it leaves out */
	write_text(
	    e, "config.json",
	    "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 8,"
	    " \"sparse_config\": {\"topk\": 64, \"dense_len\": 0}}");
	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), 0);
	assert_int_equal(c.sparse.topk, 64);
	assert_int_equal(c.dense_len, 0);
	assert_int_equal(c.sparse.block, 64);
	assert_int_equal(c.sparse.local, 32);
	assert_int_equal(c.rope.type, KB_ROPE_PLAIN);
	assert_true(c.rope.theta == 10000.0);
}

static void test_config_minicpm(void **state)
{
	struct env *e = *state;
	struct model_config c;

	write_text(e, "config.json",
		   "{\"model_type\": \"minicpm\", \"vocab_size\": 73448, \"hidden_size\": 4096,"
		   " \"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
		   " \"num_key_value_heads\": 2, \"intermediate_size\": 16384, \"scale_emb\": 12,"
		   " \"scale_depth\": 1.4, \"dim_model_base\": 256, \"head_dim\": null,"
		   " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}");
	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), 0);
	assert_int_equal(c.family, MODEL_FAMILY_MINICPM);
	assert_int_equal(c.head_dim, 128);
	assert_true(c.tie_embeddings); /* MiniCPMConfig default */
	assert_true(c.scale_emb == 12.0f);
	assert_true(fabsf(c.residual_scale - (float)(1.4 / sqrt(32.0))) < 1e-7f);
	assert_true(fabsf(c.logit_scale - 1.0f / 16.0f) < 1e-9f);
	assert_int_equal(c.rope.type, KB_ROPE_YARN);
	assert_true(c.rope.factor == 4.0 && c.rope.beta_fast == 32.0 && c.rope.beta_slow == 1.0);
	assert_int_equal(c.rope.original_max_pos, 2048); /* max_position_embeddings default */
}

static void test_config_errors(void **state)
{
	static const struct {
		const char *json;
		const char *frag;
	} cases[] = {
	    {"{\"model_type\": \"llama\", ", "bad JSON"},
	    {"[1]", "not an object"},
	    {"{\"model_type\": \"gpt2\"}", "model_type 'gpt2' not supported"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10}", "missing key 'hidden_size'"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": \"64\"}",
	     "key 'hidden_size' must be an integer"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"num_key_value_heads\": 3}",
	     "not a multiple of num_key_value_heads"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2}}",
	     "rope_scaling type 'dynamic' not supported"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
	     "missing key 'low_freq_factor'"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"rope_scaling\": {\"rope_type\": \"longrope\", \"long_factor\": [1, 2]}}",
	     "long_factor must be an array of head_dim/2 = 8"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"sparse_config\": {\"block_size\": 32}}",
	     "sparse_config inconsistent"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 64,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8,"
	     " \"sparse_config\": {\"topk\": -1}}",
	     "key 'sparse_config.topk' must be an integer"},
	    {"{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 2,"
	     " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8}",
	     "head_dim 0 must be even, > 0"},
	};
	struct env *e = *state;
	struct model_config c;
	char p[256];

	assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), -ENOENT);
	expect_msg(e, "config.json: cannot open");
	path_of(p, sizeof(p), e, "config.json");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_text(e, "config.json", cases[i].json);
		e->err[0] = 0;
		assert_int_equal(model_config_load(e->dir, &c, e->err, sizeof(e->err)), -EINVAL);
		expect_msg(e, cases[i].frag);
		expect_msg(e, p);
	}
}

/* ---- rewriting generated files ---- */

struct mutation {
	const char *name; /* tensor to change, or NULL */
	bool drop;
	enum st_dtype dtype; /* else: new dtype and shape, zero data */
	uint32_t n_dims;
	uint64_t shape[2];
};

/*
 * Write `out` (a file in the model dir) from the tensors of the `n_in` input files, with one
 * mutation applied. `keep(i, n)` selects which tensors (index in the concatenation) to keep.
 */
static void copy_tensors(struct env *e, const char *out, const char *const *in, int n_in,
			 const struct mutation *mu, bool (*keep)(uint32_t i, uint32_t n))
{
	struct st_file *f[4] = {NULL};
	struct st_wtensor w[128];
	void *zero = calloc(1, 1 << 20);
	uint32_t n = 0, total = 0, k = 0;
	char p[256];

	assert_non_null(zero);
	for (int j = 0; j < n_in; j++) {
		path_of(p, sizeof(p), e, in[j]);
		assert_int_equal(st_open(p, &f[j], e->err, sizeof(e->err)), 0);
		total += st_count(f[j]);
	}
	for (int j = 0; j < n_in; j++) {
		for (uint32_t i = 0; i < st_count(f[j]); i++, k++) {
			const struct st_tensor *t = st_at(f[j], i);

			if ((keep && !keep(k, total)) ||
			    (mu && mu->drop && !strcmp(t->name, mu->name)))
				continue;
			assert_true(n < 128);
			w[n] = (struct st_wtensor){.name = t->name,
						   .dtype = t->dtype,
						   .n_dims = t->n_dims,
						   .data = t->data};
			memcpy(w[n].shape, t->shape, sizeof(w[n].shape));
			if (mu && !mu->drop && !strcmp(t->name, mu->name)) {
				w[n].dtype = mu->dtype;
				w[n].n_dims = mu->n_dims;
				memcpy(w[n].shape, mu->shape, sizeof(mu->shape));
				w[n].data = zero;
			}
			n++;
		}
	}
	path_of(p, sizeof(p), e, out);
	assert_int_equal(st_write(p, w, n, NULL, e->err, sizeof(e->err)), 0);
	for (int j = 0; j < n_in; j++)
		st_close(f[j]);
	free(zero);
}

static void rewrite(struct env *e, const char *file, const struct mutation *mu)
{
	const char *in[1] = {file};

	copy_tensors(e, file, in, 1, mu, NULL);
}

static void remove_file(struct env *e, const char *name)
{
	char p[256];

	path_of(p, sizeof(p), e, name);
	assert_int_equal(unlink(p), 0);
}

/* ---- loading ---- */

static void check_tensor(const struct model_tensor *t, uint32_t rows, uint32_t cols)
{
	assert_non_null(t->data);
	assert_int_equal(t->rows, rows);
	assert_int_equal(t->cols, cols);
}

static void test_open_tiny(void **state)
{
	struct env *e = *state;
	const struct model_config *c = &e->tiny;
	struct model *m;

	gen_tiny(e);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_int_equal(m->cfg.n_layers, 4);
	assert_int_equal(m->cfg.sparse.block, 64);
	assert_int_equal(m->cfg.sparse.topk, 8);
	assert_int_equal(m->cfg.dense_len, 1024);
	assert_true(m->cfg.rms_eps == c->rms_eps);
	check_tensor(&m->embed, 512, 256);
	check_tensor(&m->norm, 1, 256);
	check_tensor(&m->lm_head, 512, 256);
	assert_ptr_not_equal(m->lm_head.data, m->embed.data);
	for (uint32_t l = 0; l < 4; l++) {
		const struct model_layer *L = &m->layers[l];

		check_tensor(&L->attn_norm, 1, 256);
		check_tensor(&L->wq, 256, 256);
		check_tensor(&L->wk, 64, 256);
		check_tensor(&L->wv, 64, 256);
		check_tensor(&L->wo, 256, 256);
		check_tensor(&L->ffn_norm, 1, 256);
		check_tensor(&L->w_gate, 512, 256);
		check_tensor(&L->w_up, 512, 256);
		check_tensor(&L->w_down, 256, 512);
		check_tensor(&L->wf, 64, 256);
		if (l == 0)
			check_tensor(&L->wfc, 64, 256);
		else
			assert_null(L->wfc.data);
	}
	assert_true(m->has_forecast);
	model_close(m);
	model_close(NULL);
}

static void test_tied_and_longrope(void **state)
{
	struct env *e = *state;
	struct model_config c = e->tiny;
	float factors[16];
	struct model *m;

	for (int i = 0; i < 16; i++)
		factors[i] = 1.0f + 0.5f * (float)i;
	c.tie_embeddings = true;
	c.rope.type = KB_ROPE_LONGROPE;
	c.rope.original_max_pos = 4096;
	c.rope.factor = 8.0;
	c.rope.ext_factors = factors;
	assert_int_equal(model_generate(e->dir, &c, 1, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_ptr_equal(m->lm_head.data, m->embed.data);
	assert_int_equal(m->cfg.rope.type, KB_ROPE_LONGROPE);
	assert_int_equal(m->cfg.rope.original_max_pos, 4096);
	assert_int_equal(m->cfg.rope.max_pos, 32768);
	assert_non_null(m->cfg.rope.ext_factors);
	assert_memory_equal(m->cfg.rope.ext_factors, factors, sizeof(factors));
	model_close(m);
}

static bool keep_first_half(uint32_t i, uint32_t n)
{
	return i < n / 2;
}

static bool keep_second_half(uint32_t i, uint32_t n)
{
	return i >= n / 2;
}

/* Split model.safetensors into two shards and an index (plus one extra index entry). */
static void make_shards(struct env *e, const char *bad_entry)
{
	const char *in[1] = {"model.safetensors"};
	char *idx = calloc(1, 16384), p[256];
	struct st_file *f;
	size_t o;

	assert_non_null(idx);
	copy_tensors(e, "model-00001-of-00002.safetensors", in, 1, NULL, keep_first_half);
	copy_tensors(e, "model-00002-of-00002.safetensors", in, 1, NULL, keep_second_half);
	path_of(p, sizeof(p), e, "model.safetensors");
	assert_int_equal(st_open(p, &f, e->err, sizeof(e->err)), 0);
	o = (size_t)snprintf(idx, 16384, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {");
	for (uint32_t i = 0; i < st_count(f); i++)
		o += (size_t)snprintf(
		    idx + o, 16384 - o, "%s\"%s\": \"model-0000%u-of-00002.safetensors\"",
		    i ? ", " : "", st_at(f, i)->name, i < st_count(f) / 2 ? 1 : 2);
	if (bad_entry)
		o += (size_t)snprintf(idx + o, 16384 - o, ", %s", bad_entry);
	snprintf(idx + o, 16384 - o, "}}");
	st_close(f);
	remove_file(e, "model.safetensors");
	write_text(e, "model.safetensors.index.json", idx);
	free(idx);
}

static void test_sharded(void **state)
{
	struct env *e = *state;
	struct model *m, *ref;
	char p[256];

	gen_tiny(e);
	path_of(p, sizeof(p), e, "ref");
	assert_int_equal(model_generate(p, &e->tiny, 7, e->err, sizeof(e->err)), 0);
	make_shards(e, NULL);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_int_equal(model_open(p, NULL, &ref, e->err, sizeof(e->err)), 0);
	assert_memory_equal(m->embed.data, ref->embed.data, 512 * 256 * 2);
	assert_memory_equal(m->lm_head.data, ref->lm_head.data, 512 * 256 * 2);
	assert_memory_equal(m->layers[3].w_down.data, ref->layers[3].w_down.data, 256 * 512 * 2);
	assert_memory_equal(m->layers[0].wq.data, ref->layers[0].wq.data, 256 * 256 * 2);
	assert_true(m->has_forecast);
	model_close(ref);
	model_close(m);
	/* an index entry for a tensor the loader never asks for is harmless */
	gen_tiny(e);
	make_shards(e, "\"model.extra.weight\": \"model-00001-of-00002.safetensors\"");
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	model_close(m);
	/* shard names must stay inside the directory */
	gen_tiny(e);
	make_shards(e, "\"x\": \"../evil.safetensors\"");
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors.index.json",
			 "x: weight_map entry must be a file name");
}

static void test_sharded_missing(void **state)
{
	struct env *e = *state;
	const char *in[1] = {"model-00002-of-00002.safetensors"};
	struct mutation drop = {.name = "model.norm.weight", .drop = true};

	gen_tiny(e);
	make_shards(e, NULL);
	copy_tensors(e, "model-00002-of-00002.safetensors", in, 1, &drop, NULL);
	expect_open_fail(
	    e, NULL, -EINVAL, "model-00002-of-00002.safetensors",
	    "model.norm.weight: missing tensor (listed in model.safetensors.index.json)");
	remove_file(e, "model-00001-of-00002.safetensors");
	expect_open_fail(e, NULL, -ENOENT, "model-00001-of-00002.safetensors", "cannot open");
}

/* ---- Forecast ---- */

static void test_forecast_sources(void **state)
{
	struct env *e = *state;
	const char *both[2] = {"model.safetensors", "forecast.safetensors"};
	struct mutation drop_last = {.name = "model.layers.3.self_attn.q_future_proj.weight",
				     .drop = true};
	struct model *m;
	char p[256], moved[256];

	gen_tiny(e);
	/* an explicit Forecast file elsewhere */
	path_of(p, sizeof(p), e, "forecast.safetensors");
	path_of(moved, sizeof(moved), e, "fc-elsewhere.safetensors");
	assert_int_equal(rename(p, moved), 0);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_false(m->has_forecast); /* none in the model, no default file */
	assert_null(m->layers[0].wf.data);
	assert_null(m->layers[0].wfc.data);
	model_close(m);
	assert_int_equal(model_open(e->dir, moved, &m, e->err, sizeof(e->err)), 0);
	assert_true(m->has_forecast);
	check_tensor(&m->layers[2].wf, 64, 256);
	model_close(m);
	/* Forecast tensors inside the model's own file */
	assert_int_equal(rename(moved, p), 0);
	copy_tensors(e, "model.safetensors", both, 2, NULL, NULL);
	remove_file(e, "forecast.safetensors");
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_true(m->has_forecast);
	check_tensor(&m->layers[0].wfc, 64, 256);
	model_close(m);
	/* the last layer's q_future_proj is optional */
	rewrite(e, "model.safetensors", &drop_last);
	assert_int_equal(model_open(e->dir, NULL, &m, e->err, sizeof(e->err)), 0);
	assert_true(m->has_forecast);
	assert_null(m->layers[3].wf.data);
	check_tensor(&m->layers[2].wf, 64, 256);
	model_close(m);
	/* an explicit Forecast file that does not exist */
	expect_open_fail(e, moved, -ENOENT, "fc-elsewhere.safetensors", "cannot open");
}

static void test_forecast_errors(void **state)
{
	struct env *e = *state;
	struct mutation shape = {.name = "model.layers.2.self_attn.q_future_proj.weight",
				 .dtype = ST_DTYPE_BF16,
				 .n_dims = 2,
				 .shape = {128, 256}};
	struct mutation curr = {.name = "model.layers.0.self_attn.q_curr_proj.weight",
				.drop = true};
	struct mutation mid = {.name = "model.layers.1.self_attn.q_future_proj.weight",
			       .drop = true};
	const char *both[2] = {"model.safetensors", "forecast.safetensors"};

	gen_tiny(e);
	rewrite(e, "forecast.safetensors", &shape);
	expect_open_fail(e, NULL, -EINVAL, "forecast.safetensors",
			 "model.layers.2.self_attn.q_future_proj.weight: shape [128, 256] "
			 "expected [64, 256]");
	gen_tiny(e);
	rewrite(e, "forecast.safetensors", &curr);
	expect_open_fail(e, NULL, -EINVAL, "forecast.safetensors",
			 "model.layers.0.self_attn.q_curr_proj.weight: missing tensor (Forecast)");
	/* a partial Forecast inside the model file is an error too */
	gen_tiny(e);
	copy_tensors(e, "model.safetensors", both, 2, &mid, NULL);
	remove_file(e, "forecast.safetensors");
	expect_open_fail(
	    e, NULL, -EINVAL, "model.safetensors",
	    "model.layers.1.self_attn.q_future_proj.weight: missing tensor (Forecast)");
}

/* ---- bad weights ---- */

static void test_weight_errors(void **state)
{
	struct env *e = *state;
	struct mutation kshape = {.name = "model.layers.3.self_attn.k_proj.weight",
				  .dtype = ST_DTYPE_BF16,
				  .n_dims = 2,
				  .shape = {128, 256}};
	struct mutation dtype = {.name = "model.layers.1.self_attn.o_proj.weight",
				 .dtype = ST_DTYPE_F32,
				 .n_dims = 2,
				 .shape = {256, 256}};
	struct mutation norm1d = {
	    .name = "model.norm.weight", .dtype = ST_DTYPE_BF16, .n_dims = 2, .shape = {1, 256}};
	struct mutation drop = {.name = "model.layers.1.mlp.up_proj.weight", .drop = true};
	struct mutation head = {.name = "lm_head.weight", .drop = true};

	gen_tiny(e);
	rewrite(e, "model.safetensors", &kshape);
	expect_open_fail(
	    e, NULL, -EINVAL, "model.safetensors",
	    "model.layers.3.self_attn.k_proj.weight: shape [128, 256] expected [64, 256]");
	gen_tiny(e);
	rewrite(e, "model.safetensors", &dtype);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors",
			 "model.layers.1.self_attn.o_proj.weight: dtype F32 not supported (only "
			 "BF16 is accepted)");
	gen_tiny(e);
	rewrite(e, "model.safetensors", &norm1d);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors",
			 "model.norm.weight: shape [1, 256] expected [256]");
	gen_tiny(e);
	rewrite(e, "model.safetensors", &drop);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors",
			 "model.layers.1.mlp.up_proj.weight: missing tensor");
	gen_tiny(e);
	rewrite(e, "model.safetensors", &head);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors", "lm_head.weight: missing tensor");
}

static void test_file_errors(void **state)
{
	struct env *e = *state;
	struct stat sb;
	char p[256];

	gen_tiny(e);
	/* truncated weights: the last tensor in the data runs past the end */
	path_of(p, sizeof(p), e, "model.safetensors");
	assert_int_equal(stat(p, &sb), 0);
	assert_int_equal(truncate(p, sb.st_size - 1000), 0);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors", "beyond the end of the data");
	expect_msg(e, "lm_head.weight: data_offsets");
	assert_int_equal(truncate(p, 100), 0);
	expect_open_fail(e, NULL, -EINVAL, "model.safetensors",
			 "beyond the end of the file (100 bytes; truncated?)");
	remove_file(e, "model.safetensors");
	expect_open_fail(e, NULL, -ENOENT, NULL,
			 "neither model.safetensors nor model.safetensors.index.json");
	write_text(e, "config.json", "{\"model_type\": \"llama\",\n \"vocab_size\": }");
	expect_open_fail(e, NULL, -EINVAL, "config.json", "bad JSON");
	remove_file(e, "config.json");
	expect_open_fail(e, NULL, -ENOENT, "config.json", "cannot open");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_config_llama3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_rope_parameters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_sparse_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_minicpm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_tiny, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tied_and_longrope, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sharded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sharded_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forecast_sources, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forecast_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_weight_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
