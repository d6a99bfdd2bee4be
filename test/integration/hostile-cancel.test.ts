/**
 * Hostile clients, part 1: cancellations. Browsers reset HTTP/2 streams whenever they abort a fetch
 * or a long poll; clients drop TCP connections at any moment. Each cancellation must abort the
 * upstream request at once and free its connection, so that after a storm of them fresh requests
 * are answered promptly, nothing is left in flight upstream, and the access log says 499 with the
 * phase the exchange was in.
 */
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { connectH2, h2request, request } from '../support/client';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { adminGet, metric } from '../support/metrics';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

let upstream: Upstream;
let edge: TestEdge;
let port: number;
const timers = new Set<NodeJS.Timeout>();

/** Small pool, so leaked connections show within a few hundred cancellations. */
const POOL = 16;

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(
    `server_name: localhost
listen: { https: [8443], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
proxy:
  connections: ${POOL}
  max_requests_per_connection: 1000
  max_requests_per_address: 100000
  queue_timeout: 0s
`,
    { dir: tempDir('matrix-edge-cancel-') },
  );
  port = edge.httpsPorts[0]!;
});

afterAll(async () => {
  for (const t of timers) clearTimeout(t);
  await edge.stop();
  await upstream.close();
});

/**
 * /slow answers after 150 ms with a 256 KiB body (more than any stream window), /drip sends headers
 * at once and then 16 KiB every 20 ms for a long time; the rest is echoed.
 */
beforeEach(() => {
  upstream.behaviour = (req, res, record) => {
    const later = (ms: number, fn: () => void): void => {
      const t = setTimeout(() => {
        timers.delete(t);
        if (!res.destroyed) fn();
      }, ms);
      timers.add(t);
    };
    if (req.url!.startsWith('/_matrix/client/v3/slow')) {
      void record().then(() => later(150, () => res.end(Buffer.alloc(256 * 1024, 'x'))));
      return;
    }
    if (req.url!.startsWith('/_matrix/client/v3/drip')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const drip = (n: number): void => {
        if (n === 0) return void res.end();
        res.write(Buffer.alloc(16 * 1024, 'y'));
        later(20, () => drip(n - 1));
      };
      drip(500);
      return;
    }
    echo(req, res, record);
  };
});

async function inFlight(): Promise<number | undefined> {
  const text = (await adminGet(edge.edge.admin!.port, '/metrics')).body;
  return metric(text, 'matrix_edge_upstream_requests_in_flight', { upstream: 'homeserver' });
}

/** A fresh client's request is answered within `ms`, over HTTP/2 and over HTTP/1.1. */
async function answeredWithin(ms: number): Promise<void> {
  const session = connectH2(port, edge.ca).on('error', () => undefined);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const reply = await Promise.race([
      Promise.all([h2request({ port, ca: edge.ca, path: '/_matrix/client/versions', session }), request({ port, ca: edge.ca, path: '/_matrix/client/versions' })]),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms))),
    ]);
    expect(reply.map((r) => r.status)).toEqual([200, 200]);
    expect(performance.now() - started).toBeLessThan(ms);
  } finally {
    clearTimeout(timer);
    session.destroy();
  }
}

/** Open `count` streams on `session` to `path` and reset each when `when` says. */
function storm(session: http2.ClientHttp2Session, path: string, count: number, when: 'at-once' | 'on-headers' | 'on-data'): Promise<void> {
  const done: Array<Promise<void>> = [];
  for (let i = 0; i < count; i++) {
    const stream = session.request({ ':path': `${path}?i=${i}`, ':authority': `localhost:${port}` });
    stream.on('error', () => undefined);
    done.push(new Promise<void>((resolve) => stream.once('close', () => resolve())));
    const reset = (): void => void stream.close(http2.constants.NGHTTP2_CANCEL);
    if (when === 'at-once') setImmediate(reset);
    else if (when === 'on-headers') stream.once('response', reset);
    else stream.once('data', reset);
  }
  return Promise.all(done).then(() => undefined);
}

test('500 HTTP/2 streams reset while waiting for the answer: fresh requests answered within a second, nothing left upstream', async () => {
  const sessions = Array.from({ length: 4 }, () => connectH2(port, edge.ca).on('error', () => undefined));
  // Reset once the request has reached the upstream (it answers after 150 ms).
  const before = upstream.open;
  await Promise.all(
    sessions.map(
      (s) =>
        new Promise<void>((resolve) => {
          let left = 125;
          for (let i = 0; i < 125; i++) {
            const stream = s.request({ ':path': `/_matrix/client/v3/slow?i=${i}`, ':authority': `localhost:${port}` });
            stream.on('error', () => undefined);
            setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 60);
            stream.once('close', () => --left === 0 && resolve());
          }
        }),
    ),
  );
  for (const s of sessions) s.close();
  await answeredWithin(1000);
  await waitFor('no request in flight upstream', () => upstream.open <= before, 3000);
  await expect(inFlight()).resolves.toBe(0);
  const cancelled = (): Array<Record<string, unknown>> =>
    edge.logs.filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.startsWith('/_matrix/client/v3/slow'));
  // Streams the client had not sent yet when it reset them (beyond the server's initial stream
  // limit) never reach the edge; the others each leave one line.
  await waitFor('the access lines', () => cancelled().length >= 400);
  expect(cancelled().filter((l) => l.status !== 499 || l.abort !== 'client-gone')).toEqual([]);
  // Some had reached the upstream and waited for its answer; the others waited for a connection.
  const phases = cancelled().map((l) => l.phase);
  expect(phases.filter((p) => p === 'waiting').length).toBeGreaterThan(0);
  expect(phases.filter((p) => p === 'queued').length).toBeGreaterThan(0);
  expect(phases.every((p) => p === 'waiting' || p === 'queued' || p === 'request')).toBe(true);
});

test.each(['at-once', 'on-headers', 'on-data'] as const)('storms of resets %s on HTTP/2 leave the pool free', async (when) => {
  const sessions = Array.from({ length: 4 }, () => connectH2(port, edge.ca).on('error', () => undefined));
  await Promise.all(sessions.map((s) => storm(s, when === 'at-once' ? '/_matrix/client/v3/slow' : '/_matrix/client/v3/drip', 200, when)));
  for (const s of sessions) s.close();
  await answeredWithin(1000);
  await waitFor('in flight back to 0', () => upstream.open === 0, 5000);
  await expect(inFlight()).resolves.toBe(0);
});

test('a session destroyed (TCP gone) with 100 streams mid-response frees every upstream connection', async () => {
  for (let round = 0; round < 3; round++) {
    const session = connectH2(port, edge.ca);
    session.on('error', () => undefined);
    // Destroyed once the pool's connections all stream a response: the other streams wait for one.
    let started = 0;
    await new Promise<void>((resolve) => {
      for (let i = 0; i < 100; i++) {
        const stream = session.request({ ':path': `/_matrix/client/v3/drip?r=${round}&i=${i}`, ':authority': `localhost:${port}` });
        stream.on('error', () => undefined);
        stream.once('response', () => ++started === POOL && resolve());
      }
    });
    session.destroy();
  }
  await answeredWithin(1000);
  await waitFor('upstream requests closed', () => upstream.open === 0, 5000);
  await expect(inFlight()).resolves.toBe(0);
});

test('HTTP/1.1 clients that disconnect before and after the response headers free their upstream connections', async () => {
  const cut = (path: string, after: 'sent' | 'headers'): Promise<void> =>
    new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: edge.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
        socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
        if (after === 'sent') setTimeout(() => socket.destroy(), 50);
      });
      socket.on('data', () => after === 'headers' && socket.destroy());
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
    });
  const cuts: Array<Promise<void>> = [];
  for (let i = 0; i < 60; i++) cuts.push(cut(`/_matrix/client/v3/slow?h1=${i}`, 'sent'), cut(`/_matrix/client/v3/drip?h1=${i}`, 'headers'));
  await Promise.all(cuts);
  await answeredWithin(1000);
  await waitFor('upstream requests closed', () => upstream.open === 0, 5000);
  await expect(inFlight()).resolves.toBe(0);
  const lines = (): Array<Record<string, unknown>> => edge.logs.filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes('h1='));
  await waitFor('120 access lines', () => lines().length === 120);
  expect(lines().filter((l) => l.status !== 499)).toEqual([]);
  expect(new Set(lines().filter((l) => String(l.path).includes('/drip')).map((l) => l.phase))).toEqual(new Set(['response']));
});

test('aborts are counted by cause in the metrics', async () => {
  const text = (await adminGet(edge.edge.admin!.port, '/metrics')).body;
  expect(metric(text, 'matrix_edge_upstream_aborts_total', { upstream: 'homeserver', cause: 'client-gone' })).toBeGreaterThanOrEqual(500);
  expect(metric(text, 'matrix_edge_upstream_capacity', { upstream: 'homeserver' })).toBe(POOL);
});
