// SPDX-License-Identifier: Apache-2.0
/* Green-context SM partition of the copy and compute streams (see green.cu). */
#ifndef SPARDA_KC_GREEN_CUH
#define SPARDA_KC_GREEN_CUH

#include <cuda_runtime.h>

struct kc_green;

/*
 * Split the device's SMs: a group of at least copy_sms (rounded up to the architecture's
 * granularity, 8 on sm_90) for the copy stream, the rest for the compute stream, each with its
 * green context and a stream of the given priority. Returns 0, -ENOTSUP where the driver lacks
 * green contexts, -EINVAL when the split leaves nothing for compute, -EIO, -ENOMEM. The streams
 * belong to *out and are destroyed by kc_green_free.
 */
extern "C" int kc_green_open(int device, unsigned copy_sms, int copy_prio, int compute_prio,
			     struct kc_green **out, cudaStream_t *copy, cudaStream_t *compute);
/* SMs in each partition (0 without a partition). */
extern "C" void kc_green_sms(const struct kc_green *g, unsigned *copy, unsigned *compute);
/* Destroy the streams and green contexts. NULL ok. */
extern "C" void kc_green_free(struct kc_green *g);

#endif
