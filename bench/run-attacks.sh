#!/usr/bin/env bash
# run-attacks.sh BIN [BIN...]: the attacks of the Limits section of the
# README, run from outside against each zenconn binary in turn, one JSON
# line each (a binary's figures side by side with another's: pass both).
#   slowloris     2,000 connections trickling a never-ending request head,
#                 --idle-timeout 20s, --max-connections 2000; a healthy
#                 client's connect and round trip meanwhile (attackinput)
#   trickle-ws    1,000 connections each sending all but one byte of a
#                 1 MiB WebSocket message; the server's RSS (attackinput)
#   trickle-body  the same with 1 MiB API bodies, with and without the key
#   flood         4 anonymous publish flooders (--workers 2, default
#                 limits); a healthy client's publish→delivery latency
#   slowsubs      300 subscribers that never read, 8 publishes of 0.93 MiB;
#                 the server's RSS growth
#   audit         refused and allowed 1 MiB publishes (data folder growth),
#                 then large /api/audit pages, one and four at once
# env: FOR (30s, slowloris and trickle run time). Bounded in time (about
# 3 minutes a binary); only loopback addresses; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash bench/run-attacks.sh BIN [BIN...]" >&2; exit 2; }
: "${FOR:=30s}"
ulimit -n 20000
T=$(mktemp -d "${TMPDIR:-/tmp}/zenconn-attacks.XXXXXX")
PIDS=()
finish() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$T"
}
trap finish EXIT
for tool in attackinput flood slowsubs auditattack; do
	go build -o "$T/$tool" "./bench/$tool"
done
key=attack-key-0123456789abcdef

# start BIN FLAGS...: a node on the next loopback port of PORT (workers
# listen in child processes: the port is chosen here); sets PID and ADDR.
PORT=${PORT:-18700}
start() {
	local bin=$1
	shift
	local dir
	dir=$(mktemp -d "$T/node.XXXXXX")
	PORT=$((PORT + 1))
	ADDR=127.0.0.1:$PORT
	"$bin" serve --addr "$ADDR" --data "$dir/data" --public ./public --access-log off \
		--log-level warn --api-key "$key" "$@" 2>"$dir/stderr" &
	PID=$!
	PIDS+=("$PID")
	local up=
	for _ in $(seq 100); do
		if [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; then up=1; break; fi
		sleep 0.1
	done
	[ -n "$up" ] || { echo "run-attacks: $bin did not start: $(cat "$dir/stderr")" >&2; exit 1; }
	sleep 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

# asjson TEXT: TEXT as one line of JSON: compacted if it is JSON, else a
# JSON string (the flood and audit tools print text).
asjson() { jq -ce . <<<"$1" 2>/dev/null | tail -n 1 || jq -Rsc . <<<"$1"; }

# one BIN NAME: prints {"binary":…,"attack":NAME,…} from the tool's JSON.
one() {
	local bin=$1 name=$2 out
	case $name in
	slowloris)
		start "$bin" --workers 0 --idle-timeout 20s --ping-interval 10s --max-connections 2000
		out=$("$T/attackinput" -mode slowloris -addr "$ADDR" -conns 2000 -for "$FOR")
		;;
	trickle-ws)
		start "$bin" --workers 0
		out=$("$T/attackinput" -mode trickle-ws -addr "$ADDR" -pid "$PID" -conns 1000 -for "$FOR")
		;;
	trickle-body-key | trickle-body-nokey)
		start "$bin" --workers 0
		local k=
		[ "$name" = trickle-body-key ] && k=$key
		out=$("$T/attackinput" -mode trickle-body -addr "$ADDR" -pid "$PID" -conns 1000 -for "$FOR" -key "$k")
		;;
	flood)
		start "$bin" --workers 2
		out=$("$T/flood" -addr "$ADDR" -flooders 4 -duration 10s)
		;;
	slowsubs)
		start "$bin" --workers 0
		out=$("$T/slowsubs" -addr "$ADDR" -pid "$PID")
		;;
	audit)
		out=$("$T/auditattack" -bin "$bin" -secs 3)
		printf '{"binary":"%s","attack":"%s","result":%s}\n' "$bin" "$name" "$(asjson "$out")"
		return
		;;
	esac
	stop
	printf '{"binary":"%s","attack":"%s","result":%s}\n' "$bin" "$name" "$(asjson "$out")"
}

for name in slowloris trickle-ws trickle-body-key trickle-body-nokey flood slowsubs audit; do
	for bin in "$@"; do
		echo "[attacks $(date +%H:%M:%S)] $name: $bin" >&2
		one "$bin" "$name" || echo "{\"binary\":\"$bin\",\"attack\":\"$name\",\"error\":true}"
	done
done
