# SPDX-License-Identifier: Apache-2.0
# `sparda bench sweep` + `sparda bench report` on the CPU backend with the embedded tiny model:
# the modes of a configuration in one process, parts, resume, a host-memory failure and the
# feasible-batch search, the in-process arena, timeout and budget, the report's tables, JSON and
# PNGs, and scripts/hf-peers.py --dry-run.
add_test(NAME test_bench_sweep COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_bench_sweep.sh)
set_tests_properties(test_bench_sweep PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
                     LABELS "integration;bench"
                     ENVIRONMENT "SPARDA_BUILD_DIR=${CMAKE_BINARY_DIR};SPARDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
