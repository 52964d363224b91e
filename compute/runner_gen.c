/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The generation loop: open host-store sequences, prefill each prompt, decode the batch step by
 * step, sample (greedy on the device, or seeded temperature/top-k on the host), close sequences.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runner_internal.h"
#include "timeutil.h"

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int32_t sample_row(const float *lg, uint32_t vocab, const struct runner_sampling *s,
			  uint64_t *rng)
{
	uint32_t best = 0;
	for (uint32_t v = 1; v < vocab; v++)
		if (lg[v] > lg[best])
			best = v;
	if (!s || s->temperature <= 0.0f)
		return (int32_t)best;
	/* threshold for top-k: the k-th largest logit (O(vocab * k) is fine for small k) */
	float thresh = -INFINITY;
	if (s->top_k && s->top_k < vocab) {
		float prev = INFINITY;
		for (uint32_t i = 0; i < s->top_k; i++) {
			float m = -INFINITY;
			for (uint32_t v = 0; v < vocab; v++)
				if (lg[v] < prev && lg[v] > m)
					m = lg[v];
			prev = m;
		}
		thresh = prev;
	}
	double sum = 0.0;
	for (uint32_t v = 0; v < vocab; v++)
		if (lg[v] >= thresh)
			sum += exp((double)(lg[v] - lg[best]) / s->temperature);
	double u = (double)(rng_next(rng) >> 11) * 0x1.0p-53 * sum, acc = 0.0;
	for (uint32_t v = 0; v < vocab; v++) {
		if (lg[v] < thresh)
			continue;
		acc += exp((double)(lg[v] - lg[best]) / s->temperature);
		if (acc >= u)
			return (int32_t)v;
	}
	return (int32_t)best;
}

/* Sample n rows of r->logits (device). Copies logits to the host only when needed. */
int runner_sample(struct runner *r, const float *logits, uint32_t n, const struct runner_sampling *s,
		  int32_t *out)
{
	const struct kb_ops *k = r->kb->ops;
	int rc;

	if (!s || s->temperature <= 0.0f) {
		if ((rc = k->argmax(r->kb, KB_STREAM_COMPUTE, r->argmax, logits, n, r->vocab)) ||
		    (rc = k->memcpy(r->kb, out, r->argmax, (size_t)n * 4, KB_D2H, KB_STREAM_COMPUTE)))
			return rc;
		return k->sync(r->kb, KB_STREAM_COMPUTE);
	}
	if ((rc = k->memcpy(r->kb, r->h_logits, logits, (size_t)n * r->vocab * 4, KB_D2H,
			    KB_STREAM_COMPUTE)) ||
	    (rc = k->sync(r->kb, KB_STREAM_COMPUTE)))
		return rc;
	for (uint32_t i = 0; i < n; i++)
		out[i] = sample_row(r->h_logits + (size_t)i * r->vocab, r->vocab, s, &r->rng);
	return 0;
}

void runner_close_host_seqs(struct runner *r)
{
	if (!runner_mode_offloads(r->o.mode))
		return;
	for (uint32_t i = 0; i < r->open_seqs; i++)
		r->o.host->ops->seq_close(r->o.host, r->seq_handle[i]);
	r->open_seqs = 0;
}

static int open_host_seqs(struct runner *r, uint32_t b)
{
	struct kvhost *h = r->o.host;
	int rc;

	runner_close_host_seqs(r);
	if (!runner_mode_offloads(r->o.mode))
		return 0;
	for (uint32_t i = 0; i < b; i++) {
		rc = h->ops->seq_open(h, i, r->max_blocks, &r->seq_handle[i], &r->seq_word_base[i]);
		if (rc == 0)
			r->open_seqs = i + 1;
		if (rc) {
			runner_close_host_seqs(r);
			runner_fail(r, rc, "host store (%s): opening sequence %u failed",
				    h->ops->name, i);
			return rc;
		}
	}
	int64_t *wb = calloc(r->n_caches, sizeof(int64_t));
	if (!wb)
		return -ENOMEM;
	rc = 0;
	for (uint32_t l = 0; l < r->L && !rc; l++) {
		if (r->kv[l].resident)
			continue;
		for (uint32_t i = 0; i < b * r->n_kv; i++)
			wb[i] = r->seq_word_base[i / r->n_kv] +
				((int64_t)l * r->n_kv + i % r->n_kv) * r->max_blocks;
		rc = runner_upload_i64(r, r->kv[l].word_base, wb, b * r->n_kv);
		if (!rc)
			rc = r->kb->ops->memset(r->kb, r->kv[l].map, 0xff,
						(size_t)r->n_caches * r->n_slots * 4,
						KB_STREAM_COMPUTE);
		/* the retaining cache's ages start again with the steps (r->step is reset) */
		if (!rc && r->kv[l].age)
			rc = r->kb->ops->memset(r->kb, r->kv[l].age, 0,
						(size_t)r->n_caches * r->n_slots * 4,
						KB_STREAM_COMPUTE);
	}
	free(wb);
	return rc;
}

static int check_inputs(struct runner *r, const int32_t *const *prompts, const uint32_t *lens,
			uint32_t b, uint32_t n_new)
{
	if (!b || b > r->o.max_batch)
		return runner_fail(r, -EINVAL, "batch %u outside 1..%u", b, r->o.max_batch), -EINVAL;
	if (!n_new)
		return runner_fail(r, -EINVAL, "nothing to generate (0 new tokens)"), -EINVAL;
	for (uint32_t i = 0; i < b; i++) {
		if (!lens[i] || (uint64_t)lens[i] + n_new > r->o.max_tokens)
			return runner_fail(r, -EINVAL,
					   "sequence %u: %u prompt + %u new tokens outside 1..%u",
					   i, lens[i], n_new, r->o.max_tokens), -EINVAL;
		for (uint32_t t = 0; t < lens[i]; t++)
			if (prompts[i][t] < 0 || (uint32_t)prompts[i][t] >= r->vocab)
				return runner_fail(r, -EINVAL,
						   "sequence %u token %u: id %d outside the "
						   "vocabulary (%u)", i, t, prompts[i][t],
						   r->vocab), -EINVAL;
	}
	return 0;
}

/* Device memory in use now (CUDA), kept as the generation's peak. */
static void sample_mem(struct runner *r)
{
	size_t free_b = 0, total_b = 0;
	if (r->kb->kind != KB_KIND_CUDA || r->kb->ops->mem_info(r->kb, &free_b, &total_b) ||
	    total_b < free_b)
		return;
	if (total_b - free_b > r->st.gpu_mem_peak_bytes)
		r->st.gpu_mem_peak_bytes = total_b - free_b;
}

static void reset_stats(struct runner *r, uint32_t b)
{
	struct runner_layer_stats *ls = r->st.layer;
	memset(ls, 0, sizeof(*ls) * r->L);
	memset(&r->st, 0, sizeof(r->st));
	r->st.layer = ls;
	r->st.mode = r->o.mode;
	r->st.n_layers = r->L;
	r->st.batch = b;
}

int runner_generate(struct runner *r, const int32_t *const *prompts, const uint32_t *lens,
		    uint32_t b, uint32_t n_new, const struct runner_sampling *samp,
		    int32_t *tokens, float *logits, char *err, size_t err_len)
{
	int32_t *cur = NULL, *next = NULL;
	size_t V = r->vocab;
	uint64_t t0, d2h0, t_recall = 0;
	int rc;

	r->err = err;
	r->err_len = err_len;
	r->err_rc = 0;
	if ((rc = check_inputs(r, prompts, lens, b, n_new)))
		return rc;
	reset_stats(r, b);
	cur = calloc(b, sizeof(int32_t));
	next = calloc(b, sizeof(int32_t));
	if (!cur || !next) {
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = open_host_seqs(r, b)))
		goto out;
	r->step = 0;
	r->batch = b;
	for (uint32_t i = 0; i < b; i++)
		r->tail_ahead[i] = UINT32_MAX;
	r->rng = samp && samp->seed ? samp->seed : 1; /* every generation samples the same way */
	t0 = time_now_ns();
	for (uint32_t i = 0; i < b; i++) {
		rc = runner_prefill_seq(r, i, prompts[i], lens[i], &cur[i],
					logits ? logits + (size_t)i * n_new * V : NULL, samp);
		if (rc)
			goto out_close;
		tokens[(size_t)i * n_new] = cur[i];
		r->len[i] = lens[i];
		r->st.prefill_tokens += lens[i];
	}
	r->st.prefill_s = time_since_s(t0);
	sample_mem(r);
	d2h0 = r->st.bytes_d2h;
	if (r->o.on_step)
		r->o.on_step(r->o.on_step_ctx, r->o.mode, &r->st);
	t0 = time_now_ns();
	for (uint32_t j = 1; j < n_new; j++) {
		rc = runner_decode_step(r, b, cur, next, NULL, samp);
		if (!rc) { /* the recall measure is not decode time */
			uint64_t tr = time_now_ns();
			rc = runner_recall_collect(r, b);
			t_recall += time_now_ns() - tr;
		}
		if (rc)
			goto out_close;
		for (uint32_t i = 0; i < b; i++) {
			tokens[(size_t)i * n_new + j] = next[i];
			if (logits) {
				rc = r->kb->ops->memcpy(r->kb, logits + ((size_t)i * n_new + j) * V,
							r->logits + (size_t)i * V, V * 4, KB_D2H,
							KB_STREAM_COMPUTE);
				if (rc)
					goto out_close;
			}
			cur[i] = next[i];
			r->len[i]++;
		}
		r->st.decode_steps++;
		r->st.decode_tokens += b;
		r->st.bytes_d2h_decode = r->st.bytes_d2h - d2h0;
		if (j == 1 || j + 1 == n_new) /* lazily allocated workspaces exist after one step */
			sample_mem(r);
		if (r->o.on_step) {
			r->st.decode_s = (double)(time_now_ns() - t0 - t_recall) * 1e-9;
			r->o.on_step(r->o.on_step_ctx, r->o.mode, &r->st);
		}
	}
	if (logits && (rc = r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE)))
		goto out_close;
	r->st.decode_s = (double)(time_now_ns() - t0 - t_recall) * 1e-9;
out_close:
	if (rc || !r->o.keep_sequences)
		runner_close_host_seqs(r);
	if (r->o.host) /* past every step this run sent: the next run's leases hold again */
		r->o.host->step_base += r->step + 2;
out:
	free(cur);
	free(next);
	if (rc && !r->err_rc)
		runner_fail(r, rc, "generation failed");
	return rc;
}

size_t runner_unit_bytes(const struct runner *r)
{
	return r->unit_bytes;
}

/* Find the GPU cache slot holding block of cache i (offloaded layers), or -1. */
static int cache_slot(struct runner *r, uint32_t l, uint32_t i, uint32_t block)
{
	size_t n = r->n_slots;
	int32_t *map = r->h_i32;
	if (r->kb->ops->memcpy(r->kb, map, r->kv[l].map + i * n, n * 4, KB_D2H, KB_STREAM_COMPUTE) ||
	    r->kb->ops->sync(r->kb, KB_STREAM_COMPUTE))
		return -1;
	for (size_t s = 0; s < n; s++)
		if (map[s] == (int32_t)block)
			return (int)s;
	return -1;
}

int runner_read_unit(struct runner *r, uint32_t b, uint32_t layer, uint32_t head, uint32_t block,
		     void *out)
{
	const struct kb_ops *k = r->kb->ops;
	struct runner_lkv *kv;
	uint32_t i = b * r->n_kv + head;
	int rc;

	if (b >= r->batch || layer >= r->L || head >= r->n_kv ||
	    block * r->c.sparse.block >= r->len[b])
		return -EINVAL;
	kv = &r->kv[layer];
	if (kv->resident) {
		rc = k->memcpy(r->kb, out, kv->store + ((size_t)i * r->max_blocks + block) *
			       r->unit_elems, r->unit_bytes, KB_D2H, KB_STREAM_COMPUTE);
		return rc ? rc : k->sync(r->kb, KB_STREAM_COMPUTE);
	}
	if (b < r->open_seqs) {
		int64_t w = r->seq_word_base[b] + ((int64_t)layer * r->n_kv + head) * r->max_blocks +
			    block;
		uint64_t word = __atomic_load_n(&r->o.host->words[w], __ATOMIC_ACQUIRE);
		if (sp_unit_word_state(word) == SP_UNIT_RESIDENT) {
			memcpy(out, (char *)r->o.host->arena +
			       (size_t)sp_unit_word_slot(word) * r->unit_bytes, r->unit_bytes);
			return 0;
		}
	}
	int s = cache_slot(r, layer, i, block);
	if (s < 0)
		return -ENOENT;
	rc = k->memcpy(r->kb, out, kv->cache + ((size_t)i * r->n_slots + (size_t)s) * r->unit_elems,
		       r->unit_bytes, KB_D2H, KB_STREAM_COMPUTE);
	return rc ? rc : k->sync(r->kb, KB_STREAM_COMPUTE);
}
