/**
 * The edge's bounds, each through a real edge configured for it: /readyz reports a saturated
 * upstream pool and recovers; long polls outlive the idle timeout while idle connections do not;
 * the connection cap refuses at once, logs once, counts, and lets go; a silent TCP connection is
 * closed after the handshake timeout; a request that finds no free upstream connection within the
 * queue timeout gets 503 while the held one completes.
 *
 * Every test needs a config key the hardening added (limits.*, proxy.queue_timeout): on the code
 * before it (0e5a331) each edge's config is rejected, which is itself the failure.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { connectH2, h2request, KeepAliveConn, request } from '../support/client';
import { startTestEdge, teardownAfterEach, type TestEdge } from '../support/edge';
import { accessLinesSince, scrape, sumOf, waitForAsync } from '../support/figures';
import { adminGet } from '../support/metrics';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

let upstream: Upstream;
const per = teardownAfterEach('matrix-edge-limits-');
/** Requests the stand-in holds (paths with "hold"), answered by release(). */
const held: Array<{ res: http.ServerResponse; target: string }> = [];
const timers = new Set<NodeJS.Timeout>();

beforeAll(async () => {
  upstream = await startUpstream();
});

beforeEach(() => {
  upstream.behaviour = (req, res, record) => {
    if (req.url!.includes('hold')) {
      record().then(
        () => held.push({ res, target: req.url! }),
        () => undefined,
      );
      return;
    }
    echo(req, res, record);
  };
});

afterEach(() => {
  for (const t of timers) clearTimeout(t);
  timers.clear();
  for (const h of held.splice(0)) h.res.destroy();
});

afterAll(async () => {
  await upstream.close();
});

/** Answer every held request: 200 with a JSON body naming its target. */
function release(): void {
  for (const { res, target } of held.splice(0)) {
    if (res.destroyed) continue;
    const body = JSON.stringify({ released: target });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}

async function site(more: string): Promise<TestEdge> {
  return per.keep(
    await startTestEdge(
      `server_name: localhost
listen: { https: [8443], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
${more}`,
      { dir: per.newDir() },
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// 12. /readyz

test('/readyz is 503 naming the pool while every upstream connection is taken and requests wait; 200 again once released', async () => {
  const edge = await site('proxy: { connections: 2, queue_timeout: 0s }\n');
  const port = edge.httpsPorts[0]!;
  const admin = edge.edge.admin!.port;
  const ready = await adminGet(admin, '/readyz');
  expect([ready.status, ready.body]).toEqual([200, expect.stringContaining('ready')]);

  const session = connectH2(port, edge.ca).on('error', () => undefined);
  per.onEnd(async () => session.destroy());
  const pending = Array.from({ length: 5 }, (_v, i) => h2request({ port, ca: edge.ca, path: `/_matrix/client/v3/sync?hold=${i}`, session }));
  for (const p of pending) p.catch(() => undefined);
  await waitFor('two requests held upstream (the pool is 2)', () => held.length === 2, 3000);
  await waitForAsync('three requests queued', async () => sumOf(await scrape(edge), 'matrix_edge_upstream_requests_queued') === 3);

  const busy = await adminGet(admin, '/readyz');
  expect(busy.status).toBe(503);
  const missing = (JSON.parse(busy.body) as { missing: Array<{ check: string; upstream?: string; problem: string }> }).missing;
  const pool = missing.filter((m) => m.check === 'pool');
  expect(pool).toEqual([{ check: 'pool', upstream: 'homeserver', problem: expect.stringMatching(/saturated|waited/) }]);

  // Released (and no more held): the queued ones get the freed connections and are answered too.
  upstream.behaviour = echo;
  release();
  const replies = await Promise.all(pending);
  expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  expect(upstream.requests.filter((r) => r.target.includes('hold=')).length).toBe(5);
  await waitForAsync('/readyz 200 again', async () => (await adminGet(admin, '/readyz')).status === 200, 3000);
}, 15_000);

// ---------------------------------------------------------------------------------------------
// 13. Idle timeouts and long polls

describe('limits.idle_timeout: 1s', () => {
  const LONG_POLL_MS = 3000;
  const BODY = JSON.stringify({ next_batch: 's1', rooms: { join: {} }, pad: 'x'.repeat(100_000) });

  beforeEach(() => {
    upstream.behaviour = (req, res, record) => {
      record().then(
        () => {
          const t = setTimeout(() => {
            timers.delete(t);
            if (res.destroyed) return;
            res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) });
            res.end(BODY);
          }, LONG_POLL_MS);
          timers.add(t);
        },
        () => undefined,
      );
    };
  });

  // Node's Http2Session timeout fires once and is not re-armed by later activity: it fired during
  // the long poll (a stream open: no close) and never again, so the session stayed open for good.
  // The edge's own timer restarts when the last stream closes.
  test('HTTP/2: a /sync answered after 3 s arrives whole; then the idle session is closed by the edge', async () => {
    const edge = await site('limits: { idle_timeout: 1s }\n');
    const session = connectH2(edge.httpsPorts[0]!, edge.ca).on('error', () => undefined);
    per.onEnd(async () => session.destroy());
    let goaway = false;
    let closedAt = 0;
    session.on('goaway', () => (goaway = true));
    session.on('close', () => (closedAt = performance.now()));
    const started = performance.now();
    const reply = await h2request({ port: edge.httpsPorts[0]!, ca: edge.ca, path: '/_matrix/client/v3/sync?timeout=30000', session });
    const answeredAt = performance.now();
    expect(reply.status).toBe(200);
    expect(reply.body.toString('utf8')).toBe(BODY);
    expect(answeredAt - started).toBeGreaterThanOrEqual(LONG_POLL_MS - 100);
    expect(session.closed || session.destroyed).toBe(false);
    await waitFor('the edge to close the idle session', () => closedAt > 0, 4000);
    expect(goaway).toBe(true);
    expect(closedAt - answeredAt).toBeLessThan(4000);
  }, 15_000);

  test('HTTP/2: a session idle after a quick answer is closed by the edge (GOAWAY) within a few seconds', async () => {
    upstream.behaviour = echo;
    const edge = await site('limits: { idle_timeout: 1s }\n');
    const session = connectH2(edge.httpsPorts[0]!, edge.ca).on('error', () => undefined);
    per.onEnd(async () => session.destroy());
    let goaway = false;
    let closedAt = 0;
    session.on('goaway', () => (goaway = true));
    session.on('close', () => (closedAt = performance.now()));
    const reply = await h2request({ port: edge.httpsPorts[0]!, ca: edge.ca, path: '/_matrix/client/versions', session });
    const answeredAt = performance.now();
    expect(reply.status).toBe(200);
    await waitFor('the edge to close the idle session', () => closedAt > 0, 4000);
    expect(goaway).toBe(true);
    expect(closedAt - answeredAt).toBeGreaterThan(800);
  });

  test('HTTP/1.1: a /sync answered after 3 s arrives whole; then the idle keep-alive connection is closed by the edge', async () => {
    const edge = await site('limits: { idle_timeout: 1s }\n');
    const conn = KeepAliveConn.open(edge.httpsPorts[0]!, edge.ca);
    per.onEnd(async () => conn.close());
    await conn.ready;
    const started = performance.now();
    const answer = await conn.get('/_matrix/client/v3/sync?timeout=30000');
    const answeredAt = performance.now();
    expect(answer?.status).toBe(200);
    expect(answer?.body).toBe(BODY);
    expect(answeredAt - started).toBeGreaterThanOrEqual(LONG_POLL_MS - 100);
    expect(conn.closed).toBe(false);
    await waitFor('the edge to close the idle connection', () => conn.closed, 4000);
  }, 15_000);
});

// ---------------------------------------------------------------------------------------------
// 14. Connection cap

/** A TLS connection to the edge: resolves 'open' once the handshake is done, or 'refused' when closed before it. */
function connectTls(port: number, ca: string, keep: tls.TLSSocket[]): Promise<'open' | 'refused'> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    keep.push(socket);
    socket.on('error', () => undefined);
    socket.once('secureConnect', () => resolve('open'));
    socket.once('close', () => resolve('refused'));
  });
}

test('limits.max_connections: 5 — a sixth connection is closed at once, logged once, counted; after the five close, new ones are served', async () => {
  const edge = await site('limits: { max_connections: 5 }\n');
  const port = edge.httpsPorts[0]!;
  const sockets: tls.TLSSocket[] = [];
  per.onEnd(async () => sockets.forEach((s) => s.destroy()));
  const five = await Promise.all(Array.from({ length: 5 }, () => connectTls(port, edge.ca, sockets)));
  expect(five).toEqual(['open', 'open', 'open', 'open', 'open']);

  const refused: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      connectTls(port, edge.ca, sockets),
      new Promise<'still open'>((r) => (timer = setTimeout(() => r('still open'), 2000))),
    ]).finally(() => clearTimeout(timer));
    expect(outcome).toBe('refused');
    refused.push(performance.now() - started);
  }
  expect(Math.max(...refused)).toBeLessThan(1000);

  const warned = (): Array<Record<string, unknown>> => edge.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('connection limit reached'));
  await waitFor('the connection-limit line', () => warned().length > 0, 2000);
  expect(warned().length).toBe(1);
  expect(warned()[0]).toMatchObject({ level: 'warn', refused: expect.any(Number) });
  expect(warned()[0]!.refused as number).toBeGreaterThanOrEqual(1);
  const figures = await scrape(edge);
  expect(sumOf(figures, 'matrix_edge_connections_refused_total')).toBe(3);

  for (const s of sockets) s.destroy();
  await waitForAsync('the edge to see the five closed', async () => sumOf(await scrape(edge), 'matrix_edge_open_connections') === 0, 3000);
  const one = await request({ port, ca: edge.ca, path: '/_matrix/client/versions' });
  const two = await h2request({ port, ca: edge.ca, path: '/_matrix/client/versions' });
  expect([one.status, two.status]).toEqual([200, 200]);
  expect(warned().length).toBe(1);
}, 15_000);

// ---------------------------------------------------------------------------------------------
// 15. TLS handshake timeout

describe('limits.handshake_timeout: 1s', () => {
  /** Open a TCP connection, send `bytes` (maybe nothing), and time how long until the edge closes it (bounded). */
  function closedAfter(port: number, bytes: Buffer | null): Promise<number> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('the silent connection was still open after 5 s'));
      }, 5000);
      let started = 0;
      socket.once('connect', () => {
        started = performance.now();
        if (bytes !== null) socket.write(bytes);
      });
      socket.on('error', () => undefined);
      socket.resume();
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
    });
  }

  test('a TCP connection that sends nothing is closed within ~2 s', async () => {
    const edge = await site('limits: { handshake_timeout: 1s }\n');
    const ms = await closedAfter(edge.httpsPorts[0]!, null);
    expect(ms).toBeGreaterThan(800);
    expect(ms).toBeLessThan(2000);
  });

  test('a TCP connection that sends part of a ClientHello and stops is closed within ~2 s', async () => {
    const edge = await site('limits: { handshake_timeout: 1s }\n');
    // A handshake record header announcing 512 bytes, and 4 of them.
    const ms = await closedAfter(edge.httpsPorts[0]!, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]));
    expect(ms).toBeGreaterThan(800);
    expect(ms).toBeLessThan(2000);
  });
});

// ---------------------------------------------------------------------------------------------
// 16. Queue timeout

test('proxy: { connections: 1, queue_timeout: 500ms } — while one request is held, others get 503 with Retry-After within ~1 s; the held one completes', async () => {
  const edge = await site('proxy: { connections: 1, queue_timeout: 500ms }\n');
  const port = edge.httpsPorts[0]!;
  const from = edge.logs.length;
  const first = request({ port, ca: edge.ca, path: '/_matrix/client/v3/sync?hold=first' });
  first.catch(() => undefined);
  await waitFor('the first request held upstream', () => held.length === 1, 3000);

  for (const [proto, send] of [
    ['HTTP/1.1', () => request({ port, ca: edge.ca, path: '/_matrix/client/v3/sync?queued=h1' })],
    ['HTTP/2', () => h2request({ port, ca: edge.ca, path: '/_matrix/client/v3/sync?queued=h2' })],
  ] as const) {
    const started = performance.now();
    const reply = await send();
    const ms = performance.now() - started;
    expect([proto, reply.status, reply.headers['retry-after']]).toEqual([proto, 503, '1']);
    expect(reply.headers['content-type']).toBe('application/json');
    const body = reply.json();
    expect(body.errcode).toMatch(/^M_[A-Z_]+$/);
    expect(typeof body.error).toBe('string');
    expect(ms).toBeGreaterThan(400);
    expect(ms).toBeLessThan(1500);
  }
  // Neither reached the homeserver.
  expect(upstream.requests.filter((r) => r.target.includes('queued='))).toEqual([]);
  await waitFor('their access lines', () => accessLinesSince(edge, from).filter((l) => String(l.path).includes('queued=')).length === 2, 2000);
  const lines = accessLinesSince(edge, from).filter((l) => String(l.path).includes('queued='));
  expect(lines.map((l) => [l.status, l.abort, l.phase])).toEqual([
    [503, 'queue-timeout', 'queued'],
    [503, 'queue-timeout', 'queued'],
  ]);

  release();
  const done = await first;
  expect(done.status).toBe(200);
  expect(done.json()).toEqual({ released: '/_matrix/client/v3/sync?hold=first' });
  await waitFor('the held one’s access line', () => accessLinesSince(edge, from).some((l) => l.path === '/_matrix/client/v3/sync?hold=first'), 2000);
  const heldLine = accessLinesSince(edge, from).find((l) => l.path === '/_matrix/client/v3/sync?hold=first')!;
  expect([heldLine.status, heldLine.abort]).toEqual([200, undefined]);
}, 15_000);
