#!/usr/bin/env bash
# On a CUDA host: unpack a bundle made by scripts/gpu-pack.sh, then run the kernel conformance
# test, the main job with the CUDA backend (all modes, twin equality), and the decode/prefill
# benchmark at an 8B shape. Results go to $OUT (results.tar.gz + summary.txt).
# Usage: scripts/gpu-run.sh PACK.tar.xz [what...]   what: conformance modes_cuda tiny hf diag memsvc bench bench32
set -u
pack=$1; shift
what=${*:-conformance modes_cuda tiny hf memsvc bench}
OUT=${OUT:-/tmp/sparda-gpu-out}
work=/tmp/sparda-gpu
res=$work/results
mkdir -p "$OUT" "$res" && rm -rf "$work/b" && mkdir -p "$work/b"
tar -xJf "$pack" -C "$work/b"
b=$work/b
export LD_LIBRARY_PATH=$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# STORE=inproc runs sparda-compute alone with its in-process host store; default: sparda run
if [ "${STORE:-memsvc}" = inproc ]; then
	run="$b/bin/sparda-compute --host-store=inproc --modes=all"
else
	run="$b/bin/sparda run"
fi
sum=$OUT/summary.txt
: >"$sum"
log() { echo "$*" | tee -a "$sum"; }
step() { # name timeout cmd...
	local name=$1 t=$2; shift 2
	local s=$(date +%s.%N)
	timeout "$t" "$@" >"$res/$name.log" 2>&1
	local rc=$?
	log "step=$name rc=$rc seconds=$(awk "BEGIN{print $(date +%s.%N) - $s}")"
	tail -n 25 "$res/$name.log" >>"$sum"
	tar -czf "$OUT/results.tar.gz" -C "$work" results # keep what is done if the call is cut
	return $rc
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$sum"
nproc | sed 's/^/cpus=/' | tee -a "$sum"

for w in $what; do
case $w in
conformance)
	step conformance 240 "$b/tests/test_conformance" ;;
modes_cuda)
	SPARDA_TEST_BACKEND=cuda step modes_cuda 240 "$b/tests/test_compute_modes" ;;
tiny)
	step tiny_cuda 240 $run --backend=cuda --batch=2 --json="$res/tiny_cuda.json" ;;
bench)
	m=$work/minicpm-l${LAYERS:-8}
	[ -f "$m/config.json" ] || step genmodel 300 "$b/bin/sparda" gen-model --preset minicpm4-8b \
		--layers "${LAYERS:-8}" --out "$m"
	for ctx in ${CTXS:-32768}; do
		for bs in ${BATCHES:-1}; do
			step "bench_c${ctx}_b${bs}" 400 $run --backend=cuda --model="$m" \
				--prompt-tokens="$ctx" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes="${MODES:-sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload}" \
				--json="$res/bench_c${ctx}_b${bs}.json"
		done
	done ;;
hf)
	for be in ${HF_BACKENDS:-cuda}; do
		step "hf_compare_$be" 300 python3 "$(dirname "$0")/hf-compare.py" \
			--compute "$b/bin/sparda-compute" --work "$work/hf-$be" --backend "$be"
	done ;;
diag)
	cat /sys/devices/system/clocksource/clocksource0/current_clocksource | sed 's/^/clocksource=/' |
		tee -a "$sum"
	for m in poll sleep; do
		step "bench_memsvc_1_$m" 60 "$b/bin/sparda" bench memsvc --clients=1 --units=96 \
			--mode=$m --seconds=3 --json="$res/bench_memsvc_1_$m.json"
	done ;;
bench32)
	m=$work/minicpm-l32
	[ -f "$m/config.json" ] || step genmodel32 400 "$b/bin/sparda" gen-model --preset minicpm4-8b \
		--out "$m"
	for ctx in ${CTXS32:-131072}; do
		for bs in ${BATCHES32:-1}; do
			step "bench32_c${ctx}_b${bs}" 400 $run --backend=cuda --model="$m" \
				--prompt-tokens="$ctx" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes="${MODES:-sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload}" \
				--json="$res/bench32_c${ctx}_b${bs}.json"
		done
	done ;;
memsvc)
	step bench_memsvc 120 "$b/bin/sparda" bench memsvc --clients=4 --units=96 --mode=poll \
		--seconds=5 --json="$res/bench_memsvc.json" ;;
esac
done
tar -czf "$OUT/results.tar.gz" -C "$work" results
