#!/bin/sh
# Installs Debian packages for the project's scripts (test-deps.sh, bench-deps.sh):
#   sh scripts/apt-install.sh <label> <package>...
# As root, or through passwordless sudo. Quiet: apt-get's output is shown only when it fails.
# A fresh machine has no package lists yet: they are updated once, only when the first try fails.
set -eu

label=$1
shift

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "$label: missing: $* and this is not root; run: apt-get install -y $*" >&2
    exit 1
  fi
else
  SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $SUDO apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
  if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "$@"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "$label: could not install $* with apt-get (output above)" >&2
    exit 1
  fi
fi
