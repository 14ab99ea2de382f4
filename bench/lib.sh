# Shared helpers for bench/run-*.sh (sourced, not run).
# Starts servers pinned to one CPU, stops exactly the processes it started.

: "${SERVER_CPU:=1}"   # CPU the server under test is pinned to
: "${LOAD_CPU:=0}"     # CPU the load generator is pinned to

# A load generator is one client address opening thousands of connections
# and publishing without pause: ZenConn's client limits are lifted for it.
BENCH_LIMIT_FLAGS=(--max-conns-per-ip 1000000 --conn-rate-per-ip 1000000 --max-conns-per-user 1000000
	--publish-rate 1000000 --subscribe-rate 1000000 --auth-rate 1000000)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zenconn-bench.XXXXXX")
STARTED_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
	local p
	for p in "${STARTED_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${STARTED_PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [ -n "${KEEP_WORK:-}" ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check_machine() {
	if [ "$(nproc)" -lt 2 ]; then
		log "need at least 2 CPUs (server on CPU $SERVER_CPU, load on CPU $LOAD_CPU)"; exit 1
	fi
	command -v taskset >/dev/null || { log "taskset (util-linux) is required"; exit 1; }
}

# build_all [TOOL...]: zenconn and the tools of bench/ (default: baseline,
# floor and load) into $WORK. ZENCONN_BIN, when set, is a zenconn binary
# used instead of building ./cmd/zenconn (the one bench/run-compare.sh built
# from a commit); BENCH_TOOLS, when set, is a folder holding those tools
# already built.
build_all() {
	local tools=("$@")
	[ ${#tools[@]} -gt 0 ] || tools=(baseline floor load)
	if [ -n "${ZENCONN_BIN:-}" ]; then
		log "zenconn: $ZENCONN_BIN"
		cp "$ZENCONN_BIN" "$WORK/zenconn"
	else
		log "building zenconn into $WORK"
		go build -o "$WORK/zenconn" ./cmd/zenconn
	fi
	local t
	for t in "${tools[@]}"; do
		if [ -n "${BENCH_TOOLS:-}" ]; then
			cp "$BENCH_TOOLS/$t" "$WORK/$t"
		else
			go build -o "$WORK/$t" "./bench/$t"
		fi
	done
	mkdir -p "$WORK/public"
	echo '<!doctype html><title>bench</title>' >"$WORK/public/index.html"
}

# start_server NAME PORT: starts the server pinned to SERVER_CPU (the
# baseline and the floor with GOMAXPROCS=1, ZenConn and Centrifugo with
# their own default) and sets SERVER_PID once it logs that it is listening.
# ZenConn variants: zenconn (defaults: audit log on, --audit-sync=batch) and
# zenconn-noaudit (--audit=false). Words of ZENCONN_EXTRA, if set, are
# appended to the zenconn command line of either (e.g.
# ZENCONN_EXTRA='--audit-sync always').
# centrifugo: one Centrifugo node (CENTRIFUGO, default
# $BENCH_GO_BIN/centrifugo, which bench/ensure-tools.sh cluster builds) with
# its memory broker, anonymous clients allowed to subscribe and to publish,
# its other settings Centrifugo's defaults (spawn_centrifugo).
start_server() {
	local name=$1 port=$2 logf="$WORK/$1-$2.log" ready="msg=listening addr=127.0.0.1:$2"
	local extra=()
	case $name in
	zenconn | zenconn-noaudit)
		[ "$name" = zenconn-noaudit ] && extra+=(--audit=false)
		if [ -n "${ZENCONN_EXTRA:-}" ]; then
			local more
			read -r -a more <<<"$ZENCONN_EXTRA"
			extra+=("${more[@]}")
		fi
		[ ${#extra[@]} = 0 ] || log "$name: extra flags: ${extra[*]}"
		# No GOMAXPROCS: under taskset the runtime sees one CPU and ZenConn
		# gives itself one processor more than its event loops (spareProc in
		# cmd/zenconn); ZENCONN_GOMAXPROCS sets it explicitly.
		local gmp=()
		[ -z "${ZENCONN_GOMAXPROCS:-}" ] || gmp=("GOMAXPROCS=$ZENCONN_GOMAXPROCS")
		# A binary without client limits (an older build compared with
		# run-compare.sh) gets no limit flags.
		local lims=() help
		help=$("$WORK/zenconn" serve --help 2>&1 || true)
		[[ $help != *-max-conns-per-ip* ]] || lims=("${BENCH_LIMIT_FLAGS[@]}")
		env -u GOMAXPROCS ${gmp[@]+"${gmp[@]}"} taskset -c "$SERVER_CPU" "$WORK/zenconn" serve --addr "127.0.0.1:$port" --workers 0 \
			--access-log off --public "$WORK/public" --data "$WORK/data-$port" ${lims[@]+"${lims[@]}"} ${extra[@]+"${extra[@]}"} 2>"$logf" >/dev/null &
		;;
	baseline)
		GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$WORK/baseline" --addr "127.0.0.1:$port" 2>"$logf" >/dev/null &
		;;
	floor)
		GOMAXPROCS=1 taskset -c "$SERVER_CPU" "$WORK/floor" --addr "127.0.0.1:$port" 2>"$logf" >/dev/null &
		;;
	centrifugo)
		spawn_centrifugo "$port" "$logf"
		ready="serving websocket"
		;;
	*) log "unknown server $name"; exit 1 ;;
	esac
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		if grep -q "$ready" "$logf" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
		sleep 0.1
	done
	log "$name did not start on port $port:"; cat "$logf" >&2; exit 1
}

# spawn_centrifugo PORT LOG: start_server's Centrifugo, in the background
# (its configuration is $WORK/centrifugo-PORT.json).
spawn_centrifugo() {
	local port=$1 logf=$2 conf="$WORK/centrifugo-$1.json"
	local bin=${CENTRIFUGO:-${BENCH_GO_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/zenconn-bench/bin}/centrifugo}
	[ -x "$bin" ] || { log "no Centrifugo at $bin (bash bench/ensure-tools.sh cluster builds it)"; exit 1; }
	cat >"$conf" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $port},
  "log": {"level": "info"},
  "client": {"allow_anonymous_connect_without_token": true},
  "channel": {"without_namespace": {"allow_subscribe_for_anonymous": true, "allow_subscribe_for_client": true,
    "allow_publish_for_anonymous": true, "allow_publish_for_client": true}},
  "usage_stats": {"disabled": true}
}
EOF
	taskset -c "$SERVER_CPU" "$bin" --config "$conf" 2>"$logf" >/dev/null &
}

# ws_target NAME PORT: sets WS_URL and PROTO, the load generator's --url and
# --protocol for the server start_server NAME PORT started.
ws_target() {
	case $1 in
	centrifugo) WS_URL="ws://127.0.0.1:$2/connection/websocket" PROTO=centrifugo ;;
	*) WS_URL="ws://127.0.0.1:$2/ws" PROTO=zenconn ;;
	esac
}

# loopback_ips N: N loopback addresses from 127.0.0.2, none ending in .0
# or .255, comma-separated (the load generator's --source-ips).
loopback_ips() {
	local i out=()
	for ((i = 0; i < $1; i++)); do out+=("127.0.$((i / 250)).$((i % 250 + 2))"); done
	(IFS=,; echo "${out[*]}")
}

# stop_server PID: SIGTERM, then SIGKILL after 5 s.
stop_server() {
	local p=$1 q
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	local keep=()
	for q in "${STARTED_PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
	STARTED_PIDS=("${keep[@]}")
}

# run_load ARGS...: the load generator pinned to LOAD_CPU; its JSON line is
# appended to $WORK/results.jsonl and echoed to stderr.
run_load() {
	local line rc=0
	line=$(taskset -c "$LOAD_CPU" "$WORK/load" "$@") || rc=$?
	if [ -z "$line" ]; then
		log "load generator printed nothing (exit $rc)"; return 1
	fi
	echo "$line" >>"$WORK/results.jsonl"
	echo "$line" >&2
	[ "$rc" = 0 ] || log "load generator exit $rc (result kept, see its errors)"
}

# order ROUND [SERVER...]: the servers (default: zenconn baseline) in the
# given order in odd rounds and reversed in even rounds (ABBA), so slow drift
# on a shared machine does not favour any of them.
order() {
	local round=$1 i
	shift
	local srvs=("$@")
	[ ${#srvs[@]} -gt 0 ] || srvs=(zenconn baseline)
	if [ $((round % 2)) = 1 ]; then
		echo "${srvs[*]}"
	else
		for ((i = ${#srvs[@]} - 1; i >= 0; i--)); do printf '%s ' "${srvs[i]}"; done
		echo
	fi
}

# summarize TARGETS [ARGS...]: medians and targets of every run, as JSON on
# stdout; ARGS go to load summarize (e.g. --baseline NAME).
summarize() {
	local targets=$1
	shift
	"$WORK/load" summarize --targets "$targets" "$@" \
		--meta "nproc=$(nproc)" --meta "kernel=$(uname -r)" --meta "go=$(go version)" \
		--meta "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
		--meta "loadavg_start=$LOADAVG_START" --meta "loadavg_end=$(cat /proc/loadavg)" \
		--meta "server_cpu=$SERVER_CPU" --meta "load_cpu=$LOAD_CPU" \
		--meta "git=$(git rev-parse --short HEAD 2>/dev/null || echo none)" \
		"$WORK/results.jsonl"
}
