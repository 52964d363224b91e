# SPDX-License-Identifier: Apache-2.0
# The runner end to end on the CPU backend, and sparda-compute against a real sparda-memsvc.
sparda_test(test_compute_modes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_modes.c
            LIBS sparda_runner m TIMEOUT 300)
