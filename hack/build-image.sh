#!/usr/bin/env bash
# build-image.sh OUT: builds a tiny BIOS-bootable golden disk image (32 MiB
# raw) for boot tests, as root (it mounts a loop device):
#
#   MBR (syslinux mbr.bin) -> ext2 partition at 1 MiB with extlinux ->
#   a stock Debian kernel + a busybox initramfs whose /init loads the iBFT
#   modules, prints what iPXE put in the iBFT (initiator, target, portal,
#   LUN) and then "SANBOOT-OK <node>" on ttyS0, and powers off.
#
# <node> comes from the iBFT target name: sanboot's target IQNs end in
# "<project>.<node>". The same image boots as any node; it never writes
# to its disk.
#
# The kernel package is fetched with `apt-get download` (never installed)
# and cached, with what is extracted from it, in $SANBOOT_CACHE (default
# ~/.cache/sanboot). Needs (Debian): extlinux syslinux-common busybox-static
# cpio e2fsprogs util-linux.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

OUT=${1:?usage: hack/build-image.sh OUT.raw}
CACHE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}
for tool in extlinux busybox cpio mke2fs losetup apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: extlinux syslinux-common busybox-static cpio e2fsprogs util-linux)"
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

fetch_kernel
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
for f in initiator/initiator-name target0/target-name target0/ip-addr target0/port target0/lun; do
	[ -r $ibft/$f ] && echo "ibft $f = $(cat $ibft/$f)"
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

# The disk: 32 MiB, an MBR with one bootable Linux partition from sector
# 2048 to the end. The host kernel may lack MBR partition support, so the
# partition gets a loop device of its own (offset + size limit); extlinux
# reads the offset from it for the boot sector's hidden-sectors field.
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT.tmp"
truncate -s 32M "$OUT.tmp"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$OUT.tmp" bs=440 count=1 conv=notrunc status=none
le32() { printf '%b' "$(printf '\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
{ printf '\x80\xfe\xff\xff\x83\xfe\xff\xff'; le32 2048; le32 $((32 * 2048 - 2048)); } |
	dd of="$OUT.tmp" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$OUT.tmp" bs=1 seek=510 conv=notrunc status=none
LOOP=$(losetup --find --show --offset $((2048 * 512)) --sizelimit $((31 * 1024 * 1024)) "$OUT.tmp")
mke2fs -q -t ext2 -L sanboot "$LOOP"
mkdir -p "$WORK/mnt"
mount "$LOOP" "$WORK/mnt"
cp "$KDIR/boot/vmlinuz-$KVER" "$WORK/mnt/vmlinuz"
cp "$WORK/initrd.gz" "$WORK/mnt/initrd.gz"
cat >"$WORK/mnt/extlinux.conf" <<'EOF'
DEFAULT sanboot
PROMPT 0
TIMEOUT 0
LABEL sanboot
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet panic=-1
EOF
extlinux --install "$WORK/mnt" >/dev/null 2>&1 || die "extlinux --install failed"
umount "$WORK/mnt"
losetup -d "$LOOP"
LOOP=
mv "$OUT.tmp" "$OUT"
echo "golden image $OUT: $(stat -c %s "$OUT") bytes, kernel $KVER"
