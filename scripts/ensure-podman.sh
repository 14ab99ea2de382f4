#!/usr/bin/env bash
# Makes sure podman, runc and docker-compose (Debian's packages) are installed,
# for scripts/test-compose.sh. Quiet and quick when they are; otherwise
# apt-get update, then apt-get install. Needs root (or sudo) and apt-get.
set -euo pipefail

fail() {
	echo "ensure-podman: $*" >&2
	exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo -n)
fi

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available to install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "ensure-podman: installing ${missing[*]} (apt-get)..." >&2
if ! timeout 300 "${SUDO[@]}" apt-get update -q -o DPkg::Lock::Timeout=120 >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get update failed"
fi
if ! timeout 600 "${SUDO[@]}" apt-get install -y -q -o DPkg::Lock::Timeout=120 \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}" >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get install ${missing[*]} failed"
fi
for c in podman runc docker-compose; do
	command -v "$c" >/dev/null 2>&1 || fail "$c is still missing after apt-get install"
done
