#!/usr/bin/env bash
# e2e-netns.sh: sanboot across separate hosts, each a network namespace on
# one bridge (10.99.0.0/24, addresses only inside these namespaces):
#   cp  10.99.0.1  sanboot-controlplane: etcd and API over mutual TLS,
#                  the boot server with boot tokens
#   st  10.99.0.2  sanboot-agent with tgt, its portal on its own address
#   op  10.99.0.3  sanbootctl with a user's and an admin's certificate
#   rk  10.99.0.4  the rack: dnsmasq (DHCP) on a bridge with a TAP, a qemu
#                  node (TCG) running iPXE on that TAP, an iSCSI
#                  initiator (libiscsi), a node's HTTP fetch of its script
# Proves: plaintext refused beyond loopback; an upload crosses from the
# operator to the control plane to the storage host over TLS; the node's
# target admits its initiator only; the boot server gives the script with
# the node's credentials only with its boot token; no key or CHAP secret
# in any log or output.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in ip tgtd tgtadm iscsi-inq curl dnsmasq qemu-system-x86_64 extlinux busybox cpio dpkg-deb; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: iproute2 tgt libiscsi-bin curl dnsmasq-base qemu-system-x86 extlinux syslinux-common busybox-static cpio)"
done
[ "$(id -u)" = 0 ] || die "needs root: network namespaces and tgtd"

WORK=$(mktemp -d /tmp/sanboot-e2e-netns.XXXXXX)
BIN=$WORK/bin
PKI=$WORK/pki
OUT=$WORK/out
mkdir -p "$OUT" "$WORK/store"
S=$(($$ % 100000))
SW=sbsw$S CP=sbcp$S ST=sbst$S OP=sbop$S RK=sbrk$S
cleanup() {
	stop_all
	for ns in $CP $ST $OP $RK $SW; do ip netns del "$ns" 2>/dev/null || true; done
	echo "logs and data: $WORK"
}
trap cleanup EXIT
build_binaries "$BIN"
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }

log "hosts: namespaces $CP $ST $OP $RK on a bridge in $SW"
netns_hosts "$SW" "$S" 10.99.0 $CP $ST $OP $RK
# on NS CMD...: runs CMD on host NS. Background jobs call ip netns exec
# directly, so that $! is the program's own PID (ip execs it).
on() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ip -n "$OP" -br addr show eth0 | grep 10.99.0.3 >/dev/null || die "the operator host has no address"

n=0
ctl_as() { # ctl_as WHO ARGS...: sanbootctl on the operator host
	local who=$1
	shift
	n=$((n + 1))
	on "$OP" "$BIN/sanbootctl" --endpoints 10.99.0.1:7443 --timeout 60s \
		--cert "$PKI/user-$who.crt" --key "$PKI/user-$who.key" --cacert "$PKI/ca.crt" "$@" >"$OUT/$n.out" 2>"$OUT/$n.err"
}
last_err() { cat "$OUT/$n.err"; }
pki() { "$BIN/sanbootctl" pki "$@" >>"$OUT/pki.out"; }

log "certificates"
pki init "$PKI"
pki issue member cp1 --ip 10.99.0.1 --dir "$PKI"
pki issue agent st1 --dir "$PKI"
pki issue user root --admin --dir "$PKI"
pki issue user alice --project lab --dir "$PKI"

log "plaintext beyond loopback is refused"
if on "$CP" "$BIN/sanboot-controlplane" --data-dir "$WORK/plain" --api-listen 10.99.0.1:7443 \
	--listen-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --boot-listen "" \
	--metrics-listen "" 2>"$OUT/plain.err"; then
	die "a control plane without TLS listened on 10.99.0.1"
fi
grep -q "without TLS" "$OUT/plain.err" || die "the refusal does not say why: $(cat "$OUT/plain.err")"
ok "refused: $(grep -o 'refusing to listen.*TLS' "$OUT/plain.err" | head -c 120)"

log "the control plane on 10.99.0.1, mutual TLS"
M=$PKI/member-cp1
ip netns exec "$CP" "$BIN/sanboot-controlplane" --name cp1 --data-dir "$WORK/cp" \
	--listen-client-urls https://10.99.0.1:2379 --listen-peer-urls https://10.99.0.1:2380 \
	--cert-file "$M.crt" --key-file "$M.key" --trusted-ca-file "$PKI/ca.crt" \
	--peer-cert-file "$M.crt" --peer-key-file "$M.key" --peer-trusted-ca-file "$PKI/ca.crt" \
	--api-listen 0.0.0.0:7443 --advertise-api 10.99.0.1:7443 --boot-listen 10.99.0.1:8080 --boot-url http://10.99.0.1:8080 --boot-tokens \
	--metrics-listen 127.0.0.1:9480 >>"$WORK/controlplane.log" 2>&1 &
SANBOOT_PIDS+=("$!")
wait_until 120 "the API at 10.99.0.1:7443" ctl_as root get agents
ok "an admin on the operator host reaches the API"
# The control-plane host has a second address that its certificate does not
# name: a client that reaches the API there refuses it.
ip -n "$CP" addr add 10.99.0.9/24 dev eth0
n=$((n + 1))
if ip netns exec "$OP" "$BIN/sanbootctl" --endpoints 10.99.0.9:7443 --cert "$PKI/user-root.crt" --key "$PKI/user-root.key" \
	--cacert "$PKI/ca.crt" get agents >"$OUT/$n.out" 2>"$OUT/$n.err"; then
	die "the API was trusted at an address its certificate does not name"
fi
grep -q "not 10.99.0.9" "$OUT/$n.err" || die "wrong SAN: $(last_err)"
ok "refused: the API at an address its certificate does not name ($(grep -o 'x509: [^"]*' "$OUT/$n.err" | head -c 100))"

log "the storage host: agent st1 with tgt on 10.99.0.2:3260"
ctl_as root agents enroll st1 || die "enroll: $(last_err)"
ip netns exec "$ST" "$BIN/sanboot-agent" --etcd-endpoints https://10.99.0.1:2379 \
	--cert "$PKI/agent-st1.crt" --key "$PKI/agent-st1.key" --cacert "$PKI/ca.crt" \
	--driver=tgt --tgtd=managed --tgtd-control=$((1000 + RANDOM % 30000)) --portal 10.99.0.2:3260 \
	--store-dir "$WORK/store" --metrics-listen 127.0.0.1:9481 >>"$WORK/agent-st1.log" 2>&1 &
SANBOOT_PIDS+=("$!")
st1_ready() { ctl_as root get agents st1 -o json && grep -q '"state": *"Ready"' "$OUT/$n.out"; }
wait_until 120 "agent st1 Ready" st1_ready
ok "agent st1 registered across hosts"

log "alice imports a bootable image (hack/build-image.sh) from the operator host; the agent fetches it over TLS"
hack/build-image.sh "$WORK/golden.raw"
SHA=$(sha256sum <"$WORK/golden.raw" | cut -d' ' -f1)
ctl_as alice image import golden "$WORK/golden.raw" -p lab --wait --timeout 300s || die "import: $(last_err)"
ctl_as alice get images golden -p lab -o json
grep -q "\"sha256\": *\"$SHA\"" "$OUT/$n.out" || die "the image's sha256 is not the file's"
ok "the upload reached the storage host intact (operator -> API -> agent)"
ctl_as alice provision n1 --image golden --mac 52:54:00:99:00:01 --chap -p lab --wait --timeout 120s || die "provision: $(last_err)"
ok "n1 Ready on st1"

log "the rack: n1's initiator logs in to 10.99.0.2; others are refused"
T1=iqn.2026-11.io.sanboot:lab.n1
I1=iqn.2026-11.io.sanboot:initiator.lab.n1
ctl_as alice get nodes n1 -p lab -o json
grep -q "serves the disk to $I1" "$OUT/$n.out" || die "n1 is not served to $I1: $(cat "$OUT/$n.out")"
if on "$RK" timeout 60 iscsi-inq -i iqn.2026-11.io.example:intruder "iscsi://10.99.0.2:3260/$T1/1" >/dev/null 2>&1; then
	die "a stranger logged in to n1's target"
fi
ok "a stranger's initiator is refused by n1's target"
if on "$RK" timeout 60 iscsi-inq -i "$I1" "iscsi://10.99.0.2:3260/$T1/1" >/dev/null 2>&1; then
	die "n1's initiator logged in without its CHAP credentials"
fi
ok "n1's initiator without CHAP credentials is refused"

log "the boot server on 10.99.0.1:8080 gives n1's credentials only with its token"
on "$RK" curl -sf "http://10.99.0.1:8080/boot/lab/n1" >"$OUT/boot-notoken.out" || true
if grep -q "chap\|sanboot iscsi" "$OUT/boot-notoken.out"; then die "the boot server served n1's script without a token"; fi
ok "no token: a script that waits, without credentials"
ctl_as alice boot-script n1 -p lab --url || die "boot-script --url: $(last_err)"
URL=$(cat "$OUT/$n.out")
mv "$OUT/$n.out" "$WORK/n1.url" # it holds a boot token: kept out of the logs' scan, as the script is
on "$RK" curl -sf "$URL" >"$WORK/n1.ipxe" || die "the node could not fetch its script with its token"
grep -q "sanboot iscsi:10.99.0.2" "$WORK/n1.ipxe" || die "n1's script does not boot from 10.99.0.2: $(cat "$WORK/n1.ipxe")"
CHAP_SECRET=$(grep -o 'password [^ ]*' "$WORK/n1.ipxe" | head -1 | cut -d' ' -f2 || true)
ok "with its token the node gets its script (the script holds its credentials: kept out of the logs' scan)"
CHAP_USER=$(grep -o '^set username .*' "$WORK/n1.ipxe" | cut -d' ' -f3)
on "$RK" env LIBISCSI_CHAP_USERNAME="$CHAP_USER" LIBISCSI_CHAP_PASSWORD="$CHAP_SECRET" \
	timeout 60 iscsi-inq -i "$I1" "iscsi://10.99.0.2:3260/$T1/1" >"$WORK/n1-inq.txt" 2>&1 ||
	die "n1's initiator with the credentials of its script cannot log in: $(cat "$WORK/n1-inq.txt")"
ok "n1's initiator with the credentials from its script logs in to 10.99.0.2"
on "$RK" curl -sf "$URL" >"$OUT/boot-reused.out" || true
if grep -q "sanboot iscsi" "$OUT/boot-reused.out"; then die "a used token served the script again"; fi
ok "a used token serves nothing"

log "a qemu node in the rack: DHCP from dnsmasq, iPXE fetches its script with its token, boots from 10.99.0.2"
IPXE=${SANBOOT_CACHE:-$HOME/.cache/sanboot}/ipxe
if [ ! -f "$IPXE/boot/ipxe.lkrn" ]; then
	rm -rf "$IPXE.tmp"
	dpkg-deb -x "$(fetch_deb ipxe)" "$IPXE.tmp"
	rm -rf "$IPXE"
	mv "$IPXE.tmp" "$IPXE"
fi
# The rack host's eth0 and the node's TAP on one bridge in the rack.
ip -n "$RK" link add brk type bridge
ip -n "$RK" addr del 10.99.0.4/24 dev eth0
ip -n "$RK" link set eth0 master brk
ip -n "$RK" addr add 10.99.0.4/24 dev brk
ip -n "$RK" tuntap add tap0 mode tap
ip -n "$RK" link set tap0 master brk up
ip -n "$RK" link set brk up
ctl_as alice boot-script n1 -p lab --url || die "boot-script --url: $(last_err)"
BOOT_URL=$(cat "$OUT/$n.out")
ip netns exec "$RK" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface=brk --bind-interfaces \
	--dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h --dhcp-host=52:54:00:99:00:01,10.99.0.101,set:n1 \
	--dhcp-boot=tag:n1,"$BOOT_URL" --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" \
	--log-facility="$WORK/dnsmasq.log" &
SANBOOT_PIDS+=("$!")
cat >"$WORK/nic.ipxe" <<'IPXE'
#!ipxe
dhcp || dhcp
chain ${filename}
IPXE
ip netns exec "$RK" timeout 900 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
	-kernel "$IPXE/boot/ipxe.lkrn" -initrd "$WORK/nic.ipxe" \
	-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=52:54:00:99:00:01,romfile= \
	</dev/null >"$WORK/n1.serial" 2>&1 &
SANBOOT_PIDS+=("$!")
serial_has() { grep -aqF "$1" "$WORK/n1.serial"; }
wait_until 900 "SANBOOT-OK n1 on n1's serial console (see $WORK/n1.serial)" serial_has "SANBOOT-OK n1"$'\r'
serial_has "ibft target0/ip-addr = 10.99.0.2" || die "n1 did not boot from 10.99.0.2"
serial_has "ibft initiator/initiator-name = $I1" || die "n1's iBFT does not name its initiator"
grep -q "DHCPACK(brk) 10.99.0.101 52:54:00:99:00:01" "$WORK/dnsmasq.log" || die "n1 got no lease from the rack's dnsmasq"
ok "n1 booted from its clone on 10.99.0.2 (DHCP from the rack, script with its token, CHAP)"

log "no private key, CHAP secret or boot token in any log or output"
leaks=0
for k in "$PKI"/*.key; do
	body=$(grep -v -- ----- "$k" | head -1)
	if grep -rqF -- "$body" "$WORK"/*.log "$WORK"/*.serial "$OUT"; then echo "key $k leaked"; leaks=1; fi
done
if grep -rq "PRIVATE KEY" "$WORK"/*.log "$OUT"; then echo "a PEM private key in the logs"; leaks=1; fi
if [ -n "$CHAP_SECRET" ] && grep -rqF -- "$CHAP_SECRET" "$WORK"/*.log "$WORK"/*.serial "$OUT"; then echo "n1's CHAP secret leaked"; leaks=1; fi
TOKEN=${URL##*token=}
record_keys "$PKI"/*.key # for the suite's scan of every log (hack/test.sh)
record_secret "$CHAP_SECRET"
[ "$TOKEN" = "$URL" ] || record_secret "$TOKEN"
if [ -n "$TOKEN" ] && [ "$TOKEN" != "$URL" ] && grep -rqF -- "$TOKEN" "$WORK"/*.log; then echo "n1's boot token in a log"; leaks=1; fi
[ $leaks = 0 ] || die "secrets leaked"
[ -n "$CHAP_SECRET" ] || die "found no CHAP secret in n1's script to scan for"
ok "no key, CHAP secret or boot token in $(ls "$OUT" | wc -l) outputs and $(ls "$WORK"/*.log | wc -l) logs"

echo "e2e-netns: $passed passed, 0 failed"
