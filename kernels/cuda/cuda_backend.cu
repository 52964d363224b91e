/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CUDA backend: device setup, memory, streams and events, and the kb_ops table that forwards
 * each op to its family (elementwise, gemm, ckeys, select, kvcache, attn_decode, attn_prefill)
 * with the stream it names. CUDA errors become -errno here and in kc_err.
 */
#include <stdlib.h>
#include <string.h>

#include "attn_decode.cuh"
#include "attn_prefill.cuh"
#include "ckeys.cuh"
#include "cuda_backend.cuh"
#include "green.cuh"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "kc_common.cuh"
#include "kvcache.cuh"
#include "select.cuh"

extern "C" {
#include "log.h"
}

int kc_err(cudaError_t e, const char *what)
{
	static struct log_ratelimit rl;
	log_write_rl(&rl, 1000, LOG_LEVEL_ERROR, "kcuda", "cuda call failed", "call=%s err=%s",
		     what, cudaGetErrorString(e));
	switch (e) {
	case cudaErrorMemoryAllocation:
		return -ENOMEM;
	case cudaErrorInvalidValue:
	case cudaErrorInvalidConfiguration:
	case cudaErrorInvalidDevicePointer:
	case cudaErrorInvalidMemcpyDirection:
	case cudaErrorHostMemoryAlreadyRegistered:
	case cudaErrorHostMemoryNotRegistered:
		return -EINVAL;
	case cudaErrorNoDevice:
	case cudaErrorInsufficientDriver:
	case cudaErrorInvalidDevice:
		return -ENODEV;
	default:
		return -EIO;
	}
}

static struct kc_backend *kc_of(struct kb *kb)
{
	return (struct kc_backend *)kb->priv;
}

static bool kc_stream_ok(enum kb_stream s)
{
	return (unsigned)s < KB_STREAM_COUNT;
}

#define KC_ST(kb, s) (kc_of(kb)->st[s])
#define KC_NEED_STREAM(s)                                                                          \
	do {                                                                                       \
		if (!kc_stream_ok(s))                                                              \
			return -EINVAL;                                                            \
	} while (0)

/* Scratch of at least `bytes` for stream s; growing waits for the stream's earlier users. */
static int kc_scratch(struct kb *kb, enum kb_stream s, size_t bytes, void **out)
{
	struct kc_backend *c = kc_of(kb);
	if (c->scratch_bytes[s] < bytes) {
		size_t n = bytes + bytes / 2 + 4096;
		KC_CHECK(cudaStreamSynchronize(c->st[s]));
		if (c->scratch[s])
			KC_CHECK(cudaFree(c->scratch[s]));
		c->scratch[s] = NULL;
		c->scratch_bytes[s] = 0;
		KC_CHECK(cudaMalloc(&c->scratch[s], n));
		c->scratch_bytes[s] = n;
	}
	*out = c->scratch[s];
	return 0;
}

/*
 * At least n zeroed arrival counters for stream s (kernels that use them leave them zeroed);
 * growing waits for the stream's earlier users.
 */
static int kc_counters(struct kb *kb, enum kb_stream s, size_t n, uint32_t **out)
{
	struct kc_backend *c = kc_of(kb);
	if (c->counters_n[s] < n) {
		size_t m = n + n / 2 + 256;
		KC_CHECK(cudaStreamSynchronize(c->st[s]));
		if (c->counters[s])
			KC_CHECK(cudaFree(c->counters[s]));
		c->counters[s] = NULL;
		c->counters_n[s] = 0;
		KC_CHECK(cudaMalloc(&c->counters[s], m * sizeof(uint32_t)));
		KC_CHECK(cudaMemset(c->counters[s], 0, m * sizeof(uint32_t)));
		c->counters_n[s] = m;
	}
	*out = c->counters[s];
	return 0;
}

/* ---- memory, streams, events ---- */

static void kc_destroy(struct kb *kb)
{
	if (!kb)
		return;
	struct kc_backend *c = kc_of(kb);
	cudaSetDevice(c->device);
	for (int s = 0; s < KB_STREAM_COUNT; s++) {
		if (c->st[s])
			cudaStreamSynchronize(c->st[s]);
		cudaFree(c->scratch[s]);
		cudaFree(c->counters[s]);
	}
	free(c->dma_ptrs);
	free(c->dma_sizes);
	for (int j = 0; j < KB_DMA_STREAMS_MAX; j++) {
		if (j < KB_DMA_STREAMS_MAX - 1 && c->dma_st[j]) {
			cudaStreamSynchronize(c->dma_st[j]);
			cudaStreamDestroy(c->dma_st[j]);
		}
		if (c->dma_ev[j])
			cudaEventDestroy(c->dma_ev[j]);
	}
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->green) {
		kc_green_free(c->green); /* owns the compute and copy streams */
		if (c->st[KB_STREAM_DMA])
			cudaStreamDestroy(c->st[KB_STREAM_DMA]);
	} else {
		for (int s = 0; s < KB_STREAM_COUNT; s++)
			if (c->st[s])
				cudaStreamDestroy(c->st[s]);
	}
	free(c);
}

static int kc_alloc(struct kb *kb, size_t bytes, void **out)
{
	struct kc_backend *c = (struct kc_backend *)kb->priv;

	*out = NULL;
	if (c->mem_limit) {
		size_t fr = 0, tot = 0;

		KC_CHECK(cudaMemGetInfo(&fr, &tot));
		if ((uint64_t)(tot - fr) + bytes > c->mem_limit) {
			log_error("kcuda", "device memory limit reached",
				  "bytes=%zu in_use=%zu limit=%llu", bytes, tot - fr,
				  (unsigned long long)c->mem_limit);
			return -ENOMEM;
		}
	}
	KC_CHECK(cudaMalloc(out, bytes ? bytes : 16));
	return 0;
}

static void kc_free(struct kb *kb, void *p)
{
	if (p)
		cudaFree(p);
}

static int kc_memcpy(struct kb *kb, void *dst, const void *src, size_t bytes, enum kb_copy_dir dir,
		     enum kb_stream s)
{
	KC_NEED_STREAM(s);
	if ((unsigned)dir > KB_H2H)
		return -EINVAL;
	if (bytes == 0)
		return 0;
	/* cudaMemcpyDefault lets UVA route registered host memory through its device view. */
	KC_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, KC_ST(kb, s)));
	return 0;
}

static int kc_memset(struct kb *kb, void *dst, int byte, size_t bytes, enum kb_stream s)
{
	KC_NEED_STREAM(s);
	if (bytes == 0)
		return 0;
	KC_CHECK(cudaMemsetAsync(dst, byte, bytes, KC_ST(kb, s)));
	return 0;
}

static int kc_host_register(struct kb *kb, void *host, size_t bytes, void **dev)
{
	unsigned flags = cudaHostRegisterMapped | cudaHostRegisterPortable;
	cudaError_t e = cudaHostRegister(host, bytes, flags);
	if (e != cudaSuccess) {
		/* A read-only mapping (memsvc's ctl region) registers only as read-only. */
		(void)cudaGetLastError();
		e = cudaHostRegister(host, bytes, flags | cudaHostRegisterReadOnly);
	}
	if (e != cudaSuccess)
		return kc_err(e, "cudaHostRegister");
	e = cudaHostGetDevicePointer(dev, host, 0);
	if (e != cudaSuccess) {
		cudaHostUnregister(host);
		return kc_err(e, "cudaHostGetDevicePointer");
	}
	return 0;
}

static int kc_host_unregister(struct kb *kb, void *host)
{
	KC_CHECK(cudaHostUnregister(host));
	return 0;
}

static int kc_sync(struct kb *kb, enum kb_stream s)
{
	KC_NEED_STREAM(s);
	KC_CHECK(cudaStreamSynchronize(KC_ST(kb, s)));
	return 0;
}

static int kc_event_new(struct kb *kb, struct kb_event **out)
{
	struct kb_event *e = (struct kb_event *)calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	cudaError_t r = cudaEventCreate(&e->ev);
	if (r != cudaSuccess) {
		free(e);
		return kc_err(r, "cudaEventCreate");
	}
	*out = e;
	return 0;
}

static void kc_event_free(struct kb *kb, struct kb_event *e)
{
	if (!e)
		return;
	cudaEventDestroy(e->ev);
	free(e);
}

static int kc_event_record(struct kb *kb, struct kb_event *e, enum kb_stream s)
{
	KC_NEED_STREAM(s);
	KC_CHECK(cudaEventRecord(e->ev, KC_ST(kb, s)));
	return 0;
}

static int kc_stream_wait(struct kb *kb, enum kb_stream s, struct kb_event *e)
{
	KC_NEED_STREAM(s);
	KC_CHECK(cudaStreamWaitEvent(KC_ST(kb, s), e->ev, 0));
	return 0;
}

static int kc_event_sync(struct kb *kb, struct kb_event *e)
{
	KC_CHECK(cudaEventSynchronize(e->ev));
	return 0;
}

static int kc_event_elapsed(struct kb *kb, struct kb_event *a, struct kb_event *b, float *ms)
{
	KC_CHECK(cudaEventElapsedTime(ms, a->ev, b->ev));
	return 0;
}

static int kc_mem_info(struct kb *kb, size_t *free_bytes, size_t *total_bytes)
{
	KC_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
	return 0;
}

/* ---- op forwarding ---- */

static int kc_op_embed(struct kb *kb, enum kb_stream s, float *out, const uint16_t *table,
		       const int32_t *ids, uint32_t n, uint32_t hidden, uint32_t vocab, float scale)
{
	KC_NEED_STREAM(s);
	return kc_embed(KC_ST(kb, s), out, table, ids, n, hidden, vocab, scale);
}

static int kc_op_add_rmsnorm(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
			     uint32_t ld_delta, float delta_scale, const uint16_t *w, uint16_t *out,
			     uint32_t n, uint32_t hidden, float eps)
{
	KC_NEED_STREAM(s);
	return kc_add_rmsnorm(KC_ST(kb, s), resid, delta, ld_delta, delta_scale, w, out, n, hidden,
			      eps);
}

static int kc_op_add_residual(struct kb *kb, enum kb_stream s, float *resid, const uint16_t *delta,
			      uint32_t ld_delta, float delta_scale, uint32_t n, uint32_t hidden)
{
	KC_NEED_STREAM(s);
	return kc_add_residual(KC_ST(kb, s), resid, delta, ld_delta, delta_scale, n, hidden);
}

static int kc_op_rope(struct kb *kb, enum kb_stream s, uint16_t *x, uint32_t ld, uint32_t n,
		      uint32_t n_heads, uint32_t head_dim, const int32_t *pos,
		      const float *inv_freq, float mscale)
{
	KC_NEED_STREAM(s);
	return kc_rope(KC_ST(kb, s), x, ld, n, n_heads, head_dim, pos, inv_freq, mscale);
}

static int kc_op_swiglu(struct kb *kb, enum kb_stream s, uint16_t *out, const uint16_t *gu,
			uint32_t n, uint32_t ff)
{
	KC_NEED_STREAM(s);
	return kc_swiglu(KC_ST(kb, s), out, gu, n, ff);
}

static int kc_op_argmax(struct kb *kb, enum kb_stream s, int32_t *out, const float *logits,
			uint32_t n, uint32_t vocab)
{
	KC_NEED_STREAM(s);
	return kc_argmax(KC_ST(kb, s), out, logits, n, vocab);
}

static int kc_op_gemm(struct kb *kb, enum kb_stream s, uint32_t m, uint32_t n, uint32_t k,
		      const uint16_t *a, uint32_t lda, const uint16_t *w, uint32_t ldw, void *c,
		      uint32_t ldc, bool c_f32, float alpha, float beta)
{
	KC_NEED_STREAM(s);
	return kc_gemm(kc_of(kb)->blas, KC_ST(kb, s), m, n, k, a, lda, w, ldw, c, ldc, c_f32, alpha,
		       beta);
}

static int kc_op_ck_prefill(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap,
			    uint16_t *ring, const uint16_t *k, uint32_t ld, uint32_t t,
			    uint32_t n_kv, uint32_t d, const struct kb_sparse *sp)
{
	KC_NEED_STREAM(s);
	return kc_ck_prefill(KC_ST(kb, s), ck, cap, ring, k, ld, t, n_kv, d, sp);
}

static int kc_op_ck_append(struct kb *kb, enum kb_stream s, uint16_t *ck, uint32_t cap,
			   uint16_t *ring, const uint16_t *k, uint32_t ld, const int32_t *pos,
			   uint32_t b, uint32_t n_kv, uint32_t d, const struct kb_sparse *sp)
{
	KC_NEED_STREAM(s);
	return kc_ck_append(KC_ST(kb, s), ck, cap, ring, k, ld, pos, b, n_kv, d, sp);
}

static int kc_op_score_decode(struct kb *kb, enum kb_stream s, float *scores, const uint16_t *q,
			      uint32_t ld, const uint16_t *ck, uint32_t cap,
			      const int32_t *n_entries, uint32_t b, uint32_t n_q, uint32_t n_kv,
			      uint32_t d, bool original, float scale)
{
	void *scratch = NULL;
	KC_NEED_STREAM(s);
	if (original) {
		int e = kc_scratch(kb, s, kc_score_decode_scratch(b, n_q, cap), &scratch);
		if (e)
			return e;
	}
	return kc_score_decode(KC_ST(kb, s), scratch, scores, q, ld, ck, cap, n_entries, b, n_q,
			       n_kv, d, original, scale);
}

static int kc_op_select_decode(struct kb *kb, enum kb_stream s, int32_t *sel, const float *scores,
			       uint32_t cap, const int32_t *n_entries, const int32_t *n_blocks,
			       uint32_t b, uint32_t n_kv, const struct kb_sparse *sp)
{
	KC_NEED_STREAM(s);
	return kc_select_decode(KC_ST(kb, s), sel, scores, cap, n_entries, n_blocks, b, n_kv, sp);
}

static int kc_op_select_prefill(struct kb *kb, enum kb_stream s, int32_t *sel, const uint16_t *q,
				uint32_t ld, uint32_t t, uint32_t p0, const uint16_t *ck,
				uint32_t cap, uint32_t n_q, uint32_t n_kv, uint32_t d,
				bool original, float scale, const struct kb_sparse *sp, void *work)
{
	KC_NEED_STREAM(s);
	return kc_select_prefill(KC_ST(kb, s), sel, q, ld, t, p0, ck, cap, n_q, n_kv, d, original,
				 scale, sp, work);
}

static size_t kc_op_select_prefill_work(struct kb *kb, uint32_t t, uint32_t p0, uint32_t n_q,
					uint32_t n_kv, const struct kb_sparse *sp)
{
	return kc_select_prefill_work(t, p0, n_q, n_kv, sp);
}

static int kc_op_cache_diff(struct kb *kb, enum kb_stream s, int32_t *map, int32_t *age,
			    int32_t step, const int32_t *sel, const int32_t *protect, uint32_t n,
			    uint32_t n_slots, uint32_t k, int32_t *load_slot, int32_t *load_block,
			    int32_t *n_loads, int32_t *hits)
{
	KC_NEED_STREAM(s);
	return kc_cache_diff(KC_ST(kb, s), map, age, step, sel, protect, n, n_slots, k, load_slot,
			     load_block, n_loads, hits);
}

static int kc_op_copy_units(struct kb *kb, enum kb_stream s, void *dst, const void *src,
			    const int32_t *dst_idx, const int32_t *src_idx, uint32_t n,
			    size_t unit_bytes, uint32_t n_ctas)
{
	KC_NEED_STREAM(s);
	return kc_copy_units(KC_ST(kb, s), dst, src, dst_idx, src_idx, n, unit_bytes, n_ctas);
}

static int kc_op_copy_units_bulk(struct kb *kb, enum kb_stream s, void *dst, const void *src,
				 const int32_t *dst_idx, const int32_t *src_idx, uint32_t n,
				 size_t unit_bytes, uint32_t n_ctas)
{
	KC_NEED_STREAM(s);
	return kc_copy_units_bulk(KC_ST(kb, s), dst, src, dst_idx, src_idx, n, unit_bytes, n_ctas);
}

/* The gather on the copy engines: runs of units merged into single copies, split by bytes into
 * n_streams batches (source accessed in stream order), the first on stream s and the rest on
 * the backend's DMA streams, which wait for what s queued before and which s then waits for. */
static int kc_op_copy_units_dma(struct kb *kb, enum kb_stream s, void *dst, const void *src,
				const int32_t *h_dst_idx, const int32_t *h_src_idx, uint32_t n,
				size_t unit_bytes, uint32_t n_streams)
{
	struct kc_backend *c = kc_of(kb);
	struct cudaMemcpyAttributes attr = {};
	size_t m = 0, first = 0, total = 0;

	KC_NEED_STREAM(s);
	if (!dst || !src || !h_dst_idx || !h_src_idx || !unit_bytes || unit_bytes % 16 ||
	    (uintptr_t)dst % 16 || (uintptr_t)src % 16 || n_streams > KB_DMA_STREAMS_MAX)
		return -EINVAL;
	if (n > c->dma_cap) {
		void **p = (void **)realloc(c->dma_ptrs, 2 * (size_t)n * sizeof(*p));
		size_t *z = p ? (size_t *)realloc(c->dma_sizes, (size_t)n * sizeof(*z)) : NULL;
		if (p)
			c->dma_ptrs = p;
		if (!z)
			return -ENOMEM;
		c->dma_sizes = z;
		c->dma_cap = n;
	}
	void **dsts = c->dma_ptrs, **srcs = c->dma_ptrs + c->dma_cap;
	for (uint32_t i = 0; i < n; i++) {
		if (h_dst_idx[i] < 0 || h_src_idx[i] < 0)
			continue;
		char *d = (char *)dst + (size_t)h_dst_idx[i] * unit_bytes;
		char *f = (char *)src + (size_t)h_src_idx[i] * unit_bytes;
		total += unit_bytes;
		if (m && d == (char *)dsts[m - 1] + c->dma_sizes[m - 1] &&
		    f == (char *)srcs[m - 1] + c->dma_sizes[m - 1]) {
			c->dma_sizes[m - 1] += unit_bytes;
			continue;
		}
		dsts[m] = d;
		srcs[m] = f;
		c->dma_sizes[m++] = unit_bytes;
	}
	if (!m)
		return 0;
	attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
	attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
	cudaStream_t home = KC_ST(kb, s);
	uint32_t ns = n_streams ? n_streams : 1;
	if (ns > m)
		ns = (uint32_t)m;
	if (ns > 1)
		KC_CHECK(cudaEventRecord(c->dma_ev[0], home));
	size_t at = 0, moved = 0;
	for (uint32_t j = 0; j < ns && at < m; j++) {
		/* batch j ends where the bytes so far reach (j + 1) / ns of the total */
		size_t end = at, want = j + 1 == ns ? total : total / ns * (j + 1);
		do
			moved += c->dma_sizes[end++];
		while (end < m && moved < want);
		cudaStream_t t = j ? c->dma_st[j - 1] : home;
		if (j)
			KC_CHECK(cudaStreamWaitEvent(t, c->dma_ev[0], 0));
		KC_CHECK(cudaMemcpyBatchAsync(dsts + at, (const void *const *)(srcs + at),
					      c->dma_sizes + at, end - at, &attr, &first, 1, t));
		if (j) {
			KC_CHECK(cudaEventRecord(c->dma_ev[j], t));
			KC_CHECK(cudaStreamWaitEvent(home, c->dma_ev[j], 0));
		}
		at = end;
	}
	return 0;
}

static int kc_op_kv_pack(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
			 const uint16_t *k, const uint16_t *v, uint32_t ld, uint32_t t0, uint32_t t,
			 uint32_t n_kv, uint32_t d, uint32_t block)
{
	KC_NEED_STREAM(s);
	return kc_kv_pack(KC_ST(kb, s), units, unit_idx, k, v, ld, t0, t, n_kv, d, block);
}

static int kc_op_kv_store(struct kb *kb, enum kb_stream s, uint16_t *units, const int32_t *unit_idx,
			  const uint16_t *k, const uint16_t *v, uint32_t ld, const int32_t *pos,
			  uint32_t b, uint32_t n_kv, uint32_t d, uint32_t block)
{
	KC_NEED_STREAM(s);
	return kc_kv_store(KC_ST(kb, s), units, unit_idx, k, v, ld, pos, b, n_kv, d, block);
}

static int kc_op_attn_decode(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			     const uint16_t *q, uint32_t ld_q, const uint16_t *units,
			     const int32_t *unit_idx, const int32_t *unit_len, uint32_t n_units,
			     uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d, uint32_t block,
			     float scale, void *work)
{
	uint32_t *cnt;
	KC_NEED_STREAM(s);
	int e = kc_counters(kb, s, kc_attn_decode_counters(b, n_q, n_kv), &cnt);
	if (e)
		return e;
	return kc_attn_decode(KC_ST(kb, s), out, ld_o, q, ld_q, units, unit_idx, unit_len, n_units,
			      b, n_q, n_kv, d, block, scale, work, kc_of(kb)->attn_mma, cnt);
}

static size_t kc_op_attn_decode_work(struct kb *kb, uint32_t b, uint32_t n_q, uint32_t n_units,
				     uint32_t d)
{
	return kc_attn_decode_work(b, n_q, n_units, d);
}

static int kc_op_attn_decode_dense(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
				   const uint16_t *q, uint32_t ld_q, const uint16_t *kc,
				   const uint16_t *vc, uint32_t t_cap, const int32_t *kv_len,
				   uint32_t b, uint32_t n_q, uint32_t n_kv, uint32_t d, float scale,
				   void *work)
{
	void *scratch;
	KC_NEED_STREAM(s);
	if (n_kv == 0)
		return -EINVAL;
	/* The contract gives `work` no size, so the backend's own scratch holds the partials. */
	uint32_t *cnt;
	int e = kc_scratch(kb, s, kc_attn_decode_dense_scratch(b, n_q, n_kv, t_cap, d), &scratch);
	if (!e)
		e = kc_counters(kb, s, kc_attn_decode_counters(b, n_q, n_kv), &cnt);
	if (e)
		return e;
	return kc_attn_decode_dense(KC_ST(kb, s), out, ld_o, q, ld_q, kc, vc, t_cap, kv_len, b, n_q,
				    n_kv, d, scale, scratch, kc_of(kb)->attn_mma, cnt);
}

static int kc_op_attn_prefill(struct kb *kb, enum kb_stream s, uint16_t *out, uint32_t ld_o,
			      const uint16_t *q, uint32_t ld_q, const uint16_t *k,
			      const uint16_t *v, uint32_t ld_kv, uint32_t t, uint32_t p0,
			      uint32_t n_q, uint32_t n_kv, uint32_t d, float scale,
			      const int32_t *sel, uint32_t topk, uint32_t block)
{
	KC_NEED_STREAM(s);
	return kc_attn_prefill(KC_ST(kb, s), out, ld_o, q, ld_q, k, v, ld_kv, t, p0, n_q, n_kv, d,
			       scale, sel, topk, block);
}

/* Table ops implemented in units.cu (no header of their own there). */
extern "C" int cuda_sel_units(cudaStream_t st, int32_t *unit_idx, int32_t *unit_len,
			      const int32_t *sel, const int32_t *map, const int32_t *n_tokens,
			      uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t k,
			      uint32_t block);
extern "C" int cuda_sel_units2(cudaStream_t st, int32_t *unit_idx, int32_t *unit_len,
			       const int32_t *sel, uint32_t k, int32_t *idx_b, int32_t *len_b,
			       const int32_t *sel_b, uint32_t k_b, const int32_t *map,
			       const int32_t *n_tokens, uint32_t n, uint32_t n_kv, uint32_t n_slots,
			       uint32_t block);
extern "C" int cuda_resolve_loads(cudaStream_t st, int32_t *dst_idx, int32_t *src_idx,
				  int32_t *misses, const int32_t *load_slot,
				  const int32_t *load_block, const int32_t *n_loads,
				  const uint64_t *words, const int64_t *word_base, uint32_t n,
				  uint32_t n_slots, uint32_t k);

static int kc_op_sel_units(struct kb *kb, enum kb_stream s, int32_t *unit_idx, int32_t *unit_len,
			   const int32_t *sel, const int32_t *map, const int32_t *n_tokens,
			   uint32_t n, uint32_t n_kv, uint32_t n_slots, uint32_t k, uint32_t block)
{
	KC_NEED_STREAM(s);
	return cuda_sel_units(KC_ST(kb, s), unit_idx, unit_len, sel, map, n_tokens, n, n_kv,
			      n_slots, k, block);
}

static int kc_op_sel_units2(struct kb *kb, enum kb_stream s, int32_t *unit_idx,
			    int32_t *unit_len, const int32_t *sel, uint32_t k, int32_t *idx_b,
			    int32_t *len_b, const int32_t *sel_b, uint32_t k_b, const int32_t *map,
			    const int32_t *n_tokens, uint32_t n, uint32_t n_kv, uint32_t n_slots,
			    uint32_t block)
{
	KC_NEED_STREAM(s);
	return cuda_sel_units2(KC_ST(kb, s), unit_idx, unit_len, sel, k, idx_b, len_b, sel_b, k_b,
			       map, n_tokens, n, n_kv, n_slots, block);
}

static int kc_op_resolve_loads(struct kb *kb, enum kb_stream s, int32_t *dst_idx, int32_t *src_idx,
			       int32_t *misses, const int32_t *load_slot, const int32_t *load_block,
			       const int32_t *n_loads, const uint64_t *words,
			       const int64_t *word_base, uint32_t n, uint32_t n_slots, uint32_t k)
{
	KC_NEED_STREAM(s);
	return cuda_resolve_loads(KC_ST(kb, s), dst_idx, src_idx, misses, load_slot, load_block,
				  n_loads, words, word_base, n, n_slots, k);
}

static const struct kb_ops kc_ops = {
    .name = "cuda",
    .destroy = kc_destroy,
    .alloc = kc_alloc,
    .free = kc_free,
    .memcpy = kc_memcpy,
    .memset = kc_memset,
    .host_register = kc_host_register,
    .host_unregister = kc_host_unregister,
    .sync = kc_sync,
    .event_new = kc_event_new,
    .event_free = kc_event_free,
    .event_record = kc_event_record,
    .stream_wait = kc_stream_wait,
    .event_sync = kc_event_sync,
    .event_elapsed = kc_event_elapsed,
    .mem_info = kc_mem_info,
    .embed = kc_op_embed,
    .add_rmsnorm = kc_op_add_rmsnorm,
    .add_residual = kc_op_add_residual,
    .rope = kc_op_rope,
    .swiglu = kc_op_swiglu,
    .argmax = kc_op_argmax,
    .gemm = kc_op_gemm,
    .ck_prefill = kc_op_ck_prefill,
    .ck_append = kc_op_ck_append,
    .score_decode = kc_op_score_decode,
    .select_decode = kc_op_select_decode,
    .select_prefill = kc_op_select_prefill,
    .select_prefill_work = kc_op_select_prefill_work,
    .cache_diff = kc_op_cache_diff,
    .copy_units = kc_op_copy_units,
    .copy_units_dma = kc_op_copy_units_dma,
    .copy_units_bulk = kc_op_copy_units_bulk,
    .kv_pack = kc_op_kv_pack,
    .kv_store = kc_op_kv_store,
    .attn_decode = kc_op_attn_decode,
    .attn_decode_work = kc_op_attn_decode_work,
    .attn_decode_dense = kc_op_attn_decode_dense,
    .attn_prefill = kc_op_attn_prefill,
    .sel_units = kc_op_sel_units,
    .sel_units2 = kc_op_sel_units2,
    .resolve_loads = kc_op_resolve_loads,
};

extern "C" bool kb_cuda_probe(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError(); /* clear the non-sticky error so later calls start clean */
		return false;
	}
	return n > 0;
}

static int kc_setup_rest(struct kc_backend *c);

static int kc_setup(struct kc_backend *c)
{
	int lo = 0, hi = 0;
	KC_CHECK(cudaSetDevice(c->device));
	KC_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
	/* The copy stream's gather is small and on the critical path of the next layer: its CTAs
	 * are scheduled ahead of the compute stream's (greatest priority = numerically lowest).
	 * SPARDA_KCUDA_COPY_PRIO=low turns that round, for when the copy stream holds only the next
	 * layer's selection and diff (--gather=dma-prefetch: the copy engines move the units), so
	 * the layer's own kernels go first and the prefetch fills the SMs they leave. */
	const char *cp = getenv("SPARDA_KCUDA_COPY_PRIO");
	if (cp && !strcmp(cp, "low")) {
		int t = lo;
		lo = hi;
		hi = t;
		log_info("kcuda", "stream priorities", "copy=low compute=high");
	} else if (cp && strcmp(cp, "high")) {
		log_error("kcuda", "SPARDA_KCUDA_COPY_PRIO must be low or high", "value=%s", cp);
		return -EINVAL;
	}
	/* SPARDA_KCUDA_GATHER_SMS=N: the copy stream gets its own group of >= N SMs and the
	 * compute stream the rest (green contexts), so gather and compute CTAs never share an SM. */
	const char *gs = getenv("SPARDA_KCUDA_GATHER_SMS");
	unsigned n_sms = gs ? (unsigned)strtoul(gs, NULL, 10) : 0;
	if (n_sms) {
		int e = kc_green_open(c->device, n_sms, hi, lo, &c->green, &c->st[KB_STREAM_COPY],
				      &c->st[KB_STREAM_COMPUTE]);
		if (e)
			return e;
		unsigned a, b;
		kc_green_sms(c->green, &a, &b);
		log_info("kcuda", "SM partition", "copy_sms=%u compute_sms=%u", a, b);
		KC_CHECK(
		    cudaStreamCreateWithPriority(&c->st[KB_STREAM_DMA], cudaStreamNonBlocking, hi));
		return kc_setup_rest(c);
	}
	for (int s = 0; s < KB_STREAM_COUNT; s++)
		KC_CHECK(cudaStreamCreateWithPriority(&c->st[s], cudaStreamNonBlocking,
						      s == KB_STREAM_COMPUTE ? lo : hi));
	return kc_setup_rest(c);
}

/* cuBLAS and the kernels' one-time settings, once the streams exist. */
static int kc_setup_rest(struct kc_backend *c)
{
	int lo = 0, hi = 0;
	KC_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
	for (int j = 0; j < KB_DMA_STREAMS_MAX; j++) {
		if (j < KB_DMA_STREAMS_MAX - 1)
			KC_CHECK(
			    cudaStreamCreateWithPriority(&c->dma_st[j], cudaStreamNonBlocking, hi));
		KC_CHECK(cudaEventCreateWithFlags(&c->dma_ev[j], cudaEventDisableTiming));
	}
	cublasStatus_t bs = cublasCreate(&c->blas);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		c->blas = NULL;
		return kc_cublas_err(bs, "cublasCreate");
	}
	/* bf16 GEMMs accumulate and reduce in fp32 (split-K partials too), like the CPU reference;
	 * SPARDA_KCUDA_GEMM_REDUCED=1 lets cuBLAS reduce in bf16 where it is faster. */
	const char *red = getenv("SPARDA_KCUDA_GEMM_REDUCED");
	if (!(red && red[0] == '1')) {
		bs = cublasSetMathMode(c->blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
						CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
		if (bs != CUBLAS_STATUS_SUCCESS)
			return kc_cublas_err(bs, "cublasSetMathMode");
	}
	int e = kc_select_init();
	if (!e)
		e = kc_attn_decode_init();
	return e ? e : kc_attn_prefill_init();
}

extern "C" int kb_cuda_open(const struct kb_opts *o, struct kb **out)
{
	int n = 0;
	*out = NULL;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
		cudaGetLastError();
		return -ENODEV;
	}
	int dev = o ? o->device : 0;
	if (dev < 0 || dev >= n)
		return -ENODEV;
	struct kc_backend *c = (struct kc_backend *)calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->device = dev;
	c->mem_limit = o ? o->mem_limit : 0;
	const char *attn = getenv("SPARDA_KCUDA_ATTN");
	c->attn_mma = !(attn && !strcmp(attn, "simt")); /* tensor cores unless told otherwise */
	c->kb.ops = &kc_ops;
	c->kb.kind = KB_KIND_CUDA;
	c->kb.priv = c;
	int e = kc_setup(c);
	if (e) {
		kc_destroy(&c->kb);
		return e;
	}
	*out = &c->kb;
	return 0;
}
