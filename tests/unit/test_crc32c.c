/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/crc32c: known vectors (RFC 3720 appendix B.4 and the "123456789" check value),
 * chaining, and the hardware path equal to the table path on random buffers and alignments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crc32c.h"

static void test_vectors(void **state)
{
	uint8_t b[32];

	assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(crc32c_sw(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(crc32c(0, "", 0), 0);
	memset(b, 0, sizeof(b));
	assert_int_equal(crc32c(0, b, 32), 0x8A9136AAu);
	memset(b, 0xff, sizeof(b));
	assert_int_equal(crc32c(0, b, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	assert_int_equal(crc32c(0, b, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)(31 - i);
	assert_int_equal(crc32c(0, b, 32), 0x113FDB5Cu);
	assert_int_equal(crc32c_sw(0, b, 32), 0x113FDB5Cu);
}

static uint64_t g_rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void test_hw_equals_sw(void **state)
{
	static uint8_t buf[70000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	for (int iter = 0; iter < 500; iter++) {
		size_t off = rnd() % 64;
		size_t len = iter < 64 ? (size_t)iter : rnd() % (sizeof(buf) - off);
		uint32_t seed = iter % 2 ? (uint32_t)rnd() : 0;
		assert_int_equal(crc32c(seed, buf + off, len), crc32c_sw(seed, buf + off, len));
	}
}

static void test_chaining(void **state)
{
	const char *s = "The quick brown fox jumps over the lazy dog";
	size_t n = strlen(s);
	uint32_t whole = crc32c(0, s, n);

	for (size_t cut = 0; cut <= n; cut++) {
		assert_int_equal(crc32c(crc32c(0, s, cut), s + cut, n - cut), whole);
		assert_int_equal(crc32c_sw(crc32c_sw(0, s, cut), s + cut, n - cut), whole);
	}
	assert_int_equal(whole, 0x22620404u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vectors),
	    cmocka_unit_test(test_hw_equals_sw),
	    cmocka_unit_test(test_chaining),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
