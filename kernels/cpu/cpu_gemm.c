/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPU GEMM: C = alpha * A . W^T + beta * C with bf16 A and W, through cblas_sgemm on fp32
 * copies of bounded tiles (A rows, W rows), so memory stays small whatever the shapes. A bf16
 * C is computed in fp32 and rounded once.
 */
#include <cblas.h>
#include <errno.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* fp32 elements per converted tile (8 MiB). */
#define GEMM_TILE_ELEMS (2u << 20)

static void to_f32(struct kb *kb, float *dst, const uint16_t *src, uint32_t rows, uint32_t k,
		   uint32_t ld)
{
#pragma omp parallel for num_threads(cpu_threads(kb)) if (rows > 1)
	for (uint32_t r = 0; r < rows; r++)
		cpu_row_to_f32(dst + (size_t)r * k, src + (size_t)r * ld, k);
}

/* Columns [j0, j0 + nj) of a [mt, nt] tile of C from converted tiles af [mt, k] and wf [nt, k]
 * (tmp [mt, nt]: the fp32 result of a bf16 C). */
static void gemm_cols(const float *af, const float *wf, uint32_t mt, uint32_t nt, uint32_t j0,
		      uint32_t nj, uint32_t k, void *c, uint32_t ldc, bool c_f32, float alpha,
		      float beta, float *tmp)
{
	if (c_f32) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mt, (int)nj, (int)k,
			    alpha, af, (int)k, wf + (size_t)j0 * k, (int)k, beta, (float *)c + j0,
			    (int)ldc);
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mt, (int)nj, (int)k, alpha, af,
		    (int)k, wf + (size_t)j0 * k, (int)k, 0.0f, tmp + j0, (int)nt);
	for (uint32_t i = 0; i < mt; i++) {
		uint16_t *crow = (uint16_t *)c + (size_t)i * ldc;
		const float *t = tmp + (size_t)i * nt;

		for (uint32_t j = j0; j < j0 + nj; j++) {
			float x = t[j];

			/* beta == 0 does not read C (it may hold garbage), as in BLAS. */
			if (beta != 0.0f)
				x += beta * kb_bf16_to_f32(crow[j]);
			crow[j] = kb_f32_to_bf16(x);
		}
	}
}

/* Below this many multiply-adds a tile runs on one thread (a parallel region costs more). */
#define GEMM_PAR_MIN (1u << 16)

/*
 * One [mt, nt] tile of C, its columns split across the backend's threads (cpu_threads: the
 * OpenMP team of every CPU op), each a single-threaded BLAS call: BLAS's own thread pool is
 * kept to one thread (kb_cpu_open), so --threads bounds the GEMMs too and the two pools do not
 * compete for the cores.
 */
static void gemm_tile(struct kb *kb, const float *af, const float *wf, uint32_t mt, uint32_t nt,
		      uint32_t k, void *c, uint32_t ldc, bool c_f32, float alpha, float beta,
		      float *tmp)
{
	uint32_t parts = (uint32_t)cpu_threads(kb);

	if (parts > nt)
		parts = nt;
	if ((uint64_t)mt * nt * k < GEMM_PAR_MIN)
		parts = 1;
#pragma omp parallel for num_threads(parts) if (parts > 1)
	for (uint32_t p = 0; p < parts; p++) {
		uint32_t j0 = (uint32_t)((uint64_t)nt * p / parts);
		uint32_t j1 = (uint32_t)((uint64_t)nt * (p + 1) / parts);

		gemm_cols(af, wf, mt, nt, j0, j1 - j0, k, c, ldc, c_f32, alpha, beta, tmp);
	}
}

int cpu_gemm(struct kb *kb, enum kb_stream s, uint32_t m, uint32_t n, uint32_t k, const uint16_t *a,
	     uint32_t lda, const uint16_t *w, uint32_t ldw, void *c, uint32_t ldc, bool c_f32,
	     float alpha, float beta)
{
	uint32_t mt_max, nt_max;
	float *af, *wf, *tmp;
	int ret = 0;

	if (!cpu_stream_ok(s) || !a || !w || !c || !n || !k || lda < k || ldw < k || ldc < n ||
	    k > INT32_MAX / 2 || n > INT32_MAX / 2)
		return -EINVAL;
	if (!m)
		return 0;
	mt_max = GEMM_TILE_ELEMS / k ? GEMM_TILE_ELEMS / k : 1;
	mt_max = mt_max < m ? mt_max : m;
	nt_max = GEMM_TILE_ELEMS / k ? GEMM_TILE_ELEMS / k : 1;
	nt_max = nt_max < n ? nt_max : n;
	af = malloc((size_t)mt_max * k * sizeof(float));
	wf = malloc((size_t)nt_max * k * sizeof(float));
	tmp = c_f32 ? NULL : malloc((size_t)mt_max * nt_max * sizeof(float));
	if (!af || !wf || (!c_f32 && !tmp)) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (uint32_t i0 = 0; i0 < m; i0 += mt_max) {
		uint32_t mt = m - i0 < mt_max ? m - i0 : mt_max;

		to_f32(kb, af, a + (size_t)i0 * lda, mt, k, lda);
		for (uint32_t j0 = 0; j0 < n; j0 += nt_max) {
			uint32_t nt = n - j0 < nt_max ? n - j0 : nt_max;
			size_t off = (size_t)i0 * ldc + j0;
			void *ct =
			    c_f32 ? (void *)((float *)c + off) : (void *)((uint16_t *)c + off);

			to_f32(kb, wf, w + (size_t)j0 * ldw, nt, k, ldw);
			gemm_tile(kb, af, wf, mt, nt, k, ct, ldc, c_f32, alpha, beta, tmp);
		}
	}
out_free:
	free(tmp);
	free(wf);
	free(af);
	return ret;
}
