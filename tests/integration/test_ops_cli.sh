#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The operator subcommands against a real daemon in a temp runtime dir: sparda up (ready,
# refuses a second start, over a live socket and after a failed start), status and stats
# (numbers, counters that move after a sparda-compute job; tiers, tenants and arenas, the NVMe
# tier disabled, then enabled with compute's units on disk), down (drain with exit 0 in the log,
# SIGKILL of a stuck daemon, nothing to stop, stale and unreadable pid files), config --dump and
# `sparda run --memsvc-arg`.
set -euo pipefail
build=${SPARDA_BUILD_DIR:?}
sparda=$build/bin/sparda
# The checks read the daemon's log and defaults: no SPARDA_* setting from the caller.
for v in $(compgen -e | grep '^SPARDA_'); do
	case $v in SPARDA_BUILD_DIR | SPARDA_SOURCE_DIR) ;; *) unset "$v" ;; esac
done
work=$(mktemp -d /tmp/sparda-ops-XXXXXX) # short: socket paths must fit sun_path
dir=$work/run
started=()

cleanup() {
	# Kill whatever daemon this test started, whatever happened.
	local p
	set +e
	started+=("$(cat "$dir/memsvc.pid" 2>/dev/null)")
	for p in "${started[@]}"; do
		if [ -n "$p" ] && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" != "" ] &&
			readlink "/proc/$p/exe" | grep -q sparda-memsvc; then
			kill -9 "$p" 2>/dev/null || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	[ -f "$dir/memsvc.log" ] && tail -5 "$dir/memsvc.log"
	exit 1
}

# expect STATUS CMD...: run, keep stdout+stderr in $work/out, check the exit status.
expect() {
	local want=$1 rc=0
	shift
	"$@" >"$work/out" 2>&1 || rc=$?
	[ "$rc" = "$want" ] || { cat "$work/out"; fail "'$*' exited $rc, expected $want"; }
}

stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

metric_sum() { # sum of the /metrics samples whose name starts with $1
	awk -v k="$1" 'index($1, k) == 1 { s += $2 } END { printf "%d\n", s }' "$2"
}

# Every subcommand has --help.
for c in up down status stats config; do
	expect 0 "$sparda" "$c" --help
	grep -q "usage: sparda $c" "$work/out" || fail "$c --help"
done
grep -q -- "--compute=N" <("$sparda" up --help) || fail "up --help does not describe --compute=N"

# keygen: a CURVE pair (secret 0600, never overwritten); memsvc serves tcp with the secret and
# the public key in its tcp-keys file.
expect 0 "$sparda" keygen --out "$work/node"
[ "$(stat -c %a "$work/node.secret")" = 600 ] || fail "keygen: secret key file not 0600"
[ "$(tr -d '\n' <"$work/node.public" | wc -c)" = 40 ] || fail "keygen: public key not 40 z85"
expect 1 "$sparda" keygen --out "$work/node"
grep -q "File exists" "$work/out" || fail "keygen overwrote or did not say why"
echo "default $(cat "$work/node.public")" >"$work/tcp-keys"
for try in 1 2 3 4 5; do
	rc=0
	"$sparda" up --runtime-dir "$work/kd" --metrics-port=0 --ram-budget=64M \
		--tcp="tcp://127.0.0.1:$((20000 + RANDOM % 40000))" --curve-secret="$work/node.secret" \
		--tcp-keys="$work/tcp-keys" >"$work/up.out" 2>&1 || rc=$?
	[ "$rc" = 0 ] && break
done
[ "$rc" = 0 ] || { cat "$work/up.out"; fail "memsvc with the generated CURVE keys"; }
started+=("$(cat "$work/kd/memsvc.pid")")
expect 0 "$sparda" down --runtime-dir "$work/kd"

# A daemon with a bad flag: up fails and shows why.
expect 1 "$sparda" up --runtime-dir "$dir" --no-such-key=1
grep -q "exited before it was ready" "$work/out" || fail "failed start not reported"
grep -q "no-such-key" "$work/out" || fail "the log tail does not name the bad key"
[ ! -e "$dir/memsvc.pid" ] || fail "pid file left by a failed start"

# up on a free port for /metrics (retry on a collision).
for try in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 40000))
	rc=0
	"$sparda" up --runtime-dir "$dir" --metrics-port="$port" --ram-budget=256M \
		>"$work/up.out" 2>&1 || rc=$?
	[ "$rc" = 0 ] && break
done
[ "$rc" = 0 ] || { cat "$work/up.out"; fail "sparda up"; }
pid=$(cat "$dir/memsvc.pid")
started+=("$pid")
grep -q "running: pid $pid, runtime dir $dir" "$work/up.out" || fail "up does not say where"
readlink "/proc/$pid/exe" | grep -q sparda-memsvc || fail "pid file does not name the daemon"
sid() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $4 }'; }
[ "$(sid "$pid")" != "$(sid $$)" ] || fail "the daemon is in our session (no setsid)"

expect 0 "$sparda" status --runtime-dir "$dir"
grep -q "running" "$work/out" && grep -q "pid  *$pid" "$work/out" || fail "status: running/pid"
grep -Eq "health  *ok \(ping [0-9.]+ ms\)" "$work/out" || fail "status: health"
grep -Eq "NVMe  *disabled" "$work/out" || fail "status: NVMe tier not shown disabled"
grep -Eq "^  default  *1 " "$work/out" || fail "status: tenant row"
expect 0 "$sparda" status --runtime-dir "$dir" --json
if command -v python3 >/dev/null; then
	python3 - "$work/out" "$pid" <<-'EOF' || fail "status --json"
		import json, sys
		d = json.load(open(sys.argv[1]))
		assert d["running"] and d["healthy"] and d["pid"] == int(sys.argv[2])
		assert d["stats"]["daemon.budget_bytes"] == 256 << 20 and d["ping_ms"] > 0
		t = d["tiers"]
		assert t["ram"]["budget_bytes"] == 256 << 20 and t["ram"]["arena_bytes"] > 0, t
		assert t["nvme"] == {"enabled": False}, "no spill dirs, yet: %s" % t["nvme"]
		assert d["clients"] == 0, d["clients"]
		ten = {x["name"]: x for x in d["tenants"]}
		assert ten["default"]["sessions"] == 1 and ten["default"]["bytes"] > 0, ten
		assert [(a["arena_bytes"], a["self"]) for a in d["arenas"]] == [(64 << 10, True)], \
			d["arenas"]
	EOF
fi

expect 0 "$sparda" stats --runtime-dir "$dir"
cp "$work/out" "$work/stats0"
[ "$(stat_of daemon.budget_bytes "$work/stats0")" = $((256 << 20)) ] || fail "stats: budget"
awk 'NF < 2 || $NF !~ /^[0-9.e+-]+$/ { bad = 1; print } END { exit bad }' "$work/stats0" ||
	fail "stats: a line that is not name/number"
grep -q '^sparda_memsvc_attaches_total{result="ok"}' "$work/stats0" || fail "stats: no /metrics"

# A second up refuses, by pid file and by live socket.
expect 1 "$sparda" up --runtime-dir "$dir" --metrics-port=0
grep -q "already runs in $dir (pid $pid)" "$work/out" || fail "second up: message"
mv "$dir/memsvc.pid" "$work/pid.saved"
expect 1 "$sparda" up --runtime-dir "$dir" --metrics-port=0
grep -q "already answers on $dir/attach.sock" "$work/out" || fail "up over a live socket"
mv "$work/pid.saved" "$dir/memsvc.pid"

# A compute job against it; the counters move.
expect 0 "$build/bin/sparda-compute" --runtime-dir="$dir" --modes=sparda --prompt-tokens=1100 \
	--new-tokens=4
expect 0 "$sparda" stats --runtime-dir "$dir"
cp "$work/out" "$work/stats1"
for m in 'sparda_memsvc_attaches_total{result="ok"}' 'sparda_memsvc_requests_total'; do
	a=$(metric_sum "$m" "$work/stats0")
	b=$(metric_sum "$m" "$work/stats1")
	[ "$b" -gt "$a" ] || fail "$m did not move ($a -> $b)"
done
grep -q 'client=sparda-compute' "$dir/memsvc.log" || fail "compute never attached"

# down drains; the monitor logged exit 0.
expect 0 "$sparda" down --runtime-dir "$dir"
grep -q "stopped after .* exit status 0" "$work/out" || fail "down: message"
grep -q 'msg="drained"' "$dir/memsvc.log" || fail "no drain in the log"
grep -q "msg=\"sparda-memsvc exited\" pid=$pid exit=0" "$dir/memsvc.log" || fail "exit line"
[ ! -e "$dir/memsvc.pid" ] || fail "pid file left after down"
! kill -0 "$pid" 2>/dev/null || fail "daemon still alive"
expect 3 "$sparda" status --runtime-dir "$dir"
grep -q "not running" "$work/out" || fail "status after down"
expect 1 "$sparda" stats --runtime-dir "$dir"
expect 1 "$sparda" down --runtime-dir "$dir"
grep -q "nothing runs in $dir" "$work/out" || fail "second down: message"

# Stale pid files: a live process that is not the daemon, then garbage.
echo $$ >"$dir/memsvc.pid"
expect 3 "$sparda" status --runtime-dir "$dir"
grep -q "stale pid file: pid $$" "$work/out" || fail "status: stale pid file"
expect 1 "$sparda" down --runtime-dir "$dir"
grep -q "stale pid file .* removed it" "$work/out" || fail "down: stale pid file"
[ ! -e "$dir/memsvc.pid" ] || fail "stale pid file not removed"
echo garbage >"$dir/memsvc.pid"
expect 1 "$sparda" down --runtime-dir "$dir"
grep -q "unreadable pid file" "$work/out" || fail "down: unreadable pid file"

# up over a stale pid file; a stopped daemon is killed after the timeout, and down says so.
echo $$ >"$dir/memsvc.pid"
expect 0 "$sparda" up --runtime-dir "$dir" --metrics-port=0 --ram-budget=64M
grep -q "removing stale pid file" "$work/out" || fail "up: stale pid file not mentioned"
pid=$(cat "$dir/memsvc.pid")
started+=("$pid")
[ "$pid" != $$ ] || fail "up kept the stale pid"
kill -STOP "$pid"
expect 1 "$sparda" down --runtime-dir "$dir" --timeout-ms 300
grep -q "did not exit within 300 ms of SIGTERM; sent SIGKILL" "$work/out" || fail "SIGKILL note"
grep -q "killed after" "$work/out" || fail "down: killed"
! kill -0 "$pid" 2>/dev/null || fail "stopped daemon survives"
grep -q "pid=$pid signal=9" "$dir/memsvc.log" || fail "monitor did not log the SIGKILL"

# A daemon with a small RAM budget and a spill dir: compute's 1 MiB arena holds less than the
# tiny model's KV, so units go to disk. status, polled while compute runs, shows the tenant's
# and the arena's units on disk; afterwards the NVMe tier's counters. Each poll holds compute
# with SIGSTOP while it looks, so a loaded machine sees the same state as an idle one: the units
# stay on disk from the first spill (its prompt already spills) until compute's session ends,
# after 160 decode steps.
dir2=$work/run2
mkdir -p "$work/spill"
expect 0 "$sparda" up --runtime-dir "$dir2" --metrics-port=0 --ram-budget=16M \
	--spill-dirs="$work/spill" --spill-bytes=256M
pid2=$(cat "$dir2/memsvc.pid")
started+=("$pid2")
"$build/bin/sparda-compute" --runtime-dir="$dir2" --modes=sparda --arena-bytes=1M \
	--new-tokens=160 >"$work/compute2.out" 2>&1 &
cpid=$!
seen=""
while [ -z "$seen" ] && kill -STOP "$cpid" 2>/dev/null; do
	"$sparda" status --runtime-dir "$dir2" --json >"$work/poll.json" 2>&1 || true
	if python3 - "$work/poll.json" <<-'EOF' 2>/dev/null; then
		import json, sys
		d = json.load(open(sys.argv[1]))
		t = {x["name"]: x for x in d["tenants"]}["default"]
		a = [x for x in d["arenas"] if x["arena_bytes"] == 1 << 20 and not x["self"]]
		sys.exit(not (d["clients"] == 1 and t["sessions"] == 2 and t["units_spilled"] > 0 and
			      t["disk_bytes"] > 0 and a and a[0]["units_spilled"] > 0 and
			      a[0]["slots_used"] > 0))
	EOF
		seen=1
	fi
	kill -CONT "$cpid" 2>/dev/null || true
	sleep 0.05
done
wait "$cpid" || { tail -5 "$work/compute2.out"; fail "compute against the spilling daemon"; }
[ -n "$seen" ] || { cat "$work/poll.json"; fail "status never showed compute's units on disk"; }
expect 0 "$sparda" status --runtime-dir "$dir2" --json
python3 - "$work/out" "$work/spill" <<-'EOF' || { cat "$work/out"; fail "status --json: NVMe"; }
	import json, sys
	d = json.load(open(sys.argv[1]))
	n = d["tiers"]["nvme"]
	assert n["enabled"] and n["dirs"] == [sys.argv[2]] and n["aio"] in ("uring", "sync"), n
	assert n["units_spilled"] > 0 and n["units_restored"] > 0 and n["bytes_spilled"] > 0, n
	assert n["bytes_cap"] == 256 << 20 and not n["degraded"], n
	assert n["crc_failures"] == 0 and n["io_errors"] == 0 and n["restore_misses"] == 0, n
	assert d["tiers"]["ram"]["budget_bytes"] == 16 << 20
	t = {x["name"]: x for x in d["tenants"]}["default"]
	assert t["sessions"] == 1 and t["units_spilled"] == 0, t  # compute's session has ended
EOF
expect 0 "$sparda" status --runtime-dir "$dir2"
grep -Eq "NVMe  *enabled, aio (uring|sync), dirs $work/spill" "$work/out" || fail "status: NVMe"
grep -Eq "units  *spilled [1-9][0-9]* " "$work/out" || fail "status: units spilled"
expect 0 "$sparda" down --runtime-dir "$dir2"
[ -z "$(ls -A "$work/spill")" ] || fail "spill files left after down: $(ls "$work/spill")"

# A full spill disk (every spill write fails with ENOSPC, through memsvc's test fault hook): the
# tier went RAM-only, which status counts; compute's own fate (ENOSPC of its tiny arena) aside.
SPARDA_MEMSVC_TEST_AIO_FAULT="action=errno,match=write,err=ENOSPC" \
	expect 0 "$sparda" up --runtime-dir "$dir2" --metrics-port=0 --ram-budget=16M \
	--spill-dirs="$work/spill" --spill-backoff-ms=600000
started+=("$(cat "$dir2/memsvc.pid")")
"$build/bin/sparda-compute" --runtime-dir="$dir2" --modes=sparda --arena-bytes=1M \
	--new-tokens=8 >"$work/compute3.out" 2>&1 || true
expect 0 "$sparda" status --runtime-dir "$dir2" --json
python3 - "$work/out" <<-'EOF' || { cat "$work/out"; fail "status --json: ENOSPC"; }
	import json, sys
	n = json.load(open(sys.argv[1]))["tiers"]["nvme"]
	assert n["enabled"] and n["enospc_events"] > 0 and n["degraded_entries"] > 0, n
	assert n["spill_failures"] > 0 and n["units_spilled"] == 0 and n["recoveries"] == 0, n
EOF
expect 0 "$sparda" status --runtime-dir "$dir2"
grep -Eq "degraded .*[1-9][0-9]* entries, 0 recoveries, [1-9][0-9]* ENOSPC" "$work/out" ||
	fail "status: ENOSPC not shown"
expect 0 "$sparda" down --runtime-dir "$dir2"

# config --dump of both processes, flags applied; a bad key fails.
expect 0 "$sparda" config --dump memsvc --ram-budget=3G --log-level=warn
grep -Eq '^ram-budget *= *"?3(G|221225472)' "$work/out" || fail "config memsvc: ram-budget"
grep -Eq '^log-level *= *"?warn' "$work/out" || fail "config memsvc: log-level"
grep -q '^drain-timeout-ms' "$work/out" || fail "config memsvc: keys"
expect 0 "$sparda" config --dump compute --new-tokens=7
grep -Eq '^new-tokens *= *"?7' "$work/out" || fail "config compute: new-tokens"
grep -q '^modes' "$work/out" || fail "config compute: keys"
expect 2 "$sparda" config --dump memsvc --no-such-key=1
expect 2 "$sparda" config --dump nothing
# sparda run hands --memsvc-arg to the daemon it starts: a budget below the arena makes sparda
# fall back, naming the budget; a flag memsvc refuses stops the job with the daemon's reason.
expect 0 "$sparda" run --memsvc-arg=--ram-budget=1M --prompt-tokens=1100 --new-tokens=2 \
	--modes=sparda
grep -q "fell back to sparda-nooffload: .*exceeds the daemon's RAM budget (0 of 1048576 used" \
	"$work/out" || { cat "$work/out"; fail "run --memsvc-arg: budget not applied"; }
expect 1 "$sparda" run --memsvc-arg --no-such-key=1 --modes=sparda
grep -q "sparda-memsvc exited before it was ready" "$work/out" &&
	grep -q "unknown key no-such-key" "$work/out" ||
	{ cat "$work/out"; fail "run --memsvc-arg: bad flag"; }
expect 2 "$sparda" run --memsvc-arg
grep -q -- "--memsvc-arg needs a value" "$work/out" || fail "run --memsvc-arg without a value"
echo "ops cli: up, status (tiers, tenants, arenas), stats, down, stale pid files, config" \
	"--dump and run --memsvc-arg behave"
