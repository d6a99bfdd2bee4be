// A matrix-edge storage-lock user as a child process, for the cross-process lock tests
// (test/integration/store-lock.test.ts).
//
//   node proc-lock.js '<json task>'
//
// It runs src/store/file-lock.ts itself (compiled on require by swc-register.js). Tasks:
//   {"mode":"hold","storage":S,"key":K,"options":{…}}
//       acquire, print "ACQUIRED <pid>", then keep holding until killed
//   {"mode":"loop","storage":S,"key":K,"file":F,"rounds":N,"options":{…}}
//       N times: acquire, append "start <pid>", sleep 50 ms, append "end <pid>", release; then exit 0
//   {"mode":"hang","storage":S,"key":K,"ms":M,"options":{…}}
//       acquire, print "ACQUIRED <pid>", block the event loop for M ms (no refresh can run), then
//       print "STILLHELD <true|false>" and "LOST <true|false>" (onLost seen), release, exit 0
//   {"mode":"take","storage":S,"key":K,"file":F,"dir":D,"rounds":N}
//       for each round r: wait for the file D/round-<r>, tryLock once; when it got the lock append
//       "start <pid>", sleep 20 ms, append "end <pid>" (or "end-lost <pid>" when stillHeld() is
//       false), release; then create D/done-<r>-<pid>
//   {"mode":"exit","storage":S,"key":K}
//       acquire, print "ACQUIRED <pid>", then process.exit(0) without releasing
'use strict';
const fs = require('node:fs');

require('./swc-register');

const { FileLocker } = require('../../src/store/file-lock.ts');

const task = JSON.parse(process.argv[2] ?? '{}');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (line) => new Promise((resolve) => process.stdout.write(`${line}\n`, () => resolve()));

async function main() {
  let lost = false;
  const locks = new FileLocker(task.storage, { ...task.options, onLost: () => (lost = true) });
  switch (task.mode) {
    case 'hold': {
      await locks.lock(task.key, { purpose: `hold by ${process.pid}` });
      await say(`ACQUIRED ${process.pid}`);
      setInterval(() => undefined, 60_000);
      return;
    }
    case 'loop': {
      for (let i = 0; i < task.rounds; i++) {
        const lock = await locks.lock(task.key, { purpose: `loop by ${process.pid}` });
        fs.appendFileSync(task.file, `start ${process.pid}\n`);
        await sleep(50);
        fs.appendFileSync(task.file, `end ${process.pid}\n`);
        await lock.release();
      }
      return;
    }
    case 'hang': {
      const lock = await locks.lock(task.key, { purpose: `hang by ${process.pid}` });
      await say(`ACQUIRED ${process.pid}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, task.ms);
      await say(`STILLHELD ${await lock.stillHeld()}`);
      await say(`LOST ${lost}`);
      await lock.release();
      return;
    }
    case 'take': {
      for (let r = 0; r < task.rounds; r++) {
        while (!fs.existsSync(`${task.dir}/round-${r}`)) await sleep(1);
        const lock = await locks.tryLock(task.key, { purpose: `take by ${process.pid}` });
        if (lock !== null) {
          fs.appendFileSync(task.file, `start ${process.pid}\n`);
          await sleep(20);
          fs.appendFileSync(task.file, `${(await lock.stillHeld()) ? 'end' : 'end-lost'} ${process.pid}\n`);
          await lock.release();
        }
        fs.writeFileSync(`${task.dir}/done-${r}-${process.pid}`, '');
      }
      return;
    }
    case 'exit': {
      await locks.lock(task.key, { purpose: `exit by ${process.pid}` });
      await say(`ACQUIRED ${process.pid}`);
      process.exit(0);
    }
    default:
      throw new Error(`unknown mode ${task.mode}`);
  }
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
