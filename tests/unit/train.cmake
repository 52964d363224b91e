# SPDX-License-Identifier: Apache-2.0
# Forecast training: the loss gradient against finite differences, and end-to-end runs on the
# tiny model (held-out KL and recall, determinism, checkpoint resume, bad inputs).
sparda_test(test_train_grad SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train_grad.c
            LIBS sparda_train m TIMEOUT 30)
sparda_test(test_train SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train.c
            LIBS sparda_train m TIMEOUT 120)
