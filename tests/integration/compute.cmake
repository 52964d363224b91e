# SPDX-License-Identifier: Apache-2.0
# The runner end to end on the CPU backend, and sparda-compute against a real sparda-memsvc.
sparda_test(test_compute_modes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_modes.c
            LIBS sparda_runner m TIMEOUT 300)
sparda_test(test_compute_memsvc
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compute_memsvc.c
          ${CMAKE_CURRENT_LIST_DIR}/../helpers/memsvc_harness.c
  LIBS sparda_memclient sparda_memsvc_proc PkgConfig::JSONC m TIMEOUT 600 LABELS integration)
add_dependencies(test_compute_memsvc sparda-compute sparda-memsvc)

# dense logits against an independent numpy float64 forward of Hugging Face's Llama definition
# (the Debian python3 with python3-numpy; skipped, 77, without numpy)
if(EXISTS /usr/bin/python3)
  set(_ref_python /usr/bin/python3)
else()
  set(_ref_python python3)
endif()
add_test(NAME test_ref_forward
         COMMAND ${_ref_python} ${CMAKE_CURRENT_LIST_DIR}/test_ref_forward.py ${CMAKE_BINARY_DIR})
set_tests_properties(test_ref_forward PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                     LABELS "integration")
