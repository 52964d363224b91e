# SPDX-License-Identifier: Apache-2.0
# libFuzzer targets (BUILD_FUZZ=ON with clang): fuzz_wire decodes arbitrary bytes as requests
# and replies. wire.c and the generated protobuf code are compiled into the target again so
# they carry the fuzzer's coverage instrumentation. Nothing here when BUILD_FUZZ is OFF.
if(BUILD_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "BUILD_FUZZ=ON needs clang (configure with CC=clang)")
  endif()
  set(_fuzz_flags -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
  add_executable(fuzz_wire ${CMAKE_CURRENT_LIST_DIR}/fuzz_wire.c
                 ${PROJECT_SOURCE_DIR}/proto/wire.c
                 ${PROJECT_BINARY_DIR}/proto/gen/sparda.pb-c.c)
  add_dependencies(fuzz_wire sparda_proto) # runs protoc-c first
  target_include_directories(fuzz_wire PRIVATE ${PROJECT_SOURCE_DIR}/proto
                             ${PROJECT_BINARY_DIR}/proto/gen)
  target_compile_options(fuzz_wire PRIVATE ${_fuzz_flags})
  target_link_options(fuzz_wire PRIVATE ${_fuzz_flags})
  target_link_libraries(fuzz_wire PRIVATE sparda_common PkgConfig::ZMQ PkgConfig::PROTOBUFC)
  # A short smoke run as a test: 20000 inputs from an empty corpus.
  add_test(NAME fuzz_wire_smoke COMMAND fuzz_wire -runs=20000 -max_len=4096)
  set_tests_properties(fuzz_wire_smoke PROPERTIES TIMEOUT 300 LABELS fuzz)
endif()
