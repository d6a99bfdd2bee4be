// Runs one of the harness's TypeScript modules as a process of its own:
//   node bench/child.js bench/upstream.ts [args...]
// `.ts` files are compiled on require with @swc/core (test/support/swc-register.js), as the
// tests' child processes are.
'use strict';
const path = require('node:path');
require('../test/support/swc-register.js');
const entry = process.argv[2];
if (!entry) {
  process.stderr.write('usage: node bench/child.js <module.ts> [args...]\n');
  process.exit(2);
}
require(path.resolve(entry));
