#!/usr/bin/env bash
# test-fresh-machine.sh: the README's commands on a fresh Debian 12 machine.
# A minimal Debian 12 tree (debootstrap --variant=minbase, cached bare as a
# tarball in $SANBOOT_CACHE/fresh, default ~/.cache/sanboot/fresh) is
# unpacked anew in every run; nothing the README's commands install is
# cached (only apt's downloaded .debs and Go's build cache are kept, in the
# same directory: every package is still installed afresh, every Go module
# and the Go toolchain downloaded afresh). The checkout's tracked files,
# as they are in the work tree, are copied in as a new git repository, and
# the host's CA bundle with them (a machine behind a network's own
# certificate authority has that CA installed: without it the Go toolchain
# download fails). Then, through chroot, with /dev (loop devices), /proc,
# /sys and a new /dev/shm and /dev/pts mounted in a mount namespace of its
# own:
#
#   hack/install-deps.sh, make check-generate, make build,
#   ./hack/demo.sh --no-keep
#
# each in a clean environment (only HOME, PATH, LANG, CI and the host's
# proxy settings pass through). A step that fails prints its command and
# the end of its output; the steps after it do not run. Afterwards nothing
# may be left running in the tree and no loop device may be left on a file
# in it.
#
# Mirror: this machine's apt source (hack/lib.sh debian_mirror), or
# DEBIAN_MIRROR. FRESH_KEEP=1 keeps the tree. Needs root, debootstrap,
# unshare (util-linux). 4 to 5 minutes on 2 cores (the first run makes the
# caches: about 10).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/.."
. hack/lib.sh
[ "$(id -u)" = 0 ] || die "needs root: debootstrap, chroot, mount"
command -v debootstrap >/dev/null || die "debootstrap is missing (Debian: apt-get install debootstrap)"
command -v unshare >/dev/null || die "unshare is missing (Debian: apt-get install util-linux)"

# Every mount below is made in a mount namespace of this script's own, so
# that none is seen outside it and none outlives it, however it ends.
if [ "${SANBOOT_FRESH_NS:-}" != $$ ]; then
	exec env SANBOOT_FRESH_NS=$$ unshare --mount --propagation private -- "$self" "$@"
fi

CACHE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}/fresh
TARBALL=$CACHE/bookworm-minbase.tar
MIRROR=$(debian_mirror)
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (Debian: apt-get install ca-certificates; or set CA_BUNDLE)"
WORK=$(mktemp -d /tmp/sanboot-fresh.XXXXXX)
TREE=$WORK/root
PASSED=0 FAILED=0
START=$SECONDS

mounted=()
cleanup() {
	local i pid f
	# Processes still running in the tree: the steps left them; ours to end.
	for pid in $(tree_pids); do kill -9 "$pid" 2>/dev/null || true; done
	for f in /sys/block/loop*/loop/backing_file; do
		[ -f "$f" ] && [[ $(cat "$f" 2>/dev/null) == "$TREE"/* ]] && losetup -d "/dev/$(basename "$(dirname "$(dirname "$f")")")" 2>/dev/null || true
	done
	# What the steps mounted in the tree (the demo's store), then ours.
	awk -v t="$TREE/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
	done
	if awk -v t="$TREE" '$5 == t || index($5, t "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo "some mounts are left under $TREE: not removing it" >&2
	elif [ "${FRESH_KEEP:-}" = 1 ]; then
		echo "the tree: $TREE"
	else
		rm -rf --one-file-system "$TREE"
	fi
	echo "logs: $WORK"
}
trap cleanup EXIT

# tree_pids: the processes whose root directory is the tree.
tree_pids() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$TREE" ] && echo "${p#/proc/}"
	done
	return 0
}

mount_in_tree() { # mount_in_tree DIR mount-args...
	local dir=$TREE$1
	shift
	mkdir -p "$dir"
	mount "$@" "$dir"
	mounted+=("$dir")
}

# The bare tree, cached: debootstrap only, nothing the README installs.
if [ ! -f "$TARBALL" ]; then
	log "debootstrap bookworm (minbase) from $MIRROR (a few minutes; cached in $TARBALL)"
	mkdir -p "$CACHE"
	bare=$WORK/bare
	debootstrap --variant=minbase bookworm "$bare" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
	# As a fresh machine that has not run apt-get update yet.
	rm -rf "$bare"/var/lib/apt/lists/* "$bare"/var/cache/apt/*.bin "$bare"/var/cache/apt/archives/*.deb
	tar -C "$bare" -cf "$TARBALL.part" .
	mv "$TARBALL.part" "$TARBALL"
	rm -rf --one-file-system "$bare"
	echo "the bare tree took $((SECONDS - START))s to make (cached from now on)"
	START=$SECONDS
fi

log "a fresh tree in $TREE"
mkdir -p "$TREE"
tar -C "$TREE" -xf "$TARBALL"
echo "deb $MIRROR bookworm main" >"$TREE/etc/apt/sources.list"
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$TREE/etc/hosts"
# The host's CA bundle: as the bundle (for apt and Go before the
# ca-certificates package is installed) and one certificate a file in
# /usr/local/share/ca-certificates, which that package's
# update-ca-certificates keeps in the bundle it makes.
mkdir -p "$TREE/etc/ssl/certs" "$TREE/usr/local/share/ca-certificates/host"
cp "$CA_BUNDLE" "$TREE/etc/ssl/certs/ca-certificates.crt"
awk -v d="$TREE/usr/local/share/ca-certificates/host" '
	/-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/%04d.crt", d, n) }
	f { print > f }
	/-----END CERTIFICATE-----/ { close(f); f = "" }
' "$CA_BUNDLE"
# The checkout: its tracked files as they are in the work tree (committed
# or not), as a new repository with one commit (make check-generate diffs
# against it).
SRC=/root/sanboot
mkdir -p "$TREE$SRC"
rev=$(git stash create 2>/dev/null || true)
git archive "${rev:-HEAD}" | tar -C "$TREE$SRC" -xf -
git -C "$TREE$SRC" init -q
git -C "$TREE$SRC" add -A
git -C "$TREE$SRC" -c user.name=fresh-machine -c user.email=fresh@sanboot.invalid commit -qm "the checkout under test"

mount_in_tree /proc -t proc proc
mount_in_tree /sys -t sysfs sysfs
mount_in_tree /dev --bind /dev
mount_in_tree /dev/pts -t devpts -o newinstance,ptmxmode=0666 devpts
mount_in_tree /dev/shm -t tmpfs tmpfs
# Kept between runs: the .debs apt downloads (every package is still
# installed afresh) and Go's build cache (compiled packages, keyed by their
# inputs and the toolchain). Go modules and the toolchain are downloaded
# afresh.
mkdir -p "$CACHE/apt-archives/partial" "$CACHE/go-build"
mount_in_tree /var/cache/apt/archives --bind "$CACHE/apt-archives"
mount_in_tree /root/.cache/go-build --bind "$CACHE/go-build"

# in_tree CMD: runs CMD with bash in the tree's checkout, in a clean
# environment.
in_tree() {
	local env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 CI=true)
	local v
	for v in GOPROXY GOSUMDB GONOSUMDB GOPRIVATE http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
		[ -n "${!v:-}" ] && env+=("$v=${!v}")
	done
	chroot "$TREE" /usr/bin/env -i "${env[@]}" /bin/bash -c "cd $SRC && $1"
}

# step CMD: one check; on failure prints the command and the end of its output.
step() {
	local cmd=$1 logf t0=$SECONDS
	logf=$WORK/step$((PASSED + FAILED + 1)).log
	log "fresh machine: $cmd"
	if in_tree "$cmd" </dev/null >"$logf" 2>&1; then
		echo "ok: $cmd ($((SECONDS - t0))s)"
		PASSED=$((PASSED + 1))
		return 0
	fi
	echo "FAIL: \`$cmd\` failed on a fresh Debian 12 machine after $((SECONDS - t0))s; the end of its output (all of it: $logf):"
	tail -40 "$logf" | sed 's/^/    /'
	FAILED=$((FAILED + 1))
	return 1
}

check() { # check WHAT CMD...: a check on the host side.
	local what=$1
	shift
	if "$@"; then
		echo "ok: $what"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL: $what"
		FAILED=$((FAILED + 1))
	fi
}

nothing_left_running() {
	local pids
	pids=$(tree_pids)
	[ -z "$pids" ] && return 0
	echo "left running in the tree: $(for p in $pids; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
	return 1
}
no_loop_left() {
	local f left=
	for f in /sys/block/loop*/loop/backing_file; do
		[ -f "$f" ] && [[ $(cat "$f" 2>/dev/null) == "$TREE"/* ]] && left+=" $(cat "$f")"
	done
	[ -z "$left" ] || { echo "loop devices left on:$left"; return 1; }
}

step hack/install-deps.sh &&
	step "make check-generate" &&
	step "make build" &&
	step "./hack/demo.sh --no-keep" || true
check "nothing left running in the tree" nothing_left_running
check "no loop device left on a file in the tree" no_loop_left

echo "fresh machine: $((SECONDS - START))s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
