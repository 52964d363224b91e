/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One decode step for the batch (DESIGN 3.3). Per layer: fused QKVF, RoPE, compressed keys;
 * selection for this layer (original selector) or PREP of layer l+1 (Forecast); the diff
 * against the layer's GPU cache and the gather from the host store (inside the layer, at the
 * start of the next layer, or overlapped on the copy stream); the token's K/V into the tail
 * slot (written back and committed when its block fills); attention over the selected units in
 * ascending block order; O projection and FFN.
 */
#include <errno.h>
#include <stdlib.h>

#include "runner_internal.h"
#include "timeutil.h"

/* rc = a host store's call of kind `what`, its host time counted in the decode's store time. */
#define STORE_TIMED(r, rc, what, call)                                                             \
	do {                                                                                       \
		uint64_t t0_ = time_now_ns();                                                      \
		(rc) = (call);                                                                     \
		double s_ = time_since_s(t0_);                                                     \
		(r)->st.decode_store_s += s_;                                                      \
		(r)->st.store_call_s[what] += s_;                                                  \
		(r)->st.store_calls[what]++;                                                       \
	} while (0)

struct step {
	uint32_t B, nc;
	bool sparse;        /* selection restricts attention this step */
	uint32_t k;         /* entries per cache in this step's selection */
	uint32_t max_blk;   /* largest block count in the batch */
	bool any_new_block, any_full_block;
	bool *full;         /* [B] block of sequence i fills with this token */
};

static int upload_step(struct runner *r, struct step *s, const int32_t *ids)
{
	const struct kb_sparse *sp = &r->c.sparse;
	uint32_t max_tok = 0;
	int32_t *h = r->h_i32;
	int rc;

	s->max_blk = 0;
	s->any_new_block = s->any_full_block = false;
	for (uint32_t i = 0; i < s->B; i++) {
		uint32_t pos = r->len[i], blk = pos / sp->block + 1;
		max_tok = pos + 1 > max_tok ? pos + 1 : max_tok;
		s->max_blk = blk > s->max_blk ? blk : s->max_blk;
		s->full[i] = (pos + 1) % sp->block == 0;
		s->any_full_block |= s->full[i];
		s->any_new_block |= pos % sp->block == 0;
	}
	/* A batch attends sparsely once its longest sequence reaches dense_len: shorter ones then
	 * select top-k too (all their blocks while they have no more than top-k), so a ragged
	 * batch never needs more cache slots than top-k. */
	s->sparse = r->o.mode != RUNNER_MODE_DENSE && max_tok >= r->c.dense_len;
	s->k = s->sparse ? sp->topk : (r->o.mode == RUNNER_MODE_DENSE ? s->max_blk : r->n_slots);
	if (!s->sparse && r->o.mode != RUNNER_MODE_DENSE && s->max_blk > r->n_slots)
		return runner_fail(r, -EINVAL, "dense step over %u blocks exceeds %u cache slots",
				   s->max_blk, r->n_slots), -EINVAL;

	/* One copy of the step's arrays from the pinned h_step into step_dev, laid out alike
	 * ([max_batch] each, then [n_caches] each). No sync: h_step is next written by the next
	 * step, after this step's sampling synchronised the compute stream. */
	int32_t *st = r->h_step;
	size_t MB = r->o.max_batch, MC = r->n_caches;
	for (uint32_t i = 0; i < s->B; i++) {
		uint32_t len = r->len[i];
		st[i] = ids[i];
		st[MB + i] = (int32_t)len;
		st[2 * MB + i] = (int32_t)len + 1;
		st[3 * MB + i] = (int32_t)kb_ck_entries(sp, len + 1);
		st[4 * MB + i] = (int32_t)kb_ck_entries(sp, len);
		st[5 * MB + i] = (int32_t)(len / sp->block + 1);
	}
	for (uint32_t i = 0; i < s->nc; i++) {
		uint32_t blk = r->len[i / r->n_kv] / sp->block;
		st[6 * MB + i] = (int32_t)blk;
		st[6 * MB + MC + i] = (int32_t)(i * r->max_blocks + blk);
	}
	if ((rc = r->kb->ops->memcpy(r->kb, r->step_dev, st, r->step_words * 4, KB_H2D,
				     KB_STREAM_COMPUTE)))
		return rc;
	if (!s->sparse && r->o.mode != RUNNER_MODE_DENSE) {
		uint32_t n = s->nc * r->n_slots;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t slot = i % r->n_slots;
			h[i] = slot < r->len[i / r->n_slots / r->n_kv] / sp->block + 1 ? (int32_t)slot
										 : -1;
		}
		/* the host scratch is reused by the next upload: make this copy land first */
		if ((rc = runner_upload_i32(r, r->iota, h, n)) ||
		    (rc = r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE)))
			return rc;
	}
	return 0;
}

/* The units (sequence i, offloaded layer, head, block) of every sequence whose flag is set. */
static uint32_t list_block_units(struct runner *r, struct step *s, const bool *which,
				 const uint32_t *block)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->B; i++) {
		if (!which[i])
			continue;
		for (uint32_t l = 0; l < r->L; l++) {
			if (r->kv[l].resident)
				continue;
			for (uint32_t g = 0; g < r->n_kv; g++)
				r->h_units[n++] = (struct kvhost_unit){ .seq = r->seq_handle[i],
									.layer = l, .head = g,
									.block = block[i] };
		}
	}
	return n;
}

/*
 * New blocks: every offloaded (layer, head) gets an arena slot, in one request. The slot of a
 * block must be allocated before the step that starts it resolves its selection (the tail
 * block's word must read allocated). `ahead` (while the GPU finishes a step): the blocks the
 * next step starts, those of the sequences whose block this step fills, so that step does not
 * wait for the request; their tail slots are free to overwrite, as the write-back destinations
 * of this step were uploaded at its start. Not with an NVMe tier: there an allocation may wait
 * for slots whose lease this step's epoch releases, which is published after the step. Otherwise
 * (a step's start): the blocks it starts that were not allocated ahead.
 */
static int alloc_new_blocks(struct runner *r, struct step *s, bool ahead)
{
	const struct kb_sparse *sp = &r->c.sparse;
	struct kvhost *h = r->o.host;
	uint32_t *blocks = r->h_blocks;
	bool *start = r->h_flag;
	int rc;

	if (!(ahead ? s->any_full_block && !h->may_spill : s->any_new_block))
		return 0;
	for (uint32_t i = 0; i < s->B; i++) {
		uint32_t pos = r->len[i] + ahead;
		blocks[i] = pos / sp->block;
		start[i] = pos % sp->block == 0 && blocks[i] < r->max_blocks &&
			   (ahead || r->tail_ahead[i] != blocks[i]);
	}
	uint32_t n = list_block_units(r, s, start, blocks);
	if (!n)
		return 0;
	STORE_TIMED(r, rc, RUNNER_STORE_ALLOC, h->ops->alloc_units(h, r->h_units, n, r->h_i32));
	if (rc)
		return runner_fail(r, rc, "host store: allocating %u new blocks failed", n), rc;
	for (uint32_t i = 0; ahead && i < s->B; i++)
		if (start[i])
			r->tail_ahead[i] = blocks[i];
	for (uint32_t k = 0; k < n; k++) {
		const struct kvhost_unit *u = &r->h_units[k];
		uint32_t i = 0;
		while (r->seq_handle[i] != u->seq)
			i++;
		r->h_arena_tail[(size_t)u->layer * r->n_caches + i * r->n_kv + u->head] = r->h_i32[k];
	}
	return 0;
}

/*
 * In a step where blocks fill: every offloaded layer's write-back destinations (the tail
 * block's arena slot of each cache whose sequence fills, else -1), from the pinned h_step after
 * the step's arrays, in one copy. Nothing waits on it: h_step is rewritten only after the
 * step's sampling synchronised the compute stream.
 */
static int upload_write_back(struct runner *r, struct step *s)
{
	size_t nc = r->n_caches;
	int32_t *h = r->h_step + r->step_words;

	if (!s->any_full_block)
		return 0;
	for (uint32_t l = 0; l < r->L; l++)
		for (uint32_t i = 0; i < nc; i++)
			h[l * nc + i] = !r->kv[l].resident && i < s->nc && s->full[i / r->n_kv]
					    ? r->h_arena_tail[l * nc + i]
					    : -1;
	return r->kb->ops->memcpy(r->kb, r->wb_dst, h, r->L * nc * 4, KB_H2D, KB_STREAM_COMPUTE);
}

/* Scores + pooling + top-k into sel from queries q (Forecast or original selector). */
static int select_into(struct runner *r, struct step *s, enum kb_stream st, int32_t *sel,
		       const uint16_t *q, uint32_t lck, const int32_t *n_ent, bool original)
{
	const struct kb_ops *k = r->kb->ops;
	int rc = k->score_decode(r->kb, st, r->scores, q, r->qkvf_cols, r->kv[lck].ck, r->ck_cap,
				 n_ent, s->B, original ? r->n_q : r->n_kv, r->n_kv, r->hd,
				 original, r->attn_scale);
	if (rc)
		return rc;
	return k->select_decode(r->kb, st, sel, r->scores, r->ck_cap, n_ent, r->n_blk, s->B,
				r->n_kv, &r->c.sparse);
}

/* The selection a layer attends over: its own array, or every block in dense steps. */
static const int32_t *layer_sel(struct runner *r, struct step *s, uint32_t l)
{
	if (r->o.mode == RUNNER_MODE_DENSE)
		return NULL;
	return s->sparse ? r->kv[l].sel : r->iota;
}

/* Diff layer l's cache against its selection: the load list. */
static int diff_loads(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	struct runner_lkv *kv = &r->kv[l];
	return r->kb->ops->cache_diff(r->kb, st, kv->map, kv->age, (int32_t)r->step,
				      layer_sel(r, s, l), r->neg1, s->nc, r->n_slots, s->k,
				      kv->load_slot, kv->load_block, kv->n_loads, kv->hits);
}

/* The load list to arena slots through the residency words (misses counted). */
static int resolve(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	struct runner_lkv *kv = &r->kv[l];
	return r->kb->ops->resolve_loads(r->kb, st, kv->dst_idx, kv->src_idx, r->misses,
					 kv->load_slot, kv->load_block, kv->n_loads, r->words_dev,
					 kv->word_base, s->nc, r->n_slots, s->k);
}

static int diff_and_resolve(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	int rc = diff_loads(r, s, l, st);
	return rc ? rc : resolve(r, s, l, st);
}

static int gather(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	struct runner_lkv *kv = &r->kv[l];
	kv->loaded = true;
	kv->dma = false;
	if (r->skip_gather) /* measurement only: everything but the copies (tokens will differ) */
		return 0;
	return (r->o.gather_bulk ? r->kb->ops->copy_units_bulk : r->kb->ops->copy_units)(
	    r->kb, st, kv->cache, r->arena_dev, kv->dst_idx, kv->src_idx, s->nc * s->k,
	    r->unit_bytes, r->o.gather_ctas);
}

static int32_t *layer_loads(struct runner *r, uint32_t l);
static uint32_t count_nonneg(const int32_t *v, uint32_t n);

/* gather_dma: the units of a layer's fetch the copy engines take (UINT64_MAX: all; 0: a cap
 * under one unit, every fetch the device's way). */
static uint64_t dma_take(const struct runner *r)
{
	return r->o.dma_max_bytes ? r->o.dma_max_bytes / r->unit_bytes : UINT64_MAX;
}

/* gather_dma's copies: the copy engines' first `cut` entries, and a split's device part. */
static int queue_dma(struct runner *r, struct step *s, uint32_t l, enum kb_stream st, size_t cut)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];
	size_t nk = (size_t)s->nc * s->k;
	int32_t *dst = r->h_dma_idx, *src = dst + (size_t)r->n_caches * r->n_slots;
	int rc;

	if (kv->dma_loads &&
	    (rc = k->copy_units_dma(r->kb, st, kv->cache, r->arena_dev, dst, src, (uint32_t)cut,
				    r->unit_bytes, r->o.dma_streams)))
		return rc;
	if (!kv->dma_split)
		return 0;
	if ((rc = resolve(r, s, l, KB_STREAM_COPY)) ||
	    (rc = (r->o.gather_bulk ? k->copy_units_bulk : k->copy_units)(
		 r->kb, KB_STREAM_COPY, kv->cache, r->arena_dev, kv->dst_idx + cut,
		 kv->src_idx + cut, (uint32_t)(nk - cut), r->unit_bytes, r->o.gather_ctas)) ||
	    (rc = k->event_record(r->kb, r->split_done, KB_STREAM_COPY)))
		return rc;
	return k->stream_wait(r->kb, st, r->split_done);
}

/*
 * gather_dma: layer l's load list (on the host) resolved through the residency words into
 * copy lists, queued as copy-engine copies on stream st. A load whose unit is not resident
 * counts as a miss (an error at the end of the step, never stale data), unless the unit is
 * ALLOCATED (a block this client is still writing).
 *
 * With dma_max_bytes, the copy engines take the first units of the list up to it. The rest, if
 * any (a split fetch), go the device's way beside them: the device resolves the whole list
 * again on the copy stream (counting the misses there), and the bulk copy (or the gather
 * kernel) moves the entries from the first the copy engines left; stream st waits for both.
 */
static int gather_dma(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	struct runner_lkv *kv = &r->kv[l];
	size_t nk = (size_t)s->nc * s->k, cut = nk;
	uint64_t take = dma_take(r);
	int32_t misses = 0;
	const int32_t *nl = layer_loads(r, l), *blk = nl + r->loads_blk, *slot = nl + r->loads_slot;
	int32_t *dst = r->h_dma_idx, *src = dst + (size_t)r->n_caches * r->n_slots;
	int64_t *wb = r->h_dma_wb;
	int rc;

	kv->loaded = kv->dma = true;
	for (uint32_t i = 0; i < s->nc; i++) /* the same bases as kv->word_base on the device */
		wb[i] = r->seq_word_base[i / r->n_kv] +
			((int64_t)l * r->n_kv + i % r->n_kv) * r->max_blocks;
	uint64_t t0 = time_now_ns();
	rc = kb_resolve_loads_host(dst, src, &misses, slot, blk, nl, r->o.host->words, wb, s->nc,
				   r->n_slots, s->k);
	r->st.fetch_resolve_s += time_since_s(t0);
	if (rc)
		return rc;
	kv->dma_loads = 0;
	for (size_t o = 0; o < nk; o++) {
		if (src[o] < 0 || dst[o] < 0)
			continue;
		if (kv->dma_loads == take) { /* the first entry left to the device */
			cut = o;
			break;
		}
		kv->dma_loads++;
	}
	kv->dma_split = cut < nk;
	if (!kv->dma_split) /* else the device's resolve counts them */
		r->dma_misses += misses;
	if (r->skip_gather) /* measurement only: everything but the copies */
		return 0;
	t0 = time_now_ns();
	rc = queue_dma(r, s, l, st, cut);
	r->st.fetch_enqueue_s += time_since_s(t0);
	return rc;
}

/* Careful mode: layer l's part of the pinned load lists (count, blocks, slots per cache). */
static int32_t *layer_loads(struct runner *r, uint32_t l)
{
	return r->h_loads + (size_t)l * r->loads_ints;
}

/* Careful mode: layer l's load list (counts, blocks, slots) to the host behind its diff, in
 * one copy that ends with this step's slots (the parts' layout: runner.loads_blk). */
static int loads_to_host(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];
	size_t n = r->loads_slot + (size_t)s->nc * s->k;
	int rc;

	if (!r->careful || kv->resident)
		return 0;
	if ((rc = k->memcpy(r->kb, layer_loads(r, l), kv->n_loads, n * 4, KB_D2H, st)))
		return rc;
	return k->event_record(r->kb, kv->resolved, st);
}

/* Careful mode: the units of layer l's load list (not the tail, which is never loaded). */
static uint32_t list_loads(struct runner *r, struct step *s, uint32_t l)
{
	const int32_t *nl = layer_loads(r, l);
	const int32_t *blk = nl + r->loads_blk, *slot = nl + r->loads_slot;
	uint32_t n = 0;

	for (uint32_t i = 0; i < s->nc; i++) {
		uint32_t b = i / r->n_kv, g = i % r->n_kv;
		for (uint32_t j = 0; j < s->k && (int32_t)j < nl[i]; j++) {
			size_t o = (size_t)i * s->k + j;
			if (blk[o] < 0 || slot[o] < 0 ||
			    (uint32_t)blk[o] >= r->len[b] / r->c.sparse.block)
				continue;
			r->h_units_c[n++] = (struct kvhost_unit){ .seq = r->seq_handle[b], .layer = l,
								  .head = g, .block = (uint32_t)blk[o] };
		}
	}
	return n;
}

/*
 * The host store counts decode steps from 1 (its epoch 0 means nothing read yet, and the
 * prompt's commits are step 0), so step r->step is r->step + 1 there.
 *
 * Careful mode (the host store may have moved units to its NVMe tier): wait for layer l's
 * load list, post it to the store as a Forecast (slots leased for this step, spilled units
 * restored, all resident on return), then resolve and gather on stream st. A unit that is
 * still not resident at the resolve (evicted again in between) is counted as a miss: an error
 * at the end of the step, never stale data.
 */
static int fetch_careful(struct runner *r, struct step *s, uint32_t l, enum kb_stream st)
{
	const struct kb_ops *k = r->kb->ops;
	struct kvhost *h = r->o.host;
	struct runner_lkv *kv = &r->kv[l];
	uint32_t n = 0;
	int rc;

	uint64_t t0 = time_now_ns();
	rc = k->event_sync(r->kb, kv->resolved);
	r->st.fetch_wait_s += time_since_s(t0);
	r->st.fetch_host_layers++;
	if (rc)
		return rc;
	if (h->may_spill && (n = list_loads(r, s, l)))
		STORE_TIMED(r, rc, RUNNER_STORE_FORECAST,
			    h->ops->forecast(h, r->h_units_c, n, h->step_base + r->step + 1));
	if (rc)
		return runner_fail(r, rc, "host store: Forecast of %u units of layer %u failed (%s)",
				   n, l, rc == -ENOENT ? "a unit's copy could not be read back"
						       : "the store did not answer"), rc;
	if (h->may_spill)
		r->st.units_forecast += n;
	if ((rc = k->event_record(r->kb, kv->ready, st)))
		return rc;
	if (r->o.gather_dma && dma_take(r))
		return gather_dma(r, s, l, st);
	if ((rc = resolve(r, s, l, st)))
		return rc;
	return gather(r, s, l, st);
}

/*
 * PREP(l+1) on the copy stream: the Forecast selection of layer l+1 from layer l's F, then (in
 * sparda) the diff, the resolve and the gather, all off the compute stream's critical path.
 * Layer l+1 waits `done` before its attention; the next QKVF GEMM waits f_read, after which F
 * may be overwritten. The compressed keys of l+1 it reads (entries before this token) are not
 * the ones layer l+1's ck_append writes this step.
 */
static int prep_side(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *nx = &r->kv[l + 1];
	bool fetch = r->o.mode == RUNNER_MODE_SPARDA && !nx->resident;
	int rc;

	if ((rc = k->event_record(r->kb, r->f_read, KB_STREAM_COMPUTE)) ||
	    (rc = k->stream_wait(r->kb, KB_STREAM_COPY, r->f_read)))
		return rc;
	if (s->sparse && (rc = select_into(r, s, KB_STREAM_COPY, nx->sel, r->qkvf + r->f_off,
					   l + 1, r->n_ent0, false)))
		return rc;
	if ((rc = k->event_record(r->kb, r->f_read, KB_STREAM_COPY)))
		return rc;
	r->f_pending = true;
	if (fetch && r->careful) { /* resolve and gather wait for the host's Forecast */
		nx->pending = true;
		if ((rc = diff_loads(r, s, l + 1, KB_STREAM_COPY)) ||
		    (rc = loads_to_host(r, s, l + 1, KB_STREAM_COPY)))
			return rc;
	} else if (fetch && ((rc = k->event_record(r->kb, nx->ready, KB_STREAM_COPY)) ||
			     (rc = diff_and_resolve(r, s, l + 1, KB_STREAM_COPY)) ||
			     (rc = gather(r, s, l + 1, KB_STREAM_COPY)))) {
		return rc;
	}
	nx->prepped = true;
	return k->event_record(r->kb, nx->done, KB_STREAM_COPY);
}

/* Selection (and fetch) work that happens inside layer l before its attention. */
static int layer_select(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	enum runner_mode m = r->o.mode;
	struct runner_lkv *kv = &r->kv[l];
	int rc = 0;

	if (m == RUNNER_MODE_SPARSE || m == RUNNER_MODE_SPARSE_OFFLOAD) {
		if (s->sparse && (rc = select_into(r, s, KB_STREAM_COMPUTE, kv->sel, r->qkvf, l,
						   r->n_ent, true)))
			return rc;
	} else if (runner_mode_forecast(m) && l == 0 && s->sparse) {
		rc = select_into(r, s, KB_STREAM_COMPUTE, kv->sel, r->qkvf + r->fc_off, 0,
				 r->n_ent, false);
		if (rc)
			return rc;
	}
	if (runner_mode_forecast(m) && l + 1 < r->L) { /* PREP(l+1) */
		struct runner_lkv *nx = &r->kv[l + 1];
		if (r->prep_side &&
		    (m == RUNNER_MODE_SPARDA || m == RUNNER_MODE_SPARDA_NOOFFLOAD)) {
			if ((rc = prep_side(r, s, l)))
				return rc;
		} else {
			if (s->sparse && (rc = select_into(r, s, KB_STREAM_COMPUTE, nx->sel,
							   r->qkvf + r->f_off, l + 1, r->n_ent0,
							   false)))
				return rc;
			if (m == RUNNER_MODE_SPARDA && !nx->resident) {
				if (r->careful) {
					nx->pending = nx->prepped = true;
					if ((rc = diff_loads(r, s, l + 1, KB_STREAM_COMPUTE)) ||
					    (rc = loads_to_host(r, s, l + 1, KB_STREAM_COMPUTE)))
						return rc;
				} else if ((rc = diff_and_resolve(r, s, l + 1, KB_STREAM_COMPUTE)) ||
				    (rc = k->event_record(r->kb, nx->ready, KB_STREAM_COMPUTE)) ||
				    (rc = k->stream_wait(r->kb, KB_STREAM_COPY, nx->ready)) ||
				    (rc = gather(r, s, l + 1, KB_STREAM_COPY)) ||
				    (rc = k->event_record(r->kb, nx->done, KB_STREAM_COPY)))
					return rc;
				nx->prepped = true;
			}
		}
	}
	if (m == RUNNER_MODE_SPARSE_OFFLOAD || m == RUNNER_MODE_SPARDA_NOPREFETCH) {
		if (kv->resident)
			return 0;
		if (r->careful && ((rc = diff_loads(r, s, l, KB_STREAM_COMPUTE)) ||
				   (rc = loads_to_host(r, s, l, KB_STREAM_COMPUTE)) ||
				   (rc = fetch_careful(r, s, l, KB_STREAM_COMPUTE))))
			return rc;
		if (!r->careful && ((rc = k->event_record(r->kb, kv->ready, KB_STREAM_COMPUTE)) ||
				    (rc = diff_and_resolve(r, s, l, KB_STREAM_COMPUTE)) ||
				    (rc = gather(r, s, l, KB_STREAM_COMPUTE))))
			return rc;
		if ((rc = k->event_record(r->kb, kv->done, KB_STREAM_COMPUTE)))
			return rc;
	} else if (kv->prepped) {
		/* wait for its fetch: PREP's gather, or in careful mode fetch_pending's */
		if ((rc = k->event_record(r->kb, kv->want, KB_STREAM_COMPUTE)) ||
		    (rc = k->stream_wait(r->kb, KB_STREAM_COMPUTE, kv->done)))
			return rc;
	}
	return 0;
}

/*
 * The attention's unit table: a resident layer's from its selection; an offloaded layer's
 * through its cache's slot map, and with it (one read of the map) the slot its tail block is
 * written to.
 */
static int layer_units(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];
	uint32_t blk = r->c.sparse.block;

	if (kv->resident)
		return k->sel_units(r->kb, KB_STREAM_COMPUTE, r->unit_idx, r->unit_len,
				    layer_sel(r, s, l), NULL, r->n_tok, s->nc, r->n_kv,
				    r->max_blocks, s->k, blk);
	return k->sel_units2(r->kb, KB_STREAM_COMPUTE, r->unit_idx, r->unit_len, layer_sel(r, s, l),
			     s->k, r->tail_idx, r->tail_len, r->tail_sel, 1, kv->map, r->n_tok,
			     s->nc, r->n_kv, r->n_slots, blk);
}

/* This token's K/V into the layer's store or tail slot; write back blocks that fill. */
static int layer_store_kv(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];
	const uint16_t *kk = r->qkvf + r->q_cols, *vv = kk + r->kv_cols;
	uint32_t blk = r->c.sparse.block;
	uint32_t n_wb = 0;
	int rc;

	if (kv->resident)
		return k->kv_store(r->kb, KB_STREAM_COMPUTE, kv->store, r->store_idx, kk, vv,
				   r->qkvf_cols, r->pos, s->B, r->n_kv, r->hd, blk);
	if ((rc = k->kv_store(r->kb, KB_STREAM_COMPUTE, kv->cache, r->tail_idx, kk, vv,
			      r->qkvf_cols, r->pos, s->B, r->n_kv, r->hd, blk)))
		return rc;
	if (!s->any_full_block)
		return 0;
	for (uint32_t i = 0; i < s->nc; i++)
		n_wb += s->full[i / r->n_kv];
	/* the destinations came with the step (upload_write_back); committed after the step */
	if ((rc = k->copy_units(r->kb, KB_STREAM_COMPUTE, r->arena_dev, kv->cache,
				r->wb_dst + (size_t)l * r->n_caches, r->tail_idx, s->nc,
				r->unit_bytes, r->o.gather_ctas)))
		return rc;
	r->st.bytes_d2h += (uint64_t)n_wb * r->unit_bytes;
	r->st.units_written += n_wb;
	return 0;
}

/* Sparse attention over the unit table of layer_units. */
static int layer_attend(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];

	return k->attn_decode(r->kb, KB_STREAM_COMPUTE, r->attn, r->q_cols, r->qkvf, r->qkvf_cols,
			      kv->resident ? kv->store : kv->cache, r->unit_idx, r->unit_len, s->k,
			      s->B, r->n_q, r->n_kv, r->hd, r->c.sparse.block, r->attn_scale,
			      r->attn_work);
}

/*
 * Careful mode, before layer l's work is queued: the fetch its PREP (queued in layer l-1) left
 * to the host. The host waits for the load list (on the GPU, early in layer l-1), and the copy
 * stream gets the fetch while layer l-1's attention and FFN run. Queued later, in layer l's
 * selection, it would sit behind PREP(l+1) on the copy stream, which waits for layer l's QKVF:
 * the fetch would start only as layer l wants it. The copy engines' copies (gather_dma) go on
 * a stream of their own, so PREP(l+1)'s kernels need not wait for them; the host's wait for
 * the load list has already ordered them after PREP(l)'s diff.
 */
static int fetch_pending(struct runner *r, struct step *s, uint32_t l)
{
	struct runner_lkv *kv = &r->kv[l];
	enum kb_stream st = r->o.gather_dma ? KB_STREAM_DMA : KB_STREAM_COPY;
	int rc;

	if (!kv->pending)
		return 0;
	kv->pending = false;
	if ((rc = fetch_careful(r, s, l, st)))
		return rc;
	return r->kb->ops->event_record(r->kb, kv->done, st);
}

static int decode_layer(struct runner *r, struct step *s, uint32_t l)
{
	const struct kb_ops *k = r->kb->ops;
	const struct model_config *c = &r->c;
	struct runner_lw *w = &r->lw[l];
	uint32_t H = r->hidden, F = r->ffn, B = s->B, ld = r->qkvf_cols;

	if (r->f_pending) { /* the copy stream may still read the previous layer's F */
		RUN_TRY(r, k->stream_wait(r->kb, KB_STREAM_COMPUTE, r->f_read), fail);
		r->f_pending = false;
	}
	RUN_TRY(r, fetch_pending(r, s, l), fail);

	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->resid, l ? r->tmp : NULL, H,
				  c->residual_scale, w->attn_norm, r->xn, B, H, c->rms_eps), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, B, ld, H, r->xn, H, w->wqkvf, H, r->qkvf, ld,
			   false, 1.0f, 0.0f), fail);
	RUN_TRY(r, k->rope(r->kb, KB_STREAM_COMPUTE, r->qkvf, ld, B, r->n_q + r->n_kv, r->hd, r->pos,
			   r->inv_freq, r->rope_mscale), fail);
	if (r->has_f)
		RUN_TRY(r, k->rope(r->kb, KB_STREAM_COMPUTE, r->qkvf + r->f_off, ld, B,
				   l == 0 ? 2 * r->n_kv : r->n_kv, r->hd, r->pos, r->inv_freq,
				   r->rope_mscale), fail);
	RUN_TRY(r, k->ck_append(r->kb, KB_STREAM_COMPUTE, r->kv[l].ck, r->ck_cap, r->kv[l].ring,
				r->qkvf + r->q_cols, ld, r->pos, B, r->n_kv, r->hd, &c->sparse),
		fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_QKVF), fail);
	RUN_TRY(r, layer_select(r, s, l), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_SELECT), fail);
	RUN_TRY(r, runner_recall_layer(r, l, B, s->sparse), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_RECALL), fail);
	RUN_TRY(r, layer_units(r, s, l), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_UNITS), fail);
	RUN_TRY(r, layer_store_kv(r, s, l), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_STORE_KV), fail);
	RUN_TRY(r, layer_attend(r, s, l), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_ATTEND), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, B, H, r->q_cols, r->attn, r->q_cols, w->wo,
			   r->q_cols, r->tmp, H, false, 1.0f, 0.0f), fail);
	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->resid, r->tmp, H, c->residual_scale,
				  w->ffn_norm, r->xn, B, H, c->rms_eps), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, B, 2 * F, H, r->xn, H, w->wgu, H, r->gu, 2 * F,
			   false, 1.0f, 0.0f), fail);
	RUN_TRY(r, k->swiglu(r->kb, KB_STREAM_COMPUTE, r->ffo, r->gu, B, F), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, B, H, F, r->ffo, F, w->wdown, F, r->tmp, H,
			   false, 1.0f, 0.0f), fail);
	RUN_TRY(r, runner_phase_end(r, l, RUNNER_PHASE_FFN), fail);
	return 0;
fail:
	return r->err_rc ? r->err_rc : -EIO;
}

static uint32_t count_nonneg(const int32_t *v, uint32_t n)
{
	uint32_t c = 0;
	for (uint32_t i = 0; i < n; i++)
		c += v[i] >= 0;
	return c;
}

/* Queue the read-back of this step's per-layer figures (into the pinned h_stats) behind the
 * step's work, so it completes with the sampling sync instead of costing syncs of its own:
 * one copy of stats_dev from the first offloaded layer's part to the miss counter. */
static int enqueue_stats(struct runner *r)
{
	size_t first = (size_t)r->stats_first * r->stats_per;
	size_t n = (size_t)r->L * r->stats_per + 1 - first;

	return r->kb->ops->memcpy(r->kb, r->h_stats + first, r->stats_dev + first, n * 4, KB_D2H,
				  KB_STREAM_COMPUTE);
}

/* Per-layer hit/load/late figures of this step, once the step (and enqueue_stats) is done. */
static int collect_stats(struct runner *r, struct step *s)
{
	const struct kb_ops *k = r->kb->ops;
	uint32_t n = s->nc * s->k;
	int32_t misses;
	int rc;

	if ((rc = k->sync(r->kb, KB_STREAM_COMPUTE)))
		return rc;
	misses = r->h_stats[(size_t)r->L * r->stats_per] + r->dma_misses;
	r->dma_misses = 0;
	for (uint32_t l = 0; l < r->L; l++) {
		struct runner_layer_stats *ls = &r->st.layer[l];
		struct runner_lkv *kv = &r->kv[l];
		const int32_t *h = r->h_stats + (size_t)l * r->stats_per; /* hits, src_idx */
		for (uint32_t i = 0; i < s->B; i++) {
			uint32_t nb = r->len[i] / r->c.sparse.block + 1;
			ls->selected += (uint64_t)r->n_kv * (nb < s->k ? nb : s->k);
		}
		if (kv->resident || !kv->loaded)
			continue;
		float fetch = 0.0f;
		if ((rc = k->event_elapsed(r->kb, kv->ready, kv->done, &fetch)))
			return rc;
		ls->fetch_ms += fetch > 0.0f ? fetch : 0.0f;
		for (uint32_t i = 0; i < s->nc; i++)
			ls->hits += (uint64_t)h[i];
		/* a split fetch's device resolve left the whole list in stats_dev */
		uint32_t fetched =
		    kv->dma && !kv->dma_split ? kv->dma_loads : count_nonneg(h + r->n_caches, n);
		ls->loads += fetched;
		r->st.units_dma += kv->dma ? kv->dma_loads : 0;
		r->st.bytes_h2d += (uint64_t)fetched * r->unit_bytes;
		if (r->o.mode == RUNNER_MODE_SPARDA) {
			float ms = 0.0f;
			if ((rc = k->event_elapsed(r->kb, kv->want, kv->done, &ms)))
				return rc;
			if (ms > 0.0f) {
				ls->late_steps++;
				ls->late_units += fetched;
				ls->late_ms += ms;
			}
		}
	}
	if (misses)
		return runner_fail(r, -ENODATA, "%d selected units were not resident in the host "
				   "store", misses), -ENODATA;
	return 0;
}

/* A liveness round trip every 16 steps; block allocations and commits also notice. */
static int check_health(struct runner *r)
{
	int rc;

	if (r->step % 16)
		return 0;
	STORE_TIMED(r, rc, RUNNER_STORE_HEALTH, r->o.host->ops->health(r->o.host));
	if (rc)
		return runner_fail(r, rc, "host store (%s) is not available", r->o.host->ops->name),
		       rc;
	return 0;
}

/* Commit the blocks that filled this step, now that their write-back copies completed. */
static int commit_full_blocks(struct runner *r, struct step *s)
{
	uint32_t *blocks = r->h_blocks;
	int rc;

	if (!s->any_full_block)
		return 0;
	for (uint32_t i = 0; i < s->B; i++)
		blocks[i] = r->len[i] / r->c.sparse.block;
	uint32_t n = list_block_units(r, s, s->full, blocks);
	if (!n)
		return 0;
	STORE_TIMED(r, rc, RUNNER_STORE_COMMIT,
		    r->o.host->ops->commit_units(r->o.host, r->h_units, n));
	if (rc)
		return runner_fail(r, rc, "host store: committing %u filled blocks failed", n), rc;
	return 0;
}

int runner_decode_step(struct runner *r, uint32_t batch, const int32_t *ids, int32_t *next,
		       float *logits_out, const struct runner_sampling *smp)
{
	const struct kb_ops *k = r->kb->ops;
	const struct model_config *c = &r->c;
	struct step s = { .B = batch, .nc = batch * r->n_kv, .full = r->full };
	bool offload = runner_mode_offloads(r->o.mode);
	int rc;

	if ((rc = upload_step(r, &s, ids)) ||
	    (offload && ((rc = alloc_new_blocks(r, &s, false)) || (rc = upload_write_back(r, &s)))))
		return rc;
	RUN_TRY(r, runner_phase_step_start(r), fail);
	RUN_TRY(r, k->memset(r->kb, r->misses, 0, 4, KB_STREAM_COMPUTE), fail);
	RUN_TRY(r, k->embed(r->kb, KB_STREAM_COMPUTE, r->resid, r->embed, r->ids, batch, r->hidden,
			    r->vocab, c->scale_emb), fail);
	RUN_TRY(r, runner_phase_end(r, 0, RUNNER_PHASE_EMBED), fail);
	for (uint32_t l = 0; l < r->L; l++)
		r->kv[l].loaded = r->kv[l].prepped = r->kv[l].pending = false;
	r->f_pending = false;
	for (uint32_t l = 0; l < r->L; l++)
		if ((rc = decode_layer(r, &s, l)))
			return rc;
	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->resid, r->tmp, r->hidden,
				  c->residual_scale, r->norm, r->xn, batch, r->hidden, c->rms_eps),
		fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, batch, r->vocab, r->hidden, r->xn, r->hidden,
			   r->lm_head, r->hidden, r->logits, r->vocab, true, c->logit_scale, 0.0f),
		fail);
	RUN_TRY(r, enqueue_stats(r), fail);
	RUN_TRY(r, runner_phase_end(r, 0, RUNNER_PHASE_HEAD), fail);
	/* The step is queued: the host store's calls that nothing in it waits for run while the
	 * GPU finishes it, instead of before its first kernel. */
	if (offload && ((rc = check_health(r)) || (rc = alloc_new_blocks(r, &s, true))))
		return rc;
	RUN_TRY(r, runner_sample(r, r->logits, batch, smp, next), fail);
	RUN_TRY(r, k->sync(r->kb, KB_STREAM_COPY), fail);
	RUN_TRY(r, k->sync(r->kb, KB_STREAM_DMA), fail);
	if (offload) {
		if ((rc = collect_stats(r, &s)) || (rc = commit_full_blocks(r, &s)))
			return rc;
		STORE_TIMED(r, rc, RUNNER_STORE_EPOCH,
			    r->o.host->ops->epoch(r->o.host, r->o.host->step_base + r->step + 1));
		if (rc)
			return rc;
	} else if ((rc = collect_stats(r, &s))) {
		return rc;
	}
	if ((rc = runner_phase_collect(r)))
		return rc;
	if (logits_out)
		RUN_TRY(r, k->memcpy(r->kb, logits_out, r->logits, (size_t)batch * r->vocab * 4,
				     KB_D2H, KB_STREAM_COMPUTE), fail);
	r->step++;
	return 0;
fail:
	return r->err_rc ? r->err_rc : -EIO;
}
