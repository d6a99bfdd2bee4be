#!/bin/sh
# `npm run bench [-- FLAGS]`: install the load tools if missing, raise the open-files limit (the
# idle long-poll scenario holds thousands of sockets in one process), run the harness.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sh "$here/../scripts/bench-deps.sh"
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
# The project's Node 24 (the `node` dev dependency), also when this script is run without npm.
node="$here/../node_modules/.bin/node"
[ -x "$node" ] || node=node
exec "$node" "$here/run.js" "$@"
