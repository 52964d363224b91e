/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Files of Forecast training: the Forecast safetensors file that model_open loads (bf16, with
 * how it was fitted and its held-out recall in the metadata), and the checkpoint (fp32
 * weights and AdamW moments of every projection, the step, and a fingerprint of the settings
 * and data so a checkpoint resumes only the run that wrote it).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "train_internal.h"

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

uint64_t train_fingerprint(const struct train_ctx *c)
{
	const struct train_opts *o = c->o;
	const struct model_layer *l0 = &c->m->layers[0];
	uint32_t u[] = {c->L,	   c->H,	   c->dout,    o->batch,	  o->query_stride,
			c->qstart, o->max_queries, c->n_slots, (uint32_t)o->loss, c->kf};
	float f[] = {o->lr, o->weight_decay, o->grad_clip, o->ridge};
	uint64_t h = 0xcbf29ce484222325ull, data = calib_hash(o->train);
	size_t wq = (size_t)l0->wq.rows * l0->wq.cols;

	h = fnv(h, u, sizeof(u));
	h = fnv(h, f, sizeof(f));
	h = fnv(h, &o->seed, sizeof(o->seed));
	h = fnv(h, &data, sizeof(data));
	if (o->l2sp > 0.0f) /* only then: older checkpoints keep their fingerprint */
		h = fnv(h, &o->l2sp, sizeof(o->l2sp));
	if (o->loss == TRAIN_LOSS_RANK)
		h = fnv(h, &o->rank_gamma, sizeof(o->rank_gamma));
	if (o->val) {
		data = calib_hash(o->val);
		h = fnv(h, &data, sizeof(data));
		h = fnv(h, &o->val_every, sizeof(o->val_every));
	}
	return fnv(h, l0->wq.data, (wq < 4096 ? wq : 4096) * 2);
}

int train_ckpt_save(struct train_ctx *c, const char *path, uint32_t step)
{
	struct st_wtensor *t = calloc(4 * c->n_slots + 2, sizeof(*t));
	char(*names)[32] = calloc(4 * c->n_slots, sizeof(*names));
	int64_t state[3] = {step, (int64_t)train_fingerprint(c), c->n_slots};
	int64_t *best = calloc(2 * c->n_slots + 1, sizeof(*best));
	uint32_t nt = 3 * c->n_slots + 1;
	char err[256];
	int rc = -ENOMEM;

	if (!t || !names || !best)
		goto out_free;
	t[0] = (struct st_wtensor){"train.state", ST_DTYPE_I64, 1, {3}, state};
	for (uint32_t k = 0; k < c->n_slots; k++) {
		const float *p[3] = {c->slots[k].w, c->slots[k].m, c->slots[k].v};
		const char *what[3] = {"weight", "adam_m", "adam_v"};

		for (int i = 0; i < 3; i++) {
			snprintf(names[3 * k + i], sizeof(names[0]), "slot.%u.%s", k, what[i]);
			t[1 + 3 * k + i] = (struct st_wtensor){
			    names[3 * k + i], ST_DTYPE_F32, 2, {c->dout, c->H}, p[i]};
		}
	}
	for (uint32_t k = 0; c->o->val && k < c->n_slots; k++) { /* the validation's best */
		snprintf(names[3 * c->n_slots + k], sizeof(names[0]), "slot.%u.best", k);
		t[nt++] = (struct st_wtensor){
		    names[3 * c->n_slots + k], ST_DTYPE_F32, 2, {c->dout, c->H}, c->slots[k].best};
		best[2 * k] = c->slots[k].best_step;
		memcpy(&best[2 * k + 1], &c->slots[k].best_recall, sizeof(double));
	}
	if (c->o->val)
		t[nt++] =
		    (struct st_wtensor){"train.best", ST_DTYPE_I64, 1, {2 * c->n_slots}, best};
	if ((rc = st_write(path, t, nt, NULL, err, sizeof(err))))
		train_fail(c, rc, "checkpoint: %s", err);
out_free:
	free(best);
	free(names);
	free(t);
	return rc;
}

static int ckpt_take(struct train_ctx *c, struct st_file *f, const char *name, float *dst)
{
	const struct st_tensor *t = st_find(f, name);

	if (!t || t->dtype != ST_DTYPE_F32 || t->n_dims != 2 || t->shape[0] != c->dout ||
	    t->shape[1] != c->H)
		return train_fail(c, -EINVAL,
				  "checkpoint %s: tensor %s missing or of another shape",
				  st_path(f), name);
	memcpy(dst, t->data, (size_t)c->dout * c->H * 4);
	return 0;
}

static int ckpt_best(struct train_ctx *c, struct st_file *f)
{
	const struct st_tensor *st = st_find(f, "train.best");
	char name[32];
	int rc = 0;

	if (!st || st->dtype != ST_DTYPE_I64 || st->bytes != 2 * c->n_slots * sizeof(int64_t))
		return train_fail(c, -EINVAL, "checkpoint %s: no train.best", st_path(f));
	for (uint32_t k = 0; k < c->n_slots && !rc; k++) {
		const int64_t *b = (const int64_t *)st->data + 2 * k;

		c->slots[k].best_step = (uint32_t)b[0];
		memcpy(&c->slots[k].best_recall, &b[1], sizeof(double));
		snprintf(name, sizeof(name), "slot.%u.best", k);
		rc = ckpt_take(c, f, name, c->slots[k].best);
	}
	return rc;
}

int train_ckpt_load(struct train_ctx *c, const char *path, uint32_t *step)
{
	const struct st_tensor *st;
	struct st_file *f = NULL;
	int64_t state[3];
	char err[256], name[32];
	int rc = st_open(path, &f, err, sizeof(err));

	if (rc == -ENOENT)
		return rc;
	if (rc)
		return train_fail(c, rc, "checkpoint: %s", err);
	st = st_find(f, "train.state");
	if (!st || st->dtype != ST_DTYPE_I64 || st->bytes != sizeof(state)) {
		rc = train_fail(c, -EINVAL, "checkpoint %s: no train.state", path);
		goto out_close;
	}
	memcpy(state, st->data, sizeof(state));
	if ((uint64_t)state[1] != train_fingerprint(c) || state[2] != c->n_slots || state[0] < 0 ||
	    state[0] > UINT32_MAX) {
		rc = train_fail(c, -EINVAL,
				"checkpoint %s was written by a run with other settings, "
				"data or model",
				path);
		goto out_close;
	}
	for (uint32_t k = 0; k < c->n_slots && !rc; k++) {
		snprintf(name, sizeof(name), "slot.%u.weight", k);
		rc = ckpt_take(c, f, name, c->slots[k].w);
		snprintf(name, sizeof(name), "slot.%u.adam_m", k);
		rc = rc ? rc : ckpt_take(c, f, name, c->slots[k].m);
		snprintf(name, sizeof(name), "slot.%u.adam_v", k);
		rc = rc ? rc : ckpt_take(c, f, name, c->slots[k].v);
	}
	if (!rc && c->o->val)
		rc = ckpt_best(c, f);
	*step = (uint32_t)state[0];
out_close:
	st_close(f);
	return rc;
}

#define META_FIT "sparda.forecast.fit"
#define META_RECALL "sparda.forecast.recall"
#define META_RECALL_UNTRAINED "sparda.forecast.recall_untrained"

int train_write_forecast(struct train_ctx *c, const char *path, const struct train_report *rep)
{
	size_t n = (size_t)c->dout * c->H;
	struct st_wtensor *t = calloc(c->n_slots, sizeof(*t));
	char(*names)[80] = calloc(c->n_slots, sizeof(*names));
	uint16_t *w = malloc(n * c->n_slots * 2);
	char err[256], rec[32], unt[32];
	const struct st_meta_kv meta[] = {{META_FIT, c->teacher ? "adamw" : "ridge"},
					  {META_RECALL, rec},
					  {META_RECALL_UNTRAINED, unt}};
	int rc = -ENOMEM;

	snprintf(rec, sizeof(rec), "%.4f",
		 train_report_mean(rep, offsetof(struct train_layer_report, recall_trained)));
	snprintf(unt, sizeof(unt), "%.4f",
		 train_report_mean(rep, offsetof(struct train_layer_report, recall_untrained)));

	if (!t || !names || !w)
		goto out_free;
	for (uint32_t k = 0; k < c->n_slots; k++) {
		const struct train_slot *s = &c->slots[k];

		for (size_t i = 0; i < n; i++)
			w[k * n + i] = kb_f32_to_bf16(s->w[i]);
		snprintf(names[k], sizeof(names[0]), "model.layers.%u.self_attn.%s.weight", s->in,
			 s->curr ? "q_curr_proj" : "q_future_proj");
		t[k] = (struct st_wtensor){names[k], ST_DTYPE_BF16, 2, {c->dout, c->H}, w + k * n};
	}
	if ((rc = st_write_meta(path, t, c->n_slots, NULL, meta, 3, err, sizeof(err))))
		train_fail(c, rc, "Forecast file: %s", err);
out_free:
	free(w);
	free(names);
	free(t);
	return rc;
}

static double meta_double(const struct st_file *f, const char *key)
{
	const char *v = st_meta(f, key);
	char *end = NULL;
	double x = v ? strtod(v, &end) : -1.0;

	return v && end != v && !*end ? x : -1.0;
}

int train_file_info(const char *path, struct train_file_info *info)
{
	struct st_file *f = NULL;
	const char *fit;
	int rc = st_open(path, &f, NULL, 0);

	memset(info, 0, sizeof(*info));
	info->recall = info->recall_untrained = -1.0;
	if (rc)
		return rc;
	fit = st_meta(f, META_FIT);
	if (fit && (!strcmp(fit, "ridge") || !strcmp(fit, "adamw"))) {
		info->trained = true;
		snprintf(info->fit, sizeof(info->fit), "%s", fit);
		info->recall = meta_double(f, META_RECALL);
		info->recall_untrained = meta_double(f, META_RECALL_UNTRAINED);
	}
	st_close(f);
	return 0;
}
