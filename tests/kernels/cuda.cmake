# SPDX-License-Identifier: Apache-2.0
# CUDA backend conformance: every op against the CPU reference (skips with 77 without a GPU).
# scripts/gpu-check.sh builds the same source on the GPU host without the rest of the tree.
if(WITH_CUDA)
  sparda_test(test_conformance SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conformance.c
              LIBS sparda_kernels m TIMEOUT 600 LABELS kernels cuda)
endif()

# Kernel benchmark (not a test): per-op time, bytes, FLOPs and fraction of ceilings measured in
# the same run; `sparda-kbench --json FILE`.
if(WITH_CUDA)
  add_executable(sparda-kbench ${CMAKE_SOURCE_DIR}/kernels/cuda/bench/kbench.cu)
  target_link_libraries(sparda-kbench PRIVATE sparda_kernels CUDA::cudart CUDA::cublas)
  target_compile_options(sparda-kbench PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
endif()
