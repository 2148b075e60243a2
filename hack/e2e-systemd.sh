#!/usr/bin/env bash
# e2e-systemd.sh: sanboot as Debian operators run it, in a Debian 12 guest
# with systemd as PID 1 (hack/guest-image.sh, cached), booted under qemu
# (TCG unless GUEST_ACCEL=kvm):
#   - the .deb (make deb) installs, creates the sanboot user, enables and
#     starts nothing;
#   - `systemctl start` of each unit returns, and the unit is active
#     (running), only once it serves (the API answers at once after it);
#   - `systemctl restart sanboot-agent` keeps a node's iSCSI target
#     readable from the host throughout (a reader on the host, through a
#     forwarded port, reads the disk again and again and compares it);
#   - `systemctl stop sanboot-agent` shows the agent Unavailable at once,
#     and its node Ready still (tgt.service keeps serving it);
#   - journalctl shows the structured (JSON) logs.
# Needs root (for the image), qemu-system-x86, and what guest-image.sh
# needs. The guest's logs and journals land in the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in qemu-system-x86_64 qemu-img; do
	command -v "$tool" >/dev/null || die "$tool is missing (Debian: qemu-system-x86 qemu-utils)"
done

IMG=$(hack/guest-image.sh | tail -1)
WORK=$(mktemp -d /tmp/sanboot-e2e-systemd.XXXXXX)
SHARE=$WORK/share
mkdir -p "$SHARE"
QEMU_PID=
READER_PID=
cleanup() {
	[ -n "$READER_PID" ] && kill "$READER_PID" 2>/dev/null || true
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
	echo "logs: $WORK"
}
trap cleanup EXIT

checking "make deb builds the package"
make --no-print-directory deb >/dev/null
cp "$(ls bin/sanboot_*.deb | sort -V | tail -1)" "$SHARE/sanboot.deb"
cp hack/guest/autorun.sh "$SHARE/autorun.sh"
chmod +x "$SHARE/autorun.sh"
qemu-img create -q -f qcow2 -b "$IMG/root.img" -F raw "$WORK/root.qcow2"

PORT=$(free_port)
ACCEL=${GUEST_ACCEL:-tcg}
log "booting the guest ($ACCEL); its iSCSI port 3260 is 127.0.0.1:$PORT here"
qemu-system-x86_64 -accel "$ACCEL" -cpu max -m 2048 -smp 2 -nographic -monitor none \
	-kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.show_status=1" \
	-drive "file=$WORK/root.qcow2,if=virtio,format=qcow2" \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:3260" -device virtio-net-pci,netdev=n0 \
	-virtfs "local,path=$SHARE,mount_tag=host0,security_model=none,id=host0" \
	-serial "file:$WORK/console.log" >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!

# wait_file FILE SECONDS: the guest's progress markers in the share.
wait_file() {
	local end=$((SECONDS + $2))
	until [ -e "$SHARE/$1" ]; do
		kill -0 "$QEMU_PID" 2>/dev/null || die "the guest stopped before $1: $(tail -5 "$SHARE/autorun.log" 2>/dev/null)"
		((SECONDS < end)) || die "timed out after $2s waiting for the guest's $1: $(tail -5 "$SHARE/autorun.log" 2>/dev/null)"
		sleep 1
	done
}

checking "the guest installs the .deb, starts the units and makes n1 Ready"
wait_file n1-ready 1800
T1=iqn.2026-11.io.sanboot:default.n1
I1=iqn.2026-11.io.sanboot:initiator.default.n1
URL="driver=iscsi,transport=tcp,portal=127.0.0.1:$PORT,target=$T1,lun=1,initiator-name=$I1"
WANT=$(cat "$SHARE/golden.sha256")
checking "the host reads n1's disk through iSCSI, again and again, while the guest restarts the agent"
(
	while :; do
		if qemu-img convert --image-opts "$URL" -O raw "$WORK/read.raw" 2>>"$WORK/reader.err" &&
			[ "$(sha256sum <"$WORK/read.raw" | cut -d' ' -f1)" = "$WANT" ]; then
			echo ok
		else
			echo FAILED
		fi
	done >"$WORK/reads"
) &
READER_PID=$!
wait_until 300 "a first read from the host" grep -q ok "$WORK/reads"
touch "$SHARE/reader-started"
wait_file restart-done 900
kill "$READER_PID"
wait "$READER_PID" 2>/dev/null || true
READER_PID=
touch "$SHARE/reader-stopped"
total=$(wc -l <"$WORK/reads")
failed=$(grep -c FAILED "$WORK/reads" || true)

log "waiting for the guest to finish and power off"
end=$((SECONDS + 900))
while kill -0 "$QEMU_PID" 2>/dev/null; do
	((SECONDS < end)) || die "the guest did not power off"
	sleep 1
done
QEMU_PID=
cat "$SHARE/autorun.log"
checking "the guest's checks (units, restart, stop, journal) passed"
[ "$(cat "$SHARE/autorun.rc" 2>/dev/null)" = 0 ] || die "the guest's checks failed (see above)"
checking "no host read of n1 failed across the agent's restart"
[ "$failed" = 0 ] || die "$failed of $total host reads of n1 failed across systemctl restart sanboot-agent: $(tail -3 "$WORK/reader.err")"
echo "e2e-systemd: $total host reads across the agent's restart, none failed; $CHECKS passed, 0 failed"
