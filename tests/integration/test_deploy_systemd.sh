#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# deploy/systemd: `systemd-analyze verify` of the units (any warning fails), the sysusers file,
# the ExecStart flags and env files accepted by the real binaries, and the real sparda-memsvc
# under a fake NOTIFY_SOCKET with WATCHDOG_USEC and MemoryDenyWriteExecute (PR_SET_MDWE):
# READY=1 after its endpoints exist, WATCHDOG=1 often enough, sessions served, STOPPING=1 on
# SIGTERM and exit 0. Exits 77 only when python3 or systemd-analyze is absent.
set -euo pipefail
src=${SPARDA_SOURCE_DIR:?SPARDA_SOURCE_DIR not set}
bin=${SPARDA_BUILD_DIR:?SPARDA_BUILD_DIR not set}/bin
units=$src/deploy/systemd
for b in sparda sparda-memsvc sparda-compute; do
	[ -x "$bin/$b" ] || { echo "FAIL: $bin/$b not built"; exit 1; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 absent"; exit 77; }

tmp=$(mktemp -d /tmp/sparda-deploy-systemd.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
skipped=""

# ---- 1. systemd-analyze verify (needs no running systemd) --------------------------------------
# verify prints unknown keys and bad values but still exits 0: any output is a failure.
verify_units() { # DIR: copies of the units with ExecStart pointing at the build tree
	(cd "$1" && systemd-analyze verify --man=no sparda-memsvc.service sparda-compute@0.service 2>&1)
}
stage_units() { # DIR
	mkdir -p "$1"
	for f in sparda-memsvc.service sparda-compute@.service; do
		sed "s#/usr/local/bin/#$bin/#" "$units/$f" >"$1/$f"
	done
	cp "$1/sparda-compute@.service" "$1/sparda-compute@0.service"
}
if command -v systemd-analyze >/dev/null; then
	stage_units "$tmp/units"
	out=$(verify_units "$tmp/units") || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify warned: $out"
	# The check must catch a misspelled key and a bad value.
	stage_units "$tmp/broken"
	echo "ProtectSytem=strict" >>"$tmp/broken/sparda-memsvc.service"
	out=$(verify_units "$tmp/broken" || true)
	grep -q ProtectSytem <<<"$out" || fail "verify missed a misspelled key: $out"
	stage_units "$tmp/broken2"
	sed -i 's/^Type=notify/Type=notifyy/' "$tmp/broken2/sparda-memsvc.service"
	out=$(verify_units "$tmp/broken2" || true)
	[ -n "$out" ] || fail "verify missed Type=notifyy"
	for key in Type=notify NotifyAccess=main WatchdogSec= RuntimeDirectory=sparda \
		NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
		MemoryDenyWriteExecute=yes LimitMEMLOCK= LimitNOFILE= Restart=on-failure \
		KillSignal=SIGTERM TimeoutStopSec= EnvironmentFile=-/etc/sparda/memsvc.env User=sparda; do
		grep -q "^$key" "$units/sparda-memsvc.service" || fail "memsvc unit lacks $key"
	done
	for key in 'Environment=CUDA_VISIBLE_DEVICES=%i' Requires=sparda-memsvc.service \
		After=sparda-memsvc.service; do
		grep -q "^$key" "$units/sparda-compute@.service" || fail "compute unit lacks $key"
	done
	echo "ok: systemd-analyze verify"
	if command -v systemd-sysusers >/dev/null; then
		mkdir -p "$tmp/root/etc"
		systemd-sysusers --root="$tmp/root" "$units/sparda.sysusers.conf" >/dev/null 2>&1 ||
			fail "systemd-sysusers rejected sparda.sysusers.conf"
		grep -q '^sparda:' "$tmp/root/etc/passwd" || fail "sysusers did not create user sparda"
		echo "ok: sysusers creates sparda"
	fi
else
	skipped="systemd-analyze absent"
	echo "SKIP part: systemd-analyze absent"
fi

# ---- 2. ExecStart flags and env files are accepted by the real binaries -----------------------
execargs() { # UNIT: the arguments of ExecStart= (after the binary)
	sed -n 's/^ExecStart=[^ ]*//p' "$units/$1"
}
for pair in sparda-memsvc:memsvc.env sparda-compute:compute.env; do # no misspelled variable
	known=$("$bin/${pair%%:*}" --help | grep -o 'env SPARDA_[A-Z_]*' | cut -d' ' -f2)
	for k in $(grep -v '^#' "$units/${pair#*:}" | grep '=' | cut -d= -f1); do
		grep -qx "$k" <<<"$known" || fail "${pair#*:}: $k is not a ${pair%%:*} variable"
	done
done
read -r -a margs <<<"$(execargs sparda-memsvc.service)"
read -r -a cargs <<<"$(execargs sparda-compute@.service)"
dump=$(env -i PATH="$PATH" bash -c 'set -a; . "$1"; shift; exec "$@"' _ "$units/memsvc.env" \
	"$bin/sparda-memsvc" "${margs[@]}" --dump-config 2>&1) ||
	fail "memsvc refused the unit's flags or memsvc.env: $dump"
grep -Eq '^runtime-dir *= *"?/run/sparda' <<<"$dump" || fail "runtime-dir not /run/sparda: $dump"
dump=$(env -i PATH="$PATH" bash -c 'set -a; . "$1"; shift; exec "$@"' _ "$units/compute.env" \
	"$bin/sparda-compute" "${cargs[@]}" --dump-config 2>&1) ||
	fail "compute refused the unit's flags or compute.env: $dump"
grep -Eq '^runtime-dir *= *"?/run/sparda' <<<"$dump" || fail "compute runtime-dir: $dump"
echo "ok: ExecStart flags and env files accepted"

# ---- 3. the real daemon under a fake systemd notify socket -----------------------------------
cat >"$tmp/notify.py" <<'EOF'
import ctypes, mmap, os, signal, socket, subprocess, sys, time, urllib.request

bin_dir, tmp = sys.argv[1], sys.argv[2]
rt = os.path.join(tmp, "rt")
sock_path = os.path.join(tmp, "notify.sock")
WD_USEC = 1_000_000  # systemd would kill the service after 1 s without WATCHDOG=1

def fail(msg):
    print("FAIL:", msg, flush=True)
    if proc.poll() is None:
        proc.kill()
    sys.exit(1)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

mdwe = {"on": False}
def harden():
    # MemoryDenyWriteExecute: systemd uses a seccomp filter; PR_SET_MDWE (Linux >= 6.3) is the
    # kernel's own equivalent, inherited across fork and execve.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) == 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            os._exit(99)  # MDWE did not take: the check below would prove nothing
        except OSError:
            pass

def mdwe_supported():
    r = subprocess.run([sys.executable, "-c",
        "import ctypes; l=ctypes.CDLL(None); print(l.prctl(65,1,0,0,0))"],
        capture_output=True, text=True)
    return r.stdout.strip() == "0"

ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(sock_path)
ns.settimeout(0.2)
port = free_port()
env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC=str(WD_USEC))
mdwe["on"] = mdwe_supported()
log = open(os.path.join(tmp, "memsvc.log"), "w")
proc = subprocess.Popen([os.path.join(bin_dir, "sparda-memsvc"), "--runtime-dir=" + rt,
                         "--metrics-port=%d" % port], env=env, stderr=log, stdout=log,
                        preexec_fn=harden)
msgs = []  # (time, state)
def recv_until(pred, timeout):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        try:
            data = ns.recv(4096).decode()
        except socket.timeout:
            if proc.poll() is not None:
                break
            continue
        for line in filter(None, data.split("\n")):
            msgs.append((time.monotonic(), line))
            if line == "READY=1":
                ready_seen_files.append(os.path.exists(os.path.join(rt, "attach.sock")) and
                                        os.path.exists(os.path.join(rt, "ctl.ipc")))
    return pred()

ready_seen_files = []
states = lambda: [m for _, m in msgs]
if not recv_until(lambda: "READY=1" in states(), 15):
    fail("no READY=1 (rc=%s): %s" % (proc.poll(), states()))
if not ready_seen_files or not ready_seen_files[0]:
    fail("READY=1 before attach.sock and ctl.ipc existed")
if "STOPPING=1" in states():
    fail("STOPPING=1 before SIGTERM")
try:
    body = urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5).read()
except Exception as e:
    fail("/healthz after READY=1: %s" % e)
print("ok: READY=1 after endpoints; /healthz:", body.decode().strip(), flush=True)

# Real sessions against the hardened daemon: every unit written, committed, Forecast, verified.
t0 = time.monotonic()
demo = subprocess.run([os.path.join(bin_dir, "sparda"), "demo-memsvc", "--runtime-dir", rt],
                      capture_output=True, text=True, timeout=60)
if demo.returncode != 0:
    fail("demo-memsvc against the daemon: rc=%d\n%s%s" % (demo.returncode, demo.stdout,
                                                          demo.stderr))
print("ok: demo-memsvc served%s" % (" under MDWE" if mdwe["on"] else ""), flush=True)

recv_until(lambda: False, 3.0)
wd = [t for t, m in msgs if m.startswith("WATCHDOG=1")]
if len(wd) < 4:
    fail("%d WATCHDOG=1 messages in %.1f s (expected one every %.1f s)" %
         (len(wd), time.monotonic() - t0, WD_USEC / 2e6))
gaps = [b - a for a, b in zip(wd, wd[1:])]
if max(gaps) >= WD_USEC / 1e6:
    fail("WATCHDOG=1 gap %.2f s >= WatchdogSec %.2f s" % (max(gaps), WD_USEC / 1e6))
print("ok: %d WATCHDOG=1, largest gap %.2f s" % (len(wd), max(gaps)), flush=True)

proc.send_signal(signal.SIGTERM)
if not recv_until(lambda: "STOPPING=1" in states(), 10):
    fail("no STOPPING=1 after SIGTERM: %s" % states()[-5:])
try:
    rc = proc.wait(timeout=15)
except subprocess.TimeoutExpired:
    fail("daemon did not exit within 15 s of SIGTERM")
if rc != 0:
    fail("daemon exit status %d after SIGTERM" % rc)
print("ok: STOPPING=1 and exit 0 after SIGTERM", flush=True)
if not mdwe["on"]:
    print("note: PR_SET_MDWE unsupported by this kernel: MemoryDenyWriteExecute not checked")
EOF
python3 "$tmp/notify.py" "$bin" "$tmp" || { cat "$tmp/memsvc.log" 2>/dev/null | tail -20; exit 1; }

if [ -n "$skipped" ]; then
	echo "SKIP: $skipped (the rest passed)"
	exit 77
fi
echo "PASS"
