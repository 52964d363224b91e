#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The evaluation sweep on the CPU backend with the embedded tiny model (2 contexts x batches
# 1, 2 and the doubling to 4; 4 modes in one compute process per configuration, sparda also with
# the in-process arena): --part 1/2 then 2/2 cover the grid; batch 2 of the offloading modes
# exceeds a 2 MiB memsvc RAM budget, is recorded as host-oom while the other modes run again in
# one process, and those modes are not run at batch 4 (the feasible-batch search); a mode that
# finished before the failed one keeps its figures and is not run again; a third run
# skips everything, --dry-run shows the plan; a 1 ms --timeout-s is recorded (and ends the batch
# search), a 1 s --budget-s stops the sweep. Records say which Forecast compute ran (the
# embedded model's is fitted); a preset:layers model is generated with a fitted Forecast, or
# with the generator's under --random-forecast, or with a shared activation under
# --shared-activation (each another model name and directory). Records keep the --compute-arg
# and --memsvc-arg they ran with. --batch-refine 1 bisects between batches 1 and 8 where a
# --gpu-mem-limit stops each mode, in the part that holds batch 8, and resumes.
# `bench report` writes the tables, the summary JSON (checked against hand-made records for the
# ratios, the step breakdown and the transformers peers) and, with gnuplot, PNG plots, also with
# the records of another directory (--with); and
# scripts/hf-peers.py --dry-run checks its arguments and the checkpoint and writes nothing.
set -euo pipefail
build=${SPARDA_BUILD_DIR:?}
src=${SPARDA_SOURCE_DIR:?}
sparda=$build/bin/sparda
for v in $(compgen -e | grep '^SPARDA_'); do
	case $v in SPARDA_BUILD_DIR | SPARDA_SOURCE_DIR) ;; *) unset "$v" ;; esac
done
command -v python3 >/dev/null || { echo "python3 absent: skipped"; exit 77; }
work=$(mktemp -d /tmp/sparda-sweep-XXXXXX)
trap 'rm -rf "$work"' EXIT
out=$work/out
fail() { echo "FAIL: $*" >&2; exit 1; }

sweep() { # extra args...
	"$sparda" bench sweep --out "$out" --backend cpu --models tiny --contexts 1100,1300 \
		--batches 1,2 --batch-max 4 --modes sparda,sparda-nooffload,sparse,sparse-offload \
		--inproc-modes sparda --new-tokens 3 --timeout-s 120 --memsvc-arg=--ram-budget=2M \
		--compute-arg=--threads=2 "$@"
}
records() { find "$out" -maxdepth 1 -name '*.json' | wc -l; }

# 2 contexts x 3 batches, batch outermost: part 1/2 takes batch 1 of both contexts and batch 2
# of context 1100; each configuration also has its _inproc record (batch 1: written from the
# memsvc configuration's own process, which ran sparda again with the in-process arena).
sweep --part 1/2 >"$work/p1.log" || fail "part 1/2 exited $?"
[ "$(records)" -eq 6 ] || fail "part 1/2 wrote $(records) records, want 6"
sweep --part 2/2 >"$work/p2.log" || fail "part 2/2 exited $?"
[ "$(records)" -eq 12 ] || fail "parts 1/2 + 2/2 wrote $(records) records, want 12"
grep -q "3 of 6 configurations in this part: 6 ran" "$work/p2.log" ||
	fail "part 2/2 summary: $(tail -1 "$work/p2.log")"

# Resumable: everything exists, nothing runs, nothing is rewritten.
before=$(stat -c %Y.%s "$out"/*.json | md5sum)
sweep >"$work/all.log" || fail "resumed sweep exited $?"
grep -q "6 of 6 configurations in this part: 0 ran (0 modes ok, 0 failed), 12 skipped, 0 left" \
	"$work/all.log" || fail "resume did not skip: $(tail -1 "$work/all.log")"
[ "$before" = "$(stat -c %Y.%s "$out"/*.json | md5sum)" ] || fail "resume rewrote records"

# --dry-run prints the plan of a larger ladder (the search applied) and writes nothing.
sweep --batch-max 8 --dry-run >"$work/dry.log" || fail "dry run exited $?"
grep -q "tiny_c1300_b8: would run sparda-nooffload,sparse; skipped: sparda (host-oom at batch 2)" \
	"$work/dry.log" || fail "dry run plan: $(cat "$work/dry.log")"
grep -q "dry run: 2 configurations would run" "$work/dry.log" || fail "$(tail -1 "$work/dry.log")"
[ "$(records)" -eq 12 ] && [ ! -e "$out/logs/tiny_c1100_b8.r0.log" ] || fail "dry run wrote files"

# A mode that fails after another finished: sparse keeps its figures from run 0 (compute's
# JSON of the failed run), sparda's host-oom is recorded, and only sparda-nooffload runs again.
"$sparda" bench sweep --out "$work/pf" --backend cpu --models tiny --contexts 1100 --batches 2 \
	--modes sparse,sparda,sparda-nooffload --new-tokens 3 --timeout-s 120 \
	--memsvc-arg=--ram-budget=2M --compute-arg=--threads=2 >"$work/pf.log" ||
	fail "partial-failure sweep exited $?"
grep -q "tiny_c1100_b2: 2 modes ok, 1 failed, 0 skipped, in 2 runs" "$work/pf.log" ||
	fail "partial failure: $(cat "$work/pf.log")"
"$sparda" bench report --out "$work/pf" >/dev/null || fail "report of the partial failure"

# A 1 ms limit kills the run and says so; a 1 s budget starts nothing and exits 3.
# (the model given as preset:layers is generated first, into OUT/models)
"$sparda" bench sweep --out "$work/to" --backend cpu --models tiny:2 --contexts 1100 \
	--batches 1,2 --modes sparse,sparda --new-tokens 3 --timeout-s 0.001 >"$work/to.log" ||
	fail "timeout sweep failed"
[ -f "$work/to/models/tiny-l2/config.json" ] && [ ! -e "$work/to/models/tiny-l2.part" ] ||
	fail "model not generated: $(ls -R "$work/to")"
grep -q "generating tiny:2 into .* with a fitted Forecast" "$work/to.log" ||
	fail "$(cat "$work/to.log")"
"$sparda" bench sweep --out "$work/to" --backend cpu --models tiny:2 --contexts 1100 \
	--batches 1 --modes sparda --new-tokens 3 --timeout-s 0.001 --random-forecast \
	>"$work/torf.log" || fail "random-forecast sweep failed"
[ -f "$work/to/models/tiny-l2-random/config.json" ] || fail "random: $(ls -R "$work/to")"
"$sparda" bench sweep --out "$work/to" --backend cpu --models tiny:2 --contexts 1100 \
	--batches 1 --modes sparda --new-tokens 3 --timeout-s 0.001 --random-forecast \
	--shared-activation 0.8 >"$work/tosa.log" || fail "shared-activation sweep failed"
grep -q "generating tiny:2+random-forecast+shared0.8 into .*/tiny-l2-random-sa0.8 " \
	"$work/tosa.log" || fail "$(cat "$work/tosa.log")"
grep -q "shared activation 0.8" "$work/to/logs/gen-tiny-l2-random-sa0.8.log" ||
	fail "gen-model did not get the flag: $(cat "$work/to/logs/gen-tiny-l2-random-sa0.8.log")"
for bad in 0 1 x 0.5x; do
	"$sparda" bench sweep --out "$work/to" --models tiny:2 --shared-activation $bad \
		--dry-run >/dev/null 2>&1 && fail "--shared-activation $bad accepted"
done
# A bad grid is refused with a message naming the flag and the value, before anything runs.
bad_grid() { # expected-message args...
	local want=$1
	shift
	"$sparda" bench sweep --out "$work/bg" --models tiny --contexts 1100 --batches 1 "$@" \
		--dry-run >"$work/bg.log" 2>&1 && fail "accepted: $*"
	grep -q -- "$want" "$work/bg.log" || fail "$*: $(cat "$work/bg.log")"
}
bad_grid "--batches: 2 after 4: the list must be ascending" --batches 4,2
bad_grid "--batches: 'x' is not a positive integer" --batches 1,x
bad_grid "--contexts: '0' is not a positive integer" --contexts 0
bad_grid "--models: 'tiny:y'" --models tiny:y
: >"$work/file"
"$sparda" bench sweep --out "$work/file/sub" --models tiny --contexts 1100 --batches 1 \
	>"$work/bg.log" 2>&1 && fail "an output dir under a file accepted"
grep -q "cannot create $work/file/sub/logs" "$work/bg.log" || fail "$(cat "$work/bg.log")"
# A device smaller than the mode needs (compute --gpu-mem-limit): recorded as gpu-oom.
"$sparda" bench sweep --out "$work/go" --backend cpu --models tiny --contexts 1100 --batches 1 \
	--modes sparse --new-tokens 3 --timeout-s 60 --compute-arg=--gpu-mem-limit=2M \
	>"$work/go.log" || fail "gpu-mem-limit sweep failed"
python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))["modes"]["sparse"]
assert m["status"] == "gpu-oom" and "device" in m["error"], m' "$work/go/tiny_c1100_b1.json" ||
	fail "gpu-mem-limit: $(cat "$work/go/tiny_c1100_b1.json")"

# compute's --phase-times passed through: each mode's record carries its decode phases, and the
# report tables them.
"$sparda" bench sweep --out "$work/ph" --backend cpu --models tiny --contexts 1100 --batches 1 \
	--modes sparda,sparda-nooffload --new-tokens 4 --timeout-s 60 --compute-arg=--phase-times \
	>"$work/ph.log" || fail "phase-times sweep failed: $(cat "$work/ph.log")"
"$sparda" bench report --out "$work/ph" >/dev/null || fail "report of the phase-times sweep"
python3 - "$work/ph" <<'PY' || fail "phase-times records or report"
import json, os, sys
d = sys.argv[1]
rec = json.load(open(os.path.join(d, "tiny_c1100_b1.json")))
keys = ["embed", "qkvf", "select", "recall", "units", "store_kv", "attend", "ffn", "head", "span",
        "host"]
for m in ("sparda", "sparda-nooffload"):
    ph = rec["modes"][m]["result"]["decode_phase_ms"]
    assert sorted(ph) == sorted(keys) and ph["ffn"] > 0 and ph["span"] > 0, ph
s = json.load(open(os.path.join(d, "report", "summary.json")))
assert sorted(p["mode"] for p in s["phases"]) == ["sparda", "sparda-nooffload"], s["phases"]
md = open(os.path.join(d, "report", "report.md")).read()
assert "## Where the decode step goes (`--phase-times` records)" in md
assert "| tiny | 1100 | 1 | sparda |" in md.split("## Where the decode step goes")[1]
PY

# --batch-refine 1 with batches 1,8 under a device limit that stops both modes between them:
# part 1/2 (batch 1) does not refine; batch 8 run without it, then a budget that leaves the
# refinement (exit 3, nothing written), its plan, part 2/2 bisecting each mode (the modes that
# need the same batch in one run), and a rerun that runs nothing.
rf=$work/rf
rsweep() {
	"$sparda" bench sweep --out "$rf" --backend cpu --models tiny --contexts 1100 \
		--batches 1,8 --modes sparse,sparda --new-tokens 3 --timeout-s 60 \
		--compute-arg=--threads=2 --compute-arg=--gpu-mem-limit=20M \
		--memsvc-arg=--ram-budget=256M --batch-refine 1 "$@"
}
rsweep --part 1/2 >"$work/rf1.log" || fail "refine part 1/2 exited $?"
grep -q "batch refinement: 0 ran (0 modes ok, 0 failed), 0 left" "$work/rf1.log" ||
	fail "refine part 1/2: $(cat "$work/rf1.log")"
rsweep --dry-run >"$work/rfd1.log" || fail "refine dry run exited $?"
grep -q "refine: tiny_c1100: depends on the results of batches not recorded yet" \
	"$work/rfd1.log" || fail "refine dry run: $(cat "$work/rfd1.log")"
rsweep --part 2/2 --batch-refine 0 >"$work/rf2.log" || fail "batch 8 exited $?"
! grep -q refine "$work/rf2.log" || fail "--batch-refine 0 refined: $(cat "$work/rf2.log")"
rc=0
rsweep --budget-s 1 >"$work/rfb.log" || rc=$?
[ "$rc" -eq 3 ] && grep -q "batch refinement: 0 ran (0 modes ok, 0 failed), 1 left" \
	"$work/rfb.log" || fail "refine budget: rc $rc $(cat "$work/rfb.log")"
[ "$(find "$rf" -maxdepth 1 -name '*.json' | wc -l)" -eq 2 ] || fail "budget: refinement ran"
rsweep --dry-run >"$work/rfd2.log" || fail "refine dry run exited $?"
grep -q "\[refine\] tiny_c1100_b4: would run sparse (ok at 1, gpu-oom at 8), sparda (ok at 1, \
gpu-oom at 8); what follows depends on the results" "$work/rfd2.log" ||
	fail "refine plan: $(cat "$work/rfd2.log")"
rsweep --part 2/2 >"$work/rf3.log" || fail "refinement exited $?"
grep -q "\[refine\] tiny_c1100_b4: 2 modes ok, 0 failed, 0 skipped, in 1 run" "$work/rf3.log" &&
	grep -q "refine: tiny_c1100 sparse: ok at [2-7], gpu-oom at [3-7]$" \
		"$work/rf3.log" || fail "refinement: $(cat "$work/rf3.log")"
before=$(stat -c %Y.%s "$rf"/*.json | md5sum)
rsweep >"$work/rf4.log" || fail "refinement rerun exited $?"
grep -q "0 ran (0 modes ok, 0 failed), 2 skipped, 0 left" "$work/rf4.log" &&
	grep -q "batch refinement: 0 ran (0 modes ok, 0 failed), 0 left" "$work/rf4.log" ||
	fail "refinement rerun: $(cat "$work/rf4.log")"
[ "$before" = "$(stat -c %Y.%s "$rf"/*.json | md5sum)" ] || fail "refinement rerun rewrote"
"$sparda" bench report --out "$rf" >/dev/null || fail "report of the refinement"
python3 - "$rf" <<'PY'
import json, os, sys
rf = sys.argv[1]
def rec(b):
    p = os.path.join(rf, f"tiny_c1100_b{b}.json")
    return json.load(open(p)) if os.path.exists(p) else None
s = json.load(open(os.path.join(rf, "report", "summary.json")))
feas = {f["mode"]: f for f in s["feasible"]}
refined = {}
for mode in ("sparse", "sparda"):
    # the bisection replayed from the records: every midpoint recorded, the mode asked there
    assert rec(1)["modes"][mode]["status"] == "ok", rec(1)
    assert rec(8)["modes"][mode]["status"] == "gpu-oom", rec(8)
    lo, hi, mids = 1, 8, []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = rec(mid)
        assert r and mode in r["modes_asked"], (mode, mid, r)
        st = r["modes"][mode]["status"]
        assert st in ("ok", "gpu-oom"), (mode, mid, st)
        lo, hi = (mid, hi) if st == "ok" else (lo, mid)
        mids.append(mid)
    assert 1 < lo < 8, (mode, lo)  # the premise: the limit stops the mode between 1 and 8
    f = feas[mode]  # the report's feasible batch is the refined one
    assert (f["feasible_batch"], f["limited_by"], f["memory"]) == (lo, "gpu-oom", "GPU memory"), f
    refined[mode] = mids
# the ladder and the midpoints only; a batch both modes needed ran both in one process
batches = sorted(int(n[len("tiny_c1100_b"):-5]) for n in os.listdir(rf) if n.endswith(".json"))
assert batches == sorted({1, 8} | set(refined["sparse"]) | set(refined["sparda"])), batches
assert rec(4)["modes_asked"] == ["sparse", "sparda"] and len(rec(4)["runs"]) == 1, rec(4)
for b in batches:
    r = rec(b)
    assert r["compute_args"] == ["--threads=2", "--gpu-mem-limit=20M"], r
    assert r["memsvc_args"] == ["--ram-budget=256M"], r
    if b not in (1, 8):
        assert r["modes_asked"] == [m for m in ("sparse", "sparda") if b in refined[m]], r
md = open(os.path.join(rf, "report", "report.md")).read().splitlines()
assert "Limits: GPU memory limit 20M, host RAM budget 256M." in md, md
(mb,) = s["max_batch"]
assert (mb["sparda_batch"], mb["sparse_batch"]) == (feas["sparda"]["feasible_batch"],
                                                    feas["sparse"]["feasible_batch"]), mb
mbi = md.index("## Throughput at the largest feasible batch (sparda vs sparse)")
line = next(l for l in md[mbi:] if l.startswith("| tiny | 1100 | "))
assert line.startswith("| tiny | 1100 | %d |" % mb["sparda_batch"]), line
assert line.endswith("| GPU memory | GPU memory |"), line
PY
# The refinement's limits from another directory: a directory holding only the batch-1 record
# (its own copy, read instead of the refinement's) reports the bisected feasible batches and
# the GPU limit with --with; without it every mode is "not reached" at batch 1.
mkdir -p "$work/rw" && cp "$rf/tiny_c1100_b1.json" "$work/rw/"
"$sparda" bench report --out "$work/rw" >/dev/null || fail "report of the copy alone"
python3 - "$work/rw" <<'PY' || fail "report of the copy alone: feasible"
import json, os, sys
s = json.load(open(os.path.join(sys.argv[1], "report", "summary.json")))
assert {(f["feasible_batch"], f["limited_by"], f["limit_reached"]) for f in s["feasible"]} == \
    {(1, None, False)}, s["feasible"]
PY
"$sparda" bench report --out "$work/rw" --with "$rf" >/dev/null || fail "report --with exited $?"
python3 - "$work/rw" "$rf" <<'PY' || fail "report --with"
import json, os, sys
rw, rf = sys.argv[1:]
s = json.load(open(os.path.join(rw, "report", "summary.json")))
t = json.load(open(os.path.join(rf, "report", "summary.json")))
assert s["results"] == t["results"], (s["results"], t["results"])  # batch 1 counted once
assert s["feasible"] == t["feasible"], (s["feasible"], t["feasible"])
assert s["max_batch"] == t["max_batch"], (s["max_batch"], t["max_batch"])
md = open(os.path.join(rw, "report", "report.md")).read()
assert "`sparda bench report --out %s --with %s` from %d mode results (a record named in " \
    "several directories is read from the first)." % (rw, rf, s["results"]) in md, md[:400]
PY
rc=0
"$sparda" bench report --out "$work/rw" --max 3 >"$work/rbad.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "unrecognized option '--max'" "$work/rbad.log" ||
	fail "report bad argument: rc $rc $(cat "$work/rbad.log")"
rc=0
"$sparda" bench report --out "$work/rw" --with "$work/none" >"$work/rbad.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "$work/none: ENOENT" "$work/rbad.log" ||
	fail "report missing --with: rc $rc $(cat "$work/rbad.log")"

# A record joined by the modes it lacks, when made with the same pass-through arguments: a
# sparse-only grid, then sparse and sparda (sparda joins batch 1 and 8, then its bisection joins
# the midpoints sparse's refinement recorded), a rerun that runs nothing, and other arguments
# that leave the records alone.
mg=$work/mg
msweep() {
	"$sparda" bench sweep --out "$mg" --backend cpu --models tiny --contexts 1100 \
		--batches 1,8 --new-tokens 3 --timeout-s 60 --compute-arg=--threads=2 \
		--compute-arg=--gpu-mem-limit=20M --memsvc-arg=--ram-budget=256M "$@"
}
msweep --modes sparse --batch-refine 2 >"$work/mg1.log" || fail "merge: sparse exited $?"
msweep --modes sparse,sparda --batch-refine 2 >"$work/mg2.log" || fail "merge: both exited $?"
grep -q "\[1\] tiny_c1100_b1: 1 modes ok, 0 failed, 0 skipped, in 1 run" "$work/mg2.log" &&
	grep -q "\[refine\] tiny_c1100_b4: sparda (ok at 1, gpu-oom at 8)" "$work/mg2.log" ||
	fail "merge: $(cat "$work/mg2.log")"
before=$(stat -c %Y.%s "$mg"/*.json | md5sum)
msweep --modes sparse,sparda --batch-refine 2 >"$work/mg3.log" || fail "merge rerun exited $?"
grep -q "0 ran (0 modes ok, 0 failed), 2 skipped, 0 left" "$work/mg3.log" &&
	grep -q "batch refinement: 0 ran (0 modes ok, 0 failed), 0 left" "$work/mg3.log" ||
	fail "merge rerun: $(cat "$work/mg3.log")"
"$sparda" bench sweep --out "$mg" --backend cpu --models tiny --contexts 1100 --batches 1 \
	--modes sparse-offload --new-tokens 3 --timeout-s 60 --compute-arg=--threads=1 \
	>"$work/mg4.log" || fail "merge, other arguments exited $?"
grep -q "tiny_c1100_b1: exists (with other --compute-arg/--memsvc-arg, or unreadable), skipped" \
	"$work/mg4.log" || fail "merge, other arguments: $(cat "$work/mg4.log")"
[ "$before" = "$(stat -c %Y.%s "$mg"/*.json | md5sum)" ] || fail "merge: a rerun rewrote"
python3 - "$mg" <<'PY' || fail "merged records"
import json, os, sys
mg = sys.argv[1]
def rec(b):
    return json.load(open(os.path.join(mg, f"tiny_c1100_b{b}.json")))
for b in (1, 8, 4):
    r = rec(b)
    # sparse's process first, then sparda's, each mode pointing at its own
    assert r["modes_asked"] == ["sparse", "sparda"] and len(r["runs"]) == 2, (b, r)
    assert (r["modes"]["sparse"]["run"], r["modes"]["sparda"]["run"]) == (0, 1), (b, r["modes"])
    assert r["runs"][1]["modes"] == ["sparda"], r["runs"]
assert rec(1)["modes"]["sparda"]["status"] == "ok" and rec(8)["modes"]["sparda"]["status"] == "gpu-oom"
PY
rc=0
"$sparda" bench sweep --out "$work/bu" --backend cpu --models tiny --contexts 1100 --batches 1 \
	--modes sparse --timeout-s 60 --budget-s 1 >"$work/bu.log" || rc=$?
[ "$rc" -eq 3 ] && grep -q "0 ran .* 1 left" "$work/bu.log" ||
	fail "budget: rc $rc $(cat "$work/bu.log")"
[ -z "$(find "$work/bu" -maxdepth 1 -name '*.json')" ] || fail "budget: a record was written"
# The budget uses what earlier records of the model and context say a configuration takes:
# batch 2 runs inside a budget shorter than its --timeout-s, estimated from batch 1's record;
# batch 4096 is estimated far past it and not started (exit 3), naming the record.
esweep() {
	"$sparda" bench sweep --out "$work/be" --backend cpu --models tiny --contexts 1100 \
		--modes sparse --new-tokens 3 --timeout-s 200 "$@"
}
esweep --batches 1 >"$work/be1.log" || fail "estimate: batch 1 exited $?"
esweep --batches 1,2 --budget-s 90 >"$work/be2.log" || fail "estimate: $(cat "$work/be2.log")"
[ -f "$work/be/tiny_c1100_b2.json" ] || fail "estimate: batch 2 not run: $(cat "$work/be2.log")"
rc=0
esweep --batches 1,2,4096 --budget-s 90 >"$work/be3.log" || rc=$?
[ "$rc" -eq 3 ] && grep -q "sweep: tiny_c1100_b4096 may take 200 s (estimated from \
tiny_c1100_b2, at most its --timeout-s), [0-9]* s of the budget are left" "$work/be3.log" ||
	fail "estimate: rc $rc $(cat "$work/be3.log")"
[ ! -f "$work/be/tiny_c1100_b4096.json" ] || fail "estimate: batch 4096 ran"

# Hand-made records of another model: exact ratios, the step breakdown and the peers.
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def res(tok_s, step, prefill, **kw):
    r = {"decode_tokens_per_s": tok_s, "decode_step_ms": step, "prefill_s": prefill,
         "prompt_tokens": 4096, "decode_tokens": 17, "decode_s": 17 * step / 1e3,
         "bytes_h2d": 0, "late_units": 0}
    r.update(kw)
    return {"status": "ok", "run": 0, "error": None, "result": r}
# compute reports the split as totals over the decode (17 steps); the report shows it per step
split = dict(decode_compute_ms=34.0, decode_fetch_ms=17.0, decode_fetch_exposed_ms=8.5,
             recall=0.9, gpu_mem_peak_bytes=2 * 2**30, host_rss_peak_bytes=2**30,
             pcie_h2d_gbps=40.0, pcie_d2h_gbps=1.5)
base = {"kind": "sweep-config", "model": "synth", "context": 4096, "batch": 1}
phases = dict(embed=0.01, qkvf=0.5, select=0.25, recall=0.0, store_kv=0.1, attend=0.6, ffn=1.2,
              head=0.14, span=2.8, host=0.2)
json.dump(dict(base, store="memsvc", modes={
    "sparda": res(300.0, 3.0, 1.0, decode_phase_ms=phases, **split), "sparse-offload": res(200.0, 5.0, 2.0),
    "sparse": res(400.0, 2.5, 2.5), "sparda-nooffload": res(450.0, 2.0, 1.0, **split)}),
    open(os.path.join(out, "synth_c4096_b1.json"), "w"))
def peer(r):  # hf-peers.py records no PCIe bytes
    del r["result"]["bytes_h2d"]
    return r
json.dump(dict(base, store="hf", modes={
    "hf-dynamic": peer(res(100.0, 10.0, 5.0, decode_step_ms_median=9.5)),
    "hf-offloaded": peer(res(60.0, 16.0, 5.5))}),
    open(os.path.join(out, "synth_c4096_b1_hf.json"), "w"))
# peers that did not fit where sparda ran: their row names why
big = dict(base, model="synthbig")
json.dump(dict(big, store="memsvc", modes={"sparda": res(80.0, 12.5, 4.0)}),
          open(os.path.join(out, "synthbig_c4096_b1.json"), "w"))
json.dump(dict(big, store="hf", modes={
    "hf-dynamic": {"status": "gpu-oom", "run": 0, "error": "CUDA out of memory"},
    "hf-offloaded": {"status": "host-oom", "run": 0, "error": "killed by SIGKILL"}}),
    open(os.path.join(out, "synthbig_c4096_b1_hf.json"), "w"))
PY

"$sparda" bench report --out "$out" >"$work/report.log" || fail "report exited $?"
python3 - "$out" "$work/to" <<'PY'
import json, os, sys
out, to = sys.argv[1], sys.argv[2]
def rec(name, d=out):
    return json.load(open(os.path.join(d, name + ".json")))
modes4 = ["sparda", "sparda-nooffload", "sparse", "sparse-offload"]
for ctx in (1100, 1300):
    # batch 1: every mode in one compute process, twins equal within it
    r = rec(f"tiny_c{ctx}_b1")
    assert len(r["runs"]) == 1 and r["runs"][0]["modes"] == modes4, r["runs"]
    for m in modes4:
        e = r["modes"][m]
        assert e["status"] == "ok" and e["run"] == 0, (m, e)
        assert e["result"]["ran"] == m and e["result"]["decode_tokens_per_s"] > 0, e
    assert r["modes"]["sparda"]["result"]["equals_twin"] is True
    # the embedded model's Forecast is fitted, and the record says so
    assert r["forecast"]["trained"] is True and r["forecast"]["fit"] == "ridge", r["forecast"]
    assert r["modes"]["sparse"]["result"]["forecast"] == r["forecast"]
    assert r["runs"][0]["memsvc_rss_peak_bytes"] > 0 and r["runs"][0]["compute_maxrss_bytes"] > 0
    # batch 2: the host store is refused in run 0 (both offloading modes), the rest run again
    r = rec(f"tiny_c{ctx}_b2")
    assert [x["status"] for x in r["runs"]] == ["host-oom", "ok"], r["runs"]
    assert r["runs"][0]["failed_mode"] == "sparda" and r["runs"][1]["modes"] == [
        "sparda-nooffload", "sparse"], r["runs"]
    assert "RAM budget" in r["runs"][0]["memsvc_error"], r["runs"][0]
    for m in ("sparda", "sparse-offload"):
        assert r["modes"][m]["status"] == "host-oom" and "ENOMEM" in r["modes"][m]["error"]
    for m in ("sparda-nooffload", "sparse"):
        assert r["modes"][m]["status"] == "ok" and r["modes"][m]["run"] == 1
    # batch 4: the search stopped the offloading modes at their first out-of-memory batch
    r = rec(f"tiny_c{ctx}_b4")
    assert len(r["runs"]) == 1 and r["runs"][0]["modes"] == ["sparda-nooffload", "sparse"]
    for m in ("sparda", "sparse-offload"):
        assert r["modes"][m] == dict(r["modes"][m], status="skipped",
                                     error="host-oom at batch 2"), r["modes"][m]
    # the in-process arena: sparda again in the memsvc configuration's own process
    # (--inproc-modes), where it ran with memsvc
    r = rec(f"tiny_c{ctx}_b1_inproc")
    assert r["store"] == "inproc" and r["same_process"] is True, r
    # the arguments it ran with: compute's, and none for the daemon it did not use
    assert (r["compute_args"], r["memsvc_args"]) == (["--threads=2"], []), r
    assert rec(f"tiny_c{ctx}_b1")["memsvc_args"] == ["--ram-budget=2M"]
    assert r["modes_asked"] == ["sparda"] and len(r["runs"]) == 1, r
    assert r["runs"][0]["modes"] == rec(f"tiny_c{ctx}_b1")["runs"][0]["modes"], r
    e = r["modes"]["sparda"]
    assert e["status"] == "ok" and e["run"] == 0 and e["memsvc_rss_peak_bytes"] is None, e
    assert e["result"]["store"] == "inproc" and e["result"]["equals_twin"] is True, e
    assert rec(f"tiny_c{ctx}_b1")["modes"]["sparda"]["result"]["store"] == "memsvc"
    # batch 2: sparda failed with memsvc, so neither process ran it in-process
    r = rec(f"tiny_c{ctx}_b2_inproc")
    assert r["runs"] == [] and "same_process" not in r, r
# the partial failure: one record, sparse from the failed process, the rerun without it
pf = os.path.join(os.path.dirname(out), "pf")
r = rec("tiny_c1100_b2", pf)
assert [(x["modes"], x["status"], x["failed_mode"]) for x in r["runs"]] == [
    (["sparse", "sparda", "sparda-nooffload"], "host-oom", "sparda"),
    (["sparda-nooffload"], "ok", None)], r["runs"]
e = r["modes"]["sparse"]
assert (e["status"], e["run"]) == ("ok", 0) and e["result"]["decode_tokens_per_s"] > 0, e
assert e["result"]["status"] == "ok" and len(e["result"]["tokens"]) == 2, e
e = r["modes"]["sparda"]
assert (e["status"], e["run"], e["result"]) == ("host-oom", 0, None), e
assert "ENOMEM" in e["error"], e
e = r["modes"]["sparda-nooffload"]
assert (e["status"], e["run"]) == ("ok", 1) and e["result"]["ran"] == "sparda-nooffload", e
assert r["forecast"]["trained"] is True, r["forecast"]
ps = json.load(open(os.path.join(pf, "report", "summary.json")))
prow = {x["mode"]: x for x in ps["rows"]}
assert (prow["sparse"]["run"], prow["sparda-nooffload"]["run"]) == (0, 1), prow
assert (ps["results"], ps["failed"]) == (3, 1), ps
t = rec("tiny-l2_c1100_b1", to)
assert t["model"] == "tiny:2" and t["layers"] == 2, t
assert [t["modes"][m]["status"] for m in ("sparse", "sparda")] == ["timeout"] * 2, t
assert t["forecast"] is None, t  # no mode ran
# the generated models' Forecast files: fitted (ridge) by default, the generator's with the flag
def meta(d):
    with open(os.path.join(to, "models", d, "forecast.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]
assert meta("tiny-l2")["sparda.forecast.fit"] == "ridge", meta("tiny-l2")
assert "sparda.forecast.fit" not in meta("tiny-l2-random"), meta("tiny-l2-random")
assert rec("tiny-l2-random_c1100_b1", to)["model"] == "tiny:2+random-forecast"
assert rec("tiny-l2-random-sa0.8_c1100_b1", to)["model"] == "tiny:2+random-forecast+shared0.8"
t = rec("tiny-l2_c1100_b2", to)  # out of time at batch 1: not run at batch 2
assert t["runs"] == [] and {m: e["error"] for m, e in t["modes"].items()} == {
    "sparse": "timeout at batch 1", "sparda": "timeout at batch 1"}, t

s = json.load(open(os.path.join(out, "report", "summary.json")))
# tiny: 2 contexts x (4 + 4 + 2 modes + 1 inproc); synth: 4 + 2 hf; synthbig: 1 + 2 hf failed
assert (s["results"], s["failed"]) == (31, 6), {k: s[k] for k in ("results", "ok", "failed")}
feas = {(f["model"], f["context"], f["mode"]): f for f in s["feasible"]}
for ctx in (1100, 1300):
    f = feas[("tiny", ctx, "sparda")]
    assert (f["feasible_batch"], f["limited_by"], f["memory"]) == (1, "host-oom", "host memory")
    assert f["limit_reached"] is True, f
    f = feas[("tiny", ctx, "sparse")]
    assert (f["feasible_batch"], f["limited_by"], f["limit_reached"]) == (4, None, False), f
mb = {(m["model"], m["context"]): m for m in s["max_batch"]}
m = mb[("tiny", 1100)]
assert (m["sparda_batch"], m["sparse_batch"], m["sparda_memory"]) == (1, 4, "host memory"), m
assert (m["sparda_limit_reached"], m["sparse_limit_reached"]) == (True, False), m
assert m["ratio"] > 0
rat = {(x["model"], x["context"], x["batch"]): x for x in s["ratios"]}
x = rat[("tiny", 1100, 1)]
assert x["decode_sparda_vs_sparse_offload"] > 0 and x["decode_sparda_vs_sparse_offload_one_run"]
assert rat[("tiny", 1100, 2)]["decode_sparda_vs_sparse_offload"] is None
x = rat[("synth", 4096, 1)]
assert (x["decode_sparda_vs_sparse_offload"], x["prefill_sparda_vs_sparse"],
        x["step_sparda_vs_nooffload"]) == (1.5, 2.5, 1.5), x
# what overlap can give: C = nooffload's 2.0 ms, F = 5.0 - 2.0, bound (2 + 3) / 3
ov = {(x["model"], x["context"], x["batch"]): x for x in s["overlap"]}
x = ov[("synth", 4096, 1)]
assert (x["compute_ms"], x["serial_fetch_ms"]) == (2.0, 3.0), x
assert abs(x["overlap_bound"] - 5 / 3) < 1e-12 and abs(x["measured"] - 5 / 3) < 1e-12, x
assert x["gb_per_step_sparda"] == 0.0, x
# sparda's step (3.0 ms) split: 34 / 17 ms of compute, 8.5 / 17 ms waiting for the fetch
assert (x["sparda_compute_ms"], x["sparda_exposed_fetch_ms"]) == (2.0, 0.5), x
assert ov[("tiny", 1100, 1)]["gb_per_step_sparse_offload"] > 0, ov
b = {(x["model"], x["context"], x["batch"]): x for x in s["process_boundary"]}
assert set(b) == {("tiny", 1100, 1), ("tiny", 1300, 1)}, b
assert b[("tiny", 1100, 1)]["step_memsvc_vs_inproc"] > 0
assert b[("tiny", 1100, 1)]["same_process"] is True
peers = {p["model"]: p for p in s["peers"]}
assert sorted(peers) == ["synth", "synthbig"], peers
p = peers["synth"]
assert (p["decode_sparda_vs_hf_dynamic"], p["decode_sparda_vs_hf_offloaded"],
        p["prefill_sparda_vs_hf_dynamic"]) == (3.0, 5.0, 5.0), p
assert (p["hf_dynamic_step_ms_median"], p["hf_offloaded_step_ms_median"]) == (9.5, None), p
assert (p["hf_dynamic_status"], p["hf_offloaded_status"]) == ("ok", "ok"), p
p = peers["synthbig"]
assert (p["hf_dynamic_status"], p["hf_offloaded_status"],
        p["decode_sparda_vs_hf_dynamic"]) == ("gpu-oom", "host-oom", None), p
rows = {(x["model"], x["context"], x["batch"], x["mode"], x["store"]): x for x in s["rows"]}
w = rows[("synth", 4096, 1, "sparda", "memsvc")]
assert (w["recall"], w["h2d_gb_per_s"], w["gpu_gib"], w["host_gib"]) == (0.9, 40.0, 2.0, 1.0), w
assert w["result"]["decode_fetch_exposed_ms"] == 8.5  # the summary keeps compute's totals
# a peer's PCIe rate is not measured: no figure, not 0 (its H2D cell is "-")
w = rows[("synth", 4096, 1, "hf-offloaded", "hf")]
assert (w["h2d_gb_per_s"], w["d2h_gb_per_s"]) == (None, None), w
assert rows[("synth", 4096, 1, "sparse", "memsvc")]["h2d_gb_per_s"] == 0, "sparse moved 0 bytes"
w = rows[("tiny", 1100, 2, "sparse", "memsvc")]
assert w["run"] == 1 and w["host_gib"] > 0 and w["memsvc_gib"] > 0, w
assert rows[("tiny", 1100, 1, "sparse-offload", "memsvc")]["equals_twin"] is True
assert rows[("tiny", 1100, 1, "sparse", "memsvc")]["hit_rate"] is None
assert "tokens" not in rows[("tiny", 1100, 1, "sparda", "memsvc")]["result"]
w = rows[("tiny", 1100, 1, "sparda", "memsvc")]
assert (w["forecast_trained"], w["forecast_fit"]) == (True, "ridge"), w
w = rows[("synth", 4096, 1, "sparda", "memsvc")]
assert (w["forecast_trained"], w["forecast_fit"]) == (None, None), w

md = open(os.path.join(out, "report", "report.md")).read().splitlines()
for title in ("## tiny, context 1100", "## tiny, context 1300", "## synth, context 4096",
              "## Headline ratios", "## Process boundary (memsvc vs in-process arena)",
              "## Peers: Hugging Face transformers on the same checkpoint"):
    assert title in md, title
head = md.index("## tiny, context 1100")
assert md[head + 2] == "Forecast: trained (ridge).", md[head:head + 4]
# the limits passed: no device limit (the arguments as given), the daemon's RAM budget
assert md[head + 4] == ("Limits: no --gpu-mem-limit (compute args: --threads=2), "
                        "host RAM budget 2M."), md[head + 4]
synth = md.index("## synth, context 4096")
assert not md[synth + 2].startswith("Forecast"), "synth: no Forecast"
assert md[synth + 2] == "Limits: none recorded.", md[synth + 2]  # records before the fields
start = head + 8
end = next(i for i in range(start, len(md)) if md[i].startswith("## "))
first = [l.split(" | ") for l in md[start:end] if l.startswith("| ")]
assert len(first) == 11 and all(len(c) == 17 for c in first), first
st = {(c[0][2:], c[1]): c[-1].rstrip(" |") for c in first}
assert st[("2", "sparda")] == "host-oom" and st[("4", "sparse")] == "ok", st
assert ("4", "sparda") not in st and st[("1", "sparda (inproc)")] == "ok", st
assert any(l.startswith("| tiny | 1100 | sparda | 1 | host-oom | host memory |") for l in md)
# the largest feasible batch: sparse ran at the largest batch tried (4), its limit not reached
mbi = md.index("## Throughput at the largest feasible batch (sparda vs sparse)")
def mb_row(prefix):
    return [c.strip() for c in next(l for l in md[mbi:] if l.startswith(prefix)).split("|")[1:-1]]
c = mb_row("| tiny | 1100 | ")
assert (c[2], c[4], c[7], c[8]) == ("1", "4", "host memory", "not reached (largest batch tried)"), c
c = mb_row("| synth | 4096 | ")
assert c[7:] == ["not reached (largest batch tried)"] * 2, c
c = mb_row("| synthbig | 4096 | ")  # no sparse row: its batch is "-", not 0
assert (c[2], c[4], c[5], c[8]) == ("1", "-", "-", "-"), c
assert "| synth | 4096 | 1 | 1.50x | 2.50x | 1.50x |" in md
assert ("| synth | 4096 | 1 | 300.0 | 100.0 | 10.0 / 9.5 | 60.0 | 16.0 | 3.00x | 5.00x | 1.000 | "
        "5.000 | 5.00x |") in md
assert "| synthbig | 4096 | 1 | 80.0 | gpu-oom | - | host-oom | - | - | - | 4.000 | - | - |" in md
# the one record with decode phases (the hand-made sparda): its row, and only it; made before
# the units phase, so that column is empty
assert ("| synth | 4096 | 1 | sparda | 0.010 | 0.500 | 0.250 | 0.000 | - | 0.100 | 0.600 | "
        "1.200 | 0.140 | 2.800 | 0.200 | 3.000 |") in md
s = json.load(open(os.path.join(out, "report", "summary.json")))
assert [(p["model"], p["mode"], p["ffn"]) for p in s["phases"]] == [("synth", "sparda", 1.2)], s["phases"]
PY

if command -v gnuplot >/dev/null; then
	for p in decode_tiny_c1100 decode_tiny_c1300 step_tiny prefill_tiny breakdown_synth_c4096 \
		breakdown_tiny_c1100 decode_synth_c4096; do
		f=$out/report/$p.png
		[ -s "$f" ] || fail "$f missing or empty"
		[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$f is not a PNG"
	done
	# synthbig has no sparse row: no prefill plot, rather than an empty file
	[ ! -e "$out/report/prefill_synthbig.png" ] || fail "prefill_synthbig.png drawn without data"
	empty=$(find "$out/report" -name '*.png' -size 0)
	[ -z "$empty" ] || fail "empty plots: $empty"
else
	echo "gnuplot absent: plots not checked"
fi

# The peers script: --dry-run checks arguments and the checkpoint, prints the plan (with the
# batch search: a gpu-oom at batch 1 skips that mode at batch 2) and writes nothing.
peers=$src/scripts/hf-peers.py
"$sparda" gen-model --preset tiny --layers 2 --out "$work/m" >/dev/null || fail "gen-model"
mkdir "$work/hf"
echo '{"kind": "sweep-config", "modes": {"hf-offloaded": {"status": "gpu-oom"}}}' \
	>"$work/hf/tiny-l2_c1100_b1_hf.json"
before=$(find "$work/hf" "$work/m" -type f | xargs md5sum | sort | md5sum)
python3 "$peers" --model-dir "$work/m" --model-name tiny:2 --out "$work/hf" --contexts 1100 \
	--batches 1,2 --new-tokens 3 --dry-run >"$work/peers.log" || fail "peers dry-run exited $?"
grep -q "tiny-l2_c1100_b1_hf.json: exists, skipped" "$work/peers.log" ||
	fail "$(cat "$work/peers.log")"
grep -q "tiny-l2_c1100_b2_hf.json: would run hf-dynamic (skipped: .*gpu-oom at batch 1" \
	"$work/peers.log" || fail "peers plan: $(cat "$work/peers.log")"
[ "$before" = "$(find "$work/hf" "$work/m" -type f | xargs md5sum | sort | md5sum)" ] ||
	fail "peers --dry-run wrote something"
for bad in "--model-dir $work/hf" "--model-dir $work/m --modes hf-x" \
	"--model-dir $work/m --batches 4,1"; do
	rc=0
	# shellcheck disable=SC2086
	python3 "$peers" $bad --model-name tiny:2 --out "$work/hf" --dry-run >/dev/null 2>&1 || rc=$?
	[ "$rc" -eq 2 ] || fail "peers $bad: exit $rc, want 2"
done
echo "bench sweep: ok"
