#!/usr/bin/env bash
# e2e-boot.sh: real nodes boot from their clones. A control plane (with its
# boot server) and an agent with the tgt driver (its own tgtd on a loopback
# portal, its store on a reflink XFS) serve a tiny golden image
# (hack/build-image.sh: BIOS and UEFI) imported through sanbootctl. qemu
# guests under TCG run iPXE from Debian's ipxe package: BIOS nodes
# ipxe.lkrn (doing what DHCP and a NIC's iPXE ROM would do), UEFI nodes
# OVMF (Debian's ovmf) running ipxe.efi from a small FAT disk, which gets
# the boot server's /boot.ipxe from DHCP (qemu's user network, bootfile=).
# Each fetches the generic /boot.ipxe, is sent on to its own script by its
# MAC address (telling the server its ${platform}), sanboots from its clone
# and prints "SANBOOT-OK <node>" (the node's name from the iBFT) and the
# firmware it booted under on its serial console.
#
# Every node's disk has two paths: the agent advertises first a portal that
# accepts connections but never answers (a frozen tgtd: a hung storage
# host; later one where nothing listens), then its real one. So every boot
# also proves that iPXE gets every path and boots when the first one does
# not answer.
#
# Proves: two BIOS nodes (one with mutual CHAP) and a UEFI node (CHAP) boot
# from clones of the same image, each through the second of two portals; a
# wrong CHAP secret does not boot (and the node recovers by fetching its
# script again); a node powered on before it exists waits and boots once it
# is provisioned, from a snapshot of another node, whose data it has.
# describe node lists no session on n1's target before n1 is powered on,
# n1's initiator (from its address) while it boots, none once it is off.
# An image that names its own EFI boot loader (--efi-boot-path) has its
# nodes' scripts boot that file, and a snapshot of such a node inherits it;
# a bad path is refused before anything is uploaded.
#
# With --bench it then times provision --wait + power-on to the marker for 1
# node, and boot storms: STORM_N (default 4) nodes powered on at once, BIOS
# then UEFI, from power-on to the last marker (figures for
# docs/benchmarks.md; `make bench` runs it).
#
# The guest reaches the host's loopback as 10.0.2.2 (qemu's user network),
# so the agent advertises 10.0.2.2:PORT and the boot server's URL is
# http://10.0.2.2:PORT. Needs root (loop devices, tgtd).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
BENCH=false
[ "${1:-}" = --bench ] && BENCH=true
for tool in tgtd tgtadm mkfs.xfs losetup qemu-system-x86_64 qemu-io extlinux busybox cpio dpkg-deb mkfs.fat mcopy; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: tgt xfsprogs util-linux qemu-system-x86 qemu-utils qemu-block-extra extlinux syslinux-common busybox-static cpio dosfstools mtools)"
done
OVMF=/usr/share/ovmf/OVMF.fd
[ -f "$OVMF" ] || die "$OVMF is missing: run hack/install-deps.sh (Debian: ovmf)"
[ "$(id -u)" = 0 ] || die "needs root: loop devices and tgtd"

WORK=$(mktemp -d /tmp/sanboot-e2e-boot.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; unmount_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"

log "the golden image (hack/build-image.sh) and iPXE (Debian's ipxe package)"
hack/build-image.sh "$WORK/golden.raw"
IPXE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}/ipxe
if [ ! -f "$IPXE/boot/ipxe.lkrn" ]; then
	rm -rf "$IPXE.tmp"
	dpkg-deb -x "$(fetch_deb ipxe)" "$IPXE.tmp"
	rm -rf "$IPXE"
	mv "$IPXE.tmp" "$IPXE"
fi
LKRN=$IPXE/boot/ipxe.lkrn
# UEFI nodes: OVMF boots \EFI\BOOT\BOOTX64.EFI = Debian's ipxe.efi from a
# FAT disk (shared read-only by every UEFI guest), as a NIC's own UEFI iPXE
# would run.
mkfs.fat -C -n IPXE "$WORK/ipxe-efi.img" 4096 >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i "$WORK/ipxe-efi.img" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -i "$WORK/ipxe-efi.img" "$IPXE/boot/ipxe.efi" ::/EFI/BOOT/BOOTX64.EFI

ISCSI_PORT=$(free_port)
PORTAL=127.0.0.1:$ISCSI_PORT
DEAD_PORT=$(free_port) # the first path of every disk: a hung portal (below)
BOOT_PORT=$(free_port)
STORE_DIR=$WORK/store
mount_fs xfs "$WORK/store.xfs" "$STORE_DIR" 2G
AGENT_FLAGS=(--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal "$PORTAL"
	--advertise-portal "10.0.2.2:$DEAD_PORT" --advertise-portal "10.0.2.2:$ISCSI_PORT")

# The first path of every disk is a hung storage host: a tgtd on
# 127.0.0.1:$DEAD_PORT, frozen with SIGSTOP once it listens. The kernel
# still accepts TCP connections on its portal; no iSCSI answer ever comes.
HUNG_CTL=$((31000 + RANDOM % 1000))
tgtd -f -C "$HUNG_CTL" --iscsi "portal=127.0.0.1:$DEAD_PORT" >"$WORK/tgtd-hung.log" 2>&1 &
HUNG_PID=$!
SANBOOT_PIDS+=("$HUNG_PID")
wait_until 30 "the hung portal's tgtd on 127.0.0.1:$DEAD_PORT" tgtadm -C "$HUNG_CTL" --lld iscsi --mode portal --op show
kill -STOP "$HUNG_PID"

log "control plane (boot server on 127.0.0.1:$BOOT_PORT, http://10.0.2.2:$BOOT_PORT to guests), agent s1 (tgt on $PORTAL; advertises 10.0.2.2:$DEAD_PORT, the hung portal, then 10.0.2.2:$ISCSI_PORT)"
start_controlplane "$WORK" --boot-url "http://10.0.2.2:$BOOT_PORT"
# A short resync: the agent looks at its targets' sessions at every resync,
# and a guest is logged in only while it boots (it powers off after).
start_agent "$WORK" s1 --resync-interval=2s

log "import the golden image through sanbootctl"
ctl image import golden "$WORK/golden.raw" --wait --timeout 120s

# The script the guest's iPXE starts with: what a DHCP server that hands out
# the boot server's /boot.ipxe makes iPXE do.
cat >"$WORK/dhcp.ipxe" <<EOF
#!ipxe
dhcp || dhcp
chain http://10.0.2.2:$BOOT_PORT/boot.ipxe
EOF

# power_on NAME MAC [SCRIPT]: a qemu guest (TCG; KVM here cannot run stock
# guests) with one NIC of MAC, running iPXE with SCRIPT (default: the DHCP
# one); its serial console goes to $WORK/NAME.serial. It powers itself off
# after the marker.
power_on() {
	local name=$1 mac=$2 script=${3:-$WORK/dhcp.ipxe}
	timeout 600 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
		-kernel "$LKRN" -initrd "$script" \
		-netdev user,id=n0 -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=" \
		</dev/null >"$WORK/$name.serial" 2>&1 &
	SANBOOT_PIDS+=("$!")
	VM_PID[$name]=$!
}

# power_on_efi NAME MAC: a UEFI qemu guest (OVMF, TCG) with one NIC of MAC
# that runs ipxe.efi from the shared FAT disk; qemu's DHCP server hands it
# the generic script as its boot file, as a real DHCP server would.
power_on_efi() {
	local name=$1 mac=$2
	timeout 900 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -bios "$OVMF" \
		-drive "file=$WORK/ipxe-efi.img,format=raw,if=none,id=d0,readonly=on" -device virtio-blk-pci,drive=d0,bootindex=0 \
		-netdev "user,id=n0,bootfile=http://10.0.2.2:$BOOT_PORT/boot.ipxe" -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=" \
		</dev/null >"$WORK/$name.serial" 2>&1 &
	SANBOOT_PIDS+=("$!")
	VM_PID[$name]=$!
}

# marker_seen NAME: whether NAME's marker is on its console; fails the test
# at once when its qemu has ended without it (a guest powers itself off
# after the marker, so it is checked again after the guest is seen gone).
declare -A VM_PID
exec 3>&2
marker_seen() {
	serial_has "$1" "SANBOOT-OK $1"$'\r' && return 0
	kill -0 "${VM_PID[$1]}" 2>/dev/null && return 1
	serial_has "$1" "SANBOOT-OK $1"$'\r' && return 0
	{
		echo "FAIL: $1: its qemu ended without the marker; the end of $WORK/$1.serial:"
		tr -d '\r' <"$WORK/$1.serial" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' | grep -av '^\s*$' | tail -15 | sed 's/^/    /'
	} >&3 # the test's stderr (wait_until silences the check's)
	exit 1
}

# serial_has NAME TEXT; serial_text_has NAME TEXT also finds TEXT where
# the console wrapped it (iPXE's BIOS console breaks lines at 80 columns).
serial_has() { grep -aqF "$2" "$WORK/$1.serial"; }
serial_text_has() { tr -d '\r\n' <"$WORK/$1.serial" | grep -aF "$2" >/dev/null; }

# await_marker NAME SECONDS [FIRMWARE]: waits for the guest's marker and
# checks what iPXE told the booted kernel (iBFT): its initiator, its target
# and both paths (target0 the one that does not answer, target1 the one
# it booted through; the booted OS gets both for its multipath); and the
# firmware it booted under (default bios).
await_marker() {
	local name=$1 secs=$2 fw=${3:-bios}
	wait_until "$secs" "SANBOOT-OK $name on $name's serial console (see $WORK/$name.serial)" marker_seen "$name"
	serial_has "$name" "firmware = $fw"$'\r' || die "$name: did not boot under $fw firmware"
	serial_has "$name" "ibft target0/target-name = iqn.2026-11.io.sanboot:default.$name" || die "$name: the iBFT does not name its target"
	serial_has "$name" "ibft initiator/initiator-name = iqn.2026-11.io.sanboot:initiator.default.$name" || die "$name: the iBFT does not name its initiator"
	serial_has "$name" "ibft target0/ip-addr = 10.0.2.2" || die "$name: did not boot from an advertised portal"
	serial_has "$name" "ibft target0/port = $DEAD_PORT" || die "$name: the iBFT's first target is not the first path ($DEAD_PORT)"
	serial_has "$name" "ibft target1/target-name = iqn.2026-11.io.sanboot:default.$name" || die "$name: the iBFT does not describe the second path"
	serial_has "$name" "ibft target1/port = $ISCSI_PORT" || die "$name: the iBFT's second target is not the portal that answers ($ISCSI_PORT)"
	serial_text_has "$name" "booting from iqn.2026-11.io.sanboot:default.$name (2 portals, $([ "$fw" = efi ] && echo efi || echo pcbios) firmware)" || die "$name: its script did not give iPXE both paths, or did not see its firmware"
}

# now_ms: the time in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

PASSED=0
log "two nodes, different MACs; n2 with mutual CHAP"
t0=$(now_ms)
ctl provision n1 --image golden --mac 52:54:00:5b:00:01 --wait --timeout 60s
ctl provision n2 --image golden --mac 52:54:00:5b:00:02 --chap --mutual-chap --wait --timeout 60s
ctl get nodes -o wide
ctl boot-script n2 | grep '^set reverse-password ' >/dev/null || die "n2's script does not carry mutual CHAP credentials"
if ctl get nodes n2 -o json | grep "$(ctl boot-script n2 | sed -n 's/^set password //p')" >/dev/null; then die "get nodes prints n2's CHAP secret"; fi

# sessions_of NAME: the Sessions lines of describe node NAME.
sessions_of() { ctl describe node "$1" | sed -n '/^  Sessions:/,/^Conditions:/p' | sed '$d'; }
# sessions_show NAME PATTERN: whether they match the (grep) pattern.
sessions_show() { sessions_of "$1" | grep "$2" >/dev/null; }
# vm_gone NAME: whether NAME's qemu has ended.
vm_gone() { ! kill -0 "${VM_PID[$1]}" 2>/dev/null; }
NO_SESSION='^  Sessions: *none (no initiator is logged in to the target)$'
sessions_show n1 "$NO_SESSION" || die "describe node n1 lists a session before n1 was powered on: $(sessions_of n1)"

log "both Ready nodes read from this host by their own initiators, with their scripts' credentials"
READY_PORTAL=$PORTAL check_ready_readable
((READY_CHECKED == 2)) || die "$READY_CHECKED of the 2 Ready nodes were read by their own initiators"
# The checks' sessions are gone before the guests' are looked for.
wait_until 60 "describe node n1 without the check's session" sessions_show n1 "$NO_SESSION"
wait_until 60 "describe node n2 without the check's session" sessions_show n2 "$NO_SESSION"
PASSED=$((PASSED + 1))

log "power on n1 and n2: DHCP -> /boot.ipxe -> /boot?mac=... -> sanboot"
power_on n1 52:54:00:5b:00:01
power_on n2 52:54:00:5b:00:02
# iPXE stays logged in while the guest boots (until qemu exits after the
# marker): the agent's resync puts the session in n1's status.
wait_until 240 "describe node n1 listing n1's initiator logged in" \
	sessions_show n1 '^  Sessions: *iqn\.2026-11\.io\.sanboot:initiator\.default\.n1 from 127\.0\.0\.1$'
sessions_of n1 | sed 's/^/    describe n1 while it boots: /'
await_marker n1 240
wait_until 60 "n1's qemu to end after its marker" vm_gone n1
wait_until 60 "describe node n1 without a session once n1 powered off" sessions_show n1 "$NO_SESSION"
await_marker n2 240
echo "n1 and n2 booted from their clones $(($(now_ms) - t0)) ms after the first provision"
serial_has n1 "booting from iqn.2026-11.io.sanboot:default.n1" || die "n1 did not get its own script"
grep -a -E '^(firmware|ibft) ' "$WORK/n2.serial" | tr -d '\r' | sed 's/^/    n2: /'
PASSED=$((PASSED + 1))

log "a UEFI node (OVMF + ipxe.efi, CHAP) boots from a clone of the same image"
ctl provision u1 --image golden --mac 52:54:00:5b:01:01 --chap --wait --timeout 60s
# (Into a file first: grep -q ends at its match, and with pipefail the
# SIGPIPE of a describe still writing would fail the check.)
ctl describe node u1 >"$WORK/u1.before"
grep -q 'Last script fetch: *never' "$WORK/u1.before" || die "describe node u1 does not say it never fetched its script"
grep -q "$NO_SESSION" "$WORK/u1.before" || die "describe node u1 lists a session before u1 was powered on (see $WORK/u1.before)"
power_on_efi u1 52:54:00:5b:01:01
await_marker u1 600 efi
grep -q 'boot script served: node boots.*node.name=u1 .*platform=efi' "$WORK/controlplane.log" || die "the boot server did not learn that u1 is UEFI"
ctl describe node u1 | sed -n '/^Boot:/,/^Conditions:/p' | tee "$WORK/u1.describe"
grep -q 'Last script fetch: .* from 127\.0\.0\.1:' "$WORK/u1.describe" &&
	grep -q 'Firmware: *efi$' "$WORK/u1.describe" &&
	grep -q 'Boot token: *not used$' "$WORK/u1.describe" &&
	grep -q 'Served: *a script that boots from the target$' "$WORK/u1.describe" ||
	die "describe node u1 does not show its last boot-script fetch (see $WORK/u1.describe)"
grep -a -E '^(firmware|ibft) ' "$WORK/u1.serial" | tr -d '\r' | sed 's/^/    u1: /'
PASSED=$((PASSED + 1))

# With a hung path, iPXE (2019) waits for it for ever once every other
# path has failed: sanboot never returns, so a node whose real path refuses
# its login (below) would hang instead of retrying. From here on the first
# portal is one where nothing listens (connection refused): kill -9 the hung
# tgtd (a stopped process dies on SIGKILL; its connections are reset).
log "the first portal: from hung to not listening (kill -9 its tgtd)"
kill -9 "$HUNG_PID"
wait_until 30 "nothing listening on 127.0.0.1:$DEAD_PORT" sh -c "! ss -ltnH 'sport = :$DEAD_PORT' | grep . >/dev/null"

log "a wrong CHAP secret does not boot"
{
	echo '#!ipxe'
	echo 'dhcp || dhcp'
	ctl boot-script n2 | sed -e 1d -e 's/^set password .*/set password WRONGWRONGWRONGWRONG/'
} >"$WORK/n2-wrong.ipxe"
grep -q '^set password WRONGWRONGWRONGWRONG$' "$WORK/n2-wrong.ipxe" || die "could not make a script with a wrong secret"
power_on n2 52:54:00:5b:00:02 "$WORK/n2-wrong.ipxe"
wait_until 240 "n2 failing to log in with a wrong secret" serial_has n2 "node default/n2 could not boot from its disk"
fail_line=$(grep -anF "node default/n2 could not boot from its disk" "$WORK/n2.serial" | head -1 | cut -d: -f1)
if head -n "$fail_line" "$WORK/n2.serial" | grep -a "SANBOOT-OK" >/dev/null; then die "n2 booted with a wrong CHAP secret"; fi
grep -a -B3 "node default/n2 could not boot" "$WORK/n2.serial" | tr -d '\r' | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g; s/^/    n2: /'
log "... and the node recovers: its retry fetches its script again"
await_marker n2 240
PASSED=$((PASSED + 1))

log "a node powered on before it exists waits, then boots from a snapshot of n1"
qio() { qemu-io --image-opts "driver=iscsi,transport=tcp,portal=$PORTAL,target=iqn.2026-11.io.sanboot:default.$1,lun=1,initiator-name=iqn.2026-11.io.sanboot:initiator.default.$1" -c "$2"; }
qio n1 "write -P 0x5b 64k 4k" >/dev/null # in the gap after the MBR, unused
power_on n3 52:54:00:5b:00:03
wait_until 120 "n3 told that no node has its MAC" serial_has n3 "no node has MAC 52:54:00:5b:00:03"
ctl snapshot create n1 n1-snap --wait --timeout 120s
ctl provision n3 --image n1-snap --mac 52:54:00:5b:00:03 --wait --timeout 60s
await_marker n3 240
qio n3 "read -P 0x5b 64k 4k" | grep "read 4096/4096" >/dev/null || die "n3's disk lacks what was written to n1 before the snapshot"
ctl get nodes -o wide
PASSED=$((PASSED + 1))

log "an image names its own EFI boot loader; snapshots of its nodes inherit it"
if ctl image import bad-efi "$WORK/golden.raw" --efi-boot-path 'EFI/BOOT/x.efi' 2>"$WORK/bad-efi.err"; then die "image import accepted a bad --efi-boot-path"; fi
grep -q 'efi-boot-path' "$WORK/bad-efi.err" || die "image import's error does not name --efi-boot-path: $(cat "$WORK/bad-efi.err")"
if ctl get images bad-efi >/dev/null 2>&1; then die "a refused import left image bad-efi behind"; fi
ctl image create shim --size 1MiB --efi-boot-path '\EFI\debian\shimx64.efi'
ctl provision e1 --image shim --mac 52:54:00:5b:02:01 --wait --timeout 60s
ctl boot-script e1 >"$WORK/e1.ipxe"
grep -qF 'sanboot --filename \EFI\debian\shimx64.efi iscsi:10.0.2.2:' "$WORK/e1.ipxe" || die "e1's script does not boot its image's EFI loader (see $WORK/e1.ipxe)"
if grep -q BOOTX64 "$WORK/e1.ipxe"; then die "e1's script still names the default EFI loader"; fi
ctl snapshot create e1 e1-snap --wait --timeout 120s
ctl get images e1-snap -o json >"$WORK/e1-snap.json"
grep -qF '"efiBootPath": "\\EFI\\debian\\shimx64.efi"' "$WORK/e1-snap.json" || die "snapshot e1-snap did not inherit the EFI boot path (see $WORK/e1-snap.json)"
PASSED=$((PASSED + 1))

# storm FIRMWARE N PREFIX MACBYTE: provisions N nodes (--wait), powers
# them all on at once under FIRMWARE (bios or efi) and times power-on to the
# last marker (a boot storm against one agent, each node through the second
# of its two portals).
storm() {
	local fw=$1 n=$2 prefix=$3 mb=$4 i names=() t0 t1
	for ((i = 1; i <= n; i++)); do
		names+=("$prefix$i")
		ctl provision "$prefix$i" --image golden --mac "$(printf '52:54:00:%s:00:%02x' "$mb" "$i")"
	done
	t0=$(now_ms)
	ctl wait node "${names[@]}" --for=ready --timeout 120s
	t1=$(now_ms)
	for ((i = 1; i <= n; i++)); do
		if [ "$fw" = efi ]; then power_on_efi "$prefix$i" "$(printf '52:54:00:%s:00:%02x' "$mb" "$i")"; else power_on "$prefix$i" "$(printf '52:54:00:%s:00:%02x' "$mb" "$i")"; fi
	done
	for name in "${names[@]}"; do await_marker "$name" 1800 "$fw"; done
	echo "BENCH storm: $n $fw nodes powered on at once: last marker $(($(now_ms) - t1)) ms after power-on (all Ready $((t1 - t0)) ms after the provisions; load average $(cut -d' ' -f1-3 /proc/loadavg))"
	PASSED=$((PASSED + 1))
}

if $BENCH; then
	log "bench: provision --wait, power on, marker (TCG)"
	t0=$(now_ms)
	ctl provision b1 --image golden --mac 52:54:00:5c:00:01 --wait --timeout 60s
	t1=$(now_ms)
	power_on b1 52:54:00:5c:00:01
	await_marker b1 300
	echo "BENCH 1 node: ready $((t1 - t0)) ms, marker $(($(now_ms) - t0)) ms after provision"
	log "bench: boot storms of ${STORM_N:-4} nodes against one agent, BIOS then UEFI"
	storm bios "${STORM_N:-4}" sb 5d
	storm efi "${STORM_N:-4}" se 5e
fi
echo "e2e-boot: $PASSED passed, 0 failed"
