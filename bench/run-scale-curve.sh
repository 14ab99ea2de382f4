#!/usr/bin/env bash
# Scale curve: the server's memory per connection and its fan-out
# deliveries/s against the number of connections, for the plot of
# bench/RESULTS.md (bench/report draws it as bench/scale-curve.svg).
#   zenconn    - for each N of STEPS: PHASES=idle,fanout CONNS=N bash
#                bench/run-scale.sh (one node of several worker processes,
#                its idle test, then a fan-out to all N at the maximum rate);
#   baseline,  - one process each, so they stop at the per-process open-file
#   centrifugo   limit (ulimit -n): for each N of ONE_PROC_STEPS below it,
#                run-idle.sh's idle test and run-fanout.sh's max-rate test
#                (lib.sh's start_server and run_load), each on a fresh server
#                pinned to SERVER_CPU, the generator on LOAD_CPU.
# Usage: bash bench/run-scale-curve.sh  (env: STEPS ONE_PROC_STEPS
#        CURVE_SERVERS DURATION DRAIN SIZE SETTLE OUT KEEP_POINTS ZENCONN_EXTRA; ZenConn's fan-out
#        runs at RATE=0, as fast as the window and MAX_LAG (128, the other
#        servers' fan-out default) allow, then waits DRAIN)
# Writes OUT (bench/results/scale-curve.json): every point with the commands
# that measured it, the settings, the open-file limit and the times; prints
# it on stdout too. Progress on stderr. A step that fails is recorded with
# its exit status and whatever it printed; the next steps still run.
# KEEP_POINTS=1 keeps the points of OUT that this run did not measure again
# (another server, another count), so that the steps can be run in parts:
# CURVE_SERVERS='baseline centrifugo', then CURVE_SERVERS=zenconn STEPS=...
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STEPS:=10000 30000 100000 300000 1000000}" "${ONE_PROC_STEPS:=10000 18000}"
: "${CURVE_SERVERS:=zenconn baseline centrifugo}" "${DURATION:=10s}" "${SIZE:=64}" "${SETTLE:=10s}"
: "${OUT:=bench/results/scale-curve.json}" "${DRAIN:=60s}" "${MAX_LAG:=128}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
command -v jq >/dev/null || { log "jq is required"; exit 1; }
NOFILE=$(ulimit -n)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG_START=$(cat /proc/loadavg)
POINTS=$WORK/points.jsonl
: >"$POINTS"
log "loadavg: $LOADAVG_START; open-file limit $NOFILE; servers: $CURVE_SERVERS"

# point SERVER CONNS EXIT IDLE_CMD IDLE_FILE FANOUT_CMD FANOUT_FILE: one
# point into $POINTS; IDLE_FILE and FANOUT_FILE hold the load generator's
# JSON object of each test (empty when it printed none).
point() {
	local idle fanout
	idle=$(jq -c -s '.[0] // null' "$5" 2>/dev/null || echo null)
	fanout=$(jq -c -s '.[0] // null' "$7" 2>/dev/null || echo null)
	jq -n -c --arg server "$1" --argjson conns "$2" --argjson exit "$3" \
		--arg idle_command "$4" --argjson idle "$idle" --arg fanout_command "$6" --argjson fanout "$fanout" \
		--arg time "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		'{server: $server, conns: $conns, exit: $exit, time: $time,
		  idle_command: $idle_command, fanout_command: $fanout_command, idle: $idle, fanout: $fanout}' >>"$POINTS"
}

# zenconn_step N: run-scale.sh at N connections.
zenconn_step() {
	local n=$1 out="$WORK/zenconn-$1.jsonl" rc=0
	local cmd="PHASES=idle,fanout RATE=0 MAX_LAG=$MAX_LAG DRAIN=$DRAIN CONNS=$n DURATION=$DURATION bash bench/run-scale.sh"
	# The node's extra flags (run-scale.sh's ZENCONN_EXTRA) are part of the point.
	[ -z "${ZENCONN_EXTRA:-}" ] || cmd="ZENCONN_EXTRA='$ZENCONN_EXTRA' $cmd"
	log "zenconn: $cmd"
	PHASES=idle,fanout RATE=0 MAX_LAG=$MAX_LAG DRAIN=$DRAIN CONNS=$n DURATION=$DURATION bash bench/run-scale.sh >"$out" || rc=$?
	[ "$rc" = 0 ] || log "zenconn at $n: run-scale.sh exit $rc"
	jq -c 'select(.test == "scale-idle")' "$out" >"$out.idle" 2>/dev/null || true
	jq -c 'select(.test == "scale-fanout")' "$out" >"$out.fanout" 2>/dev/null || true
	point zenconn "$n" "$rc" "$cmd" "$out.idle" "$cmd" "$out.fanout"
}

# next_port: the first port from $port up that nothing listens on.
next_port() {
	port=$((port + 1))
	while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
}

# one_test SERVER FILE ARGS...: a fresh SERVER, then load ARGS with its
# --url, --protocol and --server-pid; the generator's JSON goes to FILE and
# the command line (the tools' folder left out) to LAST_CMD.
one_test() {
	local srv=$1 file=$2 before
	shift 2
	next_port
	start_server "$srv" "$port"
	ws_target "$srv" "$port"
	local args=("$@" --server "$srv" --protocol "$PROTO" --url "$WS_URL" --server-pid "$SERVER_PID")
	LAST_CMD="load ${args[*]}"
	log "$srv (pid $SERVER_PID, port $port): $LAST_CMD"
	before=$(wc -l <"$WORK/results.jsonl")
	run_load "${args[@]}" || STEP_RC=1
	tail -n +"$((before + 1))" "$WORK/results.jsonl" >"$file"
	stop_server "$SERVER_PID"
}

# one_process_step SERVER N: the idle and max fan-out tests of run-idle.sh
# and run-fanout.sh at N connections, with a generator process per 16,000
# connections and a source address per 5,000 (as run-scale.sh).
one_process_step() {
	local srv=$1 n=$2 idle_cmd fan_cmd
	local procs=$(((n + 15999) / 16000)) ips
	ips=$(loopback_ips $(((n + 4999) / 5000)))
	STEP_RC=0
	one_test "$srv" "$WORK/$srv-$n.idle" idle --label idle --conns "$n" --procs "$procs" \
		--source-ips "$ips" --settle "$SETTLE" --timeout 180s
	idle_cmd=$LAST_CMD
	one_test "$srv" "$WORK/$srv-$n.fanout" fanout --label max --rate 0 --subs "$n" --size "$SIZE" \
		--duration "$DURATION" --procs "$procs" --source-ips "$ips" --timeout 180s
	fan_cmd=$LAST_CMD
	point "$srv" "$n" "$STEP_RC" "$idle_cmd" "$WORK/$srv-$n.idle" "$fan_cmd" "$WORK/$srv-$n.fanout"
}

if [[ " $CURVE_SERVERS " == *" centrifugo "* ]]; then
	bash bench/ensure-tools.sh cluster >&2
fi
build_all baseline load
: >"$WORK/results.jsonl"
port=21300
for srv in $CURVE_SERVERS; do
	case $srv in
	zenconn) for n in $STEPS; do zenconn_step "$n"; done ;;
	baseline | centrifugo)
		for n in $ONE_PROC_STEPS; do
			# The server holds n sockets and a few dozen other files.
			if [ $((n + 200)) -gt "$NOFILE" ]; then
				log "$srv: $n connections skipped: one process, open-file limit $NOFILE"
				continue
			fi
			one_process_step "$srv" "$n"
		done
		;;
	*) log "unknown server $srv (zenconn baseline centrifugo)"; exit 1 ;;
	esac
done

mkdir -p "$(dirname "$OUT")"
jq -s --arg started "$STARTED" --arg finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	--argjson nofile "$NOFILE" --arg steps "$STEPS" --arg one_proc_steps "$ONE_PROC_STEPS" \
	--arg servers "$CURVE_SERVERS" --arg duration "$DURATION" --argjson size "$SIZE" --arg settle "$SETTLE" \
	--arg nproc "$(nproc)" --arg kernel "$(uname -r)" --arg go "$(go version)" \
	--arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
	--arg mem_kib "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)" \
	--arg loadavg_start "$LOADAVG_START" --arg loadavg_end "$(cat /proc/loadavg)" \
	--arg server_cpu "$SERVER_CPU" --arg load_cpu "$LOAD_CPU" \
	--arg git "$(git rev-parse --short HEAD 2>/dev/null || echo none)" \
	'{test: "scale-curve", started: $started, finished: $finished, open_file_limit: $nofile,
	  settings: {steps: $steps, one_process_steps: $one_proc_steps, servers: $servers,
	    duration: $duration, size: $size, settle: $settle},
	  meta: {nproc: $nproc, kernel: $kernel, go: $go, cpu: $cpu, mem_kib: $mem_kib, git: $git,
	    loadavg_start: $loadavg_start, loadavg_end: $loadavg_end, server_cpu: $server_cpu, load_cpu: $load_cpu},
	  points: .}' "$POINTS" >"$WORK/curve.json"
if [ "${KEEP_POINTS:-}" = 1 ] && [ -s "$OUT" ]; then
	# The old points not measured again, then the new ones; the servers of both.
	jq --slurpfile old "$OUT" '
	  . as $new
	  | ([$old[0].points[] | select([.server, .conns] as $k | all($new.points[]; [.server, .conns] != $k))]) as $kept
	  | .points = $kept + .points
	  | .settings.servers = ([($old[0].settings.servers // "" | splits(" +")), (.settings.servers | splits(" +"))]
	      | map(select(. != "")) | reduce .[] as $s ([]; if index([$s]) then . else . + [$s] end) | join(" "))
	  | .kept_points = ($kept | length)' "$WORK/curve.json" >"$WORK/merged.json"
	mv "$WORK/merged.json" "$WORK/curve.json"
	log "kept $(jq .kept_points "$WORK/curve.json") points of $OUT"
fi
cp "$WORK/curve.json" "$OUT"
log "wrote $OUT ($(jq '.points | length' "$OUT") points)"
cat "$OUT"
