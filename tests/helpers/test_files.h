/* SPDX-License-Identifier: Apache-2.0 */
/* File helpers shared by unit tests: whole-file byte comparison. */
#ifndef SPARDA_TESTS_TEST_FILES_H
#define SPARDA_TESTS_TEST_FILES_H

#include <stdbool.h>
#include <stdio.h>

/* True when both files open and hold the same bytes. */
static inline bool test_same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool same = fa && fb;
	int ca, cb;

	while (same) {
		ca = fgetc(fa);
		cb = fgetc(fb);
		same = ca == cb;
		if (ca == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

#endif
