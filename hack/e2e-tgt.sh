#!/usr/bin/env bash
# e2e-tgt.sh: a storage host for real. A control plane and an agent with the
# tgt driver (its own tgtd on a loopback portal) and its store on a loop
# device, checked from outside by a real initiator (libiscsi) and qemu-io.
# E2E_STORE=xfs (default: reflink clones) or ext4 (no reflink: copies).
# Needs root (loop devices, tgtd).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in tgtd tgtadm iscsi-inq iscsi-readcapacity16 iscsi-ls mkfs.xfs losetup qemu-io curl pgrep; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: tgt libiscsi-bin xfsprogs util-linux qemu-utils qemu-block-extra curl procps)"
done
[ "$(id -u)" = 0 ] || die "needs root: loop devices and tgtd"

WORK=$(mktemp -d /tmp/sanboot-e2e-tgt.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; unmount_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"

# The agent finds tgtd in PATH: this tgtd is the real one, unless the test
# holds restarts (the file $HOLD exists), to look at the agent while its
# tgtd is dead.
HOLD=$WORK/hold-tgtd
mkdir -p "$WORK/gate"
printf '#!/bin/sh\n[ -e %q ] && { echo "tgtd held by e2e-tgt.sh" >&2; exit 1; }\nexec %q "$@"\n' "$HOLD" "$(command -v tgtd)" >"$WORK/gate/tgtd"
chmod +x "$WORK/gate/tgtd"
export PATH=$WORK/gate:$PATH

PORTAL=127.0.0.1:$(free_port)
STORE_DIR=$WORK/store
FS=${E2E_STORE:-xfs}
mount_fs "$FS" "$WORK/store.img" "$STORE_DIR" 2G
CTL=$((1000 + RANDOM % 30000))
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$CTL --portal "$PORTAL")
WANT_MODE=$([ "$FS" = xfs ] && echo reflink || echo copy)

log "control plane, and agent s1 with tgt on $PORTAL and its store on $FS ($WANT_MODE clones)"
start_controlplane "$WORK"
start_agent "$WORK" s1
ctl get agents -o wide
ctl get agents s1 -o json | grep "\"cloneMode\": *\"$WANT_MODE\"" >/dev/null || die "the agent does not report $WANT_MODE clones"

checking "import an image (64 MiB, 4 MiB of it random data), two nodes from it (n2 with CHAP)"
truncate -s 64M "$WORK/golden.raw"
head -c 4M /dev/urandom | dd of="$WORK/golden.raw" bs=1M seek=8 conv=notrunc status=none
GOLDEN_SHA=$(sha256sum <"$WORK/golden.raw" | cut -d' ' -f1)
ctl image import golden "$WORK/golden.raw" --wait --timeout 120s
ctl get images golden -o json | grep "\"sha256\": *\"$GOLDEN_SHA\"" >/dev/null || die "the image's recorded sha256 is not the file's"
ctl provision n1 --image golden --wait --timeout 60s
ctl provision n2 --image golden --chap --wait --timeout 60s
ctl get nodes -o wide
check_ready_readable

T1=iqn.2026-11.io.sanboot:default.n1
T2=iqn.2026-11.io.sanboot:default.n2
I1=iqn.2026-11.io.sanboot:initiator.default.n1
I2=iqn.2026-11.io.sanboot:initiator.default.n2
ctl get nodes n1 -o json | grep "\"targetIqn\": *\"$T1\"" >/dev/null || die "n1 has the wrong target IQN"

checking "the right initiator logs in; a wrong one is refused"
iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/1" >/dev/null || die "n1's initiator cannot log in"
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T1/1" >/dev/null 2>&1; then die "another node's initiator logged in to n1"; fi
if iscsi-inq -i iqn.2026-11.io.example:intruder "iscsi://$PORTAL/$T1/1" >/dev/null 2>&1; then die "a stranger logged in to n1"; fi
cap=$(iscsi-readcapacity16 -i "$I1" "iscsi://$PORTAL/$T1/1")
echo "$cap" | grep -E "Total Size:? *67108864|Total size:? *67108864" >/dev/null || { echo "$cap"; die "n1 does not present 64 MiB"; }

checking "CHAP: n2 refuses its own initiator without credentials"
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/1" >/dev/null 2>&1; then die "n2 let its initiator in without CHAP"; fi

iscsi_url() { echo "driver=iscsi,transport=tcp,portal=$PORTAL,target=$1,lun=1,initiator-name=$2"; }

checking "n1's disk read through iSCSI is the image, byte for byte"
qemu-img convert --image-opts "$(iscsi_url "$T1" "$I1")" -O raw "$WORK/n1-read.raw"
[ "$(sha256sum <"$WORK/n1-read.raw" | cut -d' ' -f1)" = "$GOLDEN_SHA" ] || die "n1's disk read through iSCSI differs from the image"

checking "data written through iSCSI lands in n1's clone only"
qemu-io --image-opts "driver=iscsi,transport=tcp,portal=$PORTAL,target=$T1,lun=1,initiator-name=$I1" \
	-c "write -P 0xa5 1M 1M" >/dev/null
qemu-io --image-opts "driver=iscsi,transport=tcp,portal=$PORTAL,target=$T1,lun=1,initiator-name=$I1" \
	-c "read -P 0xa5 1M 1M" | grep "read 1048576/1048576" >/dev/null || die "cannot read back what was written"
cmp -s -n 1048576 -i 1048576:0 "$STORE_DIR/disks/default/n1.raw" <(head -c 1048576 /dev/zero | tr '\0' '\245') ||
	die "n1's disk file does not hold the bytes written through iSCSI"
[ "$(sha256sum <"$STORE_DIR/images/default/golden.raw" | cut -d' ' -f1)" = "$GOLDEN_SHA" ] || die "the write reached the image"

checking "thin disks: 16 MiB written, then discarded, through iSCSI; the clone's blocks come back"
blocks() { stat -c %b "$STORE_DIR/disks/default/n1.raw"; }
b0=$(blocks)
qemu-io --image-opts "$(iscsi_url "$T1" "$I1"),discard=unmap" -c "write -P 0x5a 32M 16M" >/dev/null
b1=$(blocks)
qemu-io --image-opts "$(iscsi_url "$T1" "$I1"),discard=unmap" -c "discard 32M 16M" >/dev/null
b2=$(blocks)
echo "n1's clone: $((b0 / 2048)) MiB allocated, $((b1 / 2048)) MiB after writing 16 MiB, $((b2 / 2048)) MiB after discarding it"
((b1 - b0 >= 30000)) || die "writing 16 MiB did not allocate it (blocks $b0 -> $b1)"
((b1 - b2 >= 30000)) || die "discarding 16 MiB gave nothing back (blocks $b1 -> $b2)"

checking "recovery: kill -9 the agent (its managed tgtd dies with it); restarted, it rebuilds every target"
kill -9 "$AGENT_PID"
wait_until 30 "n1's target gone with tgtd" sh -c "! timeout 10 iscsi-inq -i '$I1' 'iscsi://$PORTAL/$T1/1' >/dev/null 2>&1"
start_agent "$WORK" s1
wait_until 60 "n1 served again" iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/1"
wait_until 60 "n2's target (CHAP) rebuilt" sh -c "tgtadm -C $CTL --lld iscsi --mode target --op show | grep '$T2\$' >/dev/null"
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/1" >/dev/null 2>&1; then die "n2 came back without CHAP"; fi
ctl wait node n1 n2 --for=ready --timeout=60s
check_ready_readable

checking "a dead tgtd is not invisible: kill -9 tgtd with its restart held; the nodes, the agent and /readyz say so"
readyz() { curl -s -o "$WORK/readyz" -w '%{http_code}' "http://$AGENT_METRICS/readyz"; }
node_says() { local j; j=$(ctl get nodes "$1" -o json) && grep -q "\"phase\": *\"$2\"" <<<"$j" && grep -q "$3" <<<"$j"; }
[ "$(readyz)" = 200 ] || die "/readyz before the kill: $(cat "$WORK/readyz")"
TGTD_PID=$(pgrep -P "$AGENT_PID" -x tgtd) || die "no tgtd child of the agent (pid $AGENT_PID)"
touch "$HOLD"
kill -9 "$TGTD_PID"
wait_until 60 "n1 Unavailable, saying tgtd died" node_says n1 Unavailable "tgtd.*died"
wait_until 60 "n2 Unavailable too" node_phase_is n2 Unavailable
ctl get nodes n1 -o json | grep '"reason": *"Unavailable"' >/dev/null || die "n1's Ready condition does not say Unavailable"
wait_until 60 "agent s1 NotReady" agent_state_is s1 NotReady
ctl get agents -o wide
ctl get agents s1 -o json | grep '"message": *".*tgtd.*died' >/dev/null || die "get agents does not say that tgtd died"
[ "$(readyz)" = 503 ] && grep -q "tgtd.*died" "$WORK/readyz" || die "/readyz with tgtd dead: $(cat "$WORK/readyz")"
if iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/1" >/dev/null 2>&1; then die "n1 is read although tgtd is dead"; fi
check_ready_readable # no node says Ready now
checking "tgtd released: the agent starts it again and rebuilds the targets"
rm -f "$HOLD"
wait_until 120 "n1 Ready again" node_phase_is n1 Ready
iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/1" >/dev/null || die "n1 says Ready but its initiator cannot read it"
ctl wait node n1 n2 --for=ready --timeout=60s
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/1" >/dev/null 2>&1; then die "n2 came back without CHAP"; fi
wait_until 60 "agent s1 Ready again" agent_state_is s1 Ready
wait_until 60 "/readyz 200 again" sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://$AGENT_METRICS/readyz)\" = 200 ]"
[ "$(pgrep -P "$AGENT_PID" -x tgtd)" != "$TGTD_PID" ] || die "the same tgtd runs"
grep -q "tgtd died; starting it again" "$WORK/agent-s1.log" || die "the agent log does not say that tgtd died"
check_ready_readable

checking "a system tgtd (its own service): agent s2 with --tgtd=system, node n4 on it"
SYS_CTL=$((CTL + 1))
SYS_PORTAL=127.0.0.1:$(free_port)
start_system_tgtd() {
	"$WORK/gate/tgtd" -f -C "$SYS_CTL" --iscsi "portal=$SYS_PORTAL" >>"$WORK/system-tgtd.log" 2>&1 &
	SYS_TGTD=$!
	SANBOOT_PIDS+=("$SYS_TGTD")
	wait_until 30 "system tgtd on $SYS_PORTAL" tgtadm -C "$SYS_CTL" --mode system --op show
}
start_system_tgtd
mount_fs "$FS" "$WORK/store2.img" "$WORK/store2" 1G
S1_PID=$AGENT_PID S1_METRICS=$AGENT_METRICS
AGENT_FLAGS=(--driver=tgt --tgtd=system --tgtd-control=$SYS_CTL --portal "$SYS_PORTAL")
STORE_DIR=$WORK/store2 start_agent "$WORK" s2
ctl provision n4 --image golden --agent s2 --chap --wait --timeout 120s
check_ready_readable

checking "a graceful stop of s2 leaves n4 served: it stays Ready and its initiator reads it"
stop_pid "$AGENT_PID"
wait_until 30 "agent s2 Unavailable" agent_state_is s2 Unavailable
node_says n4 Ready "stopped at .* left the target serving" || die "n4 does not say Ready with its agent stopped: $(ctl get nodes n4 -o json)"
ctl get nodes n4 -o wide
before=$READY_CHECKED
check_ready_readable
((READY_CHECKED > before)) || die "n4 was not read while its agent was stopped"
STORE_DIR=$WORK/store2 start_agent "$WORK" s2
ctl wait node n4 --for=ready --timeout=60s

checking "the system tgtd dies: n4 Unavailable, s2 NotReady, /readyz 503; tgtd back (as systemd would): rebuilt, read again"
kill -9 "$SYS_TGTD"
wait_until 60 "n4 Unavailable, saying tgtd does not answer" node_says n4 Unavailable "does not answer"
wait_until 60 "agent s2 NotReady" agent_state_is s2 NotReady
[ "$(readyz)" = 503 ] && grep -q "does not answer" "$WORK/readyz" || die "/readyz of s2 with its tgtd dead: $(cat "$WORK/readyz")"
check_ready_readable
start_system_tgtd
wait_until 60 "n4 Ready again" node_phase_is n4 Ready
wait_until 60 "agent s2 Ready again" agent_state_is s2 Ready
check_ready_readable
ctl deprovision n4 --wait --timeout 60s
stop_pid "$AGENT_PID"
tgtadm -C "$SYS_CTL" --mode system --op delete || true
AGENT_PID=$S1_PID AGENT_METRICS=$S1_METRICS
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$CTL --portal "$PORTAL")

checking "snapshot n1 into an image, provision n3 from it: n3 sees n1's write"
ctl snapshot create n1 n1-snap --wait --timeout 60s
ctl snapshot ls
ctl provision n3 --image n1-snap --wait --timeout 60s
check_ready_readable
T3=iqn.2026-11.io.sanboot:default.n3 I3=iqn.2026-11.io.sanboot:initiator.default.n3
qemu-io --image-opts "$(iscsi_url "$T3" "$I3")" -c "read -P 0xa5 1M 1M" | grep "read 1048576/1048576" >/dev/null ||
	die "n3 does not hold the bytes written to n1 before the snapshot"
set +e
ctl image rm golden 2>"$WORK/err"; rc=$?
set -e
[ "$rc" = 5 ] && grep -q n1-snap "$WORK/err" || die "image rm of a snapshot's parent: exit $rc, $(cat "$WORK/err")"

checking "export the snapshot: the bytes of n1's disk, checksum verified"
ctl image export n1-snap "$WORK/n1-snap.raw"
cmp -s "$WORK/n1-snap.raw" "$STORE_DIR/disks/default/n1.raw" || die "the export differs from n1's disk"

checking "deprovision removes the target and the disk"
ctl deprovision n1 n2 n3 --wait --timeout 60s
if iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/1" >/dev/null 2>&1; then die "n1's target still serves after deprovision"; fi
[ ! -e "$STORE_DIR/disks/default/n1.raw" ] || die "n1's disk is still there"
left=$(tgtadm -C "$CTL" --lld iscsi --mode target --op show | grep -c "iqn.2026-11.io.sanboot" || true)
[ "$left" = 0 ] || die "$left sanboot targets left in tgtd after deprovision"
[ -z "$(ls -A "$STORE_DIR/disks/default" 2>/dev/null)" ] || die "disks left: $(ls "$STORE_DIR/disks/default")"
ctl snapshot rm n1-snap
ctl image rm golden
checking "property: $READY_CHECKED times a node said Ready, its own initiator read its disk"
((READY_CHECKED >= 15)) || die "only $READY_CHECKED Ready nodes were read: the property was hardly checked"
echo "e2e-tgt ($FS store): $CHECKS passed, 0 failed"
