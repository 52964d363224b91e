/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRC32C (Castagnoli), used for spilled units and shared-memory headers.
 * Uses the SSE4.2 instruction when the CPU has it, a table otherwise; both give equal results.
 */
#ifndef SPARDA_COMMON_CRC32C_H
#define SPARDA_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0. crc32c("123456789") == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The table implementation alone (for tests that compare the two). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
