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
#   apply:  `sanbootctl apply -f --wait` of BENCH_APPLY (200) nodes on the
#           RBD agent, then as many on an agent with the reflink store (XFS
#           on a loop device), same run: ratio
#   failover: kill -9 of the agent serving F (10) nodes; time until all are
#           Ready on the other agent of the pool (lease TTL 4 s)
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
rbd_agent() { # rbd_agent NAME PORTAL
	AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal "$2"
		--store=rbd --rbd-pool "$CEPH_POOL" --ceph-conf "$CEPH_CONF" --ceph-user "$CEPH_USER" --lease-ttl 4s)
	start_agent "$WORK" "$1" 2>/dev/null
}
start_controlplane "$WORK" 2>/dev/null
rbd_agent s1 "$PORTAL"
S1_PID=$AGENT_PID

ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

# Blank images of 1 GiB and 10 GiB; nodes from each, alternately (so that
# the growing number of nodes weighs on both alike): each one's ms from
# create to Ready.
for img in g1gib:1GiB g10gib:10GiB; do
	ctl image create "${img%%:*}" --size "${img#*:}" >/dev/null
	wait_until 300 "image ${img%%:*} Ready" sh -c "'$BIN/sanbootctl' get images '${img%%:*}' | grep Ready >/dev/null"
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

# apply: BENCH_APPLY nodes through apply -f --wait, on RBD (s1) and on
# reflink (x1: XFS on a loop device), one after the other.
A=${BENCH_APPLY:-200}
mount_fs xfs "$WORK/xfs.img" "$WORK/xfs" 16G # sparse; every clone must fit in the free space (the Store contract)
trap 'stop_all; unmount_all; hack/ceph-cluster.sh down "$WORK/ceph" || true; rm -rf "$TMPFS" "$WORK"' EXIT
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal "127.0.0.1:$(free_port)")
STORE_DIR=$WORK/xfs start_agent "$WORK" x1 2>/dev/null
manifest() { # manifest AGENT STORE: an image held by AGENT, A nodes on it
	printf 'apiVersion: sanboot.io/v1\nkind: Image\nmetadata: {name: base-%s}\nspec: {sizeBytes: 1GiB, agents: [%s], source: {blank: {}}}\n' "$2" "$1"
	for i in $(seq 1 "$A"); do
		printf -- '---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: %s-%d}\nspec: {image: base-%s, agent: %s}\n' "$2" "$i" "$2" "$1"
	done
}
for run in s1:rbd x1:reflink; do
	manifest "${run%%:*}" "${run#*:}" >"$WORK/${run#*:}.yaml"
done
for store in rbd reflink; do # the images first: the timed applies make nodes only
	head -4 "$WORK/$store.yaml" >"$WORK/$store-image.yaml"
	ctl apply -f "$WORK/$store-image.yaml" --wait --timeout 300s >"$WORK/apply-image.log" 2>&1 || { cat "$WORK/apply-image.log"; die "apply of image base-$store failed"; }
done
t0=$(ms)
ctl apply -f "$WORK/rbd.yaml" --wait --timeout 1800s >"$WORK/apply-rbd.log" 2>&1 || { tail -20 "$WORK/apply-rbd.log"; die "apply on RBD failed"; }
apply_rbd=$(($(ms) - t0))
echo "apply -f --wait of $A nodes on RBD: ${apply_rbd} ms"
t0=$(ms)
ctl apply -f "$WORK/reflink.yaml" --wait --timeout 1800s >"$WORK/apply-reflink.log" 2>&1 || { tail -20 "$WORK/apply-reflink.log"; die "apply on reflink failed"; }
apply_reflink=$(($(ms) - t0))
echo "apply -f --wait of $A nodes: RBD ${apply_rbd} ms, reflink (XFS) ${apply_reflink} ms, ratio $(awk "BEGIN {printf \"%.2f\", $apply_rbd / $apply_reflink}")"
ctl delete -f "$WORK/rbd.yaml" --wait --timeout 1800s >/dev/null 2>&1
ctl delete -f "$WORK/reflink.yaml" --wait --timeout 1800s >/dev/null 2>&1

# failover: F nodes on s1, a second agent s2 on the pool, kill -9 s1.
F=${BENCH_FAILOVER:-10}
rbd_agent s2 "127.0.0.1:$(free_port)"
for i in $(seq 1 "$F"); do ctl provision "fo-$i" --image g1gib --agent s1 >/dev/null 2>&1; done
ctl wait node $(seq -f "fo-%g" 1 "$F") --for=ready --timeout=600s >/dev/null 2>&1
t0=$(ms)
kill -9 "$S1_PID"
for i in $(seq 1 "$F"); do
	wait_until 300 "fo-$i on s2" sh -c "'$BIN/sanbootctl' get nodes fo-$i -o jsonpath='{.status.agent} {.status.phase}' | grep -x 's2 Ready' >/dev/null"
done
echo "failover after kill -9 (lease TTL 4 s): all $F nodes Ready on the other agent in $(($(ms) - t0)) ms"
