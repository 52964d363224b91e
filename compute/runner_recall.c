/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Forecast recall at run time: on sampled decode steps of the Forecast modes, each layer's
 * real query and Forecast selection are copied aside; after the step the original selector
 * runs on them (the selection `sparse` mode would make) and the share of its blocks that the
 * Forecast had picked is accumulated per layer. Forced blocks (sink and local window) are left
 * out of both sets. The generated tokens are unchanged: the extra selection writes only this
 * module's buffers, and the pipeline's timing is not disturbed beyond two small copies a layer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runner_internal.h"

int runner_recall_open(struct runner *r)
{
	const struct kb_ops *k = r->kb->ops;
	size_t per = (size_t)r->n_caches * r->c.sparse.topk;
	void *unused;
	int rc;

	if (!r->o.recall_every || !runner_mode_forecast(r->o.mode))
		return 0;
	r->rc_bytes = (2 * (size_t)r->L * per * sizeof(int32_t) + 4095) & ~(size_t)4095;
	if (posix_memalign((void **)&r->rc_host, 4096, r->rc_bytes)) {
		r->rc_host = NULL;
		return runner_fail(r, -ENOMEM, "recall buffers: host allocation failed"), -ENOMEM;
	}
	memset(r->rc_host, 0, r->rc_bytes);
	r->rc_pending = calloc(r->L, sizeof(bool));
	r->rc_mark = calloc(r->max_blocks, sizeof(uint32_t));
	if (!r->rc_pending || !r->rc_mark)
		return runner_fail(r, -ENOMEM, "recall buffers: host allocation failed"), -ENOMEM;
	if ((rc = k->alloc(r->kb, per * sizeof(int32_t), (void **)&r->rc_sel)) ||
	    (rc = k->alloc(r->kb, (size_t)r->L * r->o.max_batch * r->qkvf_cols * 2,
			   (void **)&r->rc_q)))
		return runner_fail(r, rc, "recall buffers: device allocation failed"), rc;
	/* Pinned, so the per-layer copies run asynchronously behind the step. */
	if ((rc = k->host_register(r->kb, r->rc_host, r->rc_bytes, &unused)))
		return runner_fail(r, rc, "registering the recall buffer failed"), rc;
	r->rc_registered = true;
	return 0;
}

void runner_recall_close(struct runner *r)
{
	if (r->rc_registered)
		r->kb->ops->host_unregister(r->kb, r->rc_host);
	if (r->rc_sel)
		r->kb->ops->free(r->kb, r->rc_sel);
	if (r->rc_q)
		r->kb->ops->free(r->kb, r->rc_q);
	free(r->rc_host);
	free(r->rc_pending);
	free(r->rc_mark);
}

int runner_recall_layer(struct runner *r, uint32_t l, uint32_t batch, bool sparse)
{
	const struct kb_ops *k = r->kb->ops;
	uint32_t topk = r->c.sparse.topk, nc = batch * r->n_kv;
	size_t per = (size_t)r->n_caches * topk;
	int rc;

	if (!r->rc_sel || !sparse || r->step % r->o.recall_every)
		return 0;
	/* Only copies here: the layer's QKVF row (its real query) and the Forecast's selection;
	 * the original selector runs after the step, off the pipeline being measured. */
	if ((rc = k->memcpy(r->kb, r->rc_q + (size_t)l * r->o.max_batch * r->qkvf_cols, r->qkvf,
			    (size_t)batch * r->qkvf_cols * 2, KB_D2D, KB_STREAM_COMPUTE)) ||
	    (rc = k->memcpy(r->kb, r->rc_host + (size_t)l * 2 * per, r->kv[l].sel,
			    (size_t)nc * topk * 4, KB_D2H, KB_STREAM_COMPUTE)))
		return rc;
	r->rc_pending[l] = true;
	r->rc_any = true;
	return 0;
}

/* The original selector of every sampled layer, over that layer's compressed keys including
 * this step's token (the selection `sparse` makes), into the host buffer. It runs after the
 * step, whose end synchronised both streams, so the step's score scratch is free to use. */
static int select_original(struct runner *r, uint32_t batch)
{
	const struct kb_ops *k = r->kb->ops;
	uint32_t topk = r->c.sparse.topk, nc = batch * r->n_kv;
	size_t per = (size_t)r->n_caches * topk;
	int rc;

	for (uint32_t l = 0; l < r->L; l++) {
		if (!r->rc_pending[l])
			continue;
		if ((rc = k->score_decode(r->kb, KB_STREAM_COMPUTE, r->scores,
					  r->rc_q + (size_t)l * r->o.max_batch * r->qkvf_cols,
					  r->qkvf_cols, r->kv[l].ck, r->ck_cap, r->n_ent, batch,
					  r->n_q, r->n_kv, r->hd, true, r->attn_scale)) ||
		    (rc = k->select_decode(r->kb, KB_STREAM_COMPUTE, r->rc_sel, r->scores,
					   r->ck_cap, r->n_ent, r->n_blk, batch, r->n_kv,
					   &r->c.sparse)) ||
		    (rc = k->memcpy(r->kb, r->rc_host + (size_t)l * 2 * per + per, r->rc_sel,
				    (size_t)nc * topk * 4, KB_D2H, KB_STREAM_COMPUTE)))
			return rc;
	}
	return r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE);
}

/* Forced blocks: the sink and the local window up to the query's own block qb. */
static bool forced(const struct kb_sparse *sp, uint32_t blk, uint32_t qb)
{
	return blk < sp->sink || (blk <= qb && blk + sp->local >= qb);
}

int runner_recall_collect(struct runner *r, uint32_t batch)
{
	const struct kb_sparse *sp = &r->c.sparse;
	uint32_t topk = sp->topk, nc = batch * r->n_kv;
	size_t per = (size_t)r->n_caches * topk;
	int rc;

	if (!r->rc_any)
		return 0;
	r->rc_any = false;
	if ((rc = select_original(r, batch)))
		return rc;
	r->st.recall_samples++;
	for (uint32_t l = 0; l < r->L; l++) {
		struct runner_layer_stats *ls = &r->st.layer[l];
		const int32_t *fc = r->rc_host + (size_t)l * 2 * per, *tr = fc + per;
		if (!r->rc_pending[l])
			continue;
		r->rc_pending[l] = false;
		for (uint32_t i = 0; i < nc; i++) {
			uint32_t qb = r->len[i / r->n_kv] / sp->block;
			if (++r->rc_stamp == 0) { /* wrapped: old marks could match again */
				memset(r->rc_mark, 0, r->max_blocks * sizeof(uint32_t));
				r->rc_stamp = 1;
			}
			for (uint32_t j = 0; j < topk; j++) {
				int32_t b = fc[(size_t)i * topk + j];
				if (b >= 0 && (uint32_t)b < r->max_blocks)
					r->rc_mark[b] = r->rc_stamp;
			}
			for (uint32_t j = 0; j < topk; j++) {
				int32_t b = tr[(size_t)i * topk + j];
				if (b < 0 || (uint32_t)b >= r->max_blocks ||
				    forced(sp, (uint32_t)b, qb))
					continue;
				ls->recall_true++;
				ls->recall_hits += r->rc_mark[b] == r->rc_stamp;
			}
		}
	}
	return 0;
}

double runner_recall_value(const struct runner_stats *st, int layer)
{
	uint64_t hits = 0, all = 0;
	for (uint32_t l = 0; l < st->n_layers; l++) {
		if (layer >= 0 && (uint32_t)layer != l)
			continue;
		hits += st->layer[l].recall_hits;
		all += st->layer[l].recall_true;
	}
	return all ? (double)hits / (double)all : -1.0;
}
