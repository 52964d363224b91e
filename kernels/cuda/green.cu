// SPDX-License-Identifier: Apache-2.0
/*
 * SM partitioning of the two streams through green contexts: the copy stream's gather runs on
 * a small group of SMs and the compute stream on the rest, so the gather's long-latency PCIe
 * loads never share an SM with a compute kernel. Off unless SPARDA_KCUDA_GATHER_SMS asks for it.
 */
#include <cuda.h>
#include <errno.h>
#include <stdlib.h>

#include "green.cuh"

extern "C" {
#include "log.h"
}

/* Driver entry points through the runtime, so nothing links libcuda (absent on CPU hosts). */
struct kc_drv {
	CUresult (*get_error_string)(CUresult, const char **);
	CUresult (*device_get)(CUdevice *, int);
	CUresult (*get_dev_resource)(CUdevice, CUdevResource *, CUdevResourceType);
	CUresult (*split_by_count)(CUdevResource *, unsigned *, const CUdevResource *,
				   CUdevResource *, unsigned, unsigned);
	CUresult (*generate_desc)(CUdevResourceDesc *, CUdevResource *, unsigned);
	CUresult (*green_create)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned);
	CUresult (*green_stream)(CUstream *, CUgreenCtx, unsigned, int);
	CUresult (*green_destroy)(CUgreenCtx);
	CUresult (*stream_destroy)(CUstream);
};

static int kc_drv_load(struct kc_drv *d)
{
	struct {
		const char *name;
		void **fn;
	} t[] = {
		{ "cuGetErrorString", (void **)&d->get_error_string },
		{ "cuDeviceGet", (void **)&d->device_get },
		{ "cuDeviceGetDevResource", (void **)&d->get_dev_resource },
		{ "cuDevSmResourceSplitByCount", (void **)&d->split_by_count },
		{ "cuDevResourceGenerateDesc", (void **)&d->generate_desc },
		{ "cuGreenCtxCreate", (void **)&d->green_create },
		{ "cuGreenCtxStreamCreate", (void **)&d->green_stream },
		{ "cuGreenCtxDestroy", (void **)&d->green_destroy },
		{ "cuStreamDestroy", (void **)&d->stream_destroy },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		cudaDriverEntryPointQueryResult q;
		if (cudaGetDriverEntryPointByVersion(t[i].name, t[i].fn, CUDA_VERSION, cudaEnableDefault,
						     &q) != cudaSuccess ||
		    q != cudaDriverEntryPointSuccess || !*t[i].fn) {
			cudaGetLastError();
			log_error("kcuda", "green contexts unavailable", "missing=%s", t[i].name);
			return -ENOTSUP;
		}
	}
	return 0;
}

struct kc_green {
	struct kc_drv d;
	CUgreenCtx ctx[2]; /* copy, compute */
	CUstream st[2];
	unsigned sms[2];
};

static int kc_cu_err(const struct kc_drv *d, CUresult r, const char *what)
{
	const char *s = NULL;
	d->get_error_string(r, &s);
	log_error("kcuda", "cuda driver call failed", "call=%s err=%s", what, s ? s : "?");
	return r == CUDA_ERROR_NOT_SUPPORTED ? -ENOTSUP : -EIO;
}

#define KC_CU(call)                                                                                \
	do {                                                                                       \
		CUresult r_ = (call);                                                              \
		if (r_ != CUDA_SUCCESS) {                                                          \
			rc = kc_cu_err(&g->d, r_, #call);                                          \
			goto out_free;                                                             \
		}                                                                                  \
	} while (0)

extern "C" int kc_green_open(int device, unsigned copy_sms, int copy_prio, int compute_prio,
			     struct kc_green **out, cudaStream_t *copy, cudaStream_t *compute)
{
	struct kc_green *g = (struct kc_green *)calloc(1, sizeof(*g));
	CUdevResource all, grp, rest;
	const CUdevResource *res[2] = { &grp, &rest };
	const int prio[2] = { copy_prio, compute_prio };
	CUdevResourceDesc desc;
	CUdevice dev;
	unsigned n = 1;
	int rc = 0;

	*out = NULL;
	if (!g)
		return -ENOMEM;
	if ((rc = kc_drv_load(&g->d)))
		goto out_free;
	KC_CU(g->d.device_get(&dev, device));
	KC_CU(g->d.get_dev_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
	KC_CU(g->d.split_by_count(&grp, &n, &all, &rest, 0, copy_sms));
	if (n != 1 || !rest.sm.smCount) {
		log_error("kcuda", "SM partition leaves no SMs for compute", "copy_sms=%u", copy_sms);
		rc = -EINVAL;
		goto out_free;
	}
	for (int i = 0; i < 2; i++) {
		KC_CU(g->d.generate_desc(&desc, (CUdevResource *)res[i], 1));
		KC_CU(g->d.green_create(&g->ctx[i], desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
		KC_CU(g->d.green_stream(&g->st[i], g->ctx[i], CU_STREAM_NON_BLOCKING, prio[i]));
		g->sms[i] = res[i]->sm.smCount;
	}
	*copy = (cudaStream_t)g->st[0];
	*compute = (cudaStream_t)g->st[1];
	*out = g;
	return 0;
out_free:
	kc_green_free(g);
	return rc;
}

extern "C" void kc_green_sms(const struct kc_green *g, unsigned *copy, unsigned *compute)
{
	*copy = g ? g->sms[0] : 0;
	*compute = g ? g->sms[1] : 0;
}

extern "C" void kc_green_free(struct kc_green *g)
{
	if (!g)
		return;
	for (int i = 0; i < 2; i++) {
		if (g->st[i])
			g->d.stream_destroy(g->st[i]);
		if (g->ctx[i])
			g->d.green_destroy(g->ctx[i]);
	}
	free(g);
}
