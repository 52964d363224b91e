/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compute backend interface: every op that prefill and decode of a Llama/MiniCPM-family
 * model with block-sparse attention and the Forecast need, behind one vtable. The CPU backend
 * (kernels/cpu) is always built: it is the reference and the fallback. The CUDA backend
 * (kernels/cuda) is built when nvcc is found (WITH_CUDA).
 *
 * Conventions for every op:
 *  - Pointers are "device" pointers of the backend (host memory for CPU; GPU memory or mapped
 *    pinned host memory for CUDA). bf16 values are stored as uint16_t; accumulation is fp32.
 *  - Matrices are row-major. `ld*` arguments are row strides in elements.
 *  - Ops are enqueued on a stream (enum kb_stream) and return 0 or -errno
 *    (-EINVAL for bad arguments, -ENOMEM, -EIO for a device failure). The CPU backend runs
 *    ops synchronously; events are then no-ops.
 *  - Outputs never alias inputs unless an op says "in place".
 *  - Thread safety: one backend object is used by one thread.
 *
 * Sparse-attention terms (DESIGN 2): KV blocks of `block` tokens; compressed-key entry j is the
 * mean of keys [stride*j, stride*j + kernel); block m pools entries [pool_stride*m - pool_pad,
 * pool_stride*m - pool_pad + pool_kernel) clipped to the valid entries; forced blocks (sink
 * blocks [0, sink) and the local window [qb - local, qb] where qb is the query's own block) get
 * +inf; top-k per KV head.
 */
#ifndef SPARDA_KERNELS_BACKEND_H
#define SPARDA_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kb_kind { KB_KIND_CPU = 0, KB_KIND_CUDA = 1 };
/* COPY: the prefetch's kernels and copies beside the compute. DMA: host-queued copy-engine
 * copies (copy_units_dma) that should not wait behind the copy stream's kernels. */
enum kb_stream {
	KB_STREAM_COMPUTE = 0,
	KB_STREAM_COPY = 1,
	KB_STREAM_DMA = 2,
	KB_STREAM_COUNT = 3
};
/* The most streams copy_units_dma spreads one call's copies over. */
#define KB_DMA_STREAMS_MAX 4

enum kb_copy_dir { KB_H2D = 0, KB_D2H = 1, KB_D2D = 2, KB_H2H = 3 };

/* Rotary embedding parameters, resolved on the host into per-pair inverse frequencies. */
enum kb_rope_type {
	KB_ROPE_PLAIN = 0,   /* inv_freq[i] = theta^(-2i/d) */
	KB_ROPE_LLAMA3 = 1,  /* Llama-3.1 wavelength-dependent scaling */
	KB_ROPE_LONGROPE = 2,/* per-pair factors (short/long) and an attention mscale */
	KB_ROPE_YARN = 3,    /* YaRN ramp between interpolation and extrapolation + mscale */
};
struct kb_rope {
	enum kb_rope_type type;
	uint32_t head_dim;
	double theta;
	double factor;            /* LLAMA3/YARN scaling factor */
	double low_freq_factor;   /* LLAMA3 */
	double high_freq_factor;  /* LLAMA3 */
	uint32_t original_max_pos;/* LLAMA3/YARN/LONGROPE */
	double beta_fast, beta_slow; /* YARN (defaults 32, 1) */
	const float *ext_factors; /* LONGROPE: head_dim/2 factors (host memory), or NULL */
	uint32_t max_pos;         /* LONGROPE: model max position (for mscale) */
};
/*
 * Fill inv_freq[head_dim/2] (host memory) and *mscale (multiplier applied to cos and sin) from
 * the parameters. Pure host function shared by all backends. Returns 0 or -EINVAL.
 */
int kb_rope_resolve(const struct kb_rope *p, float *inv_freq, float *mscale);

/* Sparse selection parameters (the paper's values in comments). */
struct kb_sparse {
	uint32_t block;       /* 64 */
	uint32_t ck_kernel;   /* 32: tokens per compressed entry */
	uint32_t ck_stride;   /* 16 */
	uint32_t pool_kernel; /* 5 */
	uint32_t pool_stride; /* 4 = block / ck_stride */
	uint32_t pool_pad;    /* 1 */
	uint32_t sink;        /* 1 block */
	uint32_t local;       /* 32 blocks before the query's own block */
	uint32_t topk;        /* 96 */
};
/* Number of compressed entries for n tokens: n < kernel ? 0 : (n - kernel) / stride + 1. */
static inline uint32_t kb_ck_entries(const struct kb_sparse *s, uint32_t n)
{
	return n < s->ck_kernel ? 0 : (n - s->ck_kernel) / s->ck_stride + 1;
}

struct kb_event; /* opaque */
struct kb;       /* a backend instance */

struct kb_ops {
	const char *name;
	void (*destroy)(struct kb *kb);

	/* ---- memory and streams ---- */
	int (*alloc)(struct kb *kb, size_t bytes, void **out);
	void (*free)(struct kb *kb, void *p);
	int (*memcpy)(struct kb *kb, void *dst, const void *src, size_t bytes,
		      enum kb_copy_dir dir, enum kb_stream s);
	int (*memset)(struct kb *kb, void *dst, int byte, size_t bytes, enum kb_stream s);
	/* Make host memory readable/writable by kernels (cudaHostRegister, mapped); *dev gets the
	 * pointer kernels use. CPU: *dev = host. */
	int (*host_register)(struct kb *kb, void *host, size_t bytes, void **dev);
	int (*host_unregister)(struct kb *kb, void *host);
	int (*sync)(struct kb *kb, enum kb_stream s);
	int (*event_new)(struct kb *kb, struct kb_event **out);
	void (*event_free)(struct kb *kb, struct kb_event *e);
	int (*event_record)(struct kb *kb, struct kb_event *e, enum kb_stream s);
	int (*stream_wait)(struct kb *kb, enum kb_stream s, struct kb_event *e);
	int (*event_sync)(struct kb *kb, struct kb_event *e);
	/* Milliseconds between two recorded events (CPU: wall time between records). */
	int (*event_elapsed)(struct kb *kb, struct kb_event *a, struct kb_event *b, float *ms);
	/* Bytes of device memory free and total (CPU: from sysconf). */
	int (*mem_info)(struct kb *kb, size_t *free_bytes, size_t *total_bytes);

	/* ---- elementwise and norms ---- */
	/* out[i, :] = table[ids[i], :] * scale (bf16 -> fp32 residual stream). ids in [0, vocab). */
	int (*embed)(struct kb *kb, enum kb_stream s, float *out, const uint16_t *table,
		     const int32_t *ids, uint32_t n, uint32_t hidden, uint32_t vocab, float scale);
	/*
	 * Fused residual add + RMSNorm: if delta != NULL, resid[i,:] += delta_scale * delta[i,:]
	 * (in place); then out[i,:] = bf16(resid[i,:] / rms(resid[i,:]) * w). resid fp32 [n, h],
	 * delta bf16 [n, h] (row stride ld_delta), w bf16 [h], out bf16 [n, h].
	 */
	int (*add_rmsnorm)(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
			   uint32_t ld_delta, float delta_scale, const uint16_t *w, uint16_t *out,
			   uint32_t n, uint32_t hidden, float eps);
	/* resid[i,:] += delta_scale * delta[i,:] (fp32 += bf16), no norm. */
	int (*add_residual)(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
			    uint32_t ld_delta, float delta_scale, uint32_t n, uint32_t hidden);
	/*
	 * RoPE in place on x: n rows, n_heads heads of head_dim each starting at column 0 of each
	 * row (row stride ld). Rotate-half convention (pairs i and i + d/2), angle pos * inv_freq[i],
	 * cos and sin multiplied by mscale. inv_freq is a device array of head_dim/2 floats.
	 */
	int (*rope)(struct kb *kb, enum kb_stream s, uint16_t *x, uint32_t ld, uint32_t n,
		    uint32_t n_heads, uint32_t head_dim, const int32_t *pos, const float *inv_freq,
		    float mscale);
	/* out[i, j] = silu(gu[i, j]) * gu[i, ff + j]; gu bf16 [n, 2*ff], out bf16 [n, ff]. */
	int (*swiglu)(struct kb *kb, enum kb_stream s, uint16_t *out, const uint16_t *gu,
		      uint32_t n, uint32_t ff);
	/* out[b] = argmax_j logits[b, j] (lowest index on ties); logits fp32 [n, vocab]. */
	int (*argmax)(struct kb *kb, enum kb_stream s, int32_t *out, const float *logits,
		      uint32_t n, uint32_t vocab);

	/*
	 * GEMM: C[m, n] = alpha * A[m, k] . W[n, k]^T + beta * C. A and W bf16 (W is a weight in
	 * the Hugging Face [out, in] layout); C is fp32 if c_f32, else bf16. cuBLAS on CUDA, CBLAS
	 * (OpenBLAS) on the CPU.
	 */
	int (*gemm)(struct kb *kb, enum kb_stream s, uint32_t m, uint32_t n, uint32_t k,
		    const uint16_t *a, uint32_t lda, const uint16_t *w, uint32_t ldw, void *c,
		    uint32_t ldc, bool c_f32, float alpha, float beta);

	/* ---- compressed keys ---- */
	/*
	 * Prefill: for one sequence of t tokens with keys k [t, ld] (head h at columns h*d), write
	 * every complete entry j (stride*j + kernel <= t) of every head into
	 * ck [n_kv, cap, d] (bf16, entries [0, kb_ck_entries(t)) written), and the last
	 * min(t, kernel) keys into ring [n_kv, kernel, d] at index (token % kernel).
	 */
	int (*ck_prefill)(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap,
			  uint16_t *ring, const uint16_t *k, uint32_t ld, uint32_t t,
			  uint32_t n_kv, uint32_t d, const struct kb_sparse *sp);
	/*
	 * Decode: batch of b sequences, one new key each: k [b, ld] (head h at columns h*d) at
	 * position pos[b] (tokens before it). Writes the key into ring [b, n_kv, kernel, d] at
	 * pos % kernel; when pos + 1 >= kernel and (pos + 1 - kernel) % stride == 0 appends entry
	 * j = (pos + 1 - kernel) / stride = mean of ring into ck [b, n_kv, cap, d] (j < cap, else
	 * -ENOSPC is not reported: the caller sizes cap).
	 */
	int (*ck_append)(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap,
			 uint16_t *ring, const uint16_t *k, uint32_t ld, const int32_t *pos,
			 uint32_t b, uint32_t n_kv, uint32_t d, const struct kb_sparse *sp);

	/* ---- selection ---- */
	/*
	 * Decode scores, one query token per sequence: scores [b, n_kv, cap] fp32 for entries
	 * [0, n_entries[b]) (others left untouched).
	 *  - Forecast (n_q == n_kv): scores = q[b, g, :] . ck[b, g, j, :] (raw, no scale).
	 *  - Original selector (n_q = group * n_kv): per query head softmax_j(q.ck * scale),
	 *    summed over the heads of the group.
	 * q bf16 [b, ld] (head h at columns h*d).
	 */
	int (*score_decode)(struct kb *kb, enum kb_stream s, float *scores, const uint16_t *q,
			    uint32_t ld, const uint16_t *ck, uint32_t cap, const int32_t *n_entries,
			    uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d, bool original,
			    float scale);
	/*
	 * Decode pooling + forced blocks + top-k: for each (b, g) with n_entries[b] entries and
	 * n_blocks[b] blocks (the last one is the query's own block, partial or not), write
	 * sel [b, n_kv, topk] int32: the selected block ids in ascending order, padded with -1
	 * when fewer than topk blocks exist. Ranking: higher pooled score first, ties by lower block
	 * id; blocks with no valid entry score -inf (selected only to fill topk). Forced blocks are
	 * always selected (topk >= sink + local + 1 is required).
	 */
	int (*select_decode)(struct kb *kb, enum kb_stream s, int32_t *sel, const float *scores,
			     uint32_t cap, const int32_t *n_entries, const int32_t *n_blocks,
			     uint32_t b, uint32_t n_kv, const struct kb_sparse *sp);
	/*
	 * Prefill selection for one sequence, per query block: queries q [t, ld] at positions
	 * [p0, p0 + t) (p0 a multiple of block), against the complete entries of ck [n_kv, cap, d]
	 * (entry j usable by the query at position p iff stride*j + kernel <= p + 1). The score of
	 * block m for query block qb is the max over the queries of qb of their pooled scores
	 * (Forecast: raw dot, n_q == n_kv; original: softmax per head summed over the group, as in
	 * score_decode). Forced blocks and top-k as in select_decode with qb as the own block.
	 * Output sel [n_kv, n_qb, topk] (n_qb = ceil(t / block)). `work` is a device buffer of at
	 * least select_prefill_work(...) bytes.
	 */
	int (*select_prefill)(struct kb *kb, enum kb_stream s, int32_t *sel, const uint16_t *q,
			      uint32_t ld, uint32_t t, uint32_t p0, const uint16_t *ck,
			      uint32_t cap, uint32_t n_q, uint32_t n_kv, uint32_t d, bool original,
			      float scale, const struct kb_sparse *sp, void *work);
	size_t (*select_prefill_work)(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q,
				      uint32_t n_kv, const struct kb_sparse *sp);

	/*
	 * Block-cache diff for n caches (one per (sequence, KV head) of a layer), each of n_slots
	 * slots: map [n, n_slots] int32 holds the block id cached in each slot (-1 = empty),
	 * sel [n, k] the new selection (ascending, -1 padded), protect [n] a slot that must keep
	 * its block (-1 = none). In place on map: slots whose block is selected (or protected)
	 * keep it; newly selected blocks, in ascending block order, take the free slots
	 * (not kept) in ascending slot order; left-over free slots become -1.
	 * Outputs: load_slot [n, k] and load_block [n, k] (the slot to fill and the block to fetch,
	 * n_loads[i] entries valid, the rest -1) and hits[i] = selected blocks that were already
	 * cached. Requires k <= n_slots.
	 * With age != NULL ([n, n_slots] int32: the step at which each slot's block was last
	 * selected or loaded) the cache retains what it can: a slot not kept holds its block until
	 * a new block needs the slot. New blocks, in ascending block order, take the empty slots
	 * first (ascending), then the slots of the least recently selected blocks (ascending age,
	 * then slot); slots not taken keep their block and age; kept and filled slots get age =
	 * step. The load list follows that order.
	 */
	int (*cache_diff)(struct kb *kb, enum kb_stream s, int32_t *map, int32_t *age, int32_t step,
			  const int32_t *sel, const int32_t *protect, uint32_t n, uint32_t n_slots,
			  uint32_t k, int32_t *load_slot, int32_t *load_block, int32_t *n_loads,
			  int32_t *hits);

	/*
	 * Copy whole units: for i < n, copy unit_bytes from src + src_idx[i] * unit_bytes to
	 * dst + dst_idx[i] * unit_bytes (entries with an index < 0 are skipped). Either side may be
	 * registered host memory (the memsvc arena); CUDA uses a persistent kernel of n_ctas CTAs
	 * (0 = 16) with 16-byte loads (unit_bytes % 16 == 0, 16-byte aligned bases). Indices are
	 * device arrays. This is the gather (arena -> GPU cache) and the write-back (GPU -> arena).
	 */
	int (*copy_units)(struct kb *kb, enum kb_stream s, void *dst, const void *src,
			  const int32_t *dst_idx, const int32_t *src_idx, uint32_t n,
			  size_t unit_bytes, uint32_t n_ctas);
	/*
	 * copy_units with the index lists in host memory (read before the call returns), on the
	 * copy engines instead of SMs: CUDA enqueues the units (entries with an index < 0 skipped)
	 * as cudaMemcpyBatchAsync copies, so the gather issues no loads from the SMs that run the
	 * layer's kernels. Consecutive entries whose sources and destinations both follow on
	 * become one copy. n_streams (0 = 1, at most KB_DMA_STREAMS_MAX) splits the copies, by
	 * bytes, into that many batches on as many streams (stream s and the backend's own), which
	 * the driver may give to different copy engines; on stream s everything queued after the
	 * call waits for all of them. Same alignment rules as copy_units.
	 */
	int (*copy_units_dma)(struct kb *kb, enum kb_stream s, void *dst, const void *src,
			      const int32_t *h_dst_idx, const int32_t *h_src_idx, uint32_t n,
			      size_t unit_bytes, uint32_t n_streams);
	/*
	 * copy_units through the bulk-copy engine: CUDA on sm_90 and later runs n_ctas CTAs (0 =
	 * 8) of one issuing thread each, which move every unit in 8 KiB chunks (cp.async.bulk,
	 * through shared memory) instead of 16-byte loads and stores from every thread; before
	 * sm_90 and on the CPU it is copy_units. Same contract and alignment rules as copy_units.
	 */
	int (*copy_units_bulk)(struct kb *kb, enum kb_stream s, void *dst, const void *src,
			       const int32_t *dst_idx, const int32_t *src_idx, uint32_t n,
			       size_t unit_bytes, uint32_t n_ctas);

	/* ---- KV storage ---- */
	/*
	 * Pack keys and values of one sequence's tokens [t0, t0 + t) (k, v [t, ld], head h at
	 * columns h*d) into units: token p of head h goes to unit units + unit_idx[(p / block) -
	 * t0 / block][h] (a [n_blocks_touched, n_kv] int32 device array) at row p % block, K half
	 * then V half (unit = 2 * block * d bf16). Rows outside [t0, t0 + t) are not touched.
	 */
	int (*kv_pack)(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
		       const uint16_t *k, const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t,
		       uint32_t n_kv, uint32_t d, uint32_t block);
	/*
	 * Decode store: b sequences, one token each at position pos[b]: head h of k[b], v[b]
	 * (row stride ld) goes to unit units + unit_idx[b * n_kv + h] at row pos[b] % block.
	 */
	int (*kv_store)(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
			const uint16_t *k, const uint16_t *v, uint32_t ld, const int32_t *pos,
			uint32_t b, uint32_t n_kv, uint32_t d, uint32_t block);

	/* ---- attention ---- */
	/*
	 * Decode attention over units (the slot cache, or any unit table): for sequence b and
	 * query head h (KV head g = h / (n_q / n_kv)), attend over the units
	 * unit_idx [b, n_kv, n_units] (index into units; -1 = skip) with unit_len [b, n_kv, n_units]
	 * valid rows each (keys in the K half, values in the V half). q bf16 [b, ld_q], out bf16
	 * [b, ld_o] (head h at columns h*d). Flash-decoding with split-K on CUDA; `work` holds
	 * attn_decode_work(...) bytes of partials.
	 */
	int (*attn_decode)(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			   const uint16_t *q, uint32_t ld_q, const uint16_t *units,
			   const int32_t *unit_idx, const int32_t *unit_len, uint32_t n_units,
			   uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d, uint32_t block,
			   float scale, void *work);
	size_t (*attn_decode_work)(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_units,
				   uint32_t d);
	/*
	 * Dense decode over a contiguous cache: kc, vc bf16 [b, n_kv, t_cap, d], kv_len[b] keys.
	 */
	int (*attn_decode_dense)(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
				 const uint16_t *q, uint32_t ld_q, const uint16_t *kc,
				 const uint16_t *vc, uint32_t t_cap, const int32_t *kv_len,
				 uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d, float scale,
				 void *work);
	/*
	 * Prefill attention for one sequence: queries q [t, ld_q] at positions [p0, p0 + t), keys
	 * and values k, v [p0 + t, ld_kv] (head g at columns g*d), causal. If sel != NULL it is
	 * block-sparse: query block qb (queries with position / block == p0/block + qb) attends only
	 * to the KV blocks sel [n_kv, n_qb, topk] (-1 = none), causal inside its own block.
	 * Tensor cores on CUDA.
	 */
	int (*attn_prefill)(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			    const uint16_t *q, uint32_t ld_q, const uint16_t *k, const uint16_t *v,
			    uint32_t ld_kv, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
			    uint32_t d, float scale, const int32_t *sel, uint32_t topk,
			    uint32_t block);

	/*
	 * Attention table from a selection, for n caches (cache i = sequence i / n_kv, KV head
	 * i % n_kv) of k entries each. Block m = sel[i, j] (if sel is NULL, m = j: every block in
	 * order). If map != NULL (a slot cache of n_slots slots per cache, as cache_diff keeps it):
	 * unit_idx[i, j] = i * n_slots + s where map[i, s] == m; else (a resident store of n_slots
	 * blocks per cache): unit_idx[i, j] = i * n_slots + m. unit_len[i, j] = rows of block m that
	 * hold tokens: min(block, n_tokens[i / n_kv] - m * block). Entries with m < 0, m beyond the
	 * sequence, or (with map) m not cached get unit_idx -1 and unit_len 0. The table keeps the
	 * order of sel, so attention over it sums in ascending block order whatever the storage.
	 */
	int (*sel_units)(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
			 const int32_t *sel, const int32_t *map, const int32_t *n_tokens,
			 uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t block);

	/*
	 * Two sel_units tables of the same n caches through the same map (or the same resident
	 * layout, map NULL) in one call: table a (unit_idx, unit_len, sel, k) and table b (idx_b,
	 * len_b, sel_b, k_b). The result equals sel_units for a, then for b; a backend may read
	 * each cache's map row once for both (the decode's attention table and its tail block's
	 * slot, one launch instead of two).
	 */
	int (*sel_units2)(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
			  const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
			  const int32_t *sel_b, uint32_t k_b, const int32_t *map,
			  const int32_t *n_tokens, uint32_t n, uint32_t n_kv, uint32_t n_slots,
			  uint32_t block);

	/*
	 * Turn cache_diff's load lists into copy_units index lists, reading arena slots from the
	 * memsvc residency words (struct sp_unit_word in common/shm_abi.h; `words` is the unit-word
	 * pool of the ctl region, registered so kernels can read it). For cache i and load j <
	 * n_loads[i]: the unit word is words[word_base[i] + load_block[i, j]]; if its state is
	 * RESIDENT, dst_idx[i * k + j] = i * n_slots + load_slot[i, j] and src_idx[i * k + j] = its
	 * slot; otherwise (not resident, or j >= n_loads[i]) both are -1 and, for j < n_loads[i],
	 * the load counts in *misses (a device int32 counter, added to) unless the unit is
	 * ALLOCATED (a block this client is still writing: nothing to fetch). word_base is
	 * int64 [n].
	 */
	int (*resolve_loads)(struct kb *kb, enum kb_stream s, int32_t *dst_idx, int32_t *src_idx,
			     int32_t *misses, const int32_t *load_slot, const int32_t *load_block,
			     const int32_t *n_loads, const uint64_t *words, const int64_t *word_base,
			     uint32_t n, uint32_t n_slots, uint32_t k);
};

struct kb {
	const struct kb_ops *ops;
	enum kb_kind kind;
	void *priv;
};

struct kb_opts {
	enum kb_kind kind;
	int device;       /* CUDA device ordinal */
	int cpu_threads;  /* CPU backend: 0 = all cores */
	/*
	 * Device memory the backend may use, in bytes (0: no limit): an alloc that would take the
	 * device's memory in use past it fails with -ENOMEM, as if the device were that small.
	 * CUDA counts what the driver reports in use (this process's context and allocations, and
	 * any other process's); the CPU backend counts its own allocations.
	 */
	uint64_t mem_limit;
};

/*
 * Create a backend. KB_KIND_CUDA returns -ENODEV when the project was built without CUDA or
 * no GPU is present (the caller may fall back to CPU). Returns 0 or -errno; *out owned by the
 * caller, released with kb_destroy.
 */
int kb_open(const struct kb_opts *o, struct kb **out);
/*
 * resolve_loads on host arrays by the calling thread, the same rules (misses added to *misses
 * when not NULL): the CPU backend's op, and the resolve of a load list that came back to the
 * host (compute's --gather=dma). Returns 0 or -EINVAL.
 */
int kb_resolve_loads_host(int32_t *dst_idx, int32_t *src_idx, int32_t *misses,
			  const int32_t *load_slot, const int32_t *load_block, const int32_t *n_loads,
			  const uint64_t *words, const int64_t *word_base, uint32_t n,
			  uint32_t n_slots, uint32_t k);
void kb_destroy(struct kb *kb);
/* True when this build has the CUDA backend and a device is visible. */
bool kb_cuda_available(void);
/*
 * Provided by the CUDA backend (kernels/cuda): true when a device is visible. Builds without
 * CUDA get a fallback returning false (kernels/backend.c), as kb_cuda_open returns -ENODEV.
 */
bool kb_cuda_probe(void);

/* Backend constructors (used by kb_open; also by conformance tests directly). */
int kb_cpu_open(const struct kb_opts *o, struct kb **out);
int kb_cuda_open(const struct kb_opts *o, struct kb **out);

/* bf16 helpers (round to nearest even; NaN preserved). */
static inline float kb_bf16_to_f32(uint16_t h)
{
	union {
		uint32_t u;
		float f;
	} v = { .u = (uint32_t)h << 16 };
	return v.f;
}
static inline uint16_t kb_f32_to_bf16(float f)
{
	union {
		float f;
		uint32_t u;
	} v = { .f = f };
	if ((v.u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((v.u >> 16) | 0x40);
	v.u += 0x7fffu + ((v.u >> 16) & 1u);
	return (uint16_t)(v.u >> 16);
}

#endif
