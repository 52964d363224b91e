// SPDX-License-Identifier: Apache-2.0
/*
 * `sparda gen-model`: flags -> a model_config (preset plus overrides) -> model_generate, then
 * with --train-forecast the ridge-only Forecast fit (train_forecast_dir) over the generated
 * Forecast. The override flags come from one table that also drives --help.
 */
#include "model_cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "train.h"

enum {
	OPT_PRESET = 256,
	OPT_OUT,
	OPT_SEED,
	OPT_HELP,
	OPT_TRAIN,
	OPT_FC_BACKEND,
	OPT_FC_SEQS,
	OPT_FC_LEN,
	OPT_SHARED,
	OPT_OVERRIDE
};
#define GEN_N_FIXED 9 /* options before the overrides */

static const struct {
	const char *flag;
	size_t off;
	uint32_t lo;
	const char *help;
} gen_overrides[] = {
    {"layers", offsetof(struct model_config, n_layers), 1, "decoder layers"},
    {"hidden", offsetof(struct model_config, hidden), 1, "hidden size"},
    {"heads", offsetof(struct model_config, n_heads), 1, "query heads"},
    {"kv-heads", offsetof(struct model_config, n_kv_heads), 1, "KV heads (GQA groups)"},
    {"head-dim", offsetof(struct model_config, head_dim), 2, "head dimension (even)"},
    {"ffn", offsetof(struct model_config, ffn), 1, "FFN intermediate size"},
    {"vocab", offsetof(struct model_config, vocab), 1, "vocabulary size"},
    {"max-pos", offsetof(struct model_config, max_pos), 1, "max_position_embeddings"},
    {"dense-len", offsetof(struct model_config, dense_len), 0, "dense below this context"},
    {"topk", offsetof(struct model_config, sparse.topk), 1, "selected blocks per KV head"},
};
#define GEN_N_OVERRIDES (sizeof(gen_overrides) / sizeof(gen_overrides[0]))

static void gen_usage(FILE *fp)
{
	fprintf(fp,
		"usage: sparda gen-model --preset NAME --out DIR [--seed N] [overrides]\n"
		"  --preset NAME     tiny, minicpm4-8b or llama3-8b\n"
		"  --out DIR         output directory (created if missing)\n"
		"  --seed N          random seed (default 0)\n"
		"  --train-forecast  then fit the Forecast (ridge, on synthetic sequences) and\n"
		"                    write it over the generated one when it scores higher on\n"
		"                    held-out sequences (else the generated one is kept)\n"
		"  --forecast-backend B  auto, cpu or cuda for that fit (default auto)\n"
		"  --forecast-seqs N     its training sequences (default 0: enough for 3 sampled\n"
		"                        rows per hidden unit, at least 4; 2 more are held out)\n"
		"  --forecast-seq-len N  their tokens (default 0: twice the first sparse query)\n"
		"  --shared-activation F  fraction in [0, 1) of each token embedding held by one\n"
		"                    vector shared by all tokens on every 64th channel (massive\n"
		"                    activations, as real models have); it gives the queries of\n"
		"                    consecutive steps a common part, so block selection has\n"
		"                    step-to-step locality (default 0: plain random embeddings)\n");
	for (size_t i = 0; i < GEN_N_OVERRIDES; i++)
		fprintf(fp, "  --%-11s N   %s\n", gen_overrides[i].flag, gen_overrides[i].help);
}

static int gen_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

struct gen_args {
	const char *preset, *out;
	uint64_t seed;
	double shared;
	bool train;
	struct train_dir_opts fc;
	bool set[GEN_N_OVERRIDES];
	uint32_t val[GEN_N_OVERRIDES];
};

/* The Forecast fit's options: 0, or -EINVAL with a message printed. */
static int gen_parse_fc(int c, const char *arg, struct gen_args *a)
{
	uint64_t v;

	if (c == OPT_TRAIN) {
		a->train = true;
	} else if (c == OPT_FC_BACKEND) {
		if (strcmp(arg, "auto") && strcmp(arg, "cpu") && strcmp(arg, "cuda")) {
			fprintf(stderr, "gen-model: --forecast-backend is auto, cpu or cuda\n");
			return -EINVAL;
		}
		a->fc.backend = arg;
	} else if (gen_parse_u64(arg, 0, UINT32_MAX, &v)) {
		fprintf(stderr, "gen-model: bad --%s '%s'\n",
			c == OPT_FC_SEQS ? "forecast-seqs" : "forecast-seq-len", arg);
		return -EINVAL;
	} else { /* 0: the automatic count / length (train_dir_auto_seqs, twice the first query) */
		*(c == OPT_FC_SEQS ? &a->fc.seqs : &a->fc.seq_len) = (uint32_t)v;
	}
	return 0;
}

static int gen_parse(int argc, char **argv, struct gen_args *a)
{
	struct option opts[GEN_N_OVERRIDES + GEN_N_FIXED + 1] = {
	    {"preset", required_argument, NULL, OPT_PRESET},
	    {"out", required_argument, NULL, OPT_OUT},
	    {"seed", required_argument, NULL, OPT_SEED},
	    {"help", no_argument, NULL, OPT_HELP},
	    {"train-forecast", no_argument, NULL, OPT_TRAIN},
	    {"forecast-backend", required_argument, NULL, OPT_FC_BACKEND},
	    {"forecast-seqs", required_argument, NULL, OPT_FC_SEQS},
	    {"forecast-seq-len", required_argument, NULL, OPT_FC_LEN},
	    {"shared-activation", required_argument, NULL, OPT_SHARED},
	};
	uint64_t v;
	int c;

	for (size_t i = 0; i < GEN_N_OVERRIDES; i++)
		opts[GEN_N_FIXED + i] = (struct option){gen_overrides[i].flag, required_argument,
							NULL, OPT_OVERRIDE + (int)i};
	optind = 0; /* full reset: the umbrella command or a test may parse again */
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_PRESET) {
			a->preset = optarg;
		} else if (c == OPT_OUT) {
			a->out = optarg;
		} else if (c == OPT_SEED) {
			if (gen_parse_u64(optarg, 0, UINT64_MAX, &a->seed)) {
				fprintf(stderr, "gen-model: bad --seed '%s'\n", optarg);
				return 2;
			}
		} else if (c == OPT_SHARED) {
			char *end;

			errno = 0;
			a->shared = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(a->shared >= 0 && a->shared < 1)) {
				fprintf(stderr,
					"gen-model: bad --shared-activation '%s' (a fraction in "
					"[0, 1))\n",
					optarg);
				return 2;
			}
		} else if (c == OPT_HELP) {
			gen_usage(stdout);
			return -1;
		} else if (c >= OPT_TRAIN && c <= OPT_FC_LEN) {
			if (gen_parse_fc(c, optarg, a))
				return 2;
		} else if (c >= OPT_OVERRIDE && c < OPT_OVERRIDE + (int)GEN_N_OVERRIDES) {
			size_t i = (size_t)(c - OPT_OVERRIDE);

			if (gen_parse_u64(optarg, gen_overrides[i].lo, UINT32_MAX, &v)) {
				fprintf(stderr, "gen-model: bad --%s '%s'\n", gen_overrides[i].flag,
					optarg);
				return 2;
			}
			a->set[i] = true;
			a->val[i] = (uint32_t)v;
		} else {
			gen_usage(stderr);
			return 2;
		}
	}
	if (optind < argc || !a->preset || !a->out) {
		fprintf(stderr, "gen-model: --preset and --out are required\n");
		gen_usage(stderr);
		return 2;
	}
	return 0;
}

/* Apply overrides; MiniCPM keeps scale_depth and dim_model_base, not the derived scales. */
static void gen_apply(struct model_config *c, const struct gen_args *a)
{
	double depth = c->residual_scale * sqrt((double)c->n_layers);
	double base = c->logit_scale * (double)c->hidden;

	for (size_t i = 0; i < GEN_N_OVERRIDES; i++) {
		if (a->set[i])
			*(uint32_t *)((char *)c + gen_overrides[i].off) = a->val[i];
	}
	if (c->family == MODEL_FAMILY_MINICPM) {
		c->residual_scale = (float)(depth / sqrt((double)c->n_layers));
		c->logit_scale = (float)(base / (double)c->hidden);
	}
	c->rope.head_dim = c->head_dim;
	c->rope.max_pos = c->max_pos;
}

/* The ridge-only Forecast fit of the generated model, with one summary line. */
static int gen_train(const struct gen_args *a)
{
	struct train_report rep;
	struct timespec t0, t1;
	char err[512];
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = train_forecast_dir(a->out, &a->fc, &rep, err, sizeof(err));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc) {
		fprintf(stderr, "gen-model: training the Forecast: %s\n", err);
		return 1;
	}
	printf(
	    rep.kept_model
		? "gen-model: kept the generator's Forecast (the ridge fit of %u projections "
		  "scored lower): held-out recall of the fit %.4f, the generator's %.4f "
		  "(untrained %.4f, previous step %.4f) in %.1fs (collection %.1fs, fit %.1fs of "
		  "which ridge %.1fs, evaluation and writing %.1fs)\n"
		: "gen-model: trained the Forecast (ridge, %u projections): held-out recall %.4f "
		  "(the generator's %.4f, untrained %.4f, previous step %.4f) in %.1fs "
		  "(collection %.1fs, fit %.1fs of which ridge %.1fs, evaluation and writing "
		  "%.1fs)\n",
	    rep.n_slots,
	    train_report_mean(&rep, offsetof(struct train_layer_report, recall_trained)),
	    train_report_mean(&rep, offsetof(struct train_layer_report, recall_model)),
	    train_report_mean(&rep, offsetof(struct train_layer_report, recall_untrained)),
	    train_report_mean(&rep, offsetof(struct train_layer_report, recall_prev_step)),
	    (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, rep.collect_s,
	    rep.fit_s, rep.ridge_s, rep.eval_s);
	train_report_fini(&rep);
	return 0;
}

int model_gen_main(int argc, char **argv)
{
	struct gen_args a = {0};
	struct model_config cfg;
	struct timespec t0, t1;
	char err[512];
	int rc;

	train_dir_opts_default(&a.fc);
	rc = gen_parse(argc, argv, &a);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (model_preset(a.preset, &cfg)) {
		fprintf(stderr, "gen-model: unknown preset '%s' (tiny, minicpm4-8b, llama3-8b)\n",
			a.preset);
		return 2;
	}
	gen_apply(&cfg, &a);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = model_generate_opts(
	    a.out, &cfg, &(struct model_gen_opts){.seed = a.seed, .shared_activation = a.shared},
	    err, sizeof(err));
	if (rc) {
		fprintf(stderr, "gen-model: %s\n", err);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("gen-model: wrote %s (preset %s, seed %" PRIu64 ", %u layers, hidden %u, "
	       "%u/%u heads of %u, ffn %u, vocab %u, shared activation %g) in %.1fs\n",
	       a.out, a.preset, a.seed, cfg.n_layers, cfg.hidden, cfg.n_heads, cfg.n_kv_heads,
	       cfg.head_dim, cfg.ffn, cfg.vocab, a.shared,
	       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
	fflush(stdout);
	return a.train ? gen_train(&a) : 0;
}
