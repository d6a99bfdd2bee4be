#!/bin/sh
# Installs what `npm run bench` needs beyond npm, from Debian's packages when missing:
# caddy (the comparison), wrk (HTTP/1.1 load), nghttp2-client (h2load, HTTP/2 load), pebble (ACME
# test CA, for the time-to-first-answer scenario), curl (1 GiB transfers) and a C compiler (the
# tools' no-TLS-resumption shim, bench/no-resume.c). Idempotent; prints one line.
# Never part of `npm test`.
set -eu

missing=""
[ -x /usr/bin/caddy ] || missing="$missing caddy"
[ -x /usr/bin/wrk ] || missing="$missing wrk"
[ -x /usr/bin/h2load ] || missing="$missing nghttp2-client"
{ [ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ]; } || missing="$missing pebble"
[ -x /usr/bin/curl ] || missing="$missing curl"
{ command -v cc >/dev/null 2>&1 && [ -f /usr/include/dlfcn.h ]; } || missing="$missing gcc libc6-dev"

versions() {
  dpkg-query -W -f='${Package} ${Version}, ' caddy wrk nghttp2-client pebble 2>/dev/null | sed 's/, $//'
}

if [ -z "$missing" ]; then
  echo "bench-deps: all present ($(versions))"
  exit 0
fi

# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" bench-deps $missing
# Debian's caddy package starts a caddy.service on :80 where systemd runs; the benchmark starts
# its own Caddy processes, so stop that one if it is there (no systemd here: nothing to do).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet caddy 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  $SUDO systemctl stop caddy >/dev/null 2>&1 || true
  $SUDO systemctl disable caddy >/dev/null 2>&1 || true
fi
echo "bench-deps: installed$missing ($(versions))"
