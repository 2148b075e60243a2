#!/usr/bin/env bash
# e2e-restart.sh: restarting the agent never interrupts a node's iSCSI
# target, a stopped agent shows Unavailable at once (issue 8) while its
# node, still served, stays Ready (issue 13), on the
# host, with real processes: a control plane, tgtd run by this script as
# its own service (as tgt.service runs it in production), and an agent
# using it (--driver=tgt --tgtd=system). A reader reads the node's disk
# through a real initiator, over and over, while the agent is stopped
# (SIGTERM), down, and started again; every read must succeed and return
# the image's bytes. Needs root (tgtd, loop device).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in tgtd tgtadm iscsi-inq mkfs.xfs losetup qemu-img; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh"
done
[ "$(id -u)" = 0 ] || die "needs root: loop devices and tgtd"

WORK=$(mktemp -d /tmp/sanboot-e2e-restart.XXXXXX)
BIN=$WORK/bin
TGTD_PID=
READER_PID=
SESSION_PID=
cleanup() {
	[ -n "$READER_PID" ] && kill "$READER_PID" 2>/dev/null || true
	[ -n "$SESSION_PID" ] && kill "$SESSION_PID" 2>/dev/null || true
	stop_all
	if [ -n "$TGTD_PID" ]; then # tgtd leaves only when told to
		tgtadm -C "$CTL" --mode system --op delete >/dev/null 2>&1 || true
		stop_pid "$TGTD_PID"
	fi
	unmount_all
	echo "logs and data: $WORK"
}
trap cleanup EXIT
build_binaries "$BIN"

PORTAL=127.0.0.1:$(free_port)
CTL=$((1000 + RANDOM % 30000))
STORE_DIR=$WORK/store
mount_fs xfs "$WORK/store.img" "$STORE_DIR" 1G

log "tgtd on $PORTAL as its own service (control socket $CTL)"
tgtd -f -C "$CTL" --iscsi "portal=$PORTAL" >>"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
wait_until 30 "tgtd answers" tgtadm -C "$CTL" --lld iscsi --mode target --op show

AGENT_FLAGS=(--driver=tgt --tgtd=system --tgtd-control="$CTL" --portal "$PORTAL" --lease-ttl=10s)
start_controlplane "$WORK"
start_agent "$WORK" s1

log "an image and a node"
truncate -s 16M "$WORK/golden.raw"
head -c 2M /dev/urandom | dd of="$WORK/golden.raw" bs=1M seek=4 conv=notrunc status=none
GOLDEN_SHA=$(sha256sum <"$WORK/golden.raw" | cut -d' ' -f1)
ctl image import golden "$WORK/golden.raw" --wait --timeout 120s
ctl provision n1 --image golden --wait --timeout 60s
T1=iqn.2026-11.io.sanboot:default.n1
I1=iqn.2026-11.io.sanboot:initiator.default.n1
URL="driver=iscsi,transport=tcp,portal=$PORTAL,target=$T1,lun=1,initiator-name=$I1"

log "a reader reads n1's disk through iSCSI, again and again"
(
	while :; do
		if qemu-img convert --image-opts "$URL" -O raw "$WORK/read.raw" 2>>"$WORK/reader.err" &&
			[ "$(sha256sum <"$WORK/read.raw" | cut -d' ' -f1)" = "$GOLDEN_SHA" ]; then
			echo ok
		else
			echo FAILED
		fi
	done >"$WORK/reads"
) &
READER_PID=$!
wait_until 60 "a first read" grep -q ok "$WORK/reads"
# And one long session, as a booted node holds: a read of the first MiB
# (zeros) every 0.5 s for 30 s, over one login, across the restart.
session=()
for _ in $(seq 60); do session+=(-c "read -P 0 0 1M" -c "sleep 500"); done
qemu-io --image-opts "$URL" "${session[@]}" >"$WORK/session.out" 2>&1 &
SESSION_PID=$!

checking "systemctl stop, in effect: SIGTERM; the agent shows Unavailable at once"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || die "the agent exited with status $? on SIGTERM"
start=$SECONDS
agent_state_is s1 Unavailable || die "the agent is not Unavailable right after it stopped (its lease must be revoked, not left to expire)"
grep -q "lease revoked" "$WORK/agent-s1.log" || die "the agent did not log that it revoked its lease"
node_phase_is n1 Ready || die "n1 is not Ready while its agent is stopped and its target still served: $(ctl get nodes n1 -o json)"
ctl get nodes n1 -o json | grep "stopped at .* left the target serving" >/dev/null || die "n1 does not say that its agent stopped leaving the target served"
ctl get nodes n1 -o json | grep '"reason": *"AgentStopped"' >/dev/null || die "n1's AgentAvailable condition does not say AgentStopped"
reads_before=$(grep -c ok "$WORK/reads")
wait_until 60 "reads while the agent is down" sh -c "[ \$(grep -c ok '$WORK/reads') -ge $((reads_before + 3)) ]"
echo "agent down for $((SECONDS - start))s; reads meanwhile: $(($(grep -c ok "$WORK/reads") - reads_before))"

checking "the agent starts again; n1 Ready"
start_agent "$WORK" s1
ctl wait node n1 --for=ready --timeout=60s
reads_before=$(grep -c ok "$WORK/reads")
wait_until 60 "reads after the restart" sh -c "[ \$(grep -c ok '$WORK/reads') -ge $((reads_before + 3)) ]"
kill "$READER_PID"
wait "$READER_PID" 2>/dev/null || true
READER_PID=
wait "$SESSION_PID" || die "the long iSCSI session failed: $(tail -3 "$WORK/session.out")"
good=$(grep -c "read 1048576/1048576" "$WORK/session.out" || true)
[ "$good" = 60 ] && ! grep -qi "fail\|error" "$WORK/session.out" ||
	die "the long iSCSI session read $good of 60 times: $(grep -i "fail\|error" "$WORK/session.out" | head -3)"
checking "no read of n1 failed across the agent's restart"
total=$(wc -l <"$WORK/reads")
failed=$(grep -c FAILED "$WORK/reads" || true)
[ "$failed" = 0 ] || die "$failed of $total reads of n1 failed across the agent's restart: $(tail -3 "$WORK/reader.err")"
ctl deprovision n1 --wait --timeout 60s >/dev/null
echo "e2e-restart: $total reads (new logins) and 60 reads over one session of n1 across a stop and a start of the agent, none failed; $CHECKS passed, 0 failed"
