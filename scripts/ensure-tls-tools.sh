#!/usr/bin/env bash
# Makes sure the outside TLS clients of the end-to-end tests are installed:
#   testssl.sh          /usr/bin/testssl         (e2e/tls_testssl_test.go)
#   python3-websockets  for /usr/bin/python3     (e2e/tls_clients_test.go)
#   certutil            /usr/bin/certutil        (e2e/tls_browser_test.go: the test CA in Chromium's NSS db)
#   npm ws              e2e/testdata/node/node_modules/ws, from package-lock.json
# Quiet and quick when they are; otherwise installs Debian's packages (apt-get
# update first) and runs npm ci. Needs root (or sudo), apt-get and npm.
set -euo pipefail

cd "$(dirname "$0")/.."

fail() {
	echo "ensure-tls-tools: $*" >&2
	exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo -n)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Debian packages, each named by a file that shows it is installed.
missing=()
[ -x /usr/bin/testssl ] || missing+=(testssl.sh)
[ -x /usr/bin/certutil ] || missing+=(libnss3-tools)
/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 || missing+=(python3-websockets)
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available to install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	echo "ensure-tls-tools: installing ${missing[*]} (apt-get)..." >&2
	if ! "${SUDO[@]}" apt-get update -q >"$log" 2>&1; then
		cat "$log" >&2
		fail "apt-get update failed"
	fi
	if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >"$log" 2>&1; then
		cat "$log" >&2
		fail "apt-get install ${missing[*]} failed"
	fi
	[ -x /usr/bin/testssl ] || fail "testssl.sh installed but /usr/bin/testssl is missing"
	[ -x /usr/bin/certutil ] || fail "libnss3-tools installed but /usr/bin/certutil is missing"
	/usr/bin/python3 -c 'import websockets' || fail "python3-websockets installed but /usr/bin/python3 cannot import websockets"
fi

# The npm ws client, at the version package-lock.json pins.
node_dir=e2e/testdata/node
want=$(node -p 'require("./'"$node_dir"'/package-lock.json").packages["node_modules/ws"].version' 2>/dev/null) ||
	fail "node cannot read $node_dir/package-lock.json (is Node.js installed?)"
have=$(node -p 'require("./'"$node_dir"'/node_modules/ws/package.json").version' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
	command -v npm >/dev/null 2>&1 || fail "npm is not available to install ws $want"
	echo "ensure-tls-tools: installing ws $want (npm ci in $node_dir)..." >&2
	if ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
		cat "$log" >&2
		fail "npm ci in $node_dir failed"
	fi
fi

# The test ACME CA (pebble), built once into a cache folder.
bash scripts/ensure-pebble.sh
