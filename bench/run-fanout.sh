#!/usr/bin/env bash
# Fan-out: ZenConn vs the baseline, alternately, medians. Per server and round:
#   max   - one publisher, SUBS subscribers, SIZE-byte publishes as fast as the
#           ack window and delivery lag allow, for DURATION;
#   fixed - the same at FIXED_DELIVERIES deliveries/s (rate = FIXED_DELIVERIES/SUBS
#           publishes/s): server CPU per delivery and latency.
# A third server, floor (bench/floor: one write(2) per subscriber and nothing
# else), runs the fixed test only, in the same rounds, as the reference for
# what one small write per subscriber socket costs on this machine.
# FANOUT_SCRIPT_SERVERS (zenconn baseline floor) and FANOUT_TESTS (max fixed)
# select a subset (named apart from run-audit.sh's FANOUT_SERVERS and TESTS).
# Usage: bash bench/run-fanout.sh  (env: SUBS SIZE DURATION ROUNDS FIXED_DELIVERIES PROCS
#        FANOUT_SCRIPT_SERVERS FANOUT_TESTS)
# Prints one JSON object on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SUBS:=5000}" "${SIZE:=64}" "${DURATION:=10s}" "${ROUNDS:=3}" "${FIXED_DELIVERIES:=20000}" "${PROCS:=1}"
: "${FANOUT_SCRIPT_SERVERS:=zenconn baseline floor}" "${FANOUT_TESTS:=max fixed}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
RATE=$(awk -v d="$FIXED_DELIVERIES" -v s="$SUBS" 'BEGIN { printf "%.6g", d / s }')
LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; fixed rate: $RATE publishes/s to $SUBS subscribers"
build_all
port=20200
for round in $(seq "$ROUNDS"); do
	# shellcheck disable=SC2086 # FANOUT_SCRIPT_SERVERS is a list of words
	for srv in $(order "$round" $FANOUT_SCRIPT_SERVERS); do
		port=$((port + 1))
		start_server "$srv" "$port"
		common=(--server "$srv" --url "ws://127.0.0.1:$port/ws" --server-pid "$SERVER_PID" --subs "$SUBS"
			--size "$SIZE" --duration "$DURATION" --procs "$PROCS" --timeout 180s)
		if [ "$srv" != floor ] && [[ " $FANOUT_TESTS " == *" max "* ]]; then
			# The floor writes one frame per write(2) by design; at the
			# maximum rate that is not a floor (batching beats it).
			log "round $round: $srv (pid $SERVER_PID, port $port): max rate"
			run_load fanout --label max --rate 0 "${common[@]}"
		fi
		if [[ " $FANOUT_TESTS " == *" fixed "* ]]; then
			log "round $round: $srv: fixed $FIXED_DELIVERIES deliveries/s"
			run_load fanout --label fixed --rate "$RATE" "${common[@]}"
		fi
		stop_server "$SERVER_PID"
	done
done
summarize fanout
