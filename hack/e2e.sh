#!/usr/bin/env bash
# e2e.sh: the control-plane foundation end to end, with real processes:
# sanboot-controlplane (embedded etcd + API + scheduler), sanboot-agent
# (--driver=fake: this script is about the control plane; the tgt driver is
# hack/e2e-tgt.sh's and the demo's, LIO hack/e2e-lio.sh's), and sanbootctl,
# all on random loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

WORK=$(mktemp -d /tmp/sanboot-e2e.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"
TTL=5

log "control plane and one agent"
start_controlplane "$WORK"
start_agent "$WORK" a1 --lease-ttl ${TTL}s

log "image metadata and two nodes"
ctl image create golden --size 1GiB
wait_until 30 "image golden replicated to a1" sh -c "'$BIN/sanbootctl' get images golden -o json | grep -q '\"phase\": *\"Ready\"'"
ctl provision n1 --image golden --mac 52:54:00:00:00:01 --wait --timeout 60s
ctl provision n2 --image golden --initiator iqn.2026-11.io.example:n2 --wait --timeout 60s
ctl get nodes -o wide
node_phase_is n1 Ready || die "n1 is not Ready"
ctl get nodes n1 -o json | grep -q '"targetIqn": *"iqn.2026-11.io.sanboot:default.n1"' || die "n1 has the wrong target IQN"

log "bad input is refused and nothing is written"
if ctl provision Bad_Name --image golden 2>"$WORK/err"; then die "an invalid name was accepted"; fi
grep -q "DNS label" "$WORK/err" || die "the error does not say what is allowed: $(cat "$WORK/err")"
if ctl provision n3 --image golden --mac 52:54:00:zz:00:01 2>"$WORK/err"; then die "an invalid MAC was accepted"; fi
if ctl get nodes n3 >/dev/null 2>&1; then die "a rejected node was written"; fi

log "an image in use cannot be removed"
set +e
ctl image rm golden 2>"$WORK/err"
rc=$?
set -e
[ "$rc" = 5 ] || die "image rm of a used image exited $rc, want 5 (conflict)"
grep -q n1 "$WORK/err" || die "the refusal does not name the nodes: $(cat "$WORK/err")"

log "kill -9 the agent: it shows as Unavailable once its lease (${TTL}s) expires"
kill -9 "$AGENT_PID"
t0=$SECONDS
wait_until 60 "agent a1 Unavailable" agent_state_is a1 Unavailable
echo "agent a1 Unavailable after $((SECONDS - t0))s (lease TTL ${TTL}s)"
node_phase_is n1 Unavailable || die "n1 does not say its agent is unavailable"
ctl get agents

log "restart the agent: Ready again, assignments kept"
start_agent "$WORK" a1 --lease-ttl ${TTL}s
ctl wait node n1 n2 --for=ready --timeout=60s
ctl get nodes

log "two-step delete"
ctl deprovision n1 --wait --timeout 60s
if ctl get nodes n1 >/dev/null 2>&1; then die "n1 still exists after deprovision --wait"; fi

log "restart the control plane: state is kept"
stop_pid "$CP_PID"
start_controlplane "$WORK"
node_phase_is n2 Ready || wait_until 30 "n2 Ready after control-plane restart" node_phase_is n2 Ready
ctl get nodes
ctl deprovision n2 --wait --timeout 60s
ctl image rm golden
echo "e2e: 1 passed, 0 failed"
