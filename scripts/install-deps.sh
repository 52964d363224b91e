#!/usr/bin/env bash
# Install the Debian packages the build and tests need (idempotent; quiet when all present).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
      liburing-dev libcmocka-dev libmicrohttpd-dev libjson-c-dev libopenblas-dev
      libsystemd-dev curl python3 python3-numpy systemd slurm-wlm munge python3-kubernetes python3-yaml
      gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
