/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Errors are negative errno values everywhere in the project. This header adds the few
 * helpers shared by both processes: a name for an error code and the translation points.
 */
#ifndef SPARDA_COMMON_ERR_H
#define SPARDA_COMMON_ERR_H

#include <errno.h>

/* "ENOENT (No such file or directory)"-style text for a negative errno; thread safe. */
const char *err_str(int neg_errno);
/* Short symbolic name ("ENOENT"), or "E?" when unknown. */
const char *err_name(int neg_errno);

/* Return -errno of the last failed libc call (never 0: EIO if errno was not set). */
static inline int err_from_errno(void)
{
	return errno ? -errno : -EIO;
}

#endif
