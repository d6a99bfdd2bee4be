#!/bin/sh
# Installs what the integration tests need beyond npm: Pebble (ACME test CA, with its mock DNS
# pebble-challtestsrv) from Debian's package. Idempotent and quiet; prints one line.
set -eu

if [ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ]; then
  echo "test-deps: pebble already installed ($(dpkg-query -W -f='${Version}' pebble 2>/dev/null || echo unknown version))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "test-deps: pebble is missing and this is not root; run: apt-get install -y pebble" >&2
    exit 1
  fi
else
  SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A fresh machine has no package lists yet: update once, only when the first try cannot find it.
if ! $SUDO apt-get install -y -q --no-install-recommends pebble >"$log" 2>&1; then
  if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends pebble; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "test-deps: could not install pebble with apt-get (output above)" >&2
    exit 1
  fi
fi
echo "test-deps: installed pebble $(dpkg-query -W -f='${Version}' pebble 2>/dev/null || true)"
