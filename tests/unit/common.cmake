# SPDX-License-Identifier: Apache-2.0
# common unit tests: config table, fd passing, rings, CRC32C, histogram, logging.
sparda_test(test_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_config.c
            LIBS sparda_common TIMEOUT 60 LABELS unit common)
sparda_test(test_fdpass SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fdpass.c
            LIBS sparda_common TIMEOUT 60 LABELS unit common)
sparda_test(test_ring SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ring.c
            LIBS sparda_common TIMEOUT 120 LABELS unit common)
sparda_test(test_crc32c SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_crc32c.c
            LIBS sparda_common TIMEOUT 60 LABELS unit common)
sparda_test(test_hist SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_hist.c
            LIBS sparda_common TIMEOUT 60 LABELS unit common)
sparda_test(test_log SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_log.c
            LIBS sparda_common TIMEOUT 60 LABELS unit common)
