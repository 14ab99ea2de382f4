#!/usr/bin/env bash
# Installs the tools the benchmarks compare ZenConn with, when they are
# missing. Idempotent: does nothing for a tool already there.
#
#   static   wrk (load generator) and nginx (the baseline) of
#            bench/run-static.sh, from Debian's packages (the default when
#            no argument is given)
#   cluster  nats-server (github.com/nats-io/nats-server/v2@v2.15.3) and
#            Centrifugo (github.com/centrifugal/centrifugo/v6@v6.9.1) of
#            bench/run-cluster.sh, built from their Go modules with
#            `go install` into BENCH_GO_BIN (default
#            ${XDG_CACHE_HOME:-~/.cache}/zenconn-bench/bin). A binary there
#            is kept when `go version -m` shows it was built from that
#            module version. Building Centrifugo takes about 6 minutes on
#            two cores the first time (about 2 with a warm module cache).
#
# nginx is installed without being started: the package's post-install
# script asks invoke-rc.d (or deb-systemd-invoke) to start the nginx
# service, and both obey /usr/sbin/policy-rc.d; while installing, this
# script puts one there that forbids every action (exit 101) unless one is
# already in place, and removes its own afterwards. If an nginx service is
# running afterwards all the same (one this script did not find running
# before it), it is stopped through the package's own init script, by the
# PID in /run/nginx.pid. The benchmark runs its own nginx with its own
# configuration on a loopback port.
#
# Usage: bash bench/ensure-tools.sh [static] [cluster]
#        (static: as root, or with passwordless sudo; cluster: Go and the
#        module proxy)
set -euo pipefail

log() { printf '[ensure-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

NATS_SERVER_MODULE=github.com/nats-io/nats-server/v2
NATS_SERVER_VERSION=v2.15.3
CENTRIFUGO_MODULE=github.com/centrifugal/centrifugo/v6
CENTRIFUGO_VERSION=v6.9.1
: "${BENCH_GO_BIN:=${XDG_CACHE_HOME:-$HOME/.cache}/zenconn-bench/bin}"

# built_from BIN MODULE: the version of MODULE BIN was built from ("" when
# BIN is missing or was not built from it).
built_from() {
	[ -x "$1" ] || return 0
	go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3; exit }'
}

# go_tool NAME MODULE VERSION [LDFLAGS]: BENCH_GO_BIN/NAME built from
# MODULE@VERSION, unless it is there already.
go_tool() {
	local name=$1 mod=$2 ver=$3 ldflags=${4:-} bin="$BENCH_GO_BIN/$1" have
	have=$(built_from "$bin" "$mod")
	if [ "$have" = "$ver" ]; then
		log "ok: $bin ($mod $ver)"
		return 0
	fi
	command -v go >/dev/null 2>&1 || die "go not found: cannot build $name"
	mkdir -p "$BENCH_GO_BIN"
	log "building $name: go install $mod@$ver into $BENCH_GO_BIN${have:+ (found $have)}"
	# From a neutral folder, so that no go.mod or go.work applies.
	(cd / && GOBIN=$BENCH_GO_BIN GOFLAGS=-buildvcs=false GOWORK=off go install ${ldflags:+-ldflags "$ldflags"} "$mod@$ver") >&2 ||
		die "go install $mod@$ver failed"
	have=$(built_from "$bin" "$mod")
	[ "$have" = "$ver" ] || die "$bin: built from ${have:-nothing known}, not $mod $ver"
	log "ok: $bin ($mod $ver)"
}

ensure_cluster() {
	go_tool nats-server "$NATS_SERVER_MODULE" "$NATS_SERVER_VERSION"
	go_tool centrifugo "$CENTRIFUGO_MODULE" "$CENTRIFUGO_VERSION" \
		"-X $CENTRIFUGO_MODULE/internal/build.Version=${CENTRIFUGO_VERSION#v}"
}

ensure_static() {
	have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

	missing=()
	command -v wrk >/dev/null 2>&1 || missing+=(wrk)
	have_nginx || missing+=(nginx)
	if [ ${#missing[@]} = 0 ]; then
		return 0
	fi

	log "installing ${missing[*]} from Debian's packages"
	command -v apt-get >/dev/null 2>&1 ||
		die "apt-get not found: install ${missing[*]} by hand (wrk 4.x, nginx 1.18 or later)"
	SUDO=()
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null ||
			die "need root (or passwordless sudo) to install ${missing[*]} with apt-get"
		SUDO=(sudo -n)
	fi

	# A service already running before the install is someone else's: never touch it.
	service_pid() {
		local p
		p=$(cat /run/nginx.pid 2>/dev/null || true)
		if [ -n "$p" ] && [ -d "/proc/$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = nginx ]; then
			echo "$p"
		fi
	}
	before=$(service_pid)

	POLICY=/usr/sbin/policy-rc.d
	own_policy=
	restore_policy() {
		if [ -n "$own_policy" ]; then
			"${SUDO[@]}" rm -f "$POLICY" || log "warning: could not remove $POLICY"
		fi
	}
	trap restore_policy EXIT
	if [ ! -e "$POLICY" ]; then
		printf '#!/bin/sh\n# bench/ensure-tools.sh: no service starts while it installs packages\nexit 101\n' |
			"${SUDO[@]}" tee "$POLICY" >/dev/null
		"${SUDO[@]}" chmod 0755 "$POLICY"
		own_policy=1
	fi

	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	"${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update >&2 ||
		die "apt-get update failed (no network to Debian's mirrors?)"
	"${SUDO[@]}" apt-get install "${apt_opts[@]}" "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"

	restore_policy
	own_policy=
	trap - EXIT

	after=$(service_pid)
	if [ -n "$after" ] && [ "$after" != "$before" ]; then
		log "the nginx package started its service (pid $after): stopping it"
		if [ -d /run/systemd/system ]; then
			"${SUDO[@]}" systemctl stop nginx || true
			"${SUDO[@]}" systemctl disable nginx >/dev/null 2>&1 || true
		elif [ -x /etc/init.d/nginx ]; then
			"${SUDO[@]}" /etc/init.d/nginx stop >&2 || true
		fi
		if [ -n "$(service_pid)" ]; then
			log "warning: the nginx service (pid $after) is still running; it does not disturb the benchmark (loopback ports of its own), but stop it if you do not want it"
		fi
	fi

	command -v wrk >/dev/null 2>&1 || die "wrk still missing after apt-get install"
	have_nginx || die "nginx still missing after apt-get install"
	log "ok: $(wrk --version 2>&1 | head -n1 | cut -c1-60); $( (nginx -v || /usr/sbin/nginx -v) 2>&1 | head -n1)"
}

[ $# -gt 0 ] || set -- static
for what in "$@"; do
	case $what in
	static) ensure_static ;;
	cluster) ensure_cluster ;;
	*) die "unknown tool set $what (static, cluster)" ;;
	esac
done
