#!/usr/bin/env bash
# guest-image.sh: a Debian 12 guest with systemd as PID 1, for
# hack/e2e-systemd.sh, built with debootstrap and cached:
#
#   hack/guest-image.sh     # prints the image's directory; builds it once
#
# The directory ($SANBOOT_CACHE/guest, default ~/.cache/sanboot/guest)
# holds root.img (ext4, made from the debootstrap tree with mkfs.ext4 -d,
# no loop device), vmlinuz and initrd.img (the guest's own stock kernel).
# The guest runs /mnt/host/autorun.sh from a 9p share at boot
# (sanboot-autorun.service) and powers off when it returns. It has tgt
# (tgt.service), libiscsi-bin and qemu-utils; sanboot is not in it: the
# test installs the .deb. Needs root, debootstrap and e2fsprogs. The mirror
# is the one this machine's apt uses (/etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list); GUEST_MIRROR or DEBIAN_MIRROR overrides it.
# Rebuild: remove the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

DIR=${SANBOOT_CACHE:-$HOME/.cache/sanboot}/guest
if [ -f "$DIR/root.img" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.img" ]; then
	echo "$DIR"
	exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap is missing (Debian: apt-get install debootstrap)"
[ "$(id -u)" = 0 ] || die "needs root: debootstrap"
MIRROR=${GUEST_MIRROR:-$(debian_mirror)}
mkdir -p "$DIR"
tree=$(mktemp -d /tmp/sanboot-guest-tree.XXXXXX)
trap 'rm -rf "$tree"' EXIT

log "debootstrap bookworm into $tree (a few minutes; cached in $DIR)"
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,kmod,e2fsprogs,iproute2,ifupdown,isc-dhcp-client,adduser,procps,tgt,libiscsi-bin,qemu-utils,ca-certificates \
	bookworm "$tree" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log"; die "debootstrap failed"; }

log "configuring the guest"
echo sanboot-guest >"$tree/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\nhost0 /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n' >"$tree/etc/fstab"
mkdir -p "$tree/mnt/host"
printf 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n' >"$tree/etc/network/interfaces"
printf '9p\n9pnet\n9pnet_virtio\n' >>"$tree/etc/initramfs-tools/modules"
printf 'virtio_blk\nvirtio_pci\next4\n' >>"$tree/etc/initramfs-tools/modules"
chroot "$tree" passwd -d root >/dev/null
cat >"$tree/etc/systemd/system/sanboot-autorun.service" <<'UNIT'
[Unit]
Description=run /mnt/host/autorun.sh, then power off (sanboot's guest tests)
After=multi-user.target network-online.target
Wants=network-online.target
RequiresMountsFor=/mnt/host

[Service]
Type=oneshot
ExecStart=/bin/bash -c 'if [ -x /mnt/host/autorun.sh ]; then /mnt/host/autorun.sh >/mnt/host/autorun.log 2>&1; echo $? >/mnt/host/autorun.rc; fi'
ExecStartPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
UNIT
chroot "$tree" systemctl enable sanboot-autorun.service >/dev/null 2>&1
chroot "$tree" systemctl disable tgt.service >/dev/null 2>&1 || true # the test starts it
chroot "$tree" update-initramfs -u -k all >/dev/null 2>&1
cp "$(ls "$tree"/boot/vmlinuz-* | sort -V | tail -1)" "$DIR/vmlinuz"
cp "$(ls "$tree"/boot/initrd.img-* | sort -V | tail -1)" "$DIR/initrd.img"
rm -rf "$tree"/var/cache/apt/archives/*.deb
log "making root.img (ext4, 3 GiB sparse)"
rm -f "$DIR/root.img.part"
truncate -s 3G "$DIR/root.img.part"
mkfs.ext4 -q -F -L root -d "$tree" "$DIR/root.img.part"
mv "$DIR/root.img.part" "$DIR/root.img"
echo "$DIR"
