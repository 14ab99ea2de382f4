#!/usr/bin/env bash
# run.sh BIN MODE [attackinput flags...]: starts BIN (zenconn serve, one
# process, loopback, a temporary data folder), runs bench/attackinput
# against it with -pid set, prints its JSON, and stops the server.
set -euo pipefail
bin=$1 mode=$2
shift 2
ulimit -n 20000
dir=$(mktemp -d)
key=attack-input-key-0123456789
"$bin" serve --addr 127.0.0.1:0 --workers 0 --data "$dir/data" --public "$(dirname "$0")/../../public" \
	--access-log off --log-level warn --api-key "$key" ${SERVER_FLAGS:-} 2>"$dir/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
	addr=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," 'index($0, p) {print $4; exit}')
	[ -n "$addr" ] && break
	sleep 0.1
done
sleep 1
${ATTACK_BIN:-go run ./bench/attackinput} -mode "$mode" -addr "$addr" -pid "$pid" -key "$key" "$@"
