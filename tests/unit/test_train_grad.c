// SPDX-License-Identifier: Apache-2.0
/*
 * Forecast training's loss gradients: train_kl_grad's (compressed entries),
 * train_kl_grad_blocks' (max-pooled block scores) and train_rank_grad_blocks' (the ranking
 * loss over the same block scores) analytic gradients against central finite differences,
 * with and without a clamped (near-zero) student bin, and the losses' basic properties
 * (non-negative, zero when the student reproduces the teacher's bins, the ranking loss
 * falling as the positives rise above the others).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "train.h"

#define D 16
#define N_ENT 40

static uint64_t rng = 88172645463325252ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

struct problem {
	float f[D];
	uint16_t ck[N_ENT * D];
	int32_t idx[12];
	float tp[12];
	float rest;
	uint32_t n_g;
	double work[3 * N_ENT + 3];
	bool blocks;  /* the block loss: bins are blocks [M0, M1) of the pooled entries */
	double gamma; /* > 0: the ranking loss over the same blocks, with this multiplier */
};

#define M0 1
#define M1 9

static const struct kb_sparse pool = {.block = 64,
				      .ck_kernel = 32,
				      .ck_stride = 16,
				      .pool_kernel = 5,
				      .pool_stride = 4,
				      .pool_pad = 1,
				      .sink = 1,
				      .local = 2,
				      .topk = 8};

/* Random keys and query; a teacher over 12 gathered entries (3 blocks of 4) and a rest bin. */
static void make(struct problem *p, double fscale)
{
	double sum = 0.0;

	p->blocks = false;
	p->gamma = 0.0;

	for (int i = 0; i < D; i++)
		p->f[i] = (float)((urand() * 2.0 - 1.0) * fscale);
	for (int i = 0; i < N_ENT * D; i++)
		p->ck[i] = kb_f32_to_bf16((float)(urand() * 2.0 - 1.0));
	p->n_g = 12;
	for (uint32_t i = 0; i < p->n_g; i++) {
		p->idx[i] = (int32_t)(4 * (2 + 3 * (i / 4)) + i % 4);
		p->tp[i] = (float)(0.01 + urand());
		sum += p->tp[i];
	}
	p->rest = (float)(0.5 * sum);
	sum += p->rest;
	for (uint32_t i = 0; i < p->n_g; i++)
		p->tp[i] = (float)(p->tp[i] / sum);
	p->rest = (float)(p->rest / sum);
}

/* The block loss's teacher: 3 of the blocks [M0, M1) (ids relative to M0) and a rest bin. */
static void make_blocks(struct problem *p, double fscale)
{
	static const int32_t blk[3] = {0, 3, 6};
	double sum = 0.0;

	make(p, fscale);
	p->blocks = true;
	p->n_g = 3;
	for (uint32_t i = 0; i < p->n_g; i++) {
		p->idx[i] = blk[i];
		p->tp[i] = (float)(0.05 + urand());
		sum += p->tp[i];
	}
	p->rest = (float)(0.7 * sum);
	sum += p->rest;
	for (uint32_t i = 0; i < p->n_g; i++)
		p->tp[i] = (float)(p->tp[i] / sum);
	p->rest = (float)(p->rest / sum);
}

static double kl(struct problem *p, const float *f, float *gf)
{
	if (p->gamma > 0.0)
		return train_rank_grad_blocks(f, p->ck, N_ENT, D, 0.25f, &pool, M0, M1, p->idx,
					      p->n_g, p->gamma, gf, p->work);
	if (p->blocks)
		return train_kl_grad_blocks(f, p->ck, N_ENT, D, 0.25f, &pool, M0, M1, p->idx, p->tp,
					    p->n_g, p->rest, gf, p->work);
	return train_kl_grad(f, p->ck, N_ENT, D, 0.25f, p->idx, p->tp, p->n_g, p->rest, gf,
			     p->work);
}

static void check_fd(double fscale, bool blocks, double gamma)
{
	struct problem p;
	float g[D], fp[D];
	const double h = blocks ? 1e-4 : 1e-3; /* blocks: stay clear of arg-max switches */

	if (blocks)
		make_blocks(&p, fscale);
	else
		make(&p, fscale);
	p.gamma = gamma;
	kl(&p, p.f, g);
	for (int e = 0; e < D; e++) {
		double lp, lm, fd;

		for (int i = 0; i < D; i++)
			fp[i] = p.f[i];
		fp[e] = (float)(p.f[e] + h);
		lp = kl(&p, fp, NULL);
		fp[e] = (float)(p.f[e] - h);
		lm = kl(&p, fp, NULL);
		fd = (lp - lm) / ((double)(float)(p.f[e] + h) - (double)(float)(p.f[e] - h));
		assert_true(fabs(fd - g[e]) <= 2e-3 * fabs(g[e]) + 1e-5);
	}
}

static void test_grad_matches_fd(void **state)
{
	(void)state;
	for (int r = 0; r < 20; r++)
		check_fd(1.0, false, 0.0);
}

/* The block loss: the gradient flows through each block's arg-max entry. */
static void test_grad_blocks_matches_fd(void **state)
{
	(void)state;
	for (int r = 0; r < 20; r++)
		check_fd(1.0, true, 0.0);
	for (int r = 0; r < 10; r++)
		check_fd(12.0, true, 0.0);
}

/* The ranking loss: positives 3 of the 8 blocks, soft (gamma 1) and near a hinge (gamma 8). */
static void test_grad_rank_matches_fd(void **state)
{
	(void)state;
	for (int r = 0; r < 20; r++)
		check_fd(1.0, true, 1.0);
	for (int r = 0; r < 10; r++)
		check_fd(3.0, true, 8.0);
}

/* log(1 + sum exp(b_n - b_p)): positive, 0 without positives, and falling as f moves towards
 * the positives' keys (their block scores rise above the others'). */
static void test_rank_properties(void **state)
{
	struct problem p;
	float f[D];
	double l0, l1;
	uint32_t n_g;

	(void)state;
	make_blocks(&p, 1.0);
	p.gamma = 1.0;
	l0 = kl(&p, p.f, NULL);
	assert_true(l0 > 0.0);
	n_g = p.n_g;
	p.n_g = 0;
	assert_true(kl(&p, p.f, NULL) == 0.0);
	p.n_g = n_g;
	/* f plus the mean key of the positives' pooling windows: their scores rise */
	for (int e = 0; e < D; e++) {
		double acc = 0.0;

		for (uint32_t i = 0; i < p.n_g; i++)
			for (int32_t j = 4 * (M0 + p.idx[i]) - 1; j < 4 * (M0 + p.idx[i]) + 4; j++)
				acc += kb_bf16_to_f32(p.ck[j * D + e]);
		f[e] = (float)(p.f[e] + 4.0 * acc / (5.0 * p.n_g));
	}
	l1 = kl(&p, f, NULL);
	assert_true(l1 < l0);
}

/* Large queries: peaked students, some gathered bins clamped at 1e-8 (their gradient is 0). */
static void test_grad_matches_fd_peaked(void **state)
{
	(void)state;
	for (int r = 0; r < 20; r++)
		check_fd(12.0, false, 0.0);
}

static void test_kl_properties(void **state)
{
	struct problem p;
	float zero[D] = {0};

	(void)state;
	make(&p, 1.0);
	assert_true(kl(&p, p.f, NULL) >= 0.0);
	/* f = 0: a uniform student; a teacher equal to it on the bins gives KL 0 */
	for (uint32_t i = 0; i < p.n_g; i++)
		p.tp[i] = 1.0f / N_ENT;
	p.rest = 1.0f - (float)p.n_g / N_ENT;
	assert_true(fabs(kl(&p, zero, NULL)) < 1e-6);
	/* the same for the block loss over M1 - M0 blocks */
	make_blocks(&p, 1.0);
	assert_true(kl(&p, p.f, NULL) >= 0.0);
	for (uint32_t i = 0; i < p.n_g; i++)
		p.tp[i] = 1.0f / (M1 - M0);
	p.rest = 1.0f - (float)p.n_g / (M1 - M0);
	assert_true(fabs(kl(&p, zero, NULL)) < 1e-6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grad_matches_fd),
	    cmocka_unit_test(test_grad_matches_fd_peaked),
	    cmocka_unit_test(test_grad_blocks_matches_fd),
	    cmocka_unit_test(test_kl_properties),
	    cmocka_unit_test(test_grad_rank_matches_fd),
	    cmocka_unit_test(test_rank_properties),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
