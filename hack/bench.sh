#!/usr/bin/env bash
# bench.sh: sanboot's benchmarks (`make bench`). They print figures; record
# them in docs/benchmarks.md with the machine and the date.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh >/dev/null
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(go version | cut -d' ' -f3), $(date -u +%F)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
# go test exits 0 when a benchmark fails in a later -count round: look for
# "--- FAIL" in the output too.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# bench/: whole-system runs (the tgt ones need root, tgtd, a loop device and
# qemu-img with qemu-block-extra; they fail and say what to install).
go test -run '^$' -bench . -benchtime 1x -count "${COUNT:-1}" -timeout 30m ./bench/ 2>&1 | tee -a "$out"
# Clone cost by store, and by image size on reflink XFS (root: loop devices).
go test -run '^$' -bench 'Clone$' -benchtime 20x -count "${COUNT:-1}" -timeout 30m ./agent/store/filestore/ 2>&1 | tee -a "$out"
go test -run '^$' -bench 'CloneBySize$' -benchtime 100x -count "${COUNT:-1}" -timeout 30m ./agent/store/filestore/ 2>&1 | tee -a "$out"
# Booting real (TCG) nodes: one node, then boot storms of STORM_N (default
# 4) BIOS and then UEFI nodes powered on at once against one agent.
if ! hack/e2e-boot.sh --bench 2>&1 | grep -E '^(BENCH|e2e-boot:|FAIL)' | tee -a "$out"; then
	echo "--- FAIL: hack/e2e-boot.sh --bench" | tee -a "$out"
fi
# LIO in a qemu TCG guest (issue 14): 500 nodes applied, a reboot, the
# agent's rebuild of their targets, against bare configfs writes.
if ! hack/e2e-lio.sh --bench 2>&1 | grep -E '^(BENCH|Benchmark|e2e-lio:|FAIL|note:)' | tee -a "$out"; then
	echo "--- FAIL: hack/e2e-lio.sh --bench" | tee -a "$out"
fi
# The RBD store on a real Ceph cluster: clone time by image size, iSCSI
# read vs rbd export (root, tgtd, tgt-rbd, Ceph).
hack/bench-rbd.sh 2>&1 | tee -a "$out"
if grep -q -- '--- FAIL' "$out"; then
	echo "bench: a benchmark failed (--- FAIL above)" >&2
	exit 1
fi
