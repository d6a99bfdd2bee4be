#!/bin/sh
# Installs what the integration tests need beyond npm: Pebble (ACME test CA, with its mock DNS
# pebble-challtestsrv) from Debian's package. Idempotent and quiet; prints one line.
set -eu

if [ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ]; then
  echo "test-deps: pebble already installed ($(dpkg-query -W -f='${Version}' pebble 2>/dev/null || echo unknown version))"
  exit 0
fi

sh "$(dirname "$0")/apt-install.sh" test-deps pebble
echo "test-deps: installed pebble $(dpkg-query -W -f='${Version}' pebble 2>/dev/null || true)"
