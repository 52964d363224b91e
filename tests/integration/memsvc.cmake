# SPDX-License-Identifier: Apache-2.0
# Integration tests of sparda-memsvc through the client library: real daemon processes in
# unique temp runtime dirs (tests/helpers/memsvc_harness.c). They exit 77 (skipped) until
# sparda-memsvc is built.
set(_h ${CMAKE_CURRENT_LIST_DIR}/../helpers/memsvc_harness.c)
set(_libs sparda_memclient sparda_memsvc_proc)

foreach(_t readback tenants faults input attach client_remote spill)
  sparda_test(test_memsvc_${_t}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_${_t}.c ${_h}
    LIBS ${_libs} TIMEOUT 90 LABELS integration)
  if(TARGET sparda-memsvc AND NOT _t STREQUAL "attach") # attach talks to a fake daemon
    add_dependencies(test_memsvc_${_t} sparda-memsvc)
  endif()
endforeach()

# The tools end to end: the demo verifies every byte and exits non-zero on any failure; the
# bench smoke run checks that the JSON report has its keys (never a timing).
add_test(NAME sparda_demo_memsvc COMMAND sparda demo-memsvc)
set(_bench_json ${CMAKE_CURRENT_BINARY_DIR}/bench_memsvc_smoke.json)
set(_keys shm_p50_us shm_p99_us shm_p999_us zmq_p50_us zmq_p99_us shm_requests_per_s
          zmq_requests_per_s clients units mode)
string(REPLACE ";" " " _keys "${_keys}")
set(_run "$<TARGET_FILE:sparda> bench memsvc --clients 2 --requests 20 --json ${_bench_json}")
set(_grep "grep -q \"\\\"$k\\\"\" ${_bench_json}")
set(_check "for k in ${_keys}; do ${_grep} || { echo missing $k; exit 1; }; done")
add_test(NAME sparda_bench_memsvc_smoke COMMAND sh -c "${_run} && ${_check}")
set_tests_properties(sparda_demo_memsvc sparda_bench_memsvc_smoke PROPERTIES TIMEOUT 60
                     LABELS integration)

# The NVMe tier benchmark, tiny: it runs and its JSON has the keys (never a timing).
set(_spill_dir ${CMAKE_CURRENT_BINARY_DIR}/bench_spill_dir)
set(_spill_json ${CMAKE_CURRENT_BINARY_DIR}/bench_spill_smoke.json)
set(_keys raw_read_gbps raw_write_gbps restore_gbps spill_gbps spill_ratio restore_ratio)
string(REPLACE ";" " " _keys "${_keys}")
set(_run "mkdir -p ${_spill_dir} && $<TARGET_FILE:sparda> bench spill --dir ${_spill_dir} \
--size 16M --ram 4M --json ${_spill_json}")
set(_grep "grep -q \"\\\"$k\\\"\" ${_spill_json}")
set(_check "for k in ${_keys}; do ${_grep} || { echo missing $k; exit 1; }; done")
add_test(NAME sparda_bench_spill_smoke COMMAND sh -c "${_run} && ${_check}")
set_tests_properties(sparda_bench_spill_smoke PROPERTIES TIMEOUT 120 LABELS integration)
