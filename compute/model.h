/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Model loading: a Hugging Face-layout checkpoint (config.json plus model.safetensors, or shards
 * listed in model.safetensors.index.json) of the Llama or MiniCPM family, and an optional
 * Forecast file (model.layers.N.self_attn.q_future_proj.weight; q_curr_proj for layer 0).
 * Tensors are mmap'ed, never copied on the host; a backend upload copies them once to the device.
 * Every problem (missing key, bad JSON, truncated file, wrong dtype or shape, overlapping or
 * out-of-file offsets, missing tensor) is an error whose message names the file, the tensor and
 * the problem. Not thread safe.
 */
#ifndef SPARDA_COMPUTE_MODEL_H
#define SPARDA_COMPUTE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum model_family { MODEL_FAMILY_LLAMA = 0, MODEL_FAMILY_MINICPM = 1 };

struct model_config {
	enum model_family family;
	uint32_t vocab;
	uint32_t hidden;
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads;
	uint32_t head_dim;
	uint32_t ffn;
	uint32_t max_pos;
	float rms_eps;
	bool tie_embeddings;
	struct kb_rope rope; /* ext_factors points into model-owned memory */
	/* muP (MiniCPM); 1.0 / 0 for Llama */
	float scale_emb;      /* embedding multiplier */
	float residual_scale; /* scale_depth / sqrt(n_layers), 1.0 for Llama */
	float logit_scale;    /* 1 / (hidden / dim_model_base), 1.0 for Llama */
	/* sparse attention (config keys "sparse_config": {...}; paper defaults when absent) */
	struct kb_sparse sparse;
	uint32_t dense_len; /* dense attention below this many tokens of context (8192) */
};

/* One tensor as mapped from a safetensors file (bf16 only; other dtypes are rejected). */
struct model_tensor {
	const uint16_t *data; /* host pointer into the mmap */
	uint32_t rows, cols;  /* 2-D [out, in]; 1-D tensors have rows = 1 */
};

struct model_layer {
	struct model_tensor attn_norm;	/* input_layernorm.weight [hidden] */
	struct model_tensor wq, wk, wv; /* [n_heads*hd, hidden], [n_kv*hd, hidden] x2 */
	struct model_tensor wo;		/* [hidden, n_heads*hd] */
	struct model_tensor ffn_norm;	/* post_attention_layernorm.weight */
	struct model_tensor w_gate, w_up, w_down;
	struct model_tensor wf;	 /* Forecast q_future_proj [n_kv*hd, hidden]; data NULL if absent */
	struct model_tensor wfc; /* layer 0 only: q_curr_proj; data NULL if absent */
};

struct model {
	struct model_config cfg;
	struct model_tensor embed;   /* [vocab, hidden] */
	struct model_tensor norm;    /* final norm [hidden] */
	struct model_tensor lm_head; /* [vocab, hidden] (== embed when tied) */
	struct model_layer *layers;  /* n_layers */
	bool has_forecast;
	void *priv; /* mappings */
};

/*
 * Open a model directory (config.json + weights). forecast_path: a Forecast safetensors file,
 * or NULL to use <dir>/forecast.safetensors when present. Returns 0 or -errno (-ENOENT,
 * -EINVAL for bad content, -EIO); on error `err` holds a message naming file, tensor, problem.
 * Forecast tensors are looked up in the Forecast file first, then in the model's own files.
 * When a Forecast file exists, or the model holds any Forecast tensor, every layer's
 * q_future_proj (except the last layer's, which is optional: it predicts no layer) and layer
 * 0's q_curr_proj must be present; has_forecast is then true. Without either, has_forecast is
 * false and wf/wfc are NULL. *out is owned by the caller (model_close, which accepts NULL).
 */
int model_open(const char *dir, const char *forecast_path, struct model **out, char *err,
	       size_t err_len);
void model_close(struct model *m);

/*
 * Parse only config.json (for tools that need shapes), with the same validation as model_open.
 * cfg->rope.ext_factors is left NULL (longrope factors are checked, not kept).
 */
int model_config_load(const char *dir, struct model_config *cfg, char *err, size_t err_len);

/*
 * Synthetic model generator: writes config.json, model.safetensors and forecast.safetensors
 * into dir (created if missing) with deterministic random bf16 weights (seed), for any
 * geometry in cfg. Weight scales are chosen so activations stay O(1) through the layers.
 * Every element depends only on (seed, tensor name, index): same seed, same bytes.
 * W_q and W_k are scaled x2 so attention is peaked; the Forecast W_F(l) is a noisy copy of
 * layer l+1's grouped query projection (the mean of the W_q rows of each KV group's heads),
 * q_curr the same from layer 0's W_q (the recipe is in modelgen.c). The geometry is checked
 * by reading config.json back with model_config_load.
 * Returns 0 or -errno with a message in err.
 */
int model_generate(const char *dir, const struct model_config *cfg, uint64_t seed, char *err,
		   size_t err_len);

/* Generator options beyond the seed. */
struct model_gen_opts {
	uint64_t seed;
	/* Fraction in [0, 1) of each token embedding's energy held by one vector shared by all
	 * tokens on every 64th ("massive") channel; lm_head is zero there. 0 (the default) gives
	 * the plain random embeddings, byte for byte. Larger values make consecutive queries
	 * alike: step-to-step locality of the block selection, as real models have. */
	double shared_activation;
};
int model_generate_opts(const char *dir, const struct model_config *cfg,
			const struct model_gen_opts *o, char *err, size_t err_len);

/*
 * Named geometries: "tiny" (CPU tests and the demo: vocab 512, hidden 256, 4 layers, 8/2
 * heads of 32, ffn 512, sparse block 64, ck 32/16, pool 5/4/1, sink 1, local 2, topk 8,
 * dense_len 1024), "minicpm4-8b" (MiniCPM muP, plain rope theta 10000), "llama3-8b" (llama3
 * rope scaling). Returns 0, or -ENOENT for an unknown name.
 */
int model_preset(const char *name, struct model_config *cfg);

/*
 * The first context length whose attention selects among blocks: below dense_len attention is
 * dense, and below topk blocks every block would be selected. max(dense_len, topk * block).
 */
static inline uint32_t model_first_sparse_pos(const struct model_config *c)
{
	uint32_t p = c->sparse.topk * c->sparse.block;

	return c->dense_len > p ? c->dense_len : p;
}

#endif
