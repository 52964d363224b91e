# SPDX-License-Identifier: Apache-2.0
# memsvc unit tests: the store (index + slot allocator), tenants file and quotas, config table.
sparda_test(test_memsvc_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_store.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
sparda_test(test_memsvc_store_tier SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_store_tier.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
sparda_test(test_memsvc_tenant SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_tenant.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
sparda_test(test_memsvc_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_config.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
sparda_test(test_memsvc_session SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_session.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
# The real daemon: tcp/CURVE, remote sessions, drain, bad attach input (77 until it is built).
sparda_test(test_memsvc_daemon SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_daemon.c
            LIBS sparda_memsvc_core sparda_memsvc_proc TIMEOUT 60 LABELS unit memsvc)
if(TARGET sparda-memsvc)
  add_dependencies(test_memsvc_daemon sparda-memsvc)
endif()
sparda_test(test_memsvc_metrics SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_metrics.c
            LIBS sparda_memsvc_core TIMEOUT 60 LABELS unit memsvc)
sparda_test(test_memsvc_notify SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_notify.c
            LIBS sparda_memsvc_proc TIMEOUT 60 LABELS unit memsvc)
if(TARGET sparda-memsvc)
  add_dependencies(test_memsvc_notify sparda-memsvc)
endif()
