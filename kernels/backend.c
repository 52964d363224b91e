/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Backend-independent part of the kernel interface: kb_open dispatch, kb_destroy, the CUDA
 * probe (with fallbacks for builds without CUDA) and kb_rope_resolve, which turns the rotary
 * parameters of a Hugging Face config into per-pair inverse frequencies and an mscale.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>

#include "backend.h"

#ifndef SPARDA_WITH_CUDA
int kb_cuda_open(const struct kb_opts *o, struct kb **out)
{
	return -ENODEV;
}

bool kb_cuda_probe(void)
{
	return false;
}
#endif

bool kb_cuda_available(void)
{
	return kb_cuda_probe();
}

int kb_open(const struct kb_opts *o, struct kb **out)
{
	if (!o || !out)
		return -EINVAL;
	switch (o->kind) {
	case KB_KIND_CPU:
		return kb_cpu_open(o, out);
	case KB_KIND_CUDA:
		return kb_cuda_open(o, out);
	}
	return -EINVAL;
}

void kb_destroy(struct kb *kb)
{
	if (kb)
		kb->ops->destroy(kb);
}

/* theta^(-2i/d): the unscaled frequency of pair i (HF _compute_default_rope_parameters). */
static double rope_base_freq(const struct kb_rope *p, uint32_t i)
{
	return 1.0 / pow(p->theta, (double)(2 * i) / (double)p->head_dim);
}

/* HF _compute_llama3_parameters: keep high frequencies, divide low ones, ramp in between. */
static int rope_llama3(const struct kb_rope *p, float *inv_freq)
{
	double lo = p->low_freq_factor, hi = p->high_freq_factor, old = p->original_max_pos;

	if (!(p->factor > 0) || !(hi > lo) || !(lo > 0) || !p->original_max_pos)
		return -EINVAL;
	for (uint32_t i = 0; i < p->head_dim / 2; i++) {
		double f = rope_base_freq(p, i), wavelen = 2 * M_PI / f, r;

		if (wavelen < old / hi) {
			r = f;
		} else if (wavelen > old / lo) {
			r = f / p->factor;
		} else {
			double smooth = (old / wavelen - lo) / (hi - lo);
			r = (1 - smooth) * f / p->factor + smooth * f;
		}
		inv_freq[i] = (float)r;
	}
	return 0;
}

static double yarn_correction_dim(double rot, double dim, double base, double max_pos)
{
	return dim * log(max_pos / (rot * 2 * M_PI)) / (2 * log(base));
}

/* HF _compute_yarn_parameters with truncate = true and no explicit attention_factor. */
static int rope_yarn(const struct kb_rope *p, float *inv_freq, float *mscale)
{
	double dim = p->head_dim, fast = p->beta_fast ? p->beta_fast : 32;
	double slow = p->beta_slow ? p->beta_slow : 1;
	double lo, hi;

	if (!(p->factor > 0) || !p->original_max_pos)
		return -EINVAL;
	lo = floor(yarn_correction_dim(fast, dim, p->theta, p->original_max_pos));
	hi = ceil(yarn_correction_dim(slow, dim, p->theta, p->original_max_pos));
	lo = fmax(lo, 0);
	hi = fmin(hi, dim - 1);
	if (lo == hi)
		hi += 0.001;
	for (uint32_t i = 0; i < p->head_dim / 2; i++) {
		double extra = rope_base_freq(p, i), inter = extra / p->factor;
		double ramp = fmin(fmax(((double)i - lo) / (hi - lo), 0), 1);
		double extra_w = 1 - ramp;

		inv_freq[i] = (float)(inter * (1 - extra_w) + extra * extra_w);
	}
	*mscale = p->factor <= 1 ? 1.0f : (float)(0.1 * log(p->factor) + 1.0);
	return 0;
}

/* HF _compute_longrope_parameters: per-pair factors; mscale from the context extension. */
static int rope_longrope(const struct kb_rope *p, float *inv_freq, float *mscale)
{
	for (uint32_t i = 0; i < p->head_dim / 2; i++) {
		double ext = p->ext_factors ? p->ext_factors[i] : 1.0;

		if (!(ext > 0))
			return -EINVAL;
		inv_freq[i] = (float)(rope_base_freq(p, i) / ext);
	}
	if (p->max_pos > p->original_max_pos) {
		double factor = (double)p->max_pos / p->original_max_pos;

		if (p->original_max_pos < 2)
			return -EINVAL;
		*mscale = (float)sqrt(1 + log(factor) / log(p->original_max_pos));
	}
	return 0;
}

int kb_rope_resolve(const struct kb_rope *p, float *inv_freq, float *mscale)
{
	if (!p || !inv_freq || !mscale || !p->head_dim || p->head_dim % 2 || !(p->theta > 1))
		return -EINVAL;
	*mscale = 1.0f;
	switch (p->type) {
	case KB_ROPE_PLAIN:
		for (uint32_t i = 0; i < p->head_dim / 2; i++)
			inv_freq[i] = (float)rope_base_freq(p, i);
		return 0;
	case KB_ROPE_LLAMA3:
		return rope_llama3(p, inv_freq);
	case KB_ROPE_YARN:
		return rope_yarn(p, inv_freq, mscale);
	case KB_ROPE_LONGROPE:
		return rope_longrope(p, inv_freq, mscale);
	}
	return -EINVAL;
}
