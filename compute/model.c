// SPDX-License-Identifier: Apache-2.0
/*
 * Model loading: config.json (Llama / MiniCPM, rope scaling, muP, sparse_config) and the bf16
 * tensors of model.safetensors or its shards, plus the Forecast tensors from a Forecast file or
 * the model's own files. Nothing is copied: tensors point into the read-only mappings.
 */
#include "model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <json-c/json.h>

#include "safetensors.h"

#define MODEL_MAX_FACTORS 4096 /* longrope factors: head_dim / 2 */

struct model_priv {
	char *dir;
	struct st_file **files; /* model.safetensors, or the shards */
	uint32_t n_files;
	struct json_object *index;   /* parsed model.safetensors.index.json, or NULL */
	struct json_object *weights; /* its weight_map (borrowed from index) */
	char *index_path;
	struct st_file *fc; /* Forecast file, or NULL */
	float *ext_factors; /* longrope long_factor */
};

__attribute__((format(printf, 4, 5))) static int model_fail(char *err, size_t err_len, int rc,
							    const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ---- config.json ---- */

struct cfg_ctx {
	const char *path;
	const char *prefix; /* "" or "sparse_config." for messages */
	struct json_object *root;
	char *err;
	size_t err_len;
};

/* The value of key in obj, or NULL when absent or JSON null. */
static struct json_object *cfg_get(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return v;
}

/* An integer in [lo, UINT32_MAX]; `def` when absent unless required. */
static int cfg_u32(struct cfg_ctx *c, struct json_object *obj, const char *key, bool required,
		   uint32_t def, uint32_t lo, uint32_t *out)
{
	struct json_object *v = cfg_get(obj, key);
	int64_t x;

	if (!v) {
		if (required)
			return model_fail(c->err, c->err_len, -EINVAL, "%s: missing key '%s%s'",
					  c->path, c->prefix, key);
		*out = def;
		return 0;
	}
	x = json_object_get_int64(v);
	if (!json_object_is_type(v, json_type_int) || x < (int64_t)lo || x > UINT32_MAX)
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: key '%s%s' must be an integer in [%u, %u]", c->path,
				  c->prefix, key, lo, UINT32_MAX);
	*out = (uint32_t)x;
	return 0;
}

/* A finite number (int or double); `def` when absent unless required. */
static int cfg_f64(struct cfg_ctx *c, struct json_object *obj, const char *key, bool required,
		   double def, double *out)
{
	struct json_object *v = cfg_get(obj, key);

	if (!v) {
		if (required)
			return model_fail(c->err, c->err_len, -EINVAL, "%s: missing key '%s%s'",
					  c->path, c->prefix, key);
		*out = def;
		return 0;
	}
	if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) ||
	    !isfinite(json_object_get_double(v)))
		return model_fail(c->err, c->err_len, -EINVAL, "%s: key '%s%s' must be a number",
				  c->path, c->prefix, key);
	*out = json_object_get_double(v);
	return 0;
}

static bool cfg_has_arch(struct json_object *root, const char *arch)
{
	struct json_object *a = cfg_get(root, "architectures");

	if (!a || !json_object_is_type(a, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(a, i));

		if (s && strcmp(s, arch) == 0)
			return true;
	}
	return false;
}

static int cfg_family(struct cfg_ctx *c, struct model_config *cfg)
{
	struct json_object *t = cfg_get(c->root, "model_type");
	const char *mt = t ? json_object_get_string(t) : NULL;

	if (mt && strcmp(mt, "llama") == 0)
		cfg->family = MODEL_FAMILY_LLAMA;
	else if (mt && strcmp(mt, "minicpm") == 0)
		cfg->family = MODEL_FAMILY_MINICPM;
	else if (!mt && cfg_has_arch(c->root, "LlamaForCausalLM"))
		cfg->family = MODEL_FAMILY_LLAMA;
	else if (!mt && cfg_has_arch(c->root, "MiniCPMForCausalLM"))
		cfg->family = MODEL_FAMILY_MINICPM;
	else
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: model_type '%s' not supported (llama, minicpm)", c->path,
				  mt ? mt : "(missing)");
	return 0;
}

static int cfg_shapes(struct cfg_ctx *c, struct model_config *cfg)
{
	struct json_object *r = c->root, *tie;
	double eps;
	int rc;

	if ((rc = cfg_u32(c, r, "vocab_size", true, 0, 1, &cfg->vocab)) ||
	    (rc = cfg_u32(c, r, "hidden_size", true, 0, 1, &cfg->hidden)) ||
	    (rc = cfg_u32(c, r, "num_hidden_layers", true, 0, 1, &cfg->n_layers)) ||
	    (rc = cfg_u32(c, r, "num_attention_heads", true, 0, 1, &cfg->n_heads)) ||
	    (rc = cfg_u32(c, r, "intermediate_size", true, 0, 1, &cfg->ffn)) ||
	    (rc = cfg_u32(c, r, "num_key_value_heads", false, cfg->n_heads, 1, &cfg->n_kv_heads)) ||
	    (rc = cfg_u32(c, r, "max_position_embeddings", false, 2048, 1, &cfg->max_pos)) ||
	    (rc = cfg_f64(c, r, "rms_norm_eps", false, 1e-6, &eps)))
		return rc;
	rc = cfg_u32(c, r, "head_dim", false, cfg->hidden / cfg->n_heads, 1, &cfg->head_dim);
	if (rc)
		return rc;
	cfg->rms_eps = (float)eps;
	/* the Hugging Face classes' defaults: LlamaConfig unties, MiniCPMConfig ties */
	cfg->tie_embeddings = cfg->family == MODEL_FAMILY_MINICPM;
	tie = cfg_get(r, "tie_word_embeddings");
	if (tie && !json_object_is_type(tie, json_type_boolean))
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: key 'tie_word_embeddings' must be a boolean", c->path);
	if (tie)
		cfg->tie_embeddings = json_object_get_boolean(tie);
	return 0;
}

/* MiniCPM muP: embeddings * scale_emb, residual branches * scale_depth / sqrt(layers),
 * logits * dim_model_base / hidden. Defaults are MiniCPMConfig's (1.0). */
static int cfg_mup(struct cfg_ctx *c, struct model_config *cfg)
{
	double emb, depth, base;
	int rc;

	cfg->scale_emb = 1.0f;
	cfg->residual_scale = 1.0f;
	cfg->logit_scale = 1.0f;
	if (cfg->family != MODEL_FAMILY_MINICPM)
		return 0;
	if ((rc = cfg_f64(c, c->root, "scale_emb", false, 1.0, &emb)) ||
	    (rc = cfg_f64(c, c->root, "scale_depth", false, 1.0, &depth)) ||
	    (rc = cfg_f64(c, c->root, "dim_model_base", false, 1.0, &base)))
		return rc;
	if (emb <= 0 || depth <= 0 || base <= 0)
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: scale_emb, scale_depth and dim_model_base must be > 0",
				  c->path);
	cfg->scale_emb = (float)emb;
	cfg->residual_scale = (float)(depth / sqrt((double)cfg->n_layers));
	cfg->logit_scale = (float)(base / (double)cfg->hidden);
	return 0;
}

/* longrope: long_factor must hold head_dim / 2 numbers (short_factor is not used). */
static int cfg_longrope_factors(struct cfg_ctx *c, struct json_object *rs,
				const struct model_config *cfg, float *factors)
{
	struct json_object *lf = cfg_get(rs, "long_factor");
	size_t n = cfg->head_dim / 2;

	if (!lf || !json_object_is_type(lf, json_type_array) || json_object_array_length(lf) != n)
		return model_fail(
		    c->err, c->err_len, -EINVAL,
		    "%s: rope_scaling.long_factor must be an array of head_dim/2 = %zu "
		    "numbers",
		    c->path, n);
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = json_object_array_get_idx(lf, i);
		double x = json_object_get_double(v);

		if ((!json_object_is_type(v, json_type_double) &&
		     !json_object_is_type(v, json_type_int)) ||
		    !(x > 0) || !isfinite(x))
			return model_fail(
			    c->err, c->err_len, -EINVAL,
			    "%s: rope_scaling.long_factor[%zu] must be a positive number", c->path,
			    i);
		if (factors)
			factors[i] = (float)x;
	}
	return 0;
}

static int cfg_rope_llama3(struct cfg_ctx *c, struct json_object *rs, struct kb_rope *p)
{
	int rc;

	p->type = KB_ROPE_LLAMA3;
	if ((rc = cfg_f64(c, rs, "factor", true, 0, &p->factor)) ||
	    (rc = cfg_f64(c, rs, "low_freq_factor", true, 0, &p->low_freq_factor)) ||
	    (rc = cfg_f64(c, rs, "high_freq_factor", true, 0, &p->high_freq_factor)) ||
	    (rc = cfg_u32(c, rs, "original_max_position_embeddings", true, 0, 1,
			  &p->original_max_pos)))
		return rc;
	if (!(p->factor > 0) || !(p->low_freq_factor > 0) ||
	    !(p->high_freq_factor > p->low_freq_factor))
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: rope_scaling (llama3) needs factor > 0 and "
				  "high_freq_factor > low_freq_factor > 0",
				  c->path);
	return 0;
}

static int cfg_rope_scaled(struct cfg_ctx *c, struct json_object *rs, const char *type,
			   struct model_config *cfg, float *factors)
{
	struct kb_rope *p = &cfg->rope;
	uint32_t orig;
	int rc;

	if (strcmp(type, "llama3") == 0)
		return cfg_rope_llama3(c, rs, p);
	/* original_max_position_embeddings: in rope_scaling (MiniCPM) or top level (Phi-3) */
	rc = cfg_u32(c, c->root, "original_max_position_embeddings", false, cfg->max_pos, 1, &orig);
	if (!rc)
		rc = cfg_u32(c, rs, "original_max_position_embeddings", false, orig, 1,
			     &p->original_max_pos);
	if (rc)
		return rc;
	if (strcmp(type, "yarn") == 0) {
		p->type = KB_ROPE_YARN;
		if ((rc = cfg_f64(c, rs, "factor", true, 0, &p->factor)) ||
		    (rc = cfg_f64(c, rs, "beta_fast", false, 32.0, &p->beta_fast)) ||
		    (rc = cfg_f64(c, rs, "beta_slow", false, 1.0, &p->beta_slow)))
			return rc;
		if (!(p->factor > 0))
			return model_fail(c->err, c->err_len, -EINVAL,
					  "%s: rope_scaling.factor must be > 0", c->path);
		return 0;
	}
	if (strcmp(type, "longrope") == 0) {
		p->type = KB_ROPE_LONGROPE;
		rc = cfg_f64(c, rs, "factor", false,
			     (double)cfg->max_pos / (double)p->original_max_pos, &p->factor);
		if (!rc)
			rc = cfg_longrope_factors(c, rs, cfg, factors);
		p->ext_factors = factors;
		return rc;
	}
	return model_fail(
	    c->err, c->err_len, -EINVAL,
	    "%s: rope_scaling type '%s' not supported (default, llama3, yarn, longrope)", c->path,
	    type);
}

/* factors: room for head_dim / 2 longrope factors, or NULL to only check them. */
static int cfg_rope(struct cfg_ctx *c, struct model_config *cfg, float *factors)
{
	struct kb_rope *p = &cfg->rope;
	struct json_object *rs = cfg_get(c->root, "rope_scaling"), *t;
	/* Newer transformers write theta and the scaling together as "rope_parameters". */
	struct json_object *rp = cfg_get(c->root, "rope_parameters");
	struct json_object *theta_src = c->root;
	const char *type;
	int rc;

	if (rp && json_object_is_type(rp, json_type_object)) {
		if (!cfg_get(c->root, "rope_theta"))
			theta_src = rp;
		if (!rs)
			rs = rp;
	}

	memset(p, 0, sizeof(*p));
	p->type = KB_ROPE_PLAIN;
	p->head_dim = cfg->head_dim;
	p->max_pos = cfg->max_pos;
	p->factor = 1.0;
	p->beta_fast = 32.0;
	p->beta_slow = 1.0;
	rc = cfg_f64(c, theta_src, "rope_theta", false, 10000.0, &p->theta);
	if (rc)
		return rc;
	if (!(p->theta > 0))
		return model_fail(c->err, c->err_len, -EINVAL, "%s: rope_theta must be > 0",
				  c->path);
	if (!rs)
		return 0;
	if (!json_object_is_type(rs, json_type_object))
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: rope_scaling must be an object or null", c->path);
	t = cfg_get(rs, "rope_type");
	if (!t)
		t = cfg_get(rs, "type");
	type = t ? json_object_get_string(t) : "default";
	if (strcmp(type, "default") == 0)
		return 0;
	return cfg_rope_scaled(c, rs, type, cfg, factors);
}

/* sparse_config keys, their fields and the paper's defaults (METHOD 2). */
static const struct {
	const char *key;
	size_t off;
	uint32_t def;
	uint32_t lo;
} cfg_sparse_keys[] = {
    {"block_size", offsetof(struct model_config, sparse.block), 64, 1},
    {"kernel_size", offsetof(struct model_config, sparse.ck_kernel), 32, 1},
    {"kernel_stride", offsetof(struct model_config, sparse.ck_stride), 16, 1},
    {"pool_kernel", offsetof(struct model_config, sparse.pool_kernel), 5, 1},
    {"pool_stride", offsetof(struct model_config, sparse.pool_stride), 4, 1},
    {"pool_padding", offsetof(struct model_config, sparse.pool_pad), 1, 0},
    {"init_blocks", offsetof(struct model_config, sparse.sink), 1, 0},
    {"local_blocks", offsetof(struct model_config, sparse.local), 32, 0},
    {"topk", offsetof(struct model_config, sparse.topk), 96, 1},
    {"dense_len", offsetof(struct model_config, dense_len), 8192, 0},
};

static int cfg_sparse(struct cfg_ctx *c, struct model_config *cfg)
{
	struct json_object *sc = cfg_get(c->root, "sparse_config");
	const struct kb_sparse *s = &cfg->sparse;
	int rc = 0;

	if (sc && !json_object_is_type(sc, json_type_object))
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: sparse_config must be an object or null", c->path);
	c->prefix = "sparse_config.";
	for (size_t i = 0; !rc && i < sizeof(cfg_sparse_keys) / sizeof(cfg_sparse_keys[0]); i++) {
		uint32_t *f = (uint32_t *)((char *)cfg + cfg_sparse_keys[i].off);

		*f = cfg_sparse_keys[i].def;
		if (sc)
			rc = cfg_u32(c, sc, cfg_sparse_keys[i].key, false, cfg_sparse_keys[i].def,
				     cfg_sparse_keys[i].lo, f);
	}
	c->prefix = "";
	if (rc)
		return rc;
	if (s->block != s->pool_stride * s->ck_stride || s->ck_kernel < s->ck_stride ||
	    s->pool_pad >= s->pool_kernel || (uint64_t)s->topk < (uint64_t)s->sink + s->local + 1)
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: sparse_config inconsistent: need block_size = pool_stride * "
				  "kernel_stride, kernel_size >= kernel_stride, pool_padding < "
				  "pool_kernel, topk >= init_blocks + local_blocks + 1",
				  c->path);
	return 0;
}

static int cfg_check_shapes(struct cfg_ctx *c, const struct model_config *cfg)
{
	if (cfg->n_heads % cfg->n_kv_heads)
		return model_fail(
		    c->err, c->err_len, -EINVAL,
		    "%s: num_attention_heads %u not a multiple of num_key_value_heads "
		    "%u",
		    c->path, cfg->n_heads, cfg->n_kv_heads);
	if (!cfg->head_dim || cfg->head_dim % 2 || cfg->head_dim / 2 > MODEL_MAX_FACTORS)
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: head_dim %u must be even, > 0 and at most %u", c->path,
				  cfg->head_dim, 2 * MODEL_MAX_FACTORS);
	if ((uint64_t)cfg->n_heads * cfg->head_dim > UINT32_MAX)
		return model_fail(c->err, c->err_len, -EINVAL,
				  "%s: num_attention_heads * head_dim too large", c->path);
	if (!(cfg->rms_eps > 0))
		return model_fail(c->err, c->err_len, -EINVAL, "%s: rms_norm_eps must be > 0",
				  c->path);
	return 0;
}

static int cfg_read(const char *path, struct json_object **out, char *err, size_t err_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	*out = NULL;
	if (fd < 0) {
		rc = -errno;
		return model_fail(err, err_len, rc, "%s: cannot open: %s", path, strerror(-rc));
	}
	*out = json_object_from_fd(fd);
	close(fd);
	if (!*out)
		return model_fail(err, err_len, -EINVAL, "%s: bad JSON: %s", path,
				  json_util_get_last_err() ? json_util_get_last_err() : "?");
	if (!json_object_is_type(*out, json_type_object)) {
		json_object_put(*out);
		*out = NULL;
		return model_fail(err, err_len, -EINVAL, "%s: bad JSON: not an object", path);
	}
	return 0;
}

/* Parse <dir>/config.json; factors (head_dim/2 floats, may be NULL) receives longrope's. */
static int cfg_load(const char *dir, struct model_config *cfg, float *factors, char *err,
		    size_t err_len)
{
	struct cfg_ctx c = {.prefix = "", .err = err, .err_len = err_len};
	char *path;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (asprintf(&path, "%s/config.json", dir) < 0)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	c.path = path;
	rc = cfg_read(path, &c.root, err, err_len);
	if (rc)
		goto out_free;
	if ((rc = cfg_family(&c, cfg)) || (rc = cfg_shapes(&c, cfg)) ||
	    (rc = cfg_check_shapes(&c, cfg)) || (rc = cfg_mup(&c, cfg)) ||
	    (rc = cfg_rope(&c, cfg, factors)) || (rc = cfg_sparse(&c, cfg)))
		goto out_put;
out_put:
	json_object_put(c.root);
out_free:
	free(path);
	return rc;
}

int model_config_load(const char *dir, struct model_config *cfg, char *err, size_t err_len)
{
	return cfg_load(dir, cfg, NULL, err, err_len);
}

/* ---- weights ---- */

static void model_priv_free(struct model_priv *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < p->n_files; i++)
		st_close(p->files[i]);
	free(p->files);
	st_close(p->fc);
	json_object_put(p->index);
	free(p->index_path);
	free(p->ext_factors);
	free(p->dir);
	free(p);
}

static int weights_add_file(struct model_priv *p, const char *name, char *err, size_t err_len)
{
	struct st_file **files;
	char *path;
	int rc;

	files = realloc(p->files, (p->n_files + 1) * sizeof(*files));
	if (!files)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	p->files = files;
	if (asprintf(&path, "%s/%s", p->dir, name) < 0)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	rc = st_open(path, &p->files[p->n_files], err, err_len);
	free(path);
	if (rc)
		return rc;
	p->n_files++;
	return 0;
}

/* The shard holding `fname` (a weight_map value), or NULL when not opened yet. */
static struct st_file *weights_shard(const struct model_priv *p, const char *fname)
{
	size_t dl = strlen(p->dir);

	for (uint32_t i = 0; i < p->n_files; i++) {
		const char *path = st_path(p->files[i]);

		if (strncmp(path, p->dir, dl) == 0 && path[dl] == '/' &&
		    strcmp(path + dl + 1, fname) == 0)
			return p->files[i];
	}
	return NULL;
}

static int weights_open_index(struct model_priv *p, char *err, size_t err_len)
{
	struct json_object *wm;
	int rc;

	rc = cfg_read(p->index_path, &p->index, err, err_len);
	if (rc)
		return rc;
	wm = cfg_get(p->index, "weight_map");
	if (!wm || !json_object_is_type(wm, json_type_object))
		return model_fail(err, err_len, -EINVAL, "%s: missing key 'weight_map'",
				  p->index_path);
	p->weights = wm;
	json_object_object_foreach(wm, key, val)
	{
		const char *f = json_object_get_string(val);

		/* shard names stay inside the model directory */
		if (!json_object_is_type(val, json_type_string) || !f[0] || strchr(f, '/') ||
		    strcmp(f, "..") == 0 || strcmp(f, ".") == 0)
			return model_fail(err, err_len, -EINVAL,
					  "%s: %s: weight_map entry must be a file name in the "
					  "model directory",
					  p->index_path, key);
		if (!weights_shard(p, f) && (rc = weights_add_file(p, f, err, err_len)))
			return rc;
	}
	return 0;
}

static int weights_open(struct model_priv *p, char *err, size_t err_len)
{
	char *single;
	int rc;

	if (asprintf(&single, "%s/model.safetensors", p->dir) < 0 ||
	    asprintf(&p->index_path, "%s/model.safetensors.index.json", p->dir) < 0)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	if (access(single, F_OK) == 0) {
		free(p->index_path);
		p->index_path = NULL;
		rc = weights_add_file(p, "model.safetensors", err, err_len);
	} else if (access(p->index_path, F_OK) == 0) {
		rc = weights_open_index(p, err, err_len);
	} else {
		rc = model_fail(err, err_len, -ENOENT,
				"%s: neither model.safetensors nor model.safetensors.index.json "
				"found",
				p->dir);
	}
	free(single);
	return rc;
}

/*
 * Find a tensor in the model's weights: *t is NULL when absent. An index entry whose shard
 * lacks the tensor is an error. *where names the file for messages.
 */
static int weights_find(const struct model_priv *p, const char *name, const struct st_tensor **t,
			const char **where, char *err, size_t err_len)
{
	struct json_object *v;
	struct st_file *f;

	*t = NULL;
	if (!p->index) {
		*where = st_path(p->files[0]);
		*t = st_find(p->files[0], name);
		return 0;
	}
	*where = p->index_path;
	if (!json_object_object_get_ex(p->weights, name, &v))
		return 0;
	f = weights_shard(p, json_object_get_string(v));
	*where = st_path(f);
	*t = st_find(f, name);
	if (!*t)
		return model_fail(err, err_len, -EINVAL,
				  "%s: %s: missing tensor (listed in model.safetensors.index.json)",
				  *where, name);
	return 0;
}

static void fmt_shape(char *buf, size_t len, const struct st_tensor *t)
{
	size_t o = 0;

	o += (size_t)snprintf(buf, len, "[");
	for (uint32_t d = 0; d < t->n_dims && o < len; d++)
		o += (size_t)snprintf(buf + o, len - o, "%s%llu", d ? ", " : "",
				      (unsigned long long)t->shape[d]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
}

/* Check dtype, shape ([rows, cols], or [cols] when rows == 0) and alignment; fill out. */
static int tensor_bind(const char *where, const char *name, const struct st_tensor *t,
		       uint32_t rows, uint32_t cols, struct model_tensor *out, char *err,
		       size_t err_len)
{
	char got[128], want[64];
	bool ok;

	if (t->dtype != ST_DTYPE_BF16)
		return model_fail(err, err_len, -EINVAL,
				  "%s: %s: dtype %s not supported (only BF16 is accepted)", where,
				  name, st_dtype_name(t->dtype));
	if (rows)
		ok = t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols;
	else
		ok = t->n_dims == 1 && t->shape[0] == cols;
	if (!ok) {
		fmt_shape(got, sizeof(got), t);
		if (rows)
			snprintf(want, sizeof(want), "[%u, %u]", rows, cols);
		else
			snprintf(want, sizeof(want), "[%u]", cols);
		return model_fail(err, err_len, -EINVAL, "%s: %s: shape %s expected %s", where,
				  name, got, want);
	}
	if ((uintptr_t)t->data % 2)
		return model_fail(err, err_len, -EINVAL, "%s: %s: data not 2-byte aligned", where,
				  name);
	out->data = t->data;
	out->rows = rows ? rows : 1;
	out->cols = cols;
	return 0;
}

static int model_bind(struct model *m, const char *name, uint32_t rows, uint32_t cols,
		      struct model_tensor *out, char *err, size_t err_len)
{
	const struct st_tensor *t;
	const char *where;
	int rc;

	rc = weights_find(m->priv, name, &t, &where, err, err_len);
	if (rc)
		return rc;
	if (!t)
		return model_fail(err, err_len, -EINVAL, "%s: %s: missing tensor", where, name);
	return tensor_bind(where, name, t, rows, cols, out, err, err_len);
}

/* Shapes of the per-layer tensors, in terms of the config. */
enum layer_shape { LS_NORM, LS_Q, LS_KV, LS_O, LS_FFN_IN, LS_FFN_OUT };

static const struct {
	const char *suffix;
	size_t off;
	enum layer_shape shape;
} layer_tensors[] = {
    {"input_layernorm.weight", offsetof(struct model_layer, attn_norm), LS_NORM},
    {"self_attn.q_proj.weight", offsetof(struct model_layer, wq), LS_Q},
    {"self_attn.k_proj.weight", offsetof(struct model_layer, wk), LS_KV},
    {"self_attn.v_proj.weight", offsetof(struct model_layer, wv), LS_KV},
    {"self_attn.o_proj.weight", offsetof(struct model_layer, wo), LS_O},
    {"post_attention_layernorm.weight", offsetof(struct model_layer, ffn_norm), LS_NORM},
    {"mlp.gate_proj.weight", offsetof(struct model_layer, w_gate), LS_FFN_IN},
    {"mlp.up_proj.weight", offsetof(struct model_layer, w_up), LS_FFN_IN},
    {"mlp.down_proj.weight", offsetof(struct model_layer, w_down), LS_FFN_OUT},
};

static void layer_shape_of(const struct model_config *c, enum layer_shape s, uint32_t *rows,
			   uint32_t *cols)
{
	*rows = 0;
	*cols = c->hidden;
	switch (s) {
	case LS_NORM:
		break;
	case LS_Q:
		*rows = c->n_heads * c->head_dim;
		break;
	case LS_KV:
		*rows = c->n_kv_heads * c->head_dim;
		break;
	case LS_O:
		*rows = c->hidden;
		*cols = c->n_heads * c->head_dim;
		break;
	case LS_FFN_IN:
		*rows = c->ffn;
		break;
	case LS_FFN_OUT:
		*rows = c->hidden;
		*cols = c->ffn;
		break;
	}
}

static int model_bind_layers(struct model *m, char *err, size_t err_len)
{
	const struct model_config *c = &m->cfg;
	char name[128];
	uint32_t rows, cols;
	int rc;

	for (uint32_t l = 0; l < c->n_layers; l++) {
		for (size_t i = 0; i < sizeof(layer_tensors) / sizeof(layer_tensors[0]); i++) {
			struct model_tensor *t =
			    (struct model_tensor *)((char *)&m->layers[l] + layer_tensors[i].off);

			snprintf(name, sizeof(name), "model.layers.%u.%s", l,
				 layer_tensors[i].suffix);
			layer_shape_of(c, layer_tensors[i].shape, &rows, &cols);
			rc = model_bind(m, name, rows, cols, t, err, err_len);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int model_bind_globals(struct model *m, char *err, size_t err_len)
{
	const struct model_config *c = &m->cfg;
	int rc;

	if ((rc = model_bind(m, "model.embed_tokens.weight", c->vocab, c->hidden, &m->embed, err,
			     err_len)) ||
	    (rc = model_bind(m, "model.norm.weight", 0, c->hidden, &m->norm, err, err_len)))
		return rc;
	if (c->tie_embeddings) {
		m->lm_head = m->embed;
		return 0;
	}
	return model_bind(m, "lm_head.weight", c->vocab, c->hidden, &m->lm_head, err, err_len);
}

/* A Forecast tensor: in the Forecast file first, then in the model's own files. */
static int forecast_find(const struct model_priv *p, const char *name, const struct st_tensor **t,
			 const char **where, char *err, size_t err_len)
{
	if (p->fc) {
		*where = st_path(p->fc);
		*t = st_find(p->fc, name);
		if (*t)
			return 0;
	}
	return weights_find(p, name, t, where, err, err_len);
}

static int forecast_open(struct model_priv *p, const char *forecast_path, char *err, size_t err_len)
{
	char *def;
	int rc = 0;

	if (forecast_path)
		return st_open(forecast_path, &p->fc, err, err_len);
	if (asprintf(&def, "%s/forecast.safetensors", p->dir) < 0)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	if (access(def, F_OK) == 0)
		rc = st_open(def, &p->fc, err, err_len);
	free(def);
	return rc;
}

/*
 * Bind q_future_proj of every layer and q_curr_proj of layer 0. The last layer's q_future_proj
 * is optional (it predicts a layer that does not exist). When there is no Forecast file and the
 * model holds none of these tensors, the model simply has no Forecast.
 */
static int model_bind_forecast(struct model *m, char *err, size_t err_len)
{
	const struct model_config *c = &m->cfg;
	struct model_priv *p = m->priv;
	uint32_t rows = c->n_kv_heads * c->head_dim, found = 0, l;
	const char *missing = NULL, *where = NULL;
	char name[128], miss[128];
	const struct st_tensor *t;
	int rc;

	for (l = 0; l <= c->n_layers; l++) {
		/* l == n_layers stands for layer 0's q_curr_proj */
		struct model_tensor *out = l < c->n_layers ? &m->layers[l].wf : &m->layers[0].wfc;

		if (l < c->n_layers)
			snprintf(name, sizeof(name),
				 "model.layers.%u.self_attn.q_future_proj.weight", l);
		else
			snprintf(name, sizeof(name), "model.layers.0.self_attn.q_curr_proj.weight");
		rc = forecast_find(p, name, &t, &where, err, err_len);
		if (rc)
			return rc;
		if (t && (rc = tensor_bind(where, name, t, rows, c->hidden, out, err, err_len)))
			return rc;
		found += t != NULL;
		if (!t && l + 1 != c->n_layers && !missing)
			missing = strcpy(miss, name);
	}
	if (!found && !p->fc)
		return 0;
	if (missing)
		return model_fail(err, err_len, -EINVAL, "%s: %s: missing tensor (Forecast)",
				  p->fc ? st_path(p->fc) : where, missing);
	m->has_forecast = true;
	return 0;
}

int model_open(const char *dir, const char *forecast_path, struct model **out, char *err,
	       size_t err_len)
{
	struct model_priv *p;
	struct model *m;
	int rc;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return model_fail(err, err_len, -ENOMEM, "out of memory");
	m->priv = p = calloc(1, sizeof(*p));
	if (!p || !(p->dir = strdup(dir)) ||
	    !(p->ext_factors = calloc(MODEL_MAX_FACTORS, sizeof(float)))) {
		rc = model_fail(err, err_len, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = cfg_load(dir, &m->cfg, p->ext_factors, err, err_len);
	if (rc)
		goto out_free;
	m->layers = calloc(m->cfg.n_layers, sizeof(*m->layers));
	if (!m->layers) {
		rc = model_fail(err, err_len, -ENOMEM, "out of memory");
		goto out_free;
	}
	if ((rc = weights_open(p, err, err_len)) || (rc = model_bind_globals(m, err, err_len)) ||
	    (rc = model_bind_layers(m, err, err_len)) ||
	    (rc = forecast_open(p, forecast_path, err, err_len)) ||
	    (rc = model_bind_forecast(m, err, err_len)))
		goto out_free;
	*out = m;
	return 0;
out_free:
	model_close(m);
	return rc;
}

void model_close(struct model *m)
{
	if (!m)
		return;
	model_priv_free(m->priv);
	free(m->layers);
	free(m);
}
