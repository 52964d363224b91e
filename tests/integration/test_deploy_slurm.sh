#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# deploy/slurm end to end on a one-node Slurm cluster on localhost: munged, slurmctld and slurmd
# as plain background daemons (config, key, state and sockets in a temp dir), with the recipe's
# prolog and epilog. Runs sparda-job.sbatch on the CPU backend: (1) two "GPUs" (two compute
# processes) on the job's memsvc and tenant, (2) an arena over the prolog's quota fails with
# EDQUOT, (3) a job cancelled mid-run. After each: the epilog removed the tenant and no memsvc
# is left. Exits 77 only when Slurm or munge is not installed or cannot start here.
set -uo pipefail
src=${SPARDA_SOURCE_DIR:?SPARDA_SOURCE_DIR not set}
build=${SPARDA_BUILD_DIR:?SPARDA_BUILD_DIR not set}
for b in sparda-memsvc sparda-compute; do
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
mkdir -p "$tmp"/{etc,munge,state,spool,log,out,jobs}
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

# ---- prolog and epilog alone (as Slurm calls them, without Slurm) ----------------------------
cat >"$SPARDA_SLURM_CONF" <<EOF
SPARDA_PREFIX=$build
SPARDA_JOB_BASE=$tmp/jobs
SPARDA_JOB_QUOTA=256M
SPARDA_JOB_QUOTA_PER_GPU=1G
SPARDA_JOB_TENANT_ATTRS="max-sessions=4"
EOF
SLURM_JOB_ID=901 SLURM_JOB_UID=$myuid SLURM_JOB_GPUS=2,3 "$src/deploy/slurm/prolog.sh" ||
	fail "prolog exit $?"
[ "$(cat "$tmp/jobs/job901/tenants")" = "job901 uid=$myuid quota=2147483648 max-sessions=4" ] ||
	fail "prolog tenants line: $(cat "$tmp/jobs/job901/tenants")"
[ "$(stat -c %a:%u "$tmp/jobs/job901/rt")" = "700:$myuid" ] || fail "prolog rt dir mode/owner"
SLURM_JOB_ID=902 SLURM_JOB_UID=abc "$src/deploy/slurm/prolog.sh" 2>/dev/null &&
	fail "prolog accepted a non-numeric uid"
# A memsvc that escaped the job's process group (setsid): the epilog finds it and stops it.
setsid "$build/bin/sparda-memsvc" --runtime-dir="$tmp/jobs/job901/rt" \
	--tenants="$tmp/jobs/job901/tenants" --metrics-port=0 2>"$tmp/log/escaped-memsvc.log" &
for _ in $(seq 100); do [ -S "$tmp/jobs/job901/rt/attach.sock" ] && break; sleep 0.1; done
[ -S "$tmp/jobs/job901/rt/attach.sock" ] || fail "memsvc on the prolog's tenants did not start"
SLURM_JOB_ID=901 SLURM_JOB_UID=$myuid "$src/deploy/slurm/epilog.sh" || fail "epilog exit $?"
[ -z "$(our_memsvcs)" ] || fail "epilog left memsvc $(our_memsvcs)"
grep -q drained "$tmp/log/escaped-memsvc.log" || fail "epilog did not let memsvc drain (SIGTERM)"
[ ! -e "$tmp/jobs/job901" ] || fail "epilog left $tmp/jobs/job901"
echo "ok: prolog (quota per GPU, attrs, rt owner) and epilog (stops an escaped memsvc, cleans)"

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
SPARDA_JOB_BASE=$tmp/jobs
SPARDA_JOB_QUOTA=256M
SPARDA_JOB_METRICS_PORT=0
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
check_cleaned() { # ID
	[ ! -e "$tmp/jobs/job$1" ] || fail "job $1: epilog left $tmp/jobs/job$1"
	[ -z "$(our_memsvcs)" ] || fail "job $1: a sparda-memsvc is still running: $(our_memsvcs)"
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
grep -c "session attached.*tenant=job$id1 " "$tmp/out/sparda-$id1-memsvc.log" | grep -qx 2 ||
	fail "job $id1: memsvc did not see two sessions of tenant job$id1"
grep -q "tenants=1" "$tmp/out/sparda-$id1-memsvc.log" || fail "job $id1: memsvc tenants"
grep -q "drained" "$tmp/out/sparda-$id1-memsvc.log" || fail "job $id1: memsvc did not drain"
check_cleaned "$id1"
echo "ok: job $id1: prolog tenant, memsvc, two compute processes, drain, epilog clean-up"

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
attached() { grep -q "session attached" "$tmp/out/sparda-$id3-memsvc.log" 2>/dev/null; }
for _ in $(seq 150); do attached && break; sleep 0.2; done
attached || fail "job $id3: compute never attached to its memsvc"
[ -n "$(our_memsvcs)" ] || fail "job $id3: no memsvc while running"
scancel "$id3"
st=$(wait_job "$id3" 60)
[ "$st" = CANCELLED ] || fail "job $id3: $st (expected CANCELLED)"
check_cleaned "$id3"
echo "ok: job $id3: cancelled mid-run; epilog clean-up"
echo PASS
