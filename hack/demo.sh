#!/usr/bin/env bash
# demo.sh: the main job on the embedded default, as root. Starts a
# one-member control plane (embedded etcd) and one storage agent on
# loopback: the agent runs its own tgtd and keeps its store on a reflink XFS
# (a loop device). Creates an image, provisions three nodes from it, waits
# until they are Ready, and checks each target from outside with a real
# iSCSI initiator (libiscsi): the node's own initiator gets in, another
# node's does not.
#
# With --keep it leaves everything running until Ctrl-C, so that you can try
# sanbootctl yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh >/dev/null
. hack/lib.sh
[ "$(id -u)" = 0 ] || die "run as root: the agent needs tgtd and a loop device"

KEEP=false
[ "${1:-}" = --keep ] && KEEP=true
WORK=$(mktemp -d /tmp/sanboot-demo.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; unmount_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"

PORTAL=127.0.0.1:$(free_port)
STORE_DIR=$WORK/store
mount_fs xfs "$WORK/store.xfs" "$STORE_DIR" 4G
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal "$PORTAL")

log "control plane (embedded etcd, data in $WORK/cp) and agent rack1 (tgtd on $PORTAL, store on reflink XFS)"
start_controlplane "$WORK"
start_agent "$WORK" rack1
ctl get agents -o wide

log "an image: 'golden', 1 GiB"
ctl image create golden --size 1GiB
wait_until 60 "image golden on rack1" sh -c "'$BIN/sanbootctl' get images golden -o json | grep -q '\"phase\": *\"Ready\"'"
ctl get images

log "three nodes, provisioned and waited for"
ctl provision web-01 --image golden --mac 52:54:00:00:01:01 --wait --timeout 60s
ctl provision web-02 --image golden --mac 52:54:00:00:01:02 --wait --timeout 60s
ctl provision db-01 --image golden --mac 52:54:00:00:02:01 --chap --wait --timeout 60s
ctl get nodes -o wide

log "checking each target with a real initiator"
for n in web-01 web-02; do
	t=iqn.2026-11.io.sanboot:default.$n i=iqn.2026-11.io.sanboot:initiator.default.$n
	iscsi-readcapacity16 -i "$i" "iscsi://$PORTAL/$t/1" | grep -i "total size" | sed "s/^/$n: /"
	if iscsi-inq -i iqn.2026-11.io.sanboot:initiator.default.db-01 "iscsi://$PORTAL/$t/1" >/dev/null 2>&1; then
		die "db-01's initiator got into $n"
	fi
	echo "$n: another node's initiator is refused"
done
if iscsi-inq -i iqn.2026-11.io.sanboot:initiator.default.db-01 "iscsi://$PORTAL/iqn.2026-11.io.sanboot:default.db-01/1" >/dev/null 2>&1; then
	die "db-01 let its initiator in without CHAP"
fi
echo "db-01: CHAP is required"
du -h --apparent-size "$STORE_DIR/disks/default/"*.raw | sed 's/^/disk /'
echo "space used by the store: $(df -h --output=used "$STORE_DIR" | tail -1) (reflink clones share the image's blocks)"
log "demo: three nodes Ready, each target open to its own node only"

if $KEEP; then
	echo "sanbootctl: $BIN/sanbootctl --endpoints $API_ADDR   (Ctrl-C stops everything)"
	wait "$CP_PID"
fi
