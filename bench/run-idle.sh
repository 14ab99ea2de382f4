#!/usr/bin/env bash
# Idle-connection memory: ZenConn vs the baseline, alternately, medians.
# Usage: bash bench/run-idle.sh        (env: CONNS ROUNDS PROCS SOURCE_IPS SETTLE IDLE_SERVERS)
# Prints one JSON object on stdout; progress on stderr.
# SETTLE: the RSS is read this long after the last connection is up, when
# the servers' runtimes have settled (ZenConn gives the garbage of a
# connection storm back to the OS after 3 s of quiet: internal/memtrim).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONNS:=15000}" "${ROUNDS:=2}" "${PROCS:=1}" "${SOURCE_IPS:=127.0.0.1}" "${SETTLE:=10s}" "${IDLE_SERVERS:=zenconn baseline}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START"
build_all
port=20100
for round in $(seq "$ROUNDS"); do
	# shellcheck disable=SC2086 # IDLE_SERVERS is a list of words
	for srv in $(order "$round" $IDLE_SERVERS); do
		port=$((port + 1))
		start_server "$srv" "$port"
		log "round $round: $srv (pid $SERVER_PID, port $port): $CONNS idle connections"
		run_load idle --server "$srv" --label idle --url "ws://127.0.0.1:$port/ws" --server-pid "$SERVER_PID" \
			--conns "$CONNS" --procs "$PROCS" --source-ips "$SOURCE_IPS" --settle "$SETTLE" --timeout 180s
		stop_server "$SERVER_PID"
	done
done
summarize idle
