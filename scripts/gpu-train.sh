#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a CUDA host: unpack a bundle made by scripts/gpu-pack.sh, generate an 8B-shaped synthetic
# model (minicpm4-8b preset, a few layers), train its Forecast with the CUDA backend and print
# the time per AdamW step, the peak host memory and the held-out recall against both baselines.
# Results go to $OUT (train.json, train.log, summary.txt).
# Usage: scripts/gpu-train.sh PACK.tar.xz [what...]   what: genmodel train run (default: all)
# Settings (environment): LAYERS (4), SEQ_LEN (16384), SEQS (32), HELDOUT (4), VAL (4),
# STEPS (20), BATCH (32), MAX_Q (1024 sampled queries per sequence), LR (5e-4),
# TEACHER (fine | selector | N), LOSS (paper | scored | blocks), PRESET (minicpm4-8b),
# BACKEND (cuda).
set -u
pack=$1
shift
what=${*:-genmodel train run}
OUT=${OUT:-/tmp/sparda-gpu-out}
work=/tmp/sparda-gpu-train
mkdir -p "$OUT" && rm -rf "$work/b" && mkdir -p "$work/b"
tar -xJf "$pack" -C "$work/b"
b=$work/b
export LD_LIBRARY_PATH=$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
m=$work/${PRESET:-minicpm4-8b}-l${LAYERS:-4}
fc=$work/forecast-l${LAYERS:-4}.safetensors
sum=$OUT/summary.txt
: >"$sum"
log() { echo "$*" | tee -a "$sum"; }
step() { # name timeout cmd...
	local name=$1 t=$2
	shift 2
	local s
	s=$(date +%s.%N)
	timeout "$t" "$@" >"$OUT/$name.log" 2>&1
	local rc=$?
	log "step=$name rc=$rc seconds=$(awk "BEGIN{print $(date +%s.%N) - $s}")"
	tail -n 15 "$OUT/$name.log" >>"$sum"
	return $rc
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$sum"
log "cpus=$(nproc) mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"

for w in $what; do
	case $w in
	genmodel)
		[ -f "$m/config.json" ] || step genmodel 400 "$b/bin/sparda" gen-model \
			--preset "${PRESET:-minicpm4-8b}" --layers "${LAYERS:-4}" --out "$m"
		;;
	train)
		# /usr/bin/time -v reports the peak resident memory of the run (host RAM bound)
		timer=()
		[ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
		step train 580 "${timer[@]}" "$b/bin/sparda" train-forecast \
			--backend "${BACKEND:-cuda}" --model "$m" --out "$fc" \
			--seq-len "${SEQ_LEN:-16384}" --seqs "${SEQS:-32}" --heldout "${HELDOUT:-4}" \
			--val "${VAL:-4}" --val-every 10 --steps "${STEPS:-20}" --batch "${BATCH:-32}" \
			--max-queries "${MAX_Q:-1024}" --lr "${LR:-5e-4}" --teacher "${TEACHER:-fine}" \
			--loss "${LOSS:-paper}" --json "$OUT/train.json"
		grep -E "per step|Maximum resident" "$OUT/train.log" | tee -a "$sum"
		if [ -f "$OUT/train.json" ]; then
			for k in step_s recall_untrained recall_prev_step recall_ridge recall_trained \
				kl_before kl_ridge kl_after teacher_agreement host_bytes collect_s fit_s; do
				printf '%s=%s\n' "$k" "$(sed -n "s/^ *\"$k\": *\([^,]*\),*$/\1/p" \
					"$OUT/train.json" | head -n 1)"
			done | tee -a "$sum"
		fi
		;;
	run)
		# the trained file drives the runtime's Forecast selection (sparda-compute --forecast)
		[ -f "$fc" ] && step run_forecast 300 "$b/bin/sparda" run --backend="${BACKEND:-cuda}" \
			--model="$m" --forecast="$fc" --prompt-tokens="${SEQ_LEN:-16384}" \
			--new-tokens=16 --modes=sparse,sparda --json="$OUT/run_forecast.json"
		;;
	*) log "unknown step $w" ;;
	esac
done
