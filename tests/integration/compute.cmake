# SPDX-License-Identifier: Apache-2.0
# The runner end to end on the CPU backend, and sparda-compute against a real sparda-memsvc.
sparda_test(test_compute_modes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_modes.c
            LIBS sparda_runner m TIMEOUT 300)
sparda_test(test_compute_memsvc
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_memsvc.c
          ${CMAKE_CURRENT_LIST_DIR}/../helpers/memsvc_harness.c
  LIBS sparda_memclient sparda_memsvc_proc PkgConfig::JSONC m TIMEOUT 300 LABELS integration)
add_dependencies(test_compute_memsvc sparda-compute sparda-memsvc)
