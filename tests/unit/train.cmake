# SPDX-License-Identifier: Apache-2.0
# Forecast training: the loss gradient against finite differences, and end-to-end runs on the
# tiny model, in two binaries so each stays near a minute on two cores: test_train (data,
# bad inputs, loss, held-out KL and recall) and test_train_files (determinism, resume);
# test_train_ridge: the ridge-only fit, and the trained Forecast that sparda-compute reports
# (a fitted model directory, the embedded default).
sparda_test(test_train_grad SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train_grad.c
            LIBS sparda_train m TIMEOUT 30)
sparda_test(test_train SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train.c
            LIBS sparda_train m TIMEOUT 300)
target_compile_definitions(test_train PRIVATE TEST_TRAIN_PART=1)
sparda_test(test_train_files SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train.c
            LIBS sparda_train m TIMEOUT 300)
target_compile_definitions(test_train_files PRIVATE TEST_TRAIN_PART=2)
# test_train_ridge: 18 s alone, 42 s under ASan
sparda_test(test_train_ridge SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train_ridge.c
            LIBS sparda_runner sparda_train PkgConfig::JSONC m TIMEOUT 180)
