#!/usr/bin/env bash
# build-image.sh OUT: builds a tiny golden disk image (64 MiB raw) that
# boots under both BIOS and UEFI, for boot tests, as root (it mounts a loop
# device):
#
#   BIOS: MBR (syslinux mbr.bin) -> partition 1 (ext2, active, at 1 MiB)
#         with extlinux -> vmlinuz + initrd.gz.
#   UEFI: partition 2 (type 0xEF, FAT: the EFI system partition) holding
#         \EFI\BOOT\BOOTX64.EFI, a unified kernel image (UKI): systemd's
#         EFI stub (linuxx64.efi.stub, Debian's systemd-boot-efi) with the
#         same kernel, initramfs and command line as sections, put together
#         with objcopy. One file, no boot loader and no configuration: the
#         firmware (or iPXE's `sanboot --filename`) runs it directly. (The
#         kernel's own EFI stub cannot be BOOTX64.EFI alone: run by the
#         firmware it gets no command line and no initramfs.)
#
#   Both boot a stock Debian kernel + a busybox initramfs whose /init loads
#   the iBFT modules, prints what iPXE put in the iBFT (initiator, target,
#   portal, LUN, for every target iPXE described) and the firmware it booted
#   under, then "SANBOOT-OK <node>" on ttyS0, and powers off.
#
# <node> comes from the iBFT target name: sanboot's target IQNs end in
# "<project>.<node>". The same image boots as any node; it never writes
# to its disk.
#
# The kernel package is fetched with `apt-get download` (never installed)
# and cached, with what is extracted from it, in $SANBOOT_CACHE (default
# ~/.cache/sanboot); so is systemd-boot-efi, for its EFI stub. Needs
# (Debian): extlinux syslinux-common busybox-static cpio e2fsprogs
# util-linux dosfstools mtools binutils.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

OUT=${1:?usage: hack/build-image.sh OUT.raw}
CACHE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}
for tool in extlinux busybox cpio mke2fs losetup apt-get dpkg-deb mkfs.fat mmd mcopy objcopy; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: extlinux syslinux-common busybox-static cpio e2fsprogs util-linux dosfstools mtools binutils)"
done
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || die "/usr/lib/syslinux/mbr/mbr.bin is missing (Debian: syslinux-common)"
[ "$(id -u)" = 0 ] || die "needs root: the image's file system is built on a loop device"

# fetch_kernel: sets KDIR to an extracted stock Debian kernel (vmlinuz and
# the two iBFT modules only) and KVER to its version.
fetch_kernel() {
	local pkg
	apt_known linux-image-amd64
	pkg=$(apt-cache depends linux-image-amd64 | grep -o 'linux-image-[0-9][^ ]*-amd64' | head -1) # the candidate's
	[ -n "$pkg" ] || die "cannot tell which kernel linux-image-amd64 depends on"
	KVER=${pkg#linux-image-}
	KDIR=$CACHE/kernel-$KVER
	[ -f "$KDIR/boot/vmlinuz-$KVER" ] && return
	rm -rf "$KDIR.tmp"
	mkdir -p "$KDIR.tmp"
	dpkg-deb --fsys-tarfile "$(fetch_deb "$pkg")" | tar -x -C "$KDIR.tmp" \
		"./boot/vmlinuz-$KVER" \
		"./lib/modules/$KVER/kernel/drivers/scsi/iscsi_boot_sysfs.ko" \
		"./lib/modules/$KVER/kernel/drivers/firmware/iscsi_ibft.ko"
	rm -rf "$KDIR"
	mv "$KDIR.tmp" "$KDIR"
}

# fetch_stub: sets STUB to systemd's EFI stub for x86-64, extracted from
# Debian's systemd-boot-efi.
fetch_stub() {
	local deb dir
	deb=$(fetch_deb systemd-boot-efi)
	dir=$CACHE/$(basename "$deb" .deb)
	STUB=$dir/usr/lib/systemd/boot/efi/linuxx64.efi.stub
	[ -f "$STUB" ] && return
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp" ./usr/lib/systemd/boot/efi/linuxx64.efi.stub
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}

fetch_kernel
fetch_stub
WORK=$(mktemp -d /tmp/sanboot-image.XXXXXX)
LOOP=
cleanup() {
	mountpoint -q "$WORK/mnt" && umount "$WORK/mnt"
	[ -n "$LOOP" ] && losetup -d "$LOOP"
	rm -rf "$WORK"
}
trap cleanup EXIT

# The initramfs: busybox, the iBFT modules, /init.
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,dev,proc,sys,lib/modules}
cp "$(command -v busybox)" "$IR/bin/busybox"
for a in sh mount cat echo insmod poweroff; do ln -s busybox "$IR/bin/$a"; done
cp "$KDIR/lib/modules/$KVER/kernel/drivers/scsi/iscsi_boot_sysfs.ko" \
	"$KDIR/lib/modules/$KVER/kernel/drivers/firmware/iscsi_ibft.ko" "$IR/lib/modules/"
cat >"$IR/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
insmod /lib/modules/iscsi_boot_sysfs.ko
insmod /lib/modules/iscsi_ibft.ko
ibft=/sys/firmware/ibft
if [ -d /sys/firmware/efi ]; then echo "firmware = efi"; else echo "firmware = bios"; fi
for f in initiator/initiator-name initiator/flags; do
	[ -r $ibft/$f ] && echo "ibft $f = $(cat $ibft/$f)"
done
for t in $ibft/target*; do
	[ -d $t ] || continue
	for f in target-name ip-addr port lun flags chap-type nic-assoc; do
		[ -r $t/$f ] && echo "ibft ${t##*/}/$f = $(cat $t/$f)"
	done
done
node=unknown
if [ -r $ibft/target0/target-name ]; then
	node=$(cat $ibft/target0/target-name)
	node=${node##*:}   # iqn.2026-11.io.sanboot:<project>.<node>
	node=${node##*.}
fi
echo "SANBOOT-OK $node"
poweroff -f
EOF
chmod 755 "$IR/init"
mknod -m 600 "$IR/dev/console" c 5 1
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.gz"
# no_timer_check: under TCG on a loaded host the kernel's check of the
# IO-APIC timer can fail ("IO-APIC + timer doesn't work!") and panic.
CMDLINE="console=ttyS0,115200 quiet panic=-1 no_timer_check"

# The UKI: the stub with the kernel, initramfs and command line as sections
# at the addresses systemd's documentation of the stub uses.
printf '%s' "$CMDLINE" >"$WORK/cmdline"
printf 'ID=sanboot-test\nNAME="sanboot test image"\n' >"$WORK/os-release"
objcopy \
	--add-section .osrel="$WORK/os-release" --change-section-vma .osrel=0x20000 \
	--add-section .cmdline="$WORK/cmdline" --change-section-vma .cmdline=0x30000 \
	--add-section .linux="$KDIR/boot/vmlinuz-$KVER" --change-section-vma .linux=0x2000000 \
	--add-section .initrd="$WORK/initrd.gz" --change-section-vma .initrd=0x3000000 \
	"$STUB" "$WORK/BOOTX64.EFI" || die "objcopy could not make the unified kernel image"

# The disk: 64 MiB, an MBR with two partitions: 1 (sectors 2048 to 24 MiB,
# bootable, Linux) for BIOS, 2 (24 MiB to the end, type 0xEF) the EFI system
# partition. The host kernel may lack MBR partition support, so partition 1
# gets a loop device of its own (offset + size limit; extlinux reads the
# offset from it for the boot sector's hidden-sectors field) and partition 2
# is written with mtools at its offset.
P1=2048 P1N=$((24 * 2048 - 2048)) P2=$((24 * 2048)) P2N=$((40 * 2048))
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT.tmp"
truncate -s 64M "$OUT.tmp"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$OUT.tmp" bs=440 count=1 conv=notrunc status=none
le32() { printf '%b' "$(printf '\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
{
	printf '\x80\xfe\xff\xff\x83\xfe\xff\xff'; le32 $P1; le32 $P1N
	printf '\x00\xfe\xff\xff\xef\xfe\xff\xff'; le32 $P2; le32 $P2N
} | dd of="$OUT.tmp" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$OUT.tmp" bs=1 seek=510 conv=notrunc status=none

mkfs.fat -F 16 -n SANBOOT-ESP --offset $P2 "$OUT.tmp" $((P2N / 2)) >/dev/null || die "mkfs.fat failed on the EFI system partition"
export MTOOLS_SKIP_CHECK=1
mmd -i "$OUT.tmp@@$((P2 * 512))" ::/EFI ::/EFI/BOOT
mcopy -i "$OUT.tmp@@$((P2 * 512))" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

LOOP=$(losetup --find --show --offset $((P1 * 512)) --sizelimit $((P1N * 512)) "$OUT.tmp")
mke2fs -q -t ext2 -L sanboot "$LOOP"
mkdir -p "$WORK/mnt"
mount "$LOOP" "$WORK/mnt"
cp "$KDIR/boot/vmlinuz-$KVER" "$WORK/mnt/vmlinuz"
cp "$WORK/initrd.gz" "$WORK/mnt/initrd.gz"
cat >"$WORK/mnt/extlinux.conf" <<EOF
DEFAULT sanboot
PROMPT 0
TIMEOUT 0
LABEL sanboot
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $CMDLINE
EOF
extlinux --install "$WORK/mnt" >/dev/null 2>&1 || die "extlinux --install failed"
umount "$WORK/mnt"
losetup -d "$LOOP"
LOOP=
mv "$OUT.tmp" "$OUT"
echo "golden image $OUT: $(stat -c %s "$OUT") bytes, kernel $KVER, BIOS (extlinux) and UEFI (\\EFI\\BOOT\\BOOTX64.EFI)"
