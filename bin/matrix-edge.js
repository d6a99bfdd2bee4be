#!/usr/bin/env node
'use strict';
require('../dist/cli.js').main(process.argv.slice(2)).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => { process.stderr.write(`matrix-edge: ${err && err.stack ? err.stack : err}\n`); process.exit(1); },
);
