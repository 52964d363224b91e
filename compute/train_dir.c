/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ridge-only Forecast fit of a model directory, for the model's producers (`sparda
 * gen-model --train-forecast`, the embedded default model of sparda-compute): open the model
 * and a backend, fit on synthetic sequences, write dir/forecast.safetensors (or keep the one
 * there when it scores at least as well on the held-out sequences).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train.h"

void train_dir_opts_default(struct train_dir_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->backend = "auto";
	o->threads = 1;
	o->seqs = 0; /* train_dir_auto_seqs */
	o->heldout = 2;
	o->query_stride = 2;
	o->max_queries = 1024;
	o->seed = 1;
	o->keep_better = true;
	o->ridge_prior = true;
}

/* The mean held-out recall of the model's own Forecast, or -1 when a layer had none. */
static double model_recall(const struct train_report *rep)
{
	for (uint32_t i = 0; i < rep->n_slots; i++)
		if (rep->layers[i].recall_model < 0)
			return -1;
	return train_report_mean(rep, offsetof(struct train_layer_report, recall_model));
}

/* With keep_better the fit went to fit_path: move it over out_path, or drop it. */
static int keep_or_replace(const char *fit_path, const char *out_path, struct train_report *rep,
			   char *err, size_t err_len)
{
	double fit = train_report_mean(rep, offsetof(struct train_layer_report, recall_trained));
	double own = model_recall(rep);

	if (own >= 0 && fit <= own) {
		rep->kept_model = true;
		unlink(fit_path);
		return 0;
	}
	if (rename(fit_path, out_path) != 0) {
		int rc = -errno;
		snprintf(err, err_len, "cannot move %s to %s: %s", fit_path, out_path,
			 strerror(errno));
		unlink(fit_path);
		return rc;
	}
	return 0;
}

int train_open_backend(const char *name, uint32_t threads, struct kb **kb)
{
	struct kb_opts ko = {.kind = KB_KIND_CPU, .cpu_threads = (int)threads};
	bool automatic = !strcmp(name, "auto");
	int rc;

	if (!strcmp(name, "cuda") || (automatic && kb_cuda_available()))
		ko.kind = KB_KIND_CUDA;
	else if (strcmp(name, "cpu") && !automatic)
		return -EINVAL;
	rc = kb_open(&ko, kb);
	if (rc && ko.kind == KB_KIND_CUDA && automatic) {
		ko.kind = KB_KIND_CPU;
		rc = kb_open(&ko, kb);
	}
	return rc;
}

/* Twice the first sampled position, so half of each sequence is sampled. */
static uint32_t default_seq_len(const struct model_config *mc)
{
	return 2 * train_first_query(mc, 0);
}

uint32_t train_dir_auto_seqs(const struct model_config *mc, const struct train_dir_opts *o,
			     uint32_t seq_len)
{
	uint32_t first = train_first_query(mc, 0), stride = o->query_stride ? o->query_stride : 1;
	uint64_t rows, need = (uint64_t)TRAIN_DIR_ROWS_PER_HIDDEN * mc->hidden, n;

	if (seq_len <= first)
		return TRAIN_DIR_MIN_SEQS;
	rows = (seq_len - first + stride - 1) / stride;
	if (o->max_queries && rows > o->max_queries)
		rows = o->max_queries;
	n = (need + rows - 1) / rows;
	if (n < TRAIN_DIR_MIN_SEQS)
		n = TRAIN_DIR_MIN_SEQS;
	return n > TRAIN_DIR_MAX_SEQS ? TRAIN_DIR_MAX_SEQS : (uint32_t)n;
}

int train_forecast_dir(const char *dir, const struct train_dir_opts *o, struct train_report *rep,
		       char *err, size_t err_len)
{
	struct calib_set tr = {0}, ev = {0};
	struct train_opts to;
	struct model *m = NULL;
	struct kb *kb = NULL;
	char *out = NULL, *fit = NULL;
	uint32_t len, seqs;
	int rc;

	memset(rep, 0, sizeof(*rep));
	if (!o->heldout) {
		snprintf(err, err_len, "the Forecast fit needs held-out sequences");
		return -EINVAL;
	}
	if ((rc = model_open(dir, NULL, &m, err, err_len)))
		return rc;
	if ((rc = train_open_backend(o->backend, o->threads, &kb))) {
		snprintf(err, err_len, "cannot open the %s backend for the Forecast fit: %s",
			 o->backend, strerror(-rc));
		goto out;
	}
	len = o->seq_len ? o->seq_len : default_seq_len(&m->cfg);
	seqs = o->seqs ? o->seqs : train_dir_auto_seqs(&m->cfg, o, len);
	if (asprintf(&out, "%s/forecast.safetensors", dir) < 0 ||
	    asprintf(&fit, "%s/forecast.fit.safetensors", dir) < 0) {
		free(out);
		out = fit = NULL;
		rc = -ENOMEM;
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if ((rc = calib_synth(seqs + o->heldout, len, m->cfg.vocab, o->seed, &tr)) ||
	    (rc = calib_split(&tr, o->heldout, &ev))) {
		snprintf(err, err_len, "cannot generate calibration data: %s", strerror(-rc));
		goto out;
	}
	train_opts_default(&to);
	to.fit = TRAIN_FIT_RIDGE;
	to.ridge_prior = o->ridge_prior;
	to.train = &tr;
	to.heldout = &ev;
	to.seed = o->seed;
	to.max_queries = o->max_queries;
	to.query_stride = o->query_stride ? o->query_stride : 1;
	rc = train_forecast(kb, m, &to, o->keep_better ? fit : out, rep, err, err_len);
	if (!rc && o->keep_better && (rc = keep_or_replace(fit, out, rep, err, err_len)))
		train_report_fini(rep);
out:
	calib_fini(&tr);
	calib_fini(&ev);
	free(out);
	free(fit);
	kb_destroy(kb);
	model_close(m);
	return rc;
}
