#!/usr/bin/env bash
# Scale: CONNS subscribed WebSocket connections (default 60,000) held by one
# `load hold` process for the whole run, on a node of WORKERS worker
# processes, spread over PROCS generator processes and several loopback
# source addresses. The connections are opened once; the phases of PHASES
# (comma-separated, always run in this order) measure over them:
#   idle       time to connect and subscribe all; server RSS and PSS per
#              connection summed over the agent and its workers
#   kernel     the kernel's memory for the sockets (Slab, SUnreclaim, TCP
#              buffer pages) grown since before the first connection, per
#              connection and per socket
#   churn      CHURN_PCT % of the connections closed and reopened each
#              second for CHURN_DURATION; server RSS/PSS, descriptors and
#              kernel sockets sampled every CHURN_INTERVAL; growth from the
#              start to the end (once the server has settled) flagged, the
#              peak PSS meanwhile reported
#   restart    the node restarted (TERM, started again on the same port and
#              data folder; KILL after 120 s) under all connections: they reconnect with
#              exponential backoff and full jitter (100 ms, capped at 10 s)
#              and resubscribe; time until all are back, close codes
#   fanout     RATE publishes/s (0, the default: as fast as the window
#              allows) for DURATION to every subscriber, publishing held
#              while the subscribers are more than MAX_LAG (4) messages
#              behind on average (so that what is measured is what the
#              machine sustains, not a backlog), DRAIN to let them arrive:
#              deliveries/s, p50/p99, lost (not arrived after the drain);
#              last with broadcast: clients that fall tens of seconds behind
#              answer pings late and are closed as idle (4000)
#   broadcast  one broadcast (a token with the broadcast grant) to every
#              connection: deliveries, seconds until all arrived, lost
# Usage: bash bench/run-scale.sh   (env: CONNS PHASES WORKERS PROCS SOURCE_IPS
#   RATE MAX_LAG DURATION DRAIN BCAST_DRAIN CHURN_PCT CHURN_DURATION CHURN_INTERVAL
#   RESTART_TIMEOUT CONNECT_TIMEOUT NETNS ZENCONN_EXTRA)
# Prints one JSON object per phase on stdout ("test":"scale-<phase>");
# progress on stderr. Exits 1 when a phase failed (every phase still runs).
# Unset, WORKERS, PROCS and SOURCE_IPS grow with CONNS: every process (worker
# or generator) stays under an open-file limit of 20,000, and every source
# address holds at most 5,000 connections (the kernel's search for a free
# ephemeral port slows down sharply as one address fills its ~28,000 ports).
# NETNS=1 runs everything in a private network namespace (unshare -n, its own
# loopback, no connection tracking); unset, that happens when nf_conntrack is
# loaded and 2 × CONNS exceeds 80 % of nf_conntrack_max (past it, SYNs are
# dropped). NETNS=0 never. The namespace gets its own table of established
# connections sized for 2 × CONNS (net.ipv4.tcp_child_ehash_entries, set
# while it is created and restored at once; EHASH=0: the machine's table).
# No other sysctl is touched.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."
: "${CONNS:=60000}" "${PHASES:=idle,kernel,churn,restart,fanout,broadcast}"
: "${RATE:=0}" "${MAX_LAG:=4}" "${DURATION:=10s}" "${DRAIN:=60s}" "${BCAST_DRAIN:=60s}"
: "${CHURN_PCT:=1}" "${CHURN_DURATION:=10m}" "${CHURN_INTERVAL:=10s}"
: "${RESTART_TIMEOUT:=$((120 + CONNS / 2000))s}" "${CONNECT_TIMEOUT:=$((120 + CONNS / 2500))s}"
: "${WORKERS:=$(((CONNS + 17999) / 18000 > 4 ? (CONNS + 17999) / 18000 : 4))}"
: "${PROCS:=$(((CONNS + 15999) / 16000 > 4 ? (CONNS + 15999) / 16000 : 4))}"
# sourceIPs N: N loopback addresses from 127.0.0.2, none ending in .0 or .255.
sourceIPs() {
	local i out=()
	for ((i = 0; i < $1; i++)); do out+=("127.0.$((i / 250)).$((i % 250 + 2))"); done
	(IFS=,; echo "${out[*]}")
}
: "${SOURCE_IPS:=$(sourceIPs $(((CONNS + 4999) / 5000 > 8 ? (CONNS + 4999) / 5000 : 8)))}"
log() { echo "[scale $(date -u +%T)] $*" >&2; }
secs() { # a Go duration of whole s or m (10s, 10m) in seconds
	case "$1" in *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac
}

all_phases=(idle kernel churn restart fanout broadcast)
declare -A want=()
for p in ${PHASES//,/ }; do
	[[ " ${all_phases[*]} " == *" $p "* ]] || { echo "run-scale: unknown phase '$p' in PHASES (one of ${all_phases[*]})" >&2; exit 2; }
	want[$p]=1
done
for v in DURATION DRAIN BCAST_DRAIN CHURN_DURATION CHURN_INTERVAL RESTART_TIMEOUT CONNECT_TIMEOUT; do
	[[ ${!v} =~ ^[0-9]+[sm]$ ]] || { echo "run-scale: $v must be whole seconds or minutes (10s, 10m), not '${!v}'" >&2; exit 2; }
done

# A private network namespace: re-run this script inside one.
if [ -z "${SCALE_IN_NETNS:-}" ]; then
	why=""
	ctmax=/proc/sys/net/netfilter/nf_conntrack_max
	case "${NETNS:-auto}" in
	1) why="NETNS=1" ;;
	0) ;;
	auto)
		if [ -r $ctmax ] && ((CONNS * 2 * 10 > $(cat $ctmax) * 8)); then
			why="nf_conntrack is loaded with nf_conntrack_max $(cat $ctmax): 2 × $CONNS connections exceed 80 % of it"
		fi
		;;
	*) echo "run-scale: NETNS must be 0, 1 or unset" >&2; exit 2 ;;
	esac
	if [ -n "$why" ]; then
		log "running in a private network namespace (unshare -n, lo up): $why"
		ehash=/proc/sys/net/ipv4/tcp_child_ehash_entries
		if [ "${EHASH:-1}" = 0 ] || ! [ -w $ehash ]; then
			exec unshare -n env SCALE_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0"' "$self"
		fi
		# The namespace gets a table of established connections of its own,
		# sized for both ends of every connection (a power of two, 2 × CONNS
		# or more): the machine's, sized from its RAM at boot, has 262,144
		# buckets here, and with 2 M sockets a lookup (every segment
		# received) walks chains of ~8 sockets. The setting only sizes the
		# tables of namespaces created while it is set: it is restored as
		# soon as this one exists.
		old=$(cat $ehash) size=1024
		while ((size < 2 * CONNS && size < 16777216)); do size=$((size * 2)); done
		echo "$size" >$ehash
		unshare -n env SCALE_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0"' "$self" &
		child=$!
		trap 'kill -TERM $child 2>/dev/null' TERM INT
		self_ns=$(readlink /proc/self/ns/net)
		for _ in $(seq 100); do
			ns=$(readlink /proc/$child/ns/net 2>/dev/null) || break
			[ "$ns" != "$self_ns" ] && break
			sleep 0.05
		done
		echo "$old" >$ehash
		log "the namespace's table of established connections: $size buckets (tcp_child_ehash_entries, back to $old)"
		rc=0
		wait $child || rc=$?
		exit $rc
	fi
fi
netns_flag=()
[ -n "${SCALE_IN_NETNS:-}" ] && netns_flag=(--private-netns)

work=$(mktemp -d)
agent="" hold=""
# stop_agent: TERM, then (after 120 s) KILL the agent and its workers.
stop_agent() {
	if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
		kill -TERM "$agent" 2>/dev/null || true
		for _ in $(seq 1200); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$agent" 2>/dev/null; then
			log "the agent did not exit within 120 s of TERM: KILL to it and its workers"
			for p in ${pids//,/ }; do kill -KILL "$p" 2>/dev/null || true; done
		fi
		wait "$agent" 2>/dev/null || true
	fi
}
cleanup() {
	if [ -n "$hold" ] && kill -0 "$hold" 2>/dev/null; then
		kill -TERM "$hold" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$hold" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$hold" 2>/dev/null || true
	fi
	stop_agent
	rm -rf "$work"
}
trap cleanup EXIT

log "loadavg: $(cat /proc/loadavg); conns $CONNS, workers $WORKERS, procs $PROCS, $(echo "$SOURCE_IPS" | tr , '\n' | wc -l) source addresses, phases ${PHASES}${ZENCONN_EXTRA:+, serve flags: $ZENCONN_EXTRA}"
go build -o "$work/zenconn" ./cmd/zenconn
go build -o "$work/load" ./bench/load
mkdir -p "$work/public" "$work/data"
ZENCONN_JWT_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export ZENCONN_JWT_SECRET
port=$((20400 + RANDOM % 500))
listen_ns=0 starts=0
# ZENCONN_EXTRA: more serve flags (words), e.g. '--ping-interval 120s --idle-timeout 300s'.
extra=()
[ -z "${ZENCONN_EXTRA:-}" ] || read -r -a extra <<<"$ZENCONN_EXTRA"
# start_agent: the node on $port with $work/data; waits (120 s at most) until
# it listens; sets agent, listen_ns, pids and slog (its log).
start_agent() {
	starts=$((starts + 1))
	slog="$work/server.$starts.log"
	: >"$slog"
	"$work/zenconn" serve --addr "127.0.0.1:$port" --workers "$WORKERS" --access-log off \
		--public "$work/public" --data "$work/data" --max-outbound 64MiB \
		--max-conns-per-ip 1000000 --conn-rate-per-ip 1000000 --publish-rate 1000000 "${extra[@]}" 2>"$slog" &
	agent=$!
	pids=$agent
	for _ in $(seq 1200); do grep -q 'msg=listening' "$slog" && break; sleep 0.1; done
	grep -q 'msg=listening' "$slog" || { cat "$slog" >&2; return 1; }
	listen_ns=$(date +%s%N)
	pids="$agent,$(pgrep -P "$agent" | paste -sd, -)"
}
start_agent
log "agent $agent, processes $pids, port $port"

# The generator: one population for the whole run, commands on its stdin,
# one JSON line per command on its stdout.
budget=$(($(secs "$CONNECT_TIMEOUT") + $(secs "$DURATION") + $(secs "$DRAIN") + $(secs "$BCAST_DRAIN") +
	$(secs "$CHURN_DURATION") + $(secs "$RESTART_TIMEOUT") + 600))
mkfifo "$work/cmd"
"$work/load" hold --server zenconn --label scale --url "ws://127.0.0.1:$port/ws" --server-pids "$pids" \
	--conns "$CONNS" --procs "$PROCS" --source-ips "$SOURCE_IPS" --connect-timeout "$CONNECT_TIMEOUT" --max-lag "$MAX_LAG" \
	--timeout "${budget}s" "${netns_flag[@]}" <"$work/cmd" >"$work/out" &
hold=$!
exec 3>"$work/cmd"
status=0
answered=0
# ask CMD WAIT_S: send CMD, wait up to WAIT_S for its JSON line, print it.
ask() {
	echo "$1" >&3
	local deadline=$((SECONDS + $2)) line
	while ((SECONDS < deadline)); do
		if (($(wc -l <"$work/out") > answered)); then
			answered=$((answered + 1))
			line=$(sed -n "${answered}p" "$work/out")
			[[ $line == *'"error":'* || $line == *'"ok":false'* ]] && status=1
			[[ $1 == mark ]] || echo "$line"
			return 0
		fi
		kill -0 "$hold" 2>/dev/null || { log "the generator exited"; status=1; return 1; }
		sleep 0.5
	done
	log "no answer to '$1' within $2 s"
	status=1
	return 1
}
connect_wait=$(($(secs "$CONNECT_TIMEOUT") + 60))
t_idle=$((connect_wait + 30))
if [ -n "${want[idle]:-}" ]; then ask idle $t_idle || exit 1; t_idle=60; fi
if [ -n "${want[kernel]:-}" ]; then ask kernel $t_idle || exit 1; t_idle=60; fi
if [ -n "${want[churn]:-}" ]; then
	ask "churn $CHURN_PCT $CHURN_DURATION $CHURN_INTERVAL" $((t_idle + $(secs "$CHURN_DURATION") + 180)) || exit 1
	t_idle=60
fi
if [ -n "${want[restart]:-}" ]; then
	ask mark $t_idle || exit 1
	t0=$(date +%s.%N)
	log "restart: TERM the agent $agent"
	stop_agent
	log "restart: the agent exited after $(echo "$(date +%s.%N) - $t0" | bc) s; starting it again"
	start_agent
	log "restart: listening again after $(echo "$(date +%s.%N) - $t0" | bc) s: processes $pids"
	ask "restart-wait $pids $RESTART_TIMEOUT $listen_ns" $(($(secs "$RESTART_TIMEOUT") + 60)) || exit 1
fi
if [ -n "${want[fanout]:-}" ]; then
	ask "fanout $RATE $DURATION $DRAIN" $((t_idle + $(secs "$DURATION") + $(secs "$DRAIN") + 60)) || exit 1
	t_idle=60
fi
if [ -n "${want[broadcast]:-}" ]; then
	ask "broadcast $BCAST_DRAIN" $((t_idle + $(secs "$BCAST_DRAIN") + 60)) || exit 1
	t_idle=60
fi
echo quit >&3
exec 3>&-
for _ in $(seq 300); do kill -0 "$hold" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$hold" 2>/dev/null; then
	log "the generator did not end within 30 s of quit: stopping it"
	status=1
else
	wait "$hold" || status=1
	hold=""
fi
stop_agent
n=$(cat "$work"/server.*.log | grep -ciE 'level=(WARN|ERROR)' || true)
log "server WARN/ERROR lines: $n"
[ "$n" = 0 ] || cat "$work"/server.*.log | grep -iE 'level=(WARN|ERROR)' | head -20 >&2
log "loadavg: $(cat /proc/loadavg)"
exit $status
