#!/usr/bin/env node
'use strict';
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
