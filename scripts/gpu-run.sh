#!/usr/bin/env bash
# On a CUDA host: unpack a bundle made by scripts/gpu-pack.sh, then run the kernel conformance
# test, the main job with the CUDA backend (all modes, twin equality), and the decode/prefill
# benchmark at an 8B shape. Results go to $OUT (results.tar.gz + summary.txt; the evaluation
# sweep's records, logs and report as sweep.tar.gz).
# Usage: scripts/gpu-run.sh PACK.tar.xz [what...]
#   what: conformance modes_cuda tiny hf diag memsvc spill kbench bench gatherab cacheab seedab
#   bench32 sweep peers locality kvstream
# kbench: sparda-kbench (kernels/cuda/NOTES.md) with KBENCH_ARGS (e.g. "--only decode,select"),
#   then scripts/sdpa-bench.py (PyTorch SDPA on kbench's dense prefill problem).
# gatherab: sparda, sparse-offload and sparda-nooffload at CTX (128K) with --gather= each of
#   GATHERS (kernel dma bulk: the gather kernel, the copy engines, the bulk-copy engine; also
#   dma-prefetch: sparda's prefetch by the copy engines, sparse-offload's fetch by the bulk copy),
#   BATCHES (1 4), LAYERS (8), AB_MODES (those three; e.g. without sparda-nooffload where its
#   prefill would not fit the call). RUN_ARGS (e.g. --phase-times, or --memsvc-arg=--ram-budget=100G
#   where the arena needs more than memsvc's default budget) go to every run of it, cacheab,
#   seedab, kvstream and phases. kbench's `--only interference` times the FFN GEMMs alone and
#   beside each gather.
# cacheab: the same three modes with --cache-slots= each of CACHE_SLOTS (0 192: the top-k cache
#   and a retaining one of twice the slots).
# seedab: the same three modes with --seed-cache= each of SEEDS (false true: the first decode
#   step from an empty cache, or from one seeded in prefill).
# memsvc: `sparda bench memsvc` with 1, 2 and 4 poll-mode clients; spill: `sparda bench spill`
#   twice on /tmp (raw io_uring against memsvc's spill and restore).
# sweep: `sparda bench sweep` into /tmp/sparda-gpu/sweep, stopping before BUDGET_S seconds
#   (default 480) so a call stays under ten minutes; call again until summary.txt says
#   sweep_left=0. RESUME=sweep.tar.gz (a previous call's) restores the records on a fresh host.
#   Env (defaults): MODELS (minicpm4-8b:32,llama3-8b:32) CTXS (32768 65536 98304 131072)
#   BATCHES (1 4 8) BATCH_MAX (0: the list only; N: double up to N) BATCH_REFINE (0: no; N: bisect
#   each mode's out-of-memory boundary to within N batches) MODES
#   (sparse,sparse-offload,sparda,sparda-nooffload) INPROC (sparda; empty: none) NEW (18)
#   TIMEOUT_S (300) PART (1/1) SWEEP_ARGS (more `bench sweep` flags, e.g. --memsvc-arg=--ram-budget=100G).
# locality: for each F in FRACTIONS (0 0.8 0.9 0.95), a MiniCPM4.1-8B-shape model of LAYERS (4)
#   layers made with `gen-model --shared-activation F` (the generator's Forecast), then
#   sparse-offload, sparda and sparda-nooffload at CTX (131072) for BATCHES (1 4): the block
#   cache's hit rate and the decode ratios against the step-to-step locality of selection.
# kvstream: sparse-offload, sparda and sparda-nooffload at CTX (131072), BATCHES (1 4), LAYERS (8)
#   with --prefill-kv-stream=compute and =side (the prompt's KV packed on the copy stream).
# phases: the same three modes with --phase-times=false and =true (the decode step's phases on
#   the compute stream), then with SPARDA_BENCH_SKIP_GATHER=1 (no gather copies).
# SHARED=F: the sweep's and the peers' models are made with `gen-model --shared-activation F`
#   (model directories <model>-sa<F>, sweep model names <model>+shared<F>).
# peers: scripts/hf-peers.py (transformers, dynamic and offloaded cache) on the sweep's models,
#   same CTXS/BATCHES/NEW, into the same directory, within BUDGET_S; PEER_MODELS (llama3-8b:32).
# FORECAST (trained): models are generated with a fitted Forecast (`gen-model --train-forecast`,
#   the ridge fit on the GPU, kept where it beats the generator's; the sweep's default); FORECAST=random keeps the generator's
#   untrained one, in other model directories (suffix -random) and sweep model names
#   (<model>+random-forecast: the peers, named <model>, are then not compared with them).
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
if [ "${FORECAST:-trained}" = random ]; then
	fc=() rf=-random sweep_fc=--random-forecast
else
	fc=(--train-forecast --forecast-backend cuda) rf="" sweep_fc=""
fi
if [ -n "${SHARED:-}" ]; then
	fc+=(--shared-activation "$SHARED") rf=$rf-sa$SHARED sweep_fc="$sweep_fc --shared-activation $SHARED"
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
# ab_ratios JSON: an ab run's decode ratio, overlap bound and step ratio, from its modes' JSON
ab_ratios() {
	python3 - "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit("ratios: no JSON (%s)" % e)
def fig(mode, key):
    r = d.get(mode) or {}
    return r.get(key) if r.get("status", "ok") == "ok" else None
modes = ("sparse-offload", "sparda", "sparda-nooffload")
so, sp, no = (fig(m, "decode_tokens_per_s") for m in modes)
tso, tsp, tno = (fig(m, "decode_step_ms") for m in modes)
out = []
if so and sp:
    out.append("decode sparda / sparse-offload %.3fx" % (sp / so))
if tso and tno:
    out.append("overlap bound %.3fx" % (tso / tno))
if tsp and tno:
    out.append("step sparda / sparda-nooffload %.3fx" % (tsp / tno))
print("ratios: " + (", ".join(out) or "none (a mode of the pair missing)"))
PY
}
# ab NAME FLAG VALUE...: the MiniCPM shape with LAYERS (8) layers (made once), then AB_MODES
# (sparse-offload,sparda,sparda-nooffload) at CTX (131072) for BATCHES (1 4) with --FLAG=VALUE,
# one run per value, each within STEP_S seconds (400; a 32-layer B=16 run of the three modes
# takes about 380).
ab() {
	local name=$1 flag=$2 m=$work/minicpm-l${LAYERS:-8}$rf
	shift 2
	[ -f "$m/config.json" ] || step genmodel 420 "$b/bin/sparda" gen-model --preset minicpm4-8b \
		--layers "${LAYERS:-8}" --out "$m" ${fc[@]+"${fc[@]}"}
	for bs in ${BATCHES:-1 4}; do
		for v in "$@"; do
			step "${name}_${v}_b${bs}" "${STEP_S:-400}" $run --backend=cuda --model="$m" \
				--prompt-tokens="${CTX:-131072}" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes="${AB_MODES:-sparse-offload,sparda,sparda-nooffload}" --"$flag=$v" \
				${RUN_ARGS:-} --json="$res/${name}_${v}_b${bs}.json"
			ab_ratios "$res/${name}_${v}_b${bs}.json" 2>&1 | tee -a "$sum"
		done
	done
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
	m=$work/minicpm-l${LAYERS:-8}$rf
	[ -f "$m/config.json" ] || step genmodel 420 "$b/bin/sparda" gen-model --preset minicpm4-8b \
		--layers "${LAYERS:-8}" --out "$m" ${fc[@]+"${fc[@]}"}
	for ctx in ${CTXS:-32768}; do
		for bs in ${BATCHES:-1}; do
			step "bench_c${ctx}_b${bs}" 400 $run --backend=cuda --model="$m" \
				--prompt-tokens="$ctx" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes="${MODES:-sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload}" \
				--json="$res/bench_c${ctx}_b${bs}.json"
		done
	done ;;
gatherab)
	# the offloaded layers' fetch: gather kernel, copy engines (--gather=dma), bulk-copy engine
	ab gather gather ${GATHERS:-kernel dma bulk} ;;
cacheab)
	# the GPU block cache: top-k slots (0) against a retaining cache
	ab cache cache-slots ${CACHE_SLOTS:-0 192} ;;
seedab)
	# the first decode step's cache: empty, or seeded at the end of prefill
	ab seed seed-cache ${SEEDS:-false true} ;;
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
locality)
	for f in ${FRACTIONS:-0 0.8 0.9 0.95}; do
		m=$work/minicpm-l${LAYERS:-4}-sa$f
		[ -f "$m/config.json" ] || step "genmodel_sa$f" 300 "$b/bin/sparda" gen-model \
			--preset minicpm4-8b --layers "${LAYERS:-4}" --out "$m" --shared-activation "$f"
		for bs in ${BATCHES:-1 4}; do
			step "locality_sa${f}_b${bs}" 300 $run --backend=cuda --model="$m" \
				--prompt-tokens="${CTX:-131072}" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes=sparse-offload,sparda,sparda-nooffload \
				--json="$res/locality_sa${f}_b${bs}.json"
		done
	done ;;
kvstream)
	ab kvstream prefill-kv-stream compute side ;;
phases)
	# the decode step's phases on the compute stream (--phase-times), against the same run
	# without the events, then with the gather's copies skipped (tokens differ by design)
	ab phases phase-times false true
	m=$work/minicpm-l${LAYERS:-8}$rf
	for bs in ${BATCHES:-1 4}; do
		SPARDA_BENCH_SKIP_GATHER=1 step "phases_skip_b${bs}" 400 $run --backend=cuda \
			--model="$m" --prompt-tokens="${CTX:-131072}" --new-tokens="${NEW:-18}" \
			--batch="$bs" --modes=sparse-offload,sparda,sparda-nooffload --phase-times \
			${RUN_ARGS:-} --json="$res/phases_skip_b${bs}.json"
	done ;;
bench32)
	m=$work/minicpm-l32$rf
	[ -f "$m/config.json" ] || step genmodel32 580 "$b/bin/sparda" gen-model --preset minicpm4-8b \
		--out "$m" ${fc[@]+"${fc[@]}"}
	for ctx in ${CTXS32:-131072}; do
		for bs in ${BATCHES32:-1}; do
			step "bench32_c${ctx}_b${bs}" 400 $run --backend=cuda --model="$m" \
				--prompt-tokens="$ctx" --new-tokens="${NEW:-18}" --batch="$bs" \
				--modes="${MODES:-sparse,sparse-offload,sparda,sparda-noprefetch,sparda-nooffload}" \
				--json="$res/bench32_c${ctx}_b${bs}.json"
		done
	done ;;
sweep)
	sw=$work/sweep
	mkdir -p "$sw"
	[ -n "${RESUME:-}" ] && [ -f "$RESUME" ] && tar -xzkf "$RESUME" -C "$work" 2>/dev/null
	csv() { echo "$*" | tr ' ' ','; }
	inproc=()
	[ -n "${INPROC-sparda}" ] && inproc=(--inproc-modes "${INPROC-sparda}")
	# shellcheck disable=SC2086
	step sweep $((${BUDGET_S:-480} + 60)) "$b/bin/sparda" bench sweep --out "$sw" \
		--backend cuda --models "${MODELS:-minicpm4-8b:32,llama3-8b:32}" \
		--contexts "$(csv ${CTXS:-32768 65536 98304 131072})" \
		--batches "$(csv ${BATCHES:-1 4 8})" --batch-max "${BATCH_MAX:-0}" \
		--batch-refine "${BATCH_REFINE:-0}" \
		--modes "${MODES:-sparse,sparse-offload,sparda,sparda-nooffload}" \
		${inproc[@]+"${inproc[@]}"} --new-tokens "${NEW:-18}" \
		--timeout-s "${TIMEOUT_S:-300}" --budget-s "${BUDGET_S:-480}" \
		--part "${PART:-1/1}" $sweep_fc ${SWEEP_ARGS:-}
	rc=$? left=0
	# the grid's configurations left plus the batch refinement's
	[ $rc -eq 3 ] && left=$(grep -o '[0-9]* left' "$res/sweep.log" | awk '{n += $1} END {print n + 0}')
	log "sweep_rc=$rc sweep_left=$left (0 and rc 0: the grid is done)"
	"$b/bin/sparda" bench report --out "$sw" >>"$res/sweep.log" 2>&1
	tar -czf "$OUT/sweep.tar.gz" -C "$work" --exclude=sweep/models sweep ;;
peers)
	sw=$work/sweep
	mkdir -p "$sw"
	[ -n "${RESUME:-}" ] && [ -f "$RESUME" ] && tar -xzkf "$RESUME" -C "$work" 2>/dev/null
	for m in ${PEER_MODELS:-llama3-8b:32}; do
		md=$sw/models/${m/:/-l}$rf
		[ -f "$md/config.json" ] || step "genmodel_${m%%:*}" 580 "$b/bin/sparda" gen-model \
			--preset "${m%%:*}" --layers "${m##*:}" --out "$md" ${fc[@]+"${fc[@]}"}
		# shellcheck disable=SC2086
		step "peers_${m%%:*}" $((${BUDGET_S:-480} + 60)) python3 "$(dirname "$0")/hf-peers.py" \
			--model-dir "$md" --model-name "$m${SHARED:++shared$SHARED}" --out "$sw" \
			--contexts "$(echo ${CTXS:-32768 65536 98304 131072} | tr ' ' ',')" \
			--batches "$(echo ${BATCHES:-1 4 8} | tr ' ' ',')" --new-tokens "${NEW:-18}" \
			--timeout-s "${TIMEOUT_S:-300}" --budget-s "${BUDGET_S:-480}"
		prc=$?
		case $prc in
		0) what="the grid is done" ;;
		3) what="configurations left: call again" ;;
		*) what="failed: see results/peers_${m%%:*}.log" ;;
		esac
		log "peers_${m%%:*}_rc=$prc ($what)"
	done
	"$b/bin/sparda" bench report --out "$sw" >>"$res/peers.log" 2>&1
	tar -czf "$OUT/sweep.tar.gz" -C "$work" --exclude=sweep/models sweep ;;
kbench)
	# shellcheck disable=SC2086
	step kbench 400 "$b/tests/sparda-kbench" --json "$res/kbench.json" ${KBENCH_ARGS:-}
	# PyTorch's fused SDPA on kbench's dense prefill problem, for the ratio
	step sdpa 120 python3 "$(dirname "$0")/sdpa-bench.py" ;;
memsvc)
	for n in 1 2 4; do
		step "bench_memsvc_$n" 120 "$b/bin/sparda" bench memsvc --clients=$n --units=96 \
			--mode=poll --seconds=5 --json="$res/bench_memsvc_$n.json"
	done ;;
spill)
	mkdir -p /tmp/sparda-spill
	for i in 1 2; do
		step "bench_spill_$i" 180 "$b/bin/sparda" bench spill --dir /tmp/sparda-spill \
			--json="$res/bench_spill_$i.json"
	done
	rm -rf /tmp/sparda-spill ;;
esac
done
tar -czf "$OUT/results.tar.gz" -C "$work" results
