// `npm run bench` ends here (after scripts/bench-deps.sh and the ulimit raise in bench/run.sh).
// The harness is TypeScript (bench/*.ts), compiled on require with @swc/core like the tests'
// child processes; `npx tsc --noEmit -p .` type checks it with the rest of the project.
'use strict';
require('../test/support/swc-register.js');
const { main } = require('./main.ts');
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
