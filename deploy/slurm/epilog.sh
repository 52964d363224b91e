#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Slurm Epilog (slurm.conf: Epilog=/etc/sparda/slurm/epilog.sh): runs as root on each node when
# a job ends (completed, failed or cancelled). Stops a sparda-memsvc of the job that is still
# running (SIGTERM, which drains, then SIGKILL), then removes the job's tenant and runtime dir.
# Processes are found by owner uid and their --runtime-dir, never by a user-writable pid file.
set -uo pipefail
conf=${SPARDA_SLURM_CONF:-/etc/sparda/slurm.conf}
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"
base=${SPARDA_JOB_BASE:-/run/sparda-jobs}
id=${SLURM_JOB_ID:?epilog: SLURM_JOB_ID not set}
uid=${SLURM_JOB_UID:?epilog: SLURM_JOB_UID not set}
case "$id$uid" in *[!0-9]*) echo "epilog: bad job id '$id' or uid '$uid'" >&2; exit 1 ;; esac
dir=$base/job$id

job_memsvcs() { # pids of sparda-memsvc owned by the job's uid serving $dir/rt
	local p cmd
	for p in /proc/[0-9]*; do
		[ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] || continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		case "$cmd" in
		*sparda-memsvc*"--runtime-dir=$dir/rt "*) echo "${p#/proc/}" ;;
		esac
	done
}

pids=$(job_memsvcs)
if [ -n "$pids" ]; then
	kill -TERM $pids 2>/dev/null
	for _ in $(seq 100); do # the drain is bounded by --drain-timeout-ms (default 5 s)
		pids=$(job_memsvcs)
		[ -z "$pids" ] && break
		sleep 0.1
	done
	[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
fi
rm -rf "$dir"
exit 0
