#!/usr/bin/env bash
# demo.sh: the main job on the embedded default, as root. Starts a
# one-member control plane (embedded etcd) and one storage agent on
# loopback: the agent runs its own tgtd and keeps its store on a reflink XFS
# (a loop device). Makes a small demo image and imports it, provisions three
# nodes from it, waits until they are Ready, and checks each target from
# outside with a real iSCSI initiator (libiscsi): the node's own initiator
# gets in, another node's does not, CHAP is enforced where asked.
#
# On a terminal it then keeps everything running, prints what to try next,
# and stops cleanly on Ctrl-C; elsewhere (CI, a pipe) it stops at once.
# --keep / --no-keep override that.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh >/dev/null
. hack/lib.sh
[ "$(id -u)" = 0 ] || die "run as root: the agent needs tgtd and a loop device"

KEEP=false
[ -t 0 ] && [ -t 1 ] && KEEP=true
case "${1:-}" in --keep) KEEP=true ;; --no-keep) KEEP=false ;; esac
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

log "a demo image: 'golden', 1 GiB sparse with 16 MiB of data, imported through the control plane"
truncate -s 1G "$WORK/golden.raw"
head -c 16M /dev/urandom | dd of="$WORK/golden.raw" conv=notrunc status=none
ctl image import golden "$WORK/golden.raw" --wait --timeout 120s
ctl get images -o wide

log "three nodes, provisioned and waited for"
ctl provision web-01 --image golden --mac 52:54:00:00:01:01 --wait --timeout 60s
ctl provision web-02 --image golden --mac 52:54:00:00:01:02 --wait --timeout 60s
ctl provision db-01 --image golden --mac 52:54:00:00:02:01 --chap --wait --timeout 60s
ctl get nodes -o wide

log "checking each target with a real initiator"
for n in web-01 web-02; do
	t=iqn.2026-11.io.sanboot:default.$n i=iqn.2026-11.io.sanboot:initiator.default.$n
	iscsi-inq -i "$i" "iscsi://$PORTAL/$t/1" >/dev/null || die "$n's own initiator cannot log in"
	echo "$n: its own initiator logs in (iscsi-inq)"
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
	cat <<EOT

Everything is still running. Try, in another shell:
  export SANBOOT_ENDPOINTS=$API_ADDR PATH=$BIN:\$PATH
  sanbootctl get nodes -o wide
  sanbootctl snapshot create web-01 web-base --wait
  sanbootctl provision web-03 --image web-base --wait
  iscsi-inq -i iqn.2026-11.io.sanboot:initiator.default.web-03 iscsi://$PORTAL/iqn.2026-11.io.sanboot:default.web-03/1
  sanbootctl deprovision web-03 --wait
Ctrl-C stops the control plane, the agent and its tgtd, and unmounts the store.
EOT
	trap 'echo; log "stopping"' INT
	wait "$CP_PID" || true
fi
