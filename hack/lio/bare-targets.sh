#!/bin/sh
# bare-targets.sh DIR: the baseline of hack/e2e-lio.sh --bench. In the LIO
# guest, with nothing but the shell, it builds one target per disk file in
# DIR (*.raw) through configfs: the same objects, in the same order, as
# the agent's lio driver builds for a new target (agent/target/lio,
# ensure.go): a fileio backstore in an HBA of its own with control,
# enable, VPD serial, emulate_tpu and emulate_tpws; the target, tpgt_1,
# a portal, LUN 0 linked to the backstore; generate_node_acls=0 and one
# ACL with LUN 0 mapped; CHAP on every other target (user, password,
# authentication=1), none on the others (authentication=0); enable. It
# reads nothing back and checks nothing: the fastest a program can ask the
# kernel for these targets. Its IQNs (iqn.2026-12.io.example.bare:NAME) are
# not sanboot's, so an agent leaves them alone. It prints
# "bare: N targets in S s" (the guest's /proc/uptime).
set -eu
DIR=$1
C=/sys/kernel/config/target
PORTAL=${BARE_PORTAL:-10.0.2.15:3260}
t0=$(cut -d' ' -f1 /proc/uptime)
mkdir -p $C/iscsi
i=0
for f in "$DIR"/*.raw; do
	i=$((i + 1))
	name=${f##*/}
	name=${name%.raw}
	iqn=iqn.2026-12.io.example.bare:$name
	in=iqn.2026-12.io.example.bare:initiator.$name
	b=$C/core/fileio_$((900000 + i))/$name
	mkdir -p "$b"
	echo "fd_dev_name=$f,fd_dev_size=$(stat -c %s "$f")" >"$b/control"
	echo 1 >"$b/enable"
	echo "bare-$name" >"$b/wwn/vpd_unit_serial"
	echo 1 >"$b/attrib/emulate_tpu"
	echo 1 >"$b/attrib/emulate_tpws"
	t=$C/iscsi/$iqn/tpgt_1
	mkdir -p "$t"
	mkdir "$t/np/$PORTAL"
	mkdir "$t/lun/lun_0"
	ln -s "$b" "$t/lun/lun_0/backstore"
	echo 0 >"$t/attrib/generate_node_acls"
	mkdir -p "$t/acls/$in/lun_0"
	ln -s "$t/lun/lun_0" "$t/acls/$in/lun_0/map"
	if [ $((i % 2)) -eq 0 ]; then
		printf %s "$in" >"$t/acls/$in/auth/userid"
		printf %s "bare-secret-$i-0123456" >"$t/acls/$in/auth/password"
		echo 1 >"$t/attrib/authentication"
	else
		echo 0 >"$t/attrib/authentication"
	fi
	echo 1 >"$t/enable"
done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "bare: $i targets in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
