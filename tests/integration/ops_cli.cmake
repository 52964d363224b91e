# SPDX-License-Identifier: Apache-2.0
# The operator subcommands of `sparda` (up, down, status, stats, config) against a real
# sparda-memsvc in a temp runtime dir, with a sparda-compute job in between. A shell test.
add_test(NAME test_ops_cli COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_ops_cli.sh)
set_tests_properties(test_ops_cli PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
                     LABELS "integration;ops"
                     ENVIRONMENT "SPARDA_BUILD_DIR=${CMAKE_BINARY_DIR};SPARDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# sparda up --compute=N: a sparda-compute --serve-dir service answering prompt files.
add_test(NAME test_ops_serve COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_ops_serve.sh)
set_tests_properties(test_ops_serve PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                     LABELS "integration;ops"
                     ENVIRONMENT "SPARDA_BUILD_DIR=${CMAKE_BINARY_DIR};SPARDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
