#!/usr/bin/env bash
# test.sh: every test sanboot has, as CI runs them (`make test`). Installs
# what it needs first. Tiers (docs/design.md): 1. go test ./... (unit tests,
# and integration tests against a real embedded etcd, among them the whole
# control plane driven by sanbootctl's command tree in integration/); 2. end
# to end with real processes, qemu nodes, VMs and packages (hack/e2e-*.sh).
# Last, every log and output they produced is scanned for the secrets the
# tests recorded (hack/scan-secrets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh

# The tests record the secrets they make in $SANBOOT_SECRETS (outside every
# log directory); the outputs go to $LOGS, and each end-to-end script names
# its own logs directory ("logs: DIR" or "logs and data: DIR").
SCAN=$(mktemp -d /tmp/sanboot-test.XXXXXX)
export SANBOOT_SECRETS=$SCAN/secrets
LOGS=$SCAN/logs
mkdir -p "$LOGS"
: >"$SANBOOT_SECRETS"
echo "== outputs in $LOGS"
e2e_runs=0
e2e() { # e2e SCRIPT: runs an end-to-end script, its output kept in $LOGS too
	e2e_runs=$((e2e_runs + 1))
	"$@" 2>&1 | tee "$LOGS/e2e-$e2e_runs-$(basename "$1" .sh).out"
}

echo "== generated code is up to date"
make --no-print-directory check-generate
echo "== man pages are up to date"
make --no-print-directory check-docs

echo "== gofmt, go vet"
unformatted=$(gofmt -l $(git ls-files '*.go'))
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted (run 'make fmt')"; exit 1; }
go vet ./...

echo "== go test ./... (verbose, in $LOGS/go-test.log: here the packages and the output of those that fail)"
go test -count=1 -timeout 15m -v ./... 2>&1 | tee "$LOGS/go-test.log" |
	awk '{ b = b $0 "\n" } /^(ok|FAIL|\?) *\t/ { if ($1 == "FAIL") printf "%s", b; else print; b = "" } END { printf "%s", b }'

echo "== end to end"
e2e hack/e2e-tls.sh
e2e hack/e2e-netns.sh
e2e hack/e2e-ha.sh
e2e hack/e2e-tgt.sh
E2E_STORE=ext4 e2e hack/e2e-tgt.sh
e2e hack/e2e-rbd.sh
e2e hack/e2e-boot.sh
e2e hack/e2e-lio.sh
e2e hack/test-packaging.sh
e2e hack/e2e-restart.sh
e2e hack/e2e-systemd.sh
e2e hack/test-fresh-machine.sh

echo "== no CHAP secret, private key or boot token in any log or output"
hack/scan-secrets.sh "$SANBOOT_SECRETS" "$LOGS" $(sed -n 's/^logs\( and data\)\{0,1\}: \(\/.*\)$/\2/p' "$LOGS"/e2e-*.out | sort -u)
