#!/usr/bin/env bash
# The test suite: install what the build needs, build with warnings as errors, run every test
# (unit, kernel conformance on the CPU, integration with the real daemons). Tests that need a
# GPU or io_uring report themselves skipped where those are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DWERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 300
