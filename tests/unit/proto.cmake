# SPDX-License-Identifier: Apache-2.0
# proto unit tests: message encode/decode/validation and ZeroMQ framing.
sparda_test(test_wire SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_wire.c
            LIBS sparda_proto TIMEOUT 120 LABELS unit proto)
