#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Slurm Prolog (slurm.conf: Prolog=/etc/sparda/slurm/prolog.sh): runs as root on each node of a
# job before it starts. Creates the job's SparDA tenant: $SPARDA_JOB_BASE/job<id>/tenants with
# the one line `job<id> uid=<uid> quota=<bytes>` (root-owned, read-only to the job), and the
# runtime dir $SPARDA_JOB_BASE/job<id>/rt owned by the job's user. sparda-memsvc reads its
# tenants file only at start (it has no reload), so the job's own memsvc is started on it by
# sparda-job.sbatch; the arenas it pre-faults are charged to the job's memory cgroup.
# A non-zero exit makes Slurm drain the node and requeue the job: fail only on real errors.
set -euo pipefail
conf=${SPARDA_SLURM_CONF:-/etc/sparda/slurm.conf}
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"
base=${SPARDA_JOB_BASE:-/run/sparda-jobs}
id=${SLURM_JOB_ID:?prolog: SLURM_JOB_ID not set}
uid=${SLURM_JOB_UID:?prolog: SLURM_JOB_UID not set}
case "$id$uid" in *[!0-9]*) echo "prolog: bad job id '$id' or uid '$uid'" >&2; exit 1 ;; esac
gid=${SLURM_JOB_GID:-$(getent passwd "$uid" | cut -d: -f4)}
gid=${gid:-$uid}

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

dir=$base/job$id
install -d -m 0755 "$base"
rm -rf "$dir"
mkdir -m 0755 "$dir"
mkdir -m 0700 "$dir/rt"
chown "$uid:$gid" "$dir/rt"
line="job$id uid=$uid quota=$quota"
[ -z "${SPARDA_JOB_TENANT_ATTRS:-}" ] || line="$line $SPARDA_JOB_TENANT_ATTRS"
printf '%s\n' "$line" >"$dir/tenants.new"
chmod 0644 "$dir/tenants.new"
mv "$dir/tenants.new" "$dir/tenants"
