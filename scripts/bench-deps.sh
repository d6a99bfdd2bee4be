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

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "bench-deps: missing:$missing and this is not root; run: apt-get install -y$missing" >&2
    exit 1
  fi
else
  SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A fresh machine has no package lists yet: update once, only when the first try cannot find them.
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -q --no-install-recommends $missing >"$log" 2>&1; then
  # shellcheck disable=SC2086
  if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench-deps: could not install$missing with apt-get (output above)" >&2
    exit 1
  fi
fi
# Debian's caddy package starts a caddy.service on :80 where systemd runs; the benchmark starts
# its own Caddy processes, so stop that one if it is there (no systemd here: nothing to do).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet caddy 2>/dev/null; then
  $SUDO systemctl stop caddy >/dev/null 2>&1 || true
  $SUDO systemctl disable caddy >/dev/null 2>&1 || true
fi
echo "bench-deps: installed$missing ($(versions))"
