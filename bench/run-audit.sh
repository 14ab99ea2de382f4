#!/usr/bin/env bash
# Audit log (#5): what recording every message costs a node. Per round, the
# servers in alternating order (ABBA):
#   fanout  - SUBS subscribers and one publisher on one channel, SIZE-byte
#             publishes offered at RATE per second (default 10,000 x 1,000/s:
#             10 M deliveries/s offered) for DURATION, against
#               zenconn          the audit log on, --audit-sync=batch (default)
#               zenconn-noaudit  --audit=false
#             Publishing waits while 64 publishes are unacknowledged or the
#             subscribers are on average more than 128 messages behind
#             (load fanout --window/--max-lag), and publishes that fell due
#             meanwhile are skipped: when the node cannot deliver SUBS x RATE,
#             the publish rate drops to what it delivers, nothing is dropped
#             as a slow consumer and the queues stay bounded. deliveries/s is
#             then the node's fan-out capacity at that load.
#   publish - PUBS publisher connections, no subscribers, each keeping WINDOW
#             publishes unacknowledged, as fast as the acks come, for
#             PUB_DURATION, against zenconn (batch), zenconn-always
#             (--audit-sync=always: acks wait for the fsync) and
#             zenconn-noaudit: publishes acked per second and audit records
#             committed per second.
# The audit figures come from the node's /metrics (load --metrics-url): read
# once the connections are set up, when publishing ends, and after the run
# (connections still open, log caught up), so records minus acked publishes
# must be 0.
# Usage: bash bench/run-audit.sh
#   (env: SUBS RATE SIZE DURATION ROUNDS PROCS SOURCE_IPS PUBS WINDOW
#    PUB_DURATION TESTS="fanout publish" FANOUT_SERVERS PUBLISH_SERVERS
#    MAX_OTHER WARMUP; servers: zenconn, zenconn-noaudit, zenconn-always,
#    zenconn-none)
# With WARMUP=1 (the default) one short fan-out run, not counted, comes
# first: the first run after start-up was often the slowest.
# Runs during which other processes used more than MAX_OTHER (0.15) of a CPU
# are left out of the medians when the same test and server has a quieter
# run (listed under excluded_from_medians; MAX_OTHER=0 keeps them all).
# Prints one JSON object on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SUBS:=10000}" "${RATE:=1000}" "${SIZE:=64}" "${DURATION:=10s}" "${ROUNDS:=3}" "${PROCS:=1}"
: "${SOURCE_IPS:=}" "${PUBS:=8}" "${WINDOW:=64}" "${PUB_DURATION:=10s}" "${TESTS:=fanout publish}"
: "${FANOUT_SERVERS:=zenconn zenconn-noaudit}" "${PUBLISH_SERVERS:=zenconn zenconn-always zenconn-noaudit}"
: "${MAX_OTHER:=0.15}" "${WARMUP:=1}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; tests: $TESTS; fan-out: $SUBS subscribers, $RATE publishes/s offered"
build_all
# Audit records go to $WORK/data-PORT/pebble: the disk under TMPDIR.
WORK_FS=$(df -PT "$WORK" | awk 'NR == 2 { print $2 " " $1 }')
log "work folder on: $WORK_FS"

# start_variant NAME PORT: zenconn-always and zenconn-none are zenconn with
# --audit-sync always and none.
start_variant() {
	case $1 in
	zenconn-always | zenconn-none)
		ZENCONN_EXTRA="${ZENCONN_EXTRA:-} --audit-sync ${1#zenconn-}" start_server zenconn "$2"
		;;
	*) start_server "$1" "$2" ;;
	esac
}

src=()
[ -z "$SOURCE_IPS" ] || src=(--source-ips "$SOURCE_IPS")
port=20600
if [ "$WARMUP" = 1 ] && [[ " $TESTS " == *" fanout "* ]]; then
	port=$((port + 1))
	start_variant zenconn-noaudit "$port"
	log "warm-up: fanout, 3 s, not counted"
	taskset -c "$LOAD_CPU" "$WORK/load" fanout --server warmup --url "ws://127.0.0.1:$port/ws" --server-pid "$SERVER_PID" \
		--subs "$SUBS" --rate "$RATE" --duration 3s --procs "$PROCS" ${src[@]+"${src[@]}"} --timeout 120s >"$WORK/warmup.json" ||
		log "warm-up run failed (exit $?), see $WORK/warmup.json"
	stop_server "$SERVER_PID"
fi
for round in $(seq "$ROUNDS"); do
	for test in $TESTS; do
		case $test in
		fanout) read -r -a servers <<<"$FANOUT_SERVERS" ;;
		publish) read -r -a servers <<<"$PUBLISH_SERVERS" ;;
		*) log "unknown test $test (fanout, publish)"; exit 1 ;;
		esac
		for srv in $(order "$round" "${servers[@]}"); do
			port=$((port + 1))
			start_variant "$srv" "$port"
			common=(--server "$srv" --label "$test" --url "ws://127.0.0.1:$port/ws" --server-pid "$SERVER_PID"
				--metrics-url "http://127.0.0.1:$port/metrics" --size "$SIZE" --timeout 180s)
			if [ "$test" = fanout ]; then
				log "round $round: fanout: $srv (pid $SERVER_PID, port $port)"
				run_load fanout "${common[@]}" --subs "$SUBS" --rate "$RATE" --duration "$DURATION" \
					--procs "$PROCS" ${src[@]+"${src[@]}"}
			else
				log "round $round: publish: $srv (pid $SERVER_PID, port $port)"
				run_load publish "${common[@]}" --pubs "$PUBS" --window "$WINDOW" --duration "$PUB_DURATION"
			fi
			stop_server "$SERVER_PID"
		done
	done
done
# The build includes uncommitted changes: say how many files outside bench/.
dirty=$(git status --porcelain -- . ':!bench' 2>/dev/null | wc -l | tr -d ' ')
summarize audit --candidate zenconn --baseline zenconn-noaudit --max-other "$MAX_OTHER" --meta "work_fs=$WORK_FS" \
	--meta "offered=$SUBS subscribers x $RATE publishes/s" --meta "uncommitted_files_outside_bench=$dirty"
