/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CPU backend object: its vtable, host memory standing in for device memory, and
 * streams and events for a backend that runs every op synchronously (an event records the
 * wall clock, so event_elapsed times host work).
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"
#include "log.h"
#include "timeutil.h"

struct kb_event {
	uint64_t ns;   /* wall clock at the last record */
	bool recorded; /* event_elapsed needs both events recorded */
};

static void cpu_destroy(struct kb *kb)
{
	free(kb->priv);
	free(kb);
}

static int cpu_alloc(struct kb *kb, size_t bytes, void **out)
{
	struct cpu_priv *priv = kb->priv;
	/* 64-byte aligned so any unit or row can be read with wide loads; 0 bytes gives NULL. */
	size_t rounded = (bytes + 63) & ~(size_t)63;

	if (!out || rounded < bytes)
		return -EINVAL;
	*out = NULL;
	if (!bytes)
		return 0;
	if (priv->mem_limit && priv->mem_used + rounded > priv->mem_limit) {
		log_error("kcpu", "device memory limit reached", "bytes=%zu in_use=%llu limit=%llu",
			  rounded, (unsigned long long)priv->mem_used,
			  (unsigned long long)priv->mem_limit);
		return -ENOMEM;
	}
	*out = aligned_alloc(64, rounded);
	if (!*out)
		return -ENOMEM;
	priv->mem_used += malloc_usable_size(*out);
	return 0;
}

static void cpu_free(struct kb *kb, void *p)
{
	struct cpu_priv *priv = kb->priv;

	if (p)
		priv->mem_used -= malloc_usable_size(p);
	free(p);
}

static int cpu_memcpy(struct kb *kb, void *dst, const void *src, size_t bytes, enum kb_copy_dir dir,
		      enum kb_stream s)
{
	if (!cpu_stream_ok(s) || (unsigned)dir > KB_H2H || (bytes && (!dst || !src)))
		return -EINVAL;
	if (bytes && dst != src)
		memmove(dst, src, bytes);
	return 0;
}

static int cpu_memset(struct kb *kb, void *dst, int byte, size_t bytes, enum kb_stream s)
{
	if (!cpu_stream_ok(s) || (bytes && !dst))
		return -EINVAL;
	if (bytes)
		memset(dst, byte, bytes);
	return 0;
}

static int cpu_host_register(struct kb *kb, void *host, size_t bytes, void **dev)
{
	if (!host || !dev)
		return -EINVAL;
	*dev = host;
	return 0;
}

static int cpu_host_unregister(struct kb *kb, void *host)
{
	return host ? 0 : -EINVAL;
}

static int cpu_sync(struct kb *kb, enum kb_stream s)
{
	return cpu_stream_ok(s) ? 0 : -EINVAL;
}

static int cpu_event_new(struct kb *kb, struct kb_event **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void cpu_event_free(struct kb *kb, struct kb_event *e)
{
	free(e);
}

static int cpu_event_record(struct kb *kb, struct kb_event *e, enum kb_stream s)
{
	if (!e || !cpu_stream_ok(s))
		return -EINVAL;
	e->ns = time_now_ns();
	e->recorded = true;
	return 0;
}

static int cpu_stream_wait(struct kb *kb, enum kb_stream s, struct kb_event *e)
{
	return e && cpu_stream_ok(s) ? 0 : -EINVAL;
}

static int cpu_event_sync(struct kb *kb, struct kb_event *e)
{
	return e ? 0 : -EINVAL;
}

static int cpu_event_elapsed(struct kb *kb, struct kb_event *a, struct kb_event *b, float *ms)
{
	if (!a || !b || !ms || !a->recorded || !b->recorded)
		return -EINVAL;
	*ms = (float)(((double)b->ns - (double)a->ns) / 1e6);
	return 0;
}

static int cpu_mem_info(struct kb *kb, size_t *free_bytes, size_t *total_bytes)
{
	long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES);
	long total = sysconf(_SC_PHYS_PAGES);

	if (!free_bytes || !total_bytes)
		return -EINVAL;
	if (page <= 0 || avail < 0 || total <= 0)
		return -EIO;
	*free_bytes = (size_t)avail * (size_t)page;
	*total_bytes = (size_t)total * (size_t)page;
	return 0;
}

static const struct kb_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memcpy = cpu_memcpy,
    .memset = cpu_memset,
    .host_register = cpu_host_register,
    .host_unregister = cpu_host_unregister,
    .sync = cpu_sync,
    .event_new = cpu_event_new,
    .event_free = cpu_event_free,
    .event_record = cpu_event_record,
    .stream_wait = cpu_stream_wait,
    .event_sync = cpu_event_sync,
    .event_elapsed = cpu_event_elapsed,
    .mem_info = cpu_mem_info,
    .embed = cpu_embed,
    .add_rmsnorm = cpu_add_rmsnorm,
    .add_residual = cpu_add_residual,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .argmax = cpu_argmax,
    .gemm = cpu_gemm,
    .ck_prefill = cpu_ck_prefill,
    .ck_append = cpu_ck_append,
    .score_decode = cpu_score_decode,
    .select_decode = cpu_select_decode,
    .select_prefill = cpu_select_prefill,
    .select_prefill_work = cpu_select_prefill_work,
    .cache_diff = cpu_cache_diff,
    .copy_units = cpu_copy_units,
    .copy_units_dma = cpu_copy_units_dma,
    .copy_units_bulk = cpu_copy_units,
    .kv_pack = cpu_kv_pack,
    .kv_store = cpu_kv_store,
    .attn_decode = cpu_attn_decode,
    .attn_decode_work = cpu_attn_decode_work,
    .attn_decode_dense = cpu_attn_decode_dense,
    .attn_prefill = cpu_attn_prefill,
    .sel_units = cpu_sel_units,
    .sel_units2 = cpu_sel_units2,
    .resolve_loads = cpu_resolve_loads,
};

/* OpenBLAS's thread pool size (only OpenBLAS has it: weak, NULL with another BLAS). */
void openblas_set_num_threads(int num_threads);
#pragma weak openblas_set_num_threads

int kb_cpu_open(const struct kb_opts *o, struct kb **out)
{
	struct cpu_priv *priv;
	struct kb *kb;

	if (!out || (o && o->cpu_threads < 0))
		return -EINVAL;
	kb = calloc(1, sizeof(*kb));
	priv = calloc(1, sizeof(*priv));
	if (!kb || !priv) {
		free(kb);
		free(priv);
		return -ENOMEM;
	}
	priv->threads = o && o->cpu_threads ? o->cpu_threads : 1;
	priv->mem_limit = o ? o->mem_limit : 0;
#ifdef _OPENMP
	if (!(o && o->cpu_threads))
		priv->threads = omp_get_num_procs();
#endif
	/* The GEMM splits its tiles across the OpenMP team itself (cpu_gemm.c); a BLAS pool of
	 * its own on the same cores, spinning between calls, made the decode's speed vary up to
	 * 2x from run to run on two cores shared with memsvc. */
	if (openblas_set_num_threads)
		openblas_set_num_threads(1);
	kb->ops = &cpu_ops;
	kb->kind = KB_KIND_CPU;
	kb->priv = priv;
	*out = kb;
	return 0;
}
