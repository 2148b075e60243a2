#!/usr/bin/env bash
# bench-rbd.sh: the RBD store's costs on the user's path, each with its
# baseline from the same run (part of `make bench`; needs root, tgtd,
# tgt-rbd and Ceph: hack/install-deps.sh).
#
#   clone:  `sanbootctl provision --wait` of BENCH_NODES (10) nodes from a
#           1 GiB image, then from a 10 GiB image: median per node, ratio
#           (goal: flat, <= 1.2)
#   read:   a node's whole disk (1 GiB of random data) read by its
#           initiator through tgt's rbd backing store (qemu-img, libiscsi),
#           and the same image read with `rbd export`, both to tmpfs: ratio
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in tgtd qemu-img ceph-mon rbd; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh"
done
[ "$(id -u)" = 0 ] || die "needs root: tgtd"
K=${BENCH_NODES:-10}

WORK=$(mktemp -d /tmp/sanboot-bench-rbd.XXXXXX)
TMPFS=$(mktemp -d /dev/shm/sanboot-bench-rbd.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; hack/ceph-cluster.sh down "$WORK/ceph" || true; rm -rf "$TMPFS" "$WORK"' EXIT
build_binaries "$BIN" >/dev/null 2>&1
eval "$(hack/ceph-cluster.sh up "$WORK/ceph" 2>/dev/null)"
admin_rbd() { rbd --conf "$CEPH_CONF" -p "$CEPH_POOL" "$@"; }
PORTAL=127.0.0.1:$(free_port)
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal "$PORTAL"
	--store=rbd --rbd-pool "$CEPH_POOL" --ceph-conf "$CEPH_CONF" --ceph-user "$CEPH_USER")
start_controlplane "$WORK" 2>/dev/null
start_agent "$WORK" s1 2>/dev/null

ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

# Blank images of 1 GiB and 10 GiB; nodes from each, alternately (so that
# the growing number of nodes weighs on both alike): each one's ms from
# create to Ready.
for img in g1gib:1GiB g10gib:10GiB; do
	ctl image create "${img%%:*}" --size "${img#*:}" >/dev/null
	wait_until 300 "image ${img%%:*} Ready" sh -c "'$BIN/sanbootctl' get images '${img%%:*}' | grep -q Ready"
done
provision_ms() {
	local t0
	t0=$(ms)
	ctl provision "$1" --image "$2" --wait --timeout 300s >/dev/null 2>&1
	echo $(($(ms) - t0))
}
: >"$WORK/c1" >"$WORK/c10"
for i in $(seq 1 "$K"); do
	provision_ms "g1gib-n$i" g1gib >>"$WORK/c1"
	provision_ms "g10gib-n$i" g10gib >>"$WORK/c10"
done
c1=$(median <"$WORK/c1")
c10=$(median <"$WORK/c10")
echo "rbd clone via provision --wait: 1 GiB image median ${c1} ms, 10 GiB image median ${c10} ms, ratio $(awk "BEGIN {printf \"%.2f\", $c10 / $c1}") ($K nodes each, alternately)"

# read: 1 GiB of random data in an image, a node on it.
head -c 1G /dev/urandom >"$TMPFS/data.raw"
ctl image import big "$TMPFS/data.raw" --wait --timeout 600s >/dev/null 2>&1
rm -f "$TMPFS/data.raw"
ctl provision big-n1 --image big --wait --timeout 300s >/dev/null 2>&1
opts="driver=iscsi,transport=tcp,portal=$PORTAL,target=iqn.2026-11.io.sanboot:default.big-n1,lun=1,initiator-name=iqn.2026-11.io.sanboot:initiator.default.big-n1"
t0=$(ms)
qemu-img convert --image-opts "$opts" -O raw "$TMPFS/iscsi.raw"
iscsi=$(($(ms) - t0))
rm -f "$TMPFS/iscsi.raw"
t0=$(ms)
admin_rbd export --no-progress disk.default.big-n1 "$TMPFS/export.raw" >/dev/null
export_ms=$(($(ms) - t0))
rm -f "$TMPFS/export.raw"
echo "read 1 GiB of random data: iSCSI (tgt bs_rbd, qemu-img) ${iscsi} ms = $((1024 * 1000 / iscsi)) MiB/s, rbd export ${export_ms} ms = $((1024 * 1000 / export_ms)) MiB/s, ratio $(awk "BEGIN {printf \"%.2f\", $iscsi / $export_ms}")"
