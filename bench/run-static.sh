#!/usr/bin/env bash
# Static files: ZenConn against nginx serving the same folder, side by side.
# Per round (ABBA: ZenConn first in odd rounds, nginx first in even ones),
# each server is started pinned to SERVER_CPU and, for each file (1 KiB and
# 100 KiB), wrk pinned to LOAD_CPU warms it up for WARMUP, then measures for
# DURATION with CONNS keep-alive connections:
#   wrk -t THREADS -c CONNS -d DURATION --latency -s bench/static/report.lua URL
# Requests carry no Accept-Encoding, so both servers send the file as it is.
# Targets: ZenConn's median requests/s >= 1.0 x nginx's for 1 KiB and
# >= 0.9 x for 100 KiB, with one nginx worker per ZenConn event loop.
# Usage: bash bench/run-static.sh  (env: DURATION CONNS THREADS ROUNDS WARMUP
#        LOOPS NGINX_SENDFILE NGINX_EXTRA ZENCONN_EXTRA MAX_OTHER PROFILE_DIR
#        SERVER_CPU LOAD_CPU KEEP_WORK; see bench/README.md)
# Installs wrk and nginx from Debian's packages when missing
# (bench/ensure-tools.sh). Prints one JSON object on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DURATION:=10s}" "${CONNS:=64}" "${THREADS:=1}" "${ROUNDS:=2}" "${WARMUP:=1s}" "${LOOPS:=1}"
: "${NGINX_SENDFILE:=on}" "${NGINX_EXTRA:=}" "${MAX_OTHER:=0}" "${PROFILE_DIR:=}"
SERVERS=(zenconn nginx)

bash bench/ensure-tools.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
command -v curl >/dev/null || { log "curl is required (apt-get install curl)"; exit 1; }
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
REPO=$PWD
LUA="$REPO/bench/static/report.lua"

# seconds DURATION: whole seconds in a wrk duration (5, 5s, 2m, 1h).
seconds() {
	case $1 in
	*h) echo $((${1%h} * 3600)) ;;
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}
DURATION_S=$(seconds "$DURATION")
[ "$DURATION_S" -ge 1 ] 2>/dev/null || { log "DURATION must be at least 1s (got $DURATION)"; exit 1; }
PROFILE_SECONDS=$((DURATION_S > 2 ? DURATION_S - 1 : 1))

# Stop whatever this script started, nginx's workers included (they are
# children of the nginx master, which SIGTERM takes down with them; the
# workers are killed by PID only if the master could not do it), then the
# helpers of lib.sh (servers in STARTED_PIDS, the work folder).
NGINX_WORKERS=() # "pid:starttime" of the workers of the nginx running now
PROF_PID=        # the curl fetching a profile, while it runs
static_cleanup() {
	[ -z "$PROF_PID" ] || kill -TERM "$PROF_PID" 2>/dev/null || true
	[ -z "${NGINX_PID:-}" ] || stop_nginx
	cleanup
}
trap static_cleanup EXIT

# starttime PID: field 22 of /proc/PID/stat (to tell a reused PID apart).
starttime() {
	local s f
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	read -r -a f <<<"$s"
	echo "${f[19]}"
}

# children PID: the PIDs of PID's children.
children() {
	local t
	if [ -r "/proc/$1/task/$1/children" ]; then
		for t in /proc/"$1"/task/*/children; do cat "$t" 2>/dev/null || true; done | xargs
	else
		pgrep -P "$1" | xargs || true
	fi
}

# proc_ticks PID...: CPU ticks (user + system, plus those of reaped
# children) of the processes, summed.
proc_ticks() {
	local sum=0 p s f
	for p in "$@"; do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		read -r -a f <<<"$s"
		sum=$((sum + f[11] + f[12] + f[13] + f[14]))
	done
	echo "$sum"
}

# procstat_json: the "cpu" line of /proc/stat and those of SERVER_CPU and
# LOAD_CPU, as JSON arrays of jiffies ([] for a CPU list such as 1-2).
procstat_json() {
	awk -v s="cpu$SERVER_CPU" -v l="cpu$LOAD_CPU" '
		function arr(   i, o) { o = $2; for (i = 3; i <= NF; i++) o = o "," $i; return "[" o "]" }
		$1 == "cpu" { a = arr() }
		$1 == s { b = arr() }
		$1 == l { c = arr() }
		END { printf "{\"all\":%s,\"server_core\":%s,\"load_core\":%s}", a ? a : "[]", b ? b : "[]", c ? c : "[]" }' /proc/stat
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=20800
# next_port: sets PORT to the next port with nothing listening on it (nor
# on PORT+1000 and PORT+1001, the --pprof ports when profiling).
next_port() {
	for _ in $(seq 200); do
		PORT=$((PORT + 1))
		if ! port_busy "$PORT" && ! port_busy $((PORT + 1000)) && ! port_busy $((PORT + 1001)); then
			return 0
		fi
	done
	log "no free port found"
	exit 1
}

# --- the files -----------------------------------------------------------
# Realistic text, not random bytes: a 1 KiB stylesheet and a 100 KiB script.
# Neither server compresses here (no Accept-Encoding in the requests), so the
# content matters only for the Content-Type.
PUBLIC="$WORK/public"
mkdir -p "$PUBLIC"
chmod 0755 "$WORK" "$PUBLIC" # nginx's worker runs as nobody
FILES=(1k 100k)
declare -A FILE_PATH=([1k]=/1k.css [100k]=/100k.js) FILE_SIZE=([1k]=1024 [100k]=102400)
awk 'BEGIN { for (i = 1; i <= 40; i++) printf ".card-%d { margin: 0 %dpx; padding: 4px 8px; color: #%06x; }\n", i, i % 16, i * 40503 % 16777216 }' \
	>"$PUBLIC${FILE_PATH[1k]}"
awk 'BEGIN { for (i = 1; i <= 3000; i++) printf "export function step%d(state, event) { return { ...state, count: state.count + %d, last: event.type }; }\n", i, i % 97 }' \
	>"$PUBLIC${FILE_PATH[100k]}"
for f in "${FILES[@]}"; do
	got=$(stat -c %s "$PUBLIC${FILE_PATH[$f]}")
	[ "$got" -ge "${FILE_SIZE[$f]}" ] || { log "file $f: $got bytes generated, want ${FILE_SIZE[$f]}"; exit 1; }
	truncate -s "${FILE_SIZE[$f]}" "$PUBLIC${FILE_PATH[$f]}"
done
chmod 0644 "$PUBLIC"/*

# --- the servers ---------------------------------------------------------
log "building zenconn and the summarizer into $WORK"
go build -o "$WORK/zenconn" ./cmd/zenconn
go build -o "$WORK/static-summary" ./bench/static

# start_zenconn PORT: one process, LOOPS event loops (and, with no
# GOMAXPROCS in its environment, one Go processor more: cmd/zenconn's
# spareProc), pinned to SERVER_CPU; sets SERVER_PID once it logs that it
# listens.
start_zenconn() {
	local port=$1 logf="$WORK/zenconn-$1.log" extra=() more
	[ -z "$PROFILE_DIR" ] || extra+=(--pprof "127.0.0.1:$((port + 1000))")
	if [ -n "${ZENCONN_EXTRA:-}" ]; then
		read -r -a more <<<"$ZENCONN_EXTRA"
		extra+=("${more[@]}")
	fi
	env -u GOMAXPROCS taskset -c "$SERVER_CPU" "$WORK/zenconn" serve --addr "127.0.0.1:$port" --workers 0 \
		--loops "$LOOPS" --access-log off --public "$PUBLIC" --data "$WORK/data-$port" \
		"${BENCH_LIMIT_FLAGS[@]}" ${extra[@]+"${extra[@]}"} >/dev/null 2>"$logf" &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 150); do
		grep -q "msg=listening addr=127.0.0.1:$port" "$logf" 2>/dev/null && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "zenconn did not start on port $port:"
	cat "$logf" >&2
	exit 1
}

# nginx_conf PORT: a production-like configuration (Debian's defaults where
# they matter: sendfile on, tcp_nopush on, tcp_nodelay on, keepalive_timeout
# 65, keepalive_requests 1000 (nginx's default), no open_file_cache), one
# worker per ZenConn event loop, no access log, everything in $WORK/nginx.
nginx_conf() {
	local port=$1 d="$WORK/nginx"
	mkdir -p "$d/tmp"
	cat <<EOF
# generated by bench/run-static.sh
worker_processes $LOOPS;
master_process on;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events {
    worker_connections 4096;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile $NGINX_SENDFILE;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    $NGINX_EXTRA
    server {
        listen 127.0.0.1:$port;
        root $PUBLIC;
        location / {
        }
    }
}
EOF
}

# start_nginx PORT: nginx with that configuration, master and workers pinned
# to SERVER_CPU; sets SERVER_PID (the master) and NGINX_WORKERS once it
# answers.
# nginx_test_conf PORT: writes $WORK/nginx/nginx.conf for PORT and checks
# it with nginx -t.
nginx_test_conf() {
	local d="$WORK/nginx"
	mkdir -p "$d"
	nginx_conf "$1" >"$d/nginx.conf"
	"$NGINX_BIN" -t -q -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" 2>"$d/test.log" ||
		{ log "nginx -t failed:"; cat "$d/test.log" >&2; exit 1; }
}

start_nginx() {
	local port=$1 d="$WORK/nginx" w
	nginx_test_conf "$port"
	taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" 2>>"$d/start.log" >/dev/null &
	SERVER_PID=$!
	NGINX_PID=$SERVER_PID
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port${FILE_PATH[1k]}"; then
			NGINX_WORKERS=()
			for w in $(children "$SERVER_PID"); do
				NGINX_WORKERS+=("$w:$(starttime "$w")")
			done
			[ ${#NGINX_WORKERS[@]} -gt 0 ] || { log "nginx answers but has no worker process"; exit 1; }
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "nginx did not start on port $port:"
	cat "$d/start.log" "$d/error.log" >&2 2>/dev/null || true
	exit 1
}

# stop_nginx: SIGTERM to the master (a fast shutdown: it stops its workers
# and exits), SIGKILL after 5 s; then any worker still there, by PID, only
# if it is the same process (same start time).
stop_nginx() {
	local p=$NGINX_PID w pid st
	NGINX_PID=
	stop_server "$p"
	for w in ${NGINX_WORKERS[@]+"${NGINX_WORKERS[@]}"}; do
		pid=${w%%:*} st=${w#*:}
		for _ in $(seq 50); do [ "$(starttime "$pid" || true)" = "$st" ] || break; sleep 0.1; done
		if [ "$(starttime "$pid" || true)" = "$st" ]; then
			log "nginx worker $pid outlived its master: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	NGINX_WORKERS=()
}

# check_files SERVER PORT: each file comes back whole, 200, not encoded.
check_files() {
	local srv=$1 port=$2 f code
	for f in "${FILES[@]}"; do
		code=$(curl -sS --max-time 5 -o "$WORK/check.body" -D "$WORK/check.head" -w '%{http_code}' \
			"http://127.0.0.1:$port${FILE_PATH[$f]}") || code=fail
		if [ "$code" != 200 ] || ! cmp -s "$WORK/check.body" "$PUBLIC${FILE_PATH[$f]}" ||
			grep -qi '^content-encoding:' "$WORK/check.head"; then
			log "$srv: GET ${FILE_PATH[$f]} answered $code, or not the file as it is:"
			cat "$WORK/check.head" >&2
			exit 1
		fi
		[ -n "${CHECKED[$srv]:-}" ] || log "$srv ${FILE_PATH[$f]}: $(tr -d '\r' <"$WORK/check.head" | grep -v '^$' | paste -sd '|')"
	done
	CHECKED[$srv]=1
}
declare -A CHECKED=()

# --- the runs --------------------------------------------------------------
# measure SERVER PID FILE ROUND PORT: warm-up, then the measured wrk run; its
# raw line goes to $WORK/runs.jsonl.
measure() {
	local srv=$1 pid=$2 f=$3 round=$4 port=$5
	local url="http://127.0.0.1:$port${FILE_PATH[$f]}" base="$WORK/wrk-$f-$srv-r$round"
	local pids ticks0 ticks1 st0 st1 t0 t1 rc=0 cpu wrkjson prof= profiled=false
	if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
		taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >"$base.warmup.txt" 2>&1 ||
			log "warm-up: wrk exit $?"
	fi
	if [ -n "$PROFILE_DIR" ] && [ "$srv" = zenconn ]; then
		prof="$PROFILE_DIR/zenconn-$f-r$round.pprof"
		profiled=true
		(sleep 0.5 && exec curl -s --max-time $((PROFILE_SECONDS + 30)) -o "$prof" \
			"http://127.0.0.1:$((port + 1000))/debug/pprof/profile?seconds=$PROFILE_SECONDS") &
		PROF_PID=$!
	fi
	read -r -a pids <<<"$pid $(children "$pid")"
	ticks0=$(proc_ticks "${pids[@]}")
	st0=$(procstat_json)
	t0=$(date +%s%N)
	local TIMEFORMAT='%3U %3S'
	{ time taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "$url" \
		>"$base.txt" 2>"$base.err"; } 2>"$base.time" || rc=$?
	t1=$(date +%s%N)
	st1=$(procstat_json)
	read -r -a pids <<<"$pid $(children "$pid")"
	ticks1=$(proc_ticks "${pids[@]}")
	read -r -a cpu <<<"$(tail -n1 "$base.time" 2>/dev/null) 0 0"
	[[ ${cpu[0]} =~ ^[0-9.]+$ && ${cpu[1]} =~ ^[0-9.]+$ ]] || cpu=(0 0)
	wrkjson=$(sed -n 's/^WRKJSON //p' "$base.txt" | tail -n1)
	[ -n "$wrkjson" ] || { wrkjson=null; log "wrk gave no result (exit $rc):"; cat "$base.txt" "$base.err" >&2; }
	printf '{"server":"%s","file":"%s","path":"%s","size_bytes":%d,"round":%d,"port":%d,"conns":%d,"threads":%d,"profiled":%s,"wall_ns":%d,"wrk":%s,"wrk_exit":%d,"wrk_cpu_s":{"user":%s,"sys":%s},"server_ticks":{"before":%d,"after":%d},"clk_tck":%d,"procstat":{"before":%s,"after":%s}}\n' \
		"$srv" "$f" "${FILE_PATH[$f]}" "${FILE_SIZE[$f]}" "$round" "$port" "$CONNS" "$THREADS" "$profiled" \
		$((t1 - t0)) "$wrkjson" "$rc" "${cpu[0]}" "${cpu[1]}" "$ticks0" "$ticks1" "$(getconf CLK_TCK)" "$st0" "$st1" \
		>>"$WORK/runs.jsonl"
	log "round $round: $srv $f: $(awk '/^Requests\/sec:/ { r = $2 } / 99%/ { p = $2 } END { printf "%s req/s, p99 %s", r, p }' "$base.txt"), server CPU $(awk -v a="$ticks0" -v b="$ticks1" -v t="$(getconf CLK_TCK)" -v w=$((t1 - t0)) 'BEGIN { printf "%.2f", (b - a) / t / (w / 1e9) }'), wrk CPU $(awk -v u="${cpu[0]}" -v s="${cpu[1]}" -v w=$((t1 - t0)) 'BEGIN { printf "%.2f", (u + s) / (w / 1e9) }')"
	if [ -n "$PROF_PID" ]; then
		wait "$PROF_PID" || log "profile: curl exit $?"
		PROF_PID=
		if [ -s "$prof" ]; then
			go tool pprof -top -nodecount=30 "$WORK/zenconn" "$prof" 2>/dev/null >"${prof%.pprof}.top.txt" || true
			log "profile of zenconn ($f, round $round): $prof"
			head -n 40 "${prof%.pprof}.top.txt" >&2
		fi
	fi
}

# order ROUND: the servers, reversed in even rounds (ABBA).
order() {
	local i
	if [ $(($1 % 2)) = 1 ]; then
		echo "${SERVERS[*]}"
	else
		for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do printf '%s ' "${SERVERS[i]}"; done
		echo
	fi
}

nginx_test_conf "$PORT" # fail before any run on a bad NGINX_EXTRA
[ -z "$PROFILE_DIR" ] || { mkdir -p "$PROFILE_DIR" && PROFILE_DIR=$(cd "$PROFILE_DIR" && pwd); }
LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; wrk -t$THREADS -c$CONNS -d$DURATION (warm-up $WARMUP), $ROUNDS round(s), server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
: >"$WORK/runs.jsonl"
for round in $(seq "$ROUNDS"); do
	for srv in $(order "$round"); do
		next_port
		case $srv in
		zenconn) start_zenconn "$PORT" ;;
		nginx) start_nginx "$PORT" ;;
		esac
		log "round $round: $srv (pid $SERVER_PID, port $PORT)"
		check_files "$srv" "$PORT"
		for f in "${FILES[@]}"; do
			measure "$srv" "$SERVER_PID" "$f" "$round" "$PORT"
		done
		if [ "$srv" = nginx ]; then stop_nginx; else stop_server "$SERVER_PID"; fi
	done
done

"$WORK/static-summary" --candidate zenconn --baseline nginx --target 1k=1.0 --target 100k=0.9 \
	--max-other "$MAX_OTHER" \
	--meta "nproc=$(nproc)" --meta "kernel=$(uname -r)" --meta "go=$(go version)" \
	--meta "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
	--meta "loadavg_start=$LOADAVG_START" --meta "loadavg_end=$(cat /proc/loadavg)" \
	--meta "server_cpu=$SERVER_CPU" --meta "load_cpu=$LOAD_CPU" \
	--meta "git=$(git rev-parse --short HEAD 2>/dev/null || echo none)" \
	--meta "wrk=$(wrk --version 2>&1 | head -n1 | awk '{ print $1, $2 }')" \
	--meta "wrk_command=wrk -t$THREADS -c$CONNS -d$DURATION --latency -s bench/static/report.lua URL (warm-up: $WARMUP, uncounted)" \
	--meta "nginx=$("$NGINX_BIN" -v 2>&1 | head -n1)" \
	--meta "nginx_conf=$(nginx_conf PORT)" \
	--meta "zenconn_command=zenconn serve --workers 0 --loops $LOOPS --access-log off --public DIR --data DIR ${ZENCONN_EXTRA:-}${PROFILE_DIR:+ --pprof 127.0.0.1:PORT (profiled)}" \
	--meta "encoding=identity: wrk sends no Accept-Encoding, so neither server compresses" \
	--meta "files=1k.css: 1024 bytes of CSS rules; 100k.js: 102400 bytes of JavaScript functions" \
	--meta "rounds=$ROUNDS" --meta "duration=$DURATION" --meta "conns=$CONNS" --meta "loops=$LOOPS" \
	"$WORK/runs.jsonl"
