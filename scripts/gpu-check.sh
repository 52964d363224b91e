#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# GPU part of the kernel tests, for the H200 host: build the CUDA backend, the CPU reference
# backend and tests/kernels/test_conformance.c with nvcc and cc alone (that host lacks the
# tree's other dev packages), run the conformance test, exit non-zero on any build or test
# failure (77 when no GPU is visible). Logs and a summary go to $OUT (default: the build dir).
# Env: SPARDA_GPU_DEPS  folder with include/cblas.h and lib/blas_sub.o.gz (the OpenBLAS
#                       objects cblas_sgemm needs, `ld -r -u cblas_sgemm libopenblas.a`,
#                       gzipped; default build-gpudeps/ when present, else -lopenblas)
#      CUDA_ARCH        sm number to build for (default 90a: the wgmma prefill kernel)
#      SANITIZE=1       also run the test under compute-sanitizer memcheck
#      BENCH=1          also build and run sparda-kbench (kbench.txt, kbench.json; timings
#                       never change the exit status); KBENCH_ARGS adds its options (e.g.
#                       "--only decode,select")
#      SPARDA_TEST_SEED replay a seed
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
b=${SPARDA_GPUCHECK_BUILD:-$root/build-gpucheck}
logs=${OUT:-$b}
deps=${SPARDA_GPU_DEPS:-$root/build-gpudeps}
arch=${CUDA_ARCH:-90a}
jobs=${JOBS:-$(nproc)}
mkdir -p "$b/obj" "$logs"
rm -f "$b"/obj/*.o
summary=$logs/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda=$(cd "$(dirname "$nvcc")/.." && pwd)
(nvidia-smi; "$nvcc" --version) >"$logs/env.txt" 2>&1
inc="-I$root/kernels -I$root/common"
blas_inc="" blas_lib="-lopenblas"
if [ -f "$deps/include/cblas.h" ] && [ -f "$deps/lib/blas_sub.o.gz" ]; then
	blas_inc="-I$deps/include"
	gunzip -c "$deps/lib/blas_sub.o.gz" >"$b/blas_sub.o" || exit 1
	blas_lib="$b/blas_sub.o"
fi

# CUDA sources in parallel, then the C sources; the first failure stops the build.
build() {
	ls "$root"/kernels/cuda/*.cu | xargs -P "$jobs" -I{} sh -c \
		'"$0" -O3 -lineinfo --expt-relaxed-constexpr -std=c++17 \
		 -gencode arch=compute_$1,code=sm_$1 -gencode arch=compute_$1,code=compute_$1 \
		 -DSPARDA_WITH_CUDA=1 $2 -c "$3" -o "$4/obj/cu_$(basename "$3" .cu).o"' \
		"$nvcc" "$arch" "$inc" {} "$b" || return 1
	for f in "$root"/kernels/backend.c "$root"/kernels/cpu/*.c "$root"/common/log.c \
		"$root"/common/err.c "$root"/common/timeutil.c \
		"$root"/tests/kernels/test_conformance.c; do
		cc -O2 -g -std=gnu11 -fopenmp -D_GNU_SOURCE -DSPARDA_WITH_CUDA=1 -Wall \
			-Wno-unknown-pragmas $inc $blas_inc -c "$f" \
			-o "$b/obj/c_$(basename "$f" .c).o" || return 1
	done
	c++ -o "$b/test_conformance" "$b"/obj/*.o -fopenmp -L"$cuda/lib64" -L"$cuda/lib" \
		-Wl,-rpath,"$cuda/lib64" -lcublas -lcudart $blas_lib -lm -lpthread -ldl
}

t0=$(date +%s)
build_rc=0
if ! build >"$logs/build.log" 2>&1; then
	say "BUILD FAILED (see build.log)"
	tail -40 "$logs/build.log"
	# A binary built elsewhere from the same tree still tells whether the kernels pass.
	[ -x "$deps/test_conformance.prebuilt" ] || exit 1
	say "running $deps/test_conformance.prebuilt instead"
	cp "$deps/test_conformance.prebuilt" "$b/test_conformance" || exit 1
	build_rc=1
else
	say "build ok in $(($(date +%s) - t0)) s"
fi

cd "$b" || exit 1
timeout ${TEST_TIMEOUT:-150} ./test_conformance >"$logs/conformance.log" 2>&1
rc=$?
say "conformance rc=$rc"
grep -E "^(FAIL|FATAL)|checks," "$logs/conformance.log" | head -60 | tee -a "$summary"
if [ "${SANITIZE:-0}" = 1 ] && [ $rc -ne 77 ]; then
	cs=$(command -v compute-sanitizer || echo "$cuda/bin/compute-sanitizer")
	timeout ${SANITIZE_TIMEOUT:-200} "$cs" --tool memcheck --error-exitcode 3 ./test_conformance \
		>"$logs/memcheck.log" 2>&1
	mrc=$?
	say "memcheck rc=$mrc"
	grep -E "ERROR SUMMARY|Invalid|out of bounds" "$logs/memcheck.log" | head -20 |
		tee -a "$summary"
	[ $rc -eq 0 ] && [ $mrc -ne 0 ] && rc=$mrc
fi
if [ "${BENCH:-0}" = 1 ] && [ $build_rc -eq 0 ]; then
	objs=$(ls "$b"/obj/*.o | grep -v c_test_conformance.o)
	if "$nvcc" -O3 -std=c++17 --expt-relaxed-constexpr -gencode arch=compute_$arch,code=sm_$arch \
		$inc -o "$b/sparda-kbench" "$root/kernels/cuda/bench/kbench.cu" $objs $blas_lib \
		-Xcompiler -fopenmp -lcublas -lm -lpthread >>"$logs/build.log" 2>&1; then
		timeout ${BENCH_TIMEOUT:-200} ./sparda-kbench --json "$logs/kbench.json" ${KBENCH_ARGS:-} \
			>"$logs/kbench.txt" 2>&1
		say "kbench rc=$?"
		cat "$logs/kbench.txt"
		for o in attn_decode attn_decode_cp attn_prefill attn_prefill_fa2 attn_prefill_wg \
			select; do
			say "sass $o: MMA=$("$cuda/bin/cuobjdump" --dump-sass "$b/obj/cu_$o.o" 2>/dev/null |
				grep -c MMA)"
		done
		# PyTorch's fused SDPA on the same dense prefill problem, where the image has it.
		python3 "$root/scripts/sdpa-bench.py" >"$logs/sdpa.txt" 2>&1 &&
			tee -a "$summary" <"$logs/sdpa.txt"
	else
		say "kbench build failed (see build.log)"
	fi
fi
[ $rc -eq 0 ] && [ $build_rc -ne 0 ] && rc=1
exit $rc
