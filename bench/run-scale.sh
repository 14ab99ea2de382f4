#!/usr/bin/env bash
# Scale: CONNS subscribed WebSocket connections on a node of WORKERS worker
# processes (default 60,000 on 4), spread over PROCS generator processes and
# several loopback source addresses. Reports server RSS per connection summed
# over the agent and its workers, then fan-out deliveries/s to all of them.
# Usage: bash bench/run-scale.sh   (env: CONNS WORKERS PROCS SOURCE_IPS DURATION)
# Prints one JSON object per test on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONNS:=60000}" "${WORKERS:=4}" "${PROCS:=4}" "${DURATION:=10s}"
: "${SOURCE_IPS:=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9}"
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
