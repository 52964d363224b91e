#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# sparda up --compute=1 on the CPU backend and the tiny model: the compute service answers a
# prompt file with the JSON of a batch run (sparda equals its twin, tokens equal those of a
# direct sparda-compute --prompt-file run), a bad prompt file with NAME.error while it keeps
# serving, status lists it, down stops it and memsvc with exit 0; requests of the same size
# reuse the service's memsvc session (one attach for them, also across the bad request); a
# compute that cannot start makes up fail, name it and stop what it started.
set -euo pipefail
build=${SPARDA_BUILD_DIR:?}
sparda=$build/bin/sparda
compute=$build/bin/sparda-compute
command -v python3 >/dev/null || { echo "python3 absent: skipped"; exit 77; }
for v in $(compgen -e | grep '^SPARDA_'); do
	case $v in SPARDA_BUILD_DIR | SPARDA_SOURCE_DIR) ;; *) unset "$v" ;; esac
done
work=$(mktemp -d /tmp/sparda-serve-XXXXXX) # short: socket paths must fit sun_path
dir=$work/run
srv=$dir/compute-0

live() { # live PIDFILE BINARY: the pid in PIDFILE runs BINARY (not a zombie)
	local p
	p=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$p" ] && readlink "/proc/$p/exe" 2>/dev/null | grep -q "$2" &&
		! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null
}

cleanup() {
	set +e
	local f
	for f in "$dir"/compute-*.pid "$dir/memsvc.pid"; do
		[ -f "$f" ] && live "$f" sparda && kill -9 "$(cat "$f")"
	done
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	tail -5 "$dir"/*.log 2>/dev/null
	exit 1
}

wait_file() { # wait_file PATH: up to 60 s
	for _ in $(seq 600); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	fail "no $1 after 60 s"
}

submit() { # submit NAME FILE: atomically into in/
	cp "$2" "$srv/.$1.tmp"
	mv "$srv/.$1.tmp" "$srv/in/$1.prompt"
}

flags=(--backend=cpu --threads=1 --modes=sparda,sparda-nooffload --new-tokens=8)
cargs=()
for f in "${flags[@]}"; do cargs+=("--compute-arg=$f"); done

"$sparda" up --runtime-dir "$dir" --metrics-port=0 --compute=1 "${cargs[@]}" >"$work/up" 2>&1 ||
	{ cat "$work/up"; fail "sparda up --compute=1"; }
grep -q "sparda-compute 0 ready" "$work/up" || fail "up does not report compute 0 ready"
live "$dir/compute-0.pid" sparda-compute || fail "no live sparda-compute behind compute-0.pid"
grep -q "^backend=cpu" "$srv/ready" || fail "ready file: $(cat "$srv/ready")"
grep -q "^host=memsvc" "$srv/ready" || fail "compute did not attach to memsvc: $(cat "$srv/ready")"

awk 'BEGIN { s = 7; for (i = 0; i < 300; i++) { s = (s * 1103515245 + 12345) % 2147483648;
	printf "%d%s", int(s / 65536) % 512, i < 299 ? " " : "\n" } }' >"$work/p.txt"
attaches() { grep -c 'msg="session attached".*client=sparda-compute' "$dir/memsvc.log" || true; }
submit a "$work/p.txt"
wait_file "$srv/out/a.json"
[ -f "$srv/done/a.prompt" ] || fail "a.prompt not moved to done/"
n_a=$(attaches)

"$compute" "${flags[@]}" --runtime-dir="$dir" --prompt-file="$work/p.txt" \
	--json="$work/direct.json" >"$work/direct.log" 2>&1 ||
	{ cat "$work/direct.log"; fail "direct run"; }

printf '1 2 x\n' >"$work/bad.txt"
submit b "$work/bad.txt"
wait_file "$srv/out/b.error"
grep -q "not a token id" "$srv/out/b.error" || fail "b.error: $(cat "$srv/out/b.error")"
submit c "$work/p.txt"
wait_file "$srv/out/c.json"
# a.prompt and c.prompt are the same size: c ran in a's session (the direct run in between
# attached once as a process of its own)
[ "$(attaches)" = $((n_a + 1)) ] || fail "c did not reuse the session: attaches $n_a -> $(attaches)"

python3 - "$srv/out/a.json" "$srv/out/c.json" "$work/direct.json" <<'PY' || fail "results"
import json, sys
a, c, d = (json.load(open(p)) for p in sys.argv[1:])
for r in (a, c):
    assert r["sparda"]["ran"] == "sparda", r["sparda"]["ran"]
    assert r["sparda"]["equals_twin"] is True
    assert r["sparda"]["tokens"] == r["sparda-nooffload"]["tokens"]
    assert r["sparda"]["tokens"] == d["sparda"]["tokens"], (r["sparda"], d["sparda"]["tokens"])
    assert len(r["sparda"]["tokens"][0]) == 8
PY

"$sparda" status --runtime-dir "$dir" >"$work/status" 2>&1 || { cat "$work/status"; fail "status"; }
grep -q "compute-0 .*running, ready, 2 served, 1 failed" "$work/status" ||
	{ cat "$work/status"; fail "status: compute-0 line"; }

"$sparda" down --runtime-dir "$dir" >"$work/down" 2>&1 || { cat "$work/down"; fail "down"; }
grep -q "sparda-compute 0 (pid [0-9]*) stopped, exit status 0" "$work/down" ||
	{ cat "$work/down"; fail "down: compute exit"; }
[ ! -e "$srv/ready" ] || fail "ready file left after down"
[ ! -e "$dir/compute-0.pid" ] || fail "compute-0.pid left after down"
pgrep -f "serve-dir=$srv" >/dev/null && fail "a sparda-compute still runs"
[ ! -e "$dir/memsvc.pid" ] || fail "memsvc.pid left after down"

# A compute that cannot start: up names it, exits 1, and leaves nothing running.
rc=0
"$sparda" up --runtime-dir "$dir" --metrics-port=0 --compute=1 --compute-arg=--backend=cpu \
	--compute-arg=--model="$work/none" >"$work/up2" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$work/up2"; fail "up with a broken compute exited $rc"; }
grep -q "compute-0 (sparda-compute) exited before it was ready" "$work/up2" ||
	{ cat "$work/up2"; fail "up does not name the failed compute"; }
sleep 0.5
live "$dir/memsvc.pid" sparda-memsvc && fail "memsvc left running after a failed up"
pgrep -f "serve-dir=$srv" >/dev/null && fail "a sparda-compute still runs after a failed up"
echo "ok"
