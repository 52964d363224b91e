/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Forecast training, end to end: check the options, run the frozen model over the calibration
 * and held-out sets, evaluate the untrained baseline, fit (ridge, then AdamW), evaluate the
 * result, write the Forecast file. The projections ("slots") are W_F(l) for l < n_layers - 1
 * (predicting layer l + 1) and q_curr_proj of layer 0 (predicting layer 0 itself).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train_internal.h"

void train_opts_default(struct train_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->steps = 200;
	o->batch = 8;
	o->lr = 5e-4f;
	o->weight_decay = 0.01f;
	o->rank_gamma = 1.0f;
	o->grad_clip = 0.5f;
	o->ridge = 1e-3f;
	o->seed = 1;
	o->query_stride = 4;
	o->checkpoint_every = 50;
	o->val_every = 25;
}

uint32_t train_first_query(const struct model_config *mc, uint32_t query_start)
{
	uint32_t q = query_start ? query_start : model_first_sparse_pos(mc);

	return q < mc->sparse.block ? mc->sparse.block : q; /* the previous token must exist */
}

uint32_t train_fine_kernel(const struct kb_sparse *sp)
{
	uint32_t k = sp->ck_kernel / 16;

	return k < 2 ? 2 : k;
}

int train_fail(struct train_ctx *c, int rc, const char *fmt, ...)
{
	va_list ap;

	if (c->err && c->err_len && !c->err[0]) {
		va_start(ap, fmt);
		vsnprintf(c->err, c->err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int ctx_check(struct train_ctx *c)
{
	const struct train_opts *o = c->o;
	const struct model_config *mc = &c->m->cfg;

	if (!o->train || !o->heldout || !o->train->n_seqs || !o->heldout->n_seqs ||
	    (o->val && !o->val->n_seqs))
		return train_fail(c, -EINVAL,
				  "calibration, held-out and validation sets must not be empty");
	if (!o->batch || !o->query_stride || !(o->lr > 0.0f) || o->weight_decay < 0.0f ||
	    o->ridge < 0.0f || o->grad_clip < 0.0f || o->l2sp < 0.0f || !(o->rank_gamma > 0.0f))
		return train_fail(c, -EINVAL,
				  "bad options: batch, query stride, lr and rank gamma must "
				  "be positive; weight decay, l2sp, ridge and clip not negative");
	if (mc->head_dim > 512 || mc->head_dim % 2 || !mc->n_kv_heads ||
	    mc->n_heads % mc->n_kv_heads)
		return train_fail(c, -EINVAL,
				  "unsupported geometry: head_dim %u (even, <= 512), "
				  "%u/%u heads",
				  mc->head_dim, mc->n_heads, mc->n_kv_heads);
	if (mc->sparse.block != mc->sparse.pool_stride * mc->sparse.ck_stride)
		return train_fail(c, -EINVAL,
				  "sparse config: block %u != pool_stride %u x "
				  "ck_stride %u",
				  mc->sparse.block, mc->sparse.pool_stride, mc->sparse.ck_stride);
	return 0;
}

static int ctx_init(struct train_ctx *c)
{
	const struct model_config *mc = &c->m->cfg;
	size_t n;
	int rc;

	if ((rc = ctx_check(c)))
		return rc;
	c->L = mc->n_layers;
	c->H = mc->hidden;
	c->d = mc->head_dim;
	c->n_kv = mc->n_kv_heads;
	c->n_q = mc->n_heads;
	c->dout = c->n_kv * c->d;
	c->sp = mc->sparse;
	c->topk = c->sp.topk;
	c->gmax = c->topk * c->sp.pool_stride;
	c->kf = c->o->teacher_kernel ? c->o->teacher_kernel : train_fine_kernel(&c->sp);
	c->kst = 1;
	if (c->o->teacher_kernel == TRAIN_TEACHER_SELECTOR) {
		c->kf = c->sp.ck_kernel;
		c->kst = c->sp.ck_stride;
	}
	c->teacher = c->o->fit != TRAIN_FIT_RIDGE;
	c->scale = 1.0f / sqrtf((float)c->d);
	c->logits_gemm = !c->o->logits_host;
	c->qstart = train_first_query(mc, c->o->query_start);
	c->inv_freq = malloc(c->d / 2 * sizeof(float));
	if (!c->inv_freq)
		return -ENOMEM;
	if ((rc = kb_rope_resolve(&mc->rope, c->inv_freq, &c->mscale)))
		return train_fail(c, rc, "cannot resolve the model's RoPE parameters");
	c->n_slots = c->L;
	c->slots = calloc(c->n_slots, sizeof(*c->slots));
	if (!c->slots)
		return -ENOMEM;
	n = (size_t)c->dout * c->H;
	for (uint32_t k = 0; k < c->n_slots; k++) {
		struct train_slot *s = &c->slots[k];

		s->curr = k + 1 == c->n_slots;
		s->in = s->curr ? 0 : k;
		s->tgt = s->curr ? 0 : k + 1;
		s->w = calloc(n, 4);
		s->m = calloc(n, 4);
		s->v = calloc(n, 4);
		s->g = calloc(n, 4);
		s->best = c->o->val && c->teacher ? calloc(n, 4) : NULL;
		s->w0 = c->o->l2sp > 0.0f && c->teacher ? calloc(n, 4) : NULL;
		if (!s->w || !s->m || !s->v || !s->g || (c->o->val && c->teacher && !s->best) ||
		    (c->o->l2sp > 0.0f && c->teacher && !s->w0))
			return -ENOMEM;
	}
	return 0;
}

static void ctx_fini(struct train_ctx *c)
{
	train_grad_close(c);
	train_data_fini(c, &c->tr);
	train_data_fini(c, &c->ev);
	train_data_fini(c, &c->va);
	for (uint32_t k = 0; c->slots && k < c->n_slots; k++) {
		free(c->slots[k].w);
		free(c->slots[k].m);
		free(c->slots[k].v);
		free(c->slots[k].g);
		free(c->slots[k].best);
		free(c->slots[k].w0);
	}
	free(c->slots);
	free(c->inv_freq);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Rows the projection GEMMs must hold: a batch, the held-out set, a ridge chunk. */
static uint32_t rows_needed(const struct train_ctx *c)
{
	uint32_t mx = 0, r;

	for (uint32_t i = 0; i < c->tr.n; i++)
		mx = c->tr.seq[i].nq > mx ? c->tr.seq[i].nq : mx;
	r = mx * (c->o->batch < c->tr.n ? c->o->batch : c->tr.n);
	r = c->ev.queries > r ? (uint32_t)c->ev.queries : r;
	return c->va.queries > r ? (uint32_t)c->va.queries : r;
}

const uint16_t *train_model_forecast(const struct train_ctx *c, const struct train_slot *s)
{
	const struct model_tensor *t = s->curr ? &c->m->layers[0].wfc : &c->m->layers[s->in].wf;

	return t->data && t->rows == c->dout && t->cols == c->H ? t->data : NULL;
}

/* Held-out recall of the model's own Forecast for slot s into *recall (-1: it has none). */
static int eval_model_forecast(struct train_ctx *c, struct train_slot *s, float *w, double *recall)
{
	const uint16_t *wf = train_model_forecast(c, s);
	struct train_eval e;
	int rc;

	*recall = -1.0;
	if (!wf)
		return 0;
	for (size_t i = 0; i < (size_t)c->dout * c->H; i++)
		w[i] = kb_bf16_to_f32(wf[i]);
	if ((rc = train_eval_slot(c, &c->ev, s, w, &e)))
		return rc;
	*recall = e.recall;
	return 0;
}

/* Held-out recall of ranking by slot s's regression target itself (the target layer's
 * group-mean query) into *recall. */
static int eval_target(struct train_ctx *c, struct train_slot *s, double *recall)
{
	struct train_eval e;
	int rc;

	c->eval_target = true;
	rc = train_eval_slot(c, &c->ev, s, s->w, &e);
	c->eval_target = false;
	*recall = rc ? -1.0 : e.recall;
	return rc;
}

/* Untrained (Kaiming), the model's own and ridge figures, the ridge weights left in the slots. */
static int eval_baselines(struct train_ctx *c, struct train_report *rep)
{
	size_t n = (size_t)c->dout * c->H;
	float *w0 = malloc(n * sizeof(float));
	struct train_eval u, r;
	int rc = 0;

	if (!w0)
		return -ENOMEM;
	for (uint32_t k = 0; k < c->n_slots && !rc; k++) {
		struct train_layer_report *lr = &rep->layers[k];
		struct train_slot *s = &c->slots[k];

		lr->in_layer = s->in;
		lr->tgt_layer = s->tgt;
		lr->curr = s->curr;
		if ((rc = eval_model_forecast(c, s, w0, &lr->recall_model))) {
			rc = train_fail(c, rc, "evaluating the model's Forecast %u failed", k);
			break;
		}
		train_kaiming_init(c, w0, k);
		if (!(rc = train_eval_slot(c, &c->ev, s, w0, &u))) {
			double t0 = now_s();

			rc = train_ridge_init(c, s);
			rep->ridge_s += now_s() - t0;
		}
		if (rc || (rc = train_eval_slot(c, &c->ev, s, s->w, &r))) {
			rc = train_fail(c, rc, "evaluating the initial projection %u failed", k);
			break;
		}
		if ((rc = eval_target(c, s, &lr->recall_target))) {
			rc = train_fail(c, rc, "evaluating the regression target of %u failed", k);
			break;
		}
		if (s->w0)
			memcpy(s->w0, s->w, n * sizeof(float));
		lr->kl_untrained = u.kl;
		lr->recall_untrained = u.recall;
		lr->recall_prev_step = u.recall_prev;
		lr->teacher_recall_untrained = u.recall_teacher;
		lr->ridge_lambda = s->ridge_lambda;
		lr->kl_ridge = r.kl;
		lr->recall_ridge = r.recall;
		lr->teacher_recall_ridge = r.recall_teacher;
		lr->teacher_agreement = u.teacher_vs_true;
	}
	free(w0);
	return rc;
}

static int eval_trained(struct train_ctx *c, struct train_report *rep)
{
	struct train_eval e;
	int rc;

	for (uint32_t k = 0; !c->teacher && k < c->n_slots; k++) { /* the ridge is written */
		struct train_layer_report *lr = &rep->layers[k];

		lr->kl_trained = lr->kl_ridge;
		lr->recall_trained = lr->recall_ridge;
		lr->teacher_recall_trained = lr->teacher_recall_ridge;
		lr->best_step = 0;
	}
	for (uint32_t k = 0; c->teacher && k < c->n_slots; k++) {
		struct train_layer_report *lr = &rep->layers[k];

		if ((rc = train_eval_slot(c, &c->ev, &c->slots[k], c->slots[k].w, &e)))
			return train_fail(c, rc, "evaluating the trained projection %u failed", k);
		lr->kl_trained = e.kl;
		lr->recall_trained = e.recall;
		lr->teacher_recall_trained = e.recall_teacher;
		lr->best_step = c->slots[k].best ? c->slots[k].best_step : c->o->steps;
	}
	return 0;
}

int train_forecast(struct kb *kb, const struct model *m, const struct train_opts *o,
		   const char *out_path, struct train_report *rep, char *err, size_t err_len)
{
	struct train_ctx c = {.kb = kb, .m = m, .o = o, .err = err, .err_len = err_len};
	double t0 = now_s();
	int rc;

	if (err && err_len)
		err[0] = '\0';
	memset(rep, 0, sizeof(*rep));
	if (!kb || !m || !o || !out_path)
		return train_fail(&c, -EINVAL, "missing backend, model, options or output path");
	if ((rc = ctx_init(&c)))
		goto out;
	rep->n_slots = c.n_slots;
	rep->fine_kernel = c.kf;
	rep->fine_stride = c.kst;
	rep->layers = calloc(c.n_slots, sizeof(*rep->layers));
	if (!rep->layers) {
		rc = -ENOMEM;
		goto out;
	}
	rep->fit = o->fit;
	rep->kl_measured = c.teacher;
	if ((rc = train_collect(&c, o->train, false, &c.tr)) ||
	    (rc = train_collect(&c, o->heldout, true, &c.ev)) ||
	    (o->val && c.teacher && (rc = train_collect(&c, o->val, true, &c.va))))
		goto out;
	rep->train_queries = c.tr.queries * c.n_kv;
	rep->eval_queries = c.ev.queries * c.n_kv;
	rep->host_bytes = c.tr.bytes + c.ev.bytes;
	rep->collect_s = now_s() - t0;
	t0 = now_s();
	if ((rc = train_grad_open(&c, rows_needed(&c))) || (rc = eval_baselines(&c, rep)))
		goto out;
	if (c.teacher && (rc = train_fit(&c, rep)))
		goto out;
	rep->fit_s = now_s() - t0;
	t0 = now_s();
	if ((rc = eval_trained(&c, rep)) || (rc = train_write_forecast(&c, out_path, rep)))
		goto out;
	rep->eval_s = now_s() - t0;
out:
	if (rc) {
		train_fail(&c, rc, "Forecast training failed: %s", strerror(-rc));
		train_report_fini(rep); /* a failed run leaves the caller nothing to free */
	}
	ctx_fini(&c);
	return rc;
}

void train_report_fini(struct train_report *rep)
{
	if (!rep)
		return;
	free(rep->layers);
	rep->layers = NULL;
	rep->n_slots = 0;
}

double train_report_mean(const struct train_report *rep, size_t field_offset)
{
	double sum = 0.0;

	for (uint32_t k = 0; k < rep->n_slots; k++)
		sum += *(const double *)((const char *)&rep->layers[k] + field_offset);
	return rep->n_slots ? sum / rep->n_slots : 0.0;
}
