/**
 * Idle long polls: N connections each holding `GET /_matrix/client/v3/sync?timeout=30000`, held by
 * the upstream stand-in. Memory per connection = (summed RSS of the server's process tree with all
 * N held − the same just before) / N.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import { kill, sleep, start, treeMemory, type Proc } from './procs';

function held(upstreamPort: number): Promise<number> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port: upstreamPort, path: '/_bench/held', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (s: string) => (body += s));
        res.on('end', () => resolve((JSON.parse(body) as { held: number }).held));
      })
      .on('error', () => resolve(-1));
  });
}

async function waitHeld(upstreamPort: number, want: (n: number) => boolean, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let n = await held(upstreamPort);
  while (!want(n) && performance.now() < deadline) {
    await sleep(100);
    n = await held(upstreamPort);
  }
  return n;
}

/** The median of `count` samples of the tree's summed RSS, `everyMs` apart. */
async function settledRssKiB(pid: number, count = 5, everyMs = 200): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    samples.push(treeMemory(pid).rssKiB);
    if (i < count - 1) await sleep(everyMs);
  }
  return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

export interface IdleResult {
  readonly connections: number;
  readonly baseKiB: number;
  readonly heldKiB: number;
  /** (heldKiB − baseKiB) / connections */
  readonly kibPerConn: number;
  /** Time to open every connection and send every request, ms. */
  readonly openMs: number;
  readonly failed: number;
}

export async function idleLongPolls(o: {
  server: Proc;
  port: number;
  name: string;
  caFile: string;
  upstreamPort: number;
  count: number;
  logDir: string;
}): Promise<IdleResult> {
  const before = await waitHeld(o.upstreamPort, (n) => n === 0, 30_000);
  if (before !== 0) throw new Error(`the upstream still holds ${before} long polls from before`);
  await sleep(500);
  const baseKiB = await settledRssKiB(o.server.pid);

  const client: Proc = start('idle-client', process.execPath, [path.join(__dirname, 'child.js'), path.join(__dirname, 'idle-client.ts'), String(o.port), o.name, o.caFile, String(o.count)], {
    ipc: true,
    logFile: path.join(o.logDir, 'idle-client.log'),
  });
  try {
    const report = await new Promise<{ opened: number; failed: number; ms: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`idle client: ${o.count} connections not open within 120 s`)), 120_000);
      client.child.on('message', (m: { opened?: number; failed?: number; ms?: number }) => {
        if (m.opened !== undefined) {
          clearTimeout(timer);
          resolve({ opened: m.opened, failed: m.failed ?? 0, ms: m.ms ?? NaN });
        }
      });
      void client.exited.then(() => reject(new Error('idle client exited early')));
    });
    if (report.failed > 0) throw new Error(`idle client: ${report.failed} of ${o.count} connections failed`);
    const n = await waitHeld(o.upstreamPort, (x) => x >= o.count, 60_000);
    if (n < o.count) throw new Error(`only ${n} of ${o.count} long polls reached the upstream`);
    await sleep(1000);
    const heldKiB = await settledRssKiB(o.server.pid);
    return { connections: o.count, baseKiB, heldKiB, kibPerConn: (heldKiB - baseKiB) / o.count, openMs: report.ms, failed: report.failed };
  } finally {
    await kill(client);
    await waitHeld(o.upstreamPort, (x) => x === 0, 30_000);
  }
}
