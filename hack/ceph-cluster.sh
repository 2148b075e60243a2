#!/usr/bin/env bash
# ceph-cluster.sh: a throwaway Ceph (pacific, Debian's packages) cluster on
# 127.0.0.1 for sanboot's tests: 1 mon, 1 mgr, 1 BlueStore OSD on a sparse
# file, cephx on. No cephadm, containers, LVM, loop device or kernel module.
#
#   hack/ceph-cluster.sh up DIR     start a cluster in DIR (made if missing;
#                                   must hold no cluster yet) and print its
#                                   environment as shell assignments:
#                                   CEPH_CONF CEPH_USER CEPH_POOL CEPH_DIR
#   hack/ceph-cluster.sh down DIR   stop the daemons it started there (by the
#                                   PIDs in DIR/pids, each checked to be a
#                                   daemon of DIR's ceph.conf) and delete DIR
#
# Ports: the mon listens on CEPH_PORT (default: a free port below 32768,
# outside the ephemeral range, so that no client socket holds it), mgr and
# OSD on the 99 ports above it. The pool is CEPH_POOL (default sanboot) and
# the restricted user client.$CEPH_USER (default sanboot) has only
# `profile rbd` on it, as an agent's user would. client.admin's key is in
# DIR/keyring too (for the test's own set-up: pools, cleanup checks).
#
# Needs: ceph-mon ceph-mgr ceph-osd ceph-common (hack/install-deps.sh).
# Set-up takes ~10 s on 2 cores; `down` ~0.1 s.
set -Eeuo pipefail

usage() { echo "usage: $0 up|down DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
DIR=$2
say() { echo "ceph-cluster: $(date +%T.%3N) $*" >&2; }

# ours PID: PID is a live daemon of this DIR's cluster (a zombie has an
# empty cmdline, so kill -0 is not enough).
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -- "$DIR/ceph.conf" >/dev/null; }

down() {
	[ -d "$DIR" ] || return 0
	DIR=$(cd "$DIR" && pwd)
	[ -f "$DIR/ceph.conf" ] || { echo "ceph-cluster: $DIR has no ceph.conf: not a cluster of this script, left alone" >&2; exit 1; }
	local pids=() p
	if [ -f "$DIR/pids" ]; then
		while read -r _ p; do ours "$p" && pids+=("$p"); done <"$DIR/pids"
	fi
	# The data goes with DIR: no need for a clean shutdown.
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for _ in $(seq 1 50); do
		local left=0
		for p in "${pids[@]}"; do ours "$p" && left=1; done
		[ $left = 0 ] && break
		sleep 0.1
	done
	rm -rf "$DIR"
}

free_base() { # a port P with P..P+99 free, below 32768
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 12000))
		if ! ss -Htln "( sport >= :$p and sport <= :$((p + 99)) )" | grep . >/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "ceph-cluster: no free range of 100 ports found below 32768" >&2
	exit 1
}

up() {
	for tool in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd; do
		command -v "$tool" >/dev/null || { echo "ceph-cluster: $tool not found: install ceph-mon ceph-mgr ceph-osd ceph-common (hack/install-deps.sh)" >&2; exit 1; }
	done
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	[ -e "$DIR/ceph.conf" ] && { echo "ceph-cluster: $DIR already holds a cluster: run '$0 down $DIR' first" >&2; exit 1; }
	local port=${CEPH_PORT:-$(free_base)} pool=${CEPH_POOL:-sanboot} user=${CEPH_USER:-sanboot}
	local conf=$DIR/ceph.conf t0
	t0=$(date +%s%N)
	export CEPH_CONF=$conf
	# A failure half-way stops what was started.
	trap 'say "set-up failed; logs in $DIR/log (kept as $DIR.failed)"; cp -a "$DIR" "$DIR.failed" 2>/dev/null; down' ERR
	mkdir -p "$DIR"/{mon/a,mgr/x,osd/0,log,run,crash}
	cat >"$conf" <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon_host = v2:127.0.0.1:$port
public_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
ms_bind_port_min = $((port + 1))
ms_bind_port_max = $((port + 99))
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $DIR/keyring
run_dir = $DIR/run
log_file = $DIR/log/\$name.log
crash_dir = $DIR/crash
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
auth_allow_insecure_global_id_reclaim = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
paxos_propose_interval = 0.1
[client.$user]
rbd_cache = false
[mon]
mon_data = $DIR/mon/\$id
[mgr]
mgr_data = $DIR/mgr/\$id
keyring = $DIR/mgr/\$id/keyring
[osd]
osd_data = $DIR/osd/\$id
keyring = $DIR/osd/\$id/keyring
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 21474836480
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
osd_memory_target = 1073741824
EOF
	: >"$DIR/pids"
	daemon() { # daemon NAME CMD...: run in the foreground of a background job
		local n=$1
		shift
		"$@" -c "$conf" -f >"$DIR/log/$n.out" 2>&1 </dev/null &
		echo "$n $!" >>"$DIR/pids"
	}
	ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
	monmaptool --create --fsid "$(ceph-conf -c "$conf" --lookup fsid)" --addv a "[v2:127.0.0.1:$port]" "$DIR/monmap" >/dev/null
	ceph-mon -c "$conf" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
	daemon mon.a ceph-mon -i a
	timeout 30 ceph --connect-timeout 30 -s >/dev/null
	say "mon up on 127.0.0.1:$port"
	ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' -o "$DIR/mgr/x/keyring"
	daemon mgr.x ceph-mgr -i x
	# ceph-osd --mkfs does not write the OSD's keyring: write it ourselves.
	local uuid key id
	uuid=$(cat /proc/sys/kernel/random/uuid)
	key=$(ceph-authtool --gen-print-key)
	id=$(echo "{\"cephx_secret\": \"$key\"}" | ceph osd new "$uuid" -i -)
	[ "$id" = 0 ] || { echo "ceph-cluster: the OSD got id $id, want 0" >&2; false; }
	printf '[osd.0]\n\tkey = %s\n' "$key" >"$DIR/osd/0/keyring"
	ceph-osd -c "$conf" -i 0 --mkfs --key "$key" --osd-uuid "$uuid" >"$DIR/log/osd.0.mkfs" 2>&1
	daemon osd.0 ceph-osd -i 0
	ceph osd pool create "$pool" 16 16 >/dev/null 2>&1
	timeout 60 rbd pool init "$pool" # hangs for ever while no OSD is up
	ceph auth get-or-create "client.$user" mon 'profile rbd' osd "profile rbd pool=$pool" mgr "profile rbd pool=$pool" >>"$DIR/keyring"
	local h=
	for _ in $(seq 1 120); do
		h=$(timeout 10 ceph health 2>/dev/null || true)
		[ "$h" = HEALTH_OK ] && break
		sleep 0.5
	done
	[ "$h" = HEALTH_OK ] || { ceph health detail >&2; say "not healthy after 60 s"; false; }
	trap - ERR
	say "HEALTH_OK after $((($(date +%s%N) - t0) / 1000000)) ms (pool $pool, user client.$user)"
	echo "CEPH_CONF=$conf CEPH_USER=$user CEPH_POOL=$pool CEPH_DIR=$DIR"
}

case $cmd in
up) up ;;
down) down ;;
*) usage ;;
esac
