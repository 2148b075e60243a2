#!/bin/bash
# autorun.sh: the guest side of hack/e2e-systemd.sh, run by
# sanboot-autorun.service in the Debian 12 guest with systemd as PID 1.
# It talks to the host through marker files in /mnt/host.
set -euo pipefail
H=/mnt/host
step() { echo "== $(date +%T) $*"; }
fail() { echo "GUEST FAIL: $*"; exit 1; }
wait_file() {
	local i
	for ((i = 0; i < $2; i++)); do [ -e "$H/$1" ] && return 0; sleep 1; done
	fail "no $1 from the host after $2s"
}
readyz() { # readyz PORT: the HTTP status of /readyz
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
	local status
	read -r _ status _ <&3
	exec 3<&-
	echo "$status"
}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin SANBOOT_ENDPOINTS=127.0.0.1:7443

step "network for the host's port forward"
for dev in $(ls /sys/class/net | grep -v '^lo$'); do
	ip link set "$dev" up
	ip -4 addr show dev "$dev" | grep -q inet || ip addr add 10.0.2.15/24 dev "$dev"
done

step "install the package"
DEBIAN_FRONTEND=noninteractive dpkg -i $H/sanboot.deb
getent passwd sanboot >/dev/null || fail "no sanboot user after install"
for u in sanboot-controlplane sanboot-agent; do
	[ "$(systemctl is-enabled $u)" = disabled ] || fail "$u enabled by the package"
	! systemctl is-active -q $u || fail "$u started by the package"
done

step "configure; start tgt.service"
cat >/etc/sanboot/agent.yaml <<'YAML'
name: g1
driver: tgt
tgtd: system
portal:
  - 127.0.0.1:3260
log-format: json
YAML
systemctl start tgt

step "systemctl start sanboot-controlplane"
systemctl start sanboot-controlplane
[ "$(systemctl show -p SubState --value sanboot-controlplane)" = running ] || fail "control plane not running after start"
sanbootctl get agents || fail "the API does not answer right after systemctl start returned (READY=1 too early)"
[ "$(readyz 9480)" = 200 ] || fail "control plane /readyz not 200 once started"
[ "$(stat -c %U /var/lib/sanboot-controlplane/member)" = sanboot ] || fail "etcd data not owned by sanboot"

step "systemctl start sanboot-agent"
systemctl start sanboot-agent
[ "$(systemctl show -p SubState --value sanboot-agent)" = running ] || fail "agent not running after start"
sanbootctl get agents g1 -o json | grep -q '"state": *"Ready"' || fail "agent not Ready right after systemctl start returned"
[ "$(readyz 9481)" = 200 ] || fail "agent /readyz not 200 once started"

step "an image and a node"
truncate -s 16M /root/golden.raw
head -c 1M /dev/urandom | dd of=/root/golden.raw bs=1M seek=2 conv=notrunc status=none
sha256sum </root/golden.raw | cut -d' ' -f1 >$H/golden.sha256
sanbootctl image import golden /root/golden.raw --wait --timeout 600s
sanbootctl provision n1 --image golden --wait --timeout 600s
touch $H/n1-ready
wait_file reader-started 600

step "systemctl restart sanboot-agent while the host reads n1"
systemctl restart sanboot-agent
sanbootctl wait node n1 --for=ready --timeout=300s
sleep 5
touch $H/restart-done
wait_file reader-stopped 600

step "systemctl stop sanboot-agent: Unavailable at once"
systemctl stop sanboot-agent
sanbootctl get agents g1 -o json | grep -q '"state": *"Unavailable"' || fail "agent not Unavailable right after systemctl stop"
# tgtd (tgt.service) keeps serving n1: it stays Ready, saying its agent stopped.
sanbootctl get nodes n1 -o json | grep -q '"phase": *"Ready"' || fail "n1 not Ready while its agent is stopped and tgtd serves it"
sanbootctl get nodes n1 -o json | grep -q 'left the target serving' || fail "n1 does not say its agent stopped leaving the target served"

step "the journal has the structured logs"
journalctl -u sanboot-agent -o cat >$H/agent.journal
journalctl -u sanboot-controlplane -o cat >$H/controlplane.journal
grep -q '"msg":"lease revoked; registration removed"' $H/agent.journal || fail "no JSON 'lease revoked' line in the agent's journal"
grep -q '"msg":"serving: registered and the first full resync is done"' $H/agent.journal || fail "no JSON 'serving' line in the agent's journal"
grep -q 'msg=serving' $H/controlplane.journal || fail "no 'serving' line in the control plane's journal"
journalctl -u sanboot-agent -o json -n 1 >$H/agent.journal.json

step "systemctl stop sanboot-controlplane"
systemctl stop sanboot-controlplane
journalctl -u sanboot-controlplane -o cat | grep -q 'etcd member stopped' || fail "the control plane did not close its etcd member on stop"
step "guest checks passed"
