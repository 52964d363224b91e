# SPDX-License-Identifier: Apache-2.0
# compute unit tests: safetensors, model loading and the synthetic model generator.
sparda_test(test_safetensors SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_safetensors.c
            LIBS sparda_compute_core)
sparda_test(test_model SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_model.c
            LIBS sparda_compute_core m)
sparda_test(test_model_gen SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_model_gen.c
            LIBS sparda_train m) # gen-model's CLI is in sparda_train (--train-forecast)
find_package(OpenMP COMPONENTS C) # the thread-count independence of the generator's fill
if(OpenMP_C_FOUND)
  target_link_libraries(test_model_gen PRIVATE OpenMP::OpenMP_C)
endif()
