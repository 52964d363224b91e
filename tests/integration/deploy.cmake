# SPDX-License-Identifier: Apache-2.0
# Deployment recipes (deploy/): systemd units verified and the real daemon run under a fake
# notify socket; a localhost Slurm cluster running the example job with prolog and epilog;
# Kubernetes manifests validated offline against the API models. Shell tests: they exit 77
# (skipped) only when a tool they need is absent.
foreach(_t systemd slurm k8s bundle)
  set(_s ${CMAKE_CURRENT_LIST_DIR}/test_deploy_${_t}.sh)
  if(_t STREQUAL "bundle")
    set(_s ${CMAKE_CURRENT_LIST_DIR}/test_bundle.sh)
  endif()
  if(EXISTS ${_s})
    add_test(NAME test_deploy_${_t} COMMAND bash ${_s})
    set_tests_properties(test_deploy_${_t} PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
                         LABELS "integration;deploy"
                         ENVIRONMENT "SPARDA_BUILD_DIR=${CMAKE_BINARY_DIR};SPARDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  endif()
endforeach()
