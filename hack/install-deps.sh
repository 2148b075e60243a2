#!/usr/bin/env bash
# install-deps.sh: everything sanboot's build and tests need on Debian 12, as
# root. Idempotent: installs only what is missing, and prints what it does.
#
#   Go >= 1.26      Debian 12 ships 1.19; when no new enough go is in PATH we
#                   install golang-go and let it fetch the Go 1.26 toolchain
#                   from the Go module proxy (golang.org/toolchain), copy it
#                   to /usr/local/lib/sanboot-go/ (with the execute bits
#                   that Go 1.19's module cache leaves off) and link it as
#                   /usr/local/bin/go.
#   protoc          Debian's protobuf-compiler and libprotobuf-dev (the
#                   well-known types, google/protobuf/*.proto), for
#                   `make generate`.
#   tgt             tgtd/tgtadm, the iSCSI target of the tgt driver (tests run
#                   their own tgtd; the package's own service is kept from
#                   starting during the install).
#   libiscsi-bin    a real initiator (iscsi-inq, iscsi-readcapacity16, iscsi-ls)
#   xfsprogs, btrfs-progs, util-linux  reflink file systems on loop devices
#   qemu-utils, qemu-block-extra  qemu-img (qcow2 imports) and qemu-io over iscsi://
#   curl, procps    e2e checks of /readyz; pgrep finds the agent's tgtd
#   qemu-system-x86 (TCG guests: iPXE nodes, the LIO VM), extlinux,
#   syslinux-common, busybox-static, cpio, e2fsprogs, xz-utils, zstd,
#                   dosfstools, mtools, binutils (objcopy), ovmf: the
#                   BIOS+UEFI demo image, the guests' initramfs and UEFI
#                   nodes (OVMF). Kernels, systemd-boot-efi (its EFI stub) and
#                   iPXE are fetched with `apt-get download`, never installed.
#   debootstrap, systemd  the Debian 12 guest of the systemd test, and
#                   systemd-analyze verify for the units.
#   ceph-mon, ceph-mgr, ceph-osd, ceph-common  the throwaway Ceph cluster
#                   of the RBD tests (hack/ceph-cluster.sh) and the rbd CLI
#                   of the RBD store; tgt-rbd  tgt's rbd backing store
#                   (bs_rbd.so, loaded when tgtd starts).
#   iproute2, curl, dnsmasq-base  hosts as network namespaces
#                   (e2e-netns.sh, e2e-ha.sh), DHCP in the rack, a node's HTTP fetch.
#   jq              e2e-ha.sh reads member list and get -o json with it.
#
# Source it (`. hack/install-deps.sh`) or run it; afterwards `go` in PATH is
# new enough.
set -euo pipefail

GO_TOOLCHAIN=${GO_TOOLCHAIN:-go1.26.8}
DEBS=(protobuf-compiler libprotobuf-dev ca-certificates git make tgt libiscsi-bin xfsprogs btrfs-progs util-linux iproute2 qemu-utils qemu-block-extra
	qemu-system-x86 extlinux syslinux-common busybox-static cpio e2fsprogs xz-utils zstd dosfstools mtools binutils ovmf
	debootstrap systemd curl procps dnsmasq-base jq ceph-mon ceph-mgr ceph-osd ceph-common tgt-rbd)

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep '^install ok installed$' >/dev/null; }
need_debs=()
for p in "${DEBS[@]}"; do
	installed "$p" || need_debs+=("$p")
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
go_ok || installed golang-go || need_debs+=(golang-go)

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

# fetch_go_toolchain: the $GO_TOOLCHAIN toolchain through Debian's Go and
# the Go module proxy, as /usr/local/bin/go.
fetch_go_toolchain() {
	local gopath json err dir goroot=/usr/local/lib/sanboot-go/$GO_TOOLCHAIN
	echo "install-deps: fetching the $GO_TOOLCHAIN toolchain through the Go module proxy"
	gopath=$(mktemp -d /tmp/sanboot-gopath.XXXXXX)
	json=$(cd /tmp && GOFLAGS=-mod=mod GOPATH=$gopath \
		/usr/bin/go mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64" 2>&1) || true
	err=$(sed -n 's/^\t"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$json" | sed 's/\\[nt]/ /g; s/\\"/"/g')
	dir=$(sed -n 's/^\t"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
	if [ -n "$err" ] || [ -z "$dir" ] || [ ! -d "$dir" ]; then
		chmod -R u+w "$gopath" && rm -rf "$gopath"
		echo "install-deps: downloading the $GO_TOOLCHAIN toolchain failed: ${err:-go mod download gave no directory: $json}" >&2
		exit 1
	fi
	# The module cache is read-only, and Go 1.19 extracts the toolchain
	# without execute bits (Go 1.21+ sets them when it switches toolchains
	# itself): copy it out of the cache, make bin/ and pkg/tool/ executable,
	# and drop the download, so that no module-cache cleaning can remove it.
	rm -rf "$goroot.part"
	mkdir -p "$(dirname "$goroot")"
	cp -r "$dir" "$goroot.part"
	chmod -R u+w "$goroot.part" "$gopath"
	rm -rf "$gopath"
	find "$goroot.part/bin" "$goroot.part/pkg/tool" -type f -exec chmod 755 {} +
	rm -rf "$goroot"
	mv "$goroot.part" "$goroot"
	ln -sf "$goroot/bin/go" /usr/local/bin/go
	ln -sf "$goroot/bin/gofmt" /usr/local/bin/gofmt
	export PATH=/usr/local/bin:$PATH
	go_ok || { echo "install-deps: $goroot/bin/go does not run as Go >= 1.26: $("$goroot/bin/go" version 2>&1)" >&2; exit 1; }
}
go_ok || fetch_go_toolchain
echo "install-deps: $(go version), $(protoc --version)"
