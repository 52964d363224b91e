/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model runner: prefill and decode of a batch of sequences on one backend, in one of the
 * six modes of DESIGN 3.5. One runtime; the mode decides where selection comes from (none,
 * the original selector, or the Forecast one layer ahead), where KV lives (the backend's memory
 * or the host store) and when misses are fetched (inside the layer, or overlapped on the copy
 * stream). Not thread safe: one thread drives a runner.
 */
#ifndef SPARDA_COMPUTE_RUNNER_H
#define SPARDA_COMPUTE_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "kvhost.h"
#include "model.h"

enum runner_mode {
	RUNNER_MODE_DENSE = 0,
	RUNNER_MODE_SPARSE,
	RUNNER_MODE_SPARSE_OFFLOAD,
	RUNNER_MODE_SPARDA,
	RUNNER_MODE_SPARDA_NOPREFETCH,
	RUNNER_MODE_SPARDA_NOOFFLOAD,
	RUNNER_MODE_COUNT,
};
const char *runner_mode_name(enum runner_mode m);
int runner_mode_parse(const char *s, enum runner_mode *out);
/* Modes whose KV lives in the host store (need a kvhost). */
bool runner_mode_offloads(enum runner_mode m);
/* Modes that select with the Forecast (need Forecast weights). */
bool runner_mode_forecast(enum runner_mode m);

struct runner_stats;

struct runner_opts {
	enum runner_mode mode;
	uint32_t max_batch;  /* sequences decoded together */
	uint32_t max_tokens; /* prompt + generated, per sequence */
	uint32_t gather_ctas; /* CTAs of the gather and the write-back (CUDA), 0 = the backend's */
	/* GPU cache slots per (sequence, offloaded layer, KV head). 0: top-k, each step's
	 * selection exactly (DESIGN 3.3). More (at least top-k): a retaining cache, where a block
	 * no longer selected stays until a new block needs its slot, the least recently selected
	 * first (kb cache_diff with age); capped at the sequence's blocks. */
	uint32_t cache_slots;
	/* Fetch offloaded units with copy-engine copies queued by the host (kb copy_units_dma)
	 * instead of the gather kernel: each layer's load list comes back to the host (as in
	 * careful mode), which resolves it against the residency words. */
	bool gather_dma;
	/* gather_dma: the copy engines take at most this many bytes of a layer's loads in a step
	 * (whole units, from the start of the list); the rest are resolved and gathered on the
	 * device beside them (the bulk copy with gather_bulk, else the gather kernel), so the copy
	 * engines take only what they can move in time. 0 = no limit; under one unit: all of them
	 * the device's way. */
	uint64_t dma_max_bytes;
	/* gather_dma: each layer's copies split, by bytes, over this many streams (kb
	 * copy_units_dma's n_streams; 0 = 1) */
	uint32_t dma_streams;
	/* The gather kernel's lists moved by kb copy_units_bulk (the bulk-copy engine) */
	bool gather_bulk;
	uint32_t prefill_chunk; /* rows per FFN/projection chunk in prefill, 0 = 4096 */
	struct kvhost *host; /* required when runner_mode_offloads(mode); not owned */
	bool keep_sequences; /* leave host-store sequences open after runner_generate (for
				runner_read_unit); they close at the next generate or runner_close */
	/* Called on the runner's thread after the prefill and after every decode step with the
	 * statistics so far (e.g. to publish them as metrics); NULL: none. */
	void (*on_step)(void *ctx, enum runner_mode mode, const struct runner_stats *st);
	void *on_step_ctx;
	/* Forecast modes: every this many decode steps, also run the original selector in each
	 * layer and count how many of its (non-forced) blocks the Forecast picked (the recall
	 * figures of runner_layer_stats). That selection runs after the step on copies of the
	 * queries and is not counted in decode_s; tokens are unchanged. 0 = off. */
	uint32_t recall_every;
	/* Prefill of offloaded layers: pack the prompt's KV into the host arena on the copy stream
	 * (overlapping the rest of the layer and the next one; each layer's units are committed to
	 * the host store when the next offloaded layer starts) instead of on the compute stream, which
	 * then waits for it. */
	bool prefill_kv_side;
	/* Decode: record an event on the compute stream at each phase boundary of every layer
	 * and sum the device time of each phase (runner_stats.phase_ms). For diagnosis: the
	 * events add a little work of their own to every layer. */
	bool phase_times;
	/* Prefill of offloaded layers: fill each layer's GPU block cache with the full blocks the
	 * prompt's last query block selected (a retaining cache also those of the query blocks
	 * before it, while slots are left), packed from the prompt's KV while it is still on the
	 * device, so the first decode step finds them cached instead of fetching its whole
	 * selection. Tokens are unchanged (the bytes are those the arena holds). */
	bool seed_cache;
};

/* Phases of a decode step on the compute stream (phase_times). SELECT includes waiting for the
 * layer's fetch (sparda: the copy stream's `done`; sparse-offload: its own gather). The
 * sampling after HEAD (argmax and its read-back) is outside them. */
enum runner_phase {
	RUNNER_PHASE_EMBED,    /* step start: miss counter reset, embedding */
	RUNNER_PHASE_QKVF,     /* norm, fused QKVF GEMM, RoPE, compressed-key append */
	RUNNER_PHASE_SELECT,   /* selection, PREP of the next layer, waits for the fetch */
	RUNNER_PHASE_RECALL,   /* Forecast recall sampling (copies of the queries) */
	RUNNER_PHASE_UNITS,    /* the attention's unit table (offloaded: through the slot map,
				  with the tail block's slot) */
	RUNNER_PHASE_STORE_KV, /* this token's K/V to the store or tail slot, write-backs */
	RUNNER_PHASE_ATTEND,   /* sparse attention */
	RUNNER_PHASE_FFN,      /* output projection, norm, FFN */
	RUNNER_PHASE_HEAD,     /* final norm, LM head, statistics read-back */
	RUNNER_PHASE_N
};

/* "embed", "qkvf", ...: the phase's name in tables and JSON. */
const char *runner_phase_name(enum runner_phase p);

/* The host store's calls in decode, whose host time makes up decode_store_s. */
enum runner_store_call {
	RUNNER_STORE_ALLOC,    /* arena slots for the blocks a step starts */
	RUNNER_STORE_COMMIT,   /* the blocks a step filled, once written back */
	RUNNER_STORE_EPOCH,    /* the step's reads done, published every step */
	RUNNER_STORE_HEALTH,   /* the liveness round trip, every 16 steps */
	RUNNER_STORE_FORECAST, /* careful mode: the units a layer will read */
	RUNNER_STORE_N
};

/* "alloc", "commit", ...: the call's name in JSON. */
const char *runner_store_call_name(enum runner_store_call c);

struct runner_layer_stats {
	uint64_t selected;  /* selected (sequence, head, block) units, summed over steps */
	uint64_t hits;      /* of those, already in the GPU cache */
	uint64_t loads;     /* units gathered from the host store */
	uint64_t misses;    /* loads whose unit was not resident in the host store */
	uint64_t late_steps;/* steps where attention waited for this layer's gather */
	uint64_t late_units;/* units of those late gathers */
	double late_ms;     /* total time attention waited */
	double fetch_ms;    /* device time of this layer's diff, resolve and gather */
	uint64_t recall_true;/* sampled steps: non-forced blocks the original selector chose,
				summed over (sequence, KV head) */
	uint64_t recall_hits;/* of those, blocks the Forecast had selected for this layer */
};

struct runner_stats {
	enum runner_mode mode;
	uint32_t batch;
	uint32_t n_layers;
	double prefill_s;
	uint64_t prefill_tokens;
	double decode_s;
	uint64_t decode_steps;
	uint64_t decode_tokens;
	uint64_t bytes_h2d; /* host store -> device (gathers) */
	uint64_t bytes_d2h; /* device -> host store (prompt KV and filled blocks) */
	uint64_t units_written;
	uint64_t units_written_side; /* of units_written, packed on the copy stream in prefill
					(prefill_kv_side) */
	uint64_t units_seeded;	 /* full prompt blocks packed into the GPU block cache at the end of
				    prefill (seed_cache), device to device */
	uint64_t units_forecast; /* careful mode: units named in Forecasts to the host store */
	uint64_t units_dma;	 /* gather_dma: units fetched by the copy engines (the rest of
				    the units fetched went through the device's resolve and gather) */
	uint64_t bytes_d2h_decode; /* of bytes_d2h, written during decode (filled blocks) */
	uint64_t gpu_mem_peak_bytes; /* CUDA: device memory in use (total - free, the whole
				      device) at its highest sample: after the prefill and after
				      decode steps; 0 on the CPU backend */
	uint64_t recall_samples; /* decode steps whose recall was measured */
	double phase_ms[RUNNER_PHASE_N]; /* phase_times: device ms of each phase, summed over
					    layers and decode steps */
	uint64_t phase_steps;    /* decode steps in phase_ms */
	double decode_store_s;   /* decode: host time in the host store's calls (block
				    allocations and commits, epochs, health checks, Forecasts) */
	double store_call_s[RUNNER_STORE_N]; /* decode_store_s by call */
	uint64_t store_calls[RUNNER_STORE_N];
	/* Careful mode's fetches on the host (decode): the layers fetched, the host's wait for
	 * their load lists, and with gather_dma its resolve of them into copy lists and its time
	 * queueing the copies (copy_units_dma, and a split's device part). */
	uint64_t fetch_host_layers;
	double fetch_wait_s, fetch_resolve_s, fetch_enqueue_s;
	struct runner_layer_stats *layer; /* n_layers entries, owned by the runner */
};

struct runner_sampling {
	float temperature; /* 0 = greedy */
	uint32_t top_k;    /* 0 = whole vocabulary */
	uint64_t seed;
};

struct runner;

/*
 * Build a runner: uploads the model's weights once, sizes every buffer for max_batch x
 * max_tokens. Returns 0 or -errno with a message in err (-EINVAL: a mode the model cannot run,
 * e.g. a Forecast mode without Forecast weights; -ENOMEM: device memory).
 */
int runner_open(const struct model *m, struct kb *kb, const struct runner_opts *o,
		struct runner **out, char *err, size_t err_len);
void runner_close(struct runner *r);

/*
 * Generate n_new tokens for b sequences: prompt i is prompts[i][0 .. lens[i]). Writes
 * tokens[i * n_new + j]; if logits != NULL also the logits of each generated token
 * (logits[(i * n_new + j) * vocab + v]). Statistics are reset at the start. Returns 0 or -errno
 * with a message in err (-ECONNRESET and friends when the host store fails mid-run).
 */
int runner_generate(struct runner *r, const int32_t *const *prompts, const uint32_t *lens,
		    uint32_t b, uint32_t n_new, const struct runner_sampling *samp,
		    int32_t *tokens, float *logits, char *err, size_t err_len);

const struct runner_stats *runner_get_stats(const struct runner *r);

/* Forecast recall of one layer (layer >= 0) or of all layers (layer < 0): recall_hits /
 * recall_true; -1.0 when nothing was measured (a mode without Forecast, recall off, or no
 * sampled sparse step). */
double runner_recall_value(const struct runner_stats *st, int layer);

/*
 * Copy the stored K/V unit of (sequence b, layer, head, block) of the last generation into out
 * (unit bytes: K rows then V rows, bf16): from the device store of resident layers, or from the
 * host store (committed blocks; needs keep_sequences) or the GPU tail slot (the partial last
 * block) of offloaded layers. Rows past the sequence's length are unspecified. Returns 0,
 * -EINVAL (ids out of range), -ENOENT (not stored where it should be).
 */
int runner_read_unit(struct runner *r, uint32_t b, uint32_t layer, uint32_t head, uint32_t block,
		     void *out);
size_t runner_unit_bytes(const struct runner *r);

#endif
