/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runner set-up and the generation loop: mode table, weight upload (Q|K|V|F fused), buffer
 * sizing, host-store sequences, then prefill per sequence and batched decode steps.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runner_internal.h"
#include "timeutil.h"

static const char *const mode_names[RUNNER_MODE_COUNT] = {
	"dense", "sparse", "sparse-offload", "sparda", "sparda-noprefetch", "sparda-nooffload",
};

const char *runner_mode_name(enum runner_mode m)
{
	return (unsigned)m < RUNNER_MODE_COUNT ? mode_names[m] : "?";
}

int runner_mode_parse(const char *s, enum runner_mode *out)
{
	for (int i = 0; i < RUNNER_MODE_COUNT; i++) {
		if (strcmp(s, mode_names[i]) == 0) {
			*out = (enum runner_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool runner_mode_offloads(enum runner_mode m)
{
	return m == RUNNER_MODE_SPARSE_OFFLOAD || m == RUNNER_MODE_SPARDA ||
	       m == RUNNER_MODE_SPARDA_NOPREFETCH;
}

bool runner_mode_forecast(enum runner_mode m)
{
	return m == RUNNER_MODE_SPARDA || m == RUNNER_MODE_SPARDA_NOPREFETCH ||
	       m == RUNNER_MODE_SPARDA_NOOFFLOAD;
}

void runner_fail(struct runner *r, int rc, const char *fmt, ...)
{
	va_list ap;

	if (r->err_rc)
		return; /* keep the first cause */
	r->err_rc = rc;
	if (!r->err || !r->err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(r->err, r->err_len, fmt, ap);
	va_end(ap);
}

int runner_upload_i32(struct runner *r, int32_t *dst, const int32_t *src, uint32_t n)
{
	return r->kb->ops->memcpy(r->kb, dst, src, (size_t)n * 4, KB_H2D, KB_STREAM_COMPUTE);
}

int runner_upload_i64(struct runner *r, int64_t *dst, const int64_t *src, uint32_t n)
{
	return r->kb->ops->memcpy(r->kb, dst, src, (size_t)n * 8, KB_H2D, KB_STREAM_COMPUTE);
}

static int dev_alloc(struct runner *r, void *pp, size_t bytes)
{
	void **p = pp;
	int rc = r->kb->ops->alloc(r->kb, bytes ? bytes : 16, p);
	if (rc)
		runner_fail(r, rc, "device allocation of %zu bytes failed", bytes);
	return rc;
}

static int upload_rows(struct runner *r, uint16_t *dst, const struct model_tensor *t)
{
	size_t bytes = (size_t)t->rows * t->cols * 2;
	return r->kb->ops->memcpy(r->kb, dst, t->data, bytes, KB_H2D, KB_STREAM_COMPUTE);
}

static int upload_tensor(struct runner *r, uint16_t **dst, const struct model_tensor *t)
{
	int rc = dev_alloc(r, dst, (size_t)t->rows * t->cols * 2);
	return rc ? rc : upload_rows(r, *dst, t);
}

static int upload_layer(struct runner *r, uint32_t l)
{
	const struct model_layer *ml = &r->m->layers[l];
	struct runner_lw *w = &r->lw[l];
	size_t row = (size_t)r->hidden;
	int rc;

	if ((rc = upload_tensor(r, &w->attn_norm, &ml->attn_norm)) ||
	    (rc = upload_tensor(r, &w->ffn_norm, &ml->ffn_norm)) ||
	    (rc = upload_tensor(r, &w->wo, &ml->wo)) || (rc = upload_tensor(r, &w->wdown, &ml->w_down)))
		return rc;
	if ((rc = dev_alloc(r, &w->wqkvf, (size_t)r->qkvf_cols * row * 2)) ||
	    (rc = r->kb->ops->memset(r->kb, w->wqkvf, 0, (size_t)r->qkvf_cols * row * 2,
				     KB_STREAM_COMPUTE)))
		return rc;
	if ((rc = upload_rows(r, w->wqkvf, &ml->wq)) ||
	    (rc = upload_rows(r, w->wqkvf + (size_t)r->q_cols * row, &ml->wk)) ||
	    (rc = upload_rows(r, w->wqkvf + (size_t)(r->q_cols + r->kv_cols) * row, &ml->wv)))
		return rc;
	if (r->has_f && ml->wf.data &&
	    (rc = upload_rows(r, w->wqkvf + (size_t)r->f_off * row, &ml->wf)))
		return rc;
	if (r->has_f && l == 0 && (rc = upload_rows(r, w->wqkvf + (size_t)r->fc_off * row, &ml->wfc)))
		return rc;
	if ((rc = dev_alloc(r, &w->wgu, (size_t)2 * r->ffn * row * 2)) ||
	    (rc = upload_rows(r, w->wgu, &ml->w_gate)) ||
	    (rc = upload_rows(r, w->wgu + (size_t)r->ffn * row, &ml->w_up)))
		return rc;
	return 0;
}

static int check_model(struct runner *r)
{
	const struct model_config *c = &r->c;

	if (!c->n_kv_heads || c->n_heads % c->n_kv_heads)
		return runner_fail(r, -EINVAL, "model: %u heads not a multiple of %u KV heads",
				   c->n_heads, c->n_kv_heads), -EINVAL;
	if (c->sparse.topk < c->sparse.sink + c->sparse.local + 1)
		return runner_fail(r, -EINVAL, "sparse config: topk %u < sink %u + local %u + 1",
				   c->sparse.topk, c->sparse.sink, c->sparse.local), -EINVAL;
	if (runner_mode_forecast(r->o.mode) && !r->m->has_forecast)
		return runner_fail(r, -EINVAL,
				   "mode %s needs Forecast weights (q_future_proj, q_curr_proj) "
				   "and the model has none", runner_mode_name(r->o.mode)), -EINVAL;
	if (r->o.cache_slots && r->o.cache_slots < c->sparse.topk)
		return runner_fail(r, -EINVAL, "cache slots %u below top-k %u: a step's selection "
				   "must fit the cache", r->o.cache_slots, c->sparse.topk), -EINVAL;
	if (runner_mode_offloads(r->o.mode) && !r->o.host)
		return runner_fail(r, -EINVAL, "mode %s keeps KV in the host store; none given",
				   runner_mode_name(r->o.mode)), -EINVAL;
	if (r->o.host && r->o.host->unit_bytes != r->unit_bytes)
		return runner_fail(r, -EINVAL, "host store unit %zu bytes, model needs %zu",
				   r->o.host->unit_bytes, r->unit_bytes), -EINVAL;
	return 0;
}

static void derive_shapes(struct runner *r)
{
	const struct model_config *c = &r->c;
	const struct kb_sparse *sp = &c->sparse;

	r->hd = c->head_dim;
	r->n_q = c->n_heads;
	r->n_kv = c->n_kv_heads;
	r->hidden = c->hidden;
	r->ffn = c->ffn;
	r->vocab = c->vocab;
	r->L = c->n_layers;
	r->has_f = r->m->has_forecast;
	r->q_cols = r->n_q * r->hd;
	r->kv_cols = r->n_kv * r->hd;
	r->f_off = r->q_cols + 2 * r->kv_cols;
	r->fc_off = r->f_off + r->kv_cols;
	r->qkvf_cols = r->f_off + (r->has_f ? 2 * r->kv_cols : 0);
	r->max_blocks = (r->o.max_tokens + sp->block - 1) / sp->block;
	r->n_caches = r->o.max_batch * r->n_kv;
	uint32_t dense_blocks = (c->dense_len + sp->block - 1) / sp->block;
	r->n_slots = sp->topk > dense_blocks ? sp->topk : dense_blocks;
	if (r->n_slots > r->max_blocks)
		r->n_slots = r->max_blocks;
	if (r->n_slots < sp->topk)
		r->n_slots = sp->topk; /* diff needs k <= n_slots */
	if (r->o.cache_slots > r->n_slots) { /* a retaining cache: no more slots than blocks */
		uint32_t want = r->o.cache_slots < r->max_blocks ? r->o.cache_slots : r->max_blocks;
		r->n_slots = want > r->n_slots ? want : r->n_slots;
	}
	size_t part = ((size_t)r->n_caches * r->n_slots + 63) & ~(size_t)63; /* blocks, slots */
	r->loads_blk = ((size_t)r->n_caches + 63) & ~(size_t)63;
	r->loads_slot = r->loads_blk + part;
	r->loads_ints = r->loads_slot + part;
	r->sel_cap = r->max_blocks > r->n_slots ? r->max_blocks : r->n_slots;
	r->ck_cap = kb_ck_entries(sp, r->o.max_tokens) + 1;
	r->unit_elems = (size_t)2 * sp->block * r->hd;
	r->unit_bytes = r->unit_elems * 2;
	r->attn_scale = 1.0f / sqrtf((float)r->hd);
	r->chunk = r->o.prefill_chunk ? r->o.prefill_chunk : 4096;
	if (r->chunk > r->o.max_tokens)
		r->chunk = r->o.max_tokens;
}

/* stats_dev, zeroed (the read-back copies the parts of layers that gathered nothing too). */
static int alloc_stats(struct runner *r)
{
	size_t bytes = ((size_t)r->L * r->stats_per + 1) * sizeof(int32_t);
	int rc = dev_alloc(r, &r->stats_dev, bytes);

	if (rc)
		return rc;
	r->misses = r->stats_dev + (size_t)r->L * r->stats_per;
	r->stats_first = r->L;
	return r->kb->ops->memset(r->kb, r->stats_dev, 0, bytes, KB_STREAM_COMPUTE);
}

static int alloc_layer_kv(struct runner *r, uint32_t l)
{
	struct runner_lkv *kv = &r->kv[l];
	const struct kb_ops *k = r->kb->ops;
	size_t nc = r->n_caches, B = r->o.max_batch;
	int rc;

	kv->resident = !runner_mode_offloads(r->o.mode) ||
		       (l == 0 && r->o.mode != RUNNER_MODE_SPARSE_OFFLOAD);
	if (kv->resident)
		rc = dev_alloc(r, &kv->store, nc * r->max_blocks * r->unit_bytes);
	else
		rc = dev_alloc(r, &kv->cache, nc * r->n_slots * r->unit_bytes) ||
		     dev_alloc(r, &kv->map, nc * r->n_slots * 4) ||
		     dev_alloc(r, &kv->n_loads, r->loads_ints * 4) ||
		     dev_alloc(r, &kv->dst_idx, nc * r->n_slots * 4) ||
		     dev_alloc(r, &kv->word_base, nc * 8) ||
		     (r->o.cache_slots && dev_alloc(r, &kv->age, nc * r->n_slots * 4));
	if (rc)
		return -ENOMEM;
	if (kv->age && (rc = k->memset(r->kb, kv->age, 0, nc * r->n_slots * 4, KB_STREAM_COMPUTE)))
		return rc;
	if (kv->n_loads) { /* one allocation: n_loads, the blocks, the slots */
		kv->load_block = kv->n_loads + r->loads_blk;
		kv->load_slot = kv->n_loads + r->loads_slot;
	}
	if (!kv->resident) {
		kv->hits = r->stats_dev + l * r->stats_per;
		kv->src_idx = kv->hits + nc;
		r->stats_first = l < r->stats_first ? l : r->stats_first;
	}
	if (dev_alloc(r, &kv->ck, B * r->n_kv * r->ck_cap * r->hd * 2) ||
	    dev_alloc(r, &kv->ring, B * r->n_kv * r->c.sparse.ck_kernel * r->hd * 2) ||
	    dev_alloc(r, &kv->sel, nc * r->sel_cap * 4))
		return -ENOMEM;
	if ((rc = k->event_new(r->kb, &kv->ready)) || (rc = k->event_new(r->kb, &kv->done)) ||
	    (rc = k->event_new(r->kb, &kv->want)) || (rc = k->event_new(r->kb, &kv->resolved)))
		return runner_fail(r, rc, "event creation failed"), rc;
	return 0;
}

static int alloc_activations(struct runner *r)
{
	size_t B = r->o.max_batch, T = r->o.max_tokens, C = r->chunk, nc = r->n_caches;
	size_t qb = (T + r->c.sparse.block - 1) / r->c.sparse.block;
	const struct kb_ops *k = r->kb->ops;

	if (dev_alloc(r, &r->resid, B * r->hidden * 4) || dev_alloc(r, &r->logits, B * r->vocab * 4) ||
	    dev_alloc(r, &r->xn, B * r->hidden * 2) || dev_alloc(r, &r->qkvf, B * r->qkvf_cols * 2) ||
	    dev_alloc(r, &r->attn, B * r->q_cols * 2) || dev_alloc(r, &r->tmp, B * r->hidden * 2) ||
	    dev_alloc(r, &r->gu, B * 2 * r->ffn * 2) || dev_alloc(r, &r->ffo, B * r->ffn * 2) ||
	    dev_alloc(r, &r->scores, nc * r->ck_cap * 4) ||
	    dev_alloc(r, &r->step_dev, r->step_words * 4) ||
	    dev_alloc(r, &r->tail_idx, nc * 4) || dev_alloc(r, &r->tail_len, nc * 4) ||
	    dev_alloc(r, &r->argmax, B * 4) || dev_alloc(r, &r->wb_dst, r->L * nc * 4) ||
	    dev_alloc(r, &r->iota, nc * r->n_slots * 4) || dev_alloc(r, &r->neg1, nc * 4) ||
	    dev_alloc(r, &r->unit_idx, nc * r->sel_cap * 4) ||
	    dev_alloc(r, &r->unit_len, nc * r->sel_cap * 4) ||
	    dev_alloc(r, &r->attn_work, k->attn_decode_work(r->kb, B, r->n_q, r->sel_cap, r->hd)))
		return -ENOMEM;
	/* the step's uploaded arrays, in step_dev's order (runner_internal.h) */
	r->ids = r->step_dev;
	r->pos = r->ids + B;
	r->n_tok = r->pos + B;
	r->n_ent = r->n_tok + B;
	r->n_ent0 = r->n_ent + B;
	r->n_blk = r->n_ent0 + B;
	r->tail_sel = r->n_blk + B;
	r->store_idx = r->tail_sel + nc;
	r->p_work_bytes = k->select_prefill_work(r->kb, (uint32_t)T, 0, r->n_q, r->n_kv,
						 &r->c.sparse);
	if (dev_alloc(r, &r->p_resid, T * r->hidden * 4) || dev_alloc(r, &r->p_xn, T * r->hidden * 2) ||
	    dev_alloc(r, &r->p_qkvf[0], T * r->qkvf_cols * 2) ||
	    dev_alloc(r, &r->p_qkvf[1], T * r->qkvf_cols * 2) ||
	    dev_alloc(r, &r->p_attn, T * r->q_cols * 2) || dev_alloc(r, &r->p_tmp, T * r->hidden * 2) ||
	    dev_alloc(r, &r->p_gu, C * 2 * r->ffn * 2) || dev_alloc(r, &r->p_ffo, C * r->ffn * 2) ||
	    dev_alloc(r, &r->p_pos, T * 4) || dev_alloc(r, &r->p_ids, T * 4) || dev_alloc(r, &r->p_sel, r->n_kv * qb * r->c.sparse.topk * 4) ||
	    dev_alloc(r, &r->p_uidx, (qb + 1) * r->n_kv * 4) || dev_alloc(r, &r->p_work, r->p_work_bytes))
		return -ENOMEM;
	if (r->o.prefill_kv_side &&
	    (dev_alloc(r, &r->p_uidx_side, (qb + 1) * r->n_kv * 4) ||
	     !(r->h_uidx_side = calloc((qb + 1) * r->n_kv, sizeof(int32_t))) ||
	     k->event_new(r->kb, &r->kv_qkvf) || k->event_new(r->kb, &r->kv_packed[0]) ||
	     k->event_new(r->kb, &r->kv_packed[1]))) {
		runner_fail(r, -ENOMEM, "prefill KV stream: allocation failed");
		return -ENOMEM;
	}
	return 0;
}

static int alloc_host(struct runner *r)
{
	size_t big = (size_t)r->n_caches * r->sel_cap;
	if (big < r->o.max_tokens)
		big = r->o.max_tokens;
	r->h_i32 = calloc(big + 16, sizeof(int32_t));
	r->h_arena_tail = calloc((size_t)r->L * r->n_caches, sizeof(int32_t));
	r->tail_ahead = calloc(r->o.max_batch, sizeof(uint32_t));
	r->h_blocks = calloc(r->o.max_batch, sizeof(uint32_t));
	r->h_flag = calloc(r->o.max_batch, sizeof(bool));
	r->h_units = calloc((size_t)r->o.max_batch * r->L * r->n_kv, sizeof(*r->h_units));
	r->step_words = 6 * (size_t)r->o.max_batch + 2 * (size_t)r->n_caches;
	/* then the write-back destinations of a step where blocks fill, [L * n_caches] */
	r->h_step_bytes = ((r->step_words + (size_t)r->L * r->n_caches) * sizeof(int32_t) + 4095) &
			  ~(size_t)4095;
	if (posix_memalign((void **)&r->h_step, 4096, r->h_step_bytes))
		r->h_step = NULL;
	else
		memset(r->h_step, 0, r->h_step_bytes);
	r->stats_per = (size_t)r->n_caches * (1 + r->n_slots);
	r->h_stats_bytes = ((size_t)r->L * r->stats_per + 1) * sizeof(int32_t);
	r->h_stats_bytes = (r->h_stats_bytes + 4095) & ~(size_t)4095; /* whole pages to pin */
	if (posix_memalign((void **)&r->h_stats, 4096, r->h_stats_bytes))
		r->h_stats = NULL;
	else
		memset(r->h_stats, 0, r->h_stats_bytes);
	r->seq_handle = calloc(r->o.max_batch, sizeof(uint32_t));
	r->seq_word_base = calloc(r->o.max_batch, sizeof(int64_t));
	r->len = calloc(r->o.max_batch, sizeof(uint32_t));
	r->full = calloc(r->o.max_batch, sizeof(bool));
	r->h_logits = calloc((size_t)r->o.max_batch * r->vocab, sizeof(float));
	r->st.layer = calloc(r->L, sizeof(struct runner_layer_stats));
	if (!r->h_i32 || !r->h_step || !r->h_arena_tail || !r->tail_ahead || !r->h_stats ||
	    !r->h_units || !r->h_blocks || !r->h_flag || !r->seq_handle || !r->seq_word_base ||
	    !r->len || !r->h_logits || !r->st.layer || !r->full)
		return runner_fail(r, -ENOMEM, "host allocation failed"), -ENOMEM;
	return 0;
}

static int setup_rope_and_globals(struct runner *r)
{
	const struct kb_ops *k = r->kb->ops;
	float *inv = calloc(r->hd / 2, sizeof(float));
	int rc;

	if (!inv)
		return -ENOMEM;
	rc = kb_rope_resolve(&r->c.rope, inv, &r->rope_mscale);
	if (rc) {
		free(inv);
		return runner_fail(r, rc, "rope parameters rejected"), rc;
	}
	rc = dev_alloc(r, &r->inv_freq, r->hd / 2 * 4);
	if (!rc)
		rc = k->memcpy(r->kb, r->inv_freq, inv, r->hd / 2 * 4, KB_H2D, KB_STREAM_COMPUTE);
	free(inv);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < r->o.max_tokens; i++)
		r->h_i32[i] = (int32_t)i;
	if ((rc = runner_upload_i32(r, r->p_pos, r->h_i32, r->o.max_tokens)))
		return rc;
	if ((rc = k->memset(r->kb, r->neg1, 0xff, (size_t)r->n_caches * 4, KB_STREAM_COMPUTE)))
		return rc;
	if ((rc = upload_tensor(r, &r->embed, &r->m->embed)) ||
	    (rc = upload_tensor(r, &r->norm, &r->m->norm)))
		return rc;
	if (r->m->lm_head.data == r->m->embed.data)
		r->lm_head = r->embed;
	else if ((rc = upload_tensor(r, &r->lm_head, &r->m->lm_head)))
		return rc;
	return 0;
}

static int register_host_store(struct runner *r)
{
	struct kvhost *h = r->o.host;
	const struct kb_ops *k = r->kb->ops;
	int rc;

	if (!h)
		return 0;
	rc = k->host_register(r->kb, h->arena, h->arena_bytes, &r->arena_dev);
	if (rc)
		return runner_fail(r, rc, "registering the %zu-byte KV arena failed", h->arena_bytes), rc;
	r->arena_registered = true;
	void *wd;
	rc = k->host_register(r->kb, (void *)h->words, h->words_bytes, &wd);
	if (rc)
		return runner_fail(r, rc, "registering the residency table failed"), rc;
	r->words_dev = wd;
	r->words_registered = true;
	return 0;
}

/* Careful mode when the host store may move units to an NVMe tier: pinned load lists. */
static int careful_open(struct runner *r)
{
	void *unused;
	int rc;

	r->careful = runner_mode_offloads(r->o.mode) && r->o.host &&
		     (r->o.host->may_spill || r->o.gather_dma);
	if (!r->careful)
		return 0;
	if (r->o.gather_dma) {
		r->h_dma_idx = calloc((size_t)2 * r->n_caches * r->n_slots, sizeof(int32_t));
		r->h_dma_wb = calloc(r->n_caches, sizeof(int64_t));
		if (!r->h_dma_idx || !r->h_dma_wb)
			return runner_fail(r, -ENOMEM, "host allocation failed"), -ENOMEM;
		if ((rc = r->kb->ops->event_new(r->kb, &r->split_done)))
			return runner_fail(r, rc, "creating an event failed"), rc;
	}
	if (r->o.host->may_spill && !r->o.host->ops->forecast)
		return runner_fail(r, -EINVAL, "host store %s may spill but takes no Forecasts",
				   r->o.host->ops->name), -EINVAL;
	r->h_loads_bytes = (size_t)r->L * r->loads_ints * sizeof(int32_t);
	r->h_loads_bytes = (r->h_loads_bytes + 4095) & ~(size_t)4095;
	if (posix_memalign((void **)&r->h_loads, 4096, r->h_loads_bytes)) {
		r->h_loads = NULL;
		return runner_fail(r, -ENOMEM, "host allocation failed"), -ENOMEM;
	}
	memset(r->h_loads, 0, r->h_loads_bytes);
	r->h_units_c = calloc((size_t)r->n_caches * r->n_slots, sizeof(*r->h_units_c));
	if (!r->h_units_c)
		return runner_fail(r, -ENOMEM, "host allocation failed"), -ENOMEM;
	if ((rc = r->kb->ops->host_register(r->kb, r->h_loads, r->h_loads_bytes, &unused)))
		return runner_fail(r, rc, "registering the load-list buffer failed"), rc;
	r->loads_registered = true;
	return 0;
}

/*
 * The block-cache diff at this cache's size, once, on an empty selection (it leaves the map as
 * the next generation resets it anyway): a backend that cannot hold that many slots per cache
 * says so at open, naming --cache-slots, instead of in the first decode step.
 */
static int probe_cache_diff(struct runner *r)
{
	const struct kb_ops *k = r->kb->ops;
	uint32_t topk = r->c.sparse.topk, l = 0;
	int rc;

	while (l < r->L && r->kv[l].resident)
		l++;
	if (l == r->L)
		return 0;
	struct runner_lkv *kv = &r->kv[l];
	/* an empty cache row; unit_idx (n_caches * sel_cap >= top-k entries): an empty selection */
	if ((rc = k->memset(r->kb, kv->map, 0xff, (size_t)r->n_slots * 4, KB_STREAM_COMPUTE)) ||
	    (rc = k->memset(r->kb, r->unit_idx, 0xff, (size_t)topk * 4, KB_STREAM_COMPUTE)) ||
	    (rc = k->cache_diff(r->kb, KB_STREAM_COMPUTE, kv->map, kv->age, 0, r->unit_idx, NULL, 1,
				r->n_slots, topk, kv->load_slot, kv->load_block, kv->n_loads,
				kv->hits)) ||
	    (rc = k->sync(r->kb, KB_STREAM_COMPUTE)))
		return runner_fail(r, rc, "the block-cache diff cannot hold %u slots per cache "
				   "(--cache-slots %u, top-k %u) on this backend", r->n_slots,
				   r->o.cache_slots, topk), rc;
	return 0;
}

int runner_open(const struct model *m, struct kb *kb, const struct runner_opts *o,
		struct runner **out, char *err, size_t err_len)
{
	struct runner *r = calloc(1, sizeof(*r));
	int rc = -ENOMEM;

	if (!r)
		return -ENOMEM;
	r->m = m;
	r->kb = kb;
	r->o = *o;
	r->c = m->cfg;
	r->err = err;
	r->err_len = err_len;
	if (!o->max_batch || !o->max_tokens || (unsigned)o->mode >= RUNNER_MODE_COUNT) {
		runner_fail(r, -EINVAL, "runner: bad options (batch %u, tokens %u)", o->max_batch,
			    o->max_tokens);
		rc = -EINVAL;
		goto out_close;
	}
	derive_shapes(r);
	if ((rc = check_model(r)))
		goto out_close;
	r->lw = calloc(r->L, sizeof(*r->lw));
	r->kv = calloc(r->L, sizeof(*r->kv));
	if (!r->lw || !r->kv || (rc = alloc_host(r)))
		goto out_nomem;
	if ((rc = alloc_stats(r)))
		goto out_close;
	for (uint32_t l = 0; l < r->L; l++)
		if ((rc = upload_layer(r, l)) || (rc = alloc_layer_kv(r, l)))
			goto out_close;
	if ((rc = alloc_activations(r)) || (rc = setup_rope_and_globals(r)) ||
	    (rc = probe_cache_diff(r)) || (rc = register_host_store(r)))
		goto out_close;
	/* Pinned, so the per-step statistics copies run asynchronously behind the step. */
	void *unused;
	if ((rc = kb->ops->host_register(kb, r->h_stats, r->h_stats_bytes, &unused))) {
		runner_fail(r, rc, "registering the statistics buffer failed");
		goto out_close;
	}
	r->stats_registered = true;
	/* Pinned, so the step's one upload is a true asynchronous copy (upload_step). */
	if ((rc = kb->ops->host_register(kb, r->h_step, r->h_step_bytes, &unused))) {
		runner_fail(r, rc, "registering the step upload buffer failed");
		goto out_close;
	}
	r->step_registered = true;
	/* PREP of the next layer runs on the copy stream unless told to stay inline (A/B runs). */
	const char *ps = getenv("SPARDA_PREP_STREAM");
	r->prep_side = !(ps && strcmp(ps, "compute") == 0);
	/* Timing experiments only: every offload step but the gather's copies (wrong tokens). */
	const char *sg = getenv("SPARDA_BENCH_SKIP_GATHER");
	r->skip_gather = sg && sg[0] == '1';
	if (r->skip_gather)
		log_warn("runner", "gather disabled for a timing experiment",
			 "env=SPARDA_BENCH_SKIP_GATHER tokens=wrong");
	if ((rc = kb->ops->event_new(kb, &r->f_read))) {
		runner_fail(r, rc, "event creation failed");
		goto out_close;
	}
	if ((rc = careful_open(r)))
		goto out_close;
	if ((rc = runner_recall_open(r)) || (rc = runner_phase_open(r)) ||
	    (rc = kb->ops->sync(kb, KB_STREAM_COMPUTE)))
		goto out_close;
	r->st.mode = o->mode;
	r->st.n_layers = r->L;
	*out = r;
	return 0;
out_nomem:
	rc = rc ? rc : -ENOMEM;
	runner_fail(r, rc, "host allocation failed");
out_close:
	runner_close(r);
	return rc;
}

static void free_dev(struct runner *r, void *p)
{
	if (p)
		r->kb->ops->free(r->kb, p);
}

void runner_close(struct runner *r)
{
	if (!r)
		return;
	const struct kb_ops *k = r->kb->ops;
	runner_close_host_seqs(r);
	k->sync(r->kb, KB_STREAM_DMA);
	k->sync(r->kb, KB_STREAM_COPY);
	k->sync(r->kb, KB_STREAM_COMPUTE);
	for (uint32_t l = 0; r->lw && l < r->L; l++) {
		struct runner_lw *w = &r->lw[l];
		void *wp[] = { w->attn_norm, w->ffn_norm, w->wqkvf, w->wo, w->wgu, w->wdown };
		for (size_t i = 0; i < sizeof(wp) / sizeof(wp[0]); i++)
			free_dev(r, wp[i]);
	}
	for (uint32_t l = 0; r->kv && l < r->L; l++) {
		struct runner_lkv *kv = &r->kv[l];
		void *kp[] = { kv->store, kv->cache, kv->map, kv->ck, kv->ring, kv->sel,
			       kv->n_loads, kv->dst_idx, kv->word_base, kv->age };
		for (size_t i = 0; i < sizeof(kp) / sizeof(kp[0]); i++)
			free_dev(r, kp[i]);
		struct kb_event *ev[] = { kv->ready, kv->done, kv->want, kv->resolved };
		for (size_t i = 0; i < 4; i++)
			if (ev[i])
				k->event_free(r->kb, ev[i]);
	}
	if (r->f_read)
		k->event_free(r->kb, r->f_read);
	struct kb_event *kv_ev[] = {r->kv_qkvf, r->kv_packed[0], r->kv_packed[1], r->split_done};
	for (size_t i = 0; i < 4; i++)
		if (kv_ev[i])
			k->event_free(r->kb, kv_ev[i]);
	free_dev(r, r->p_uidx_side);
	free(r->h_uidx_side);
	void *gp[] = { r->embed, r->norm, r->lm_head == r->embed ? NULL : r->lm_head, r->inv_freq,
		       r->resid, r->logits, r->xn, r->qkvf, r->attn, r->tmp, r->gu, r->ffo,
		       r->scores, r->step_dev, r->tail_idx, r->tail_len, r->argmax, r->unit_idx,
		       r->unit_len, r->wb_dst, r->stats_dev, r->iota, r->neg1, r->attn_work, r->p_resid, r->p_xn, r->p_qkvf[0],
		       r->p_qkvf[1], r->p_attn, r->p_tmp, r->p_gu, r->p_ffo, r->p_pos, r->p_ids, r->p_sel,
		       r->p_uidx, r->p_work };
	for (size_t i = 0; i < sizeof(gp) / sizeof(gp[0]); i++)
		free_dev(r, gp[i]);
	if (r->arena_registered)
		k->host_unregister(r->kb, r->o.host->arena);
	if (r->words_registered)
		k->host_unregister(r->kb, (void *)r->o.host->words);
	if (r->stats_registered)
		k->host_unregister(r->kb, r->h_stats);
	if (r->step_registered)
		k->host_unregister(r->kb, r->h_step);
	if (r->loads_registered)
		k->host_unregister(r->kb, r->h_loads);
	free(r->h_loads);
	free(r->h_units_c);
	runner_recall_close(r);
	runner_phase_close(r);
	free(r->lw);
	free(r->kv);
	free(r->h_i32);
	free(r->h_arena_tail);
	free(r->tail_ahead);
	free(r->h_stats);
	free(r->h_step);
	free(r->h_units);
	free(r->h_blocks);
	free(r->h_flag);
	free(r->seq_handle);
	free(r->seq_word_base);
	free(r->h_dma_idx);
	free(r->h_dma_wb);
	free(r->len);
	free(r->full);
	free(r->h_logits);
	free(r->st.layer);
	free(r);
}

const struct runner_stats *runner_get_stats(const struct runner *r)
{
	return &r->st;
}
