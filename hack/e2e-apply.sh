#!/usr/bin/env bash
# e2e-apply.sh: sanbootctl's declarative commands end to end, with real
# processes (sanboot-controlplane with embedded etcd, API and scheduler;
# sanboot-agent --driver=fake) on random loopback ports, using the
# commented manifests in examples/: diff, apply (--dry-run, --wait,
# --prune), get (-o name, jsonpath, -w), describe, wait --for=condition,
# config view, delete (node, --keep-disk, -f) and a bad manifest that must
# write nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

WORK=$(mktemp -d /tmp/sanboot-e2e-apply.XXXXXX)
BIN=$WORK/bin
trap 'stop_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"

# expect_exit CODE CMD...: runs CMD, which must exit with CODE; its
# stdout goes to $WORK/out, its stderr to $WORK/err.
expect_exit() {
	local want=$1 rc=0
	shift
	"$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
	[ "$rc" = "$want" ] || die "$* exited $rc, want $want; stdout: $(cat "$WORK/out"); stderr: $(cat "$WORK/err")"
}
# expect_out TEXT: the last command's stdout contains TEXT.
expect_out() { grep -qF -- "$1" "$WORK/out" || die "stdout lacks '$1': $(cat "$WORK/out")"; }
expect_err() { grep -qF -- "$1" "$WORK/err" || die "stderr lacks '$1': $(cat "$WORK/err")"; }

log "control plane and one agent (fake driver)"
start_controlplane "$WORK"
start_agent "$WORK" a1
expect_exit 0 ctl config view
expect_out "endpointsFrom: SANBOOT_ENDPOINTS"

log "diff before anything exists: exit 1, all additions"
expect_exit 1 ctl diff -f examples/images.yaml
expect_out "+++ applied image/base"

log "apply --dry-run=server writes nothing"
expect_exit 0 ctl apply -f examples/images.yaml --dry-run=server
expect_out "image/base created (server dry run)"
expect_exit 4 ctl get image base

log "a bad manifest is refused as a whole, with file:line:column, and writes nothing"
sed 's/macs: \["52:54:00:00:00:02"\]/macs: ["52:54:00:00:00:02", "nope"]/' examples/nodes.yaml >"$WORK/bad.yaml"
printf '  imgae: typo\n' >>"$WORK/bad.yaml"
expect_exit 1 ctl apply -f examples/images.yaml -f "$WORK/bad.yaml"
expect_err "bad.yaml:32:31: node/n2: spec.macs[1]: \"nope\" is not a MAC address"
expect_err "bad.yaml:36:3: node/n2: spec.imgae: unknown field; did you mean \"image\"?"
expect_exit 4 ctl get image base

log "apply the images and wait, then the nodes and wait"
expect_exit 0 ctl apply -f examples/images.yaml --wait --timeout 60s
expect_out "image/base created"
expect_out "image/base ready"
"$BIN/sanbootctl" get nodes -w >"$WORK/watch.out" 2>"$WORK/watch.err" &
WATCH_PID=$!
SANBOOT_PIDS+=("$WATCH_PID")
expect_exit 1 ctl diff -f examples/nodes.yaml
expect_exit 0 ctl apply -f examples/nodes.yaml --wait --timeout 60s
expect_out "node/n1 created"
expect_out "node/n2 created"
expect_out "node/n1 ready"
expect_out "node/n2 ready"
wait_until 30 "get -w shows n2 Ready" grep -q "^n2 .* Ready" "$WORK/watch.out"
stop_pid "$WATCH_PID"
cat "$WORK/watch.out"

log "applying again changes nothing; diff exits 0"
expect_exit 0 ctl apply -f examples/
expect_out "image/base unchanged"
expect_out "node/n1 unchanged"
expect_exit 0 ctl diff -f examples/

log "get -o name, -o jsonpath, -l; describe; wait --for=condition"
expect_exit 0 ctl get nodes -l rack=r1 -o name
[ "$(cat "$WORK/out")" = "$(printf 'node/n1\nnode/n2')" ] || die "get -o name: $(cat "$WORK/out")"
expect_exit 0 ctl get node n1 -o 'jsonpath={.status.targetIqn}'
expect_out "iqn.2026-11.io.sanboot:default.n1"
expect_exit 0 ctl describe node n1
expect_out "Target IQN: iqn.2026-11.io.sanboot:default.n1"
expect_out "Agent:      a1 (Ready"
expect_out "Created"
expect_out "phase Ready"
cat "$WORK/out"
expect_exit 0 ctl wait node n1 n2 --for=condition=Scheduled --timeout 30s

log "a changed label: diff exit 1, apply says configured"
sed 's/role: worker/role: gpu/' examples/nodes.yaml >"$WORK/nodes.yaml"
expect_exit 1 ctl diff -f "$WORK/nodes.yaml"
expect_out "+    role: gpu"
expect_exit 0 ctl apply -f "$WORK/nodes.yaml"
expect_out "node/n1 configured"

log "a node whose image does not exist: the API refuses it (exit 5, conflict), the others apply"
sed 's/image: base /image: other/' examples/nodes.yaml >"$WORK/other.yaml"
expect_exit 5 ctl apply -f examples/images.yaml -f "$WORK/other.yaml"
expect_err 'node/n1: spec.image: image "other" does not exist in project "default"'
expect_out "node/n2 configured" # back to role=worker

log "prune: n2 left the file, so apply --prune -l rack=r1 deletes it"
awk 'BEGIN{RS="---\n"; ORS=""} NR==1' examples/nodes.yaml >"$WORK/only-n1.yaml"
expect_exit 0 ctl apply -f "$WORK/only-n1.yaml" --prune -l rack=r1 --dry-run=server
expect_out "node/n2 pruned (server dry run)"
expect_exit 0 ctl apply -f "$WORK/only-n1.yaml" --prune -l rack=r1
expect_out "node/n2 pruned"
expect_exit 0 ctl wait node n2 --for=deleted --timeout 60s

log "delete node --keep-disk snapshots the disk into an image first"
expect_exit 0 ctl delete node n1 --keep-disk --wait --timeout 60s
expect_out "node/n1 disk kept as image/n1-disk-"
expect_out "node/n1 deleted"
kept=$(sed -n 's#.*disk kept as image/\([^ ]*\).*#\1#p' "$WORK/out")
expect_exit 0 ctl get image "$kept" -o 'jsonpath={.spec.parent} {.status.phase}'
expect_out "base Ready"
expect_exit 0 ctl image rm "$kept"

log "delete -f: the file's nodes, then its images"
expect_exit 0 ctl apply -f examples/ --wait --timeout 60s
expect_exit 0 ctl delete -f examples/ --wait --timeout 60s
expect_out "node/n1 deleted"
expect_out "image/base deleted"
expect_exit 0 ctl get nodes -o name
[ ! -s "$WORK/out" ] || die "nodes left: $(cat "$WORK/out")"
echo "e2e-apply: 1 passed, 0 failed"
