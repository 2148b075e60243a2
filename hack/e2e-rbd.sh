#!/usr/bin/env bash
# e2e-rbd.sh: storage hosts whose disks live in Ceph. A real Ceph cluster
# (hack/ceph-cluster.sh: 1 mon, 1 mgr, 1 OSD, cephx, loopback), a control
# plane and two agents with --store=rbd on one pool (a storage domain) and
# the tgt driver (tgt's rbd backing store), checked from outside by real
# initiators (libiscsi, qemu) and the rbd tool: E2E_NODES (20) nodes read
# back byte for byte by their own initiators and refused to others; kill -9
# of one agent moves its nodes to the other, which serves the same bytes
# (nothing copied), and when it returns nothing is served twice; each
# node's boot script names its agent's portal, then the other agent's
# (its failover agent, also in get nodes -o wide), and the failover path
# of a script served before the kill reads the moved disk; a snapshot
# becomes an image (an RBD clone, no copy) whose new node sees the write;
# a snapshot past the clone-depth limit is flattened in the background
# and says so; a node deleted while its agent is dead is torn down by the
# other agent; an image with clones cannot be removed; the pool is empty
# after deprovisioning. Needs root (tgtd).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in tgtd tgtadm iscsi-inq qemu-io qemu-img ceph-mon ceph-osd rbd; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: tgt tgt-rbd libiscsi-bin qemu-utils qemu-block-extra ceph-mon ceph-mgr ceph-osd ceph-common)"
done
[ -e /usr/lib/tgt/backing-store/bs_rbd.so ] || die "tgt's rbd backing store is missing: install tgt-rbd (hack/install-deps.sh)"
[ "$(id -u)" = 0 ] || die "needs root: tgtd"
N=${E2E_NODES:-20}
checks=0
pass() { checks=$((checks + 1)); }

WORK=$(mktemp -d /tmp/sanboot-e2e-rbd.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; hack/ceph-cluster.sh down "$WORK/ceph" || true; echo "logs: $WORK"' EXIT
build_binaries "$BIN"

log "Ceph cluster"
eval "$(hack/ceph-cluster.sh up "$WORK/ceph")"
admin_rbd() { rbd --conf "$CEPH_CONF" -p "$CEPH_POOL" "$@"; }

declare -A PORTAL CTL
for a in s1 s2; do PORTAL[$a]=127.0.0.1:$(free_port) CTL[$a]=$((1000 + RANDOM % 30000)); done
TTL=4
# agent NAME: start agent NAME with its own tgtd, on the shared pool.
agent() {
	AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control="${CTL[$1]}" --portal "${PORTAL[$1]}"
		--store=rbd --rbd-pool "$CEPH_POOL" --ceph-conf "$CEPH_CONF" --ceph-user "$CEPH_USER"
		--lease-ttl "${TTL}s" --resync-interval 5s --rbd-max-clone-depth 2)
	start_agent "$WORK" "$1"
	eval "PID_$1=$AGENT_PID"
}
log "control plane; agents s1 (tgt on ${PORTAL[s1]}) and s2 (${PORTAL[s2]}), both on pool $CEPH_POOL as client.$CEPH_USER"
start_controlplane "$WORK"
agent s1
agent s2
ctl get agents -o wide
for a in s1 s2; do
	ctl get agents $a -o json | grep '"cloneMode": *"rbd"' >/dev/null || die "agent $a does not report rbd clones"
	ctl get agents $a -o json | grep "\"storageDomain\": *\"rbd:.*/$CEPH_POOL\"" >/dev/null || die "agent $a reports no storage domain"
done
[ "$(ctl get agents s1 -o jsonpath='{.record.storageDomain}')" = "$(ctl get agents s2 -o jsonpath='{.record.storageDomain}')" ] ||
	die "two agents on one pool report different storage domains"
pass

log "import an image (64 MiB, 4 MiB of it random data): an RBD image with a protected snapshot"
truncate -s 64M "$WORK/golden.raw"
head -c 4M /dev/urandom | dd of="$WORK/golden.raw" bs=1M seek=8 conv=notrunc status=none
GOLDEN_SHA=$(sha256sum <"$WORK/golden.raw" | cut -d' ' -f1)
ctl image import golden "$WORK/golden.raw" --wait --timeout 180s
admin_rbd snap ls img.default.golden | grep 'sanboot.*yes' >/dev/null || admin_rbd snap ls img.default.golden --format json | grep '"protected":"true"' >/dev/null ||
	die "img.default.golden has no protected snapshot"
pass

log "$N nodes: each disk an RBD clone of the image"
for i in $(seq -f %02g 1 "$N"); do ctl provision "n$i" --image golden >/dev/null; done
nodes=$(seq -f "n%02g" 1 "$N" | tr '\n' ' ')
# shellcheck disable=SC2086
ctl wait node $nodes --for=ready --timeout=600s
ctl get nodes -o wide | sed -n 1,5p
for i in $(seq -f %02g 1 "$N"); do
	admin_rbd info "disk.default.n$i" --format json | grep '"image":"img.default.golden"' >/dev/null || die "disk of n$i is not a clone of the image"
done
pass

T() { echo "iqn.2026-11.io.sanboot:default.$1"; }
I() { echo "iqn.2026-11.io.sanboot:initiator.default.$1"; }
# where NODE is served now (the portal its status reports)
portal() { ctl get nodes "$1" -o jsonpath='{.status.portals[0]}'; }
served_by() { ctl get nodes "$1" -o jsonpath='{.status.agent}'; }
iscsi_opts() { echo "driver=iscsi,transport=tcp,portal=$(portal "$1"),target=$(T "$1"),lun=1,initiator-name=$(I "$1")"; }

log "every node's disk, read by its own initiator, is the image byte for byte; another node's initiator is refused"
for i in $(seq -f %02g 1 "$N"); do
	qemu-img convert --image-opts "$(iscsi_opts "n$i")" -O raw "$WORK/read.raw"
	[ "$(sha256sum <"$WORK/read.raw" | cut -d' ' -f1)" = "$GOLDEN_SHA" ] || die "n$i reads other bytes than the image"
done
rm -f "$WORK/read.raw"
P1=$(portal n01)
if iscsi-inq -i "$(I n02)" "iscsi://$P1/$(T n01)/1" >/dev/null 2>&1; then die "n02's initiator logged in to n01"; fi
if iscsi-inq -i iqn.2026-11.io.example:intruder "iscsi://$P1/$(T n01)/1" >/dev/null 2>&1; then die "a stranger logged in to n01"; fi
on_s1=$(for n in $nodes; do if [ "$(served_by "$n")" = s1 ]; then echo "$n"; fi; done | tr '\n' ' ')
[ -n "$on_s1" ] && [ "$(echo "$on_s1" | wc -w)" -lt "$N" ] || die "the nodes are not spread over both agents (on s1: $on_s1)"
echo "on s1: $on_s1"
pass

log "each node's failover agents are the other agent of the pool; its boot script tries that agent's portal when its own fail"
for n in $nodes; do
	a=$(served_by "$n")
	other=s1
	[ "$a" = s1 ] && other=s2
	[ "$(ctl get nodes "$n" -o jsonpath='{.status.failoverAgents}')" = "[$other]" ] || [ "$(ctl get nodes "$n" -o jsonpath='{.status.failoverAgents[0]}')" = "$other" ] ||
		die "$n on $a: failover agents $(ctl get nodes "$n" -o jsonpath='{.status.failoverAgents}'), want $other"
done
ctl get nodes -o wide | grep 'FAILOVER' >/dev/null || die "get nodes -o wide has no FAILOVER column"
ctl describe node n01 | grep 'Failover to: *s[12]' >/dev/null || die "describe node n01 does not say where it fails over to"
uri() { echo "iscsi:${PORTAL[$1]%:*}::${PORTAL[$1]##*:}:1:$(T "$2")"; }
pass

log "a write through iSCSI lands in n01's clone only"
qemu-io --image-opts "$(iscsi_opts n01)" -c "write -P 0xa5 1M 1M" >/dev/null
qemu-io --image-opts "$(iscsi_opts n01)" -c "read -P 0xa5 1M 1M" | grep "read 1048576/1048576" >/dev/null || die "cannot read back what was written"
qemu-io --image-opts "$(iscsi_opts n02)" -c "read -P 0 1M 1M" | grep "read 1048576/1048576" >/dev/null || die "n01's write shows in n02"
admin_rbd export --no-progress img.default.golden "$WORK/golden-now.raw" >/dev/null
[ "$(sha256sum <"$WORK/golden-now.raw" | cut -d' ' -f1)" = "$GOLDEN_SHA" ] || die "the write reached the image"
pass

log "kill -9 agent s1 (its tgtd dies with it): its nodes move to s2 of the same pool, nothing copied, same bytes"
X=$(echo "$on_s1" | cut -d' ' -f1)
# The script $X holds before s1 dies (a node that spent its boot token
# keeps it): s1's portal first, s2's as the failover path.
ctl boot-script "$X" >"$WORK/script-before.ipxe"
grep -q "^sanboot $(uri s1 "$X") || goto sanboot-failover\$" "$WORK/script-before.ipxe" &&
	grep -q "^sanboot $(uri s2 "$X") || goto sanboot-retry\$" "$WORK/script-before.ipxe" ||
	die "$X's boot script does not name s1's portal, then s2's: $(grep '^sanboot' "$WORK/script-before.ipxe")"
qemu-io --image-opts "$(iscsi_opts "$X")" -c "write -P 0x6b 3M 1M" >/dev/null
t0=$(date +%s%N)
kill -9 "$PID_s1"
for n in $on_s1; do
	wait_until 120 "$n served by s2" sh -c "[ \"\$('$BIN/sanbootctl' get nodes $n -o jsonpath='{.status.agent}')\" = s2 ] && '$BIN/sanbootctl' get nodes $n | grep Ready >/dev/null"
done
FAILOVER_MS=$((($(date +%s%N) - t0) / 1000000))
echo "all of s1's nodes Ready on s2 ${FAILOVER_MS} ms after kill -9 (lease TTL ${TTL}s)"
for n in $on_s1; do
	[ "$(portal "$n")" = "${PORTAL[s2]}" ] || die "$n reports portal $(portal "$n"), want s2's ${PORTAL[s2]}"
done
qemu-io --image-opts "$(iscsi_opts "$X")" -c "read -P 0x6b 3M 1M" | grep "read 1048576/1048576" >/dev/null || die "$X lost its write in the move"
qemu-img convert --image-opts "$(iscsi_opts "$X")" -O raw "$WORK/moved.raw"
admin_rbd export --no-progress "disk.default.$X" "$WORK/rbd.raw" >/dev/null
cmp -s "$WORK/moved.raw" "$WORK/rbd.raw" || die "$X read through s2 differs from its RBD image"
rm -f "$WORK/moved.raw" "$WORK/rbd.raw"
# The dead tgtd's librbd may still hold the exclusive lock until its watch
# times out (~30 s): a write then waits for the lock and succeeds.
timeout 120 qemu-io --image-opts "$(iscsi_opts "$X")" -c "write -P 0x5c 2M 1M" >/dev/null || die "$X cannot be written after the move"
pass

log "after the failover: $X's boot script names s2's portal first and no failover agent (s1 is dead); the failover path of the script served before reads $X's disk"
ctl boot-script "$X" >"$WORK/script-after.ipxe"
grep -q "^sanboot $(uri s2 "$X") || goto sanboot-retry\$" "$WORK/script-after.ipxe" || die "$X's script after the move: $(grep '^sanboot' "$WORK/script-after.ipxe")"
if grep -q "${PORTAL[s1]%:*}::${PORTAL[s1]##*:}" "$WORK/script-after.ipxe"; then die "$X's script after the move still names the dead s1"; fi
[ -z "$(ctl get nodes "$X" -o jsonpath='{.status.failoverAgents[0]}')" ] || die "$X has failover agents with s1 dead"
# iscsi:HOST::PORT:LUN:IQN of the old script's failover line, read as iPXE would log in.
alt=$(grep -o "^sanboot iscsi:[^ ]* || goto sanboot-retry" "$WORK/script-before.ipxe" | head -1 | cut -d' ' -f2)
IFS=: read -r _ ahost _ aport alun aiqn <<<"$alt"
qemu-img convert --image-opts "driver=iscsi,transport=tcp,portal=$ahost:$aport,target=$aiqn,lun=$alun,initiator-name=$(I "$X")" -O raw "$WORK/alt.raw"
admin_rbd export --no-progress "disk.default.$X" "$WORK/rbd.raw" >/dev/null
cmp -s "$WORK/alt.raw" "$WORK/rbd.raw" || die "$X read through the old script's failover path ($alt) differs from its RBD image"
rm -f "$WORK/alt.raw" "$WORK/rbd.raw"
pass

log "s1 returns: it serves none of the nodes that moved (nothing served twice)"
agent s1
sleep 12 # two resyncs
left=$(tgtadm -C "${CTL[s1]}" --lld iscsi --mode target --op show | grep -c "iqn.2026-11.io.sanboot" || true)
[ "$left" = 0 ] || die "s1 serves $left sanboot targets after its nodes moved to s2"
for n in $on_s1; do [ "$(served_by "$n")" = s2 ] || die "$n moved back to $(served_by "$n")"; done
wait_until 30 "$X fails over to s1 again" sh -c "[ \"\$('$BIN/sanbootctl' get nodes $X -o jsonpath='{.status.failoverAgents[0]}')\" = s1 ]"
ctl boot-script "$X" | grep "^sanboot $(uri s1 "$X") || goto sanboot-retry\$" >/dev/null || die "$X's boot script does not name the returned s1 as its failover path"
pass

log "snapshot n01 into an image (an RBD clone of n01's disk, no copy); n-snap from it sees n01's write"
ctl snapshot create n01 n01-snap --wait --timeout 120s
admin_rbd info img.default.n01-snap --format json | grep '"image":"disk.default.n01"' >/dev/null || die "the snapshot image is not a clone of n01's disk"
ctl provision n-snap --image n01-snap --wait --timeout 120s
qemu-io --image-opts "$(iscsi_opts n-snap)" -c "read -P 0xa5 1M 1M" | grep "read 1048576/1048576" >/dev/null ||
	die "n-snap does not hold the bytes written to n01 before the snapshot"
pass

log "a snapshot of n-snap (4 images deep, limit 2): published at once, flattened in the background, reported; its node reads its bytes"
qemu-io --image-opts "$(iscsi_opts n-snap)" -c "write -P 0x3c 5M 1M" >/dev/null
ctl snapshot create n-snap snap2 --wait --timeout 120s
wait_until 120 "snap2 flat and reported flat" sh -c "! rbd --conf '$CEPH_CONF' -p '$CEPH_POOL' info img.default.snap2 --format json | grep '\"parent\"' >/dev/null &&
	[ \"\$('$BIN/sanbootctl' get images snap2 -o jsonpath='{.status.replicas[0].phase} {.status.replicas[0].cloneDepth} {.status.replicas[0].flattening}')\" = 'Ready 0 false' ]"
grep -h "flattening an image in the background" "$WORK"/agent-s*.log | grep "img.default.snap2.*depth=4" >/dev/null ||
	die "no agent says it flattened snap2 (4 deep) in the background: $(grep -h flatten "$WORK"/agent-s*.log)"
ctl get images snap2 -o wide
ctl provision n-snap2 --image snap2 --wait --timeout 120s
qemu-io --image-opts "$(iscsi_opts n-snap2)" -c "read -P 0x3c 5M 1M" | grep "read 1048576/1048576" >/dev/null || die "n-snap2 lacks the write to n-snap"
qemu-io --image-opts "$(iscsi_opts n-snap2)" -c "read -P 0xa5 1M 1M" | grep "read 1048576/1048576" >/dev/null || die "n-snap2 lacks the write to n01"
pass

log "an image with clones cannot be removed, and the refusal names them"
set +e
ctl image rm golden 2>"$WORK/err"
rc=$?
set -e
[ "$rc" = 5 ] && grep -q n01 "$WORK/err" || die "image rm golden with $N nodes on it: exit $rc, $(cat "$WORK/err")"
admin_rbd info img.default.golden >/dev/null || die "the refused rm removed the RBD image"
pass

log "a node deleted while its agent is dead is torn down by the other agent of the pool: its disk leaves the pool"
Y=$(served_by n-snap2)
Z=s1
[ "$Y" = s1 ] && Z=s2
eval "kill -9 \$PID_$Y"
ctl deprovision n-snap2
# $Y stays dead: only $Z can tear n-snap2 down. The dead tgtd's watch on
# the disk times out (~30 s) before rbd rm works.
wait_until 180 "n-snap2 gone, torn down by $Z" sh -c "! '$BIN/sanbootctl' get nodes n-snap2 >/dev/null 2>&1"
if admin_rbd info disk.default.n-snap2 >/dev/null 2>&1; then die "n-snap2's disk is still in the pool"; fi
agent "$Y"
pass

log "deprovision everything, remove the images: the pool is empty"
# shellcheck disable=SC2086
ctl deprovision $nodes n-snap --wait --timeout 600s
for a in s1 s2; do
	left=$(tgtadm -C "${CTL[$a]}" --lld iscsi --mode target --op show | grep -c "iqn.2026-11.io.sanboot" || true)
	[ "$left" = 0 ] || die "$left sanboot targets left in $a's tgtd after deprovision"
done
ctl snapshot rm snap2 2>/dev/null || ctl image rm snap2
ctl snapshot rm n01-snap 2>/dev/null || ctl image rm n01-snap
ctl image rm golden
end=$((SECONDS + 120))
until [ -z "$(admin_rbd ls)" ]; do
	if ((SECONDS > end)); then
		for img in $(admin_rbd ls); do
			echo "left: $img: $(admin_rbd info "$img" --format json) snaps: $(admin_rbd snap ls "$img" --format json) status: $(admin_rbd status "$img" --format json)"
		done
		die "the pool is not empty 120 s after the last deletion: $(admin_rbd ls | tr '\n' ' ')"
	fi
	sleep 1
done
pass
echo "e2e-rbd: $checks passed, 0 failed"
