#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Slurm Epilog (slurm.conf: Epilog=/etc/sparda/slurm/epilog.sh): runs as root on each node when
# a job ends (completed, failed or cancelled). Removes the job's tenant line from the node's
# tenants file and makes the node's sparda-memsvc reload it: the tenant then refuses new
# sessions; a session of the job still open (a process Slurm has not reaped yet) runs on until
# it closes. Exits 0 unless the arguments are bad: a failing epilog drains the node.
set -uo pipefail
# shellcheck source=deploy/slurm/job-tenant.sh
. "$(dirname "$(readlink -f "$0")")/job-tenant.sh"
id=${SLURM_JOB_ID:?epilog: SLURM_JOB_ID not set}
case "$id" in '' | *[!0-9]*) echo "epilog: bad job id '$id'" >&2; exit 1 ;; esac
job_tenant_set "$id" || echo "epilog: job$id's tenant may still be loaded in sparda-memsvc" >&2
exit 0
