#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The relocatable bundle: build it as a tarball, unpack it into an empty directory elsewhere and
# run the main job from there with LD_LIBRARY_PATH unset: the binaries must find their
# libraries through the rpath $ORIGIN/../lib and each other next to themselves.
set -euo pipefail
build=${SPARDA_BUILD_DIR:?}
src=${SPARDA_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$src/deploy/bundle.sh" "$build" "$work/stage" "$work/sparda.tar.gz" >"$work/bundle.log" 2>&1 ||
	{ cat "$work/bundle.log"; exit 1; }
mkdir "$work/unpacked"
tar -xzf "$work/sparda.tar.gz" -C "$work/unpacked"
rm -rf "$work/stage"
for b in sparda sparda-memsvc sparda-compute; do
	[ -x "$work/unpacked/bin/$b" ] || { echo "bundle lacks bin/$b"; exit 1; }
	grep -q 'ORIGIN/../lib' <<<"$(readelf -d "$work/unpacked/bin/$b")" ||
		{ echo "bin/$b has no \$ORIGIN/../lib rpath"; exit 1; }
done
for l in libzmq libprotobuf-c libjson-c; do
	ls "$work/unpacked/lib/$l".so* >/dev/null 2>&1 || { echo "bundle lacks $l"; exit 1; }
done
# Run from the unpacked copy only: no build dir on any search path.
env -u LD_LIBRARY_PATH -u SPARDA_BUILD_DIR "$work/unpacked/bin/sparda" run --prompt-tokens=1100 \
	--new-tokens=4 --modes=sparda,sparda-nooffload --host-store=memsvc --fallback=false \
	--json="$work/out.json" >"$work/run.log" 2>&1 || { tail -20 "$work/run.log"; exit 1; }
grep -Eq '"equals_twin": ?true' "$work/out.json" || { echo "sparda differs from its twin"; exit 1; }
grep -q "sparda-memsvc drained and exited with status 0" "$work/run.log" ||
	{ tail -5 "$work/run.log"; exit 1; }
echo "bundle runs from $work/unpacked"
