/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The runner with the tiny synthetic model on the CPU backend (or CUDA with
 * SPARDA_TEST_BACKEND=cuda): dense equals a naive forward pass, the offloaded modes equal their
 * GPU-resident twins token for token (with Forecast recall measured or not), sparse attention
 * that selects every block equals dense, recall is 1.0 for a Forecast equal to the selector's
 * query, and KV written to the host store reads back bit-exact.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"
#include "kvhost.h"
#include "model.h"
#include "runner.h"

#define NEW 20

static char g_dir[256];
static const struct runner_sampling *g_samp; /* sampling of run_mode (NULL: greedy) */
static uint32_t g_recall_every;		     /* recall sampling of run_mode (0: off) */
static struct model *g_model;
static struct kb *g_kb;

static int setup(void **state)
{
	struct model_config mc;
	char err[512];
	struct kb_opts ko = {.kind = KB_KIND_CPU};
	const char *be = getenv("SPARDA_TEST_BACKEND");

	if (be && strcmp(be, "cuda") == 0) {
		if (!kb_cuda_available()) {
			fprintf(stderr, "skip: SPARDA_TEST_BACKEND=cuda and no CUDA device\n");
			exit(77);
		}
		ko.kind = KB_KIND_CUDA;
	}

	snprintf(g_dir, sizeof(g_dir), "/tmp/sparda-test-modes-%d", (int)getpid());
	if (model_preset("tiny", &mc) || model_generate(g_dir, &mc, 77, err, sizeof(err)) ||
	    model_open(g_dir, NULL, &g_model, err, sizeof(err))) {
		fprintf(stderr, "model: %s\n", err);
		return -1;
	}
	/* Sparse from 256 tokens on, 6 blocks of the ~11 of these prompts (4 forced + 2 scored),
	 * so the tests stay short under sanitizers. */
	g_model->cfg.dense_len = 256;
	g_model->cfg.sparse.topk = 6;
	return kb_open(&ko, &g_kb);
}

static int teardown(void **state)
{
	char cmd[300];
	model_close(g_model);
	kb_destroy(g_kb);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static bool g_gather_dma;  /* fetch with copy_units_dma (host-resolved load lists) */
static bool g_gather_bulk; /* fetch with copy_units_bulk (the bulk-copy engine) */
static uint64_t g_dma_max_bytes; /* dma_max_bytes: larger layer fetches go the device's way */
static uint32_t g_dma_streams;	 /* dma_streams: a layer's copy-engine copies split over them */
static bool g_kv_side;	  /* prefill_kv_side: the prompt's KV packed on the copy stream */
static bool g_phase_times; /* phase_times: events at the decode step's phase boundaries */
static uint32_t g_cache_slots; /* cache_slots: 0 = top-k, more = the retaining cache */
static bool g_seed_cache;      /* seed_cache: the first decode step's cache filled in prefill */
/* on_step: the host store's block allocations after each decode step (g_allocs[step]) */
static uint64_t g_allocs[NEW];
static bool g_count_allocs;

static void count_allocs(void *ctx, enum runner_mode mode, const struct runner_stats *st)
{
	(void)ctx;
	(void)mode;
	if (st->decode_steps && st->decode_steps <= NEW)
		g_allocs[st->decode_steps - 1] = st->store_calls[RUNNER_STORE_ALLOC];
}

static void make_prompt(int32_t *p, uint32_t n, uint32_t seed)
{
	uint64_t s = seed * 2654435761u + 1;
	for (uint32_t i = 0; i < n; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		/* repeat earlier passages so attention has long-range structure */
		p[i] = i >= 128 && (s >> 60) < 6 ? p[i - 97] : (int32_t)((s >> 33) % 512);
	}
}

struct run {
	int32_t tokens[2 * NEW];
	float *logits;
	struct runner_stats st;
	struct runner_layer_stats layer[8]; /* st.layer points here */
	uint64_t selected, total_blocks, loads;
};

static struct kvhost *inproc(void)
{
	const struct model_config *c = &g_model->cfg;
	struct kvhost_opts o = {
	    .geom = {.n_layers = c->n_layers,
		     .n_kv_heads = c->n_kv_heads,
		     .head_dim = c->head_dim,
		     .block_tokens = c->sparse.block,
		     .dtype_bytes = 2},
	    .arena_bytes = 64ull << 20,
	    .max_seqs = 4,
	    .max_units = 1 << 20,
	};
	struct kvhost *h = NULL;
	o.geom.unit_bytes = 2 * c->sparse.block * c->head_dim * 2;
	assert_int_equal(kvhost_inproc_open(&o, &h), 0);
	return h;
}

static uint32_t g_len0 = 700; /* run_mode's first prompt length (at most 700) */

/* Generate NEW tokens for 2 ragged prompts (g_len0 and 630 tokens; at 700 and 630 both cross
 * a block boundary while decoding) in one mode. */
static void run_mode(enum runner_mode mode, struct kvhost *host, bool keep, struct run *out,
		     struct runner **keep_runner)
{
	static int32_t p0[700], p1[630];
	const int32_t *prompts[2] = {p0, p1};
	uint32_t lens[2] = {g_len0, 630};
	struct runner_opts ro = {.mode = mode,
				 .max_batch = 2,
				 .max_tokens = 760,
				 .host = runner_mode_offloads(mode) ? host : NULL,
				 .keep_sequences = keep,
				 .recall_every = g_recall_every,
				 .gather_dma = g_gather_dma,
				 .gather_bulk = g_gather_bulk,
				 .dma_max_bytes = g_dma_max_bytes,
				 .dma_streams = g_dma_streams,
				 .prefill_kv_side = g_kv_side,
				 .phase_times = g_phase_times,
				 .cache_slots = g_cache_slots,
				 .seed_cache = g_seed_cache,
				 .on_step = g_count_allocs ? count_allocs : NULL};
	struct runner *r = NULL;
	char err[512] = "";

	memset(out, 0, sizeof(*out));
	make_prompt(p0, g_len0, 1);
	make_prompt(p1, 630, 2);
	int rc = runner_open(g_model, g_kb, &ro, &r, err, sizeof(err));
	if (rc)
		fail_msg("runner_open(%s): %s", runner_mode_name(mode), err);
	out->logits = calloc((size_t)2 * NEW * g_model->cfg.vocab, sizeof(float));
	rc = runner_generate(r, prompts, lens, 2, NEW, g_samp, out->tokens, out->logits, err,
			     sizeof(err));
	if (rc)
		fail_msg("generate(%s): %s", runner_mode_name(mode), err);
	out->st = *runner_get_stats(r);
	assert_true(out->st.n_layers <= 8);
	memcpy(out->layer, out->st.layer, out->st.n_layers * sizeof(out->layer[0]));
	out->st.layer = out->layer;
	for (uint32_t l = 0; l < out->st.n_layers; l++) {
		out->selected += out->st.layer[l].selected;
		out->loads += out->st.layer[l].loads;
	}
	if (keep_runner)
		*keep_runner = r;
	else
		runner_close(r);
}

static void assert_same_tokens(const struct run *a, const struct run *b, const char *what)
{
	for (int i = 0; i < 2 * NEW; i++)
		if (a->tokens[i] != b->tokens[i])
			fail_msg("%s: token %d differs (%d vs %d)", what, i, a->tokens[i],
				 b->tokens[i]);
}

static void test_twins(void **state)
{
	struct kvhost *h = inproc();
	struct run sp, spo, sd, sdn, sdo, sds;

	run_mode(RUNNER_MODE_SPARSE, h, false, &sp, NULL);
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &spo, NULL);
	g_recall_every = 1; /* measuring recall must not change the tokens */
	run_mode(RUNNER_MODE_SPARDA, h, false, &sd, NULL);
	g_recall_every = 3;
	run_mode(RUNNER_MODE_SPARDA_NOPREFETCH, h, false, &sdn, NULL);
	g_recall_every = 0;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &sdo, NULL);
	assert_same_tokens(&spo, &sp, "sparse-offload vs sparse");
	assert_same_tokens(&sd, &sdo, "sparda vs sparda-nooffload");
	assert_same_tokens(&sdn, &sdo, "sparda-noprefetch vs sparda-nooffload");
	/* sparsity engaged: per step each (seq, head) selects topk of ~11 blocks */
	uint64_t topk = g_model->cfg.sparse.topk;
	uint64_t steps = NEW - 1, n_caches = 2 * g_model->cfg.n_kv_heads;
	assert_int_equal(sd.selected, steps * n_caches * topk * g_model->cfg.n_layers);
	/* the offloaded modes really moved data from the host store */
	assert_true(spo.loads > 0 && sd.loads > 0 && sdn.loads > 0);
	assert_true(spo.st.bytes_h2d > 0 && spo.st.bytes_d2h > 0);
	assert_int_equal(sd.st.bytes_h2d, sdn.st.bytes_h2d);
	/* recall: every step sampled in sparda, every third in sparda-noprefetch, none when off */
	assert_int_equal(sd.st.recall_samples, steps);
	assert_int_equal(sdn.st.recall_samples, (steps + 2) / 3);
	assert_int_equal(sdo.st.recall_samples, 0);
	assert_true(runner_recall_value(&sdo.st, -1) < 0.0);
	for (int l = -1; l < (int)sd.st.n_layers; l++) {
		double v = runner_recall_value(&sd.st, l);
		print_message("sparda recall layer %d: %.3f\n", l, v);
		assert_true(v >= 0.0 && v <= 1.0);
	}
	/* the prompt's KV packed on the copy stream: the same tokens */
	g_kv_side = true;
	run_mode(RUNNER_MODE_SPARDA, h, false, &sds, NULL);
	g_kv_side = false;
	assert_same_tokens(&sds, &sdo, "sparda (prompt KV on the copy stream) vs sparda-nooffload");
	assert_true(sds.st.units_written_side > 0 && sd.st.units_written_side == 0);
	assert_int_equal(sds.st.units_written, sd.st.units_written);
	free(sds.logits);
	struct run *all[] = {&sp, &spo, &sd, &sdn, &sdo};
	for (int i = 0; i < 5; i++)
		free(all[i]->logits);
	kvhost_close(h);
}

/*
 * The retaining cache (cache_slots above top-k): the same tokens as the twins, and never more
 * loads than the top-k cache, whose contents (the last selection) it always includes; fewer
 * here, where blocks come back after a step unselected. Fewer slots than top-k are refused.
 */
static void test_cache_slots(void **state)
{
	struct kvhost *h = inproc();
	struct run plain, ret, spo, spo_ret, ref, sp;
	uint32_t topk = g_model->cfg.sparse.topk;

	(void)state;
	run_mode(RUNNER_MODE_SPARDA, h, false, &plain, NULL);
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &spo, NULL);
	g_cache_slots = topk + 3; /* fewer than the ~12 blocks: the eviction order matters */
	run_mode(RUNNER_MODE_SPARDA, h, false, &ret, NULL);
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &spo_ret, NULL);
	g_cache_slots = 0;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
	run_mode(RUNNER_MODE_SPARSE, h, false, &sp, NULL);
	assert_same_tokens(&ret, &ref, "sparda (retaining cache) vs sparda-nooffload");
	assert_same_tokens(&spo_ret, &sp, "sparse-offload (retaining cache) vs sparse");
	print_message("loads: sparda %llu -> %llu, sparse-offload %llu -> %llu\n",
		      (unsigned long long)plain.loads, (unsigned long long)ret.loads,
		      (unsigned long long)spo.loads, (unsigned long long)spo_ret.loads);
	assert_int_equal(ret.selected, plain.selected);
	assert_true(ret.loads < plain.loads && spo_ret.loads < spo.loads);
	assert_true(ret.loads > 0 && ret.st.bytes_h2d < plain.st.bytes_h2d);

	struct runner_opts ro = {.mode = RUNNER_MODE_SPARDA,
				 .max_batch = 2,
				 .max_tokens = 760,
				 .host = h,
				 .cache_slots = topk - 1};
	struct runner *r = NULL;
	char err[512] = "";
	assert_int_equal(runner_open(g_model, g_kb, &ro, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "cache slots"));
	struct run *all[] = {&plain, &ret, &spo, &spo_ret, &ref, &sp};
	for (int i = 0; i < 6; i++)
		free(all[i]->logits);
	kvhost_close(h);
}

/* A seeded run against the same run unseeded (name): its tokens the twin's, its logits the
 * unseeded run's bit for bit, the same selections and fewer units fetched. Frees both logits. */
static void check_seeded(struct run *off, struct run *on, const struct run *twin, const char *name)
{
	size_t nl = (size_t)2 * NEW * g_model->cfg.vocab * sizeof(float);

	print_message("%s: loads %llu -> %llu with %llu units seeded\n", name,
		      (unsigned long long)off->loads, (unsigned long long)on->loads,
		      (unsigned long long)on->st.units_seeded);
	assert_same_tokens(on, twin, name);
	if (memcmp(on->logits, off->logits, nl))
		fail_msg("%s: logits differ with the cache seeded", name);
	assert_int_equal(off->st.units_seeded, 0);
	assert_true(on->st.units_seeded > 0);
	assert_int_equal(on->selected, off->selected);
	assert_true(on->loads < off->loads);
	assert_true(on->st.bytes_h2d < off->st.bytes_h2d);
	free(off->logits);
	free(on->logits);
}

/*
 * seed_cache: the offloaded layers' caches filled at the end of prefill from the prompt's KV.
 * Logits equal the unseeded run's bit for bit (the seeded units hold the arena's bytes), the
 * tokens the twins', and fewer units are fetched (the first step's forced blocks at least are
 * cached), with the top-k cache and the retaining one, and for a prompt of whole blocks.
 */
static void test_seed_cache(void **state)
{
	struct kvhost *h = inproc();
	struct run ref, sp, run[2][2][2]; /* [retaining][mode: sparda, sparse-offload][seeded] */
	enum runner_mode modes[2] = {RUNNER_MODE_SPARDA, RUNNER_MODE_SPARSE_OFFLOAD};
	const char *names[2][2] = {
	    {"sparda", "sparse-offload"},
	    {"sparda (retaining cache)", "sparse-offload (retaining cache)"}};

	(void)state;
	for (int ret = 0; ret < 2; ret++)
		for (int m = 0; m < 2; m++)
			for (int sd = 0; sd < 2; sd++) {
				g_cache_slots = ret ? g_model->cfg.sparse.topk + 3 : 0;
				g_seed_cache = sd;
				run_mode(modes[m], h, false, &run[ret][m][sd], NULL);
			}
	g_cache_slots = 0;
	g_seed_cache = false;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
	run_mode(RUNNER_MODE_SPARSE, h, false, &sp, NULL);
	for (int ret = 0; ret < 2; ret++)
		for (int m = 0; m < 2; m++)
			check_seeded(&run[ret][m][0], &run[ret][m][1], m ? &sp : &ref,
				     names[ret][m]);
	free(ref.logits);
	free(sp.logits);
	/* a prompt of whole blocks (640 = 10 x 64): no tail block, the seeded blocks from slot 0 */
	g_len0 = 640;
	run_mode(RUNNER_MODE_SPARDA, h, false, &run[0][0][0], NULL);
	g_seed_cache = true;
	run_mode(RUNNER_MODE_SPARDA, h, false, &run[0][0][1], NULL);
	g_seed_cache = false;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
	g_len0 = 700;
	check_seeded(&run[0][0][0], &run[0][0][1], &ref, "sparda (whole blocks)");
	free(ref.logits);
	kvhost_close(h);
}

/* A failed check leaves a gather test early: the tests after it gather with the kernel again. */
static int gather_kernel(void **state)
{
	(void)state;
	g_gather_dma = g_gather_bulk = false;
	g_dma_max_bytes = 0;
	g_dma_streams = 0;
	return 0;
}

/*
 * sparda and sparse-offload fetching another way (*flag set, named `how`): tokens equal the
 * twins' and the gather kernel's run, with the same units and bytes fetched. Returns the units
 * sparda's copy engines fetched (0 without gather_dma), in *loads the units it fetched in all.
 */
static uint64_t check_gather(bool *flag, const char *how, uint64_t *loads)
{
	struct kvhost *h = inproc();
	struct run kern, alt, spo, ref, sp;
	char what[96];

	run_mode(RUNNER_MODE_SPARDA, h, false, &kern, NULL);
	*flag = true;
	run_mode(RUNNER_MODE_SPARDA, h, false, &alt, NULL);
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &spo, NULL);
	*flag = false;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
	run_mode(RUNNER_MODE_SPARSE, h, false, &sp, NULL);
	snprintf(what, sizeof(what), "sparda (%s) vs sparda-nooffload", how);
	assert_same_tokens(&alt, &ref, what);
	snprintf(what, sizeof(what), "sparda (%s) vs sparda (kernel)", how);
	assert_same_tokens(&alt, &kern, what);
	snprintf(what, sizeof(what), "sparse-offload (%s) vs sparse", how);
	assert_same_tokens(&spo, &sp, what);
	assert_true(alt.loads > 0 && spo.loads > 0);
	assert_int_equal(alt.loads, kern.loads);
	assert_int_equal(alt.st.bytes_h2d, kern.st.bytes_h2d);
	if (flag != &g_gather_dma)
		assert_int_equal(alt.st.units_dma, 0);
	else if (!g_dma_max_bytes)
		assert_int_equal(alt.st.units_dma, alt.loads);
	uint64_t dma = alt.st.units_dma;
	if (loads)
		*loads = alt.loads;
	struct run *all[] = {&kern, &alt, &spo, &ref, &sp};
	for (int i = 0; i < 5; i++)
		free(all[i]->logits);
	kvhost_close(h);
	return dma;
}

/* --gather=dma: the load lists come back to the host, which resolves them and queues the
 * copies (copy_units_dma). */
static void test_gather_dma(void **state)
{
	(void)state;
	check_gather(&g_gather_dma, "dma", NULL);
}

/*
 * dma_max_bytes: of each layer's fetch in a step, the copy engines take the first units up to
 * the cap and the device's resolve and bulk copy the rest, beside them; the tokens and the
 * units fetched do not change. A cap under one unit leaves everything to the device; one unit
 * gives the copy engines at most one unit of each layer's fetch; a larger cap leaves them more,
 * all of it under the largest, and a mix in between.
 */
static void test_gather_dma_capped(void **state)
{
	uint64_t dma[5], loads = 0,
			 unit = (uint64_t)g_model->cfg.sparse.block * g_model->cfg.head_dim * 4;
	bool mixed = false;

	(void)state;
	g_gather_bulk = true;
	for (int i = 0; i < 5; i++) {
		/* half a unit, then 1, 4, 16, 64 units */
		g_dma_max_bytes = i ? unit << (2 * (i - 1)) : unit / 2;
		dma[i] = check_gather(&g_gather_dma, "dma, capped", &loads);
		print_message("cap %llu bytes: %llu of %llu units by the copy engines\n",
			      (unsigned long long)g_dma_max_bytes, (unsigned long long)dma[i],
			      (unsigned long long)loads);
		assert_true(!i || dma[i] >= dma[i - 1]);
		mixed |= dma[i] > 0 && dma[i] < loads;
	}
	assert_int_equal(dma[0], 0);
	assert_true(dma[1] > 0 && dma[1] <= (uint64_t)(NEW - 1) * g_model->cfg.n_layers);
	assert_true(dma[1] < loads && dma[4] == loads && mixed);
}

/* dma_streams: each layer's copy-engine copies split over 2, 3 and 4 streams (on CUDA the
 * backend's own DMA streams beside the caller's; the CPU copies in order): the same tokens and
 * units, all of them by the copy engines. */
static void test_gather_dma_streams(void **state)
{
	(void)state;
	for (g_dma_streams = 2; g_dma_streams <= KB_DMA_STREAMS_MAX; g_dma_streams++) {
		char how[32];
		snprintf(how, sizeof(how), "dma, %u streams", g_dma_streams);
		check_gather(&g_gather_dma, how, NULL);
	}
	g_dma_streams = 0;
}

/* --gather=bulk: the gather kernel's lists moved by copy_units_bulk (on CUDA the bulk-copy
 * engine, here the CPU's copy). */
static void test_gather_bulk(void **state)
{
	(void)state;
	check_gather(&g_gather_bulk, "bulk", NULL);
}

/*
 * Phase timing leaves the tokens alone and accounts for every decode step: each phase's time
 * is non-negative, the layer's work shows in its phases, and together they fit inside the
 * decode's wall time (the CPU backend's events are wall-clock marks). Off, nothing is counted.
 */
static void test_phase_times(void **state)
{
	struct kvhost *h = inproc();
	struct run plain, timed, nooff;
	double sum = 0.0;

	run_mode(RUNNER_MODE_SPARDA, h, false, &plain, NULL);
	g_phase_times = true;
	run_mode(RUNNER_MODE_SPARDA, h, false, &timed, NULL);
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &nooff, NULL);
	g_phase_times = false;
	assert_same_tokens(&timed, &plain, "sparda with phase times vs without");
	assert_same_tokens(&timed, &nooff, "sparda vs sparda-nooffload, phase times on");
	assert_int_equal(plain.st.phase_steps, 0);
	for (int p = 0; p < RUNNER_PHASE_N; p++)
		assert_true(plain.st.phase_ms[p] == 0.0);
	assert_int_equal(timed.st.phase_steps, timed.st.decode_steps);
	assert_int_equal(nooff.st.phase_steps, nooff.st.decode_steps);
	for (int p = 0; p < RUNNER_PHASE_N; p++) {
		assert_true(timed.st.phase_ms[p] >= 0.0);
		assert_string_not_equal(runner_phase_name((enum runner_phase)p), "?");
		sum += timed.st.phase_ms[p];
	}
	assert_true(timed.st.phase_ms[RUNNER_PHASE_QKVF] > 0.0);
	assert_true(timed.st.phase_ms[RUNNER_PHASE_ATTEND] > 0.0);
	assert_true(timed.st.phase_ms[RUNNER_PHASE_FFN] > 0.0);
	assert_true(timed.st.phase_ms[RUNNER_PHASE_HEAD] > 0.0);
	/* the host store's calls (epochs, health checks, block allocations) are timed, and only
	 * where there is a host store */
	assert_true(timed.st.decode_store_s > 0.0 && plain.st.decode_store_s > 0.0);
	assert_true(timed.st.decode_store_s < timed.st.decode_s);
	assert_true(nooff.st.decode_store_s == 0.0);
	/* split by call: an epoch every step, a health check every 16, nothing without a store */
	double split = 0.0;
	for (int c = 0; c < RUNNER_STORE_N; c++) {
		assert_string_not_equal(runner_store_call_name((enum runner_store_call)c), "?");
		assert_true(timed.st.store_call_s[c] >= 0.0);
		split += timed.st.store_call_s[c];
		assert_int_equal(nooff.st.store_calls[c], 0);
	}
	assert_true(fabs(split - timed.st.decode_store_s) <= 1e-9 + 1e-9 * timed.st.decode_store_s);
	assert_int_equal(timed.st.store_calls[RUNNER_STORE_EPOCH], timed.st.decode_steps);
	assert_int_equal(timed.st.store_calls[RUNNER_STORE_HEALTH],
			 (timed.st.decode_steps + 15) / 16);
	assert_int_equal(timed.st.store_calls[RUNNER_STORE_FORECAST], 0); /* no NVMe tier */
	if (sum > timed.st.decode_s * 1e3 * 1.001 + 0.01)
		fail_msg("phases sum to %.3f ms, more than the decode's %.3f ms", sum,
			 timed.st.decode_s * 1e3);
	struct run *all[] = {&plain, &timed, &nooff};
	for (int i = 0; i < 3; i++)
		free(all[i]->logits);
	kvhost_close(h);
}

/* ---- steps sent to the store over several runs ---------------------------------------- */

/* A store that spills (so the runner sends ring Forecasts) and records every step it sees. */
static struct kvhost_ops g_rec_ops;
static const struct kvhost_ops *g_inner_ops;
static uint64_t g_epoch, g_epochs, g_forecasts, g_bad_epochs, g_unprotected;

static int rec_epoch(struct kvhost *h, uint64_t step)
{
	g_bad_epochs += step < g_epoch; /* the epoch never goes back */
	g_epoch = step;
	g_epochs++;
	return g_inner_ops->epoch(h, step);
}

/* The inproc store keeps every unit resident: the Forecast only records. */
static int rec_forecast(struct kvhost *h, const struct kvhost_unit *u, uint32_t n, uint64_t step)
{
	(void)h;
	(void)u;
	(void)n;
	g_unprotected += step <= g_epoch; /* a lease the published epoch has already passed */
	g_forecasts++;
	return 0;
}

/* The recording ops over store h's own (g_inner_ops), for h->ops while a test wants them. */
static void rec_ops_init(struct kvhost *h)
{
	g_inner_ops = h->ops;
	g_rec_ops = *h->ops;
	g_rec_ops.epoch = rec_epoch;
	g_rec_ops.forecast = rec_forecast;
}

/*
 * Runs that share one store (the modes of a job, a service's requests) send steps that only
 * grow: every Forecast's step is above the epoch published so far, so its leases hold, and
 * the epoch never goes back. Tokens stay the twins' with the store in careful mode.
 */
static void test_steps_grow_across_runs(void **state)
{
	struct kvhost *h = inproc();
	struct run a, b, c, ref;

	rec_ops_init(h);
	h->ops = &g_rec_ops;
	h->may_spill = true;
	g_epoch = g_epochs = g_forecasts = g_bad_epochs = g_unprotected = 0;
	run_mode(RUNNER_MODE_SPARDA, h, false, &a, NULL);
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &b, NULL);
	run_mode(RUNNER_MODE_SPARDA_NOPREFETCH, h, false, &c, NULL);
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
	assert_true(g_forecasts > 0);
	assert_int_equal(g_epochs, 3 * (NEW - 1));
	assert_int_equal(g_bad_epochs, 0);
	assert_int_equal(g_unprotected, 0);
	assert_true(h->step_base >= 3 * (uint64_t)NEW);
	assert_same_tokens(&a, &ref, "sparda (careful) vs sparda-nooffload");
	assert_same_tokens(&c, &ref, "sparda-noprefetch (careful) vs sparda-nooffload");
	free(a.logits);
	free(b.logits);
	free(c.logits);
	free(ref.logits);
	h->ops = g_inner_ops;
	kvhost_close(h);
}

/*
 * The arena slots of a block the next step starts are allocated while the GPU finishes the step
 * that fills the previous one, so the next step does not wait for the request; a block the first
 * decode step starts (a prompt of whole blocks) is allocated at that step's start. With prompts
 * of 700 and 630 tokens (blocks of 64), the decode fills blocks at its steps 3 (token 703) and 9
 * (token 639): one allocation in each of those steps. With 640 and 630, one at step 0 and one at
 * step 9. A store that may spill (careful mode) allocates at the start of the steps that start
 * the blocks, 4 and 10. The tokens equal the twin's each way.
 */
static void test_alloc_ahead(void **state)
{
	static const struct {
		uint32_t len0;
		bool spill;
		uint32_t first, second; /* the steps of the two allocations */
	} cases[] = {{700, false, 3, 9}, {640, false, 0, 9}, {700, true, 4, 10}};
	struct kvhost *h = inproc();
	struct run run, ref;

	(void)state;
	assert_int_equal(g_model->cfg.sparse.block, 64);
	rec_ops_init(h);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		g_len0 = cases[c].len0;
		h->may_spill = cases[c].spill;
		h->ops = cases[c].spill ? &g_rec_ops : g_inner_ops;
		memset(g_allocs, 0, sizeof(g_allocs));
		g_count_allocs = true;
		run_mode(RUNNER_MODE_SPARDA, h, false, &run, NULL);
		g_count_allocs = false;
		run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &ref, NULL);
		assert_same_tokens(&run, &ref, "sparda (block slots allocated ahead) vs nooffload");
		for (uint32_t t = 0; t < run.st.decode_steps; t++) {
			uint64_t want = t < cases[c].first ? 0 : t < cases[c].second ? 1 : 2;
			if (g_allocs[t] != want)
				fail_msg(
				    "case %zu: %llu allocations after decode step %u, want %llu", c,
				    (unsigned long long)g_allocs[t], t, (unsigned long long)want);
		}
		assert_int_equal(run.st.store_calls[RUNNER_STORE_ALLOC], 2);
		free(run.logits);
		free(ref.logits);
	}
	g_len0 = 700;
	h->may_spill = false;
	h->ops = g_inner_ops;
	kvhost_close(h);
}

/* Seeded sampling is reproducible and the same in a mode and its twin; another seed differs. */
static void test_seeded_sampling(void **state)
{
	struct kvhost *h = inproc();
	struct runner_sampling a = {.temperature = 0.9f, .top_k = 40, .seed = 11};
	struct runner_sampling b = {.temperature = 0.9f, .top_k = 40, .seed = 12};
	struct run x, y, z, w;

	g_samp = &a;
	run_mode(RUNNER_MODE_SPARDA, h, false, &x, NULL);
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &y, NULL);
	run_mode(RUNNER_MODE_SPARDA, h, false, &z, NULL);
	g_samp = &b;
	run_mode(RUNNER_MODE_SPARDA, h, false, &w, NULL);
	g_samp = NULL;
	assert_same_tokens(&x, &y, "sampled sparda vs sparda-nooffload");
	assert_same_tokens(&x, &z, "sampled sparda twice");
	assert_memory_not_equal(x.tokens, w.tokens, sizeof(x.tokens));
	free(x.logits), free(y.logits), free(z.logits), free(w.logits);
	kvhost_close(h);
}

static void test_all_blocks_sparse_equals_dense(void **state)
{
	struct run dense, sparse;
	struct kb_sparse saved = g_model->cfg.sparse;

	run_mode(RUNNER_MODE_DENSE, NULL, false, &dense, NULL);
	g_model->cfg.sparse.topk = 16; /* >= the 12 blocks of 760 tokens: every block selected */
	run_mode(RUNNER_MODE_SPARSE, NULL, false, &sparse, NULL);
	g_model->cfg.sparse = saved;
	assert_same_tokens(&sparse, &dense, "sparse(all blocks) vs dense");
	size_t n = (size_t)2 * NEW * g_model->cfg.vocab;
	double md = 0;
	for (size_t i = 0; i < n; i++)
		md = fmax(md, fabs((double)dense.logits[i] - sparse.logits[i]));
	assert_true(md < 0.05);
	free(dense.logits);
	free(sparse.logits);
}

/*
 * Recall is exact where the Forecast is exactly the selector's query: with one query head per
 * KV head, the original selector's per-head softmax ranks blocks as the raw dot product does,
 * so a layer-0 Forecast (q_curr) equal to layer 0's W_q selects the same blocks (recall 1.0);
 * the generated model's noisy q_curr does not.
 */
static void test_recall_exact_forecast(void **state)
{
	struct model *saved = g_model, *m = NULL;
	struct model_config mc;
	char dir[300], err[512];
	struct run noisy, exact;

	snprintf(dir, sizeof(dir), "%s-mha", g_dir);
	assert_int_equal(model_preset("tiny", &mc), 0);
	mc.n_heads = mc.n_kv_heads;
	if (model_generate(dir, &mc, 78, err, sizeof(err)) ||
	    model_open(dir, NULL, &m, err, sizeof(err)))
		fail_msg("model: %s", err);
	m->cfg.dense_len = 256;
	m->cfg.sparse.topk = 6;
	g_model = m;
	g_recall_every = 1;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, NULL, false, &noisy, NULL);
	m->layers[0].wfc.data = m->layers[0].wq.data; /* same shape: n_heads == n_kv_heads */
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, NULL, false, &exact, NULL);
	g_recall_every = 0;
	g_model = saved;
	assert_true(exact.layer[0].recall_true > 0);
	if (g_kb->kind == KB_KIND_CPU) {
		assert_int_equal(exact.layer[0].recall_hits, exact.layer[0].recall_true);
		assert_true(runner_recall_value(&exact.st, 0) == 1.0);
	} else { /* the two CUDA scorers sum in different orders: a near-tie may flip */
		assert_true(runner_recall_value(&exact.st, 0) >= 0.95);
	}
	assert_true(runner_recall_value(&noisy.st, 0) < 1.0);
	free(noisy.logits);
	free(exact.logits);
	model_close(m);
	snprintf(err, sizeof(err), "rm -rf %s", dir);
	assert_int_equal(system(err), 0);
}

/*
 * A model generated with a shared activation (gen-model --shared-activation) gives block
 * selection step-to-step locality: sparse-offload fetches fewer units than with the plain
 * model of the same seed, the Forecast's recall is higher, and sparda still equals
 * sparda-nooffload token for token.
 */
static void test_shared_activation_locality(void **state)
{
	struct model *saved = g_model, *m = NULL;
	struct model_config mc;
	struct kvhost *h = inproc();
	char dir[300], err[512];
	struct run plain, plain_sd, sa, sd, sdo;

	g_recall_every = 1;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &plain_sd, NULL);
	g_recall_every = 0;
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &plain, NULL);
	snprintf(dir, sizeof(dir), "%s-sa", g_dir);
	assert_int_equal(model_preset("tiny", &mc), 0);
	if (model_generate_opts(dir, &mc,
				&(struct model_gen_opts){.seed = 77, .shared_activation = 0.9}, err,
				sizeof(err)) ||
	    model_open(dir, NULL, &m, err, sizeof(err)))
		fail_msg("model: %s", err);
	m->cfg.dense_len = saved->cfg.dense_len;
	m->cfg.sparse.topk = saved->cfg.sparse.topk;
	g_model = m;
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, false, &sa, NULL);
	run_mode(RUNNER_MODE_SPARDA, h, false, &sd, NULL);
	g_recall_every = 1;
	run_mode(RUNNER_MODE_SPARDA_NOOFFLOAD, h, false, &sdo, NULL);
	g_recall_every = 0;
	g_model = saved;
	print_message("units fetched by sparse-offload: plain %llu, shared activation %llu\n",
		      (unsigned long long)plain.loads, (unsigned long long)sa.loads);
	print_message("Forecast recall: plain %.3f, shared activation %.3f\n",
		      runner_recall_value(&plain_sd.st, -1), runner_recall_value(&sdo.st, -1));
	assert_int_equal(sa.selected, plain.selected);
	assert_true(sa.loads * 4 < plain.loads * 3);
	/* the heads of a KV group share the component: the Forecast's group-mean query ranks
	 * blocks as they do (measured 0.59 -> 0.94; a component per head lowers the recall) */
	assert_true(runner_recall_value(&sdo.st, -1) > runner_recall_value(&plain_sd.st, -1) + 0.2);
	assert_same_tokens(&sd, &sdo, "sparda vs sparda-nooffload (shared activation)");
	struct run *all[] = {&plain, &plain_sd, &sa, &sd, &sdo};
	for (int i = 0; i < 5; i++)
		free(all[i]->logits);
	kvhost_close(h);
	model_close(m);
	snprintf(err, sizeof(err), "rm -rf %s", dir);
	assert_int_equal(system(err), 0);
}

/* ---- naive reference forward pass (double precision, one position) ---- */

static double bf(const uint16_t *p, size_t i)
{
	return kb_bf16_to_f32(p[i]);
}

/* The runner stores activations between ops in bf16; the reference rounds at the same points
 * (and nowhere else), so the comparison isolates the ops' arithmetic. */
static double r16(double x)
{
	return kb_bf16_to_f32(kb_f32_to_bf16((float)x));
}

static void round16(double *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		v[i] = r16(v[i]);
}

static void matvec(const struct model_tensor *w, const double *x, double *y)
{
	for (uint32_t r = 0; r < w->rows; r++) {
		double s = 0;
		for (uint32_t c = 0; c < w->cols; c++)
			s += bf(w->data, (size_t)r * w->cols + c) * x[c];
		y[r] = s;
	}
}

static void rmsnorm(const double *x, const struct model_tensor *w, uint32_t n, float eps, double *y)
{
	double ss = 0;
	for (uint32_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	double inv = 1.0 / sqrt(ss / n + eps);
	for (uint32_t i = 0; i < n; i++)
		y[i] = r16(x[i] * inv * bf(w->data, i));
}

static void rope(double *v, uint32_t heads, uint32_t d, uint32_t pos, const float *inv, float ms)
{
	for (uint32_t h = 0; h < heads; h++) {
		double *x = v + (size_t)h * d;
		for (uint32_t i = 0; i < d / 2; i++) {
			double a = pos * (double)inv[i], c = cos(a) * ms, s = sin(a) * ms;
			double x0 = x[i], x1 = x[i + d / 2];
			x[i] = r16(x0 * c - x1 * s);
			x[i + d / 2] = r16(x1 * c + x0 * s);
		}
	}
}

/* Logits at positions [n - count, n) of the n tokens (one forward pass over all of them). */
static void naive_logits(const int32_t *tok, uint32_t n, uint32_t count, double *logits)
{
	const struct model_config *c = &g_model->cfg;
	uint32_t H = c->hidden, d = c->head_dim, nq = c->n_heads, nkv = c->n_kv_heads, F = c->ffn;
	double *x = calloc((size_t)n * H, 8), *h = calloc(H, 8), *q = calloc(nq * d, 8);
	double *K = calloc((size_t)n * nkv * d, 8), *V = calloc((size_t)n * nkv * d, 8);
	double *att = calloc(nq * d, 8), *o = calloc(H, 8), *g = calloc(F, 8), *u = calloc(F, 8);
	double *p = calloc(n, 8), *qall = calloc((size_t)n * nq * d, 8);
	float inv[512], ms;

	assert_int_equal(kb_rope_resolve(&c->rope, inv, &ms), 0);
	for (uint32_t t = 0; t < n; t++)
		for (uint32_t i = 0; i < H; i++)
			x[(size_t)t * H + i] =
			    bf(g_model->embed.data, (size_t)tok[t] * H + i) * c->scale_emb;
	for (uint32_t l = 0; l < c->n_layers; l++) {
		const struct model_layer *ml = &g_model->layers[l];
		for (uint32_t t = 0; t < n; t++) {
			rmsnorm(x + (size_t)t * H, &ml->attn_norm, H, c->rms_eps, h);
			matvec(&ml->wq, h, qall + (size_t)t * nq * d);
			matvec(&ml->wk, h, K + (size_t)t * nkv * d);
			matvec(&ml->wv, h, V + (size_t)t * nkv * d);
			round16(qall + (size_t)t * nq * d, (size_t)nq * d);
			round16(K + (size_t)t * nkv * d, (size_t)nkv * d);
			round16(V + (size_t)t * nkv * d, (size_t)nkv * d);
			rope(qall + (size_t)t * nq * d, nq, d, t, inv, ms);
			rope(K + (size_t)t * nkv * d, nkv, d, t, inv, ms);
		}
		for (uint32_t t = 0; t < n; t++) {
			for (uint32_t hq = 0; hq < nq; hq++) {
				uint32_t kvh = hq / (nq / nkv);
				const double *qq = qall + ((size_t)t * nq + hq) * d;
				double mx = -INFINITY, sum = 0;
				for (uint32_t s = 0; s <= t; s++) {
					double dot = 0;
					for (uint32_t i = 0; i < d; i++)
						dot += qq[i] * K[((size_t)s * nkv + kvh) * d + i];
					p[s] = dot / sqrt((double)d);
					mx = fmax(mx, p[s]);
				}
				for (uint32_t s = 0; s <= t; s++)
					sum += (p[s] = exp(p[s] - mx));
				for (uint32_t i = 0; i < d; i++) {
					double acc = 0;
					for (uint32_t s = 0; s <= t; s++)
						acc += p[s] * V[((size_t)s * nkv + kvh) * d + i];
					att[hq * d + i] = r16(acc / sum);
				}
			}
			matvec(&ml->wo, att, o);
			round16(o, H);
			double *xt = x + (size_t)t * H;
			for (uint32_t i = 0; i < H; i++)
				xt[i] += c->residual_scale * o[i];
			rmsnorm(xt, &ml->ffn_norm, H, c->rms_eps, h);
			matvec(&ml->w_gate, h, g);
			matvec(&ml->w_up, h, u);
			round16(g, F);
			round16(u, F);
			for (uint32_t i = 0; i < F; i++)
				g[i] = r16(g[i] / (1.0 + exp(-g[i])) * u[i]);
			matvec(&ml->w_down, g, o);
			round16(o, H);
			for (uint32_t i = 0; i < H; i++)
				xt[i] += c->residual_scale * o[i];
		}
	}
	for (uint32_t s = 0; s < count; s++) {
		double *lg = logits + (size_t)s * c->vocab;
		rmsnorm(x + (size_t)(n - count + s) * H, &g_model->norm, H, c->rms_eps, h);
		matvec(&g_model->lm_head, h, lg);
		for (uint32_t v = 0; v < c->vocab; v++)
			lg[v] *= c->logit_scale;
	}
	free(x), free(h), free(q), free(K), free(V), free(att), free(o), free(g), free(u), free(p);
	free(qall);
}

static void test_dense_equals_naive(void **state)
{
	const uint32_t n = 300, steps = 6, V = g_model->cfg.vocab;
	int32_t prompt[300 + 6], toks[6];
	float *lg = calloc((size_t)steps * V, sizeof(float));
	double *ref = calloc((size_t)steps * V, sizeof(double));
	const int32_t *pp[1] = {prompt};
	struct runner_opts ro = {.mode = RUNNER_MODE_DENSE, .max_batch = 1, .max_tokens = 320};
	struct runner *r = NULL;
	char err[512];

	make_prompt(prompt, n, 5);
	assert_int_equal(runner_open(g_model, g_kb, &ro, &r, err, sizeof(err)), 0);
	assert_int_equal(runner_generate(r, pp, &n, 1, steps, NULL, toks, lg, err, sizeof(err)), 0);
	runner_close(r);
	/* the reference sees the generated tokens as the continuation of the prompt */
	for (uint32_t s = 0; s + 1 < steps; s++)
		prompt[n + s] = toks[s];
	naive_logits(prompt, n + steps - 1, steps, ref);
	for (uint32_t s = 0; s < steps; s++) {
		const double *rf = ref + (size_t)s * V;
		double num = 0, den = 0, best = -INFINITY, second = -INFINITY;
		uint32_t arg = 0;
		for (uint32_t v = 0; v < V; v++) {
			double dlt = lg[(size_t)s * V + v] - rf[v];
			num += dlt * dlt;
			den += rf[v] * rf[v];
			if (rf[v] > best) {
				second = best;
				best = rf[v];
				arg = v;
			} else if (rf[v] > second) {
				second = rf[v];
			}
		}
		double rel = sqrt(num / den);
		print_message("step %u: relative L2 difference %.4f\n", s, rel);
		if (rel > 0.03)
			fail_msg(
			    "step %u: logits differ from the naive pass by %.4f (L2, relative)", s,
			    rel);
		if (best - second > 0.05 * sqrt(den / V))
			assert_int_equal(toks[s], (int)arg);
	}
	free(lg);
	free(ref);
}

static void kv_readback(bool side)
{
	struct kvhost *h = inproc();
	struct runner *res = NULL, *off = NULL;
	struct run a, b;
	size_t ub;

	run_mode(RUNNER_MODE_SPARSE, NULL, false, &a, &res);
	g_kv_side = side;
	run_mode(RUNNER_MODE_SPARSE_OFFLOAD, h, true, &b, &off);
	g_kv_side = false;
	assert_same_tokens(&a, &b, "sparse-offload vs sparse");
	/* the prompt's units went through the copy stream exactly when asked */
	assert_true((b.st.units_written_side > 0) == side);
	ub = runner_unit_bytes(res);
	uint8_t *u0 = malloc(ub), *u1 = malloc(ub);
	const struct model_config *c = &g_model->cfg;
	uint32_t lens[2] = {700 + NEW - 1, 630 + NEW - 1}, checked = 0;
	for (uint32_t s = 0; s < 2; s++) {
		for (uint32_t l = 0; l < c->n_layers; l++) {
			for (uint32_t g = 0; g < c->n_kv_heads; g++) {
				for (uint32_t m = 0; m * c->sparse.block < lens[s]; m++) {
					uint32_t rows = lens[s] - m * c->sparse.block;
					rows = rows > c->sparse.block ? c->sparse.block : rows;
					size_t half = ub / 2, rb = (size_t)rows * c->head_dim * 2;
					assert_int_equal(runner_read_unit(res, s, l, g, m, u0), 0);
					assert_int_equal(runner_read_unit(off, s, l, g, m, u1), 0);
					if (memcmp(u0, u1, rb) || memcmp(u0 + half, u1 + half, rb))
						fail_msg("seq %u layer %u head %u block %u differs",
							 s, l, g, m);
					checked++;
				}
			}
		}
	}
	assert_true(checked > 150);
	free(u0);
	free(u1);
	free(a.logits);
	free(b.logits);
	runner_close(res);
	runner_close(off);
	kvhost_close(h);
}

/* The prompt's KV (and decode's filled blocks) read back from the host store equal the GPU
 * store's, bit for bit: packed on the compute stream, and on the copy stream with the commits
 * at the end of each sequence's prefill (prefill_kv_side). */
static void test_kv_readback_bit_exact(void **state)
{
	kv_readback(false);
	kv_readback(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_twins),
	    cmocka_unit_test(test_steps_grow_across_runs),
	    cmocka_unit_test_teardown(test_gather_dma, gather_kernel),
	    cmocka_unit_test_teardown(test_gather_dma_capped, gather_kernel),
	    cmocka_unit_test_teardown(test_gather_dma_streams, gather_kernel),
	    cmocka_unit_test_teardown(test_gather_bulk, gather_kernel),
	    cmocka_unit_test(test_phase_times),
	    cmocka_unit_test(test_alloc_ahead),
	    cmocka_unit_test(test_cache_slots),
	    cmocka_unit_test(test_seed_cache),
	    cmocka_unit_test(test_seeded_sampling),
	    cmocka_unit_test(test_all_blocks_sparse_equals_dense),
	    cmocka_unit_test(test_recall_exact_forecast),
	    cmocka_unit_test(test_shared_activation_locality),
	    cmocka_unit_test(test_dense_equals_naive),
	    cmocka_unit_test(test_kv_readback_bit_exact),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
