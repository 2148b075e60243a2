#!/usr/bin/env bash
# bench.sh: sanboot's benchmarks (`make bench`). They print figures; record
# them in docs/benchmarks.md with the machine and the date.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/install-deps.sh >/dev/null
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(go version | cut -d' ' -f3), $(date -u +%F)"
go test -run '^$' -bench . -benchtime 1x -count "${COUNT:-1}" ./bench/
