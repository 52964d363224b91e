#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The evaluation sweep on the CPU backend with the embedded tiny model (2 contexts x 2 batches x
# 4 modes): --part 1/2 then 2/2 cover the grid, a third run skips everything, batch 2 of the
# offloading modes exceeds a 2 MiB memsvc RAM budget and is recorded as host-oom without
# stopping the sweep, a 1 ms --timeout-s is recorded as a timeout, and `bench report` writes the
# Markdown table, a summary JSON with the feasible batches and, with gnuplot, PNG plots.
set -euo pipefail
build=${SPARDA_BUILD_DIR:?}
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
		--batches 1,2 --modes sparda,sparda-nooffload,sparse,sparse-offload --new-tokens 4 \
		--timeout-s 120 --memsvc-arg=--ram-budget=2M --compute-arg=--threads=2 "$@"
}
records() { find "$out" -maxdepth 1 -name '*.json' | wc -l; }

# Part 1 of 2 takes every other configuration: batch is the innermost axis, so batch 1 only.
sweep --part 1/2 >"$work/p1.log" || fail "part 1/2 exited $?"
[ "$(records)" -eq 8 ] || fail "part 1/2 wrote $(records) records, want 8"
[ -z "$(find "$out" -maxdepth 1 -name '*_b2_*.json')" ] || fail "part 1/2 ran a batch-2 config"
sweep --part 2/2 >"$work/p2.log" || fail "part 2/2 exited $?"
[ "$(records)" -eq 16 ] || fail "parts 1/2 + 2/2 wrote $(records) records, want 16"
grep -q "8 of 16 configurations in this part: 4 ok, 4 failed, 0 skipped" "$work/p2.log" ||
	fail "part 2/2 summary: $(tail -1 "$work/p2.log")"

# Resumable: everything exists, nothing runs, nothing is rewritten.
before=$(stat -c %Y.%s "$out"/*.json | md5sum)
sweep >"$work/all.log" || fail "resumed sweep exited $?"
grep -q "16 of 16 configurations in this part: 0 ok, 0 failed, 16 skipped" "$work/all.log" ||
	fail "resume did not skip: $(tail -1 "$work/all.log")"
[ "$before" = "$(stat -c %Y.%s "$out"/*.json | md5sum)" ] || fail "resume rewrote records"

# A 1 ms limit kills the run and says so (its own output dir).
"$sparda" bench sweep --out "$work/to" --backend cpu --models tiny --contexts 1100 --batches 1 \
	--modes sparse --new-tokens 4 --timeout-s 0.001 >"$work/to.log" || fail "timeout sweep failed"

"$sparda" bench report --out "$out" >"$work/report.log" || fail "report exited $?"
python3 - "$out" "$work/to" <<'PY'
import json, os, sys
out, to = sys.argv[1], sys.argv[2]
def rec(name, d=out):
    return json.load(open(os.path.join(d, name + ".json")))
r = rec("tiny_c1300_b2_sparda")
assert not r["ok"] and r["status"] == "host-oom", r
assert r["exit_status"] != 0 and "ENOMEM" in r["error"] and "RAM budget" in r["memsvc_error"], r
for mode in ("sparda", "sparda-nooffload", "sparse", "sparse-offload"):
    ok = rec("tiny_c1300_b1_" + mode)
    assert ok["ok"] and ok["result"]["ran"] == mode and ok["result"]["decode_tokens_per_s"] > 0, ok
for mode in ("sparse", "sparda-nooffload"):
    assert rec("tiny_c1100_b2_" + mode)["ok"], mode
t = rec("tiny_c1100_b1_sparse", to)
assert t["status"] == "timeout" and not t["ok"], t

s = json.load(open(os.path.join(out, "report", "summary.json")))
assert (s["configurations"], s["ok"], s["failed"]) == (16, 12, 4), s
assert len(s["rows"]) == 16
feas = {(f["context"], f["mode"]): f for f in s["feasible"]}
for ctx in (1100, 1300):
    assert feas[(ctx, "sparda")]["feasible_batch"] == 1, feas
    assert feas[(ctx, "sparda")]["limited_by"] == "host-oom", feas
    sparse = feas[(ctx, "sparse")]
    assert sparse["feasible_batch"] == 2 and sparse["limited_by"] is None, sparse
mb = {m["context"]: m for m in s["max_batch"]}
assert mb[1100]["sparda_batch"] == 1 and mb[1100]["sparse_batch"] == 2 and mb[1100]["ratio"] > 0
rat = {(x["context"], x["batch"]): x for x in s["ratios"]}
assert rat[(1100, 1)]["decode_sparda_vs_sparse_offload"] > 0
assert rat[(1100, 2)]["decode_sparda_vs_sparse_offload"] is None
rows = {(x["context"], x["batch"], x["mode"]): x for x in s["rows"]}
assert rows[(1100, 1, "sparda")]["equals_twin"] is True, rows[(1100, 1, "sparda")]
assert rows[(1100, 1, "sparse-offload")]["equals_twin"] is True
assert rows[(1100, 1, "sparse")]["hit_rate"] is None

md = open(os.path.join(out, "report", "report.md")).read().splitlines()
table = [l for l in md if l.startswith("| tiny | 1")]
main = [l.split(" | ") for l in table if l.count("|") == 14]
assert len(main) == 16, main
failed = [c for c in main if c[-1].rstrip(" |") == "host-oom"]
assert sorted((c[1], c[2], c[3]) for c in failed) == sorted(
    (str(c), "2", m) for c in (1100, 1300) for m in ("sparda", "sparse-offload")), failed
for c in main:
    if c[-1].rstrip(" |") == "ok":
        assert float(c[4]) > 0 and float(c[5]) > 0, c
        if c[3] == "sparda":
            assert c[11] == "yes", c
assert any(l.startswith("| tiny | 1100 | sparda | 1 | host-oom |") for l in md), md
assert any(l.startswith("## Headline ratios") for l in md)
PY
if command -v gnuplot >/dev/null; then
	for p in decode_tiny_c1100 decode_tiny_c1300 step_tiny; do
		f=$out/report/$p.png
		[ -s "$f" ] || fail "$f missing or empty"
		[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$f is not a PNG"
	done
else
	echo "gnuplot absent: plots not checked"
fi
echo "bench sweep: ok"
