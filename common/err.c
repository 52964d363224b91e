/* SPDX-License-Identifier: Apache-2.0 */
/* Names and messages for negative errno values. */
#include "err.h"

#include <stdio.h>
#include <string.h>

#define E(x) [x] = #x
static const char *const names[] = {
	E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG), E(EBADF),
	E(EAGAIN), E(ENOMEM), E(EACCES), E(EFAULT), E(EBUSY), E(EEXIST), E(ENODEV),
	E(EINVAL), E(ENFILE), E(EMFILE), E(EFBIG), E(ENOSPC), E(ESPIPE), E(EROFS), E(EPIPE),
	E(ERANGE), E(EDEADLK), E(ENAMETOOLONG), E(ENOSYS), E(ENOTEMPTY), E(ENODATA),
	E(ETIME), E(EPROTO), E(EBADMSG), E(EOVERFLOW), E(EILSEQ), E(EMSGSIZE),
	E(EPROTONOSUPPORT), E(EOPNOTSUPP), E(EADDRINUSE), E(ENETDOWN), E(ECONNABORTED),
	E(ECONNRESET), E(ENOBUFS), E(ENOTCONN), E(ESHUTDOWN), E(ETIMEDOUT), E(ECONNREFUSED),
	E(EHOSTUNREACH), E(EALREADY), E(EINPROGRESS), E(ESTALE), E(EDQUOT), E(ECANCELED),
	E(EOWNERDEAD), E(EUSERS), E(ENOTSOCK), E(ENOTTY),
};
#undef E

const char *err_name(int neg_errno)
{
	int e = -neg_errno;
	if (e > 0 && (unsigned)e < sizeof(names) / sizeof(names[0]) && names[e])
		return names[e];
	return "E?";
}

const char *err_str(int neg_errno)
{
	static __thread char buf[160];
	char tmp[112];
	int e = neg_errno < 0 ? -neg_errno : neg_errno;
	const char *msg = strerror_r(e, tmp, sizeof(tmp)); /* GNU variant */

	snprintf(buf, sizeof(buf), "%s (%s)", err_name(-e), msg ? msg : "?");
	return buf;
}
