#!/usr/bin/env bash
# Builds the image and brings docker-compose.yml up for real, then runs the
# cross-node probe (e2e/compose_test.go) against the published ports
# 127.0.0.1:8080-8082, and takes everything down again (down -v), whatever
# happens. Run by `make test`.
#
# The engine is podman, driven by Debian's docker-compose (v1) through
# podman's Docker API (`podman system service`), with the settings that
# work on these machines: runc as the runtime and no default ulimits
# (setrlimit is not permitted), in a containers.conf of its own named by
# CONTAINERS_CONF. Base images are pulled; when no registry answers, they
# are seeded locally under the names the Dockerfile and the compose file
# use (golang:1.26-bookworm from this machine's Go toolchain, nats:2.11
# from the nats-server module in go.mod), and the output says so.
#
# Environment: ZENCONN_COMPOSE_KEEP_IMAGES=0 removes the images built here
# at the end (by default they stay, as a cache for the next run).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

say() { echo "test-compose: $*" >&2; }
fail() {
	say "FAIL: $*"
	exit 1
}

GO_IMAGE=docker.io/library/golang:1.26-bookworm
NATS_IMAGE=docker.io/library/nats:2.11
PROJECT=zenconne2e
PORTS=(8080 8081 8082)
TLS_PORT=8443

bash scripts/ensure-podman.sh || fail "podman, runc and docker-compose are needed (scripts/ensure-podman.sh)"

for p in "${PORTS[@]}" "$TLS_PORT"; do
	if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
		fail "port $p is in use on this machine (the compose file publishes 8080-8082, and 8443 with the tls profile): $(ss -Htlnp "sport = :$p" | head -1)"
	fi
done

work=$(mktemp -d /tmp/zenconn-compose.XXXXXX)
chmod 755 "$work"
export CONTAINERS_CONF="$work/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
# exec sessions (docker-compose exec) are cleaned up after 5 s, not 5 min,
# so that nothing of the test outlives it for long.
exit_command_delay = 5
EOF
sock="$work/podman.sock"
export DOCKER_HOST="unix://$sock"
cat >"$work/test.env" <<EOF
ZENCONN_JWT_SECRET=$(head -c 32 /dev/urandom | base64)
ZENCONN_API_KEY=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
ZENCONN_VERSION=$(git describe --always --dirty 2>/dev/null || echo devel)
ZENCONN_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
ZENCONN_TLS_DIR=$work/tls
ZENCONN_TLS_PORT=$TLS_PORT
EOF
# The tls profile's certificate: self-signed for localhost, readable by
# the containers' user.
mkdir -p "$work/tls"
timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null ||
	fail "openssl could not make the tls profile's certificate"
chmod 755 "$work/tls"
chmod 644 "$work/tls/key.pem" "$work/tls/cert.pem"

compose=(timeout 900 docker-compose -p "$PROJECT" --env-file "$work/test.env" -f "$root/docker-compose.yml" --profile tls)
service_pid=""

cleanup() {
	local code=$?
	set +e
	trap - EXIT INT TERM
	if [ -n "$service_pid" ]; then
		if [ $code -ne 0 ]; then
			say "logs of the failed run:"
			timeout 60 "${compose[@]:2}" logs --no-color --tail 60 >&2
		fi
		say "down -v"
		timeout 120 "${compose[@]:2}" down -v --remove-orphans >/dev/null 2>&1 ||
			say "docker-compose down failed; removing the project's containers with podman"
		# Whatever down left behind (a compose that died half-way).
		local ids
		ids=$(timeout 30 podman ps -aq --filter "label=com.docker.compose.project=$PROJECT")
		[ -n "$ids" ] && timeout 60 podman rm -f $ids >/dev/null
		ids=$(timeout 30 podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
		[ -n "$ids" ] && timeout 60 podman volume rm -f $ids >/dev/null
		ids=$(timeout 30 podman network ls -q --filter "label=com.docker.compose.project=$PROJECT")
		[ -n "$ids" ] && timeout 60 podman network rm -f $ids >/dev/null
		if [ "${ZENCONN_COMPOSE_KEEP_IMAGES:-1}" = 0 ]; then
			timeout 60 podman rmi -f zenconn:local >/dev/null
		fi
		kill "$service_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$service_pid" 2>/dev/null
		wait "$service_pid" 2>/dev/null
	fi
	rm -rf "$work"
	say "finished in $(($(date +%s) - start)) s (exit $code)"
	exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an earlier run that was killed before its cleanup.
for id in $(timeout 30 podman ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
	say "removing a leftover container $id of an earlier run"
	timeout 60 podman rm -f "$id" >/dev/null || true
done

podman system service --time=0 "unix://$sock" >"$work/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do
	[ -S "$sock" ] && timeout 5 podman --url "unix://$sock" version >/dev/null 2>&1 && break
	kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; fail "podman system service exited"; }
	sleep 0.2
done
[ -S "$sock" ] || fail "podman system service did not answer on $sock within 20 s"
say "podman system service (pid $service_pid) on $sock"

# seed_go_image makes $GO_IMAGE from this machine's Go toolchain: GOROOT at
# /usr/local/go, the CA bundle, and a shell with mkdir for the Dockerfile's
# RUN lines, with the environment the official image sets.
seed_go_image() {
	local goroot rootfs tarball
	goroot=$(go env GOROOT)
	rootfs="$work/go-rootfs"
	tarball="$work/go-image.tar"
	mkdir -p "$rootfs"/{bin,etc/ssl/certs,tmp,root,go/bin}
	chmod 1777 "$rootfs/tmp"
	cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
	echo 'root:x:0:' >"$rootfs/etc/group"
	cp -L /bin/dash "$rootfs/bin/sh"
	cp -L /bin/mkdir "$rootfs/bin/mkdir"
	local lib
	for lib in $(ldd /bin/dash /bin/mkdir | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
		mkdir -p "$rootfs$(dirname "$lib")"
		cp -L "$lib" "$rootfs$lib"
	done
	tar -C "$(dirname "$goroot")" -cf "$tarball" --exclude="$(basename "$goroot")/test" \
		--transform "s,^$(basename "$goroot"),usr/local/go," "$(basename "$goroot")"
	tar -C "$rootfs" -rf "$tarball" .
	timeout 300 podman import \
		--change 'ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV GOPATH=/go' --change 'ENV GOTOOLCHAIN=local' --change 'ENV HOME=/root' \
		--change 'WORKDIR /go' --change 'CMD ["/bin/sh"]' \
		--change "LABEL org.zenconn.seeded=$(go env GOVERSION)" \
		"$tarball" "$GO_IMAGE" >"$work/import.log" 2>&1 || { cat "$work/import.log" >&2; fail "podman import of $GO_IMAGE failed"; }
	rm -rf "$rootfs" "$tarball"
}

# seed_nats_image makes $NATS_IMAGE from the nats-server module at the
# version in go.mod: a static /nats-server with the official image's
# entrypoint, configuration file and ports.
seed_nats_image() {
	local rootfs="$work/nats-rootfs"
	mkdir -p "$rootfs"
	CGO_ENABLED=0 timeout 600 go build -trimpath -o "$rootfs/nats-server" github.com/nats-io/nats-server/v2
	printf 'port: 4222\nmonitor_port: 8222\n' >"$rootfs/nats-server.conf"
	tar -C "$rootfs" -cf "$work/nats-image.tar" .
	timeout 120 podman import \
		--change 'ENTRYPOINT ["/nats-server"]' --change 'CMD ["--config", "nats-server.conf"]' \
		--change 'EXPOSE 4222' --change 'EXPOSE 6222' --change 'EXPOSE 8222' \
		--change "LABEL org.zenconn.seeded=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)" \
		"$work/nats-image.tar" "$NATS_IMAGE" >"$work/import.log" 2>&1 || { cat "$work/import.log" >&2; fail "podman import of $NATS_IMAGE failed"; }
	rm -rf "$rootfs" "$work/nats-image.tar"
}

# ensure_image pulls $1 when it is missing, and seeds it with $2 when no
# registry answers.
ensure_image() {
	local image=$1 seed=$2 t0
	if timeout 30 podman image exists "$image"; then
		local seeded
		seeded=$(timeout 30 podman image inspect --format '{{index .Labels "org.zenconn.seeded"}}' "$image" 2>/dev/null || true)
		say "$image is here${seeded:+ (seeded earlier from $seeded: no registry was reachable then)}"
		return
	fi
	if timeout 45 podman pull -q "$image" >/dev/null 2>"$work/pull.log"; then
		say "$image pulled"
		return
	fi
	t0=$(date +%s)
	say "no registry reachable ($(tail -1 "$work/pull.log" | cut -c1-160)): seeding $image locally"
	"$seed"
	say "$image seeded in $(($(date +%s) - t0)) s"
}
ensure_image "$GO_IMAGE" seed_go_image
ensure_image "$NATS_IMAGE" seed_nats_image

t0=$(date +%s)
say "docker-compose --profile tls up -d --build (the image's build downloads the modules from the Go proxy)"
"${compose[@]}" up -d --build >"$work/up.log" 2>&1 || { tail -40 "$work/up.log" >&2; fail "docker-compose up failed"; }
say "up in $(($(date +%s) - t0)) s"

size=$(timeout 30 podman image inspect --format '{{.Size}}' zenconn:local)
say "image zenconn:local: $((size / 1024)) KiB; $(timeout 30 podman run --rm --no-healthcheck --entrypoint /zenconn zenconn:local version)"

set -a
# shellcheck disable=SC1091
. "$work/test.env"
set +a
code=0
ZENCONN_COMPOSE="docker-compose -p $PROJECT --env-file $work/test.env -f $root/docker-compose.yml --profile tls" \
	ZENCONN_COMPOSE_PORTS="${PORTS[*]}" ZENCONN_COMPOSE_TLS="127.0.0.1:$TLS_PORT" ZENCONN_COMPOSE_TLS_CA="$work/tls/cert.pem" \
	timeout 600 go test -count=1 -timeout 9m -run '^TestCompose$' -v ./e2e/ >"$work/probe.log" 2>&1 || code=$?
grep -E '^(=== RUN|--- |\s+compose_test|ok|FAIL|PASS|e2e:)' "$work/probe.log" >&2 || true
if [ $code -ne 0 ] || ! grep -q '^--- PASS: TestCompose ' "$work/probe.log"; then
	tail -60 "$work/probe.log" >&2
	fail "the probe failed (go test exit $code)"
fi
say "probe passed"
