#!/usr/bin/env bash
# Cluster: ZenConn's nodes joined through NATS, against one ZenConn node
# and against Centrifugo's NATS broker, in the same run, alternately,
# medians. Per system and round:
#   zenconn-cluster  a nats-server and NODES ZenConn nodes (--nats), the
#                    subscribers spread evenly over the nodes, the publisher
#                    on the first node;
#   zenconn          one ZenConn node (the same binary, no --nats) with the
#                    same number of subscribers;
#   centrifugo       a nats-server and NODES Centrifugo nodes (broker type
#                    nats), the same spread, the publisher on the first node
#                    (Centrifugo's JSON protocol: connect, subscribe,
#                    publish from the client).
# and per system the tests of run-fanout.sh:
#   max   - one publisher, SUBS subscribers, SIZE-byte publishes as fast as
#           the ack window and delivery lag allow, for DURATION;
#   fixed - the same at FIXED_DELIVERIES deliveries/s (rate =
#           FIXED_DELIVERIES/SUBS publishes/s): latency and server CPU.
# Every server process (the nodes and nats-server) is pinned to SERVER_CPU,
# the generator to LOAD_CPU; the server CPU figures sum them all.
# nats-server and Centrifugo are built by bench/ensure-tools.sh (cluster).
# Usage: bash bench/run-cluster.sh  (env: SUBS NODES SIZE DURATION ROUNDS
#        FIXED_DELIVERIES PROCS CLUSTER_SERVERS CLUSTER_TESTS BENCH_GO_BIN)
# Prints one JSON object on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SUBS:=6000}" "${NODES:=3}" "${SIZE:=64}" "${DURATION:=10s}" "${ROUNDS:=3}" "${FIXED_DELIVERIES:=20000}" "${PROCS:=1}"
: "${CLUSTER_SERVERS:=zenconn-cluster zenconn centrifugo}" "${CLUSTER_TESTS:=max fixed}"
: "${BENCH_GO_BIN:=${XDG_CACHE_HOME:-$HOME/.cache}/zenconn-bench/bin}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
if [ "$NODES" -lt 2 ] || [ "$NODES" -gt 9 ]; then
	log "NODES must be 2..9"; exit 1
fi
[ $((SUBS % NODES)) = 0 ] || log "warning: $SUBS subscribers do not divide evenly over $NODES nodes"
RATE=$(awk -v d="$FIXED_DELIVERIES" -v s="$SUBS" 'BEGIN { printf "%.6g", d / s }')
LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; $SUBS subscribers, $NODES nodes; fixed rate: $RATE publishes/s"

BENCH_GO_BIN=$BENCH_GO_BIN bash bench/ensure-tools.sh cluster
NATS_SERVER=$BENCH_GO_BIN/nats-server
CENTRIFUGO=$BENCH_GO_BIN/centrifugo
build_all load

# wait_log FILE PATTERN PID WHAT: until FILE matches PATTERN (at most 10 s),
# or exit when PID died.
wait_log() {
	local f=$1 pat=$2 pid=$3 what=$4
	for _ in $(seq 100); do
		grep -q -- "$pat" "$f" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	log "$what did not start (waiting for \"$pat\" in $f):"
	tail -n 30 "$f" >&2
	exit 1
}

# start_nats PORT: a nats-server on 127.0.0.1:PORT pinned to SERVER_CPU;
# sets SERVER_PID.
start_nats() {
	local port=$1 logf="$WORK/nats-$1.log"
	taskset -c "$SERVER_CPU" "$NATS_SERVER" -a 127.0.0.1 -p "$port" 2>"$logf" >/dev/null &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	wait_log "$logf" "Server is ready" "$SERVER_PID" "nats-server on port $port"
}

# start_zen_node PORT [NATS_PORT]: a ZenConn node (lib.sh's start_server),
# joined to the nats-server on NATS_PORT when given; sets SERVER_PID.
start_zen_node() {
	local port=$1 nats=${2:-}
	if [ -z "$nats" ]; then
		start_server zenconn "$port"
		return
	fi
	ZENCONN_EXTRA="${ZENCONN_EXTRA:-} --nats nats://127.0.0.1:$nats" start_server zenconn "$port"
	wait_log "$WORK/zenconn-$port.log" "cluster: connected" "$SERVER_PID" "zenconn node on port $port (NATS)"
}

# start_centrifugo PORT NATS_PORT: a Centrifugo node with the NATS broker,
# anonymous clients allowed to subscribe and to publish; sets SERVER_PID.
start_centrifugo() {
	local port=$1 nats=$2 conf="$WORK/centrifugo-$1.json" logf="$WORK/centrifugo-$1.log"
	cat >"$conf" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $port},
  "log": {"level": "info"},
  "broker": {"enabled": true, "type": "nats", "nats": {"url": "nats://127.0.0.1:$nats"}},
  "client": {"allow_anonymous_connect_without_token": true},
  "channel": {"without_namespace": {"allow_subscribe_for_anonymous": true, "allow_subscribe_for_client": true,
    "allow_publish_for_anonymous": true, "allow_publish_for_client": true}},
  "usage_stats": {"disabled": true}
}
EOF
	taskset -c "$SERVER_CPU" "$CENTRIFUGO" --config "$conf" 2>"$logf" >/dev/null &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	wait_log "$logf" "broker running" "$SERVER_PID" "centrifugo on port $port (NATS broker)"
	wait_log "$logf" "serving websocket" "$SERVER_PID" "centrifugo on port $port"
}

# start_system NAME BASEPORT: the processes of one system; sets SYS_PIDS
# (nodes first, nats-server last), SYS_URLS (comma-separated, the
# publisher's node first) and SYS_PROTO.
start_system() {
	local name=$1 base=$2 i nats=""
	SYS_PIDS=() SYS_URLS="" SYS_PROTO=zenconn
	case $name in
	zenconn-cluster | centrifugo)
		nats=$base
		start_nats "$nats"
		local natspid=$SERVER_PID
		for i in $(seq "$NODES"); do
			if [ "$name" = centrifugo ]; then
				start_centrifugo "$((base + i))" "$nats"
				SYS_URLS+="${SYS_URLS:+,}ws://127.0.0.1:$((base + i))/connection/websocket"
				SYS_PROTO=centrifugo
			else
				start_zen_node "$((base + i))" "$nats"
				SYS_URLS+="${SYS_URLS:+,}ws://127.0.0.1:$((base + i))/ws"
			fi
			SYS_PIDS+=("$SERVER_PID")
		done
		SYS_PIDS+=("$natspid")
		;;
	zenconn)
		start_zen_node "$((base + 1))"
		SYS_PIDS=("$SERVER_PID") SYS_URLS="ws://127.0.0.1:$((base + 1))/ws"
		;;
	*) log "unknown system $name (zenconn-cluster, zenconn, centrifugo)"; exit 1 ;;
	esac
}

port=20700
for round in $(seq "$ROUNDS"); do
	# shellcheck disable=SC2086 # CLUSTER_SERVERS is a list of words
	for srv in $(order "$round" $CLUSTER_SERVERS); do
		port=$((port + 10))
		start_system "$srv" "$port"
		others=$(IFS=,; echo "${SYS_PIDS[*]:1}")
		common=(--server "$srv" --protocol "$SYS_PROTO" --url "$SYS_URLS" --pub-url 0 --server-pid "${SYS_PIDS[0]}"
			--subs "$SUBS" --size "$SIZE" --duration "$DURATION" --procs "$PROCS" --timeout 180s)
		[ -z "$others" ] || common+=(--server-pids "$others")
		log "round $round: $srv (pids ${SYS_PIDS[*]}; $SYS_URLS)"
		if [[ " $CLUSTER_TESTS " == *" max "* ]]; then
			log "round $round: $srv: max rate"
			run_load fanout --label max --rate 0 "${common[@]}"
		fi
		if [[ " $CLUSTER_TESTS " == *" fixed "* ]]; then
			log "round $round: $srv: fixed $FIXED_DELIVERIES deliveries/s"
			run_load fanout --label fixed --rate "$RATE" "${common[@]}"
		fi
		for p in "${SYS_PIDS[@]}"; do stop_server "$p"; done
	done
done

modver() { go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3; exit }'; }
summarize cluster --candidate zenconn-cluster --baseline zenconn --competitor centrifugo \
	--meta "nodes=$NODES" --meta "subs=$SUBS" --meta "fixed_deliveries=$FIXED_DELIVERIES" \
	--meta "nats_server=$(modver "$NATS_SERVER" github.com/nats-io/nats-server/v2)" \
	--meta "centrifugo=$(modver "$CENTRIFUGO" github.com/centrifugal/centrifugo/v6)"
