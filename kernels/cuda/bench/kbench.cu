/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-kbench: per-op timings of the CUDA backend at the 8B model's shapes, each with its
 * bytes, FLOPs and the fraction of a ceiling measured in the same run (HBM device-to-device
 * copy, cuBLAS bf16 GEMM, pinned host-to-device copy). Prints a table; --json FILE writes the
 * same rows as JSON. A benchmark, not a test: it never fails on a timing.
 * usage: sparda-kbench [--json FILE] [--quick] [--only SECTIONS] [--long-t TOKENS]
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "backend.h"
#include "timeutil.h"
}

#define CK(call)                                                                                   \
	do {                                                                                       \
		cudaError_t e_ = (call);                                                           \
		if (e_ != cudaSuccess) {                                                           \
			fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));                \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)
#define KB(call)                                                                                   \
	do {                                                                                       \
		int r_ = (call);                                                                   \
		if (r_) {                                                                          \
			fprintf(stderr, "%s: %d\n", #call, r_);                                    \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

struct row {
	char name[48], params[96], ceil_name[16];
	double us, bytes, flops, ceil;
};

struct ratio {
	char name[96];
	double value;
};

static std::vector<row> rows;
static std::vector<ratio> ratios;
static struct kb *kb;
static double hbm_gbs, gemm_tfs, h2d_gbs;

static void add_row(const char *name, const char *params, double us, double bytes, double flops,
		    const char *ceil_name)
{
	row r = {};
	snprintf(r.name, sizeof(r.name), "%s", name);
	snprintf(r.params, sizeof(r.params), "%s", params);
	snprintf(r.ceil_name, sizeof(r.ceil_name), "%s", ceil_name);
	r.us = us;
	r.bytes = bytes;
	r.flops = flops;
	double ceil = !strcmp(ceil_name, "hbm")	   ? bytes / (hbm_gbs * 1e3)
		      : !strcmp(ceil_name, "gemm") ? flops / (gemm_tfs * 1e6)
		      : !strcmp(ceil_name, "h2d")  ? bytes / (h2d_gbs * 1e3)
						   : 0;
	r.ceil = ceil > 0 ? ceil / us : 0; /* fraction of the ceiling reached */
	rows.push_back(r);
	printf("%-22s %-40s %10.2f us %9.3f GB/s %8.2f TF/s  %5.1f%% of %s\n", name, params, us,
	       bytes / us / 1e3, flops / us / 1e6, 100 * r.ceil, ceil_name);
	fflush(stdout);
}

/* A speed ratio between two rows of this run (printed, and written to the JSON). */
static void add_ratio(const char *name, double value)
{
	ratio r = {};
	snprintf(r.name, sizeof(r.name), "%s", name);
	r.value = value;
	ratios.push_back(r);
	printf("ratio  %-64s %8.2fx\n", name, value);
	fflush(stdout);
}

__global__ void fill_bf16_kernel(uint16_t *x, size_t n, uint32_t seed, float amp)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t h = (uint32_t)i * 2654435761u ^ seed;
		h ^= h >> 15;
		h *= 2246822519u;
		h ^= h >> 13;
		float f = ((float)(h & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * amp;
		x[i] = (uint16_t)(__float_as_uint(f) >> 16);
	}
}

static void *dev(size_t bytes)
{
	void *p;
	KB(kb->ops->alloc(kb, bytes, &p));
	return p;
}

static uint16_t *dev_bf16(size_t n, float amp)
{
	static uint32_t seed = 1;
	uint16_t *p = (uint16_t *)dev(n * 2);
	fill_bf16_kernel<<<1024, 256>>>(p, n, seed++ * 0x9e3779b9u, amp);
	CK(cudaGetLastError());
	return p;
}

static void *dev_copy(const void *h, size_t bytes)
{
	void *p = dev(bytes);
	KB(kb->ops->memcpy(kb, p, h, bytes, KB_H2D, KB_STREAM_COMPUTE));
	KB(kb->ops->sync(kb, KB_STREAM_COMPUTE));
	return p;
}

/* Mean microseconds of one call over `iters` calls after two warm-ups, on stream s. */
template <typename F> static double time_us(enum kb_stream s, int iters, F fn)
{
	struct kb_event *a, *b;
	float ms;
	KB(kb->ops->event_new(kb, &a));
	KB(kb->ops->event_new(kb, &b));
	fn();
	fn();
	KB(kb->ops->event_record(kb, a, s));
	for (int i = 0; i < iters; i++)
		fn();
	KB(kb->ops->event_record(kb, b, s));
	KB(kb->ops->event_sync(kb, b));
	KB(kb->ops->event_elapsed(kb, a, b, &ms));
	kb->ops->event_free(kb, a);
	kb->ops->event_free(kb, b);
	return ms * 1e3 / iters;
}

static void ceilings(void)
{
	size_t n = (size_t)1 << 30;
	void *x = dev(n), *y = dev(n);
	KB(kb->ops->memset(kb, x, 1, n, KB_STREAM_COMPUTE));
	double us = time_us(KB_STREAM_COMPUTE, 10,
			    [&] { KB(kb->ops->memcpy(kb, y, x, n, KB_D2D, KB_STREAM_COMPUTE)); });
	hbm_gbs = 2.0 * n / us / 1e3;
	uint32_t g = 8192;
	uint16_t *a = dev_bf16((size_t)g * g, 1), *w = dev_bf16((size_t)g * g, 1);
	us = time_us(KB_STREAM_COMPUTE, 10, [&] {
		KB(kb->ops->gemm(kb, KB_STREAM_COMPUTE, g, g, g, a, g, w, g, y, g, false, 1, 0));
	});
	gemm_tfs = 2.0 * g * g * g / us / 1e6;
	void *h = aligned_alloc(4096, n), *hd;
	memset(h, 1, n);
	KB(kb->ops->host_register(kb, h, n, &hd));
	us = time_us(KB_STREAM_COPY, 5,
		     [&] { KB(kb->ops->memcpy(kb, y, h, n, KB_H2D, KB_STREAM_COPY)); });
	h2d_gbs = (double)n / us / 1e3;
	KB(kb->ops->host_unregister(kb, h));
	free(h);
	kb->ops->free(kb, a);
	kb->ops->free(kb, w);
	kb->ops->free(kb, x);
	kb->ops->free(kb, y);
	printf("ceilings: HBM copy %.0f GB/s (read+write), bf16 GEMM %.0f TFLOP/s, pinned H2D "
	       "%.1f GB/s\n",
	       hbm_gbs, gemm_tfs, h2d_gbs);
}

/*
 * The attention unit tables of one offloaded layer at B=8 of 2 KV heads (16 caches of 97 slots,
 * top-96, 128K tokens): through the slot map (an offloaded layer: the 96 selected blocks and
 * the tail block's slot) against the resident layout (no map), one launch each on the GPU's
 * timeline; then the tail's and the blocks' tables as two launches against sel_units2's one.
 */
static void bench_sel_units(void)
{
	const uint32_t n = 16, n_kv = 2, slots = 97, k = 96, block = 64, reps = 200;
	std::vector<int32_t> map(n * slots), sel(n * k), tok(n / n_kv, 131072);
	for (uint32_t i = 0; i < n; i++) { /* slot s holds block (s * 13 + i) % 97: a shuffle */
		for (uint32_t s = 0; s < slots; s++)
			map[i * slots + s] = (int32_t)((s * 13 + i) % slots) * 21;
		for (uint32_t j = 0; j < k; j++)
			sel[i * k + j] = (int32_t)j * 21;
	}
	int32_t *dmap = (int32_t *)dev_copy(map.data(), map.size() * 4);
	int32_t *dsel = (int32_t *)dev_copy(sel.data(), sel.size() * 4);
	int32_t *dtok = (int32_t *)dev_copy(tok.data(), tok.size() * 4);
	int32_t *ui = (int32_t *)dev(n * k * 4), *ul = (int32_t *)dev(n * k * 4);
	char p[96];
	const int32_t *maps[2] = {dmap, NULL};
	const char *what[2] = {"through the slot map", "resident layout"};
	for (int m = 0; m < 2; m++)
		for (uint32_t kk : {k, 1u}) {
			double us = time_us(KB_STREAM_COMPUTE, reps, [&] {
				KB(kb->ops->sel_units(kb, KB_STREAM_COMPUTE, ui, ul, dsel, maps[m],
						      dtok, n, n_kv, m ? 2048 : slots, kk, block));
			});
			snprintf(p, sizeof(p), "%s, %u caches x %u", what[m], n, kk);
			add_row("sel_units", p, us, 0, 0, "-");
		}
	/* the decode's offloaded layer: the tail's slot and the 96 blocks' as two launches, then
	 * as sel_units2's one (one read of each map row) */
	int32_t *ti = (int32_t *)dev(n * 4), *tl = (int32_t *)dev(n * 4);
	double two = time_us(KB_STREAM_COMPUTE, reps, [&] {
		KB(kb->ops->sel_units(kb, KB_STREAM_COMPUTE, ti, tl, dsel, dmap, dtok, n, n_kv, slots,
				      1, block));
		KB(kb->ops->sel_units(kb, KB_STREAM_COMPUTE, ui, ul, dsel, dmap, dtok, n, n_kv, slots,
				      k, block));
	});
	double one = time_us(KB_STREAM_COMPUTE, reps, [&] {
		KB(kb->ops->sel_units2(kb, KB_STREAM_COMPUTE, ui, ul, dsel, k, ti, tl, dsel, 1, dmap,
				       dtok, n, n_kv, slots, block));
	});
	snprintf(p, sizeof(p), "slot map, %u caches x (%u + 1), two launches", n, k);
	add_row("sel_units", p, two, 0, 0, "-");
	snprintf(p, sizeof(p), "slot map, %u caches x (%u + 1), sel_units2", n, k);
	add_row("sel_units2", p, one, 0, 0, "-");
	kb->ops->free(kb, ti);
	kb->ops->free(kb, tl);
	kb->ops->free(kb, dmap);
	kb->ops->free(kb, dsel);
	kb->ops->free(kb, dtok);
	kb->ops->free(kb, ui);
	kb->ops->free(kb, ul);
}

/*
 * The runner's fixed per-step costs at 32 layers (31 offloaded), B=8 of 2 KV heads: the step's
 * statistics read back as two small copies per layer and a counter (how the runner did it)
 * against one copy of the same bytes (how it does now), on the GPU's timeline; and the host
 * time, between two steps, of reading two event timings per offloaded layer and of the
 * record + wait pair each layer enqueues.
 */
static void bench_overhead(void)
{
	const int L = 31, reps = 20;
	const size_t hits = 16 * 4, list = 16 * 96 * 4, per = hits + list, all = per * L + 4;
	char *d = (char *)dev(all), *h;
	char p[96];
	CK(cudaMallocHost((void **)&h, all));
	double us = time_us(KB_STREAM_COMPUTE, reps, [&] {
		for (int l = 0; l < L; l++) {
			KB(kb->ops->memcpy(kb, h + l * per, d + l * per, hits, KB_D2H,
					   KB_STREAM_COMPUTE));
			KB(kb->ops->memcpy(kb, h + l * per + hits, d + l * per + hits, list, KB_D2H,
					   KB_STREAM_COMPUTE));
		}
		KB(kb->ops->memcpy(kb, h + per * L, d + per * L, 4, KB_D2H, KB_STREAM_COMPUTE));
	});
	snprintf(p, sizeof(p), "d2h %d copies, %zu B", 2 * L + 1, all);
	add_row("stats read-back", p, us, (double)all, 0, "-");
	double us1 = time_us(KB_STREAM_COMPUTE, reps, [&] {
		KB(kb->ops->memcpy(kb, h, d, all, KB_D2H, KB_STREAM_COMPUTE));
	});
	snprintf(p, sizeof(p), "d2h 1 copy, %zu B", all);
	add_row("stats read-back", p, us1, (double)all, 0, "-");
	add_ratio("stats read-back: per-layer copies / one copy (GPU time)", us / us1);

	std::vector<struct kb_event *> ev(2 * L);
	for (auto &e : ev)
		KB(kb->ops->event_new(kb, &e));
	for (int i = 0; i < 2 * L; i++)
		KB(kb->ops->event_record(kb, ev[i], (i & 1) ? KB_STREAM_COPY : KB_STREAM_COMPUTE));
	KB(kb->ops->sync(kb, KB_STREAM_COMPUTE));
	KB(kb->ops->sync(kb, KB_STREAM_COPY));
	float ms;
	uint64_t t0 = time_now_ns();
	for (int r = 0; r < reps; r++)
		for (int l = 0; l < L; l++)
			KB(kb->ops->event_elapsed(kb, ev[2 * l], ev[2 * l + 1], &ms));
	double ev_us = (double)(time_now_ns() - t0) * 1e-3 / reps;
	snprintf(p, sizeof(p), "host, %d event_elapsed", L);
	add_row("step timings read", p, ev_us, 0, 0, "-");
	t0 = time_now_ns();
	for (int r = 0; r < reps; r++)
		for (int l = 0; l < L; l++) {
			KB(kb->ops->event_record(kb, ev[2 * l], KB_STREAM_COMPUTE));
			KB(kb->ops->stream_wait(kb, KB_STREAM_COMPUTE, ev[2 * l + 1]));
		}
	double rw_us = (double)(time_now_ns() - t0) * 1e-3 / reps;
	KB(kb->ops->sync(kb, KB_STREAM_COMPUTE));
	snprintf(p, sizeof(p), "host, %d event_record + stream_wait", L);
	add_row("layer waits enqueued", p, rw_us, 0, 0, "-");
	for (auto e : ev)
		kb->ops->event_free(kb, e);
	CK(cudaFreeHost(h));
	kb->ops->free(kb, d);
}

/* Random 32 KiB units from registered host memory into a device unit cache, and back. */
static void bench_gather(bool quick)
{
	const size_t unit = 32768, n_arena = quick ? 16384 : 65536, n_cache = 8192;
	const uint32_t n = 2048;
	size_t ab = unit * n_arena;
	void *h = aligned_alloc(4096, ab), *hd;
	memset(h, 3, ab); /* pre-fault */
	KB(kb->ops->host_register(kb, h, ab, &hd));
	void *cache = dev(unit * n_cache);
	std::vector<int32_t> si(n), di(n);
	std::vector<uint8_t> used(n_cache);
	srand(7);
	for (uint32_t i = 0; i < n; i++) {
		si[i] = rand() % (int)n_arena;
		int32_t d = rand() % (int)n_cache;
		while (used[d])
			d = (d + 1) % (int32_t)n_cache;
		used[d] = 1;
		di[i] = d;
	}
	int32_t *sid = (int32_t *)dev_copy(si.data(), n * 4),
		*did = (int32_t *)dev_copy(di.data(), n * 4);
	char p[96];
	for (uint32_t ctas : {8u, 16u, 32u, 64u}) {
		double us = time_us(KB_STREAM_COPY, 10, [&] {
			KB(kb->ops->copy_units(kb, KB_STREAM_COPY, cache, hd, did, sid, n, unit,
					       ctas));
		});
		snprintf(p, sizeof(p), "h2d n=%u unit=32KiB ctas=%u", n, ctas);
		add_row("copy_units gather", p, us, (double)n * unit, 0, "h2d");
	}
	/* the same lists through the bulk-copy engine */
	for (uint32_t ctas : {4u, 8u, 16u, 32u, 64u}) {
		double us = time_us(KB_STREAM_COPY, 10, [&] {
			KB(kb->ops->copy_units_bulk(kb, KB_STREAM_COPY, cache, hd, did, sid, n,
						    unit, ctas));
		});
		snprintf(p, sizeof(p), "h2d n=%u unit=32KiB ctas=%u", n, ctas);
		add_row("copy_units_bulk gather", p, us, (double)n * unit, 0, "h2d");
	}
	/* the same copies on the copy engines (host index lists), in batches on 1, 2 or 4 streams;
	 * the enqueue row is the host's time in the call (the driver's work per copy): where it
	 * is near the gather row's, the host's submission, not the engines, sets the rate */
	for (uint32_t ns : {1u, 2u, 4u}) {
		uint64_t host_ns = 0, calls = 0;
		double us = time_us(KB_STREAM_COPY, 10, [&] {
			uint64_t t0 = time_now_ns();
			KB(kb->ops->copy_units_dma(kb, KB_STREAM_COPY, cache, hd, di.data(),
						   si.data(), n, unit, ns));
			host_ns += time_now_ns() - t0;
			calls++;
		});
		snprintf(p, sizeof(p), "h2d n=%u unit=32KiB copy engines, %u stream%s", n, ns,
			 ns > 1 ? "s" : "");
		add_row("copy_units_dma gather", p, us, (double)n * unit, 0, "h2d");
		add_row("copy_units_dma enqueue", p, host_ns / 1e3 / (double)calls,
			(double)n * unit, 0, "h2d");
	}
	for (uint32_t ctas : {16u, 32u}) {
		double us = time_us(KB_STREAM_COPY, 10, [&] {
			KB(kb->ops->copy_units(kb, KB_STREAM_COPY, hd, cache, sid, did, n, unit,
					       ctas));
		});
		snprintf(p, sizeof(p), "d2h n=%u unit=32KiB ctas=%u", n, ctas);
		add_row("copy_units scatter", p, us, (double)n * unit, 0, "h2d");
	}
	KB(kb->ops->sync(kb, KB_STREAM_COPY));
	KB(kb->ops->host_unregister(kb, h));
	free(h);
	kb->ops->free(kb, cache);
	kb->ops->free(kb, sid);
	kb->ops->free(kb, did);
}

/* Decode attention over 96 cached blocks per (sequence, KV head), 8B shapes. */
static void bench_attn_decode(const char *variant, uint32_t tps)
{
	const uint32_t n_q = 32, n_kv = 2, d = 128, block = 64, nu = 96;
	char tv[16];
	snprintf(tv, sizeof(tv), "%u", tps);
	if (tps)
		setenv("SPARDA_KCUDA_TPS", tv, 1);
	for (uint32_t b : {1u, 8u, 32u, 64u}) {
		size_t units = (size_t)b * n_kv * nu;
		uint16_t *u = dev_bf16(units * 2 * block * d, 1),
			 *q = dev_bf16((size_t)b * n_q * d, 1);
		uint16_t *o = (uint16_t *)dev((size_t)b * n_q * d * 2);
		std::vector<int32_t> idx(units), len(units);
		for (size_t i = 0; i < units; i++) {
			idx[i] = (int32_t)((i * 7919) % units);
			len[i] = i % nu == nu - 1 ? 40 : (int32_t)block;
		}
		int32_t *ui = (int32_t *)dev_copy(idx.data(), units * 4);
		int32_t *ul = (int32_t *)dev_copy(len.data(), units * 4);
		void *work = dev(kb->ops->attn_decode_work(kb, b, n_q, nu, d));
		double us = time_us(KB_STREAM_COMPUTE, 20, [&] {
			KB(kb->ops->attn_decode(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, u,
						ui, ul, nu, b, n_q, n_kv, d, block, 0.0884f, work));
		});
		char p[96];
		snprintf(p, sizeof(p), "%s b=%u heads=32/2 d=128 units=96 tps=%s", variant, b,
			 tps ? tv : "auto");
		double bytes = (double)units * 2 * block * d * 2;
		add_row("attn_decode", p, us, bytes, 4.0 * b * n_q * d * nu * block, "hbm");
		kb->ops->free(kb, u);
		kb->ops->free(kb, q);
		kb->ops->free(kb, o);
		kb->ops->free(kb, ui);
		kb->ops->free(kb, ul);
		kb->ops->free(kb, work);
	}
	unsetenv("SPARDA_KCUDA_TPS");
}

/*
 * One layer's selection at 32K and 128K: scores (Forecast; original selector on the SIMT kernels
 * and on tensor cores), pooling + top-96 (pooling from global memory in each radix pass, or
 * once into shared memory), cache diff. The switches are read at each call.
 */
static void bench_selection(void)
{
	const struct kb_sparse sp = {64, 32, 16, 5, 4, 1, 1, 32, 96};
	const uint32_t n_kv = 2, d = 128, n_slots = 96;
	for (uint32_t tokens : {32768u, 131072u})
		for (uint32_t b : {1u, 16u}) {
			const uint32_t cap = kb_ck_entries(&sp, tokens), nb = tokens / 64;
			uint16_t *ck = dev_bf16((size_t)b * n_kv * cap * d, 1);
			uint16_t *q = dev_bf16((size_t)b * 32 * d, 1);
			float *sc = (float *)dev((size_t)b * n_kv * cap * 4);
			int32_t *sel = (int32_t *)dev((size_t)b * n_kv * sp.topk * 4);
			std::vector<int32_t> ne(b, (int32_t)cap), nbl(b, (int32_t)nb),
			    map(b * n_kv * n_slots), prot(b * n_kv, (int32_t)n_slots - 1);
			for (size_t i = 0; i < map.size(); i++)
				map[i] = (int32_t)((i * 37) % nb);
			int32_t *ned = (int32_t *)dev_copy(ne.data(), b * 4);
			int32_t *nbd = (int32_t *)dev_copy(nbl.data(), b * 4);
			int32_t *mapd = (int32_t *)dev_copy(map.data(), map.size() * 4);
			int32_t *protd = (int32_t *)dev_copy(prot.data(), prot.size() * 4);
			int32_t *ls =
			    (int32_t *)dev((size_t)b * n_kv * sp.topk * 4 * 2 + b * n_kv * 8);
			int32_t *lb = ls + b * n_kv * sp.topk, *nl = lb + b * n_kv * sp.topk,
				*hits = nl + b * n_kv;
			char p[96];
			double us_s = time_us(KB_STREAM_COMPUTE, 20, [&] {
				KB(kb->ops->score_decode(kb, KB_STREAM_COMPUTE, sc, q, n_kv * d, ck,
							 cap, ned, b, n_kv, n_kv, d, false, 1.0f));
			});
			snprintf(p, sizeof(p), "forecast b=%u C=%u kv=2 d=128", b, cap);
			add_row("score_decode", p, us_s, (double)b * n_kv * cap * d * 2,
				2.0 * b * n_kv * cap * d, "hbm");
			double us_o[2];
			const char *sv[2] = {"simt", "mma"};
			for (int v = 0; v < 2; v++) {
				setenv("SPARDA_KCUDA_SCORE", sv[v], 1);
				us_o[v] = time_us(KB_STREAM_COMPUTE, v ? 20 : 5, [&] {
					KB(kb->ops->score_decode(kb, KB_STREAM_COMPUTE, sc, q, 32 * d,
								 ck, cap, ned, b, 32, n_kv, d,
								 true, 0.0884f));
				});
				snprintf(p, sizeof(p), "original %s b=%u C=%u heads=32/2", sv[v], b,
					 cap);
				add_row("score_decode", p, us_o[v],
					(double)b * n_kv * cap * d * 2 + (double)b * n_kv * cap * 4,
					2.0 * b * 32 * cap * d, "hbm");
			}
			unsetenv("SPARDA_KCUDA_SCORE");
			double us_k[2];
			const char *tv[2] = {"global", "smem"};
			for (int v = 0; v < 2; v++) {
				setenv("SPARDA_KCUDA_TOPK", tv[v], 1);
				us_k[v] = time_us(KB_STREAM_COMPUTE, 20, [&] {
					KB(kb->ops->select_decode(kb, KB_STREAM_COMPUTE, sel, sc, cap,
								  ned, nbd, b, n_kv, &sp));
				});
				snprintf(p, sizeof(p), "pool=%s b=%u blocks=%u topk=96", tv[v], b,
					 nb);
				add_row("select_decode", p, us_k[v], (double)b * n_kv * cap * 4, 0,
					"hbm");
			}
			unsetenv("SPARDA_KCUDA_TOPK");
			double us_d = time_us(KB_STREAM_COMPUTE, 20, [&] {
				KB(kb->ops->cache_diff(kb, KB_STREAM_COMPUTE, mapd, NULL, 0, sel,
						       protd, b * n_kv, n_slots, sp.topk, ls, lb,
						       nl, hits));
			});
			snprintf(p, sizeof(p), "caches=%u slots=96 k=96", b * n_kv);
			add_row("cache_diff", p, us_d, 0, 0, "-");
			/* the retaining cache (--cache-slots=192): twice the slots, an age each */
			std::vector<int32_t> map2(map.size() * 2), age2(map.size() * 2);
			for (size_t i = 0; i < map2.size(); i++)
				map2[i] = (int32_t)((i * 37) % nb), age2[i] = (int32_t)(i % 7);
			int32_t *map2d = (int32_t *)dev_copy(map2.data(), map2.size() * 4);
			int32_t *age2d = (int32_t *)dev_copy(age2.data(), age2.size() * 4);
			double us_a = time_us(KB_STREAM_COMPUTE, 20, [&] {
				KB(kb->ops->cache_diff(kb, KB_STREAM_COMPUTE, map2d, age2d, 8, sel,
						       protd, b * n_kv, 2 * n_slots, sp.topk, ls,
						       lb, nl, hits));
			});
			snprintf(p, sizeof(p), "caches=%u slots=192 k=96 aged", b * n_kv);
			add_row("cache_diff", p, us_a, 0, 0, "-");
			snprintf(p, sizeof(p), "forecast b=%u %uK: score+select(smem)+diff", b,
				 tokens / 1024);
			add_row("selection (layer)", p, us_s + us_k[1] + us_d, 0, 0, "-");
			snprintf(p, sizeof(p), "original b=%u %uK: simt score+global select+diff",
				 b, tokens / 1024);
			add_row("selection (layer)", p, us_o[0] + us_k[0] + us_d, 0, 0, "-");
			snprintf(p, sizeof(p), "original b=%u %uK: mma score+smem select+diff", b,
				 tokens / 1024);
			add_row("selection (layer)", p, us_o[1] + us_k[1] + us_d, 0, 0, "-");
			snprintf(p, sizeof(p), "original/forecast score_decode b=%u %uK", b,
				 tokens / 1024);
			add_ratio(p, us_o[1] / us_s);
			snprintf(p, sizeof(p),
				 "original/forecast selection (score+select+diff) b=%u %uK", b,
				 tokens / 1024);
			add_ratio(p, (us_o[1] + us_k[1] + us_d) / (us_s + us_k[1] + us_d));
			snprintf(p, sizeof(p), "original/forecast score+select (no diff) b=%u %uK",
				 b, tokens / 1024);
			add_ratio(p, (us_o[1] + us_k[1]) / (us_s + us_k[1]));
			kb->ops->free(kb, ck);
			kb->ops->free(kb, q);
			kb->ops->free(kb, sc);
			kb->ops->free(kb, sel);
			kb->ops->free(kb, ned);
			kb->ops->free(kb, nbd);
			kb->ops->free(kb, mapd);
			kb->ops->free(kb, map2d);
			kb->ops->free(kb, age2d);
			kb->ops->free(kb, protd);
			kb->ops->free(kb, ls);
		}
}

static void bench_prefill(bool quick)
{
	const struct kb_sparse sp = {64, 32, 16, 5, 4, 1, 1, 32, 96};
	const uint32_t n_q = 32, n_kv = 2, d = 128;
	uint32_t t = quick ? 8192 : 32768;
	uint32_t cap = kb_ck_entries(&sp, t);
	uint16_t *q = dev_bf16((size_t)t * n_q * d, 1), *k = dev_bf16((size_t)t * n_kv * d, 1);
	uint16_t *v = dev_bf16((size_t)t * n_kv * d, 1),
		 *o = (uint16_t *)dev((size_t)t * n_q * d * 2);
	uint16_t *ck = dev_bf16((size_t)n_kv * cap * d, 1), *f = dev_bf16((size_t)t * n_kv * d, 1);
	uint32_t n_qb = t / 64;
	int32_t *sel = (int32_t *)dev((size_t)n_kv * n_qb * sp.topk * 4);
	void *work = dev(kb->ops->select_prefill_work(kb, t, 0, n_q, n_kv, &sp));
	char p[96];
	double us = time_us(KB_STREAM_COMPUTE, 3, [&] {
		KB(kb->ops->select_prefill(kb, KB_STREAM_COMPUTE, sel, f, n_kv * d, t, 0, ck, cap,
					   n_kv, n_kv, d, false, 1.0f, &sp, work));
	});
	snprintf(p, sizeof(p), "forecast t=%u kv=2 d=128", t);
	add_row("select_prefill", p, us, 0, 2.0 * n_kv * t * (double)cap * d / 2, "gemm");
	us = time_us(KB_STREAM_COMPUTE, 1, [&] {
		KB(kb->ops->select_prefill(kb, KB_STREAM_COMPUTE, sel, q, n_q * d, t, 0, ck, cap,
					   n_q, n_kv, d, true, 0.0884f, &sp, work));
	});
	snprintf(p, sizeof(p), "original t=%u heads=32/2", t);
	add_row("select_prefill", p, us, 0, 2 * 2.0 * n_q * t * (double)cap * d / 2, "gemm");
	uint32_t td = quick ? 4096 : 8192;
	setenv("SPARDA_KCUDA_PREFILL", "wmma", 1); /* the old kernel; read at each call */
	us = time_us(KB_STREAM_COMPUTE, 3, [&] {
		KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, k, v,
					 n_kv * d, td, 0, n_q, n_kv, d, 0.0884f, NULL, 0, 64));
	});
	snprintf(p, sizeof(p), "wmma dense causal t=%u heads=32/2", td);
	add_row("attn_prefill", p, us, 0, 4.0 * n_q * d * (double)td * td / 2, "gemm");
	us = time_us(KB_STREAM_COMPUTE, 3, [&] {
		KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, k, v,
					 n_kv * d, t, 0, n_q, n_kv, d, 0.0884f, sel, sp.topk, 64));
	});
	snprintf(p, sizeof(p), "wmma sparse t=%u topk=96 heads=32/2", t);
	double kv = 0; /* keys each query sees: min(own prefix, 96 blocks) */
	for (uint32_t qb = 0; qb < n_qb; qb++)
		kv += 64.0 * 64 * (qb + 1 < sp.topk ? qb + 1 : sp.topk);
	add_row("attn_prefill", p, us, 0, 4.0 * n_q * d * kv, "gemm");
	/* the wgmma kernel (the default on Hopper) and the FlashAttention-2 kernel */
	for (const char *kern : {"wg", "fa2"}) {
		setenv("SPARDA_KCUDA_PREFILL", kern, 1);
		for (uint32_t tf : {4096u, 8192u}) {
			if (quick && tf > 4096)
				continue;
			us = time_us(KB_STREAM_COMPUTE, 3, [&] {
				KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d,
							 k, v, n_kv * d, tf, 0, n_q, n_kv, d, 0.0884f,
							 NULL, 0, 64));
			});
			snprintf(p, sizeof(p), "%s dense causal t=%u heads=32/2", kern, tf);
			add_row("attn_prefill", p, us, 0, 4.0 * n_q * d * (double)tf * tf / 2, "gemm");
			if (strcmp(kern, "fa2"))
				continue;
			setenv("SPARDA_KCUDA_FA2_BM", "128", 1);
			us = time_us(KB_STREAM_COMPUTE, 3, [&] {
				KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d,
							 k, v, n_kv * d, tf, 0, n_q, n_kv, d, 0.0884f,
							 NULL, 0, 64));
			});
			unsetenv("SPARDA_KCUDA_FA2_BM");
			snprintf(p, sizeof(p), "fa2 bm=128 dense causal t=%u heads=32/2", tf);
			add_row("attn_prefill", p, us, 0, 4.0 * n_q * d * (double)tf * tf / 2, "gemm");
		}
		us = time_us(KB_STREAM_COMPUTE, 3, [&] {
			KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, k, v,
						 n_kv * d, t, 0, n_q, n_kv, d, 0.0884f, sel, sp.topk,
						 64));
		});
		snprintf(p, sizeof(p), "%s sparse t=%u topk=96 heads=32/2", kern, t);
		add_row("attn_prefill", p, us, 0, 4.0 * n_q * d * kv, "gemm");
	}
	unsetenv("SPARDA_KCUDA_PREFILL");
	kb->ops->free(kb, q);
	kb->ops->free(kb, k);
	kb->ops->free(kb, v);
	kb->ops->free(kb, o);
	kb->ops->free(kb, ck);
	kb->ops->free(kb, f);
	kb->ops->free(kb, sel);
	kb->ops->free(kb, work);
}

/*
 * A 128K prompt (or --long-t): select_prefill Forecast against the original selector, and
 * block-sparse prefill attention (top-96 of the Forecast selection) against dense causal.
 */
static void bench_prefill_long(uint32_t t)
{
	const struct kb_sparse sp = {64, 32, 16, 5, 4, 1, 1, 32, 96};
	const uint32_t n_q = 32, n_kv = 2, d = 128, n_qb = t / 64;
	uint32_t cap = kb_ck_entries(&sp, t);
	uint16_t *q = dev_bf16((size_t)t * n_q * d, 1), *k = dev_bf16((size_t)t * n_kv * d, 1);
	uint16_t *v = dev_bf16((size_t)t * n_kv * d, 1),
		 *o = (uint16_t *)dev((size_t)t * n_q * d * 2);
	uint16_t *ck = dev_bf16((size_t)n_kv * cap * d, 1), *f = dev_bf16((size_t)t * n_kv * d, 1);
	int32_t *sel = (int32_t *)dev((size_t)n_kv * n_qb * sp.topk * 4);
	void *work = dev(kb->ops->select_prefill_work(kb, t, 0, n_q, n_kv, &sp));
	char p[96];
	double us_o = time_us(KB_STREAM_COMPUTE, 1, [&] {
		KB(kb->ops->select_prefill(kb, KB_STREAM_COMPUTE, sel, q, n_q * d, t, 0, ck, cap,
					   n_q, n_kv, d, true, 0.0884f, &sp, work));
	});
	snprintf(p, sizeof(p), "original t=%u heads=32/2", t);
	add_row("select_prefill", p, us_o, 0, 2 * 2.0 * n_q * t * (double)cap * d / 2, "gemm");
	double us_f = time_us(KB_STREAM_COMPUTE, 3, [&] {
		KB(kb->ops->select_prefill(kb, KB_STREAM_COMPUTE, sel, f, n_kv * d, t, 0, ck, cap,
					   n_kv, n_kv, d, false, 1.0f, &sp, work));
	});
	snprintf(p, sizeof(p), "forecast t=%u kv=2 d=128", t);
	add_row("select_prefill", p, us_f, 0, 2.0 * n_kv * t * (double)cap * d / 2, "gemm");
	snprintf(p, sizeof(p), "original/forecast select_prefill t=%u", t);
	add_ratio(p, us_o / us_f);
	double us_d = time_us(KB_STREAM_COMPUTE, 1, [&] {
		KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, k, v,
					 n_kv * d, t, 0, n_q, n_kv, d, 0.0884f, NULL, 0, 64));
	});
	snprintf(p, sizeof(p), "dense causal t=%u heads=32/2", t);
	add_row("attn_prefill", p, us_d, 0, 4.0 * n_q * d * (double)t * t / 2, "gemm");
	double us_s = time_us(KB_STREAM_COMPUTE, 3, [&] {
		KB(kb->ops->attn_prefill(kb, KB_STREAM_COMPUTE, o, n_q * d, q, n_q * d, k, v,
					 n_kv * d, t, 0, n_q, n_kv, d, 0.0884f, sel, sp.topk, 64));
	});
	double kv = 0; /* keys each query sees: min(own prefix, 96 blocks) */
	for (uint32_t qb = 0; qb < n_qb; qb++)
		kv += 64.0 * 64 * (qb + 1 < sp.topk ? qb + 1 : sp.topk);
	snprintf(p, sizeof(p), "sparse t=%u topk=96 heads=32/2", t);
	add_row("attn_prefill", p, us_s, 0, 4.0 * n_q * d * kv, "gemm");
	snprintf(p, sizeof(p), "dense/sparse attn_prefill t=%u", t);
	add_ratio(p, us_d / us_s);
	kb->ops->free(kb, q);
	kb->ops->free(kb, k);
	kb->ops->free(kb, v);
	kb->ops->free(kb, o);
	kb->ops->free(kb, ck);
	kb->ops->free(kb, f);
	kb->ops->free(kb, sel);
	kb->ops->free(kb, work);
}

static void bench_dense_ops(void)
{
	const uint32_t hidden = 4096, m = 64, n = 4096 + 3 * 256;
	uint16_t *a = dev_bf16((size_t)m * hidden, 1), *w = dev_bf16((size_t)n * hidden, 0.02f);
	uint16_t *c = (uint16_t *)dev((size_t)m * n * 2), *wn = dev_bf16(hidden, 1);
	float *resid = (float *)dev((size_t)m * hidden * 4);
	KB(kb->ops->memset(kb, resid, 0, (size_t)m * hidden * 4, KB_STREAM_COMPUTE));
	char p[96];
	double us = time_us(KB_STREAM_COMPUTE, 20, [&] {
		KB(kb->ops->gemm(kb, KB_STREAM_COMPUTE, m, n, hidden, a, hidden, w, hidden, c, n,
				 false, 1, 0));
	});
	snprintf(p, sizeof(p), "qkvf m=%u n=%u k=%u", m, n, hidden);
	add_row("gemm", p, us, (double)n * hidden * 2, 2.0 * m * n * hidden, "hbm");
	us = time_us(KB_STREAM_COMPUTE, 20, [&] {
		KB(kb->ops->add_rmsnorm(kb, KB_STREAM_COMPUTE, resid, a, hidden, 1.0f, wn, c, m,
					hidden, 1e-5f));
	});
	snprintf(p, sizeof(p), "n=%u hidden=%u", m, hidden);
	add_row("add_rmsnorm", p, us, (double)m * hidden * (4 + 4 + 2 + 2), 0, "hbm");
	kb->ops->free(kb, a);
	kb->ops->free(kb, w);
	kb->ops->free(kb, c);
	kb->ops->free(kb, wn);
	kb->ops->free(kb, resid);
}

static void write_json(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return;
	}
	fprintf(f,
		"{\"ceilings\": {\"hbm_copy_gbs\": %.1f, \"gemm_bf16_tflops\": %.1f, "
		"\"pinned_h2d_gbs\": %.2f},\n \"ops\": [\n",
		hbm_gbs, gemm_tfs, h2d_gbs);
	for (size_t i = 0; i < rows.size(); i++) {
		const row &r = rows[i];
		fprintf(f,
			"  {\"op\": \"%s\", \"params\": \"%s\", \"us\": %.3f, \"bytes\": %.0f, "
			"\"flops\": %.0f, \"gbs\": %.3f, \"tflops\": %.3f, \"ceiling\": \"%s\", "
			"\"fraction\": %.4f}%s\n",
			r.name, r.params, r.us, r.bytes, r.flops, r.bytes / r.us / 1e3,
			r.flops / r.us / 1e6, r.ceil_name, r.ceil, i + 1 < rows.size() ? "," : "");
	}
	fprintf(f, " ],\n \"ratios\": [\n");
	for (size_t i = 0; i < ratios.size(); i++)
		fprintf(f, "  {\"name\": \"%s\", \"value\": %.3f}%s\n", ratios[i].name,
			ratios[i].value, i + 1 < ratios.size() ? "," : "");
	fprintf(f, " ]}\n");
	fclose(f);
}

/*
 * Decode attention: the defaults, the serial merge, then the register-staged, the cp.async
 * (2 stages) and the 128-register split kernels (SPARDA_KCUDA_ADK) with the parallel and the
 * fused merge
 * (SPARDA_KCUDA_MERGE) over tiles per split, then the fp32 kernel. The switches are read at
 * each call.
 */
static void bench_decode_variants(const struct kb_opts *o)
{
	bench_attn_decode("default", 0);
	setenv("SPARDA_KCUDA_MERGE", "serial", 1);
	bench_attn_decode("merge=serial", 0);
	const char *kv[3] = {"reg", "cp2", "reg4"}, *mv[2] = {"par", "fused"};
	char name[48];
	for (int k = 0; k < 3; k++) {
		setenv("SPARDA_KCUDA_ADK", kv[k], 1);
		for (int m = 0; m < 2; m++) {
			setenv("SPARDA_KCUDA_MERGE", mv[m], 1);
			snprintf(name, sizeof(name), "adk=%s merge=%s", kv[k], mv[m]);
			for (uint32_t tps : {0u, 4u, 8u, 12u, 16u})
				bench_attn_decode(name, tps);
		}
	}
	unsetenv("SPARDA_KCUDA_ADK");
	unsetenv("SPARDA_KCUDA_MERGE");
	{
		/* the fp32 decode kernel lives behind SPARDA_KCUDA_ATTN=simt */
		struct kb *save = kb;
		setenv("SPARDA_KCUDA_ATTN", "simt", 1);
		KB(kb_open(o, &kb));
		bench_attn_decode("simt", 0);
		kb_destroy(kb);
		kb = save;
		unsetenv("SPARDA_KCUDA_ATTN");
	}
}

/*
 * What a gather on the copy stream costs the decode's FFN GEMMs on the compute stream (the
 * interference of docs/perf-notes.md), at B=8 of the MiniCPM4.1-8B shape: the gate/up GEMM
 * (m=8, n=32768, k=4096) and the down GEMM (m=8, n=4096, k=16384) timed alone, then while the
 * copy stream gathers 32 KiB units from registered host memory without pause, with the gather
 * kernel (16 CTAs), the bulk-copy engine (16, 4, 2 and 1 CTAs: the slowdown against the rate
 * where the copy holds one or two SMs) and the copy engines (one batch, or split over 2 and 4
 * streams). Each row: the GEMM pair's time, its
 * slowdown against alone, and the gather's rate meanwhile.
 */
static void bench_interference(void)
{
	const uint32_t m = 8, hidden = 4096, ffn = 16384, reps = 40, rounds = 6;
	const size_t unit = 32768, n_arena = 16384, n_cache = 4096;
	const uint32_t n = 2048;
	uint16_t *x = dev_bf16((size_t)m * ffn, 1),
		 *wgu = dev_bf16((size_t)2 * ffn * hidden, 0.02f);
	uint16_t *wd = dev_bf16((size_t)hidden * ffn, 0.02f);
	uint16_t *gu = (uint16_t *)dev((size_t)m * 2 * ffn * 2),
		 *y = (uint16_t *)dev((size_t)m * hidden * 2);
	size_t ab = unit * n_arena;
	void *h = aligned_alloc(4096, ab), *hd;
	memset(h, 5, ab);
	KB(kb->ops->host_register(kb, h, ab, &hd));
	void *cache = dev(unit * n_cache);
	std::vector<int32_t> si(n), di(n);
	for (uint32_t i = 0; i < n; i++) { /* random sources, distinct destinations */
		si[i] = (int32_t)((i * 7919u + 13u) % n_arena);
		di[i] = (int32_t)((i * 2053u) % n_cache);
	}
	int32_t *sid = (int32_t *)dev_copy(si.data(), n * 4),
		*did = (int32_t *)dev_copy(di.data(), n * 4);
	auto ffn_pair = [&] {
		for (uint32_t r = 0; r < reps; r++) {
			KB(kb->ops->gemm(kb, KB_STREAM_COMPUTE, m, 2 * ffn, hidden, x, hidden, wgu,
					 hidden, gu, 2 * ffn, false, 1, 0));
			KB(kb->ops->gemm(kb, KB_STREAM_COMPUTE, m, hidden, ffn, x, ffn, wd, ffn, y,
					 hidden, false, 1, 0));
		}
	};
	enum gather { NONE, KERNEL, BULK, DMA };
	const struct {
		enum gather kind;
		uint32_t ctas; /* the copy engines: the streams */
		const char *how;
	} rows[] = {{NONE, 0, "alone"},
		    {KERNEL, 16, "with the gather kernel, 16 CTAs"},
		    {BULK, 16, "with the bulk-copy engine, 16 CTAs"},
		    {BULK, 4, "with the bulk-copy engine, 4 CTAs"},
		    {BULK, 2, "with the bulk-copy engine, 2 CTAs"},
		    {BULK, 1, "with the bulk-copy engine, 1 CTA"},
		    {DMA, 1, "with the copy engines"},
		    {DMA, 2, "with the copy engines, 2 streams"},
		    {DMA, 4, "with the copy engines, 4 streams"}};
	struct kb_event *a, *b, *c0, *c1;
	KB(kb->ops->event_new(kb, &a));
	KB(kb->ops->event_new(kb, &b));
	KB(kb->ops->event_new(kb, &c0));
	KB(kb->ops->event_new(kb, &c1));
	double weights = ((double)2 * ffn * hidden + (double)hidden * ffn) * 2, alone = 0;
	char p[96];
	ffn_pair(); /* warm-up */
	KB(kb->ops->sync(kb, KB_STREAM_COMPUTE));
	for (const auto &g : rows) {
		if (g.kind != NONE) { /* enough gathers to outlast the GEMMs, queued first */
			KB(kb->ops->event_record(kb, c0, KB_STREAM_COPY));
			for (uint32_t r = 0; r < rounds; r++) {
				if (g.kind == KERNEL)
					KB(kb->ops->copy_units(kb, KB_STREAM_COPY, cache, hd, did,
							       sid, n, unit, g.ctas));
				else if (g.kind == BULK)
					KB(kb->ops->copy_units_bulk(kb, KB_STREAM_COPY, cache, hd,
								    did, sid, n, unit, g.ctas));
				else
					KB(kb->ops->copy_units_dma(kb, KB_STREAM_COPY, cache, hd,
								   di.data(), si.data(), n, unit,
								   g.ctas));
			}
			KB(kb->ops->event_record(kb, c1, KB_STREAM_COPY));
		}
		KB(kb->ops->event_record(kb, a, KB_STREAM_COMPUTE));
		ffn_pair();
		KB(kb->ops->event_record(kb, b, KB_STREAM_COMPUTE));
		KB(kb->ops->sync(kb, KB_STREAM_COMPUTE));
		KB(kb->ops->sync(kb, KB_STREAM_COPY));
		float ms = 0, cms = 0;
		KB(kb->ops->event_elapsed(kb, a, b, &ms));
		double us = ms * 1e3 / reps;
		snprintf(p, sizeof(p), "ffn m=%u (2 GEMMs) %s", m, g.how);
		add_row("interference", p, us, weights, 2.0 * m * (3.0 * ffn * hidden), "hbm");
		if (g.kind == NONE) {
			alone = us;
			continue;
		}
		KB(kb->ops->event_elapsed(kb, c0, c1, &cms));
		double copied = (double)rounds * n * unit;
		printf("interference: %s moved %.1f GB/s meanwhile (%.0f us for %.0f MB; "
		       "the GEMMs took %.0f us)\n",
		       g.how + 5, copied / (cms * 1e6), cms * 1e3, copied / 1e6, ms * 1e3);
		snprintf(p, sizeof(p), "ffn GEMMs %s / alone", g.how);
		add_ratio(p, us / alone);
	}
	kb->ops->event_free(kb, a);
	kb->ops->event_free(kb, b);
	kb->ops->event_free(kb, c0);
	kb->ops->event_free(kb, c1);
	KB(kb->ops->host_unregister(kb, h));
	free(h);
	for (void *q : {(void *)x, (void *)wgu, (void *)wd, (void *)gu, (void *)y, cache,
			(void *)sid, (void *)did})
		kb->ops->free(kb, q);
}

int main(int argc, char **argv)
{
	const char *json = NULL, *only = NULL;
	bool quick = false;
	uint32_t long_t = 131072;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json = argv[++i];
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
		else if (!strcmp(argv[i], "--long-t") && i + 1 < argc)
			long_t = (uint32_t)atoi(argv[++i]) / 64 * 64;
		else if (!strcmp(argv[i], "--quick"))
			quick = true;
		else {
			fprintf(stderr,
				"usage: %s [--json FILE] [--quick] [--only gather,decode,select,"
				"dense,prefill,long,overhead,interference] [--long-t TOKENS]\n",
				argv[0]);
			return 2;
		}
	}
	/* a section runs when --only is absent or names it */
	auto on = [&](const char *sec) { return !only || strstr(only, sec) != NULL; };
	struct kb_opts o = {};
	o.kind = KB_KIND_CUDA;
	int e = kb_open(&o, &kb);
	if (e) {
		fprintf(stderr, "no CUDA backend (%d)\n", e);
		return 77;
	}
	ceilings();
	if (on("gather"))
		bench_gather(quick);
	if (on("decode"))
		bench_decode_variants(&o);
	if (on("select"))
		bench_selection();
	if (on("dense"))
		bench_dense_ops();
	if (on("prefill"))
		bench_prefill(quick);
	if (on("long") && !quick && long_t)
		bench_prefill_long(long_t);
	if (on("overhead")) {
		bench_overhead();
		bench_sel_units();
	}
	if (on("interference"))
		bench_interference();
	if (json)
		write_json(json);
	kb_destroy(kb);
	return 0;
}
