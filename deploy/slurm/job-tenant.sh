# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Sourced by prolog.sh and epilog.sh: edit the job's line in the per-node tenants file and make
# the node's sparda-memsvc reload it. Edits are serialized by flock on $tenants.lock (jobs start
# and end concurrently) and replace the file atomically (temp file + rename), so the daemon
# never reads half a file. Only lines `job<id> ...` are touched; the site's own lines stay.
conf=${SPARDA_SLURM_CONF:-/etc/sparda/slurm.conf}
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"
prefix=${SPARDA_PREFIX:-/usr/local}
tenants=${SPARDA_NODE_TENANTS:-/etc/sparda/tenants}
rt=${SPARDA_NODE_RUNTIME_DIR:-/run/sparda}

# tenants_write ID [LINE]: the file without job<ID>'s line, plus LINE when given. Lock held.
tenants_write() {
	local tmp
	tmp=$(mktemp "$tenants.XXXXXX") || return 1
	if [ -e "$tenants" ]; then
		grep -v "^job$1[[:space:]]" "$tenants" >"$tmp"
		[ $? -le 1 ] || { rm -f "$tmp"; return 1; }
	fi
	[ -z "${2:-}" ] || printf '%s\n' "$2" >>"$tmp"
	if ! chmod 0644 "$tmp" || ! mv -f "$tmp" "$tenants"; then
		rm -f "$tmp"
		return 1
	fi
}

# tenants_reload: 0 reloaded or no daemon runs (it reads the file when it starts); 1 refused.
tenants_reload() {
	local rc=0
	"$prefix/bin/sparda" reload --runtime-dir="$rt" || rc=$?
	case $rc in
	0) return 0 ;;
	3) echo "sparda: no sparda-memsvc serves $rt; it will read $tenants when it starts" >&2
	   return 0 ;;
	*) return 1 ;;
	esac
}

# job_tenant_set ID [LINE]: set (LINE) or remove (no LINE) the job's tenant and reload. When the
# daemon refuses the new file the job's line is taken out again (and reloaded): returns 1.
job_tenant_set() {
	(
		flock -w 60 9 || { echo "sparda: cannot lock $tenants.lock" >&2; exit 1; }
		tenants_write "$1" "${2:-}" || { echo "sparda: cannot write $tenants" >&2; exit 1; }
		tenants_reload && exit 0
		echo "sparda: sparda-memsvc refused $tenants; job$1 not applied" >&2
		[ -z "${2:-}" ] || { tenants_write "$1" && tenants_reload; }
		exit 1
	) 9>>"$tenants.lock"
}
