#!/usr/bin/env node
'use strict';
// npm and npx may run on an older Node (the package declares engines >=20 so installing on the
// machine's Node 20 is quiet); the edge itself runs on the Node 24 the package brings, which
// `npm start`, `npm run` and `npx matrix-edge` put first on PATH. Run directly on an old Node, say so.
{
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 19)) {
    process.stderr.write(
      `matrix-edge needs Node 22.19 or later (this is ${process.version}): run it with \`npx matrix-edge\` or \`npm start\`, ` +
        'which use the Node 24 installed with it (node_modules/.bin/node), or install Node 24.\n',
    );
    process.exit(1);
  }
}
// Compiled code is cached between starts (in the OS temp directory; Node 22.1+): a faster start.
require('node:module').enableCompileCache?.();
require('../dist/cli.js').main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = typeof code === 'number' ? code : 0;
    // Everything is closed by now; should a handle linger, do not hang the exit on it.
    setTimeout(() => process.exit(), 2000).unref();
  },
  (err) => {
    process.stderr.write(`matrix-edge: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
