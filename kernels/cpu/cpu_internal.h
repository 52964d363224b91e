/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to kernels/cpu: the CPU backend's state, the op entry points that cpu_backend.c puts
 * in the vtable, and small fp32 helpers shared by the op families. Ops run synchronously on
 * the calling thread (OpenMP inside when built with it).
 */
#ifndef SPARDA_KERNELS_CPU_INTERNAL_H
#define SPARDA_KERNELS_CPU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

struct cpu_priv {
	int threads;	    /* OpenMP threads for the op loops (>= 1) */
	uint64_t mem_limit; /* kb_opts.mem_limit (0: none) */
	uint64_t mem_used;  /* bytes held by cpu_alloc (usable sizes) */
};

static inline int cpu_threads(const struct kb *kb)
{
	return ((const struct cpu_priv *)kb->priv)->threads;
}

static inline bool cpu_stream_ok(enum kb_stream s)
{
	return (unsigned)s < KB_STREAM_COUNT;
}

/* dst[i] = float(src[i]) for n bf16 values. */
static inline void cpu_row_to_f32(float *dst, const uint16_t *src, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		dst[i] = kb_bf16_to_f32(src[i]);
}

/*
 * s[r, j] = alpha * sum_c a[r, c] * bt[c, j] for r < rows, j < cols: a [rows, d] fp32, bt the
 * transposed right operand [d, ldb] (columns [0, cols) used), s [rows, lds]. A single-threaded
 * cblas_sgemm (the backend keeps BLAS to one thread; callers run it inside their OpenMP team),
 * or plain loops for a small product.
 */
void cpu_mm_tn(float *s, uint32_t lds, const float *a, const float *bt, uint32_t ldb, uint32_t rows,
	       uint32_t cols, uint32_t d, float alpha);

/* elementwise (cpu_elementwise.c) */
int cpu_embed(struct kb *kb, enum kb_stream s, float *out, const uint16_t *table,
	      const int32_t *ids, uint32_t n, uint32_t hidden, uint32_t vocab, float scale);
int cpu_add_rmsnorm(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
		    uint32_t ld_delta, float delta_scale, const uint16_t *w, uint16_t *out,
		    uint32_t n, uint32_t hidden, float eps);
int cpu_add_residual(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
		     uint32_t ld_delta, float delta_scale, uint32_t n, uint32_t hidden);
int cpu_rope(struct kb *kb, enum kb_stream s, uint16_t *x, uint32_t ld, uint32_t n,
	     uint32_t n_heads, uint32_t head_dim, const int32_t *pos, const float *inv_freq,
	     float mscale);
int cpu_swiglu(struct kb *kb, enum kb_stream s, uint16_t *out, const uint16_t *gu, uint32_t n,
	       uint32_t ff);
int cpu_argmax(struct kb *kb, enum kb_stream s, int32_t *out, const float *logits, uint32_t n,
	       uint32_t vocab);

/* GEMM (cpu_gemm.c) */
int cpu_gemm(struct kb *kb, enum kb_stream s, uint32_t m, uint32_t n, uint32_t k, const uint16_t *a,
	     uint32_t lda, const uint16_t *w, uint32_t ldw, void *c, uint32_t ldc, bool c_f32,
	     float alpha, float beta);

/* compressed keys, scores, selection (cpu_select*.c), cache diff (cpu_cache_diff.c) */
int cpu_ck_prefill(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap, uint16_t *ring,
		   const uint16_t *k, uint32_t ld, uint32_t t, uint32_t n_kv, uint32_t d,
		   const struct kb_sparse *sp);
int cpu_ck_append(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap, uint16_t *ring,
		  const uint16_t *k, uint32_t ld, const int32_t *pos, uint32_t b, uint32_t n_kv,
		  uint32_t d, const struct kb_sparse *sp);
int cpu_score_decode(struct kb *kb, enum kb_stream s, float *scores, const uint16_t *q, uint32_t ld,
		     const uint16_t *ck, uint32_t cap, const int32_t *n_entries, uint32_t b,
		     uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale);
int cpu_select_decode(struct kb *kb, enum kb_stream s, int32_t *sel, const float *scores,
		      uint32_t cap, const int32_t *n_entries, const int32_t *n_blocks, uint32_t b,
		      uint32_t n_kv, const struct kb_sparse *sp);
int cpu_select_prefill(struct kb *kb, enum kb_stream s, int32_t *sel, const uint16_t *q,
		       uint32_t ld, uint32_t t, uint32_t p0, const uint16_t *ck, uint32_t cap,
		       uint32_t n_q, uint32_t n_kv, uint32_t d, bool original, float scale,
		       const struct kb_sparse *sp, void *work);
size_t cpu_select_prefill_work(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
			       const struct kb_sparse *sp);
int cpu_cache_diff(struct kb *kb, enum kb_stream s, int32_t *map, int32_t *age, int32_t step,
		   const int32_t *sel, const int32_t *protect, uint32_t n, uint32_t n_slots,
		   uint32_t k, int32_t *load_slot, int32_t *load_block, int32_t *n_loads,
		   int32_t *hits);

/* Shared by both selections: true when the sparse parameters are usable. */
bool cpu_sparse_ok(const struct kb_sparse *sp);
/*
 * Pool entry scores s[0, n_entries) into n_blocks blocks, force sink and local blocks and write
 * the top-k block ids ascending, -1 padded, into sel[topk]. heap: scratch of topk entries.
 */
struct cpu_rank {
	float score;
	int32_t id;
};
void cpu_select_row(int32_t *sel, const float *s, uint32_t n_entries, uint32_t n_blocks,
		    const struct kb_sparse *sp, struct cpu_rank *heap);

/* KV units (cpu_kv.c, cpu_units.c) */
int cpu_copy_units(struct kb *kb, enum kb_stream s, void *dst, const void *src,
		   const int32_t *dst_idx, const int32_t *src_idx, uint32_t n, size_t unit_bytes,
		   uint32_t n_ctas);
int cpu_copy_units_dma(struct kb *kb, enum kb_stream s, void *dst, const void *src,
		       const int32_t *h_dst_idx, const int32_t *h_src_idx, uint32_t n,
		       size_t unit_bytes, uint32_t n_streams);
int cpu_kv_pack(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
		const uint16_t *k, const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t,
		uint32_t n_kv, uint32_t d, uint32_t block);
int cpu_kv_store(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
		 const uint16_t *k, const uint16_t *v, uint32_t ld, const int32_t *pos, uint32_t b,
		 uint32_t n_kv, uint32_t d, uint32_t block);
int cpu_sel_units(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
		  const int32_t *sel, const int32_t *map, const int32_t *n_tokens, uint32_t n,
		  uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t block);
int cpu_sel_units2(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
		   const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
		   const int32_t *sel_b, uint32_t k_b, const int32_t *map, const int32_t *n_tokens,
		   uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t block);
int cpu_resolve_loads(struct kb *kb, enum kb_stream s, int32_t *dst_idx, int32_t *src_idx,
		      int32_t *misses, const int32_t *load_slot, const int32_t *load_block,
		      const int32_t *n_loads, const uint64_t *words, const int64_t *word_base,
		      uint32_t n, uint32_t n_slots, uint32_t k);

/* attention (cpu_attention.c) */
int cpu_attn_decode(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
		    const uint16_t *q, uint32_t ld_q, const uint16_t *units,
		    const int32_t *unit_idx, const int32_t *unit_len, uint32_t n_units, uint32_t b,
		    uint32_t n_q, uint32_t n_kv, uint32_t d, uint32_t block, float scale,
		    void *work);
size_t cpu_attn_decode_work(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_units, uint32_t d);
int cpu_attn_decode_dense(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			  const uint16_t *q, uint32_t ld_q, const uint16_t *kc, const uint16_t *vc,
			  uint32_t t_cap, const int32_t *kv_len, uint32_t b, uint32_t n_q,
			  uint32_t n_kv, uint32_t d, float scale, void *work);
int cpu_attn_prefill(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
		     const uint16_t *q, uint32_t ld_q, const uint16_t *k, const uint16_t *v,
		     uint32_t ld_kv, uint32_t t, uint32_t p0, uint32_t n_q, uint32_t n_kv,
		     uint32_t d, float scale, const int32_t *sel, uint32_t topk, uint32_t block);

#endif
