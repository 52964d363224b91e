#!/usr/bin/env bash
# Build for Hopper (sm_90a) here and pack what a CUDA host without the project's packages needs:
# the relocatable bundle (deploy/bundle.sh) plus the GPU test binaries and sparda-kbench (in
# tests/), as one .tar.xz.
# Usage: scripts/gpu-pack.sh OUT.tar.xz [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1")
build=${2:-build-gpu}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES='90a-real;90-virtual' >/dev/null
cmake --build "$build" -j"$(nproc)" --target test_conformance test_compute_modes sparda-kbench >/dev/null
stage=$(mktemp -d)
EXTRA_BINS="$build/tests/test_conformance $build/tests/test_compute_modes $build/tests/sparda-kbench" \
	./deploy/bundle.sh "$build" "$stage" >/dev/null
mkdir -p "$stage/tests"
cp "$build"/tests/test_conformance "$build"/tests/test_compute_modes \
	"$build"/tests/sparda-kbench "$stage/tests/"
tar -cJf "$out" -C "$stage" .
rm -rf "$stage"
ls -la "$out"
