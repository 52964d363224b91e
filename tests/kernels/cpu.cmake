# SPDX-License-Identifier: Apache-2.0
# CPU reference backend: every op against naive formulas on fresh seeded random inputs
# (SPARDA_TEST_SEED replays a run).
foreach(_t elementwise select cache_diff attention prefill)
  sparda_test(test_cpu_${_t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cpu_${_t}.c
              LIBS sparda_kernels m TIMEOUT 60 LABELS kernels cpu)
endforeach()
