/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Elementwise ops and norms: one CTA per row where a row-wide reduction is needed (RMSNorm,
 * argmax), a flat grid otherwise. All are memory-bound; accumulation is fp32.
 */
#include "elementwise.cuh"
#include "kc_common.cuh"

/* Block-wide sum for blockDim.x a multiple of 32 (<= 1024); every thread gets the result. */
static __device__ float kc_block_sum(float v, float *red)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	v = kc_warp_sum(v);
	if (lane == 0)
		red[warp] = v;
	__syncthreads();
	int nw = blockDim.x >> 5;
	v = lane < nw ? red[lane] : 0.0f;
	v = kc_warp_sum(v);
	__syncthreads();
	return v;
}

__global__ void kc_embed_kernel(float *out, const uint16_t *table, const int32_t *ids,
				uint32_t hidden, uint32_t vocab, float scale)
{
	uint32_t row = blockIdx.x;
	int32_t id = ids[row];
	float *o = out + (size_t)row * hidden;
	bool ok = id >= 0 && (uint32_t)id < vocab;
	const uint16_t *t = table + (size_t)(ok ? id : 0) * hidden;
	for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x)
		o[i] = ok ? kc_bf(t[i]) * scale : 0.0f;
}

extern "C" int kc_embed(cudaStream_t st, float *out, const uint16_t *table, const int32_t *ids,
			uint32_t n, uint32_t hidden, uint32_t vocab, float scale)
{
	if (n == 0)
		return 0;
	kc_embed_kernel<<<n, 256, 0, st>>>(out, table, ids, hidden, vocab, scale);
	KC_LAUNCHED("embed");
	return 0;
}

__global__ void kc_add_rmsnorm_kernel(float *resid, const uint16_t *delta, uint32_t ld_delta,
				      float delta_scale, const uint16_t *w, uint16_t *out,
				      uint32_t hidden, float eps)
{
	__shared__ float red[32];
	float *x = resid + (size_t)blockIdx.x * hidden;
	const uint16_t *dl = delta ? delta + (size_t)blockIdx.x * ld_delta : NULL;
	float ss = 0.0f;
	for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
		float v = x[i];
		if (dl) {
			v += delta_scale * kc_bf(dl[i]);
			x[i] = v;
		}
		ss += v * v;
	}
	ss = kc_block_sum(ss, red);
	float inv = rsqrtf(ss / (float)hidden + eps);
	uint16_t *o = out + (size_t)blockIdx.x * hidden;
	for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x)
		o[i] = kc_tobf(x[i] * inv * kc_bf(w[i]));
}

extern "C" int kc_add_rmsnorm(cudaStream_t st, float *resid, const uint16_t *delta,
			      uint32_t ld_delta, float delta_scale, const uint16_t *w,
			      uint16_t *out, uint32_t n, uint32_t hidden, float eps)
{
	if (n == 0)
		return 0;
	if (hidden == 0)
		return -EINVAL;
	kc_add_rmsnorm_kernel<<<n, 256, 0, st>>>(resid, delta, ld_delta, delta_scale, w, out,
						 hidden, eps);
	KC_LAUNCHED("add_rmsnorm");
	return 0;
}

__global__ void kc_add_residual_kernel(float *resid, const uint16_t *delta, uint32_t ld_delta,
				       float delta_scale, uint32_t n, uint32_t hidden)
{
	size_t total = (size_t)n * hidden;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		size_t r = i / hidden, c = i % hidden;
		resid[i] += delta_scale * kc_bf(delta[r * ld_delta + c]);
	}
}

extern "C" int kc_add_residual(cudaStream_t st, float *resid, const uint16_t *delta,
			       uint32_t ld_delta, float delta_scale, uint32_t n, uint32_t hidden)
{
	size_t total = (size_t)n * hidden;
	if (total == 0)
		return 0;
	unsigned grid = kc_div_up(total, 256);
	if (grid > 65535u * 4)
		grid = 65535u * 4;
	kc_add_residual_kernel<<<grid, 256, 0, st>>>(resid, delta, ld_delta, delta_scale, n,
						     hidden);
	KC_LAUNCHED("add_residual");
	return 0;
}

__global__ void kc_rope_kernel(uint16_t *x, uint32_t ld, uint32_t n, uint32_t n_heads,
			       uint32_t half, const int32_t *pos, const float *inv_freq,
			       float mscale)
{
	size_t total = (size_t)n * n_heads * half;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t p = (uint32_t)(i % half);
		size_t rh = i / half;
		uint32_t h = (uint32_t)(rh % n_heads);
		size_t r = rh / n_heads;
		/* fp32 angle like the Hugging Face reference; accurate sincosf, not __sincosf. */
		float ang = (float)pos[r] * inv_freq[p];
		float s, c;
		sincosf(ang, &s, &c);
		c *= mscale;
		s *= mscale;
		uint16_t *row = x + r * ld + (size_t)h * 2 * half;
		float a = kc_bf(row[p]), b = kc_bf(row[p + half]);
		row[p] = kc_tobf(a * c - b * s);
		row[p + half] = kc_tobf(b * c + a * s);
	}
}

extern "C" int kc_rope(cudaStream_t st, uint16_t *x, uint32_t ld, uint32_t n, uint32_t n_heads,
		       uint32_t head_dim, const int32_t *pos, const float *inv_freq, float mscale)
{
	if (head_dim % 2)
		return -EINVAL;
	size_t total = (size_t)n * n_heads * (head_dim / 2);
	if (total == 0)
		return 0;
	unsigned grid = kc_div_up(total, 256);
	if (grid > 65535u * 4)
		grid = 65535u * 4;
	kc_rope_kernel<<<grid, 256, 0, st>>>(x, ld, n, n_heads, head_dim / 2, pos, inv_freq,
					     mscale);
	KC_LAUNCHED("rope");
	return 0;
}

__global__ void kc_swiglu_kernel(uint16_t *out, const uint16_t *gu, uint32_t n, uint32_t ff)
{
	size_t total = (size_t)n * ff;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
	     i += (size_t)gridDim.x * blockDim.x) {
		size_t r = i / ff, c = i % ff;
		float g = kc_bf(gu[r * 2 * ff + c]);
		float u = kc_bf(gu[r * 2 * ff + ff + c]);
		out[i] = kc_tobf(g / (1.0f + expf(-g)) * u);
	}
}

extern "C" int kc_swiglu(cudaStream_t st, uint16_t *out, const uint16_t *gu, uint32_t n,
			 uint32_t ff)
{
	size_t total = (size_t)n * ff;
	if (total == 0)
		return 0;
	unsigned grid = kc_div_up(total, 256);
	if (grid > 65535u * 4)
		grid = 65535u * 4;
	kc_swiglu_kernel<<<grid, 256, 0, st>>>(out, gu, n, ff);
	KC_LAUNCHED("swiglu");
	return 0;
}

/* (value, index) is better than (bv, bi) when larger, or equal with a lower index. */
static __device__ __forceinline__ bool kc_am_better(float v, int i, float bv, int bi)
{
	return v > bv || (v == bv && i < bi);
}

__global__ void kc_argmax_kernel(int32_t *out, const float *logits, uint32_t vocab)
{
	__shared__ float sv[32];
	__shared__ int si[32];
	const float *l = logits + (size_t)blockIdx.x * vocab;
	float bv = -INFINITY;
	int bi = 0x7fffffff;
	for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
		float v = l[i];
		if (kc_am_better(v, (int)i, bv, bi)) {
			bv = v;
			bi = (int)i;
		}
	}
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		if (kc_am_better(ov, oi, bv, bi)) {
			bv = ov;
			bi = oi;
		}
	}
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	if (lane == 0) {
		sv[warp] = bv;
		si[warp] = bi;
	}
	__syncthreads();
	if (warp == 0) {
		int nw = blockDim.x >> 5;
		bv = lane < nw ? sv[lane] : -INFINITY;
		bi = lane < nw ? si[lane] : 0x7fffffff;
		for (int o = 16; o > 0; o >>= 1) {
			float ov = __shfl_xor_sync(0xffffffffu, bv, o);
			int oi = __shfl_xor_sync(0xffffffffu, bi, o);
			if (kc_am_better(ov, oi, bv, bi)) {
				bv = ov;
				bi = oi;
			}
		}
		/* A row of NaN (or empty) gives index 0, not an out-of-range id. */
		if (lane == 0)
			out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
	}
}

extern "C" int kc_argmax(cudaStream_t st, int32_t *out, const float *logits, uint32_t n,
			 uint32_t vocab)
{
	if (n == 0)
		return 0;
	if (vocab == 0)
		return -EINVAL;
	kc_argmax_kernel<<<n, 512, 0, st>>>(out, logits, vocab);
	KC_LAUNCHED("argmax");
	return 0;
}
