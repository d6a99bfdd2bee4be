/**
 * The data plane on several worker processes (`workers: 2`), through the real CLI: certificates
 * reach every worker, a worker killed with SIGKILL loses no connection of the others and is
 * replaced (with the certificates replayed), and — against Pebble — HTTP-01 answers reach every
 * worker and a renewed certificate is served by every worker.
 */
import * as path from 'node:path';
import * as tls from 'node:tls';
import { acmeIssuerId } from '../../src/store/keys';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import { ensureBuilt, freePorts, killAll, localCaRoot, runCli, startServingEdge, tempDir, writeConfig, type EdgeProcess } from '../support/proc-edge';
import { KeepAliveConn } from '../support/client';
import { adminGet, metric } from '../support/metrics';
import { startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

jest.setTimeout(60_000);

/** The pid of the worker that logged the access line for `target`. */
function servedBy(edge: EdgeProcess, target: string): number | undefined {
  const line = edge.logs.find((l) => l.component === 'access' && l.path === target);
  return typeof line?.pid === 'number' ? line.pid : undefined;
}

let upstream: Upstream;
const conns: KeepAliveConn[] = [];

beforeAll(async () => {
  await ensureBuilt();
  upstream = await startUpstream();
});
afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  await killAll();
});
afterAll(async () => {
  await upstream.close();
});

/** An edge with `workers: 2` and the local CA, once both workers serve its certificate. */
async function startTwoWorkers(): Promise<{ edge: EdgeProcess; https: number; ca: string; pids: number[] }> {
  const dir = tempDir('matrix-edge-workers-');
  const [https, http] = await freePorts(2);
  const config = writeConfig(
    dir,
    [
      'server_name: localhost',
      `listen: { https: [${https}], http: ${http}, address: [127.0.0.1] }`,
      `upstream: ${upstream.url}`,
      'tls: { issuer: internal }',
      'storage: ./certs',
      'workers: 2',
      '',
    ].join('\n'),
  );
  const { edge, serving } = await startServingEdge(config);
  expect(serving.workers).toBe(2);
  const pids = (edge.logs.find((l) => l.msg === 'data-plane workers listening')!.pids as number[]).slice();
  expect(pids).toHaveLength(2);
  // Each worker installed the certificate the primary obtained.
  await waitFor('both workers installed the certificate', () =>
    pids.every((pid) => edge.logs.some((l) => l.pid === pid && l.msg === 'certificate installed')),
  );
  return { edge, https: https!, ca: localCaRoot(path.join(dir, 'certs')), pids };
}

/** One connection (resuming `session` when given) and one request on it: whether the session was resumed, and the ticket it got (if any). */
async function connectOnce(port: number, ca: string, target: string, session?: Buffer): Promise<{ reused: boolean; session: Buffer | null }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'], ...(session ? { session } : {}) });
  let ticket: Buffer | null = null;
  socket.on('session', (t: Buffer) => (ticket = t));
  const response = new Promise<string>((resolve, reject) => {
    let data = '';
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')));
    socket.once('end', () => resolve(data));
    socket.once('error', reject);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const reused = socket.isSessionReused();
  socket.write(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  expect((await response).startsWith('HTTP/1.1 200 ')).toBe(true);
  return { reused, session: ticket };
}

describe('two data-plane workers (local CA)', () => {
  it('a TLS session ticket issued by one worker is accepted by every worker', async () => {
    const { edge, https, ca, pids } = await startTwoWorkers();
    const first = await connectOnce(https, ca, '/_matrix/client/versions?resume=0');
    expect(first.reused).toBe(false);
    expect(first.session).not.toBeNull();
    const resumed: boolean[] = [];
    for (let i = 1; i <= 16; i++) resumed.push((await connectOnce(https, ca, `/_matrix/client/versions?resume=${i}`, first.session!)).reused);
    // The kernel spreads the connections over both workers; every one of them took the ticket.
    await waitFor('access lines for the resumed connections', () => edge.logs.filter((l) => l.component === 'access' && /resume=/.test(String(l.path))).length === 17);
    const servers = new Set(Array.from({ length: 17 }, (_, i) => servedBy(edge, `/_matrix/client/versions?resume=${i}`)));
    expect(servers).toEqual(new Set(pids));
    expect(resumed).toEqual(new Array(16).fill(true));
  });

  it('/metrics sums both workers: requests by route and status, open connections, upstream latency, bytes; restarts counted', async () => {
    const { edge, https, ca, pids } = await startTwoWorkers();
    const admin = edge.logs.find((l) => l.msg === 'admin listener serving metrics and health')!.port as number;
    const scrape = async (): Promise<string> => (await adminGet(admin, '/metrics')).body;
    await scrape(); // counts from here on

    // 20 connections held open, one request each (spread over both workers by the kernel), and 3 refused hosts.
    for (let i = 0; i < 20; i++) conns.push(KeepAliveConn.open(https, ca, { id: i }));
    await Promise.all(conns.map((c) => c.ready));
    for (const c of conns) expect((await c.get(`/_matrix/client/versions?metrics=${c.id}`))?.status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await conns[i]!.get('/_matrix/client/versions', 'elsewhere.example'))?.status).toBe(421);
    await waitFor('access lines', () => edge.logs.filter((l) => l.component === 'access' && /metrics=/.test(String(l.path))).length === 20);
    expect(new Set(conns.map((c) => servedBy(edge, `/_matrix/client/versions?metrics=${c.id}`)))).toEqual(new Set(pids));

    const text = await scrape();
    expect(metric(text, 'matrix_edge_requests_total', { route: 'proxy:/_matrix/', status: '200' })).toBe(20);
    expect(metric(text, 'matrix_edge_requests_total', { route: 'reject', status: '421' })).toBe(3);
    expect(metric(text, 'matrix_edge_open_connections', { listener: `https:${https}` })).toBe(20);
    expect(metric(text, 'matrix_edge_upstream_response_seconds_count', { upstream: 'homeserver' })).toBe(20);
    expect(metric(text, 'matrix_edge_received_bytes_total')).toBeGreaterThan(23 * 40); // 23 request heads
    expect(metric(text, 'matrix_edge_sent_bytes_total')).toBeGreaterThan(23 * 100);
    // Counters are per scrape interval in the workers and summed in the primary: a second scrape adds nothing new.
    expect(metric(await scrape(), 'matrix_edge_requests_total', { route: 'proxy:/_matrix/', status: '200' })).toBe(20);

    process.kill(pids[0]!, 'SIGKILL');
    await waitFor('the replacement worker', () => edge.logs.some((l) => l.msg === 'data-plane worker replaced'), 15_000);
    expect(metric(await scrape(), 'matrix_edge_worker_restarts_total')).toBe(1);
  });

  it('every worker serves the certificate; a SIGKILLed worker is replaced and the other keeps its connections', async () => {
    const { edge, https, ca, pids } = await startTwoWorkers();

    // 24 connections, one request each: every handshake verifies, one serial, both workers serve.
    for (let i = 0; i < 24; i++) conns.push(KeepAliveConn.open(https, ca, { id: i }));
    await Promise.all(conns.map((c) => c.ready));
    const serials = new Set(conns.map((c) => c.leaf().serialNumber));
    expect(serials.size).toBe(1);
    for (const c of conns) expect((await c.get(`/_matrix/client/versions?conn=${c.id}`))?.status).toBe(200);
    await waitFor('access lines for every connection', () => conns.every((c) => servedBy(edge, `/_matrix/client/versions?conn=${c.id}`) !== undefined));
    const owner = new Map(conns.map((c) => [c.id, servedBy(edge, `/_matrix/client/versions?conn=${c.id}`)!]));
    expect(new Set(owner.values())).toEqual(new Set(pids));

    // Kill one worker: its connections end; every connection of the other still answers on the same socket.
    const victim = pids[0]!;
    process.kill(victim, 'SIGKILL');
    await waitFor('the replacement worker', () => edge.logs.some((l) => l.msg === 'data-plane worker replaced'), 15_000);
    for (const c of conns) {
      const again = await c.get(`/_matrix/client/versions?conn=${c.id}&again=1`);
      if (owner.get(c.id) === victim) expect(again).toBeNull();
      else expect(again?.status).toBe(200);
    }
    const crash = edge.logs.find((l) => l.msg?.startsWith('data-plane worker exited unexpectedly'))!;
    expect(crash).toMatchObject({ pid: victim, signal: 'SIGKILL' });

    // New connections: verified with the same certificate, served by the survivor and the replacement.
    const replacement = edge.logs.find((l) => l.msg === 'data-plane worker replaced')!.pid as number;
    const fresh: KeepAliveConn[] = [];
    for (let i = 100; i < 124; i++) fresh.push(KeepAliveConn.open(https, ca, { id: i }));
    conns.push(...fresh);
    await Promise.all(fresh.map((c) => c.ready));
    expect(new Set(fresh.map((c) => c.leaf().serialNumber))).toEqual(serials);
    for (const c of fresh) expect((await c.get(`/_matrix/client/versions?conn=${c.id}`))?.status).toBe(200);
    await waitFor('access lines for the new connections', () => fresh.every((c) => servedBy(edge, `/_matrix/client/versions?conn=${c.id}`) !== undefined));
    const newOwners = new Set(fresh.map((c) => servedBy(edge, `/_matrix/client/versions?conn=${c.id}`)));
    expect(newOwners).toEqual(new Set([pids[1], replacement]));
  });
});

const withPebble = pebbleInstalled() ? describe : describe.skip;

withPebble('two data-plane workers (ACME, Pebble)', () => {
  let pebble: RunningPebble | null = null;
  afterEach(async () => {
    await pebble?.stop();
    pebble = null;
  });

  it('HTTP-01 answers reach every worker, and a renewed certificate is served by every worker', async () => {
    const dir = tempDir('matrix-edge-workers-acme-');
    const [https, http] = await freePorts(2);
    pebble = await startPebble({ httpPort: http!, tlsPort: https!, env: { PEBBLE_AUTHZREUSE: '0', PEBBLE_WFE_NONCEREJECT: '0' } });
    const names = ['matrix.example.com', 'example.com'];
    const config = writeConfig(
      dir,
      [
        'server_name: example.com',
        'hostname: matrix.example.com',
        `listen: { https: [${https}], http: ${http}, address: [127.0.0.1] }`,
        `upstream: ${upstream.url}`,
        'tls: { issuer: acme }',
        'acme:',
        `  ca: ${pebble.directory}`,
        `  ca_roots: [${JSON.stringify(pebble.caRootsFile)}]`,
        '  challenges: [http-01]',
        'storage: ./certs',
        'workers: 2',
        '',
      ].join('\n'),
    );
    const { edge } = await startServingEdge(config);
    const root = await pebble.issuingRoot();
    const serialsOn = async (count: number): Promise<Set<string>> => {
      const seen = new Set<string>();
      for (let i = 0; i < count; i++) {
        for (const name of names) {
          const c = KeepAliveConn.open(https!, root, { id: i, servername: name });
          conns.push(c);
          await c.ready;
          seen.add(`${name} ${c.leaf().serialNumber}`);
          c.close();
        }
      }
      return seen;
    };
    await waitFor('both certificates', () => edge.logs.filter((l) => l.component === 'certs' && l.msg === 'certificate installed').length === 2, 20_000);

    // Three forced renewals: 2 names × 4 orders = 8 HTTP-01 validations, each on a new connection that
    // the kernel gives to either worker. All must succeed: the answers are in both workers.
    for (let round = 0; round < 3; round++) {
      const run = await runCli(['renew', '--config', config, '--force'], { timeoutMs: 40_000 });
      expect({ round, code: run.code, stderr: run.stderr }).toEqual({ round, code: 0, stderr: '' });
    }
    const challengeLines = edge.logs.filter((l) => l.component === 'access' && String(l.path).startsWith('/.well-known/acme-challenge/'));
    expect(challengeLines.length).toBeGreaterThanOrEqual(8);
    expect(challengeLines.every((l) => l.status === 200)).toBe(true);
    // (Which worker answered is the kernel's choice; across 8 validations both almost always do.)
    console.log(`HTTP-01 validations answered per worker pid: ${JSON.stringify(Object.fromEntries([...new Set(challengeLines.map((l) => l.pid))].map((p) => [p, challengeLines.filter((l) => l.pid === p).length])))}`);

    // The renewed certificates, as stored, are what every new connection gets (both workers).
    const issuer = acmeIssuerId(pebble.directory);
    const stored = await Promise.all(
      names.map(async (name) => `${name} ${(await new CertificateStore(new FileStorage(path.join(dir, 'certs'))).loadCertificate(issuer, name))!.leaf.serialNumber}`),
    );
    expect(await serialsOn(12)).toEqual(new Set(stored));
  });
});
