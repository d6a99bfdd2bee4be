#!/bin/sh
# `npm run soak [-- FLAGS]`: raise the open-files limit (the soak holds hundreds of client
# connections, and the edge's workers as many again plus their upstream connections), then run
# the soak harness (bench/soak.ts) on the project's Node 24. The edge runs from dist/: build first.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
node="$here/../node_modules/.bin/node"
[ -x "$node" ] || node=node
exec "$node" "$here/child.js" "$here/soak.ts" "$@"
