#!/usr/bin/env bash
# demo.sh: the main job on the embedded default. Starts a one-member control
# plane (embedded etcd) and one storage agent on loopback, creates an image,
# provisions nodes from it, waits until they are Ready, and shows them.
#
# Today the agent runs the in-memory `fake` target driver: the flow through
# etcd, the scheduler and the agent is real, the iSCSI targets are not yet
# (the reflink store and the tgt/LIO drivers come next). With --keep the
# processes keep running until Ctrl-C so you can try sanbootctl yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh >/dev/null
. hack/lib.sh

KEEP=false
[ "${1:-}" = --keep ] && KEEP=true
WORK=$(mktemp -d /tmp/sanboot-demo.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"

log "control plane (embedded etcd, data in $WORK/cp) and agent rack1"
start_controlplane "$WORK"
start_agent "$WORK" rack1
ctl get agents

log "an image: 'golden', 8 GiB (blank: importing bytes comes with the storage-host work)"
ctl image create golden --size 8GiB
wait_until 30 "image golden on rack1" sh -c "'$BIN/sanbootctl' get images golden -o json | grep -q '\"phase\": *\"Ready\"'"
ctl get images

log "three nodes, provisioned and waited for"
ctl provision web-01 --image golden --mac 52:54:00:00:01:01 --wait --timeout 60s
ctl provision web-02 --image golden --mac 52:54:00:00:01:02 --wait --timeout 60s
ctl provision db-01 --image golden --mac 52:54:00:00:02:01 --chap --wait --timeout 60s
ctl get nodes -o wide

for n in web-01 web-02 db-01; do node_phase_is "$n" Ready || die "$n is not Ready"; done
log "all three nodes Ready: each has its own target IQN and ACL for its initiator"

if $KEEP; then
	echo "sanbootctl: $BIN/sanbootctl --endpoints $API_ADDR   (Ctrl-C stops everything)"
	wait "$CP_PID"
fi
