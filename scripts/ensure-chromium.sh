#!/usr/bin/env bash
# Makes sure headless Chromium is installed at /usr/bin/chromium for the browser
# end-to-end tests (e2e/browser_test.go). Quiet and quick when it already is;
# otherwise installs Debian's chromium package. Needs root (or sudo) and apt-get.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
	exit 0
fi

fail() {
	echo "ensure-chromium: $*" >&2
	echo "ensure-chromium: the browser tests need Chromium at $CHROMIUM;" \
		"install it with: apt-get install -y --no-install-recommends chromium" >&2
	exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "$CHROMIUM is missing and apt-get is not available"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || fail "$CHROMIUM is missing and installing it needs root (no sudo found)"
	SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "ensure-chromium: installing chromium (apt-get)..." >&2
if ! "${SUDO[@]}" apt-get update -q >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get update failed"
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	chromium >"$log" 2>&1; then
	cat "$log" >&2
	fail "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || fail "apt-get installed chromium but $CHROMIUM is still missing"
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM installed")" >&2
