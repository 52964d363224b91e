#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Slurm Prolog (slurm.conf: Prolog=/etc/sparda/slurm/prolog.sh): runs as root on each node of a
# job before it starts. Adds the job's SparDA tenant `job<id> uid=<uid> quota=<bytes> [attrs]`
# to the node's tenants file ($SPARDA_NODE_TENANTS) and makes the node's sparda-memsvc (serving
# $SPARDA_NODE_RUNTIME_DIR) reload it, so the job can attach as job<id> when it starts.
# A non-zero exit makes Slurm drain the node and requeue the job: fail only on real errors (a
# bad argument, an unwritable file, a daemon that refuses the file). No daemon running is not
# one: it reads the file when it starts.
set -euo pipefail
# shellcheck source=deploy/slurm/job-tenant.sh
. "$(dirname "$(readlink -f "$0")")/job-tenant.sh"
id=${SLURM_JOB_ID:?prolog: SLURM_JOB_ID not set}
uid=${SLURM_JOB_UID:?prolog: SLURM_JOB_UID not set}
case "$id$uid" in *[!0-9]*) echo "prolog: bad job id '$id' or uid '$uid'" >&2; exit 1 ;; esac

to_bytes() { # 64G -> 68719476736
	local v=$1 m=1
	case "$v" in
	*[kK]) m=$((1 << 10)) ;; *[mM]) m=$((1 << 20)) ;; *[gG]) m=$((1 << 30)) ;;
	*[tT]) m=$((1 << 40)) ;;
	esac
	v=${v%[kKmMgGtT]}
	case "$v" in '' | *[!0-9]*) echo "prolog: bad size '$1'" >&2; return 1 ;; esac
	echo $((v * m))
}

quota=$(to_bytes "${SPARDA_JOB_QUOTA:-64G}")
# SLURM_JOB_GPUS: the job's GPU indices on this node (comma list), when it asked for GPUs.
if [ -n "${SPARDA_JOB_QUOTA_PER_GPU:-}" ] && [ -n "${SLURM_JOB_GPUS:-}" ]; then
	n=$(tr ',' '\n' <<<"$SLURM_JOB_GPUS" | grep -c .)
	quota=$(($(to_bytes "$SPARDA_JOB_QUOTA_PER_GPU") * n))
fi
line="job$id uid=$uid quota=$quota"
[ -z "${SPARDA_JOB_TENANT_ATTRS:-}" ] || line="$line $SPARDA_JOB_TENANT_ATTRS"
job_tenant_set "$id" "$line"
