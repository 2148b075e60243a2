#!/usr/bin/env bash
# lio-vm.sh: a throwaway qemu VM with a stock Debian kernel and the LIO
# iSCSI target (the kernel of the project's machines has no LIO), for
# hack/e2e-lio.sh and by hand:
#
#   hack/lio-vm.sh build        # kernel, static binaries, initramfs
#   hack/lio-vm.sh boot         # start the VM in the background, wait until it is ready
#   hack/lio-vm.sh exec 'CMD'   # run a shell command in the VM; its output and exit code
#   hack/lio-vm.sh stop         # reboot -f in the VM (qemu exits), else kill our qemu
#
# build: `apt-get download`s the kernel package linux-image-amd64 depends on
# (never installed) and extracts it, cached in $SANBOOT_CACHE/lio-vm
# (default ~/.cache/sanboot); builds sanboot-agent and the test binary of
# agent/target/lio statically (CGO_ENABLED=0); makes an initramfs with
# busybox, the LIO modules and their dependencies in the order their
# .modinfo "depends=" asks, hack/lio/init and both binaries (in /bin).
#
# boot: qemu with KVM when it can run a stock kernel here, else TCG
# (kvm_pvm, this project's machines, cannot); slirp network with the
# guest's 3260 forwarded to 127.0.0.1:$LIO_ISCSI_PORT and its control
# shell (2323) to 127.0.0.1:$LIO_CTL_PORT, host loopback only; the 9p share
# $LIO_SHARE (tag host0, /mnt/host in the guest; its autorun.sh runs at
# boot); the raw disk $LIO_DISK, if set, as /dev/vda (the guest mounts it,
# XFS, at /var/lib/sanboot). The guest reaches the host's 127.0.0.1 at
# 10.0.2.2.
#
# Env: LIO_VM_DIR (work dir, default /tmp/sanboot-lio-vm), LIO_ISCSI_PORT,
# LIO_CTL_PORT (free ports if unset at build... set them for boot/exec),
# LIO_SHARE, LIO_DISK, LIO_ACCEL (auto|kvm|tcg), LIO_MEM (MiB, 1024),
# LIO_SMP (2), KPKG (kernel package, default: what linux-image-amd64
# depends on). Needs (Debian): qemu-system-x86 busybox-static cpio
# xz-utils (and zstd for zstd modules); go.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

DIR=${LIO_VM_DIR:-/tmp/sanboot-lio-vm}
OUT=$DIR/out
CACHE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}
ISCSI_PORT=${LIO_ISCSI_PORT:-13260}
CTL_PORT=${LIO_CTL_PORT:-12323}
SHARE=${LIO_SHARE:-$DIR/share}
BOOT_TIMEOUT=${LIO_BOOT_TIMEOUT:-180}

# The modules the VM loads; their dependencies are added first.
WANT_MODULES=(
	configfs target_core_mod target_core_file target_core_iblock
	crc32c_generic crc32c_intel # an iSCSI login allocates a "crc32c" hash
	iscsi_target_mod
	virtio_pci virtio_net virtio_blk # slirp NIC, store disk
	xfs loop                         # the store's file system; loop devices for iblock tests
	9pnet_virtio 9p                  # the share
)

# fetch_kernel sets KVER and KROOT to an extracted stock Debian kernel.
fetch_kernel() {
	local pkg=${KPKG:-} deb
	if [ -z "$pkg" ]; then
		pkg=$(apt-cache show linux-image-amd64 2>/dev/null | sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-amd64\).*/\1/p' | head -1)
		[ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64: run apt-get update (or set KPKG)"
	fi
	KVER=${pkg#linux-image-}
	KVER=${KVER%-unsigned}
	KROOT=$CACHE/lio-vm/kernel-$KVER
	[ -f "$KROOT/boot/vmlinuz-$KVER" ] && [ -f "$KROOT/lib/modules/$KVER/modules.order" ] && return
	mkdir -p "$CACHE/debs"
	if ! ls "$CACHE/debs/${pkg}"_*.deb >/dev/null 2>&1; then
		log "fetching $pkg with apt-get download (never installed; cached in $CACHE/debs)"
		(cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
	fi
	deb=$(ls "$CACHE/debs/${pkg}"_*.deb | head -1)
	rm -rf "$KROOT.tmp"
	mkdir -p "$KROOT.tmp"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$KROOT.tmp" "./boot/vmlinuz-$KVER" "./lib/modules/$KVER"
	rm -rf "$KROOT"
	mv "$KROOT.tmp" "$KROOT"
	log "extracted $pkg into $KROOT"
}

# Module dependency order, from each module's .modinfo "depends=" (no
# depmod or kmod needed on the host).
declare -A MODPATH=() SEEN=()
ORDER=()
visit() {
	local n=${1//-/_} f deps d
	[ -n "${SEEN[$n]:-}" ] && return 0
	SEEN[$n]=1
	f=${MODPATH[$n]:-}
	if [ -z "$f" ]; then
		grep -qE "/(${n}|${n//_/-})\.ko" "$KDIR/modules.builtin" && return 0
		die "kernel $KVER has no module $n"
	fi
	deps=$(grep -a -o -m1 'depends=[^[:cntrl:]]*' "$KDIR/$f" | head -1 | cut -d= -f2 | tr ',' ' ')
	for d in $deps; do visit "$d"; done
	ORDER+=("$f")
}

cmd_build() {
	local t0=$SECONDS
	command -v busybox >/dev/null || die "busybox is missing (Debian: busybox-static)"
	if ldd "$(command -v busybox)" >/dev/null 2>&1; then die "$(command -v busybox) is dynamically linked: install busybox-static"; fi
	for tool in cpio qemu-system-x86_64 dpkg-deb apt-get go; do
		command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: qemu-system-x86 busybox-static cpio xz-utils)"
	done
	fetch_kernel
	KDIR=$KROOT/lib/modules/$KVER
	mkdir -p "$OUT"
	log "building static sanboot-agent and the agent/target/lio test binary"
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/sanboot-agent" ./agent/cmd/sanboot-agent
	CGO_ENABLED=0 go test -c -trimpath -ldflags='-s -w' -o "$OUT/lio.test" ./agent/target/lio

	local R=$OUT/root f b
	rm -rf "$R"
	mkdir -p "$R"/{bin,dev,etc,lib/modules}
	cp "$(command -v busybox)" "$R/bin/busybox"
	install -m 755 hack/lio/init "$R/init"
	install -m 755 "$OUT/sanboot-agent" "$OUT/lio.test" "$R/bin/"
	while read -r f; do b=${f##*/}; b=${b%%.ko*}; MODPATH[${b//-/_}]=$f; done <"$KDIR/modules.order"
	for m in "${WANT_MODULES[@]}"; do visit "$m"; done
	: >"$R/etc/modules.load"
	for f in "${ORDER[@]}"; do
		b=${f##*/}
		case $f in
		*.ko.xz) xz -dc "$KDIR/$f" >"$R/lib/modules/${b%.xz}"; b=${b%.xz} ;;
		*.ko.zst) zstd -qdc "$KDIR/$f" >"$R/lib/modules/${b%.zst}"; b=${b%.zst} ;;
		*) cp "$KDIR/$f" "$R/lib/modules/" ;;
		esac
		echo "$b" >>"$R/etc/modules.load"
	done
	# Uncompressed: the guest does not spend TCG time on gunzip.
	(cd "$R" && find . | cpio -o -H newc --quiet) >"$OUT/initrd.img"
	rm -rf "$R"
	cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
	extract_vmlinux
	log "built $OUT/initrd.img ($(du -h "$OUT/initrd.img" | cut -f1), ${#ORDER[@]} modules) for $KVER in $((SECONDS - t0))s"
}

# extract_vmlinux unpacks the ELF kernel out of the bzImage, as the
# kernel's scripts/extract-vmlinux does: qemu boots it directly (PVH),
# which skips the firmware and the in-guest decompression, seconds under
# TCG. Without it qemu boots the bzImage.
extract_vmlinux() {
	local v=$OUT/vmlinux off
	[ -s "$v" ] && [ "$v" -nt "$OUT/vmlinuz" ] && return
	rm -f "$v"
	for off in $(grep -abo $'\xfd7zXZ' "$OUT/vmlinuz" | cut -d: -f1 | head -3); do
		tail -c +$((off + 1)) "$OUT/vmlinuz" | xz -dc --single-stream >"$v" 2>/dev/null || true
		head -c 4 "$v" | grep ELF >/dev/null && return
	done
	rm -f "$v"
	log "no ELF kernel found in the bzImage (not xz?): booting the bzImage"
}

# ours PID: is PID the qemu this script started for $OUT?
ours() { [ -n "${1:-}" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep "qemu-system.*$OUT/initrd.img" >/dev/null; }

# accel chooses KVM only where it runs stock kernels: kvm_pvm (this
# project's machines) does not.
accel() {
	local a=${LIO_ACCEL:-auto}
	if [ "$a" = auto ]; then
		a=tcg
		if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then a=kvm; fi
	fi
	case $a in
	kvm) echo "-accel kvm -cpu host" ;;
	tcg) echo "-accel tcg,thread=multi -cpu max" ;;
	*) die "LIO_ACCEL=$a: use auto, kvm or tcg" ;;
	esac
}

cmd_boot() {
	[ -s "$OUT/initrd.img" ] || die "no $OUT/initrd.img: run hack/lio-vm.sh build"
	mkdir -p "$DIR/run" "$SHARE"
	local pid
	pid=$(cat "$DIR/run/qemu.pid" 2>/dev/null || true)
	if ours "$pid"; then die "the VM already runs (qemu pid $pid)"; fi
	local kernel=$OUT/vmlinux disk=()
	[ -s "$kernel" ] || kernel=$OUT/vmlinuz
	[ -n "${LIO_DISK:-}" ] && disk=(-drive "file=$LIO_DISK,format=raw,if=virtio,cache=writeback")
	: >"$DIR/run/console.log"
	# shellcheck disable=SC2046 # accel is several words
	qemu-system-x86_64 $(accel) -smp "${LIO_SMP:-2}" -m "${LIO_MEM:-1024}" \
		-kernel "$kernel" -initrd "$OUT/initrd.img" -append "console=ttyS0 panic=-1 loglevel=4" \
		-nographic -no-reboot \
		-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ISCSI_PORT-:3260,hostfwd=tcp:127.0.0.1:$CTL_PORT-:2323" \
		-device virtio-net-pci,netdev=n0 \
		-virtfs "local,path=$SHARE,mount_tag=host0,security_model=none,id=fs0" \
		"${disk[@]}" \
		</dev/null >"$DIR/run/console.log" 2>&1 &
	pid=$!
	echo "$pid" >"$DIR/run/qemu.pid"
	local end=$((SECONDS + BOOT_TIMEOUT))
	until grep -q SANBOOT-LIO-READY "$DIR/run/console.log"; do
		if ! kill -0 "$pid" 2>/dev/null; then tail -30 "$DIR/run/console.log" >&2; die "qemu exited during boot"; fi
		if ((SECONDS > end)); then tail -30 "$DIR/run/console.log" >&2; cmd_stop; die "the VM was not ready after ${BOOT_TIMEOUT}s"; fi
		sleep 0.1
	done
	if grep -q FAILED "$DIR/run/console.log"; then grep FAILED "$DIR/run/console.log" >&2; die "the VM did not start cleanly"; fi
	log "VM ready (qemu pid $pid, $(accel | cut -d' ' -f2)): $(grep -a -o 'SANBOOT-LIO-READY.*' "$DIR/run/console.log" | tr -d '\r')"
}

# cmd_exec runs CMD in the guest's shell and exits with its exit code. The
# connection is the hostfwd'ed control port; the guest's shell reads
# commands from it, so CMD runs with stdin from /dev/null.
cmd_exec() {
	local cmd=$1 out rc
	exec 3<>"/dev/tcp/127.0.0.1/$CTL_PORT" || die "cannot reach the VM's control port 127.0.0.1:$CTL_PORT"
	printf '( %s\n) </dev/null 2>&1\necho "__RC=$?"\nexit\n' "$cmd" >&3
	out=$(timeout "${LIO_EXEC_TIMEOUT:-900}" cat <&3) || true
	exec 3<&-
	rc=$(printf '%s\n' "$out" | sed -n 's/^__RC=\([0-9]*\)$/\1/p' | tail -1)
	printf '%s\n' "$out" | grep -v '^__RC=[0-9]*$' || true
	[ -n "$rc" ] || { echo "lio-vm: no exit code from the VM (timed out or connection lost)" >&2; return 255; }
	return "$rc"
}

cmd_stop() {
	local pid
	pid=$(cat "$DIR/run/qemu.pid" 2>/dev/null || true)
	if ! ours "$pid"; then rm -f "$DIR/run/qemu.pid"; return 0; fi
	cmd_exec 'sync; reboot -f' >/dev/null 2>&1 || true
	for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
	if ours "$pid"; then kill "$pid" 2>/dev/null || true; fi
	rm -f "$DIR/run/qemu.pid"
}

case ${1:-} in
build) cmd_build ;;
boot) cmd_boot ;;
exec) shift; cmd_exec "$*" ;;
stop) cmd_stop ;;
*) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
