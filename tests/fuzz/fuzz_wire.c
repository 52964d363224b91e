/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for message decoding: every input goes through wire_request_unpack and
 * wire_reply_unpack. Whatever decodes must pass validation again (pack re-checks it) and pack
 * back into bytes that decode to the same kind; anything else is a finding.
 */
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_request rq, rq2;
	struct wire_reply rp, rp2;
	char err[256];
	void *buf;
	size_t len;

	if (wire_request_unpack(data, size, &rq, err, sizeof(err)) == 0) {
		if (wire_request_pack(&rq, &buf, &len) != 0)
			abort(); /* decode let through a struct that fails validation */
		if (wire_request_unpack(buf, len, &rq2, err, sizeof(err)) != 0 ||
		    rq2.kind != rq.kind || rq2.request_id != rq.request_id)
			abort();
		wire_request_fini(&rq2);
		free(buf);
		wire_request_fini(&rq);
	}
	if (wire_reply_unpack(data, size, &rp, err, sizeof(err)) == 0) {
		if (wire_reply_pack(&rp, &buf, &len) != 0)
			abort();
		if (wire_reply_unpack(buf, len, &rp2, err, sizeof(err)) != 0 ||
		    rp2.kind != rp.kind || rp2.status != rp.status)
			abort();
		wire_reply_fini(&rp2);
		free(buf);
		wire_reply_fini(&rp);
	}
	return 0;
}
