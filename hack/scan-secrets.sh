#!/usr/bin/env bash
# scan-secrets.sh SECRETS PATH...: the suite's last check. Fails when a
# secret the tests recorded (SECRETS, one per line: CHAP secrets, the first
# base64 line of private keys, boot tokens; see record_secret in lib.sh and
# internal/testsecrets), or any PEM private key, appears in a log or output
# under the PATHs: the text files named *.log, *.out, *.err and *.serial
# (key files, disk images and etcd's data are not logs). It names the file
# and how many secrets it holds, never a secret.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: scan-secrets.sh SECRETS PATH..." >&2; exit 2; }
secrets=$1
shift
# Shorter strings would match by chance; every secret sanboot makes is longer.
patterns=$(mktemp)
trap 'rm -f "$patterns"' EXIT
awk 'length($0) >= 12' "$secrets" | sort -u >"$patterns"
[ -s "$patterns" ] || { echo "scan-secrets: $secrets holds no secret to look for: the tests recorded none" >&2; exit 1; }
paths=()
for p in "$@"; do
	if [ -e "$p" ]; then paths+=("$p"); else echo "scan-secrets: $p is gone: not scanned"; fi
done
files=$(find "${paths[@]}" -type f \( -name '*.log' -o -name '*.out' -o -name '*.err' -o -name '*.serial' \) -size -512M | sort)
[ -n "$files" ] || { echo "scan-secrets: no log or output under $*" >&2; exit 1; }
leaks=0
while IFS= read -r f; do
	if grep -qIF -f "$patterns" -- "$f"; then
		echo "scan-secrets: $f holds $(grep -oIF -f "$patterns" -- "$f" | sort -u | wc -l) of the secrets recorded in $secrets"
		leaks=1
	fi
	if grep -qI -- "PRIVATE KEY-----" "$f"; then
		echo "scan-secrets: $f holds a PEM private key"
		leaks=1
	fi
done <<<"$files"
[ $leaks = 0 ] || exit 1
echo "scan-secrets: none of $(wc -l <"$patterns") secrets in $(wc -l <<<"$files") logs and outputs"
