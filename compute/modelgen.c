// SPDX-License-Identifier: Apache-2.0
/*
 * Synthetic models: named geometries (presets) and a generator that writes config.json,
 * model.safetensors and forecast.safetensors with deterministic random bf16 weights, so the
 * runtime can be tested and benchmarked at any shape without downloading real weights.
 */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "safetensors.h"

/*
 * Weight recipe (activations stay O(1); see model.h):
 *  - every element is a function of (seed, tensor name, element index) only: a splitmix64 hash
 *    of the index, keyed by a hash of the seed and the name, so any tensor or any part of one is
 *    reproducible on its own and the file is the same whatever the chunking;
 *  - "normal" values are Irwin-Hall (sum of four 16-bit uniforms, rescaled to unit variance):
 *    cheap enough for the 8B shapes and close enough to a Gaussian for synthetic weights;
 *  - projections ~ N(0, 1/in) (std 1/sqrt(in)), so a unit-RMS input gives unit-RMS outputs;
 *    W_q and W_k are scaled up by GEN_QK_GAIN so attention logits have std ~GEN_QK_GAIN^2 and
 *    softmax is peaked (sparse-ish attention, as in real models);
 *  - norm weights 1 + N(0, 0.05^2); embeddings N(0, 1/scale_emb^2) so scale_emb * embedding has
 *    unit RMS (MiniCPM muP); lm_head ~ N(0, 1/hidden);
 *  - Forecast W_F(l), l < n_layers - 1: row (g, i) = mean over the query heads h of KV group g
 *    of W_q(l + 1) row (h, i), plus noise of GEN_FC_NOISE times that mean's std: a noisy copy
 *    of layer l+1's grouped query, so the Forecast predicts layer l+1's selection well.
 *    W_F of the last layer is plain N(0, 1/hidden) (unused); q_curr (layer 0) is the same
 *    construction from layer 0's own W_q;
 *  - optionally (model_gen_opts.shared_activation = f > 0) every token embedding carries the same
 *    fixed vector on the "massive" channels (every GEN_MASSIVE_STRIDE-th), holding a fraction f
 *    of the embedding's energy, and the other channels carry the token's own noise. Only W_q
 *    and W_k read those channels (the columns of v_proj, gate_proj, up_proj and lm_head there
 *    are zero) and nothing writes them (the rows of o_proj and down_proj there are zero), so
 *    the shared vector stays as it is through every layer and reaches the queries and keys
 *    only: it gives consecutive tokens' queries a common component, so block selection keeps
 *    a share of its blocks from one step to the next (step-to-step locality, which plain random
 *    embeddings lack), while values, the FFN and the logits see only the token's own part (a
 *    shared logit bias would make greedy decoding repeat one token). The query heads of a KV
 *    group read the massive channels alike (W_q's columns there repeat the group's first
 *    head's), so the heads of a group share their preference for the same blocks, as in real
 *    GQA models, and the group-mean query the Forecast predicts ranks blocks as the heads do
 *    (with a preference per head, the tiny model's recall fell to 0.23 from 0.29; grouped it is
 *    0.76). Real LLMs carry such massive activations on a few channels.
 */
#define GEN_QK_GAIN 2.0
#define GEN_NORM_NOISE 0.05
#define GEN_FC_NOISE 0.3
#define GEN_MASSIVE_STRIDE 64

enum gen_kind { GEN_EMBED, GEN_NORM, GEN_PROJ, GEN_QK, GEN_LMHEAD, GEN_FC, GEN_FC_RANDOM };
/* what a matrix does on the massive channels (with a shared activation): zero columns (it does
 * not read them), zero rows (it does not write them), or W_q's grouped columns */
enum { GEN_ZERO_NONE, GEN_ZERO_COLS, GEN_ZERO_ROWS, GEN_QUERY_GROUPED };

struct gen_tensor {
	char name[96];
	enum gen_kind kind;
	uint32_t rows, cols;  /* rows == 0: 1-D */
	uint32_t src_layer;   /* GEN_FC: the layer whose W_q it copies */
	uint8_t massive_role; /* GEN_ZERO_* or GEN_QUERY_GROUPED */
	uint64_t key;	      /* hash of seed and name */
};

struct gen_ctx {
	const struct model_config *cfg;
	uint64_t seed;
	struct gen_tensor *t;
	uint64_t *wq_key; /* per layer: key of model.layers.N.self_attn.q_proj.weight */
	double massive;	  /* amplitude of the shared embedding component (0: none) */
	uint64_t massive_key;
};

static uint64_t gen_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t gen_key(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return gen_mix(seed ^ gen_mix(h));
}

/* Element idx of the unit-variance stream keyed by key (splitmix64 step idx). */
static double gen_normal(uint64_t key, uint64_t idx)
{
	uint64_t z = gen_mix(key + (idx + 1) * 0x9e3779b97f4a7c15ull);
	double s = 0;

	for (int i = 0; i < 4; i++)
		s += (double)((z >> (16 * i)) & 0xffff) + 0.5;
	return (s / 65536.0 - 2.0) * 1.7320508075688772; /* var(sum of 4 U) = 1/3 */
}

/* Row of W_q whose random stream element (row, col) takes: with a shared activation, the query
 * heads of a KV group read the massive channels alike (the group's first head's values). */
static uint64_t gen_wq_row(const struct gen_ctx *c, uint64_t row, uint32_t col)
{
	const struct model_config *m = c->cfg;
	uint64_t group = m->n_heads / m->n_kv_heads, h = row / m->head_dim;

	if (c->massive > 0 && col % GEN_MASSIVE_STRIDE == 0)
		return (h - h % group) * m->head_dim + row % m->head_dim;
	return row;
}

static double gen_wq(const struct gen_ctx *c, uint32_t layer, uint64_t row, uint32_t col)
{
	return gen_normal(c->wq_key[layer], gen_wq_row(c, row, col) * c->cfg->hidden + col) *
	       GEN_QK_GAIN / sqrt((double)c->cfg->hidden);
}

/* Forecast element (row, col) copied from layer src's grouped W_q. */
static double gen_fc(const struct gen_ctx *c, const struct gen_tensor *t, uint64_t idx)
{
	const struct model_config *m = c->cfg;
	uint32_t group = m->n_heads / m->n_kv_heads, row = (uint32_t)(idx / t->cols);
	uint32_t col = (uint32_t)(idx % t->cols), g = row / m->head_dim, i = row % m->head_dim;
	double sum = 0, std_mean = GEN_QK_GAIN / sqrt((double)m->hidden) / sqrt((double)group);

	for (uint32_t h = g * group; h < (g + 1) * group; h++)
		sum += gen_wq(c, t->src_layer, (uint64_t)h * m->head_dim + i, col);
	return sum / group + GEN_FC_NOISE * std_mean * gen_normal(t->key, idx);
}

static double gen_value(const struct gen_ctx *c, const struct gen_tensor *t, uint64_t idx)
{
	uint32_t col = (uint32_t)(idx % t->cols);
	bool massive_col = c->massive > 0 && col % GEN_MASSIVE_STRIDE == 0;
	/* W_q's grouped columns take their group's first head's element */
	double n = gen_normal(t->key, t->massive_role == GEN_QUERY_GROUPED && massive_col
					  ? gen_wq_row(c, idx / t->cols, col) * t->cols + col
					  : idx);

	if (c->massive > 0 &&
	    ((t->massive_role == GEN_ZERO_COLS && massive_col) ||
	     (t->massive_role == GEN_ZERO_ROWS && idx / t->cols % GEN_MASSIVE_STRIDE == 0)))
		return 0.0;
	switch (t->kind) {
	case GEN_EMBED:
		if (massive_col) /* the same value for every token: a sign per channel */
			return (gen_normal(c->massive_key, col) < 0 ? -c->massive : c->massive) /
			       c->cfg->scale_emb;
		return n / c->cfg->scale_emb;
	case GEN_NORM:
		return 1.0 + GEN_NORM_NOISE * n;
	case GEN_QK:
		return n * GEN_QK_GAIN / sqrt((double)t->cols);
	case GEN_FC:
		return gen_fc(c, t, idx);
	case GEN_PROJ:
	case GEN_LMHEAD:
	case GEN_FC_RANDOM:
		break;
	}
	return n / sqrt((double)t->cols);
}

/* Elements [first, first + n) of tensor idx; in parallel with OpenMP (each element is a pure
 * function of its index, so the bytes are the same for any thread count). */
static int gen_fill(void *ctx, uint32_t idx, void *buf, uint64_t first, uint64_t n)
{
	const struct gen_ctx *c = ctx;
	uint16_t *out = buf;

#pragma omp parallel for schedule(static) if (n >= 65536)
	for (int64_t i = 0; i < (int64_t)n; i++)
		out[i] = kb_f32_to_bf16((float)gen_value(c, &c->t[idx], first + (uint64_t)i));
	return 0;
}

static void gen_add(struct gen_tensor *t, uint32_t *n, uint64_t seed, enum gen_kind kind,
		    uint32_t rows, uint32_t cols, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void gen_add(struct gen_tensor *t, uint32_t *n, uint64_t seed, enum gen_kind kind,
		    uint32_t rows, uint32_t cols, const char *fmt, ...)
{
	struct gen_tensor *x = &t[(*n)++];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->name, sizeof(x->name), fmt, ap);
	va_end(ap);
	x->kind = kind;
	x->rows = rows;
	x->cols = cols;
	x->massive_role = GEN_ZERO_NONE;
	x->key = gen_key(seed, x->name);
}

/* The backbone's tensors in file order; returns the count (at most 3 + 9 * n_layers). */
static uint32_t gen_model_tensors(const struct model_config *c, uint64_t seed, struct gen_tensor *t)
{
	uint32_t n = 0, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	const char *p = "model.layers";

	gen_add(t, &n, seed, GEN_EMBED, c->vocab, c->hidden, "model.embed_tokens.weight");
	for (uint32_t l = 0; l < c->n_layers; l++) {
		gen_add(t, &n, seed, GEN_NORM, 0, c->hidden, "%s.%u.input_layernorm.weight", p, l);
		gen_add(t, &n, seed, GEN_QK, q, c->hidden, "%s.%u.self_attn.q_proj.weight", p, l);
		t[n - 1].massive_role = GEN_QUERY_GROUPED;
		gen_add(t, &n, seed, GEN_QK, kv, c->hidden, "%s.%u.self_attn.k_proj.weight", p, l);
		gen_add(t, &n, seed, GEN_PROJ, kv, c->hidden, "%s.%u.self_attn.v_proj.weight", p,
			l);
		t[n - 1].massive_role = GEN_ZERO_COLS;
		gen_add(t, &n, seed, GEN_PROJ, c->hidden, q, "%s.%u.self_attn.o_proj.weight", p, l);
		t[n - 1].massive_role = GEN_ZERO_ROWS;
		gen_add(t, &n, seed, GEN_NORM, 0, c->hidden,
			"%s.%u.post_attention_layernorm.weight", p, l);
		gen_add(t, &n, seed, GEN_PROJ, c->ffn, c->hidden, "%s.%u.mlp.gate_proj.weight", p,
			l);
		t[n - 1].massive_role = GEN_ZERO_COLS;
		gen_add(t, &n, seed, GEN_PROJ, c->ffn, c->hidden, "%s.%u.mlp.up_proj.weight", p, l);
		t[n - 1].massive_role = GEN_ZERO_COLS;
		gen_add(t, &n, seed, GEN_PROJ, c->hidden, c->ffn, "%s.%u.mlp.down_proj.weight", p,
			l);
		t[n - 1].massive_role = GEN_ZERO_ROWS;
	}
	gen_add(t, &n, seed, GEN_NORM, 0, c->hidden, "model.norm.weight");
	if (!c->tie_embeddings) {
		gen_add(t, &n, seed, GEN_LMHEAD, c->vocab, c->hidden, "lm_head.weight");
		t[n - 1].massive_role = GEN_ZERO_COLS;
	}
	return n;
}

/* q_future_proj of every layer, then layer 0's q_curr_proj. */
static uint32_t gen_forecast_tensors(const struct model_config *c, uint64_t seed,
				     struct gen_tensor *t)
{
	uint32_t n = 0, kv = c->n_kv_heads * c->head_dim;

	for (uint32_t l = 0; l < c->n_layers; l++) {
		bool last = l + 1 == c->n_layers;

		gen_add(t, &n, seed, last ? GEN_FC_RANDOM : GEN_FC, kv, c->hidden,
			"model.layers.%u.self_attn.q_future_proj.weight", l);
		t[n - 1].src_layer = l + 1;
	}
	gen_add(t, &n, seed, GEN_FC, kv, c->hidden, "model.layers.0.self_attn.q_curr_proj.weight");
	t[n - 1].src_layer = 0;
	return n;
}

static int gen_write(const char *path, struct gen_ctx *c, struct gen_tensor *t, uint32_t n,
		     char *err, size_t err_len)
{
	struct st_wtensor *w = calloc(n, sizeof(*w));
	struct st_fill fill = {.fn = gen_fill, .ctx = c};
	int rc;

	if (!w) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		w[i].name = t[i].name;
		w[i].dtype = ST_DTYPE_BF16;
		w[i].n_dims = t[i].rows ? 2 : 1;
		w[i].shape[0] = t[i].rows ? t[i].rows : t[i].cols;
		w[i].shape[1] = t[i].cols;
	}
	c->t = t;
	rc = st_write(path, w, n, &fill, err, err_len);
	free(w);
	return rc;
}

/* A JSON number printed with `digits` significant digits (floats read back bit-exact). */
static struct json_object *gen_num(double v, int digits)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%.*g", digits, v);
	return json_object_new_double_s(v, buf);
}

static void gen_put_u32(struct json_object *o, const char *key, uint32_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

static struct json_object *gen_rope_json(const struct model_config *c)
{
	const struct kb_rope *r = &c->rope;
	struct json_object *o = json_object_new_object(), *lf, *sf;
	static const char *const names[] = {"default", "llama3", "longrope", "yarn"};

	json_object_object_add(o, "rope_type", json_object_new_string(names[r->type]));
	json_object_object_add(o, "factor", gen_num(r->factor, 9));
	gen_put_u32(o, "original_max_position_embeddings", r->original_max_pos);
	if (r->type == KB_ROPE_LLAMA3) {
		json_object_object_add(o, "low_freq_factor", gen_num(r->low_freq_factor, 9));
		json_object_object_add(o, "high_freq_factor", gen_num(r->high_freq_factor, 9));
	} else if (r->type == KB_ROPE_YARN) {
		json_object_object_add(o, "beta_fast", gen_num(r->beta_fast, 9));
		json_object_object_add(o, "beta_slow", gen_num(r->beta_slow, 9));
	} else if (r->type == KB_ROPE_LONGROPE) {
		lf = json_object_new_array();
		sf = json_object_new_array();
		for (uint32_t i = 0; i < c->head_dim / 2; i++) {
			double f = r->ext_factors ? r->ext_factors[i] : 1.0;

			json_object_array_add(lf, gen_num(f, 9));
			json_object_array_add(sf, gen_num(1.0, 9));
		}
		json_object_object_add(o, "long_factor", lf);
		json_object_object_add(o, "short_factor", sf);
	}
	return o;
}

static struct json_object *gen_sparse_json(const struct model_config *c)
{
	struct json_object *o = json_object_new_object();
	const struct kb_sparse *s = &c->sparse;

	gen_put_u32(o, "block_size", s->block);
	gen_put_u32(o, "kernel_size", s->ck_kernel);
	gen_put_u32(o, "kernel_stride", s->ck_stride);
	gen_put_u32(o, "pool_kernel", s->pool_kernel);
	gen_put_u32(o, "pool_stride", s->pool_stride);
	gen_put_u32(o, "pool_padding", s->pool_pad);
	gen_put_u32(o, "init_blocks", s->sink);
	gen_put_u32(o, "local_blocks", s->local);
	gen_put_u32(o, "topk", s->topk);
	gen_put_u32(o, "dense_len", c->dense_len);
	return o;
}

/* config.json as the Hugging Face classes write it, plus sparse_config. */
static struct json_object *gen_config_json(const struct model_config *c)
{
	struct json_object *o = json_object_new_object(), *arch = json_object_new_array();
	bool cpm = c->family == MODEL_FAMILY_MINICPM;

	json_object_array_add(
	    arch, json_object_new_string(cpm ? "MiniCPMForCausalLM" : "LlamaForCausalLM"));
	json_object_object_add(o, "architectures", arch);
	json_object_object_add(o, "model_type", json_object_new_string(cpm ? "minicpm" : "llama"));
	gen_put_u32(o, "vocab_size", c->vocab);
	gen_put_u32(o, "hidden_size", c->hidden);
	gen_put_u32(o, "num_hidden_layers", c->n_layers);
	gen_put_u32(o, "num_attention_heads", c->n_heads);
	gen_put_u32(o, "num_key_value_heads", c->n_kv_heads);
	gen_put_u32(o, "head_dim", c->head_dim);
	gen_put_u32(o, "intermediate_size", c->ffn);
	gen_put_u32(o, "max_position_embeddings", c->max_pos);
	json_object_object_add(o, "rms_norm_eps", gen_num(c->rms_eps, 7));
	json_object_object_add(o, "tie_word_embeddings",
			       json_object_new_boolean(c->tie_embeddings));
	json_object_object_add(o, "hidden_act", json_object_new_string("silu"));
	json_object_object_add(o, "torch_dtype", json_object_new_string("bfloat16"));
	json_object_object_add(o, "rope_theta", gen_num(c->rope.theta, 12));
	json_object_object_add(o, "rope_scaling",
			       c->rope.type == KB_ROPE_PLAIN ? NULL : gen_rope_json(c));
	if (cpm) {
		json_object_object_add(o, "scale_emb", gen_num(c->scale_emb, 7));
		json_object_object_add(o, "scale_depth",
				       gen_num(c->residual_scale * sqrt((double)c->n_layers), 7));
		json_object_object_add(o, "dim_model_base",
				       gen_num(c->logit_scale * (double)c->hidden, 7));
	}
	json_object_object_add(o, "sparse_config", gen_sparse_json(c));
	return o;
}

/* mkdir -p */
static int gen_mkdir(const char *dir)
{
	char *p = strdup(dir);
	int rc = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; !rc; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;

		*s = '\0';
		if (mkdir(p, 0755) && errno != EEXIST)
			rc = -errno;
		*s = c;
		if (!c)
			break;
	}
	free(p);
	return rc;
}

static int gen_write_config(const char *dir, const struct model_config *cfg, char *err,
			    size_t err_len)
{
	struct json_object *o = gen_config_json(cfg);
	struct model_config back;
	char *path;
	int rc;

	if (!o || asprintf(&path, "%s/config.json", dir) < 0) {
		json_object_put(o);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	errno = 0;
	rc = json_object_to_file_ext(path, o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
	json_object_put(o);
	if (rc) {
		rc = errno ? -errno : -EIO;
		snprintf(err, err_len, "%s: cannot write: %s", path, strerror(-rc));
	}
	/* reading it back validates the geometry with the loader's own rules */
	if (!rc && (rc = model_config_load(dir, &back, err, err_len)))
		unlink(path);
	free(path);
	return rc;
}

int model_generate(const char *dir, const struct model_config *cfg, uint64_t seed, char *err,
		   size_t err_len)
{
	return model_generate_opts(dir, cfg, &(struct model_gen_opts){.seed = seed}, err, err_len);
}

int model_generate_opts(const char *dir, const struct model_config *cfg,
			const struct model_gen_opts *o, char *err, size_t err_len)
{
	struct gen_ctx c = {.cfg = cfg, .seed = o->seed};
	uint64_t seed = o->seed;
	struct gen_tensor *t = NULL;
	char *path = NULL;
	int rc;

	if (!(o->shared_activation >= 0 && o->shared_activation < 1) ||
	    (o->shared_activation > 0 && cfg->hidden < GEN_MASSIVE_STRIDE)) {
		snprintf(err, err_len,
			 "shared activation %g: must be in [0, 1) and needs hidden >= %d",
			 o->shared_activation, GEN_MASSIVE_STRIDE);
		return -EINVAL;
	}
	if (o->shared_activation > 0) {
		/* m massive channels of amplitude A hold a fraction f of the energy of an
		 * embedding whose other hidden - m channels have unit variance */
		double m = (cfg->hidden + GEN_MASSIVE_STRIDE - 1) / GEN_MASSIVE_STRIDE;
		double f = o->shared_activation;

		c.massive = sqrt(f / (1 - f) * (cfg->hidden - m) / m);
		c.massive_key = gen_key(seed, "sparda.massive_activation");
	}
	rc = gen_mkdir(dir);
	if (rc) {
		snprintf(err, err_len, "%s: cannot create: %s", dir, strerror(-rc));
		return rc;
	}
	rc = gen_write_config(dir, cfg, err, err_len);
	if (rc)
		return rc;
	t = calloc(3 + 9 * (size_t)cfg->n_layers, sizeof(*t));
	c.wq_key = calloc(cfg->n_layers, sizeof(*c.wq_key));
	if (!t || !c.wq_key || asprintf(&path, "%s/model.safetensors", dir) < 0) {
		path = NULL;
		rc = -ENOMEM;
		snprintf(err, err_len, "out of memory");
		goto out_free;
	}
	for (uint32_t l = 0; l < cfg->n_layers; l++) {
		char name[96];

		snprintf(name, sizeof(name), "model.layers.%u.self_attn.q_proj.weight", l);
		c.wq_key[l] = gen_key(seed, name);
	}
	rc = gen_write(path, &c, t, gen_model_tensors(cfg, seed, t), err, err_len);
	if (rc)
		goto out_free;
	free(path);
	if (asprintf(&path, "%s/forecast.safetensors", dir) < 0) {
		path = NULL;
		rc = -ENOMEM;
		snprintf(err, err_len, "out of memory");
		goto out_free;
	}
	rc = gen_write(path, &c, t, gen_forecast_tensors(cfg, seed, t), err, err_len);
out_free:
	free(path);
	free(c.wq_key);
	free(t);
	return rc;
}

/* Fields shared by the presets; the paper's sparse configuration. */
static void preset_base(struct model_config *c)
{
	memset(c, 0, sizeof(*c));
	c->family = MODEL_FAMILY_LLAMA;
	c->rms_eps = 1e-5f;
	c->scale_emb = 1.0f;
	c->residual_scale = 1.0f;
	c->logit_scale = 1.0f;
	c->rope = (struct kb_rope){.type = KB_ROPE_PLAIN,
				   .theta = 10000.0,
				   .factor = 1.0,
				   .beta_fast = 32.0,
				   .beta_slow = 1.0};
	c->sparse = (struct kb_sparse){.block = 64,
				       .ck_kernel = 32,
				       .ck_stride = 16,
				       .pool_kernel = 5,
				       .pool_stride = 4,
				       .pool_pad = 1,
				       .sink = 1,
				       .local = 32,
				       .topk = 96};
	c->dense_len = 8192;
}

/* tiny: scaled-down sparse config so sparsity shows at a few thousand tokens */
static void preset_tiny(struct model_config *c)
{
	c->vocab = 512;
	c->hidden = 256;
	c->n_layers = 4;
	c->n_heads = 8;
	c->n_kv_heads = 2;
	c->head_dim = 32;
	c->ffn = 512;
	c->max_pos = 32768;
	/* preset_base's block geometry (block 64 = pool stride 4 x ck stride 16, the shape the CUDA
	 * kernels are built for) with a small budget: 1 sink + 2 local + own + 4 scored = 8 blocks,
	 * so a 3072-token prompt (48 blocks) attends to a sixth of its KV. */
	c->sparse.local = 2;
	c->sparse.topk = 8;
	c->dense_len = 1024;
}

static void preset_minicpm4_8b(struct model_config *c)
{
	c->family = MODEL_FAMILY_MINICPM;
	c->vocab = 73448;
	c->hidden = 4096;
	c->n_layers = 32;
	c->n_heads = 32;
	c->n_kv_heads = 2;
	c->head_dim = 128;
	c->ffn = 16384;
	c->max_pos = 65536;
	c->scale_emb = 12.0f;
	c->residual_scale = (float)(1.4 / sqrt(32.0));
	c->logit_scale = (float)(256.0 / 4096.0);
}

static void preset_llama3_8b(struct model_config *c)
{
	c->vocab = 128256;
	c->hidden = 4096;
	c->n_layers = 32;
	c->n_heads = 32;
	c->n_kv_heads = 8;
	c->head_dim = 128;
	c->ffn = 14336;
	c->max_pos = 131072;
	c->rope.type = KB_ROPE_LLAMA3;
	c->rope.theta = 500000.0;
	c->rope.factor = 8.0;
	c->rope.low_freq_factor = 1.0;
	c->rope.high_freq_factor = 4.0;
	c->rope.original_max_pos = 8192;
}

int model_preset(const char *name, struct model_config *cfg)
{
	static const struct {
		const char *name;
		void (*fn)(struct model_config *c);
	} presets[] = {
	    {"tiny", preset_tiny},
	    {"minicpm4-8b", preset_minicpm4_8b},
	    {"llama3-8b", preset_llama3_8b},
	};

	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
		if (strcmp(name, presets[i].name) == 0) {
			preset_base(cfg);
			presets[i].fn(cfg);
			cfg->rope.head_dim = cfg->head_dim;
			cfg->rope.max_pos = cfg->max_pos;
			return 0;
		}
	}
	return -ENOENT;
}
