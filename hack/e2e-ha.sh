#!/usr/bin/env bash
# e2e-ha.sh: a highly available control plane across hosts, each host a
# network namespace on one bridge (10.99.R.0/24, R random; addresses only
# inside these namespaces), every link mutual TLS:
#   c1 c2 c3  .1 .2 .3  sanboot-controlplane members cp1 cp2 cp3 (etcd's
#                       --initial-cluster), API on :7443
#   c4        .4        cp4, added later as a learner
#   st        .5        agents s1 and s2: tgt (each its own tgtd, portals
#                       :3261 and :3262), reflink stores on XFS loop devices
#   op        .6        sanbootctl with every member's endpoint, an admin's
#                       certificate; the initiators (libiscsi)
# Proves, in order:
#   1. kill -9 the controllers' leader during `apply -f` of 200 nodes
#      --wait: exit 0, every node Ready, no node ever assigned to two
#      agents, no target or disk without its node, every node's target
#      answers its own initiator and refuses another.
#   2. kill -9 a follower during the same kind of apply: exit 0, nothing
#      on stderr but the nodes' progress.
#   3. a member cut off (its link down): refuses writes and linearizable
#      reads, the others list it UNHEALTHY and go on (an apply works); back
#      on the network it catches up by itself.
#   3b. a member cut off from its peers only (policy routing refuses etcd's
#      ports; its API is reachable): it refuses calls at once, saying it
#      has no etcd leader, and a client that tries it first (--timeout
#      600s) leaves it for another member, saying so (get nodes); the next
#      run skips it (apply --wait).
#   4. the agents keep their leases through 1 and 2 (etcd's history of
#      their alive keys; no agent or node seen Unavailable meanwhile) and
#      lose them, visibly, when cut off from every member.
#   5. during an apply: cp4 added as a learner, promoted, cp1 removed; then
#      a rolling restart of every member: no client call fails (reads and
#      writes, each a new sanbootctl), the agents keep their leases.
# Every node of the first 200 is read by its initiator; afterwards every
# 10th, then every 20th (all 420 would cost a minute more).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
for tool in ip jq tgtd tgtadm iscsi-readcapacity16 iscsi-inq mkfs.xfs losetup; do
	command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-deps.sh (Debian: iproute2 jq tgt libiscsi-bin xfsprogs util-linux)"
done
[ "$(id -u)" = 0 ] || die "needs root: network namespaces, loop devices and tgtd"

START=$SECONDS
WORK=$(mktemp -d /tmp/sanboot-e2e-ha.XXXXXX)
BIN=$WORK/bin
PKI=$WORK/pki
OUT=$WORK/out
mkdir -p "$OUT"
S=$(($$ % 100000))
NET=10.99.$((20 + RANDOM % 200))
SW=sbhsw$S ST=sbhst$S OP=sbhop$S
HOSTNS=([1]=sbhc1$S [2]=sbhc2$S [3]=sbhc3$S [4]=sbhc4$S)
MEMBER_PID=()
cleanup() {
	stop_all
	unmount_all
	for ns in "${HOSTNS[@]}" $ST $OP $SW; do ip netns del "$ns" 2>/dev/null || true; done
	echo "logs and data: $WORK"
}
trap cleanup EXIT
build_binaries "$BIN"
go build -o "$BIN/" ./hack/etcdprobe
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
elapsed() { echo "$((SECONDS - START)) s"; }

log "hosts: namespaces ${HOSTNS[*]} $ST $OP on a bridge in $SW ($NET.0/24)"
netns_hosts "$SW" "$S" "$NET" "${HOSTNS[1]}" "${HOSTNS[2]}" "${HOSTNS[3]}" "${HOSTNS[4]}" "$ST" "$OP"

log "certificates: members cp1-cp4, agents s1 s2, an admin"
pki() { "$BIN/sanbootctl" pki "$@" >>"$OUT/pki.out"; }
pki init "$PKI"
for i in 1 2 3 4; do pki issue member "cp$i" --ip "$NET.$i" --dir "$PKI"; done
pki issue agent s1 --dir "$PKI"
pki issue agent s2 --dir "$PKI"
pki issue user root --admin --dir "$PKI"
record_keys "$PKI"/*.key

# ctl ARGS...: sanbootctl on the operator host, with every endpoint in
# $ENDPOINTS (the order is the client's preference: it uses the first that
# answers).
ENDPOINTS=$NET.1:7443,$NET.2:7443,$NET.3:7443
ctl() {
	ip netns exec "$OP" "$BIN/sanbootctl" --endpoints "$ENDPOINTS" --timeout 30s \
		--cert "$PKI/user-root.crt" --key "$PKI/user-root.key" --cacert "$PKI/ca.crt" "$@"
}
# ctl_on N ARGS...: sanbootctl on member N's own host, to its API (with
# an empty cache: no member learned or left by an earlier run).
ctl_on() {
	local i=$1
	shift
	rm -rf "$WORK/ctl-on-cache"
	XDG_CACHE_HOME=$WORK/ctl-on-cache ip netns exec "${HOSTNS[i]}" "$BIN/sanbootctl" --endpoints 127.0.0.1:7443 \
		--cert "$PKI/user-root.crt" --key "$PKI/user-root.key" --cacert "$PKI/ca.crt" "$@"
}
# etcd_history PREFIX: every change etcd kept under PREFIX (etcdprobe
# history), read through cp2 or cp3 as member cp2 (etcd's root role).
etcd_history() {
	local i
	for i in 2 3 4; do
		ip netns exec "$OP" "$BIN/etcdprobe" --endpoints "https://$NET.$i:2379" \
			--cert "$PKI/member-cp2.crt" --key "$PKI/member-cp2.key" --cacert "$PKI/ca.crt" history "$1" && return
	done
	die "etcd's history of $1 could not be read"
}
INITIATOR_NETNS=$OP # check_ready_readable's initiators run on the operator host

# start_member N STATE INITIAL-CLUSTER: member cpN on host N.
start_member() {
	local i=$1 state=$2 initial=$3 ip=$NET.$1 m=$PKI/member-cp$1
	ip netns exec "${HOSTNS[i]}" "$BIN/sanboot-controlplane" --name "cp$i" --data-dir "$WORK/cp$i" \
		--listen-client-urls "https://$ip:2379,https://127.0.0.1:2379" --advertise-client-urls "https://$ip:2379" \
		--listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
		--initial-cluster "$initial" --initial-cluster-state "$state" \
		--cert-file "$m.crt" --key-file "$m.key" --trusted-ca-file "$PKI/ca.crt" \
		--peer-cert-file "$m.crt" --peer-key-file "$m.key" --peer-trusted-ca-file "$PKI/ca.crt" \
		--api-listen 0.0.0.0:7443 --advertise-api "$ip:7443" --boot-listen "" \
		--metrics-listen 127.0.0.1:9480 >>"$WORK/cp$i.log" 2>&1 &
	MEMBER_PID[i]=$!
	SANBOOT_PIDS+=("$!")
}
kill_member() { # kill_member N: kill -9 member N (quietly: no "Killed" from bash)
	kill -9 "${MEMBER_PID[$1]}"
	wait "${MEMBER_PID[$1]}" 2>/dev/null || true
}
# members_json: member list as JSON; controllers: the member whose
# controllers run; raft_leader: etcd's leader.
members_json() { ctl member list -o json; }
controllers() { members_json | jq -r '.members[] | select(.controllers) | .name'; }
raft_leader() { members_json | jq -r '.members[] | select(.leader) | .name'; }
healthy_members() { members_json | jq -r '[.members[] | select(.healthy and (.learner | not)) | .name] | sort | join(" ")'; }
all_healthy() { [ "$(healthy_members)" = "$1" ]; }

INITIAL=cp1=https://$NET.1:2380,cp2=https://$NET.2:2380,cp3=https://$NET.3:2380
log "three members: cp1 cp2 cp3 (--initial-cluster $INITIAL)"
for i in 1 2 3; do start_member "$i" new "$INITIAL"; done
wait_until 120 "three healthy members" all_healthy "cp1 cp2 cp3"
has_controllers() { [ -n "$(controllers)" ]; }
wait_until 60 "a member runs the controllers" has_controllers
ctl member list
ok "three members on three hosts, mutual TLS ($(elapsed))"

log "the storage host: agents s1, s2 (tgt on $NET.5:3261 and :3262, reflink XFS stores)"
ctl agents enroll s1 >/dev/null
ctl agents enroll s2 >/dev/null
AGENT_ETCD=https://$NET.1:2379,https://$NET.2:2379,https://$NET.3:2379
TGT_CTL=$((1000 + RANDOM % 30000))
AGENT_PID=()
start_ha_agent() {
	local i=$1
	ip netns exec "$ST" "$BIN/sanboot-agent" --etcd-endpoints "$AGENT_ETCD" \
		--cert "$PKI/agent-s$i.crt" --key "$PKI/agent-s$i.key" --cacert "$PKI/ca.crt" \
		--driver=tgt --tgtd=managed --tgtd-control=$((TGT_CTL + i)) --portal "$NET.5:326$i" \
		--store-dir "$WORK/store$i" --metrics-listen "127.0.0.1:948$i" >>"$WORK/agent-s$i.log" 2>&1 &
	AGENT_PID[i]=$!
	SANBOOT_PIDS+=("$!")
}
for i in 1 2; do
	mount_fs xfs "$WORK/store$i.img" "$WORK/store$i" 2G
	start_ha_agent "$i"
done
agents_in() { [ "$(ctl get agents -o json | jq -r --arg s "$1" '[.agents[] | select(.state == $s) | .record.name] | sort | join(" ")')" = "s1 s2" ]; }
agents_ready() { agents_in Ready; }
wait_until 120 "agents s1 and s2 Ready" agents_ready
ctl get agents

log "an image (32 MiB, 2 MiB of it random) imported from the operator host"
truncate -s 32M "$WORK/golden.raw"
head -c 2M /dev/urandom | dd of="$WORK/golden.raw" bs=1M seek=4 conv=notrunc status=none
ctl image import golden "$WORK/golden.raw" --wait --timeout 300s >/dev/null
ok "agents s1, s2 Ready on the storage host, image golden on both ($(elapsed))"

# gen_nodes FILE PREFIX COUNT: a manifest of COUNT nodes PREFIX000... of
# image golden, with CHAP.
gen_nodes() {
	local f=$1 p=$2 n=$3 i
	for ((i = 0; i < n; i++)); do
		printf -- '---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: %s%03d\n  labels: {batch: %s}\nspec:\n  image: golden\n  chap: true\n' "$p" "$i" "$p"
	done >"$f"
}
# phases: NAME=PHASE=AGENT of every node, one a line.
phases() { ctl get nodes -o jsonpath='{range .nodes[*]}{.metadata.name}={.status.phase}={.status.agent}{"\n"}{end}'; }
ready_count() { phases | grep -c "^$1[0-9]*=Ready=" || true; }
at_least_ready() { (($(ready_count "$1") >= $2)); }

# watch_status NAME: until $WORK/stop-NAME exists, every 0.5 s, what a user
# sees of the agents and nodes: "agent NAME STATE", "node NAME=PHASE=AGENT"
# (each poll a new sanbootctl, as a user's).
watch_status() {
	local w=$OUT/watch-$1
	while [ ! -e "$WORK/stop-$1" ]; do
		[ ! -f "$WORK/endpoints" ] || ENDPOINTS=$(cat "$WORK/endpoints")
		echo "$ENDPOINTS" >"$WORK/using-$1"
		echo "@ $(date +%T.%N)" >>"$w"
		ctl get agents -o json 2>>"$w.err" | jq -r '.agents[] | "agent \(.record.name) \(.state)"' >>"$w" || echo "ERROR get agents" >>"$w"
		phases 2>>"$w.err" | sed '/^$/d; s/^/node /' >>"$w" || true
		sleep 0.5
	done
}
start_watch() { rm -f "$WORK/stop-$1"; watch_status "$1" & WATCH_PID=$!; SANBOOT_PIDS+=("$!"); }
stop_watch() { # stop_watch NAME: the agents were Ready throughout; no node was Unavailable or Failed, none went back from Ready
	touch "$WORK/stop-$1"
	wait "$WATCH_PID" || true
	local w=$OUT/watch-$1 polls seen
	polls=$(grep -c '^@' "$w")
	seen=$(awk '/^agent / && $3 != "Ready" { print }
		/^node / { split($2, f, "="); if (f[2] != "Ready" && f[2] != "Pending" && f[2] != "Provisioning") print
			else if (f[2] == "Ready") ready[f[1]] = 1
			else if (ready[f[1]]) print "back from Ready:", $2 }' "$w" | sort | uniq -c | head -20)
	[ -z "$seen" ] || die "during $1 a user saw (of $polls polls, $w): $seen"
	[ ! -s "$w.err" ] || die "during $1 sanbootctl said on stderr: $(sort "$w.err" | uniq -c | head)"
	echo "$polls polls of agents and nodes during $1: agents Ready, no node Unavailable or back from Ready, no error"
}
# leases: the agents' alive keys' history (a lease lost and taken again
# shows as a DELETE and a new PUT).
leases() { etcd_history /sanboot/v1/alive/; }

# check_fleet: every node Ready, on the agent etcd's history ever assigned
# it to and no other; every agent's tgtd and store hold exactly its nodes.
check_fleet() {
	local total
	phases >"$OUT/phases"
	total=$(wc -l <"$OUT/phases")
	local bad n
	bad=$(grep -v "=Ready=s[12]$" "$OUT/phases" | head -3 || true)
	if [ -n "$bad" ]; then
		for n in $bad; do # what the user sees of it, and every status its agent wrote
			ctl get node "${n%%=*}" -o yaml >&2 || true
			etcd_history "/sanboot/v1/nodestatus/${n##*=}/default/${n%%=*}" >&2
		done
		die "nodes not Ready (of $total): $bad"
	fi
	etcd_history /sanboot/v1/assign/ | awk '$2 == "PUT" { split($3, k, "/"); print k[7], k[5] }' | sort -u >"$OUT/assigned"
	[ "$(cut -d' ' -f1 "$OUT/assigned" | sort -u | wc -l)" = "$total" ] || die "etcd's history assigns $(cut -d' ' -f1 "$OUT/assigned" | sort -u | wc -l) nodes, $total exist"
	twice=$(cut -d' ' -f1 "$OUT/assigned" | uniq -d)
	[ -z "$twice" ] || die "nodes assigned to two agents: $(grep -F "$(head -3 <<<"$twice")" "$OUT/assigned")"
	awk -F= '{ print $1, $3 }' "$OUT/phases" | sort | cmp -s - "$OUT/assigned" || die "a node is served by an agent it was never assigned to"
	local a
	for a in 1 2; do
		awk -F= -v a="s$a" '$3 == a { print $1 }' "$OUT/phases" | sort >"$OUT/nodes-s$a"
		tgtadm -C $((TGT_CTL + a)) --lld iscsi --mode target --op show | sed -n 's/^Target [0-9]*: iqn\.2026-11\.io\.sanboot:default\.//p' | sort >"$OUT/targets-s$a"
		ls "$WORK/store$a/disks/default/" | sed 's/\.raw$//' | sort >"$OUT/disks-s$a"
		diff "$OUT/nodes-s$a" "$OUT/targets-s$a" >&2 || die "s$a's tgtd does not hold exactly its nodes' targets (< node only, > target only)"
		diff "$OUT/nodes-s$a" "$OUT/disks-s$a" >&2 || die "s$a's store does not hold exactly its nodes' disks (< node only, > disk only)"
	done
	echo "$total nodes Ready: $(wc -l <"$OUT/nodes-s1") on s1, $(wc -l <"$OUT/nodes-s2") on s2; each assigned once in etcd's history; targets and disks: exactly these"
}

# apply_bg FILE NAME: sanbootctl apply -f FILE --wait in the background
apply_bg() { ctl apply -f "$1" --wait --timeout 600s >"$OUT/$2.out" 2>"$OUT/$2.err" & APPLY_PID=$!; SANBOOT_PIDS+=("$!"); }
apply_done() { # apply_done NAME: it exited 0 and wrote nothing on stderr but its nodes' progress
	local rc=0
	wait "$APPLY_PID" || rc=$?
	[ "$rc" = 0 ] || die "apply ($1) exited $rc: $(tail -5 "$OUT/$1.err")"
	! grep -Ev '^node/[a-z0-9-]+: (Pending|Provisioning|Ready)(: .*)?$' "$OUT/$1.err" ||
		die "apply ($1) wrote this on stderr besides its nodes' progress"
}
member_index() { echo "${1#cp}"; }
endpoints_first() { # endpoints_first N: every voting member's API, member N's first
	local i list=$NET.$1:7443
	for i in $VOTERS; do [ "$i" = "$1" ] || list+=",$NET.$i:7443"; done
	echo "$list"
}
VOTERS="1 2 3"
LEASES0=$(leases)

log "1. kill -9 the controllers' leader during apply -f of 200 nodes --wait"
leader=$(member_index "$(controllers)")
ENDPOINTS=$(endpoints_first "$leader") # the client talks to the leader first
echo "controllers on cp$leader, raft leader $(raft_leader); sanbootctl --endpoints $ENDPOINTS"
gen_nodes "$WORK/a.yaml" a 200
t0=$SECONDS
start_watch kill-leader
apply_bg "$WORK/a.yaml" apply-a
wait_until 300 "30 nodes of 200 Ready" at_least_ready a 30
kill_member "$leader"
echo "killed cp$leader with $(ready_count a) nodes Ready"
apply_done apply-a
stop_watch kill-leader
echo "apply: $(grep -c ' created$' "$OUT/apply-a.out") created, $(grep -c ' ready$' "$OUT/apply-a.out") ready, $((SECONDS - t0)) s"
ok "apply of 200 nodes --wait went through the leader's kill -9: exit 0, nothing on stderr ($(elapsed))"
check_fleet
ok "no node assigned twice, no target or disk without its node"
t0=$SECONDS
READY_CHECK_STRANGER=1 check_ready_readable
ok "$READY_CHECKED nodes read by their own initiators (CHAP), a stranger refused by each ($((SECONDS - t0)) s)"
start_member "$leader" new "$INITIAL"
wait_until 120 "cp$leader back" all_healthy "cp1 cp2 cp3"
ok "cp$leader, killed, is back and caught up by itself"

log "2. kill -9 a follower during apply -f of 200 more nodes --wait"
follower=
for i in 1 2 3; do
	[ "cp$i" != "$(controllers)" ] && [ "cp$i" != "$(raft_leader)" ] && follower=$i && break
done
ENDPOINTS=$(endpoints_first "$follower")
echo "controllers on $(controllers), raft leader $(raft_leader); killing cp$follower; sanbootctl --endpoints $ENDPOINTS"
gen_nodes "$WORK/b.yaml" b 200
t0=$SECONDS
start_watch kill-follower
apply_bg "$WORK/b.yaml" apply-b
wait_until 300 "30 nodes of 200 Ready" at_least_ready b 30
kill_member "$follower"
echo "killed cp$follower with $(ready_count b) nodes Ready"
apply_done apply-b
stop_watch kill-follower
ok "apply of 200 nodes --wait went through a follower's kill -9: exit 0, nothing on stderr but the nodes' progress ($((SECONDS - t0)) s)"
check_fleet
t0=$SECONDS
READY_CHECK_STRANGER=1 READY_CHECK_EVERY=10 check_ready_readable
ok "400 nodes: no node assigned twice, no target or disk without its node; a sample of every 10th read by its initiator, a stranger refused ($((SECONDS - t0)) s)"
start_member "$follower" new "$INITIAL"
wait_until 120 "cp$follower back" all_healthy "cp1 cp2 cp3"
[ "$(leases)" = "$LEASES0" ] || die "an agent lost its lease during the kills: $(diff <(echo "$LEASES0") <(leases))"
ok "the agents kept their leases through both kills (etcd's history of their alive keys: unchanged); no agent or node Unavailable seen meanwhile"

log "3. cut the controllers' leader off the network"
cut=$(member_index "$(controllers)")
others=$(for i in 1 2 3; do [ "$i" = "$cut" ] || printf 'cp%s ' "$i"; done)
others=${others% }
ENDPOINTS=$(endpoints_first "$cut")
ip -n "${HOSTNS[cut]}" link set eth0 down
echo "cp$cut cut off ($(date +%T)); sanbootctl --endpoints $ENDPOINTS"
wait_until 60 "the others list cp$cut unhealthy" all_healthy "$others"
ctl member list
members_json | jq -e --arg m "cp$cut" '.members[] | select(.name == $m) | (.healthy | not)' >/dev/null || die "cp$cut is not listed unhealthy"
ok "member list from the others: cp$cut UNHEALTHY"
rc=0
ctl_on "$cut" --timeout 10s provision cut-write --image golden >"$OUT/cut-write.out" 2>"$OUT/cut-write.err" || rc=$?
[ "$rc" != 0 ] || die "cp$cut, cut off, accepted a write"
rc=0
ctl_on "$cut" --timeout 10s get node a000 >"$OUT/cut-read.out" 2>"$OUT/cut-read.err" || rc=$?
[ "$rc" != 0 ] || die "cp$cut, cut off, served a linearizable read: $(cat "$OUT/cut-read.out")"
ok "cp$cut, cut off, refuses a write ($(head -c 150 "$OUT/cut-write.err")) and a read ($(head -c 150 "$OUT/cut-read.err"))"
gen_nodes "$WORK/c.yaml" c 20
t0=$SECONDS
apply_bg "$WORK/c.yaml" apply-c
apply_done apply-c
ok "the other two go on: apply of 20 nodes --wait, exit 0 ($((SECONDS - t0)) s)"
ip -n "${HOSTNS[cut]}" link set eth0 up
wait_until 120 "cp$cut healthy again" all_healthy "cp1 cp2 cp3"
caught_up() { members_json | jq -e --arg m "cp$cut" '([.members[].raftIndex | tonumber] | max) as $top | .members[] | select(.name == $m) | (.raftIndex | tonumber) >= $top - 5' >/dev/null; }
wait_until 120 "cp$cut caught up" caught_up
registered() { members_json | jq -e --arg m "cp$cut" '.members[] | select(.name == $m) | .apiEndpoints | length > 0' >/dev/null; }
wait_until 60 "cp$cut registered again (its API in member list)" registered
ctl_on "$cut" get node c019 -o jsonpath='{.status.phase}' >"$OUT/healed.out" || die "cp$cut, healed, does not serve c019"
[ "$(cat "$OUT/healed.out")" = Ready ] || die "cp$cut, healed, says c019 is $(cat "$OUT/healed.out")"
rc=0
ctl_on "$cut" get node cut-write >/dev/null 2>&1 || rc=$?
[ "$rc" = 4 ] || die "the write cp$cut refused while cut off exists (get: exit $rc)"
ctl member list
ok "cp$cut, back on the network, caught up with no command: it serves c019, written while it was away"

log "3b. cut the controllers' leader off from its peers only (its API still reachable): a client that tries it first is answered by another"
cut=$(member_index "$(controllers)")
others=$(for i in 1 2 3; do [ "$i" = "$cut" ] || printf 'cp%s ' "$i"; done)
others=${others% }
ENDPOINTS=$(endpoints_first "$cut")
# etcd's peer (2380) and client (2379) traffic to and from the other hosts
# is refused by policy routing; loopback (its API's own etcd client) and
# its API (7443) still work.
peers_rules() { # peers_rules add|del N
	local p
	for p in 2379 2380; do
		ip -n "${HOSTNS[$2]}" rule "$1" dport "$p" prohibit
		ip -n "${HOSTNS[$2]}" rule "$1" sport "$p" prohibit
	done
}
peers_rules add "$cut"
echo "cp$cut cut off from its peers ($(date +%T)); sanbootctl --endpoints $ENDPOINTS"
wait_until 60 "the others list cp$cut unhealthy" all_healthy "$others"
no_leader_err() { grep "cp$cut has no etcd leader" "$1" >/dev/null; }
rc=0
ctl_on "$cut" --timeout 600s get nodes -o name >"$OUT/peercut-own.out" 2>"$OUT/peercut-own.err" || rc=$?
[ "$rc" != 0 ] || die "cp$cut, without a leader, served a read"
no_leader_err "$OUT/peercut-own.err" || die "cp$cut's refusal does not say it has no etcd leader: $(cat "$OUT/peercut-own.err")"
ok "cp$cut, cut off from its peers, refuses a call at once, with --timeout 600s, saying why: $(head -c 200 "$OUT/peercut-own.err")"
# Clients that try cp$cut first, with a --timeout longer than the test:
# answered by another member, saying they left cp$cut; the next run
# skips cp$cut (sanbootctl's cache keeps it left for 30 s).
export XDG_CACHE_HOME=$WORK/op-cache
t0=$SECONDS
ctl --timeout 600s get nodes -o name >"$OUT/peercut-get.out" 2>"$OUT/peercut-get.err" ||
	die "get nodes, cp$cut first: $(cat "$OUT/peercut-get.err")"
[ "$(wc -l <"$OUT/peercut-get.out")" = "$(phases | wc -l)" ] || die "get nodes, cp$cut first, listed $(wc -l <"$OUT/peercut-get.out") nodes"
grep "^leaving $NET.$cut:7443: .*cp$cut has no etcd leader" "$OUT/peercut-get.err" >/dev/null ||
	die "sanbootctl did not say it left cp$cut: $(cat "$OUT/peercut-get.err")"
gen_nodes "$WORK/e.yaml" e 10
ctl --timeout 600s apply -f "$WORK/e.yaml" --wait >"$OUT/peercut-apply.out" 2>"$OUT/peercut-apply.err" ||
	die "apply --wait, cp$cut first: $(tail -5 "$OUT/peercut-apply.err")"
! grep -Ev '^node/[a-z0-9-]+: (Pending|Provisioning|Ready)(: .*)?$' "$OUT/peercut-apply.err" ||
	die "apply, cp$cut first, wrote this on stderr besides progress (cp$cut, left by the run before, should be skipped)"
unset XDG_CACHE_HOME
ok "get nodes, cp$cut first, answered by another member, said: $(head -1 "$OUT/peercut-get.err" | head -c 150); apply --wait of 10 nodes right after skipped cp$cut ($((SECONDS - t0)) s)"
peers_rules del "$cut"
wait_until 120 "cp$cut healthy again" all_healthy "cp1 cp2 cp3"
wait_until 120 "cp$cut caught up" caught_up
ctl_on "$cut" get node e009 -o jsonpath='{.status.phase}' >"$OUT/peercut-healed.out" || die "cp$cut, healed, does not serve e009"
ok "cp$cut, back with its peers, serves e009, written while it was cut off"

log "4. the storage host cut off from every member: the agents lose their leases, visibly"
total=$(phases | wc -l)
ip -n "$ST" link set eth0 down
t0=$SECONDS
wait_until 120 "agents s1 and s2 Unavailable" agents_in Unavailable
all_unavailable() { [ "$(phases | grep -c '=Unavailable=')" = "$total" ]; }
wait_until 60 "every node Unavailable" all_unavailable
ctl get agents
ctl get node a000
ok "cut off, s1 and s2 show Unavailable after $((SECONDS - t0)) s, and their $total nodes Unavailable"
ip -n "$ST" link set eth0 up
t0=$SECONDS
wait_until 180 "agents s1 and s2 Ready again" agents_ready
all_ready() { [ "$(phases | grep -c '=Ready=')" = "$total" ]; }
wait_until 300 "every node Ready again" all_ready
ok "back on the network, the agents registered again and their $total nodes are Ready ($((SECONDS - t0)) s)"

log "5. during an apply: cp4 added as a learner, promoted, cp1 removed; then every member restarted in turn"
LEASES1=$(leases)
# set_endpoints LIST: the endpoints every later sanbootctl uses, the
# background ones too (written whole, then renamed: never read half-written).
set_endpoints() {
	echo "$1" >"$WORK/endpoints.new"
	mv "$WORK/endpoints.new" "$WORK/endpoints"
	ENDPOINTS=$1
}
set_endpoints "$NET.1:7443,$NET.2:7443,$NET.3:7443"
# calls: until $WORK/stop-calls exists, a user's read and write (each a
# new sanbootctl): get node a000, and apply of a000 with a new label.
calls() {
	local n=0 rc
	while [ ! -e "$WORK/stop-calls" ]; do
		n=$((n + 1))
		ENDPOINTS=$(cat "$WORK/endpoints")
		echo "$ENDPOINTS" >"$WORK/using-calls"
		rc=0
		ctl get node a000 -o name >/dev/null 2>>"$OUT/calls.err" || rc=$?
		echo "get $rc" >>"$OUT/calls"
		printf 'apiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: a000\n  labels: {batch: a, tick: "%s"}\nspec:\n  image: golden\n  chap: true\n' "$n" >"$WORK/tick.yaml"
		rc=0
		ctl apply -f "$WORK/tick.yaml" >/dev/null 2>>"$OUT/calls.err" || rc=$?
		echo "apply $rc" >>"$OUT/calls"
		sleep 0.2
	done
}
rm -f "$WORK/stop-calls"
calls &
CALLS_PID=$!
SANBOOT_PIDS+=("$!")
start_watch membership
gen_nodes "$WORK/d.yaml" d 100
t0=$SECONDS
apply_bg "$WORK/d.yaml" apply-d
ctl member add cp4 --peer-urls "https://$NET.4:2380" >"$OUT/member-add.out"
cat "$OUT/member-add.out"
init=$(grep -o -- '--initial-cluster=[^ ]*' "$OUT/member-add.out" | head -1 | cut -d= -f2-)
[ -n "$init" ] || die "member add printed no --initial-cluster"
ctl member list | grep -E '^cp4 ' || die "cp4 is not listed after member add"
start_member 4 existing "$init"
INIT4=$init
promote() { ctl member promote cp4 >>"$OUT/promote.out" 2>&1; }
wait_until 180 "cp4 promoted" promote
grep -m1 "caught up" "$OUT/promote.out" || true
wait_until 120 "four healthy voting members" all_healthy "cp1 cp2 cp3 cp4"
ok "cp4 joined as a learner and was promoted once it had caught up"
# As the runbook says: the clients' endpoints first (cp1's last), then
# the removal; the calls and the watch start a round with the new list
# before cp1 goes. (A call already under way on cp1 as it stops is
# answered Unavailable and made again on another member.)
set_endpoints "$NET.2:7443,$NET.3:7443,$NET.4:7443,$NET.1:7443"
using_new() { grep -qx "$ENDPOINTS" "$WORK/using-calls" && grep -qx "$ENDPOINTS" "$WORK/using-membership"; }
wait_until 60 "the client calls use the new endpoints" using_new
ctl member remove cp1
wait_until 60 "cp1's process ends once removed" sh -c "! kill -0 ${MEMBER_PID[1]} 2>/dev/null" ||
	die "cp1, removed, still runs"
VOTERS="2 3 4"
set_endpoints "$NET.2:7443,$NET.3:7443,$NET.4:7443"
wait_until 60 "three healthy members, cp1 gone" all_healthy "cp2 cp3 cp4"
ctl member list
apply_done apply-d
ok "cp1 removed; the apply of 100 nodes that ran meanwhile: exit 0, nothing on stderr but progress ($((SECONDS - t0)) s)"
for i in 2 3 4; do
	stop_pid "${MEMBER_PID[i]}"
	if [ "$i" = 4 ]; then start_member 4 existing "$INIT4"; else start_member "$i" new "$INITIAL"; fi
	wait_until 120 "cp$i back" all_healthy "cp2 cp3 cp4"
	echo "restarted cp$i ($(elapsed))"
done
touch "$WORK/stop-calls"
wait "$CALLS_PID" || true
stop_watch membership
ncalls=$(wc -l <"$OUT/calls")
failed=$(grep -vc ' 0$' "$OUT/calls" || true)
[ "$failed" = 0 ] || die "$failed of $ncalls client calls failed: $(sort "$OUT/calls.err" | uniq -c | head)"
[ ! -s "$OUT/calls.err" ] || die "client calls said on stderr: $(sort "$OUT/calls.err" | uniq -c | head)"
ok "rolling restart of cp2, cp3, cp4: $ncalls client calls (reads and writes, each a new sanbootctl) during the membership changes and restarts, none failed"
[ "$(leases)" = "$LEASES1" ] || die "an agent lost its lease during the membership changes: $(diff <(echo "$LEASES1") <(leases))"
ok "the agents kept their leases through the membership changes and restarts"
check_fleet
READY_CHECK_STRANGER=1 READY_CHECK_EVERY=20 check_ready_readable
ok "after all that: no node assigned twice, no target or disk without its node, a sample read by its initiators"

echo "e2e-ha: $passed passed, 0 failed ($(elapsed))"
