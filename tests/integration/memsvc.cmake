# SPDX-License-Identifier: Apache-2.0
# Integration tests of sparda-memsvc through the client library: real daemon processes in
# unique temp runtime dirs (tests/helpers/memsvc_harness.c).
set(_h ${CMAKE_CURRENT_LIST_DIR}/../helpers/memsvc_harness.c)
set(_libs sparda_memclient sparda_memsvc_proc)

sparda_test(test_memsvc_readback
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_readback.c ${_h}
  LIBS ${_libs} TIMEOUT 60 LABELS integration)

if(TARGET sparda-memsvc)
  add_dependencies(test_memsvc_readback sparda-memsvc)
endif()
