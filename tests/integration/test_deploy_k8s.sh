#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# deploy/k8s: the manifests pass deploy/k8s/validate.py (API models of python3-kubernetes), and
# deliberately broken copies fail it (misspelled keys, wrong types, a missing required field,
# a mount of no volume, a bad quantity, an undefined ConfigMap). The ConfigMaps' keys are
# variables the daemons know, their values and the containers' flags are accepted by the real
# binaries, the probes point at memsvc's metrics port, and the spill directory memsvc is told
# to use is the hostPath volume the DaemonSet mounts. Exits 77 only when no python3 with
# the kubernetes and yaml modules is installed.
set -euo pipefail
src=${SPARDA_SOURCE_DIR:?SPARDA_SOURCE_DIR not set}
bin=${SPARDA_BUILD_DIR:?SPARDA_BUILD_DIR not set}/bin
k8s=$src/deploy/k8s
py=""
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null && "$p" -c 'import kubernetes, yaml' 2>/dev/null; then
		py=$p
		break
	fi
done
[ -n "$py" ] || { echo "SKIP: no python3 with the kubernetes and yaml modules"; exit 77; }
for b in sparda-memsvc sparda-compute; do
	[ -x "$bin/$b" ] || { echo "FAIL: $bin/$b not built"; exit 1; }
done
tmp=$(mktemp -d /tmp/sparda-deploy-k8s.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

out=$("$py" "$k8s/validate.py" "$k8s"/*.yaml) || fail "manifests: $out"
echo "ok: manifests valid ($out)"

# ---- broken copies must fail, each with the error it deserves -------------------------------
# mutate NAME FILE EXPECTED-ERROR-REGEX PYTHON: PYTHON edits `docs` (the file's documents).
mutate() {
	local name=$1 file=$2 expect=$3 edit=$4
	mkdir -p "$tmp/$name"
	cp "$k8s"/*.yaml "$tmp/$name/"
	"$py" - "$tmp/$name/$file" "$edit" <<'PY'
import sys, yaml
path, edit = sys.argv[1], sys.argv[2]
docs = list(yaml.safe_load_all(open(path)))
def pod(d): return d["spec"]["template"]["spec"]
def ctr(d): return pod(d)["containers"][0]
def ren(m, old, new): m[new] = m.pop(old)
exec(edit)
yaml.safe_dump_all(docs, open(path, "w"), sort_keys=False)
PY
	local res rc=0
	res=$("$py" "$k8s/validate.py" "$tmp/$name"/*.yaml) || rc=$?
	[ "$rc" -ne 0 ] || fail "broken copy '$name' passed validation"
	grep -Eq "$expect" <<<"$res" || fail "broken copy '$name': expected /$expect/, got: $res"
	echo "ok: broken copy '$name' rejected"
}
mutate misspelled-probe memsvc-daemonset.yaml "unknown field 'readynessProbe'" \
	'ren(ctr(docs[0]), "readinessProbe", "readynessProbe")'
mutate misspelled-nested compute-deployment.yaml "unknown field 'mountpath'" \
	'ren(ctr(docs[0])["volumeMounts"][0], "mountPath", "mountpath")'
mutate misspelled-top configmap.yaml "unknown field 'dat'" 'ren(docs[0], "data", "dat")'
mutate misspelled-spec compute-job.yaml "unknown field 'backofLimit'" \
	'ren(docs[0]["spec"], "backoffLimit", "backofLimit")'
mutate port-type memsvc-daemonset.yaml "containerPort: expected int" \
	'ctr(docs[0])["ports"][0]["containerPort"] = "9464"'
mutate bool-type compute-deployment.yaml "readOnly: expected bool" \
	'ctr(docs[0])["volumeMounts"][1]["readOnly"] = "yes"'
mutate list-type memsvc-daemonset.yaml "command: expected a list" \
	'ctr(docs[0])["command"] = "/opt/sparda/bin/sparda-memsvc"'
mutate no-selector compute-deployment.yaml "selector.*must not be .None" \
	'del docs[0]["spec"]["selector"]'
mutate no-containers memsvc-daemonset.yaml "containers.*must not be .None" \
	'del pod(docs[0])["containers"]'
mutate no-volume memsvc-daemonset.yaml "volumeMount 'spill' names no volume" \
	'pod(docs[0])["volumes"][1]["name"] = "spil"'
mutate bad-quantity memsvc-daemonset.yaml "bad quantity '100GB'" \
	'ctr(docs[0])["resources"]["limits"]["memory"] = "100GB"'
mutate no-configmap configmap.yaml "configMapRef 'sparda-compute' is not defined" \
	'docs[1]["metadata"]["name"] = "sparda-compute-x"'
mutate probe-port memsvc-daemonset.yaml "livenessProbe port 'metric'" \
	'ctr(docs[0])["livenessProbe"]["httpGet"]["port"] = "metric"'
mutate no-priority-value namespace.yaml "value.*must not be .None" 'del docs[1]["value"]'
mutate no-priorityclass memsvc-daemonset.yaml "priorityClassName 'sparda-memsv' is not defined" \
	'pod(docs[0])["priorityClassName"] = "sparda-memsv"'
mutate selector-labels compute-deployment.yaml "does not match the pod template labels" \
	'docs[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "x"'

# ---- the manifests agree with the daemons -----------------------------------------------------
"$py" - "$k8s" "$tmp" <<'PY'
import glob, json, os, sys, yaml
k8s, tmp = sys.argv[1], sys.argv[2]
docs = [d for f in sorted(glob.glob(k8s + "/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
for name, data in cms.items():  # one env file per ConfigMap, for the shell below
    with open(os.path.join(tmp, name + ".env"), "w") as f:
        for k, v in data.items():
            f.write("%s=%s\n" % (k, v))
ds = next(d for d in docs if d["kind"] == "DaemonSet")
c = ds["spec"]["template"]["spec"]["containers"][0]
port = c["ports"][0]["containerPort"]
assert int(cms["sparda-memsvc"]["SPARDA_METRICS_PORT"]) == port, "metrics port != containerPort"
for p in ("livenessProbe", "readinessProbe"):
    assert c[p]["httpGet"]["path"] == "/healthz", p
rt = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "runtime"][0]
assert "--runtime-dir=" + rt in c["command"], "memsvc runtime dir is not the mounted one"
# The NVMe tier: every directory memsvc is told to spill to is a mounted hostPath volume (not
# the container's read-only root or its tmpfs), handed to the daemon's uid by the init container,
# with a cap on the bytes spilled there.
pod = ds["spec"]["template"]["spec"]
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
dirs = [x for x in cms["sparda-memsvc"].get("SPARDA_SPILL_DIRS", "").split(",") if x]
assert dirs, "SPARDA_SPILL_DIRS is not set: memsvc runs RAM only"
assert int(cms["sparda-memsvc"].get("SPARDA_SPILL_BYTES", "0").rstrip("KMGT") or 0) > 0, \
    "SPARDA_SPILL_BYTES: no cap on the spill directory"
init = pod["initContainers"][0]
for x in dirs:
    assert x in mounts, "spill dir %s is not a mountPath of memsvc" % x
    assert "hostPath" in vols[mounts[x]], "spill dir %s is not on a hostPath volume" % x
    assert any(m["name"] == mounts[x] for m in init["volumeMounts"]), "init: no " + x
    assert x in " ".join(init["command"]), "init container does not chown " + x
with open(os.path.join(tmp, "memsvc.args"), "w") as f:
    f.write("\n".join(c["command"][1:] + c.get("args", [])))
for d in docs:
    if d["kind"] in ("Deployment", "Job"):
        cc = d["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" in cc["resources"]["limits"], d["kind"] + ": no GPU limit"
        mounts = {m["name"]: m["mountPath"] for m in cc["volumeMounts"]}
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert vols["runtime"]["hostPath"]["path"] == \
            ds["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"], "socket dir"
        assert cms["sparda-compute"]["SPARDA_COMPUTE_RUNTIME_DIR"] == mounts["runtime"]
        with open(os.path.join(tmp, d["kind"] + ".args"), "w") as f:
            f.write("\n".join(cc["command"][1:] + cc.get("args", [])))
PY
echo "ok: ports, probes, socket and spill directories and GPU requests agree"

known_env() { "$bin/$1" --help | grep -o 'env SPARDA_[A-Z_]*' | cut -d' ' -f2; }
check_env() { # BINARY ENVFILE ARGSFILE
	local k
	for k in $(cut -d= -f1 "$2"); do
		grep -qx "$k" <<<"$(known_env "$1")" || fail "$(basename "$2"): $k is not a $1 variable"
	done
	mapfile -t args <"$3"
	# --json would be written by a real run: --dump-config only parses and prints.
	env -i PATH="$PATH" bash -c 'set -a; . "$1"; shift; exec "$@"' _ "$2" \
		"$bin/$1" "${args[@]}" --dump-config >"$tmp/dump" 2>&1 ||
		fail "$1 refused the manifest's settings: $(cat "$tmp/dump")"
}
check_env sparda-memsvc "$tmp/sparda-memsvc.env" "$tmp/memsvc.args"
grep -Eq '^ram-budget *= *"?(96G|103079215104)' "$tmp/dump" || fail "ram-budget: $(cat "$tmp/dump")"
grep -Eq '^spill-dirs *= *"?/var/lib/sparda/spill' "$tmp/dump" ||
	fail "spill-dirs: $(cat "$tmp/dump")"
check_env sparda-compute "$tmp/sparda-compute.env" "$tmp/Deployment.args"
check_env sparda-compute "$tmp/sparda-compute.env" "$tmp/Job.args"
grep -Eq '^fallback *= *"?false' "$tmp/dump" || fail "compute fallback: $(cat "$tmp/dump")"
echo "ok: ConfigMap keys and container flags accepted by the daemons"
echo PASS
