#!/usr/bin/env bash
# TLS: ZenConn terminating TLS on its own event loops, beside plain ZenConn,
# nginx terminating TLS in front of the baseline server (bench/baseline), and
# Centrifugo with TLS, in the same run, each pinned to SERVER_CPU (nginx and
# the baseline both on it) with the generator on LOAD_CPU. Per round (ABBA
# order of the servers), each server runs, on one process started for it:
#   idle      - CONNS subscribed connections: the server's RSS before and
#               after, in KiB per connection (load idle);
#   max       - fan-out to SUBS subscribers, one publisher, SIZE-byte
#               publishes as fast as the ack window allows, for DURATION,
#               then up to DRAIN for the last deliveries (load fanout
#               --rate 0): deliveries/s;
#   handshake - HS_CONC clients in a loop over connect, full TLS handshake
#               (no resumption), one GET of the static /index.html, close,
#               for HS_DURATION (load handshake): handshakes/s on one core.
#               nginx serves the file itself here; plain ZenConn's figure is
#               the same loop without TLS (connections/s, for reference).
# Certificates: an ECDSA P-256 test CA and a P-256 leaf for 127.0.0.1 made
# here with openssl; every client verifies the server against that CA.
# The generator's wss:// connections do a real handshake and subscribe
# through a crypto/tls bridge (bench/load/tlsbridge.go); then, for every TLS
# server but Centrifugo, a sample of subscribers (1 in TLS_SAMPLE, at least
# TLS_SAMPLE_MIN) decrypts and checks every delivery and the others count
# them from the sizes of the TLS records they receive, undecrypted
# (load --tls-sample, bench/load/tlscount.go; bench/notes/tls.md).
# nginx runs NGINX_PROCS workers on reuseport sockets, NGINX_CONNS
# connections and NGINX_NOFILE descriptors each (a proxied connection holds
# two, and no process may hold more than 20,000 here).
# Targets (load summarize --targets tls): <= 6 KiB per idle TLS connection;
# TLS fan-out >= 0.6x plain ZenConn's and >= 3x Centrifugo's with TLS;
# handshakes/s >= nginx's.
# Usage: bash bench/run-tls.sh   (env: CONNS SUBS SIZE DURATION DRAIN
#        HS_DURATION HS_CONC ROUNDS PROCS SETTLE TLS_SAMPLE TLS_SAMPLE_MIN
#        NGINX_PROCS NGINX_CONNS NGINX_NOFILE TLS_SERVERS TLS_TESTS
#        BENCH_GO_BIN)
# Needs nginx (bench/ensure-tools.sh) and Centrifugo (bench/ensure-tools.sh
# cluster); a server whose binary is missing is left out with a message.
# Prints one JSON object on stdout; progress on stderr.
# SETTLE: the RSS is read this long after the last connection is up, when
# the servers' runtimes have settled (ZenConn gives the garbage of a
# connection storm back to the OS after 3 s of quiet: internal/memtrim).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONNS:=15000}" "${SUBS:=5000}" "${SIZE:=64}" "${DURATION:=10s}" "${HS_DURATION:=10s}" "${HS_CONC:=64}"
: "${ROUNDS:=3}" "${PROCS:=1}" "${SETTLE:=10s}" "${DRAIN:=30s}" "${TLS_SAMPLE:=50}" "${TLS_SAMPLE_MIN:=20}"
: "${NGINX_PROCS:=4}" "${NGINX_NOFILE:=20000}" "${NGINX_CONNS:=9000}"
: "${TLS_SERVERS:=zenconn-tls zenconn nginx-tls centrifugo-tls}" "${TLS_TESTS:=idle max handshake}"
: "${BENCH_GO_BIN:=${XDG_CACHE_HOME:-$HOME/.cache}/zenconn-bench/bin}"
# shellcheck source=bench/lib.sh
. bench/lib.sh
check_machine
CENTRIFUGO=$BENCH_GO_BIN/centrifugo
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
# A bridged wss:// connection costs the generator three descriptors (one
# once detached; Centrifugo's stay bridged).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# With a lower limit (not root), the idle test spreads its connections over
# more generator processes (each one holds 3 descriptors per connection).
NOFILE=$(ulimit -n)
IDLE_PROCS=$PROCS
if [ "$NOFILE" != unlimited ] && [ $((3 * CONNS / IDLE_PROCS + 1024)) -gt "$NOFILE" ]; then
	IDLE_PROCS=$(((3 * CONNS + NOFILE - 1025) / (NOFILE - 1024)))
	log "descriptor limit $NOFILE: the idle test uses $IDLE_PROCS generator processes"
fi

servers=()
for s in $TLS_SERVERS; do
	case $s in
	nginx-tls) [ -x "$NGINX_BIN" ] || { log "no nginx ($NGINX_BIN): nginx-tls left out (bash bench/ensure-tools.sh)"; continue; } ;;
	centrifugo-tls) [ -x "$CENTRIFUGO" ] || { log "no $CENTRIFUGO: centrifugo-tls left out (bash bench/ensure-tools.sh cluster)"; continue; } ;;
	zenconn-tls | zenconn) ;;
	*) log "unknown server $s (zenconn-tls zenconn nginx-tls centrifugo-tls)"; exit 1 ;;
	esac
	servers+=("$s")
done
[ ${#servers[@]} -gt 0 ] || { log "no server to run"; exit 1; }

# --- certificates -----------------------------------------------------------
make_certs() {
	local d="$WORK/tls"
	mkdir -p "$d"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -sha256 \
		-subj "/CN=zenconn bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>"$d/openssl.log"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
		-subj "/CN=127.0.0.1" -keyout "$d/server.key" -out "$d/server.csr" 2>>"$d/openssl.log"
	printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 -sha256 \
		-extfile "$d/server.ext" -out "$d/server.pem" 2>>"$d/openssl.log"
	chmod 0644 "$d"/*
	CA=$d/ca.pem CERT=$d/server.pem KEY=$d/server.key
}

# --- nginx terminating TLS in front of the baseline ---------------------------
# children PID: the PIDs of PID's children.
children() {
	local t
	for t in /proc/"$1"/task/*/children; do cat "$t" 2>/dev/null || true; done | xargs
}

# nginx_conf PORT BASEPORT: NGINX_PROCS worker processes (all on the one
# CPU the scenario gives a server), each with its own listening socket on
# PORT (reuseport: the kernel spreads the connections evenly over them), so
# that no worker needs more descriptors than a process may have here
# (NGINX_NOFILE, 20,000: a proxied WebSocket holds two, the client's and the
# baseline's; worker_connections counts both). TLS 1.2 and 1.3 with the
# same P-256 certificate, WebSocket upgrades on /ws proxied to the baseline,
# static files from $WORK/public, no access log, everything in $WORK/nginx.
nginx_conf() {
	local port=$1 bport=$2 d="$WORK/nginx"
	mkdir -p "$d/tmp"
	cat <<CONF
# generated by bench/run-tls.sh
worker_processes $NGINX_PROCS;
worker_rlimit_nofile $NGINX_NOFILE;
master_process on;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events {
    worker_connections $NGINX_CONNS;
    multi_accept on;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    upstream baseline {
        server 127.0.0.1:$bport;
    }
    server {
        listen 127.0.0.1:$port ssl reuseport;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $WORK/public;
        location /ws {
            proxy_pass http://baseline;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
        }
        location / {
        }
    }
}
CONF
}

# start_nginx_tls PORT: the baseline on PORT+1000, nginx on PORT, both pinned
# to SERVER_CPU; sets SERVER_PIDS (nginx's master and worker, the baseline).
start_nginx_tls() {
	local port=$1 d="$WORK/nginx" bpid
	start_server baseline $((port + 1000))
	bpid=$SERVER_PID
	mkdir -p "$d"
	nginx_conf "$port" $((port + 1000)) >"$d/nginx.conf"
	"$NGINX_BIN" -t -q -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" 2>"$d/test.log" ||
		{ log "nginx -t failed:"; cat "$d/test.log" >&2; exit 1; }
	taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" 2>>"$d/start.log" >/dev/null &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		if curl -s -o /dev/null --max-time 1 --cacert "$CA" "https://127.0.0.1:$port/index.html"; then
			local w
			w=$(children "$SERVER_PID")
			[ -n "$w" ] || { log "nginx answers but has no worker process"; exit 1; }
			SERVER_PIDS="$SERVER_PID,${w// /,},$bpid"
			NGINX_PID=$SERVER_PID BASE_PID=$bpid NGINX_WORKERS=$w
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "nginx did not start on port $port:"
	cat "$d/start.log" "$d/error.log" >&2 2>/dev/null || true
	exit 1
}

# stop_nginx_tls: nginx (its master stops its workers; a worker still there
# after 5 s is killed by PID), then the baseline.
stop_nginx_tls() {
	local w
	stop_server "$NGINX_PID"
	for w in $NGINX_WORKERS; do
		for _ in $(seq 50); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$w" 2>/dev/null && { log "nginx worker $w outlived its master: killing it"; kill -KILL "$w" 2>/dev/null || true; }
	done
	stop_server "$BASE_PID"
	NGINX_PID= NGINX_WORKERS=
}

# --- Centrifugo with TLS --------------------------------------------------------
# start_centrifugo_tls PORT: one Centrifugo node (memory broker) with TLS on
# PORT, anonymous clients allowed to subscribe and publish, /health on;
# sets SERVER_PID.
start_centrifugo_tls() {
	local port=$1 conf="$WORK/centrifugo-$1.json" logf="$WORK/centrifugo-$1.log"
	cat >"$conf" <<CONF
{
  "http_server": {"address": "127.0.0.1", "port": $port,
    "tls": {"enabled": true, "cert_pem": "$CERT", "key_pem": "$KEY"}},
  "log": {"level": "info"},
  "health": {"enabled": true},
  "client": {"allow_anonymous_connect_without_token": true, "ping_interval": "300s", "pong_timeout": "60s"},
  "channel": {"without_namespace": {"allow_subscribe_for_anonymous": true, "allow_subscribe_for_client": true,
    "allow_publish_for_anonymous": true, "allow_publish_for_client": true}},
  "usage_stats": {"disabled": true}
}
CONF
	taskset -c "$SERVER_CPU" "$CENTRIFUGO" --config "$conf" 2>"$logf" >/dev/null &
	SERVER_PID=$!
	STARTED_PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		curl -s -o /dev/null --max-time 1 --cacert "$CA" "https://127.0.0.1:$port/health" && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "centrifugo did not start on port $port:"
	tail -n 30 "$logf" >&2
	exit 1
}

# Server pings every 5 minutes, not 25 s (ZenConn's and Centrifugo's
# default), in every configuration: a subscriber counted from its TLS
# records (--tls-sample) cannot answer a ping nor tell it from a delivery,
# and no run lasts that long. The baseline and nginx do not ping.
ZENCONN_PINGS="--ping-interval 5m --idle-timeout 10m"

# start_tls_server NAME PORT: sets SERVER_PIDS, WS_URL, HS_URL, PROTO and
# SAMPLE (the load generator's --tls-sample flags: every TLS server but
# Centrifugo, whose frames may carry several pushes each).
start_tls_server() {
	local name=$1 port=$2
	PROTO=zenconn SAMPLE=(--tls-sample "$TLS_SAMPLE" --tls-sample-min "$TLS_SAMPLE_MIN")
	case $name in
	zenconn-tls)
		ZENCONN_EXTRA="--tls-cert $CERT --tls-key $KEY $ZENCONN_PINGS${ZENCONN_EXTRA:+ $ZENCONN_EXTRA}" start_server zenconn "$port"
		SERVER_PIDS=$SERVER_PID WS_URL="wss://127.0.0.1:$port/ws" HS_URL="https://127.0.0.1:$port/index.html"
		;;
	zenconn)
		ZENCONN_EXTRA="$ZENCONN_PINGS${ZENCONN_EXTRA:+ $ZENCONN_EXTRA}" start_server zenconn "$port"
		SERVER_PIDS=$SERVER_PID WS_URL="ws://127.0.0.1:$port/ws" HS_URL="http://127.0.0.1:$port/index.html"
		SAMPLE=()
		;;
	nginx-tls)
		start_nginx_tls "$port"
		WS_URL="wss://127.0.0.1:$port/ws" HS_URL="https://127.0.0.1:$port/index.html"
		;;
	centrifugo-tls)
		start_centrifugo_tls "$port"
		SERVER_PIDS=$SERVER_PID WS_URL="wss://127.0.0.1:$port/connection/websocket" HS_URL="https://127.0.0.1:$port/health"
		PROTO=centrifugo SAMPLE=()
		;;
	esac
}

stop_tls_server() {
	if [ "$1" = nginx-tls ]; then stop_nginx_tls; else stop_server "$SERVER_PID"; fi
}

tls_cleanup() {
	[ -z "${NGINX_PID:-}" ] || stop_nginx_tls
	cleanup
}
trap tls_cleanup EXIT

has_test() { [[ " $TLS_TESTS " == *" $1 "* ]]; }

LOADAVG_START=$(cat /proc/loadavg)
log "loadavg: $LOADAVG_START; servers: ${servers[*]}; tests: $TLS_TESTS"
build_all baseline load
chmod 0755 "$WORK" "$WORK/public" # nginx's worker runs as nobody
make_certs
port=20900
for round in $(seq "$ROUNDS"); do
	for srv in $(order "$round" "${servers[@]}"); do
		port=$((port + 1))
		start_tls_server "$srv" "$port"
		common=(--server "$srv" --protocol "$PROTO" --url "$WS_URL" --server-pids "$SERVER_PIDS" --tls-ca "$CA" --timeout 300s
			${SAMPLE[@]+"${SAMPLE[@]}"})
		if has_test idle; then
			log "round $round: $srv (pids $SERVER_PIDS, port $port): $CONNS idle connections"
			run_load idle --label idle "${common[@]}" --conns "$CONNS" --procs "$IDLE_PROCS" --settle "$SETTLE"
		fi
		if has_test max; then
			log "round $round: $srv: max fan-out to $SUBS subscribers"
			run_load fanout --label max --rate 0 "${common[@]}" --subs "$SUBS" --size "$SIZE" \
				--duration "$DURATION" --drain "$DRAIN" --procs "$PROCS"
		fi
		if has_test handshake; then
			log "round $round: $srv: handshakes ($HS_CONC in flight, $HS_URL)"
			run_load handshake --server "$srv" --url "$HS_URL" --tls-ca "$CA" --conc "$HS_CONC" \
				--duration "$HS_DURATION" --server-pids "$SERVER_PIDS"
		fi
		stop_tls_server "$srv"
	done
done
summarize tls --candidate zenconn-tls --baseline zenconn --competitor centrifugo-tls \
	--meta "nginx=$("$NGINX_BIN" -v 2>&1 | cut -d/ -f2)" --meta "openssl=$(openssl version)" \
	--meta "conns=$CONNS" --meta "subs=$SUBS" --meta "hs_conc=$HS_CONC" \
	--meta "tls_sample=$TLS_SAMPLE" --meta "tls_sample_min=$TLS_SAMPLE_MIN" --meta "nginx_procs=$NGINX_PROCS"
