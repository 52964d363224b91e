# SPDX-License-Identifier: Apache-2.0
# CUDA backend conformance: every op against the CPU reference (skips with 77 without a GPU).
# scripts/gpu-check.sh builds the same source on the GPU host without the rest of the tree.
if(WITH_CUDA)
  sparda_test(test_conformance SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conformance.c
              LIBS sparda_kernels m TIMEOUT 600 LABELS kernels cuda)
endif()
