#!/usr/bin/env bash
# test.sh: every test sanboot has, as CI runs them (`make test`). Installs
# what it needs first. Tiers (DESIGN.md): 1. go test ./... (unit tests and
# integration tests against a real embedded etcd); 2. end to end with real
# processes (hack/e2e.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh

echo "== generated code is up to date"
make --no-print-directory check-generate

echo "== gofmt, go vet"
unformatted=$(gofmt -l $(git ls-files '*.go'))
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted (run 'make fmt')"; exit 1; }
go vet ./...

echo "== go test ./..."
go test -count=1 -timeout 15m ./...

echo "== end to end"
hack/e2e.sh
hack/e2e-apply.sh
hack/e2e-tgt.sh
E2E_STORE=ext4 hack/e2e-tgt.sh
hack/e2e-rbd.sh
hack/e2e-boot.sh
hack/e2e-lio.sh
hack/test-packaging.sh
hack/e2e-restart.sh
hack/e2e-systemd.sh
