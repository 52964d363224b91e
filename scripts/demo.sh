#!/usr/bin/env bash
# The main job on the embedded default: install what the build needs, build, then run both
# daemons (sparda-memsvc and sparda-compute) over every mode on the tiny synthetic model (made,
# and its Forecast fitted, on the first run: a few seconds, then cached).
# Extra arguments go to sparda-compute (e.g. --json=out.json, --batch=2).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target sparda sparda-memsvc sparda-compute >/dev/null
exec ./build/bin/sparda run "$@"
