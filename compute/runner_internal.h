/* SPDX-License-Identifier: Apache-2.0 */
/* The runner's private state, shared by runner.c (setup), runner_prefill.c and runner_decode.c. */
#ifndef SPARDA_COMPUTE_RUNNER_INTERNAL_H
#define SPARDA_COMPUTE_RUNNER_INTERNAL_H

#include "runner.h"

/* Check a backend call; on failure record a message and jump to the label. */
#define RUN_TRY(r, call, label)                                                                \
	do {                                                                                   \
		int _rc = (call);                                                              \
		if (_rc) {                                                                     \
			runner_fail((r), _rc, "%s:%d: %s", __FILE__, __LINE__, #call);         \
			goto label;                                                            \
		}                                                                              \
	} while (0)

struct runner_lw { /* one layer's weights on the device */
	uint16_t *attn_norm, *ffn_norm;
	uint16_t *wqkvf; /* [qkvf_rows, hidden]: Q | K | V | F (| Fcurr) */
	uint16_t *wo, *wgu, *wdown;
};

struct runner_lkv { /* one layer's KV state on the device */
	bool resident;      /* full KV in `store`; else the slot cache */
	uint16_t *store;    /* resident: [n_caches * max_blocks] units */
	uint16_t *cache;    /* offloaded: [n_caches * n_slots] units */
	int32_t *map;       /* offloaded: [n_caches * n_slots] block per slot */
	int32_t *age;	    /* retaining cache: [n_caches * n_slots] step last selected, or NULL */
	uint16_t *ck;       /* [batch, n_kv, ck_cap, d] */
	uint16_t *ring;     /* [batch, n_kv, ck_kernel, d] */
	int32_t *sel;       /* [n_caches * sel_k] selection for this layer */
	int32_t *load_slot, *load_block, *n_loads, *hits; /* cache_diff outputs */
	int32_t *dst_idx, *src_idx;                        /* resolve_loads outputs */
	/* hits and src_idx lie in the runner's stats_dev, read back in one copy per step */
	int64_t *word_base; /* [n_caches] residency-word base of (seq, layer, head) */
	struct kb_event *ready, *done, *want;
	struct kb_event *resolved; /* careful mode: its load list has reached the host */
	uint32_t sel_k;     /* entries per cache in sel this step */
	bool loaded;        /* a gather was issued this step */
	uint32_t dma_loads; /* gather_dma: units this step's copies fetched */
	bool dma;	    /* this step's fetch went through the copy engines (dma_loads) */
	bool dma_split;	    /* ... and the device's resolve and gather (loads over dma_max_bytes) */
	bool prepped;       /* its PREP ran on the copy stream this step: wait `done` */
	bool pending;       /* careful mode: resolve and gather wait for the host's Forecast */
};

struct runner {
	const struct model *m;
	struct kb *kb;
	struct runner_opts o;
	struct model_config c;
	uint32_t hd, n_q, n_kv, hidden, ffn, vocab, L;
	uint32_t q_cols, kv_cols, f_off, fc_off, qkvf_cols; /* column layout of a qkvf row */
	bool has_f;
	uint32_t max_blocks, n_caches, n_slots, ck_cap, sel_cap;
	size_t unit_bytes, unit_elems;
	float attn_scale;

	struct runner_lw *lw;
	struct runner_lkv *kv;
	uint16_t *embed, *norm, *lm_head;
	float *inv_freq;
	float rope_mscale;

	/* decode activations [max_batch, ...] */
	float *resid, *logits;
	uint16_t *xn, *qkvf, *attn, *tmp, *gu, *ffo;
	float *scores;
	/* PREP of layer l+1 on the copy stream (default): it reads layer l's F from qkvf, so the
	 * next layer's QKVF GEMM waits f_read; SPARDA_PREP_STREAM=compute keeps it inline. */
	bool prep_side, f_pending;
	bool skip_gather;    /* SPARDA_BENCH_SKIP_GATHER=1: no gather copies (timing experiments) */
	/* Careful mode (the host store may spill to NVMe): each offloaded layer's load list comes
	 * back to the host, which restores the units that are not RAM-resident through the store
	 * and fetches the layer again (runner_decode.c). */
	bool careful;
	/* A layer's load list (cache_diff's outputs) in one device allocation, n_loads then the
	 * blocks then the slots, each part at a 256-byte boundary: loads_ints int32s, the blocks
	 * at loads_blk, the slots at loads_slot. Careful mode brings it to the host in one copy. */
	size_t loads_blk, loads_slot, loads_ints;
	int32_t *h_loads;    /* pinned [L][loads_ints]: the layers' load lists, laid out as above */
	int32_t *h_dma_idx;  /* gather_dma: [2][n_caches * n_slots] the copies' dst, then src */
	int64_t *h_dma_wb;   /* gather_dma: [n_caches] residency-word bases of one layer */
	int32_t dma_misses;  /* gather_dma: this step's loads found not resident on the host */
	struct kb_event *split_done; /* gather_dma: a split fetch's device part is done */
	size_t h_loads_bytes;
	bool loads_registered;
	struct kvhost_unit *h_units_c; /* [n_caches * n_slots] units of one layer's Forecast */
	struct kb_event *f_read;
	/* The step's uploaded arrays lie in step_dev, [max_batch] each then [n_caches] each:
	 * ids, pos, n_tok, n_ent, n_ent0, n_blk | tail_sel, store_idx; upload_step fills the
	 * pinned h_step alike and sends it in one copy (step_words int32) */
	int32_t *step_dev, *h_step;
	size_t step_words, h_step_bytes;
	bool step_registered;
	int32_t *pos, *n_tok, *n_ent, *n_blk, *tail_sel, *tail_idx, *tail_len, *ids, *argmax;
	/* wb_dst: [L * n_caches] arena slot each (layer, cache)'s filled tail block goes to, -1
	 * none; uploaded once in a step where blocks fill (upload_write_back) */
	int32_t *store_idx, *unit_idx, *unit_len, *wb_dst, *misses;
	int32_t *n_ent0;     /* compressed entries before this token (Forecast PREP of l+1) */
	int32_t *iota;       /* [n_caches * n_slots]: every block of the sequence, -1 padded */
	int32_t *neg1;       /* [n_caches] of -1 (no protected slot) */
	void *attn_work;
	/* prefill activations [max_tokens, ...] (FFN in chunks) */
	float *p_resid;
	uint16_t *p_xn, *p_qkvf[2], *p_attn, *p_tmp, *p_gu, *p_ffo;
	int32_t *p_pos, *p_ids, *p_sel, *p_uidx;
	/* prefill_kv_side: the copy stream's unit indices (device, and their host source kept until
	 * the copy ran; one pack is in flight at a time), the events between the streams (kv_qkvf:
	 * a layer's K/V are in p_qkvf; kv_packed[l & 1]: layer l's pack has read them), whether the
	 * compute stream still has to wait for kv_packed[p], and the pack in flight: its layer and
	 * the full blocks to commit once it ran */
	int32_t *p_uidx_side, *h_uidx_side;
	struct kb_event *kv_qkvf, *kv_packed[2];
	bool kv_pending[2], kv_flight;
	uint32_t kv_flight_layer, kv_flight_full;
	void *p_work;
	size_t p_work_bytes;
	uint32_t chunk;

	/* host mirrors */
	int32_t *h_i32;      /* scratch for uploads */
	uint32_t *h_blocks;  /* [max_batch] scratch: a block per sequence */
	bool *h_flag;        /* [max_batch] scratch: a flag per sequence */
	struct kvhost_unit *h_units; /* [max_batch * L * n_kv] block units of one request */
	int32_t *h_stats;    /* [L * stats_per + 1] per-step statistics read-back, laid out as
				stats_dev (host-registered) */
	size_t h_stats_bytes;
	/* stats_dev [L * stats_per + 1] (device): each offloaded layer's hits [n_caches] then
	 * src_idx [n_caches * n_slots], then the miss counter (misses points there), so the
	 * step's figures come back in one copy from stats_first's part on */
	int32_t *stats_dev;
	size_t stats_per;
	uint32_t stats_first; /* first offloaded layer (L: none) */
	bool stats_registered;
	int32_t *h_arena_tail; /* [L * n_caches] arena slot of each cache's tail block */
	uint32_t *tail_ahead;  /* [max_batch] the block whose slots were allocated a step ahead
				  (UINT32_MAX: none) */
	uint32_t *seq_handle;/* host-store sequence per batch row */
	int64_t *seq_word_base;
	uint32_t *len;       /* tokens so far per sequence */
	bool *full;          /* [max_batch] per-step scratch: the sequence's block fills */
	float *h_logits;
	void *arena_dev;     /* host store arena as the backend sees it */
	const uint64_t *words_dev;
	bool arena_registered, words_registered;
	uint64_t step;
	uint64_t rng;        /* sampling state, reset from the seed by each generation */
	uint32_t batch;      /* sequences of the last generation */
	uint32_t open_seqs;  /* host-store sequences open (rows 0 .. open_seqs-1) */

	/* Phase timing (runner_phase.c; NULL when phase_times is off): events at the step's
	 * start, after the embedding, after each of a layer's six phases, after the head */
	struct kb_event **ph_ev;
	uint32_t ph_n;

	/* Forecast recall sampling (runner_recall.c; NULL/false when off) */
	int32_t *rc_sel;     /* [n_caches * topk] the original selector's choice of one layer */
	uint16_t *rc_q;      /* [L][max_batch][qkvf_cols] each sampled layer's QKVF rows */
	int32_t *rc_host;    /* pinned [L][2][n_caches * topk]: Forecast's choice, original's */
	size_t rc_bytes;
	bool rc_registered, rc_any;
	bool *rc_pending;    /* [L] copies queued this step */
	uint32_t *rc_mark;   /* [max_blocks] scratch marks, valid when equal to rc_stamp */
	uint32_t rc_stamp;

	struct runner_stats st;
	char *err;
	size_t err_len;
	int err_rc;
};

void runner_fail(struct runner *r, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int runner_prefill_seq(struct runner *r, uint32_t b, const int32_t *prompt, uint32_t t,
		       int32_t *first_token, float *first_logits, const struct runner_sampling *s);
int runner_decode_step(struct runner *r, uint32_t batch, const int32_t *ids, int32_t *next,
		       float *logits_out, const struct runner_sampling *s);
void runner_close_host_seqs(struct runner *r);
int runner_sample(struct runner *r, const float *logits, uint32_t n, const struct runner_sampling *s,
		  int32_t *out);
/* Forecast recall (runner_recall.c). open/close size and free the buffers (nothing when
 * recall_every is 0 or the mode has no Forecast). runner_recall_layer, called in layer l after
 * its selection, copies layer l's query rows and the Forecast's choice on sampled sparse steps;
 * runner_recall_collect, after the step, runs the original selector on them and accumulates. */
int runner_recall_open(struct runner *r);
void runner_recall_close(struct runner *r);
int runner_recall_layer(struct runner *r, uint32_t l, uint32_t batch, bool sparse);
int runner_recall_collect(struct runner *r, uint32_t batch);
/* Decode phase timing (runner_phase.c; nothing when phase_times is off): open/close the
 * events, mark the step's start and the end of phase p (of layer l for the layer phases), and
 * after the step add each phase's device time to the statistics. */
int runner_phase_open(struct runner *r);
void runner_phase_close(struct runner *r);
int runner_phase_step_start(struct runner *r);
int runner_phase_end(struct runner *r, uint32_t l, enum runner_phase p);
int runner_phase_collect(struct runner *r);
/* Upload n int32 from the host scratch to a device array. */
int runner_upload_i32(struct runner *r, int32_t *dst, const int32_t *src, uint32_t n);
int runner_upload_i64(struct runner *r, int64_t *dst, const int64_t *src, uint32_t n);

#endif
