# SPDX-License-Identifier: Apache-2.0
# Integration tests of sparda-memsvc through the client library: real daemon processes in
# unique temp runtime dirs (tests/helpers/memsvc_harness.c). They exit 77 (skipped) until
# sparda-memsvc is built.
set(_h ${CMAKE_CURRENT_LIST_DIR}/../helpers/memsvc_harness.c)
set(_libs sparda_memclient sparda_memsvc_proc)

foreach(_t readback tenants faults input)
  sparda_test(test_memsvc_${_t}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_${_t}.c ${_h}
    LIBS ${_libs} TIMEOUT 90 LABELS integration)
  if(TARGET sparda-memsvc)
    add_dependencies(test_memsvc_${_t} sparda-memsvc)
  endif()
endforeach()
