#!/usr/bin/env bash
# install-deps.sh: everything sanboot's build and tests need on Debian 12, as
# root. Idempotent: installs only what is missing, and prints what it does.
#
#   Go >= 1.26      Debian 12 ships 1.19; when no new enough go is in PATH we
#                   install golang-go and let it fetch the Go 1.26 toolchain
#                   from the Go module proxy (golang.org/toolchain), then
#                   link it as /usr/local/bin/go.
#   protoc          Debian's protobuf-compiler, for `make generate`.
#   tgt             tgtd/tgtadm, the iSCSI target of the tgt driver (tests run
#                   their own tgtd; the package's own service is kept from
#                   starting during the install).
#   libiscsi-bin    a real initiator (iscsi-inq, iscsi-readcapacity16, iscsi-ls)
#   xfsprogs, btrfs-progs, util-linux  reflink file systems on loop devices
#   qemu-utils, qemu-block-extra  qemu-img (qcow2 imports) and qemu-io over iscsi://
#   qemu-system-x86 (TCG guests: iPXE nodes, the LIO VM), extlinux,
#   syslinux-common, busybox-static, cpio, e2fsprogs, xz-utils, zstd: the
#                   bootable demo image and the guests' initramfs. Kernels and
#                   iPXE are fetched with `apt-get download`, never installed.
#   debootstrap, systemd  the Debian 12 guest of the systemd test, and
#                   systemd-analyze verify for the units.
#   iproute2, curl  hosts as network namespaces (e2e-netns.sh) and a node's
#                   HTTP fetch of its boot script there.
#
# Source it (`. hack/install-deps.sh`) or run it; afterwards `go` in PATH is
# new enough.
set -euo pipefail

GO_TOOLCHAIN=${GO_TOOLCHAIN:-go1.26.8}
DEBS=(protobuf-compiler ca-certificates git make tgt libiscsi-bin xfsprogs btrfs-progs util-linux iproute2 qemu-utils qemu-block-extra
	qemu-system-x86 extlinux syslinux-common busybox-static cpio e2fsprogs xz-utils zstd
	debootstrap systemd curl)

need_debs=()
for p in "${DEBS[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || need_debs+=("$p")
done

go_ok() {
	command -v go >/dev/null 2>&1 || return 1
	local v
	v=$(go env GOVERSION 2>/dev/null) || return 1
	[[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 26))
}

# /usr/local/go/bin is where the official tarball puts go; PATH may lack it.
[ -x /usr/local/go/bin/go ] && export PATH=$PATH:/usr/local/go/bin
if ! go_ok && [ -x /usr/local/bin/go ]; then export PATH=/usr/local/bin:$PATH; fi
go_ok || need_debs+=(golang-go)

if [ ${#need_debs[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing ${need_debs[*]}; run as root (or: apt-get install ${need_debs[*]})" >&2
		exit 1
	fi
	echo "install-deps: installing ${need_debs[*]}"
	# Keep packages (tgt) from starting system services that would take
	# 0.0.0.0:3260 during the install, unless a policy is already in place.
	policy_made=false
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy_made=true
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" ||
		{ $policy_made && rm -f /usr/sbin/policy-rc.d; exit 1; }
	$policy_made && rm -f /usr/sbin/policy-rc.d
fi

if ! go_ok; then
	echo "install-deps: fetching the $GO_TOOLCHAIN toolchain through the Go module proxy"
	dir=$(cd /tmp && GOFLAGS=-mod=mod GOPATH=/usr/local/lib/sanboot-gopath \
		/usr/bin/go mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64" |
		sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -x "$dir/bin/go" ] || { echo "install-deps: could not fetch $GO_TOOLCHAIN (got '$dir')" >&2; exit 1; }
	ln -sf "$dir/bin/go" /usr/local/bin/go
	ln -sf "$dir/bin/gofmt" /usr/local/bin/gofmt
	export PATH=/usr/local/bin:$PATH
	go_ok || { echo "install-deps: $(command -v go) is still too old" >&2; exit 1; }
fi
echo "install-deps: $(go version), $(protoc --version)"
