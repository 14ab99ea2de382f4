#!/usr/bin/env bash
# Connection churn: ZenConn vs the baseline, alternately, medians. Per server
# and round: CONNS workers loop for DURATION over connect, welcome, subscribe
# (ack), publish (ack), close handshake, after an uncounted WARMUP; the
# server's RSS, descriptors (/proc), goroutines and heap in use (/metrics,
# after a forced GC) are sampled before and after (once its sockets are
# back to the count before, at most SETTLE).
# SERVERS (zenconn baseline) may also name centrifugo: Centrifugo
# (bench/ensure-tools.sh cluster) with its memory engine, anonymous clients
# allowed to subscribe and publish, its Prometheus and debug (pprof)
# endpoints on, over its JSON protocol (load churn --protocol centrifugo);
# it has no audit log and, by default, no history: it keeps nothing of a
# publication nor of a connection once delivered or closed.
# Targets: ZenConn's median cycles/s >= MIN_RATIO (2) x the baseline's (when
# the baseline ran), its median server CPU per cycle <= MAX_CPU_RATIO (0.5)
# x Centrifugo's (when Centrifugo ran), with no growth (limits: see
# bench/README.md).
# Usage: bash bench/run-churn.sh  (env: CONNS DURATION ROUNDS WARMUP SETTLE PROCS
#        SOURCE_IPS SERVERS MIN_RATIO MAX_CPU_RATIO MAX_OTHER PROFILE_DIR PROFILE_SECONDS BENCH_GO_BIN
#        MAX_SOCKET_GROWTH MAX_FD_GROWTH MAX_FILE_GROWTH
#        MAX_GOROUTINE_GROWTH MAX_HEAP_B_PER_CYCLE MAX_RSS_B_PER_CYCLE)
# Prints one JSON object on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONNS:=64}" "${DURATION:=10s}" "${ROUNDS:=3}" "${WARMUP:=3s}" "${SETTLE:=10s}" "${PROCS:=1}"
: "${SOURCE_IPS:=}" "${SERVERS:=zenconn baseline}" "${MIN_RATIO:=2}" "${MAX_CPU_RATIO:=0.5}" "${MAX_OTHER:=0}"
: "${BENCH_GO_BIN:=${XDG_CACHE_HOME:-$HOME/.cache}/zenconn-bench/bin}"
: "${PROFILE_DIR:=}" "${PROFILE_SECONDS:=5}"
: "${MAX_SOCKET_GROWTH:=0}" "${MAX_FD_GROWTH:=4}" "${MAX_FILE_GROWTH:=256}" "${MAX_GOROUTINE_GROWTH:=4}" "${MAX_HEAP_B_PER_CYCLE:=32}" "${MAX_RSS_B_PER_CYCLE:=256}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine

# seconds DURATION: a Go duration (500ms, 3s, 1.5s, 2m) in seconds.
seconds() {
	awk -v d="$1" 'BEGIN {
		if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
		else if (d ~ /s$/) { sub(/s$/, "", d); print d + 0 }
		else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
		else { print d + 0 }
	}'
}

CENTRIFUGO=$BENCH_GO_BIN/centrifugo
if [[ " $SERVERS " == *" centrifugo "* ]]; then
	BENCH_GO_BIN=$BENCH_GO_BIN bash bench/ensure-tools.sh cluster
fi

# start_centrifugo PORT: one Centrifugo node (memory engine) pinned to
# SERVER_CPU, as in the header; sets SERVER_PID once /health answers.
start_centrifugo() {
	local port=$1 conf="$WORK/centrifugo-$1.json" logf="$WORK/centrifugo-$1.log"
	cat >"$conf" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $port},
  "log": {"level": "info"},
  "health": {"enabled": true},
  "prometheus": {"enabled": true},
  "debug": {"enabled": true},
  "client": {"allow_anonymous_connect_without_token": true},
  "channel": {"without_namespace": {"allow_subscribe_for_anonymous": true, "allow_subscribe_for_client": true,
    "allow_publish_for_anonymous": true, "allow_publish_for_client": true}},
  "usage_stats": {"disabled": true}
}
EOF
	taskset -c "$SERVER_CPU" "$CENTRIFUGO" --config "$conf" 2>"$logf" >/dev/null &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "centrifugo did not start on port $port:"
	tail -n 30 "$logf" >&2
	exit 1
}

LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; $CONNS workers, $DURATION per run after $WARMUP of warm-up, servers: $SERVERS"
build_all
if [ -n "$PROFILE_DIR" ]; then
	mkdir -p "$PROFILE_DIR"
	PROFILE_DIR=$(cd "$PROFILE_DIR" && pwd)
fi
USER_EXTRA=${ZENCONN_EXTRA:-}
port=21000
for round in $(seq "$ROUNDS"); do
	# shellcheck disable=SC2086 # SERVERS is a list of words
	for srv in $(order "$round" $SERVERS); do
		port=$((port + 1))
		pprof_port=$((port + 1000))
		url="ws://127.0.0.1:$port/ws" proto=zenconn
		case $srv in
		zenconn*)
			# --pprof for the forced GC (and the profile); the address is
			# checked to be loopback by zenconn.
			ZENCONN_EXTRA="$USER_EXTRA --pprof 127.0.0.1:$pprof_port"
			gc_url="http://127.0.0.1:$pprof_port/debug/pprof/heap?gc=1"
			;;
		centrifugo)
			# Its debug endpoint is net/http/pprof's.
			gc_url="http://127.0.0.1:$port/debug/pprof/heap?gc=1"
			url="ws://127.0.0.1:$port/connection/websocket" proto=centrifugo
			;;
		*)
			# bench/baseline serves /metrics and /debug/pprof/heap itself.
			gc_url="http://127.0.0.1:$port/debug/pprof/heap?gc=1"
			;;
		esac
		if [ "$srv" = centrifugo ]; then
			start_centrifugo "$port"
		else
			start_server "$srv" "$port"
		fi
		prof_pid=
		if [ -n "$PROFILE_DIR" ] && [[ $srv == zenconn* ]]; then
			# A CPU profile of PROFILE_SECONDS, starting 1 s into the
			# measured churn (after the warm-up and the first sample).
			prof="$PROFILE_DIR/$srv-r$round.pprof"
			delay=$(awk -v w="$(seconds "$WARMUP")" 'BEGIN { print w + 1.5 }')
			(sleep "$delay" && exec curl -sf -o "$prof" "http://127.0.0.1:$pprof_port/debug/pprof/profile?seconds=$PROFILE_SECONDS") &
			prof_pid=$!
			STARTED_PIDS+=("$prof_pid")
			log "round $round: $srv: CPU profile of ${PROFILE_SECONDS}s to $prof"
		fi
		log "round $round: $srv (pid $SERVER_PID, port $port): churn, $CONNS workers"
		run_load churn --server "$srv" --label churn --url "$url" --protocol "$proto" --server-pid "$SERVER_PID" \
			--conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --settle "$SETTLE" \
			--procs "$PROCS" --source-ips "$SOURCE_IPS" \
			--metrics-url "http://127.0.0.1:$port/metrics" --gc-url "$gc_url" --timeout 180s || true
		if [ -n "$prof_pid" ]; then
			wait "$prof_pid" 2>/dev/null || log "round $round: $srv: no profile"
			keep=()
			for q in "${STARTED_PIDS[@]}"; do [ "$q" = "$prof_pid" ] || keep+=("$q"); done
			STARTED_PIDS=("${keep[@]}")
			if [ -s "$prof" ]; then
				go tool pprof -top "$WORK/zenconn" "$prof" >"${prof%.pprof}.top.txt" 2>/dev/null || true
				head -25 "${prof%.pprof}.top.txt" >&2 || true
			fi
		fi
		stop_server "$SERVER_PID"
	done
done
CENT_META=()
[[ " $SERVERS " != *" centrifugo "* ]] || CENT_META=(--meta "centrifugo=$(go version -m "$CENTRIFUGO" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'), memory engine, no history, no audit log")
[ -z "$PROFILE_DIR" ] || PROFILED=(--meta "profiled=zenconn runs, ${PROFILE_SECONDS}s CPU profile each, in $PROFILE_DIR")
"$WORK/load" summarize-churn --min-ratio "$MIN_RATIO" --max-cpu-ratio "$MAX_CPU_RATIO" --max-other "$MAX_OTHER" \
	--max-socket-growth "$MAX_SOCKET_GROWTH" --max-fd-growth "$MAX_FD_GROWTH" --max-file-growth "$MAX_FILE_GROWTH" --max-goroutine-growth "$MAX_GOROUTINE_GROWTH" \
	--max-heap-bytes-per-cycle "$MAX_HEAP_B_PER_CYCLE" --max-rss-bytes-per-cycle "$MAX_RSS_B_PER_CYCLE" \
	--meta "nproc=$(nproc)" --meta "kernel=$(uname -r)" --meta "go=$(go version)" \
	--meta "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
	--meta "loadavg_start=$LOADAVG_START" --meta "loadavg_end=$(cat /proc/loadavg)" \
	--meta "server_cpu=$SERVER_CPU" --meta "load_cpu=$LOAD_CPU" \
	--meta "conns=$CONNS" --meta "duration=$DURATION" --meta "warmup=$WARMUP" --meta "rounds=$ROUNDS" \
	--meta "git=$(git rev-parse --short HEAD 2>/dev/null || echo none)" \
	${CENT_META[@]+"${CENT_META[@]}"} \
	${PROFILED[@]+"${PROFILED[@]}"} \
	"$WORK/results.jsonl"
