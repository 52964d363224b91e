#!/usr/bin/env bash
# Build a relocatable bundle: bin/ (sparda, sparda-memsvc, sparda-compute) and lib/ (libzmq,
# libprotobuf-c, liburing, json-c, microhttpd, OpenBLAS and their dependencies), found through
# the binaries' rpath $ORIGIN/../lib. glibc, the C++ runtime and the CUDA libraries stay the
# host's own. Usage: deploy/bundle.sh [BUILD_DIR] [OUT_DIR] [TARBALL]
# (defaults: build, dist/sparda, no tarball; TARBALL is a .tar.gz of OUT_DIR's contents)
# EXTRA_BINS="a b": more executables whose libraries go into lib/ too (e.g. test binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-dist/sparda}
[ -d "$build" ] || { echo "bundle: no build directory '$build' (run cmake first)" >&2; exit 2; }
cmake --build "$build" -j"$(nproc)" --target sparda sparda-memsvc sparda-compute
rm -rf "$out"
cmake --install "$build" --prefix "$out" >/dev/null
mkdir -p "$out/lib"
for exe in "$out"/bin/* ${EXTRA_BINS:-}; do
	ldd "$exe" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
	case "${lib##*/}" in
	libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libresolv.so*|ld-linux*|libstdc++*|libgcc_s*|libcuda.so*|libnvidia*|libcudart*|libcublas*|libcudnn*|libnccl*) ;;
	*) cp -L "$lib" "$out/lib/" ;;
	esac
done
# OpenBLAS loads its gfortran/quadmath dependencies by soname: they came along above.
for exe in "$out"/bin/*; do
	if LD_LIBRARY_PATH= ldd "$exe" | grep -v -e libcuda -e libcublas -e libcudart | grep -q "not found"; then
		echo "bundle: $exe has unresolved libraries:" >&2
		ldd "$exe" | grep "not found" >&2
		exit 1
	fi
done
echo "bundle: $out ($(du -sh "$out" | cut -f1)): $(ls "$out/bin" | tr '\n' ' ')"
if [ -n "${3:-}" ]; then
	tar -czf "$3" -C "$out" .
	echo "bundle: $3"
fi
