#!/usr/bin/env bash
# Scale: CONNS subscribed WebSocket connections on a node of WORKERS worker
# processes (default 60,000 on 4), spread over PROCS generator processes and
# several loopback source addresses. Reports server RSS per connection summed
# over the agent and its workers (and their PSS, shared pages once), then
# fan-out deliveries/s to all of them.
# Usage: bash bench/run-scale.sh   (env: CONNS WORKERS PROCS SOURCE_IPS DURATION)
# Prints one JSON object per test on stdout; progress on stderr.
# Unset, WORKERS, PROCS and SOURCE_IPS grow with CONNS: every process (worker
# or generator) stays under an open-file limit of 20,000, and every source
# address holds at most 5,000 connections (the kernel's search for a free
# ephemeral port slows down sharply as one address fills its ~28,000 ports).
# Past ~250,000 connections, a loaded nf_conntrack needs a larger
# nf_conntrack_max (see bench/notes/scale-1m.md).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONNS:=60000}" "${DURATION:=10s}"
: "${WORKERS:=$(((CONNS + 17999) / 18000 > 4 ? (CONNS + 17999) / 18000 : 4))}"
: "${PROCS:=$(((CONNS + 15999) / 16000 > 4 ? (CONNS + 15999) / 16000 : 4))}"
# sourceIPs N: N loopback addresses from 127.0.0.2, none ending in .0 or .255.
sourceIPs() {
	local i out=()
	for ((i = 0; i < $1; i++)); do out+=("127.0.$((i / 250)).$((i % 250 + 2))"); done
	(IFS=,; echo "${out[*]}")
}
: "${SOURCE_IPS:=$(sourceIPs $(((CONNS + 4999) / 5000 > 8 ? (CONNS + 4999) / 5000 : 8)))}"
log() { echo "[scale $(date +%T)] $*" >&2; }

work=$(mktemp -d)
agent=""
cleanup() {
	if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
		kill -TERM "$agent" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$agent" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

log "loadavg: $(cat /proc/loadavg)"
go build -o "$work/zenconn" ./cmd/zenconn
go build -o "$work/load" ./bench/load
mkdir -p "$work/public" "$work/data"
port=$((20400 + RANDOM % 500))
"$work/zenconn" serve --addr "127.0.0.1:$port" --workers "$WORKERS" --access-log off \
	--public "$work/public" --data "$work/data" --max-outbound 64MiB \
	--max-conns-per-ip 1000000 --conn-rate-per-ip 1000000 2>"$work/server.log" &
agent=$!
for _ in $(seq 100); do grep -q 'msg=listening' "$work/server.log" && break; sleep 0.1; done
grep -q 'msg=listening' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
workers=$(pgrep -P "$agent" | paste -sd, -)
log "agent $agent, workers $workers, port $port"

"$work/load" idle --server zenconn --label scale-idle --url "ws://127.0.0.1:$port/ws" \
	--server-pid "$agent" --server-pids "$workers" --conns "$CONNS" --procs "$PROCS" \
	--source-ips "$SOURCE_IPS" --settle 3s --timeout 240s
"$work/load" fanout --server zenconn --label scale-fanout --url "ws://127.0.0.1:$port/ws" \
	--server-pid "$agent" --server-pids "$workers" --subs "$CONNS" --size 64 --rate 0 \
	--duration "$DURATION" --procs "$PROCS" --source-ips "$SOURCE_IPS" --timeout 300s
log "loadavg: $(cat /proc/loadavg)"
