#!/usr/bin/env bash
# Makes sure Let's Encrypt's test ACME CA is built for the end-to-end tests
# of automatic certificates (e2e/acme_test.go):
#   pebble, pebble-challtestsrv  v2.10.3, in $ZENCONN_PEBBLE_BIN
#   (default: ${XDG_CACHE_HOME:-$HOME/.cache}/zenconn/pebble-v2.10.3)
# Built with `go install`, outside this module: go.mod stays as it is.
# Quiet and quick when they are there.
set -euo pipefail

version=v2.10.3
bin=${ZENCONN_PEBBLE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/zenconn/pebble-$version}
if [ -x "$bin/pebble" ] && [ -x "$bin/pebble-challtestsrv" ]; then
	exit 0
fi
command -v go >/dev/null 2>&1 || { echo "ensure-pebble: go is not installed" >&2; exit 1; }
mkdir -p "$bin"
echo "ensure-pebble: building pebble $version into $bin..." >&2
# From outside the module, so that its go.mod and go.work play no part.
cd /
GOBIN="$bin" GOFLAGS=-mod=mod GOWORK=off go install \
	"github.com/letsencrypt/pebble/v2/cmd/pebble@$version" \
	"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$version"
[ -x "$bin/pebble" ] && [ -x "$bin/pebble-challtestsrv" ] || { echo "ensure-pebble: build finished but $bin lacks the binaries" >&2; exit 1; }
