#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# deploy/slurm end to end on a one-node Slurm cluster on localhost: munged, slurmctld and slurmd
# as plain background daemons (config, key, state and sockets in a temp dir), with the recipe's
# prolog and epilog and ONE sparda-memsvc for the node, started before any job. The prolog and
# epilog alone first: they add and remove job tenants in the node's tenants file and reload the
# daemon (also concurrently, and with a bad file the daemon refuses). Then sparda-job.sbatch on
# the CPU backend: (1) two "GPUs" (two compute processes) as the job's tenant, (2) an arena over
# the prolog's quota fails with EDQUOT, (3) a job cancelled mid-run. After each the epilog has
# removed the tenant and the node's daemon runs on. Exits 77 only when Slurm or munge is not
# installed or cannot start here.
set -uo pipefail
src=${SPARDA_SOURCE_DIR:?SPARDA_SOURCE_DIR not set}
build=${SPARDA_BUILD_DIR:?SPARDA_BUILD_DIR not set}
for b in sparda sparda-memsvc sparda-compute; do
	[ -x "$build/bin/$b" ] || { echo "FAIL: $build/bin/$b not built"; exit 1; }
done
for t in munged munge slurmctld slurmd sbatch squeue scontrol scancel python3; do
	command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done

# shellcheck disable=SC2046 # a job's variables (if the test itself runs under Slurm) must go
unset $(compgen -e | grep '^SLURM_') 2>/dev/null || true
tmp=$(mktemp -d /tmp/sparda-slurm.XXXXXX)
chmod 0711 "$tmp" # munged wants every directory above its socket searchable
me=$(id -un)
myuid=$(id -u)
export SLURM_CONF=$tmp/etc/slurm.conf
export SPARDA_SLURM_CONF=$tmp/etc/sparda-slurm.conf
mkdir -p "$tmp"/{etc,munge,state,spool,log,out,node}
chmod 0700 "$tmp/munge"

pid_of() { [ -r "$1" ] && cat "$1" 2>/dev/null; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() { # PID: SIGTERM, 5 s, SIGKILL
	alive "$1" || return 0
	kill -TERM "$1" 2>/dev/null
	for _ in $(seq 50); do alive "$1" || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null
}
our_memsvcs() { # sparda-memsvc processes serving a runtime dir under $tmp
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q "sparda-memsvc.*--runtime-dir=$tmp/" &&
			echo "${p#/proc/}"
	done
}
cleanup() {
	local j p
	if alive "$(pid_of "$tmp/state/slurmctld.pid")"; then
		for j in $(timeout 5 squeue -h -o %i 2>/dev/null); do timeout 5 scancel "$j" 2>/dev/null; done
		for _ in $(seq 50); do [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
		timeout 10 scontrol shutdown >/dev/null 2>&1
	fi
	for p in "$tmp/state/slurmd.pid" "$tmp/state/slurmctld.pid" "$tmp/munge/munged.pid"; do
		stop_pid "$(pid_of "$p")"
	done
	for p in $(our_memsvcs); do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	for f in "$tmp"/log/*.log "$tmp"/out/*; do [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }; done
	exit 1
}
skip() { echo "SKIP: $*"; tail -5 "$tmp"/log/*.log "$tmp"/munge/*.log 2>/dev/null; exit 77; }

# ---- the node's tenants file, prolog and epilog alone (as Slurm calls them) -----------------
tenants=$tmp/node/tenants
rt=$tmp/node/rt
nlog=$tmp/log/node-memsvc.log
cat >"$SPARDA_SLURM_CONF" <<EOF
SPARDA_PREFIX=$build
SPARDA_NODE_RUNTIME_DIR=$rt
SPARDA_NODE_TENANTS=$tenants
SPARDA_JOB_QUOTA=256M
SPARDA_JOB_QUOTA_PER_GPU=1G
SPARDA_JOB_TENANT_ATTRS="max-sessions=4"
EOF
echo "ops uid=$myuid quota=16M" >"$tenants"
prolog() { SLURM_JOB_ID=$1 SLURM_JOB_UID=$myuid "$src/deploy/slurm/prolog.sh"; }
epilog() { SLURM_JOB_ID=$1 SLURM_JOB_UID=$myuid "$src/deploy/slurm/epilog.sh"; }
has_line() { grep -q "^job$1 " "$tenants"; }
count() { grep -c "$1" "$nlog"; }

# No daemon yet: the prolog still writes the line (the daemon reads it when it starts).
prolog 900 2>"$tmp/log/prolog900.err" || fail "prolog without a daemon: exit $?"
has_line 900 || fail "prolog without a daemon wrote no line"
epilog 900 2>/dev/null || fail "epilog without a daemon: exit $?"
! has_line 900 || fail "epilog without a daemon left the line"

# The node's daemon (systemd would run it), with /metrics on a free port.
mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
"$build/bin/sparda-memsvc" --runtime-dir="$rt" --tenants="$tenants" --metrics-port="$mport" \
	2>"$nlog" &
npid=$!
for _ in $(seq 100); do [ -S "$rt/attach.sock" ] && break; sleep 0.1; done
[ -S "$rt/attach.sock" ] || fail "the node's sparda-memsvc did not start"

SLURM_JOB_ID=901 SLURM_JOB_UID=$myuid SLURM_JOB_GPUS=2,3 "$src/deploy/slurm/prolog.sh" \
	>/dev/null || fail "prolog exit $?"
grep -qx "job901 uid=$myuid quota=2147483648 max-sessions=4" "$tenants" ||
	fail "prolog tenants line: $(cat "$tenants")"
grep -q "tenants reloaded.* tenants=2 added=1 " "$nlog" || fail "prolog did not reload the daemon"
SLURM_JOB_ID=902 SLURM_JOB_UID=abc "$src/deploy/slurm/prolog.sh" 2>/dev/null &&
	fail "prolog accepted a non-numeric uid"
# Jobs start together: the lock keeps every line.
bg=()
for j in 903 904 905 906; do prolog $j >/dev/null & bg+=($!); done
wait "${bg[@]}"
for j in 901 903 904 905 906; do has_line $j || fail "concurrent prologs lost job$j"; done
grep -q "tenants reloaded.* tenants=6 " "$nlog" || fail "the daemon never saw all six tenants"
bg=()
for j in 901 903 904 905 906; do epilog $j >/dev/null & bg+=($!); done
wait "${bg[@]}"
[ "$(cat "$tenants")" = "ops uid=$myuid quota=16M" ] || fail "epilogs left: $(cat "$tenants")"
grep -q "tenants reloaded.* tenants=1 .*removed=1" "$nlog" || fail "epilog did not reload"
# A file the daemon refuses (a site edit gone wrong): the prolog fails and takes its line out.
echo "broken uid=$myuid" >>"$tenants"
prolog 907 2>"$tmp/log/prolog907.err" >/dev/null && fail "prolog succeeded on a refused file"
grep -q "refused" "$tmp/log/prolog907.err" || fail "prolog did not say the file was refused"
! has_line 907 || fail "prolog left job907 after the refusal"
grep -q "line 2: tenant broken: missing quota=" "$nlog" || fail "the daemon's log: no bad line"
sed -i '/^broken /d' "$tenants"
"$build/bin/sparda" reload --runtime-dir="$rt" >/dev/null || fail "sparda reload after the fix"
echo "ok: prolog and epilog add and remove job tenants through reload (alone, concurrent, refused)"

# ---- munge ----------------------------------------------------------------------------------
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$tmp/munge/munge.key"
chmod 0711 "$tmp/munge"
munged --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
	--pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" \
	--seed-file="$tmp/munge/munged.seed" || skip "munged cannot start here"
munge -S "$tmp/munge/munge.sock" -n | unmunge -S "$tmp/munge/munge.sock" >/dev/null ||
	skip "munge cannot encode/decode here"

# ---- slurm.conf -----------------------------------------------------------------------------
read -r ctld_port slurmd_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
node=$(hostname -s)
for s in prolog epilog; do # Slurm runs them with its own environment: name the site config
	printf '#!/bin/sh\nSPARDA_SLURM_CONF=%s exec %s "$@"\n' "$SPARDA_SLURM_CONF" \
		"$src/deploy/slurm/$s.sh" >"$tmp/etc/$s"
	chmod 0755 "$tmp/etc/$s"
done
cat >"$SLURM_CONF" <<EOF
ClusterName=spardatest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$me
SlurmdUser=$me
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/state/slurmctld.pid
SlurmdPidFile=$tmp/state/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmdTimeout=30
Prolog=$tmp/etc/prolog
Epilog=$tmp/etc/epilog
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$SPARDA_SLURM_CONF" <<EOF
SPARDA_PREFIX=$build
SPARDA_NODE_RUNTIME_DIR=$rt
SPARDA_NODE_TENANTS=$tenants
SPARDA_JOB_QUOTA=256M
EOF

# ---- daemons --------------------------------------------------------------------------------
slurmctld -i >"$tmp/log/slurmctld.out" 2>&1 || skip "slurmctld cannot start here"
slurmd -N "$node" >"$tmp/log/slurmd.out" 2>&1 || skip "slurmd cannot start here"
up=""
for _ in $(seq 150); do
	state=$(sinfo -h -n "$node" -o %T 2>/dev/null)
	case "$state" in idle*) up=1; break ;; esac
	sleep 0.2
done
[ -n "$up" ] || skip "the node did not come up (state '${state:-none}')"
echo "ok: slurm up on $node (ctld port $ctld_port)"

# ---- jobs -----------------------------------------------------------------------------------
submit() { # extra sbatch/compute args; prints the job id
	sbatch --parsable --export=ALL --output="$tmp/out/%j.out" "$@"
}
job_field() { # ID KEY
	scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
wait_job() { # ID TIMEOUT_S: waits until the job is done and its epilog ran
	local s
	for _ in $(seq $(($2 * 5))); do
		s=$(job_field "$1" JobState)
		case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY)
			# COMPLETING (epilog running) is over once the node has no job on it.
			[ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && { echo "$s"; return 0; } ;;
		esac
		sleep 0.2
	done
	echo "TIMEOUT_WAITING($s)"
}
check_cleaned() { # ID: the epilog removed the tenant; the node's daemon is the only one, alive
	! has_line "$1" || fail "job $1: epilog left its tenant line"
	[ "$(our_memsvcs)" = "$npid" ] || fail "job $1: memsvc processes '$(our_memsvcs)'"
	grep -q "tenants reloaded.* tenants=1 .*removed=1" "$nlog" || fail "job $1: no reload"
}
compute_args=(--prompt-tokens=512 --new-tokens=8 --threads=1)
export SPARDA_COMPUTE_BACKEND=cpu SPARDA_JOB_OUT=$tmp/out

# (1) two GPUs (CUDA_VISIBLE_DEVICES=0,1 as Slurm sets it): two compute processes, one memsvc.
id1=$(CUDA_VISIBLE_DEVICES=0,1 submit "$src/deploy/slurm/sparda-job.sbatch" "${compute_args[@]}") ||
	fail "sbatch"
st=$(wait_job "$id1" 60)
[ "$st" = COMPLETED ] || fail "job $id1: $st (exit $(job_field "$id1" ExitCode))"
[ "$(job_field "$id1" ExitCode)" = 0:0 ] || fail "job $id1 exit $(job_field "$id1" ExitCode)"
grep -q "tenant: job$id1 uid=$myuid quota=268435456$" "$tmp/out/$id1.out" ||
	fail "job $id1 did not see the prolog's tenant line"
# Both ran the sparda mode through memsvc (no fallback: bytes moved host->device), same tokens.
python3 - "$tmp/out/sparda-$id1-0.json" "$tmp/out/sparda-$id1-1.json" <<'PY' ||
import json, sys
r = [json.load(open(f))["sparda"] for f in sys.argv[1:]]
for x in r:
    assert x["ran"] == "sparda" and x["backend"] == "cpu", x["ran"]
    assert x["bytes_h2d"] > 0 and x["decode_tokens"] > 0, x
assert r[0]["tokens"] == r[1]["tokens"] and len(r[0]["tokens"][0]) == 8, r[0]["tokens"]
PY
	fail "job $id1: compute results"
[ "$(count "session attached.*tenant=job$id1 ")" = 2 ] ||
	fail "job $id1: the node's memsvc did not see two sessions of tenant job$id1"
check_cleaned "$id1"
echo "ok: job $id1: prolog tenant, two compute processes on the node's memsvc, epilog removal"

# (2) an arena larger than the tenant's quota: the job's memsvc refuses it (EDQUOT).
id2=$(submit "$src/deploy/slurm/sparda-job.sbatch" "${compute_args[@]}" --arena-bytes=512M) ||
	fail "sbatch"
st=$(wait_job "$id2" 60)
[ "$st" = FAILED ] || fail "job $id2 over quota: $st (expected FAILED)"
grep -q "attach.*EDQUOT" "$tmp/out/$id2.out" || fail "job $id2: no EDQUOT from the quota"
check_cleaned "$id2"
echo "ok: job $id2: over the prolog's quota fails with EDQUOT; epilog clean-up"

# (3) cancelled while compute runs: the epilog stops what is left and removes the tenant.
id3=$(submit "$src/deploy/slurm/sparda-job.sbatch" --prompt-tokens=512 --new-tokens=50000 \
	--threads=1) || fail "sbatch"
attached() { grep -q "session attached.*tenant=job$id3 " "$nlog"; }
for _ in $(seq 150); do attached && break; sleep 0.2; done
attached || fail "job $id3: compute never attached to the node's memsvc"
scancel "$id3"
st=$(wait_job "$id3" 60)
[ "$st" = CANCELLED ] || fail "job $id3: $st (expected CANCELLED)"
check_cleaned "$id3"
grep -q "session closed.*tenant=job$id3 " "$nlog" || fail "job $id3: its session never closed"
echo "ok: job $id3: cancelled mid-run; its session closed, epilog removal"

# The reload counters, then the node's daemon drains as systemd would stop it.
python3 - "$mport" <<'PY' || fail "reload metrics"
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/metrics"
m = {}
for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
    if line and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
ok = m["sparda_memsvc_tenant_reloads_total"]
bad = m["sparda_memsvc_tenant_reload_failures_total"]
assert ok >= 15 and bad >= 1, (ok, bad)
assert m["sparda_memsvc_tenants"] == 1, m["sparda_memsvc_tenants"]
PY
kill -TERM "$npid"
wait "$npid" || fail "the node's memsvc exit $?"
grep -q drained "$nlog" || fail "the node's memsvc did not drain"
echo PASS
