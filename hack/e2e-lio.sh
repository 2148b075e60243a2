#!/usr/bin/env bash
# e2e-lio.sh: the lio driver on a real Linux kernel. The kernel of the
# project's machines has no LIO, so a qemu VM (hack/lio-vm.sh: stock Debian
# kernel, KVM where it can, else TCG) runs it:
#
#   1. in the VM, the target driver conformance suite and the kernel tests
#      of agent/target/lio run against the real /sys/kernel/config/target;
#   2. a control plane runs on the host; sanboot-agent --driver=lio runs in
#      the VM, reaches etcd on the host through 10.0.2.2 and advertises the
#      host's forward of the VM's port 3260; its store is an XFS disk;
#   3. it imports an image from a URL (served from the host) and serves
#      two nodes, one with mutual CHAP, checked from the host with libiscsi
#      and qemu-io: ACL, CHAP with the credentials the agent set (read from
#      configfs, and the same as in `sanbootctl boot-script`), the image's
#      bytes, writes read back, UNMAP freeing space, the VPD serial;
#   4. the VM reboots (configfs comes back empty); the agent, given no
#      command, builds both targets again with the same serials and data;
#   5. deprovision, with a session still logged in: configfs holds no
#      sanboot object afterwards (sanboot-agent lio dump in the VM).
#
# --bench (or LIO_BENCH=1) also runs the driver benchmarks in the VM and,
# at the end, issue 14's fleet benchmark (bench_fleet: LIO_BENCH_NODES
# nodes, default 500, applied, rebuilt after a reboot, against a baseline
# of bare configfs writes): BENCH lines, figures for docs/benchmarks.md
# (`make bench` runs it). Needs (Debian): qemu-system-x86 busybox-static cpio
# xz-utils xfsprogs libiscsi-bin qemu-utils qemu-block-extra, and go. Root is
# not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
case ${1:-} in
--bench) LIO_BENCH=1 ;;
"") ;;
*) die "usage: $0 [--bench]" ;;
esac
for tool in qemu-system-x86_64 busybox cpio xz mkfs.xfs iscsi-inq iscsi-readcapacity16 qemu-io qemu-img apt-get dpkg-deb sha256sum; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: qemu-system-x86 busybox-static cpio xz-utils xfsprogs libiscsi-bin qemu-utils qemu-block-extra)"
done

WORK=$(mktemp -d /tmp/sanboot-e2e-lio.XXXXXX)
BIN=$WORK/bin
export LIO_VM_DIR=$WORK/vm LIO_SHARE=$WORK/share LIO_DISK=$WORK/store.xfs
LIO_ISCSI_PORT=$(free_port)
LIO_CTL_PORT=$(free_port)
export LIO_ISCSI_PORT LIO_CTL_PORT
PORTAL=127.0.0.1:$LIO_ISCSI_PORT
VM=hack/lio-vm.sh
trap '"$VM" stop >/dev/null 2>&1 || true; stop_all; echo "logs and data: $WORK"' EXIT
T0=$SECONDS
P0=$SECONDS
timing() { printf 'TIMING %-44s %4ds (total %4ds)\n' "$1" $((SECONDS - P0)) $((SECONDS - T0)); P0=$SECONDS; }
PASSED=0
pass() { PASSED=$((PASSED + 1)); echo "ok: $*"; }
vm() { "$VM" exec "$@"; }

log "building: host binaries, and the VM (kernel, static agent and test binary, initramfs)"
build_binaries "$BIN"
"$VM" build
mkdir -p "$LIO_SHARE"
truncate -s 4G "$LIO_DISK"
mkfs.xfs -q -m reflink=1 "$LIO_DISK"
timing "build"

log "boot 1"
"$VM" boot
timing "boot"

log "conformance suite and kernel tests, in the VM, against its configfs"
if ! vm 'cd /tmp && SANBOOT_LIO_CONFIGFS=/sys/kernel/config/target lio.test -test.v -test.run "^TestKernel" 2>&1' >"$WORK/kernel-tests.log"; then
	grep -v 'level=INFO' "$WORK/kernel-tests.log" | tail -40
	die "kernel tests failed in the VM (log: $WORK/kernel-tests.log)"
fi
grep -q -- '--- PASS: TestKernelConformance ' "$WORK/kernel-tests.log" || die "the conformance suite did not run"
if grep -q -- '--- SKIP' "$WORK/kernel-tests.log"; then die "a kernel test skipped in the VM"; fi
pass "conformance suite + kernel tests: $(grep -c -- '--- PASS' "$WORK/kernel-tests.log") passed in the VM"
timing "kernel tests in the VM"
if [ -n "${LIO_BENCH:-}" ]; then
	log "driver benchmarks in the VM"
	vm 'cd /tmp && SANBOOT_LIO_CONFIGFS=/sys/kernel/config/target lio.test -test.run "^$" -test.bench "BenchmarkKernel(EnsureNew|EnsureExisting|Delete)" -test.benchtime 50x 2>&1 &&
		SANBOOT_LIO_CONFIGFS=/sys/kernel/config/target lio.test -test.run "^$" -test.bench "BenchmarkKernelRebuild/100" -test.benchtime 3x 2>&1' |
		grep -v 'level=INFO' | tee "$WORK/bench.txt"
	timing "benchmarks in the VM"
fi

log "control plane on the host; agent lio1 in the VM, through 10.0.2.2"
AGENT_LOG_LEVEL=debug
[ -n "${LIO_BENCH:-}" ] && AGENT_LOG_LEVEL=info # as a service would log: the benchmark's agent
start_controlplane "$WORK"
cat >"$LIO_SHARE/autorun.sh" <<EOF
#!/bin/sh
# Started by the VM's /init at every boot, as a service manager would
# (not while the file no-agent is in the share: --bench's baseline).
[ -e /mnt/host/no-agent ] && exit 0
exec sanboot-agent --name lio1 --driver=lio --etcd-endpoints http://10.0.2.2:${ETCD_URL##*:} --etcd-sync-endpoints=false \\
	--store-dir /var/lib/sanboot --portal 10.0.2.15:3260 --advertise-portal $PORTAL \\
	--lease-ttl 5s --resync-interval 15s --log-level $AGENT_LOG_LEVEL >>/mnt/host/agent.log 2>&1
EOF
chmod +x "$LIO_SHARE/autorun.sh"
vm 'setsid /mnt/host/autorun.sh </dev/null >/dev/null 2>&1 &'
wait_until 120 "agent lio1 Ready" agent_state_is lio1 Ready
ctl get agents lio1 -o json | grep '"driver": *"lio"' >/dev/null || die "agent lio1 does not report the lio driver"
pass "agent lio1 (--driver=lio) registered from the VM"
timing "agent Ready"

log "image golden from a URL the agent fetches itself; nodes n1 and n2 (mutual CHAP)"
mkdir -p "$WORK/www"
head -c 4M /dev/urandom >"$WORK/www/golden.raw"
truncate -s 64M "$WORK/www/golden.raw"
HTTP_PORT=$(free_port)
busybox httpd -f -p "127.0.0.1:$HTTP_PORT" -h "$WORK/www" &
SANBOOT_PIDS+=("$!")
ctl image import golden --from-url "http://10.0.2.2:$HTTP_PORT/golden.raw" --size 64MiB \
	--sha256 "$(sha256sum "$WORK/www/golden.raw" | cut -d' ' -f1)"
wait_until 180 "image golden Ready on lio1" sh -c "'$BIN/sanbootctl' get images golden -o json | grep '\"phase\": *\"Ready\"' >/dev/null"
ctl provision n1 --image golden --wait --timeout 180s
ctl provision n2 --image golden --chap --mutual-chap --wait --timeout 180s
ctl get nodes -o wide
T1=iqn.2026-11.io.sanboot:default.n1
T2=iqn.2026-11.io.sanboot:default.n2
I1=iqn.2026-11.io.sanboot:initiator.default.n1
I2=iqn.2026-11.io.sanboot:initiator.default.n2
ctl get nodes n1 -o json | grep "\"$PORTAL\"" >/dev/null || die "n1's status does not advertise $PORTAL"
ctl get nodes n1 -o json | grep '"lun": *[1-9]' >/dev/null && die "n1's status has a LUN other than 0"
timing "image + 2 nodes Ready"
check_ready_readable
((READY_CHECKED == 2)) || die "$READY_CHECKED of the 2 Ready nodes were read by their own initiators"
pass "both Ready nodes read by their own initiators with their boot scripts' credentials"

log "ACL: the right initiator logs in, others are refused"
iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/0" | grep 'Vendor:LIO-ORG' >/dev/null || die "n1's initiator cannot log in"
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T1/0" >/dev/null 2>&1; then die "n2's initiator logged in to n1"; fi
if iscsi-inq -i iqn.2026-11.io.example:intruder "iscsi://$PORTAL/$T1/0" >/dev/null 2>&1; then die "a stranger logged in to n1"; fi
[ "$(iscsi-readcapacity16 -s -i "$I1" "iscsi://$PORTAL/$T1/0")" = 67108864 ] || die "n1 does not present 64 MiB"
pass "ACL on n1; readcapacity16 64 MiB"

log "CHAP on n2: no credentials, wrong target secret, right credentials"
# The secrets are read from the VM's configfs into variables, never printed:
# the agent put them there, the initiator must get in with them.
mapfile -t C < <(vm "cd /sys/kernel/config/target/iscsi/$T2/tpgt_1/acls/$I2/auth && cat userid password userid_mutual password_mutual")
[ ${#C[@]} -eq 4 ] && [ -n "${C[0]}" ] && [ -n "${C[1]}" ] && [ -n "${C[3]}" ] || die "n2's ACL holds no CHAP credentials"
chap() { LIBISCSI_CHAP_USERNAME=$1 LIBISCSI_CHAP_PASSWORD=$2 LIBISCSI_CHAP_TARGET_USERNAME=$3 LIBISCSI_CHAP_TARGET_PASSWORD=$4 "${@:5}"; }
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0" >/dev/null 2>&1; then die "n2 let its initiator in without CHAP"; fi
if chap "${C[0]}" "${C[1]}x" "" "" iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0" >/dev/null 2>&1; then die "n2 accepted a wrong CHAP secret"; fi
if chap "${C[0]}" "${C[1]}" "${C[2]}" "${C[3]}x" iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0" >/dev/null 2>&1; then
	die "mutual CHAP: the initiator accepted a target that proved a wrong secret"
fi
chap "${C[0]}" "${C[1]}" "${C[2]}" "${C[3]}" iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0" | grep 'Vendor:LIO-ORG' >/dev/null ||
	die "n2's initiator cannot log in with the CHAP credentials the agent set"
# The node's boot script (the control plane's view) names this portal, LUN 0
# and the very credentials the agent put on the target.
(umask 077 && ctl boot-script n2 >"$WORK/n2.ipxe")
grep -q "^sanboot iscsi:127.0.0.1::$LIO_ISCSI_PORT:0:$T2" "$WORK/n2.ipxe" || die "n2's boot script does not sanboot iscsi:127.0.0.1::$LIO_ISCSI_PORT:0:$T2"
for kv in "username:0" "password:1" "reverse-username:2" "reverse-password:3"; do
	[ "$(sed -n "s/^set ${kv%%:*} //p" "$WORK/n2.ipxe")" = "${C[${kv##*:}]}" ] || die "n2's boot script and its target disagree on the CHAP ${kv%%:*}"
done
rm -f "$WORK/n2.ipxe"
if grep -qF -e "${C[1]}" -e "${C[3]}" "$LIO_SHARE/agent.log" "$WORK/controlplane.log"; then die "a CHAP secret is in a log"; fi
if grep -qF -e "${C[1]}" -e "${C[3]}" <(vm 'sanboot-agent lio dump'); then die "lio dump prints a CHAP secret"; fi
pass "CHAP + mutual CHAP on n2 (values without trailing newline: login works; the boot script's credentials); no secret in the logs"

log "data: the image's bytes, a write read back"
iscsi_opts() { echo "driver=iscsi,transport=tcp,portal=$PORTAL,target=$1,lun=0,initiator-name=$2"; }
# (qemu-img asks GET LBA STATUS, which LIO's fileio answers with ILLEGAL REQUEST: qemu reads everything then.)
qemu-img convert --image-opts "$(iscsi_opts "$T1" "$I1")" -O raw "$WORK/n1.raw" 2>"$WORK/qemu-img.log"
cmp -s "$WORK/n1.raw" "$WORK/www/golden.raw" || die "n1's disk does not hold the image's bytes"
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1")" -c "write -P 0xa5 8M 1M" >/dev/null
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1")" -c "read -P 0xa5 8M 1M" | grep "read 1048576/1048576" >/dev/null ||
	die "n1 does not read back what was written"
pass "n1 serves the image's bytes and reads back a write"

log "thin provisioning: a discard through iSCSI frees the space in n1's clone"
iscsi-inq -i "$I1" -e 1 -c 178 "iscsi://$PORTAL/$T1/0" | grep 'lbpu:1' >/dev/null || die "n1 does not announce UNMAP (emulate_tpu)"
blocks() { vm 'stat -c %b /var/lib/sanboot/disks/default/n1.raw'; }
b0=$(blocks)
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1"),discard=unmap" -c "write -P 0x5a 16M 4M" >/dev/null
b1=$(blocks)
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1"),discard=unmap" -c "discard 16M 4M" >/dev/null
b2=$(blocks)
((b1 >= b0 + 4096 * 2 - 64 && b2 <= b1 - 4096 * 2 + 64)) || die "blocks of n1's disk: $b0, after writing 4 MiB $b1, after discarding them $b2"
pass "UNMAP: writing 4 MiB took $(((b1 - b0) / 2)) KiB in n1's clone, discarding them gave back $(((b1 - b2) / 2)) KiB"

# VPD pages (iscsi-inq -c takes decimal): 128 = 0x80 unit serial, 178 = 0xb2 logical block provisioning.
serial() { iscsi-inq -i "$2" -e 1 -c 128 "iscsi://$PORTAL/$1/0" 2>/dev/null | sed -n 's/.*Unit Serial Number:\[\(.*\)\].*/\1/p'; }
S1=$(serial "$T1" "$I1")
S2=$(chap "${C[0]}" "${C[1]}" "${C[2]}" "${C[3]}" serial "$T2" "$I2")
[ "$S1" = "$(printf default/n1 | sha256sum | cut -c1-24)" ] || die "n1's VPD serial is '$S1', not target.Serial(default, n1)"
[ -n "$S2" ] && [ "$S2" != "$S1" ] || die "n2's VPD serial is '$S2'"
pass "VPD unit serials: n1 $S1, n2 $S2"
timing "iSCSI checks"

# agent_secs FROM TO: seconds between the agent log's first line matching
# FROM and its last line matching TO.
agent_secs() {
	local a b
	a=$(grep -m1 "$1" "$LIO_SHARE/agent.log" | sed -n 's/^time=\([^ ]*\).*/\1/p')
	b=$(grep "$2" "$LIO_SHARE/agent.log" | tail -1 | sed -n 's/^time=\([^ ]*\).*/\1/p')
	awk -v a="$(date -d "$a" +%s.%N)" -v b="$(date -d "$b" +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}

log "reboot: configfs comes back empty; the agent builds the targets again by itself"
"$VM" stop
mv "$LIO_SHARE/agent.log" "$LIO_SHARE/agent.log.boot1"
P0=$SECONDS
"$VM" boot
grep -a 'LIO targets at boot' "$LIO_VM_DIR/run/console.log" | grep 'boot: 0' >/dev/null || die "configfs was not empty after the reboot"
wait_until 180 "n1 served again" iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/0"
wait_until 60 "n2 served again" chap "${C[0]}" "${C[1]}" "${C[2]}" "${C[3]}" iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0"
timing "boot to both targets served again"
echo "BENCH rebuild of 2 targets after a reboot: $(agent_secs 'msg=starting' 'msg="enabled target"') s from the agent's start to the last target enabled"
[ "$(serial "$T1" "$I1")" = "$S1" ] || die "n1's serial changed across the reboot"
[ "$(chap "${C[0]}" "${C[1]}" "${C[2]}" "${C[3]}" serial "$T2" "$I2")" = "$S2" ] || die "n2's serial changed across the reboot"
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1")" -c "read -P 0xa5 8M 1M" | grep "read 1048576/1048576" >/dev/null ||
	die "n1 lost a write across the reboot"
if iscsi-inq -i "$I2" "iscsi://$PORTAL/$T2/0" >/dev/null 2>&1; then die "after the reboot n2 lets its initiator in without CHAP"; fi
pass "after the reboot: both targets back, same serials, same data, CHAP still required"
check_ready_readable
((READY_CHECKED == 4)) || die "after the reboot, $((READY_CHECKED - 2)) of the 2 Ready nodes were read by their own initiators"
pass "after the reboot, both Ready nodes read by their own initiators with their boot scripts' credentials"

log "deprovision while n1 has a live session"
qemu-io --image-opts "$(iscsi_opts "$T1" "$I1")" -c "read 0 4k" -c "sleep 60000" >"$WORK/qemu-io-session.log" 2>&1 &
QIO=$!
SANBOOT_PIDS+=("$QIO")
wait_until 60 "n1's session" vm "grep -q InitiatorName /sys/kernel/config/target/iscsi/$T1/tpgt_1/acls/$I1/info"
ctl deprovision n1 n2 --wait --timeout 180s
stop_pid "$QIO"
vm 'sanboot-agent lio dump' >"$WORK/lio-dump.txt"
tail -1 "$WORK/lio-dump.txt" | grep ': 0 targets, 0 backstores$' >/dev/null || { cat "$WORK/lio-dump.txt"; die "sanboot objects left in configfs"; }
if vm 'find /sys/kernel/config/target | grep io.sanboot'; then die "configfs still names a sanboot object"; fi
if iscsi-inq -i "$I1" "iscsi://$PORTAL/$T1/0" >/dev/null 2>&1; then die "n1's target still serves after deprovision"; fi
grep -q 'configfs says busy' "$LIO_SHARE/agent.log" && echo "note: the agent met EBUSY during the teardown and retried (see agent.log)"
pass "deprovision with a live session: configfs holds no sanboot object"
timing "deprovision"

# bench_fleet (--bench): issue 14's LIO figures, on the user's path. N
# nodes (LIO_BENCH_NODES, default 500; CHAP on every other one) through
# `sanbootctl apply -f --wait`; then the baseline: the guest rebooted
# without the agent, the same N disks made targets by bare configfs writes
# from its shell (hack/lio/bare-targets.sh); then a real reboot with the
# agent, and the time until it has built every target again and every
# node says Ready again by a status written after the reboot; the ratio;
# `delete -f --wait` of the N.
bench_fleet() {
	local n=${LIO_BENCH_NODES:-500} i chap t0 t1 t2 out base floor mark first last rebuild
	now() { date +%s.%N; }
	secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
	load() { cut -d' ' -f1-3 /proc/loadavg; }
	# phases: NAME PHASE UPDATE_TIME of every bench node.
	phases() { ctl get nodes -l bench=lio -o 'jsonpath={range .nodes[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.updateTime}{"\n"}{end}'; }
	# written_since MARK: a bench node has a status written at or after
	# MARK (UTC, to the second: the statuses from before the reboot are
	# older than the VM's boot); ready_since MARK: every one is Ready by
	# such a status; no_stale_ready MARK: none is Ready by an older one.
	# (awk counts: grep -q would leave at the first line, awk would die of
	# SIGPIPE, and pipefail would turn a match into a failure.)
	no_stale_ready() { [ "$(phases | awk -F'\t' -v m="$1" '$2 == "Ready" && substr($3, 1, 19) < m { c++ } END { print c + 0 }')" -eq 0 ]; }
	written_since() { [ "$(phases | awk -F'\t' -v m="$1" 'substr($3, 1, 19) >= m { c++ } END { print c + 0 }')" -gt 0 ]; }
	ready_since() { [ "$(phases | awk -F'\t' -v m="$1" '$2 == "Ready" && substr($3, 1, 19) >= m { c++ } END { print c + 0 }')" -eq "$n" ]; }
	for i in $(seq -w 1 "$n"); do
		chap=
		((10#$i % 2 == 0)) && chap=', chap: true'
		printf -- '---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: b%s, labels: {bench: lio}}\nspec: {image: golden%s}\n' "$i" "$chap"
	done >"$WORK/bench-nodes.yaml"
	first=b$(seq -w 1 "$n" | head -1)
	log "benchmark: apply -f of $n new nodes --wait (a reflink clone and a target each; CHAP on every other one)"
	t0=$(now)
	ctl apply -f "$WORK/bench-nodes.yaml" --wait --timeout 1800s >"$WORK/bench-apply.out" 2>&1
	t1=$(now)
	[ "$(phases | awk -F'\t' '$2 == "Ready"' | wc -l)" -eq "$n" ] || die "apply --wait returned before the $n nodes were Ready"
	iscsi-inq -i "iqn.2026-11.io.sanboot:initiator.default.$first" "iscsi://$PORTAL/iqn.2026-11.io.sanboot:default.$first/0" | grep LIO-ORG >/dev/null ||
		die "$first is not served after the apply"
	echo "BENCH lio: apply -f --wait of $n new nodes: $(secs "$t0" "$t1") s (load $(load))"
	timing "$n nodes applied"

	log "baseline: a guest booted without the agent; the same $n disks made targets by bare configfs writes from its shell"
	"$VM" stop
	touch "$LIO_SHARE/no-agent"
	cp hack/lio/bare-targets.sh "$LIO_SHARE/"
	"$VM" boot
	out=$(vm 'sh /mnt/host/bare-targets.sh /var/lib/sanboot/disks/default')
	base=$(sed -n 's/^bare: [0-9]* targets in \([0-9.]*\) s$/\1/p' <<<"$out")
	[ -n "$base" ] && grep -q "^bare: $n targets" <<<"$out" || die "bare-targets.sh: $out"
	iscsi-inq -i "iqn.2026-12.io.example.bare:initiator.$first" "iscsi://$PORTAL/iqn.2026-12.io.example.bare:$first/0" | grep LIO-ORG >/dev/null ||
		die "the baseline's target $first does not serve"
	echo "BENCH lio: baseline, $n targets by bare configfs writes from the guest's shell: $base s (load $(load))"
	# The floor: the same calls from a program, 8 at a time, on the same
	# disks, in a guest booted again (configfs empty and the disks' inodes
	# not cached, as for the agent).
	"$VM" stop
	"$VM" boot
	out=$(vm 'cd /tmp && SANBOOT_LIO_CONFIGFS=/sys/kernel/config/target SANBOOT_LIO_BENCH_KEEP=1 SANBOOT_LIO_BARE_DIR=/var/lib/sanboot/disks/default lio.test -test.run "^$" -test.bench "^BenchmarkKernelBare$" -test.benchtime 1x 2>&1')
	floor=$(awk '/^BenchmarkKernelBare/ { printf "%.2f", $3 / 1e9 }' <<<"$out")
	[ -n "$floor" ] || die "BenchmarkKernelBare: $out"
	echo "BENCH lio: floor, 500 targets by bare configfs calls from a Go program, 8 at a time: $floor s (load $(load))"
	"$VM" stop
	rm "$LIO_SHARE/no-agent"
	mv "$LIO_SHARE/agent.log" "$LIO_SHARE/agent.log.bench-apply"
	timing "baseline"

	log "reboot: the agent builds the $n targets again by itself"
	mark=$(date -u +%Y-%m-%dT%H:%M:%S)
	t0=$(now)
	"$VM" boot
	grep -a 'LIO targets at boot' "$LIO_VM_DIR/run/console.log" | grep 'boot: 0' >/dev/null || die "configfs was not empty after the reboot"
	# The agent's first resync says, in a few transactions, which nodes it
	# has to build again: none may go on saying Ready from before the
	# reboot while its target is not there.
	wait_until 300 "a status written after the reboot" written_since "$mark"
	wait_until 300 "no node Ready by a status from before the reboot" no_stale_ready "$mark"
	echo "note: when the agent is back, before its rebuild: $(phases | awk -F'\t' -v m="$mark" '{ print $2 (substr($3, 1, 19) >= m ? " (new status)" : " (status from before the reboot)") }' | sort | uniq -c | xargs)"
	wait_until 1800 "$n nodes Ready by a status written after the reboot" ready_since "$mark"
	t1=$(now)
	last=$(phases | cut -f3 | sort | tail -1)
	t2=$(date -d "$(grep -m1 'msg=starting' "$LIO_SHARE/agent.log" | sed -n 's/^time=\([^ ]*\).*/\1/p')" +%s.%N)
	rebuild=$(secs "$t2" "$(date -d "$last" +%s.%N)")
	iscsi-inq -i "iqn.2026-11.io.sanboot:initiator.default.$first" "iscsi://$PORTAL/iqn.2026-11.io.sanboot:default.$first/0" | grep LIO-ORG >/dev/null ||
		die "$first is not served after the rebuild"
	echo "BENCH lio: rebuild of $n targets after a reboot: $rebuild s from the agent's start to the last node's Ready status" \
		"($(agent_secs 'msg=starting' 'msg="enabled target"') s to the last target enabled; $(secs "$t0" "$t1") s from the VM's start, boot included; load $(load))"
	echo "BENCH lio: rebuild / shell baseline = $(awk -v a="$rebuild" -v b="$base" 'BEGIN { printf "%.2f", a / b }');" \
		"rebuild / floor = $(awk -v a="$rebuild" -v b="$floor" 'BEGIN { printf "%.2f", a / b }')"
	timing "reboot to $n nodes Ready again"

	t0=$(now)
	ctl delete -f "$WORK/bench-nodes.yaml" --wait --timeout 1800s >/dev/null
	t1=$(now)
	vm 'sanboot-agent lio dump' | tail -1 | grep ': 0 targets, 0 backstores$' >/dev/null || die "sanboot objects left in configfs after the benchmark"
	echo "BENCH lio: delete -f --wait of $n nodes: $(secs "$t0" "$t1") s (load $(load))"
	timing "$n nodes deleted"
}

if [ -n "${LIO_BENCH:-}" ]; then
	bench_fleet
fi
ctl image rm golden

"$VM" stop
# Keep the logs; the binaries, the initramfs and the disks go.
rm -rf "$BIN" "$LIO_VM_DIR/out" "$LIO_DISK" "$WORK/www" "$WORK/n1.raw"
echo "e2e-lio: $PASSED passed, 0 failed"
