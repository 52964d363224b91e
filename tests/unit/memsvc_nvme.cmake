# SPDX-License-Identifier: Apache-2.0
# memsvc NVMe tier storage layer: aio backends (uring, sync, fault wrapper) and spill extents.
sparda_test(test_memsvc_aio SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_aio.c
            LIBS sparda_memsvc_nvme TIMEOUT 30 LABELS unit memsvc)
sparda_test(test_memsvc_tier_nvme SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_memsvc_tier_nvme.c
            LIBS sparda_memsvc_nvme TIMEOUT 30 LABELS unit memsvc)
