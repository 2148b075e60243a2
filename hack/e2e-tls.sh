#!/usr/bin/env bash
# e2e-tls.sh: mutual TLS and identities end to end, with real processes on
# random loopback ports: a CA and certificates made by sanbootctl pki, a
# control plane whose etcd and API speak only mutual TLS, an agent
# (--driver=fake) that reaches both with its certificate, users confined
# to their projects; bad credentials refused with nothing written (agent
# a1 reading a2's assignments or writing the status of a2's node is
# refused by etcd itself); a
# rotated certificate in use without a restart; and no private key or
# CHAP secret in any log or output.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

WORK=$(mktemp -d /tmp/sanboot-e2e-tls.XXXXXX)
BIN=$WORK/bin
PKI=$WORK/pki
OUT=$WORK/out # every output of sanbootctl, scanned at the end
mkdir -p "$OUT"
trap 'stop_all; echo "logs and data: $WORK"' EXIT
build_binaries "$BIN"
go build -o "$BIN/" ./hack/etcdprobe
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
n=0
run() { n=$((n + 1)); "$BIN/sanbootctl" "$@" >"$OUT/$n.out" 2>"$OUT/$n.err"; }
last_err() { cat "$OUT/$n.err"; }

log "a CA and certificates (sanbootctl pki)"
run pki init "$PKI"
run pki issue member cp1 --dir "$PKI"
run pki issue agent a1 --dir "$PKI"
run pki issue agent a2 --dir "$PKI"
run pki issue user root --admin --dir "$PKI"
run pki issue user alice --project lab --dir "$PKI"
[ "$(stat -c %a "$PKI/user-alice.key")" = 600 ] && [ "$(stat -c %a "$PKI/ca.key")" = 600 ] || die "keys are not 0600"
ok "keys written 0600"
run pki show "$PKI/user-alice.crt"
grep -q "Projects:   lab" "$OUT/$n.out" && ! grep -q PRIVATE "$OUT/$n.out" || die "pki show: $(cat "$OUT/$n.out")"
ok "pki show prints the identity and no key"

as() { # as WHO ARGS...: sanbootctl with WHO's certificate
	local who=$1
	shift
	run --cert "$PKI/user-$who.crt" --key "$PKI/user-$who.key" --cacert "$PKI/ca.crt" "$@"
}

log "the control plane over mutual TLS"
CLIENT_PORT=$(free_port) PEER_PORT=$(free_port) API_PORT=$(free_port)
ETCD_URL=https://127.0.0.1:$CLIENT_PORT
API_ADDR=127.0.0.1:$API_PORT
export SANBOOT_ENDPOINTS=$API_ADDR
M="$PKI/member-cp1"
"$BIN/sanboot-controlplane" --name cp1 --data-dir "$WORK/cp" \
	--listen-client-urls "$ETCD_URL" --listen-peer-urls "https://127.0.0.1:$PEER_PORT" \
	--cert-file "$M.crt" --key-file "$M.key" --trusted-ca-file "$PKI/ca.crt" \
	--peer-cert-file "$M.crt" --peer-key-file "$M.key" --peer-trusted-ca-file "$PKI/ca.crt" \
	--api-listen "$API_ADDR" --boot-listen "" --metrics-listen "127.0.0.1:$(free_port)" \
	>>"$WORK/controlplane.log" 2>&1 &
SANBOOT_PIDS+=("$!")
wait_until 60 "the API over TLS" as root get agents
ok "an admin reaches the API with its certificate"

log "an agent with its certificate, to etcd and the API"
start_tls_agent() {
	"$BIN/sanboot-agent" --etcd-endpoints "$ETCD_URL" --driver=fake --store-dir "$WORK/store-$1" \
		--cert "$PKI/$2.crt" --key "$PKI/$2.key" --cacert "$PKI/ca.crt" \
		--metrics-listen "127.0.0.1:$(free_port)" >>"$WORK/agent-$1.log" 2>&1 &
	AGENT_PID=$!
	SANBOOT_PIDS+=("$AGENT_PID")
}
if "$BIN/sanboot-agent" --etcd-endpoints "$ETCD_URL" --driver=fake --store-dir "$WORK/store-a1" \
	--cert "$PKI/agent-a1.crt" --key "$PKI/agent-a1.key" --cacert "$PKI/ca.crt" 2>"$OUT/agent-not-enrolled.err"; then
	die "an agent that is not enrolled started"
fi
grep -q "sanbootctl agents enroll a1" "$OUT/agent-not-enrolled.err" || die "agent not enrolled: $(cat "$OUT/agent-not-enrolled.err")"
ok "etcd refuses an agent that is not enrolled, and the agent says what to run"
as alice agents enroll a1 && die "a user enrolled an agent"
as root agents enroll a1 || die "enroll: $(last_err)"
start_tls_agent a1 agent-a1
tls_agent_ready() { as root get agents a1 -o json && grep -q '"state": *"Ready"' "$OUT/$n.out"; }
wait_until 60 "agent a1 Ready" tls_agent_ready
ok "agent a1 registered over TLS (its name is its certificate's CN)"

log "an admin makes an image in lab and in default; alice provisions in lab"
as root image create golden --size 1GiB -p lab
as root image create golden --size 1GiB -p default
image_ready() { as root get images golden -p lab -o json && grep -q '"phase": *"Ready"' "$OUT/$n.out"; }
wait_until 60 "image golden Ready" image_ready
as alice provision n1 --image golden --mac 52:54:00:00:00:01 --chap -p lab --wait --timeout 60s || die "alice: $(last_err)"
ok "a user provisions a node with CHAP in her project"

log "bad credentials are refused and nothing is written"
keys() { as root get nodes -A -o name && sort "$OUT/$n.out" | tr '\n' ' '; }
before=$(keys)
refused() { # refused WANT ARGS...: the call fails and its error says WANT
	local want=$1
	shift
	if "$@"; then die "accepted: $*"; fi
	grep -q -- "$want" "$OUT/$n.err" || die "$*: the error does not say \"$want\": $(last_err)"
	[ "$(keys)" = "$before" ] || die "$*: the store changed"
	ok "refused ($want): $(head -c 160 "$OUT/$n.err")"
}
refused "give --cert, --key and --cacert" run get nodes -p lab
refused 'project "default": user alice' as alice get nodes -p default
refused 'project "default": user alice' as alice provision n2 --image golden --mac 52:54:00:00:00:02 -p default
refused "all projects (-A) are for admins" as alice get nodes -A
refused "for admins only" as alice get agents
run pki issue user mallory --project lab --dir "$PKI" --out-dir "$WORK" # same name, other directory: fine
run pki init "$WORK/other-ca"
run pki issue user eve --admin --dir "$WORK/other-ca"
refused "if the TLS handshake failed" run --cert "$WORK/other-ca/user-eve.crt" --key "$WORK/other-ca/user-eve.key" --cacert "$PKI/ca.crt" get nodes -p lab
run pki issue user old --project lab --dir "$PKI" --valid-for 1s
sleep 2
refused "if the TLS handshake failed" as old get nodes -p lab
refused "for users; agent a1" run --cert "$PKI/agent-a1.crt" --key "$PKI/agent-a1.key" --cacert "$PKI/ca.crt" get nodes -p lab
refused "for admins only" as alice backup "$WORK/alice.snapshot"
as root backup "$WORK/root.snapshot" || die "backup by an admin: $(last_err)"
ok "an admin backs up through the API"
"$BIN/sanboot-controlplane" snapshot save --endpoints "$ETCD_URL" --cert "$M.crt" --key "$M.key" --cacert "$PKI/ca.crt" \
	"$WORK/member.snapshot" >"$OUT/snapshot.out" 2>&1 || die "snapshot save over TLS: $(cat "$OUT/snapshot.out")"
ok "snapshot save over TLS with the member's certificate"
if "$BIN/sanboot-agent" --etcd-endpoints "$ETCD_URL" --driver=fake --store-dir "$WORK/store-x" \
	--cert "$PKI/user-alice.crt" --key "$PKI/user-alice.key" --cacert "$PKI/ca.crt" 2>"$OUT/agent-user.err"; then
	die "an agent started with a user's certificate"
fi
grep -q "is a user's certificate" "$OUT/agent-user.err" || die "agent with a user's certificate: $(cat "$OUT/agent-user.err")"
ok "an agent refuses a user's certificate"
grep -q 'msg=audit method=PutNode caller=alice role=user insecure=false project=default name=n2 code=PermissionDenied' "$WORK/controlplane.log" ||
	die "no audit line for alice's refused PutNode"
ok "audit line for a refused write"

log "etcd itself confines an agent to its own keys"
as root agents enroll a2 || die "enroll a2: $(last_err)"
start_tls_agent a2 agent-a2
as root provision n3 --image golden --mac 52:54:00:00:00:03 --agent a2 --chap -p lab --wait --timeout 120s || die "a node on a2: $(last_err)"
probe() { # probe CERT ARGS...: etcdprobe get|put as the etcd user of CERT
	local cert=$1
	shift
	n=$((n + 1))
	"$BIN/etcdprobe" --endpoints "$ETCD_URL" --cert "$PKI/$cert.crt" --key "$PKI/$cert.key" --cacert "$PKI/ca.crt" "$@" >"$OUT/$n.out" 2>"$OUT/$n.err"
}
probe agent-a1 get /sanboot/v1/assign/a1/ || die "a1 reads its assignments: $(last_err)"
grep -q "^/sanboot/v1/assign/a1/lab/n1 " "$OUT/$n.out" || die "a1's assignments: $(cat "$OUT/$n.out")"
ok "agent a1 reads its own assignments from etcd"
probe member-cp1 get /sanboot/v1/nodestatus/a2/lab/n3 && grep -q "^/sanboot/v1/nodestatus/a2/lab/n3 " "$OUT/$n.out" ||
	die "no status of n3 by a2: $(last_err)"
before=$(keys)
forged=$(printf forged | od -An -tx1 | tr -d ' \n')
refused "permission denied" probe agent-a1 get /sanboot/v1/assign/a2/
refused "permission denied" probe agent-a1 put /sanboot/v1/nodestatus/a2/lab/n3 forged
refused "permission denied" probe agent-a1 put /sanboot/v1/imagereplicas/a2/lab/golden forged
probe member-cp1 get /sanboot/v1/ || die "read the store: $(last_err)"
grep -q "^/sanboot/v1/nodestatus/a2/lab/n3 " "$OUT/$n.out" && ! grep -q " $forged\$" "$OUT/$n.out" ||
	die "the store after a1's refused writes: $(grep -e nodestatus -e imagereplicas "$OUT/$n.out")"
as root get nodes n3 -p lab -o json && grep -q '"phase": *"Ready"' "$OUT/$n.out" || die "n3 after a1's refused writes: $(cat "$OUT/$n.out")"
ok "a2's status of n3 and its replica are untouched, and n3 is Ready"

log "rotation: new certificates on disk are used without a restart"
rm "$PKI/user-alice.crt" "$PKI/user-alice.key" "$M.crt" "$M.key"
run pki issue user alice --project lab --dir "$PKI"
run pki issue member cp1 --dir "$PKI"
as alice get nodes n1 -p lab || die "after rotation: $(last_err)"
ok "alice's and the member's certificates replaced, served without a restart"

log "no private key, CHAP secret or boot token in any log or output"
as root describe node n1 -p lab
as root get nodes n1 -p lab -o yaml
leaks=0
for k in "$PKI"/*.key "$WORK"/*.key "$WORK"/other-ca/*.key; do
	body=$(grep -v -- ----- "$k" | head -1)
	if grep -rqF -- "$body" "$WORK"/*.log "$OUT"; then echo "key $k leaked"; leaks=1; fi
	record_keys "$k" # and for the suite's scan (hack/test.sh)
done
for node in n1 n3; do # their scripts hold their CHAP secrets: kept apart from the scanned outputs
	"$BIN/sanbootctl" --cert "$PKI/user-root.crt" --key "$PKI/user-root.key" --cacert "$PKI/ca.crt" \
		boot-script "$node" -p lab >"$WORK/$node.ipxe" 2>&1 || die "boot-script $node: $(cat "$WORK/$node.ipxe")"
	chap=$(sed -n 's/^set password //p' "$WORK/$node.ipxe")
	[ -n "$chap" ] || die "no CHAP secret in $node's script ($WORK/$node.ipxe)"
	record_secret "$chap"
	if grep -rqF -- "$chap" "$WORK"/*.log "$OUT"; then echo "$node's CHAP secret leaked"; leaks=1; fi
done
if grep -rq "PRIVATE KEY" "$WORK"/*.log "$OUT"; then echo "a PEM private key in the logs"; leaks=1; fi
if grep -rqiE '"(secret|mutualSecret)": *"[^"]' "$OUT" "$WORK"/*.log; then echo "a CHAP secret in the output"; leaks=1; fi
[ $leaks = 0 ] || die "secrets leaked"
ok "no key or CHAP secret in $(ls "$OUT" | wc -l) outputs and $(ls "$WORK"/*.log | wc -l) logs"

echo "e2e-tls: $passed passed, 0 failed"
