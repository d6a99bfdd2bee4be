/**
 * The real CLI as a child process (node bin/matrix-edge.js …): help and exit codes, `check` output
 * and config errors, start-up failures (bad config, port in use, unreadable certificate files), and
 * a full start → serve → SIGTERM with an in-flight request → drained exit.
 */
import { generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { loadConfigFile } from '../../src/config/load';
import { request, type Reply } from '../support/client';
import {
  closeServer,
  ensureBuilt,
  freePorts,
  killAll,
  localCaRoot,
  occupy,
  ROOT,
  runCli,
  startEdgeProcess,
  tempDir,
  tryConnect,
  writeConfig,
} from '../support/proc-edge';
import { echo, startUpstream, type Upstream } from '../support/upstream';

jest.setTimeout(60_000);

const dirs: string[] = [];
const held: net.Server[] = [];
let upstream: Upstream | null = null;

beforeAll(async () => {
  await ensureBuilt();
}, 180_000);

afterAll(async () => {
  await killAll();
  await Promise.all(held.splice(0).map(closeServer));
  await upstream?.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function newDir(): string {
  const dir = tempDir('matrix-edge-cli-');
  dirs.push(dir);
  return dir;
}

/** 1-based line and column of the first `needle` in `text` at or after line `fromLine`. */
function position(text: string, needle: string): { line: number; column: number } {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const col = lines[i]!.indexOf(needle);
    if (col !== -1) return { line: i + 1, column: col + 1 };
  }
  throw new Error(`'${needle}' is not in the text`);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('help and commands', () => {
  test('--help exits 0 and prints the usage with both commands', async () => {
    const run = await runCli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage: matrix-edge <command> \[--config FILE\]/);
    expect(run.stdout).toMatch(/^\s+start\s+\S/m);
    expect(run.stdout).toMatch(/^\s+check\s+\S/m);
    expect(run.stderr).toBe('');
  });

  test.each(['start', 'check'])('%s --help exits 0 and prints that command\'s usage', async (command) => {
    const run = await runCli([command, '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^Usage: matrix-edge ${command} \\[--config FILE\\]`));
    expect(run.stderr).toBe('');
  });

  test('an unknown command exits 2 and names it on stderr', async () => {
    const run = await runCli(['frobnicate']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("unknown command 'frobnicate'");
    expect(run.stderr).toContain('Usage: matrix-edge <command>');
    expect(run.stdout).toBe('');
  });
});

describe('check', () => {
  test('the bundled config: exit 0 and the plan with names, listeners, routes and well-known bodies', async () => {
    const run = await runCli(['check', '--config', 'config/matrix-edge.yaml']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const out = run.stdout;
    expect(out).toContain(`Config ${path.join(ROOT, 'config/matrix-edge.yaml')}`);
    expect(out).toMatch(/^Server name\s+localhost$/m);
    expect(out).toMatch(/^Served names\s+localhost \(each gets a certificate\)$/m);
    expect(out).toMatch(/^\s+https\s+8443\s/m);
    expect(out).toMatch(/^\s+https\s+8448\s/m);
    expect(out).toMatch(/^\s+http\s+8080\s/m);
    expect(out).toMatch(/homeserver\s+http:\/\/localhost:8008\s+http:\/\/127\.0\.0\.1:8008/);
    // Routes, in order, with their actions.
    const routeIds = [...out.matchAll(/^\s+(\d+)\s+(\S+)\s+\*\s+(exact|prefix)\s/gm)].map((m) => m[2]);
    expect(routeIds).toEqual([
      'well-known:server',
      'well-known:client',
      'well-known:support',
      'block:/_synapse/admin/',
      'block:/_dendrite/',
      'proxy:/_matrix/',
      'proxy:/_synapse/client/',
      'fallback',
    ]);
    expect(out).toMatch(/proxy:\/_matrix\/\s+\*\s+prefix \/_matrix\/\s+proxy to homeserver \(max body 50MiB\)/);
    expect(out).toMatch(/block:\/_synapse\/admin\/\s+\*\s+prefix \/_synapse\/admin\/\s+404 M_NOT_FOUND/);
    // Well-known bodies: exactly the bytes served.
    expect(out).toMatch(/^\s+\/\.well-known\/matrix\/server\s+\{"m\.server":"localhost:8443"\}$/m);
    expect(out).toMatch(/^\s+\/\.well-known\/matrix\/client\s+\{"m\.homeserver":\{"base_url":"https:\/\/localhost:8443"\}\}$/m);
    expect(out).toMatch(/^\s+\/\.well-known\/matrix\/support\s+404 \(not configured\)$/m);

    // And it is the plan the loader makes of the same file.
    const loaded = loadConfigFile(path.join(ROOT, 'config/matrix-edge.yaml'));
    if (!loaded.ok) throw new Error('the bundled config does not load');
    for (const route of loaded.plan.routes) expect(out).toContain(route.id);
    expect(out).toContain(loaded.plan.wellKnown.server);
    expect(out).toContain(loaded.plan.wellKnown.client);
  });

  test('check binds nothing: it succeeds while every configured port is taken', async () => {
    const dir = newDir();
    const [a, b, c] = await freePorts(3);
    const servers = await Promise.all([a!, b!, c!].map((p) => occupy(p)));
    held.push(...servers);
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${a}, ${b}], http: ${c}, address: [127.0.0.1] }
upstream: http://127.0.0.1:9
tls: { issuer: internal }
storage: ./certs
`,
    );
    const run = await runCli(['check', '--config', file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^\\s+https\\s+${a}\\s+127\\.0\\.0\\.1$`, 'm'));
    expect(run.stdout).toMatch(new RegExp(`^\\s+http\\s+${c}\\s+127\\.0\\.0\\.1`, 'm'));
    expect(fs.existsSync(path.join(dir, 'certs'))).toBe(false);
    await Promise.all(servers.map(closeServer));
  });

  test('a config with errors: exit 2, every error as FILE:LINE:COL KEY: message, nothing bound or written', async () => {
    const dir = newDir();
    const [port] = await freePorts(1);
    const yaml = `# three mistakes
server_name: localhost
listen:
  https: [${port}, 70000]
  http: null
  address: [127.0.0.1]
upstrem: http://localhost:8008
well_known:
  server: "bad name!:99"
tls:
  issuer: internal
storage: ./certs
`;
    const file = writeConfig(dir, yaml);
    // The one valid port stays occupied: a bind attempt would fail differently (exit 1).
    const blocker = await occupy(port!);
    held.push(blocker);
    const run = await runCli(['check', '--config', file]);
    await closeServer(blocker);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    const port70000 = position(yaml, '70000');
    const upstrem = position(yaml, 'upstrem');
    const server = position(yaml, '"bad name!:99"');
    const errors = run.stderr.split('\n').filter((l) => l.startsWith('error: '));
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(
      new RegExp(`^error: ${escape(file)}:${port70000.line}:${port70000.column} listen\\.https\\[1\\]: .*70000`),
    );
    expect(errors[1]).toMatch(new RegExp(`^error: ${escape(file)}:${upstrem.line}:${upstrem.column} upstrem: .*'upstrem'.*'upstream'`));
    expect(errors[2]).toMatch(new RegExp(`^error: ${escape(file)}:${server.line}:${server.column} well_known\\.server: .*bad name!:99`));
    expect(run.stderr).toContain('the config has 3 errors; nothing was started');
    expect(fs.existsSync(path.join(dir, 'certs'))).toBe(false);
  });
});

describe('start fails cleanly', () => {
  test('a bad config: exit 2 before binding anything', async () => {
    const dir = newDir();
    const [https, plain] = await freePorts(2);
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${https}], http: ${plain}, address: [127.0.0.1] }
upstrem: http://127.0.0.1:9
tls: { issuer: internal }
storage: ./certs
`,
    );
    const edge = startEdgeProcess(file);
    const exit = await edge.exited;
    expect(exit.code).toBe(2);
    expect(edge.stderr()).toMatch(/^error: .*:3:1 upstrem: unknown key 'upstrem'/m);
    expect(edge.stderr()).toContain('nothing was started');
    expect(edge.logs.find((l) => l.msg === 'matrix-edge is serving')).toBeUndefined();
    expect(fs.existsSync(path.join(dir, 'certs'))).toBe(false);
    // The configured ports are free: we can bind them ourselves.
    for (const p of [https!, plain!]) await closeServer(await occupy(p));

    // Held ports change nothing: the config is refused before any bind is tried.
    const blockers = await Promise.all([occupy(https!), occupy(plain!)]);
    held.push(...blockers);
    const again = await runCli(['start', '--config', file]);
    await Promise.all(blockers.map(closeServer));
    expect(again.code).toBe(2);
    expect(again.stderr).not.toContain('already in use');
  });

  test('a configured port already in use: exit 1, one line naming the address', async () => {
    const dir = newDir();
    const [first, second, plain] = await freePorts(3);
    const blocker = await occupy(second!);
    held.push(blocker);
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${first}, ${second}], http: ${plain}, address: [127.0.0.1] }
upstream: http://127.0.0.1:9
tls: { issuer: internal }
storage: ./certs
`,
    );
    const started = performance.now();
    const edge = startEdgeProcess(file);
    const exit = await edge.exited;
    await closeServer(blocker);
    expect(exit.code).toBe(1);
    expect(exit.at - started).toBeLessThan(15_000);
    const lines = edge.stderr().split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`127.0.0.1:${second}`);
    expect(lines[0]).toContain('already in use');
    expect(edge.logs.find((l) => l.msg === 'matrix-edge is serving')).toBeUndefined();
    // What it had bound before the failure is released.
    expect(await tryConnect(first!)).toBe('ECONNREFUSED');
  });

  test.each([
    ['missing', (dir: string) => path.join(dir, 'no-such-fullchain.pem')],
    [
      'directory',
      (dir: string) => {
        const cert = path.join(dir, 'fullchain.pem');
        fs.mkdirSync(cert);
        return cert;
      },
    ],
  ])('tls.issuer files with a %s cert path: exit 1, one line naming the file', async (_what, makeCert) => {
    const dir = newDir();
    const cert = makeCert(dir);
    const key = path.join(dir, 'privkey.pem');
    fs.writeFileSync(key, generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const [https, plain] = await freePorts(2);
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${https}], http: ${plain}, address: [127.0.0.1] }
upstream: http://127.0.0.1:9
tls:
  issuer: files
  files:
    - { cert: ${path.basename(cert)}, key: privkey.pem }
storage: ./certs
`,
    );
    const edge = startEdgeProcess(file);
    const exit = await edge.exited;
    expect(exit.code).toBe(1);
    const lines = edge.stderr().split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^matrix-edge: cannot start: /);
    expect(lines[0]).toContain(cert);
    expect(lines[0]).not.toContain(key);
    expect(edge.logs.find((l) => l.msg === 'matrix-edge is serving')).toBeUndefined();
    expect(await tryConnect(https!)).toBe('ECONNREFUSED');
  });
});

describe('start on a good config', () => {
  test('serves, and on SIGTERM refuses new connections, finishes the in-flight request and exits 0 within the drain time', async () => {
    upstream = await startUpstream();
    const dir = newDir();
    const [https1, https2, plain] = await freePorts(3);
    const drainMs = 6000;
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${https1}, ${https2}], http: ${plain}, address: [127.0.0.1] }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
proxy: { drain_timeout: ${drainMs / 1000}s }
`,
    );
    const edge = startEdgeProcess(file);
    const serving = await edge.waitForLog('matrix-edge is serving', 30_000);
    expect(serving.listeners).toEqual([
      { kind: 'https', address: '127.0.0.1', port: https1 },
      { kind: 'https', address: '127.0.0.1', port: https2 },
      { kind: 'http', address: '127.0.0.1', port: plain },
    ]);
    expect(serving.upstream).toBe(upstream.url);
    const ca = localCaRoot(path.join(dir, 'certs'));

    // A request through it.
    const first = await request({ port: https1!, ca, path: '/_matrix/client/versions?x=%2F' });
    expect(first.status).toBe(200);
    const seen = first.json<{ target: string; headers: Record<string, string> }>();
    expect(seen.target).toBe('/_matrix/client/versions?x=%2F');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    const wk = await request({ port: https2!, ca, path: '/.well-known/matrix/server' });
    expect(wk.status).toBe(200);
    expect(wk.json()).toEqual({ 'm.server': `localhost:${https1}` });

    // A slow request: the upstream answers 1.5 s after it arrives.
    let arrived!: () => void;
    const slowArrived = new Promise<void>((resolve) => (arrived = resolve));
    upstream.behaviour = (req, res, record) => {
      if (!req.url!.includes('slow')) return echo(req, res, record);
      void record().then(() => {
        arrived();
        setTimeout(() => {
          const body = JSON.stringify({ next_batch: 's_slow_1', waited: 1500 });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        }, 1500);
      });
    };
    const slow: Promise<Reply> = request({ port: https1!, ca, path: '/_matrix/client/v3/sync?slow=1' });
    await slowArrived;

    const signalled = performance.now();
    expect(edge.child.kill('SIGTERM')).toBe(true);
    const stopping = await edge.waitForLog('stopping: no new connections, draining in-flight requests', 5000);
    expect(stopping.signal).toBe('SIGTERM');
    expect(stopping.drain_ms).toBe(drainMs);

    // New connections are refused while the slow request is still in flight.
    expect(await tryConnect(https1!)).toBe('ECONNREFUSED');
    expect(await tryConnect(https2!)).toBe('ECONNREFUSED');
    expect(await tryConnect(plain!)).toBe('ECONNREFUSED');
    expect(edge.child.exitCode).toBeNull();

    const reply = await slow;
    expect(reply.status).toBe(200);
    expect(reply.json()).toEqual({ next_batch: 's_slow_1', waited: 1500 });

    const exit = await edge.exited;
    expect(exit).toMatchObject({ code: 0, signal: null });
    const took = exit.at - signalled;
    expect(took).toBeGreaterThanOrEqual(1000);
    expect(took).toBeLessThan(drainMs);
    expect(edge.logs.some((l) => l.msg === 'stopped')).toBe(true);
    expect(edge.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('drain time is up'))).toBe(false);
    expect(edge.stderr()).toBe('');
  });
});
