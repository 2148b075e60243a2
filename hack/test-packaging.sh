#!/usr/bin/env bash
# test-packaging.sh: the host-side checks of installing sanboot as
# services (issue 8), without a guest:
#   1. systemd-analyze verify on both units (rendered for this checkout's
#      bin/, since verify wants ExecStart to exist), and that they are
#      Type=notify with Restart=on-failure;
#   2. make install into a DESTDIR, then make uninstall: every installed
#      file is gone, an edited configuration and the data directory stay;
#   3. make deb (nfpm), and the package holds the binaries, units, configs
#      (as conffiles) and maintainer scripts.
# Needs systemd (for systemd-analyze) and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-packaging: FAIL: $*" >&2; exit 1; }

make --no-print-directory build >/dev/null

echo "== systemd-analyze verify"
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing (Debian package: systemd)"
mkdir -p "$tmp/units"
for u in sanboot-controlplane.service sanboot-agent.service; do
	sed -e "s|@BINDIR@|$PWD/bin|g" -e "s|@SYSCONFDIR@|/etc|g" "packaging/systemd/$u.in" >"$tmp/units/$u"
	grep -qx 'Type=notify' "$tmp/units/$u" || fail "$u is not Type=notify"
	grep -qx 'Restart=on-failure' "$tmp/units/$u" || fail "$u lacks Restart=on-failure"
done
grep -qx 'User=sanboot' "$tmp/units/sanboot-controlplane.service" || fail "the control plane must run as sanboot"
grep -qx 'ProtectSystem=strict' "$tmp/units/sanboot-controlplane.service" || fail "the control plane must have ProtectSystem=strict"
out=$(systemd-analyze verify "$tmp/units/sanboot-controlplane.service" "$tmp/units/sanboot-agent.service" 2>&1) ||
	fail "systemd-analyze verify: $out"
# verify exits 0 on some warnings (unknown keys): any output about our units is a failure.
if grep -i 'sanboot' <<<"$out"; then fail "systemd-analyze verify warns about the units"; fi
echo "units verified"

echo "== make install / uninstall (DESTDIR)"
dest="$tmp/root"
make --no-print-directory install PREFIX=/usr DESTDIR="$dest" >/dev/null
for f in usr/bin/sanboot-controlplane usr/bin/sanboot-agent usr/bin/sanbootctl \
	lib/systemd/system/sanboot-controlplane.service lib/systemd/system/sanboot-agent.service \
	etc/sanboot/controlplane.yaml etc/sanboot/agent.yaml \
	usr/share/bash-completion/completions/sanbootctl usr/share/zsh/vendor-completions/_sanbootctl \
	usr/share/fish/vendor_completions.d/sanbootctl.fish; do
	[ -f "$dest/$f" ] || fail "make install did not write /$f"
done
for m in docs/man/*.[1-8]; do
	[ -e "$m" ] || continue
	[ -f "$dest/usr/share/man/man${m##*.}/${m##*/}" ] || fail "make install did not install the man page $m"
done
grep -q "ExecStart=/usr/bin/sanboot-controlplane --config /etc/sanboot/controlplane.yaml" \
	"$dest/lib/systemd/system/sanboot-controlplane.service" || fail "unit's ExecStart does not follow BINDIR"
# The shipped configurations load (every key known, every value valid).
# (restore parses the member's flags and --config, then fails on the
# missing snapshot; agent.yaml is checked by the agent's Go tests.)
out=$("$dest/usr/bin/sanboot-controlplane" restore --config "$dest/etc/sanboot/controlplane.yaml" \
	--data-dir "$tmp/restore" "$tmp/no-such-snapshot" 2>&1) && fail "restore of a missing snapshot succeeded"
grep -q "restore $tmp/no-such-snapshot into" <<<"$out" || fail "the shipped controlplane.yaml does not load: $out"
mkdir -p "$dest/var/lib/sanboot-controlplane" && echo data >"$dest/var/lib/sanboot-controlplane/keep"
make --no-print-directory uninstall PREFIX=/usr DESTDIR="$dest" >/dev/null
left=$(cd "$dest" && find . -type f | sort)
[ "$left" = "./var/lib/sanboot-controlplane/keep" ] || fail "after uninstall: $left"
# An edited configuration survives install and uninstall.
make --no-print-directory install PREFIX=/usr DESTDIR="$dest" >/dev/null
echo "# edited" >>"$dest/etc/sanboot/agent.yaml"
make --no-print-directory install PREFIX=/usr DESTDIR="$dest" >/dev/null
grep -q '^# edited' "$dest/etc/sanboot/agent.yaml" || fail "install overwrote an edited configuration"
make --no-print-directory uninstall PREFIX=/usr DESTDIR="$dest" >/dev/null
[ -f "$dest/etc/sanboot/agent.yaml" ] || fail "uninstall removed an edited configuration"
[ ! -e "$dest/etc/sanboot/controlplane.yaml" ] || fail "uninstall kept an unedited configuration"
echo "install and uninstall write and remove the same files"

echo "== make deb"
rm -f bin/sanboot_*.deb
make --no-print-directory deb >/dev/null
deb=$(ls bin/sanboot_*.deb)
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/sanboot-controlplane ./usr/bin/sanboot-agent ./usr/bin/sanbootctl \
	./lib/systemd/system/sanboot-controlplane.service ./lib/systemd/system/sanboot-agent.service \
	./etc/sanboot/controlplane.yaml ./etc/sanboot/agent.yaml ./usr/share/doc/sanboot/operations.md; do
	grep -q " $f\$" <<<"$contents" || fail "$deb lacks $f"
done
if ls docs/man/*.1 >/dev/null 2>&1; then
	m=$(basename "$(ls docs/man/*.1 | head -1)")
	grep -q " ./usr/share/man/man1/$m\$" <<<"$contents" || fail "$deb lacks the man page $m"
fi
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/sanboot/agent.yaml "$tmp/control/conffiles" || fail "agent.yaml is not a conffile"
grep -q 'adduser --system' "$tmp/control/postinst" || fail "postinst does not create the sanboot user"
! grep -q 'systemctl enable\|deb-systemd-helper enable' "$tmp/control/postinst" || fail "postinst enables a unit"
grep -q 'SANBOOT_PURGE_DATA' "$tmp/control/postrm" || fail "postrm purges data unasked"
echo "$deb: $(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')"
echo "test-packaging: ok"
