// A foreign, live holder of matrix-edge storage locks, as a child process (for
// test/integration/acme-shared-storage.test.ts):
//
//   node proc-lock-holder.js '{"storage":S,"keys":[K, …]}'
//
// Acquires every key through FileLocker (src/store/file-lock.ts, compiled on require by swc-register.js
// like test/support/proc-lock.js does), prints "ACQUIRED <pid>", then obeys stdin, one command a
// line:
//   release <key>   releases that lock and prints "RELEASED <key>" (the process keeps running)
// It keeps running (and refreshing what it still holds) until killed; when stdin closes (the test
// process went away) it exits.
'use strict';

require('./swc-register');

const { FileLocker } = require('../../src/store/file-lock.ts');

const task = JSON.parse(process.argv[2] ?? '{}');
const say = (line) => new Promise((resolve) => process.stdout.write(`${line}\n`, () => resolve()));

async function main() {
  const locks = new FileLocker(task.storage);
  const held = new Map();
  for (const key of task.keys) held.set(key, await locks.lock(key, { purpose: `test lock holder ${process.pid}` }));
  await say(`ACQUIRED ${process.pid}`);
  setInterval(() => undefined, 60_000);
  let pending = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      const [command, key] = line.split(/\s+/);
      if (command === 'release' && held.has(key)) {
        const lock = held.get(key);
        held.delete(key);
        lock.release().then(
          () => say(`RELEASED ${key}`),
          (err) => say(`ERROR ${key} ${err && err.message}`),
        );
      } else if (line !== '') {
        void say(`ERROR unknown command ${JSON.stringify(line)}`);
      }
    }
  });
  process.stdin.on('end', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
