# lib.sh: shared shell functions for hack/demo.sh and the hack/e2e-*.sh
# scripts. Source it.
# Starts real sanboot processes on loopback ports and stops exactly the
# processes it started, by PID.

SANBOOT_PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# checking WHAT: logs the start of a checked step and counts it in CHECKS.
# A script dies at its first failed check, so at its end every one of its
# CHECKS passed: its closing line says "$CHECKS passed, 0 failed".
CHECKS=0
checking() {
	CHECKS=$((CHECKS + 1))
	log "$@"
}
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# record_secret VALUE...: secrets this test made or was handed (CHAP
# secrets, boot tokens), for hack/test.sh's final scan of every log and
# output (hack/scan-secrets.sh). They go to $SANBOOT_SECRETS, a file
# outside every log directory; nothing is recorded when it is not set.
record_secret() {
	[ -n "${SANBOOT_SECRETS:-}" ] || return 0
	local s
	for s in "$@"; do
		[ -z "$s" ] || printf '%s\n' "$s" >>"$SANBOOT_SECRETS"
	done
}
# record_keys FILE...: the private keys in PEM FILEs (the first base64
# line of each, which holds key material).
record_keys() {
	local k
	for k in "$@"; do
		[ ! -f "$k" ] || record_secret "$(grep -v -- ----- "$k" | head -1)"
	done
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on and that
# this script has not handed out before (it runs in a subshell, so the
# ports handed out are kept in a file named after the script's PID).
SANBOOT_PORTS_FILE=/tmp/sanboot-ports.$$
free_port() {
	local p
	for _ in $(seq 1 100); do
		# Below the kernel's ephemeral range (ip_local_port_range, 32768+
		# on Debian), so that no outgoing connection holds the port either.
		p=$((10000 + RANDOM % 22000))
		grep -qx "$p" "$SANBOOT_PORTS_FILE" 2>/dev/null && continue
		if ! ss -Htln "sport = :$p" | grep . >/dev/null; then
			echo "$p" >>"$SANBOOT_PORTS_FILE"
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# build_binaries DIR builds the three programs into DIR.
build_binaries() {
	log "building sanboot-controlplane, sanboot-agent, sanbootctl"
	go build -o "$1/" ./controlplane/cmd/sanboot-controlplane ./agent/cmd/sanboot-agent ./ctl/cmd/sanbootctl
}

# start_controlplane WORKDIR [extra flags]: starts a one-member control
# plane with its data in WORKDIR/cp; sets CP_PID, ETCD_URL, API_ADDR and
# BOOT_ADDR (its boot server).
start_controlplane() {
	local work=$1
	shift
	: "${CLIENT_PORT:=$(free_port)}" "${PEER_PORT:=$(free_port)}" "${API_PORT:=$(free_port)}" "${BOOT_PORT:=$(free_port)}"
	ETCD_URL=http://127.0.0.1:$CLIENT_PORT
	API_ADDR=127.0.0.1:$API_PORT
	BOOT_ADDR=127.0.0.1:$BOOT_PORT
	local peer=http://127.0.0.1:$PEER_PORT
	"$BIN/sanboot-controlplane" --name default --data-dir "$work/cp" \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
		--initial-cluster "default=$peer" --api-listen "$API_ADDR" --boot-listen "$BOOT_ADDR" \
		--metrics-listen "127.0.0.1:$(free_port)" "$@" \
		>>"$work/controlplane.log" 2>&1 &
	CP_PID=$!
	SANBOOT_PIDS+=("$CP_PID")
	export SANBOOT_ENDPOINTS=$API_ADDR
	wait_until 60 "control plane API on $API_ADDR" ctl get agents
}

# start_agent WORKDIR NAME [extra flags]: sets AGENT_PID and AGENT_METRICS
# (its /readyz and /metrics address). AGENT_FLAGS (an array) picks the
# driver, --driver=fake by default; STORE_DIR the store.
start_agent() {
	local work=$1 name=$2
	shift 2
	AGENT_METRICS=127.0.0.1:$(free_port)
	"$BIN/sanboot-agent" --name "$name" --etcd-endpoints "$ETCD_URL" \
		"${AGENT_FLAGS[@]:---driver=fake}" --store-dir "${STORE_DIR:-$work/store-$name}" \
		--metrics-listen "$AGENT_METRICS" "$@" \
		>>"$work/agent-$name.log" 2>&1 &
	AGENT_PID=$!
	SANBOOT_PIDS+=("$AGENT_PID")
	wait_until 30 "agent $name Ready" agent_state_is "$name" Ready
}

ctl() { "$BIN/sanbootctl" "$@"; }

# The initiator tools can spin for ever when a target goes away in the middle
# of a login (seen with libiscsi when tgtd is killed): bound every call.
iscsi-inq() { timeout 60 iscsi-inq "$@"; }
iscsi-readcapacity16() { timeout 60 iscsi-readcapacity16 "$@"; }
iscsi-ls() { timeout 60 iscsi-ls "$@"; }
qemu-io() { timeout 300 qemu-io "$@"; }

# agent_state_is NAME STATE
agent_state_is() { ctl get agents "$1" -o json 2>/dev/null | grep "\"state\": *\"$2\"" >/dev/null; }

# node_phase_is NAME PHASE
node_phase_is() { ctl get nodes "$1" -o json 2>/dev/null | grep "\"phase\": *\"$2\"" >/dev/null; }

# wait_until SECONDS WHAT CMD...: runs CMD until it succeeds, or fails after SECONDS.
wait_until() {
	local secs=$1 what=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < end)) || die "timed out after ${secs}s waiting for: $what"
		sleep 0.2
	done
}

# stop_pid PID: SIGTERM, then SIGKILL after 15 s; only PIDs we started.
stop_pid() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
	kill -9 "$pid" 2>/dev/null || true
}

stop_all() {
	local i
	rm -f "$SANBOOT_PORTS_FILE"
	for ((i = ${#SANBOOT_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${SANBOOT_PIDS[i]}"; done
	SANBOOT_PIDS=()
}

# apt_known PKG: makes sure apt's package lists know PKG (runs apt-get
# update once if they do not: a fresh machine may have none).
apt_known() {
	apt-cache show "$1" >/dev/null 2>&1 && return
	apt-get update -qq || die "apt-get update failed"
	apt-cache show "$1" >/dev/null 2>&1 || die "Debian has no package $1"
}

# fetch_deb PKG: prints the path of Debian package PKG's .deb, fetched
# with `apt-get download` (never installed) into $SANBOOT_CACHE/debs
# (default ~/.cache/sanboot/debs) unless it is there already.
fetch_deb() {
	local pkg=$1 debs=${SANBOOT_CACHE:-$HOME/.cache/sanboot}/debs
	mkdir -p "$debs"
	if ! ls "$debs/${pkg}"_*.deb >/dev/null 2>&1; then
		log "fetching $pkg with apt-get download (cached in $debs)"
		apt_known "$pkg"
		(cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
			die "apt-get download $pkg failed"
	fi
	ls "$debs/${pkg}"_*.deb | sort -V | tail -1
}

# mount_fs xfs|ext4 FILE DIR SIZE: a file system on a loop device for a
# store (XFS with reflink; ext4 has none, so the store copies);
# unmount_all undoes every mount_fs.
SANBOOT_LOOPS=()
mount_fs() {
	local fs=$1 file=$2 dir=$3 size=$4 dev
	truncate -s "$size" "$file"
	case $fs in
	xfs) mkfs.xfs -q -m reflink=1 "$file" ;;
	ext4) mkfs.ext4 -q -F "$file" ;;
	*) die "mount_fs: unknown file system $fs" ;;
	esac
	dev=$(losetup --find --show "$file")
	mkdir -p "$dir"
	mount "$dev" "$dir"
	SANBOOT_LOOPS+=("$dir:$dev")
}
unmount_all() {
	local m
	for m in "${SANBOOT_LOOPS[@]}"; do
		umount "${m%%:*}" 2>/dev/null || umount -l "${m%%:*}" 2>/dev/null || true
		losetup -d "${m#*:}" 2>/dev/null || true
	done
	SANBOOT_LOOPS=()
}

# debian_mirror prints the Debian mirror to debootstrap from: $DEBIAN_MIRROR
# when set, else the one this machine's apt uses (the first enabled "deb"
# source of a main suite, such as bookworm, in /etc/apt/sources.list.d/*.sources
# or /etc/apt/sources.list).
debian_mirror() {
	if [ -n "${DEBIAN_MIRROR:-}" ]; then
		echo "$DEBIAN_MIRROR"
		return
	fi
	local m f files=()
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
		[ -f "$f" ] && files+=("$f")
	done
	[ ${#files[@]} -gt 0 ] && m=$(awk '
		# deb822 stanzas (Types, URIs, Suites, Enabled) end at a blank line.
		function stanza() {
			if (!found && types ~ / deb / && enabled != "no" && uri != "" && suites ~ / [a-z]+ /) { print uri; found = 1 }
			types = uri = suites = enabled = ""
		}
		FNR == 1 { stanza() }
		found { exit }
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[ \t]*$/) { stanza(); next }
			key = tolower($1)
			$1 = ""
			if (key == "types:") types = $0 " "
			if (key == "uris:") uri = $2
			if (key == "suites:") suites = $0 " "
			if (key == "enabled:") enabled = tolower($2)
			next
		}
		# one-line format: deb [options] URI SUITE COMPONENTS...
		$1 == "deb" {
			i = 2
			if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
			if ($(i + 1) ~ /^[a-z]+$/) { print $i; found = 1; exit }
		}
		END { stanza() }
	' "${files[@]}")
	[ -n "$m" ] || die "no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: set DEBIAN_MIRROR=URL"
	echo "$m"
}

# check_ready_readable: the property that keeps status honest. Every node
# of the current project that says Ready is read by a real initiator
# (libiscsi) with what the node itself gets in its boot script: its
# initiator name, its portal and target, its CHAP credentials (given
# through libiscsi's environment, never argv). A node that no longer says
# Ready when its check fails is let go (its status moved on). Adds the
# nodes checked to READY_CHECKED. READY_PORTAL (host:port), when set, is
# where this host reaches the targets when the scripts name the guests'
# view of them (qemu's 10.0.2.2): the script's target, LUN, initiator and
# credentials are still the ones checked.
#
# READY_CHECK_STRANGER=1: each node's target must also refuse a stranger's
# initiator name, even with the node's own CHAP credentials (its ACL).
# READY_CHECK_EVERY=K: check every K-th Ready node only (a sample of a
# large fleet; 1, the default, checks them all). INITIATOR_NETNS: the
# network namespace the initiators run in (hosts made of namespaces).
READY_CHECKED=0
on_initiator() { # on_initiator CMD...: runs CMD where the initiators are
	if [ -n "${INITIATOR_NETNS:-}" ]; then ip netns exec "$INITIATOR_NETNS" "$@"; else "$@"; fi
}
check_ready_readable() {
	local entry node script iqn user pass ruser rpass uri rest host port lun target i=0
	for entry in $(ctl get nodes -o jsonpath='{range .nodes[*]}{.metadata.name}={.status.phase} {end}'); do
		[ "${entry#*=}" = Ready ] || continue
		i=$((i + 1))
		(((i - 1) % ${READY_CHECK_EVERY:-1} == 0)) || continue
		node=${entry%%=*}
		script=$(ctl boot-script "$node") || die "boot-script of Ready node $node failed"
		iqn=$(sed -n 's/^set initiator-iqn //p' <<<"$script")
		user=$(sed -n 's/^set username //p' <<<"$script")
		pass=$(sed -n 's/^set password //p' <<<"$script")
		ruser=$(sed -n 's/^set reverse-username //p' <<<"$script")
		rpass=$(sed -n 's/^set reverse-password //p' <<<"$script")
		# iPXE's iscsi:<server>:<protocol>:<port>:<lun>:<target>
		uri=$(grep -o 'iscsi:[^ ]*' <<<"$script" | head -1)
		record_secret "$pass" "$rpass"
		[ -n "$iqn" ] && [ -n "$uri" ] || die "Ready node $node has a boot script without initiator or target:"$'\n'"$script"
		rest=${uri#iscsi:}
		host=${rest%%:*} rest=${rest#*:}
		rest=${rest#*:} # protocol
		port=${rest%%:*} rest=${rest#*:}
		lun=${rest%%:*} target=${rest#*:}
		host=${host#[} host=${host%]}
		[[ $host == *:* ]] && host="[$host]"
		[ -z "${READY_PORTAL:-}" ] || host=${READY_PORTAL%:*} port=${READY_PORTAL##*:}
		local url="iscsi://$host:${port:-3260}/$target/${lun:-0}" chap=()
		[ -z "$user" ] || chap+=("LIBISCSI_CHAP_USERNAME=$user" "LIBISCSI_CHAP_PASSWORD=$pass")
		[ -z "$ruser" ] || chap+=("LIBISCSI_CHAP_TARGET_USERNAME=$ruser" "LIBISCSI_CHAP_TARGET_PASSWORD=$rpass")
		if ! on_initiator env "${chap[@]}" timeout 60 iscsi-readcapacity16 -i "$iqn" "$url" >/dev/null 2>&1; then
			node_phase_is "$node" Ready || continue
			die "node $node says Ready, but its initiator $iqn cannot read $url"
		fi
		if [ "${READY_CHECK_STRANGER:-0}" = 1 ] &&
			on_initiator env "${chap[@]}" timeout 60 iscsi-readcapacity16 -i "$iqn.stranger" "$url" >/dev/null 2>&1; then
			die "node $node's target let in a stranger's initiator ($iqn.stranger) with the node's credentials: $url"
		fi
		if [ -z "$user" ] && ! on_initiator timeout 300 qemu-io --image-opts "driver=iscsi,transport=tcp,portal=$host:${port:-3260},target=$target,lun=${lun:-0},initiator-name=$iqn" \
			-c "read 0 64k" 2>/dev/null | grep "read 65536/65536" >/dev/null; then
			node_phase_is "$node" Ready || continue
			die "node $node says Ready, but its initiator $iqn cannot read the first 64 KiB of its disk"
		fi
		READY_CHECKED=$((READY_CHECKED + 1))
	done
}

# netns_hosts SW SUFFIX NET NS...: hosts made of network namespaces on one
# bridge: namespace SW holds the bridge br0; each NS (the i-th, from 1) is
# made with an eth0 at NET.i/24 on it (veth pair hI-SUFFIX / pI-SUFFIX).
netns_hosts() {
	local sw=$1 s=$2 net=$3 ns i=0
	shift 3
	ip netns add "$sw"
	ip -n "$sw" link add br0 type bridge
	ip -n "$sw" link set br0 up
	for ns in "$@"; do
		i=$((i + 1))
		ip netns add "$ns"
		ip link add "h$i-$s" netns "$ns" type veth peer name "p$i-$s" netns "$sw"
		ip -n "$ns" link set "h$i-$s" name eth0
		ip -n "$ns" addr add "$net.$i/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" link set lo up
		ip -n "$sw" link set "p$i-$s" master br0 up
	done
}
