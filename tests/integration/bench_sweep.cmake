# SPDX-License-Identifier: Apache-2.0
# `sparda bench sweep` + `sparda bench report` on the CPU backend with the embedded tiny model:
# the modes of a configuration in one process, parts, resume, a host-memory failure and the
# feasible-batch search and its refinement (--batch-refine) under a --gpu-mem-limit, the
# in-process arena, timeout and budget, the report's tables, JSON and PNGs, and
# scripts/hf-peers.py --dry-run.
add_test(NAME test_bench_sweep COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_bench_sweep.sh)
# about 40 s next to other tests; under the sanitizers 80 s alone and over 180 s in .ci/run's -j2
if(SANITIZE)
  set(_sweep_timeout 600)
else()
  set(_sweep_timeout 240)
endif()
set_tests_properties(test_bench_sweep PROPERTIES TIMEOUT ${_sweep_timeout} SKIP_RETURN_CODE 77
                     LABELS "integration;bench"
                     ENVIRONMENT "SPARDA_BUILD_DIR=${CMAKE_BINARY_DIR};SPARDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
