/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefill of one sequence, layer by layer over the whole prompt (DESIGN 3.4): fused QKVF
 * projection, compressed keys of every layer, block-sparse attention selected by the original
 * selector or by the Forecast of layer l-1, the prompt's KV packed into the GPU store or
 * streamed to arena slots of the host store and committed, the FFN in row chunks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runner_internal.h"

/* Resident layers: pack every block of the prompt into the sequence's store units. */
static int store_resident(struct runner *r, uint32_t l, uint32_t b, const uint16_t *qkvf,
			  uint32_t t)
{
	uint32_t nb = (t + r->c.sparse.block - 1) / r->c.sparse.block;
	const uint16_t *k = qkvf + r->q_cols, *v = k + r->kv_cols;
	int rc;

	for (uint32_t m = 0; m < nb; m++)
		for (uint32_t g = 0; g < r->n_kv; g++)
			r->h_i32[m * r->n_kv + g] =
				(int32_t)((b * r->n_kv + g) * r->max_blocks + m);
	if ((rc = runner_upload_i32(r, r->p_uidx, r->h_i32, nb * r->n_kv)))
		return rc;
	return r->kb->ops->kv_pack(r->kb, KB_STREAM_COMPUTE, r->kv[l].store, r->p_uidx, k, v,
				   r->qkvf_cols, 0, t, r->n_kv, r->hd, r->c.sparse.block);
}

/* The partial last block also goes to slot 0 of the GPU cache, where decode appends to it. */
static int stage_tail(struct runner *r, uint32_t l, uint32_t b, const uint16_t *qkvf, uint32_t t)
{
	uint32_t blk = r->c.sparse.block, tb = t / blk, rows = t - tb * blk;
	const uint16_t *k = qkvf + (size_t)tb * blk * r->qkvf_cols + r->q_cols, *v = k + r->kv_cols;
	struct runner_lkv *kv = &r->kv[l];
	int rc;

	for (uint32_t g = 0; g < r->n_kv; g++)
		r->h_i32[g] = (int32_t)((b * r->n_kv + g) * r->n_slots);
	if ((rc = runner_upload_i32(r, r->p_uidx, r->h_i32, r->n_kv)) ||
	    (rc = r->kb->ops->kv_pack(r->kb, KB_STREAM_COMPUTE, kv->cache, r->p_uidx, k, v,
				      r->qkvf_cols, tb * blk, rows, r->n_kv, r->hd, blk)))
		return rc;
	for (uint32_t g = 0; g < r->n_kv; g++) {
		int32_t one = (int32_t)tb;
		size_t off = (size_t)(b * r->n_kv + g) * r->n_slots;
		rc = r->kb->ops->memcpy(r->kb, kv->map + off, &one, 4, KB_H2D, KB_STREAM_COMPUTE);
		if (rc)
			return rc;
		/* the host copy must live until the copy ran: sync (prefill is not a hot path) */
		if ((rc = r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE)))
			return rc;
	}
	return 0;
}

/*
 * seed_cache: layer l's GPU block cache of sequence b gets the full blocks the prompt's last
 * query block selected (sel [n_kv, n_qb, topk] on the device), then, while a retaining cache
 * has slots left, those of the query blocks before it, packed from the prompt's KV (qkvf, still
 * on the device) into the slots after the tail's, so that the first decode step finds them
 * cached instead of fetching its whole selection. Their bytes are those the arena holds.
 * Prefill is not a hot path: the selections come back to the host, and the uploads are waited
 * for.
 */
static int seed_cache(struct runner *r, uint32_t l, uint32_t b, const uint16_t *qkvf, uint32_t t,
		      const int32_t *sel)
{
	const struct kb_ops *o = r->kb->ops;
	struct runner_lkv *kv = &r->kv[l];
	uint32_t blk = r->c.sparse.block, k = r->c.sparse.topk, full = t / blk;
	uint32_t n_qb = (t + blk - 1) / blk, nkv = r->n_kv, ns = r->n_slots;
	uint32_t nq = n_qb < ns / k + 1 ? n_qb : ns / k + 1, s0 = full < n_qb, n = 0;
	size_t base = (size_t)b * nkv * ns; /* the sequence's first cache, in slots */
	size_t nsel = (size_t)nq * k;	    /* per head: the last nq query blocks' selections */
	int32_t *last = calloc(nkv * nsel + (size_t)full * nkv + (size_t)nkv * ns + ns, 4);
	int32_t *idx = last + nkv * nsel, *rows = idx + (size_t)full * nkv;
	int32_t *pick = rows + (size_t)nkv * ns;
	int rc = 0;

	if (!last)
		return -ENOMEM;
	for (uint32_t g = 0; g < nkv && !rc; g++)
		rc = o->memcpy(r->kb, last + g * nsel, sel + ((size_t)g * n_qb + n_qb - nq) * k,
			       nsel * 4, KB_D2H, KB_STREAM_COMPUTE);
	if (rc || (rc = o->sync(r->kb, KB_STREAM_COMPUTE)))
		goto out;
	for (size_t i = 0; i < (size_t)full * nkv; i++)
		idx[i] = -1;
	for (uint32_t g = 0; g < nkv; g++) {
		int32_t *row = rows + (size_t)g * ns, *ls = last + g * nsel;
		uint32_t np = 0;

		for (uint32_t i = 0; i < ns; i++)
			row[i] = -1;
		if (s0) /* slot 0: the partial tail block (stage_tail) */
			row[0] = (int32_t)full;
		/* the last query block's selection first, then the ones before it */
		for (uint32_t q = nq; q-- > 0 && s0 + np < ns;)
			for (uint32_t i = 0; i < k && s0 + np < ns; i++) {
				int32_t m = ls[(size_t)q * k + i];

				if (m < 0 || (uint32_t)m >= full || idx[(size_t)m * nkv + g] != -1)
					continue;
				idx[(size_t)m * nkv + g] = -2; /* picked */
				pick[np++] = m;
			}
		/* the first picked in the highest slots: at equal ages a retaining cache evicts the
		 * lowest slot first */
		for (uint32_t j = 0; j < np; j++) {
			uint32_t sl = s0 + np - 1 - j;

			row[sl] = pick[j];
			idx[(size_t)pick[j] * nkv + g] = (int32_t)(base + (size_t)g * ns + sl);
		}
		n += np;
	}
	if (n && ((rc = runner_upload_i32(r, r->p_uidx, idx, full * nkv)) ||
		  (rc = o->kv_pack(r->kb, KB_STREAM_COMPUTE, kv->cache, r->p_uidx, qkvf + r->q_cols,
				   qkvf + r->q_cols + r->kv_cols, r->qkvf_cols, 0, full * blk, nkv,
				   r->hd, blk)) ||
		  (rc = runner_upload_i32(r, kv->map + base, rows, nkv * ns)) ||
		  (rc = o->sync(r->kb, KB_STREAM_COMPUTE))))
		goto out;
	r->st.units_seeded += n;
out:
	free(last);
	if (rc)
		runner_fail(r, rc, "prefill: seeding the block cache of layer %u failed", l);
	return rc;
}

/* Commit the first `full` (packed) blocks of layer l of sequence b, every head. */
static int commit_units(struct runner *r, uint32_t b, uint32_t l, uint32_t full)
{
	struct kvhost *h = r->o.host;

	for (uint32_t g = 0; g < r->n_kv && full; g++) {
		int rc = h->ops->commit(h, r->seq_handle[b], l, g, 0, full);
		if (rc) {
			runner_fail(r, rc, "host store: committing layer %u head %u failed", l, g);
			return rc;
		}
	}
	return 0;
}

/*
 * prefill_kv_side, before layer l allocates its arena slots: wait for the previous layer's pack
 * (long done: it overlapped that layer's FFN) and commit its units, so that a host store short
 * of RAM can spill them to make room, as when the pack runs inline. At most one pack is ever in
 * flight, and its host indices are free again.
 */
static int settle_side(struct runner *r, uint32_t b)
{
	int rc;

	if (!r->kv_flight)
		return 0;
	if ((rc = r->kb->ops->event_sync(r->kb, r->kv_packed[r->kv_flight_layer & 1])))
		return rc;
	r->kv_flight = false;
	return commit_units(r, b, r->kv_flight_layer, r->kv_flight_full);
}

/*
 * prefill_kv_side: pack layer l's units (indices in h_i32) into the arena on the copy stream,
 * after the compute stream has written them into p_qkvf[l & 1]; layer l + 2's projection, which
 * overwrites that buffer, waits for the pack (prefill_layer); the next offloaded layer commits
 * them (settle_side).
 */
static int pack_side(struct runner *r, uint32_t l, const uint16_t *k, const uint16_t *v,
		     uint32_t t, uint32_t nb, uint32_t full)
{
	const struct kb_ops *o = r->kb->ops;
	uint32_t p = l & 1, n = nb * r->n_kv;
	int rc;

	memcpy(r->h_uidx_side, r->h_i32, (size_t)n * sizeof(int32_t));
	if ((rc = o->event_record(r->kb, r->kv_qkvf, KB_STREAM_COMPUTE)) ||
	    (rc = o->stream_wait(r->kb, KB_STREAM_COPY, r->kv_qkvf)) ||
	    (rc = o->memcpy(r->kb, r->p_uidx_side, r->h_uidx_side, (size_t)n * 4, KB_H2D,
			    KB_STREAM_COPY)) ||
	    (rc = o->kv_pack(r->kb, KB_STREAM_COPY, r->arena_dev, r->p_uidx_side, k, v,
			     r->qkvf_cols, 0, t, r->n_kv, r->hd, r->c.sparse.block)) ||
	    (rc = o->event_record(r->kb, r->kv_packed[p], KB_STREAM_COPY)))
		return rc;
	r->kv_pending[p] = r->kv_flight = true;
	r->kv_flight_layer = l;
	r->kv_flight_full = full;
	r->st.units_written_side += n;
	return 0;
}

/* The inline pack: layer l's units (indices in h_i32) into the arena on the compute stream,
 * waited for, then its full blocks committed. */
static int pack_inline(struct runner *r, uint32_t b, uint32_t l, const uint16_t *k,
		       const uint16_t *v, uint32_t t, uint32_t nb, uint32_t full)
{
	int rc;

	if ((rc = runner_upload_i32(r, r->p_uidx, r->h_i32, nb * r->n_kv)) ||
	    (rc = r->kb->ops->kv_pack(r->kb, KB_STREAM_COMPUTE, r->arena_dev, r->p_uidx, k, v,
				      r->qkvf_cols, 0, t, r->n_kv, r->hd, r->c.sparse.block)) ||
	    (rc = r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE)))
		return rc;
	return commit_units(r, b, l, full);
}

/* Offloaded layers: allocate arena slots, stream the prompt's units, commit the full ones. */
static int store_offloaded(struct runner *r, uint32_t l, uint32_t b, const uint16_t *qkvf,
			   uint32_t t)
{
	struct kvhost *h = r->o.host;
	uint32_t blk = r->c.sparse.block, nb = (t + blk - 1) / blk, full = t / blk;
	const uint16_t *k = qkvf + r->q_cols, *v = k + r->kv_cols;
	int32_t *slots = calloc(nb, sizeof(int32_t));
	int rc = -ENOMEM;

	if (!slots)
		return rc;
	if (r->o.prefill_kv_side && (rc = settle_side(r, b)))
		goto out;
	for (uint32_t g = 0; g < r->n_kv; g++) {
		rc = h->ops->alloc(h, r->seq_handle[b], l, g, 0, nb, slots);
		if (rc) {
			runner_fail(r, rc, "host store: allocating %u units of layer %u head %u "
				    "failed", nb, l, g);
			goto out;
		}
		for (uint32_t m = 0; m < nb; m++)
			r->h_i32[m * r->n_kv + g] = slots[m];
		r->h_arena_tail[(size_t)l * r->n_caches + b * r->n_kv + g] =
			full < nb ? slots[nb - 1] : -1;
	}
	/* on the copy stream, committed when it has run (settle_side); or inline */
	rc = r->o.prefill_kv_side ? pack_side(r, l, k, v, t, nb, full)
				  : pack_inline(r, b, l, k, v, t, nb, full);
	if (rc)
		goto out;
	r->st.bytes_d2h += (uint64_t)nb * r->n_kv * r->unit_bytes;
	r->st.units_written += (uint64_t)nb * r->n_kv;
	rc = full < nb ? stage_tail(r, l, b, qkvf, t) : 0;
out:
	free(slots);
	return rc;
}

/*
 * The end of sequence b's prefill (prefill_kv_side): once the copy stream has run, commit what
 * is still uncommitted (the last offloaded layer). Leaves nothing for the next sequence to wait
 * for.
 */
static int commit_side(struct runner *r, uint32_t b)
{
	r->kv_pending[0] = r->kv_pending[1] = false;
	return settle_side(r, b);
}

static int prefill_select(struct runner *r, uint32_t l, uint32_t b, uint32_t t,
			  const int32_t **sel)
{
	const struct kb_sparse *sp = &r->c.sparse;
	const uint16_t *ck = r->kv[l].ck + (size_t)b * r->n_kv * r->ck_cap * r->hd;
	const uint16_t *qsrc;
	uint32_t nq;
	bool original = !runner_mode_forecast(r->o.mode);

	*sel = NULL;
	if (r->o.mode == RUNNER_MODE_DENSE || t < r->c.dense_len)
		return 0;
	if (original) {
		qsrc = r->p_qkvf[l & 1];
		nq = r->n_q;
	} else {
		qsrc = l == 0 ? r->p_qkvf[0] + r->fc_off : r->p_qkvf[(l - 1) & 1] + r->f_off;
		nq = r->n_kv;
	}
	*sel = r->p_sel;
	return r->kb->ops->select_prefill(r->kb, KB_STREAM_COMPUTE, r->p_sel, qsrc, r->qkvf_cols, t,
					  0, ck, r->ck_cap, nq, r->n_kv, r->hd, original,
					  r->attn_scale, sp, r->p_work);
}

static int prefill_ffn(struct runner *r, uint32_t l, uint32_t t)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lw *w = &r->lw[l];
	uint32_t H = r->hidden, F = r->ffn;
	int rc;

	for (uint32_t c0 = 0; c0 < t; c0 += r->chunk) {
		uint32_t n = t - c0 < r->chunk ? t - c0 : r->chunk;
		if ((rc = k->gemm(r->kb, KB_STREAM_COMPUTE, n, 2 * F, H, r->p_xn + (size_t)c0 * H,
				  H, w->wgu, H, r->p_gu, 2 * F, false, 1.0f, 0.0f)) ||
		    (rc = k->swiglu(r->kb, KB_STREAM_COMPUTE, r->p_ffo, r->p_gu, n, F)) ||
		    (rc = k->gemm(r->kb, KB_STREAM_COMPUTE, n, H, F, r->p_ffo, F, w->wdown, F,
				  r->p_tmp + (size_t)c0 * H, H, false, 1.0f, 0.0f)))
			return rc;
	}
	return 0;
}

static int prefill_layer(struct runner *r, uint32_t l, uint32_t b, uint32_t t, bool first)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lw *w = &r->lw[l];
	struct runner_lkv *kv = &r->kv[l];
	uint16_t *qkvf = r->p_qkvf[l & 1];
	uint32_t H = r->hidden, ld = r->qkvf_cols;
	const struct model_config *c = &r->c;
	const int32_t *sel;

	/* the copy stream's pack of layer l - 2 reads the buffer this layer's projection writes */
	if (r->kv_pending[l & 1]) {
		RUN_TRY(r, k->stream_wait(r->kb, KB_STREAM_COMPUTE, r->kv_packed[l & 1]), fail);
		r->kv_pending[l & 1] = false;
	}
	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->p_resid, first ? NULL : r->p_tmp, H,
				  c->residual_scale, w->attn_norm, r->p_xn, t, H, c->rms_eps), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, t, ld, H, r->p_xn, H, w->wqkvf, H, qkvf, ld,
			   false, 1.0f, 0.0f), fail);
	RUN_TRY(r, k->rope(r->kb, KB_STREAM_COMPUTE, qkvf, ld, t, r->n_q + r->n_kv, r->hd, r->p_pos,
			   r->inv_freq, r->rope_mscale), fail);
	if (r->has_f)
		RUN_TRY(r, k->rope(r->kb, KB_STREAM_COMPUTE, qkvf + r->f_off, ld, t,
				   l == 0 ? 2 * r->n_kv : r->n_kv, r->hd, r->p_pos, r->inv_freq,
				   r->rope_mscale), fail);
	RUN_TRY(r, k->ck_prefill(r->kb, KB_STREAM_COMPUTE,
				 kv->ck + (size_t)b * r->n_kv * r->ck_cap * r->hd, r->ck_cap,
				 kv->ring + (size_t)b * r->n_kv * c->sparse.ck_kernel * r->hd,
				 qkvf + r->q_cols, ld, t, r->n_kv, r->hd, &c->sparse), fail);
	RUN_TRY(r, prefill_select(r, l, b, t, &sel), fail);
	RUN_TRY(r, k->attn_prefill(r->kb, KB_STREAM_COMPUTE, r->p_attn, r->q_cols, qkvf, ld,
				   qkvf + r->q_cols, qkvf + r->q_cols + r->kv_cols, ld, t, 0, r->n_q,
				   r->n_kv, r->hd, r->attn_scale, sel, c->sparse.topk,
				   c->sparse.block), fail);
	RUN_TRY(r, kv->resident ? store_resident(r, l, b, qkvf, t) : store_offloaded(r, l, b, qkvf, t),
		fail);
	if (!kv->resident && sel && r->o.seed_cache)
		RUN_TRY(r, seed_cache(r, l, b, qkvf, t, sel), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, t, H, r->q_cols, r->p_attn, r->q_cols, w->wo,
			   r->q_cols, r->p_tmp, H, false, 1.0f, 0.0f), fail);
	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->p_resid, r->p_tmp, H,
				  c->residual_scale, w->ffn_norm, r->p_xn, t, H, c->rms_eps), fail);
	RUN_TRY(r, prefill_ffn(r, l, t), fail);
	return 0;
fail:
	return r->err_rc ? r->err_rc : -EIO;
}

int runner_prefill_seq(struct runner *r, uint32_t b, const int32_t *prompt, uint32_t t,
		       int32_t *first_token, float *first_logits, const struct runner_sampling *s)
{
	const struct kb_ops *k = r->kb->ops;
	const struct model_config *c = &r->c;
	uint32_t H = r->hidden;
	size_t last = (size_t)(t - 1) * H;
	int rc = 0;

	for (uint32_t i = 0; i < t; i++)
		r->h_i32[i] = prompt[i];
	RUN_TRY(r, runner_upload_i32(r, r->p_ids, r->h_i32, t), fail);
	RUN_TRY(r, k->embed(r->kb, KB_STREAM_COMPUTE, r->p_resid, r->embed, r->p_ids, t, H, r->vocab,
			    c->scale_emb), fail);
	for (uint32_t l = 0; l < r->L; l++)
		if ((rc = prefill_layer(r, l, b, t, l == 0)))
			return rc;
	if (r->o.prefill_kv_side && (rc = commit_side(r, b)))
		return rc;
	RUN_TRY(r, k->add_rmsnorm(r->kb, KB_STREAM_COMPUTE, r->p_resid + last, r->p_tmp + last, H,
				  c->residual_scale, r->norm, r->p_xn, 1, H, c->rms_eps), fail);
	RUN_TRY(r, k->gemm(r->kb, KB_STREAM_COMPUTE, 1, r->vocab, H, r->p_xn, H, r->lm_head, H,
			   r->logits, r->vocab, true, c->logit_scale, 0.0f), fail);
	if (first_logits)
		RUN_TRY(r, k->memcpy(r->kb, first_logits, r->logits, (size_t)r->vocab * 4, KB_D2H,
				     KB_STREAM_COMPUTE), fail);
	RUN_TRY(r, runner_sample(r, r->logits, 1, s, first_token), fail);
	return 0;
fail:
	return r->err_rc ? r->err_rc : -EIO;
}
