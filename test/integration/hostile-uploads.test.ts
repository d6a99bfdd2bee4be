/**
 * Hostile clients, part 2: uploads that stall, trickle or get cut, and clients that do not read.
 * One client's misbehaviour costs the others nothing (they are answered promptly meanwhile), a
 * body that ends short never reaches the homeserver as complete, and every stuck exchange ends
 * within its configured bound.
 *
 * Clients have their own loopback addresses (127.0.0.x), so per-address shares apply as on the
 * internet: the hostile client is one peer, the well-behaved one another.
 */
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { connectH2, h2request, request } from '../support/client';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { ErrorCode, H2Connection } from '../support/h2raw';
import { adminGet, metric } from '../support/metrics';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

let upstream: Upstream;
let edge: TestEdge;
let port: number;

const HOSTILE = '127.0.0.2';
const POLITE = '127.0.0.3';
const PER_ADDRESS = 50;
const BIG = Buffer.alloc(2 * 1024 * 1024, 'z');

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(
    `server_name: localhost
listen: { https: [8443], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
proxy:
  connections: 64
  body_idle_timeout: 2s
  send_timeout: 2s
  queue_timeout: 3s
  max_requests_per_connection: 20
  max_requests_per_address: ${PER_ADDRESS}
`,
    { dir: tempDir('matrix-edge-uploads-') },
  );
  port = edge.httpsPorts[0]!;
});

afterAll(async () => {
  await edge.stop();
  await upstream.close();
});

beforeEach(() => {
  // /big: a 2 MiB download; the rest echoed (the body read whole first).
  upstream.behaviour = (req, res, record) => {
    if (req.url!.startsWith('/_matrix/media/v3/download/big')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
      res.end(BIG);
      return;
    }
    echo(req, res, record);
  };
});

async function inFlight(): Promise<number | undefined> {
  const text = (await adminGet(edge.edge.admin!.port, '/metrics')).body;
  return metric(text, 'matrix_edge_upstream_requests_in_flight', { upstream: 'homeserver' });
}

/** The polite client (its own address) is answered within a second, on HTTP/2 and HTTP/1.1, `times` times. */
async function politeAnswered(times = 5): Promise<void> {
  const session = connectH2(port, edge.ca, 'localhost', '127.0.0.1', POLITE).on('error', () => undefined);
  try {
    for (let i = 0; i < times; i++) {
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const replies = await Promise.race([
        Promise.all([
          h2request({ port, ca: edge.ca, path: `/_matrix/client/versions?polite=${i}`, session }),
          request({ port, ca: edge.ca, path: `/_matrix/client/versions?polite=${i}`, localAddress: POLITE }),
        ]),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the polite client was not answered within 1 s')), 1000))),
      ]).finally(() => clearTimeout(timer));
      expect(replies.map((r) => r.status)).toEqual([200, 200]);
      expect(performance.now() - started).toBeLessThan(1000);
    }
  } finally {
    session.destroy();
  }
}

function accessLines(match: (path: string) => boolean): Array<Record<string, unknown>> {
  return edge.logs.filter((l) => l.msg === 'request' && typeof l.path === 'string' && match(l.path));
}

test('600 stalled uploads from one address: others are answered meanwhile; the stalled ones get 429 or, after the idle timeout, 408 and an aborted upstream request', async () => {
  const sessions = Array.from({ length: 6 }, () => connectH2(port, edge.ca, 'localhost', '127.0.0.1', HOSTILE).on('error', () => undefined));
  const statuses: number[] = [];
  const finished = sessions.flatMap((session, s) =>
    Array.from({ length: 100 }, (_, i) => {
      const stream = session.request({ ':method': 'POST', ':path': `/_matrix/media/v3/upload?stall=${s}-${i}`, ':authority': `localhost:${port}`, 'content-length': '1000' });
      stream.on('error', () => undefined);
      stream.write(Buffer.from('x'));
      stream.resume();
      return new Promise<void>((resolve) => {
        stream.once('response', (h) => statuses.push(Number(h[':status'])));
        stream.once('close', () => resolve());
      });
    }),
  );
  await waitFor('the refusals beyond the share', () => statuses.filter((s) => s === 429).length >= 600 - PER_ADDRESS).catch((err: Error) => {
    throw new Error(`${err.message}: statuses ${statuses.join(',')}`);
  });
  await politeAnswered();
  await Promise.all(finished);
  for (const s of sessions) s.destroy();
  expect(statuses.filter((s) => s === 408).length).toBe(PER_ADDRESS);
  expect(statuses.filter((s) => s !== 408 && s !== 429)).toEqual([]);
  // The homeserver saw PER_ADDRESS uploads begin and every one of them cut; none completed.
  expect(upstream.requests.filter((r) => r.target.includes('stall='))).toEqual([]);
  await waitFor('the stalled uploads cut upstream', () => upstream.cuts.filter((c) => c.target.includes('stall=')).length === PER_ADDRESS);
  await expect(inFlight()).resolves.toBe(0);
  const idle = accessLines((p) => p.includes('stall=')).filter((l) => l.status === 408);
  expect(idle.length).toBe(PER_ADDRESS);
  expect(idle.every((l) => l.abort === 'body-idle' && l.phase === 'request')).toBe(true);
}, 20_000);

test('trickled uploads (a few bytes every 400 ms, under the idle timeout) cost others nothing and arrive whole', async () => {
  const session = connectH2(port, edge.ca, 'localhost', '127.0.0.1', HOSTILE).on('error', () => undefined);
  const done: Array<Promise<number>> = [];
  const streams: http2.ClientHttp2Stream[] = [];
  for (let i = 0; i < 20; i++) {
    const stream = session.request({ ':method': 'PUT', ':path': `/_matrix/client/v3/trickle/${i}`, ':authority': `localhost:${port}` });
    stream.resume();
    streams.push(stream);
    done.push(new Promise((resolve) => stream.once('response', (h) => resolve(Number(h[':status'])))));
  }
  for (let tick = 0; tick < 8; tick++) {
    for (const s of streams) s.write('abcd');
    await politeAnswered(1);
    await new Promise((r) => setTimeout(r, 400));
  }
  for (const s of streams) s.end('!');
  expect(await Promise.all(done)).toEqual(new Array(20).fill(200));
  const arrived = upstream.requests.filter((r) => r.target.startsWith('/_matrix/client/v3/trickle/'));
  expect(arrived.length).toBe(20);
  expect(arrived.every((r) => r.bodyLength === 8 * 4 + 1)).toBe(true);
  session.destroy();
}, 20_000);

test('clients that stop reading (zero window) are cut after the send timeout; others are answered meanwhile', async () => {
  const conns = await Promise.all(Array.from({ length: 2 }, () => H2Connection.connect({ port, ca: edge.ca, localAddress: HOSTILE, autoWindowUpdate: false })));
  const ids = conns.map((c) =>
    Array.from({ length: 20 }, (_, i) =>
      c.request([
        [':method', 'GET'],
        [':scheme', 'https'],
        [':path', `/_matrix/media/v3/download/big?zero=${i}`],
        [':authority', 'localhost'],
      ]),
    ),
  );
  await waitFor('every stream has its response headers', () => conns.every((c, n) => ids[n]!.every((id) => c.streams.get(id)?.status === 200)));
  await politeAnswered();
  await waitFor(
    'the stuck streams reset',
    () => conns.every((c, n) => ids[n]!.every((id) => c.streams.get(id)?.resetCode !== null || c.isClosed)),
    6000,
  );
  // Reset with an error code, never NO_ERROR: a client must not take the cut download as complete.
  const codes = new Set(conns.flatMap((c, n) => ids[n]!.map((id) => c.streams.get(id)?.resetCode ?? null)));
  expect([...codes]).toEqual([ErrorCode.INTERNAL_ERROR]);
  for (const c of conns) c.close();
  await expect(inFlight()).resolves.toBe(0);
  const cut = accessLines((p) => p.includes('zero='));
  expect(cut.length).toBe(40);
  expect(cut.every((l) => l.status === 499 && l.abort === 'send-timeout' && l.phase === 'response')).toBe(true);
}, 20_000);

/** Starts an upload of 1,000 bytes of a 5,000-byte (or unknown-length) body and cuts it off as `how` says. */
async function cutUpload(target: string, how: string): Promise<void> {
  const chunk = Buffer.alloc(1000, 'c');
  if (how.startsWith('h1')) {
    const chunked = how === 'h1-chunked';
    const socket = tls.connect({ host: '127.0.0.1', port, ca: edge.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    const framing = chunked ? 'transfer-encoding: chunked' : 'content-length: 5000';
    socket.write(`POST ${target} HTTP/1.1\r\nhost: localhost\r\n${framing}\r\n\r\n`);
    socket.write(chunked ? Buffer.concat([Buffer.from('3e8\r\n'), chunk, Buffer.from('\r\n')]) : chunk);
    await waitFor('the upload to reach the homeserver', () => upstream.open > 0 || upstream.cuts.some((c) => c.target === target));
    socket.destroy();
    return;
  }
  if (how === 'h2-tcp') {
    const session = connectH2(port, edge.ca).on('error', () => undefined);
    const stream = session.request({ ':method': 'POST', ':path': target, ':authority': 'localhost' });
    stream.on('error', () => undefined);
    stream.write(chunk);
    await waitFor('the upload to reach the homeserver', () => upstream.open > 0);
    session.destroy();
    return;
  }
  const conn = await H2Connection.connect({ port, ca: edge.ca });
  const headers: Array<[string, string]> = [
    [':method', 'POST'],
    [':scheme', 'https'],
    [':path', target],
    [':authority', 'localhost'],
  ];
  if (how === 'h2-length-rst') headers.push(['content-length', '5000']);
  const id = conn.request(headers, { endStream: false });
  conn.data(id, chunk);
  await waitFor('the upload to reach the homeserver', () => upstream.open > 0);
  if (how === 'h2-goaway') conn.close();
  else conn.rst(id, how === 'h2-rst-no-error' ? ErrorCode.NO_ERROR : ErrorCode.CANCEL);
  await waitFor('the edge to answer or reset', () => conn.isClosed || conn.streams.get(id)?.resetCode !== null || conn.streams.get(id)?.ended === true);
  conn.close();
}

test('cut uploads, with and without Content-Length, on both protocols, never reach the homeserver as complete', async () => {
  const ways = ['h1-length', 'h1-chunked', 'h2-length-rst', 'h2-chunked-rst', 'h2-rst-no-error', 'h2-goaway', 'h2-tcp'];
  for (const how of ways) {
    const target = `/_matrix/media/v3/upload?cut=${how}`;
    await cutUpload(target, how);
    await waitFor(`${how}: the homeserver saw the upload cut`, () => upstream.cuts.some((c) => c.target === target));
    await waitFor(`${how}: the access line`, () => accessLines((p) => p === target).length === 1);
  }
  const completed = upstream.requests.filter((r) => r.target.includes('cut='));
  expect(completed.map((r) => `${r.target} ${r.bodyLength} bytes`)).toEqual([]);
  const lines = accessLines((p) => p.includes('cut='));
  expect(lines.filter((l) => l.status !== 499)).toEqual([]);
  // The HTTP/1.1 parser's complaint about the early end of a cut upload is not a second request.
  expect(edge.logs.filter((l) => l.msg === 'request' && l.route === 'reject')).toEqual([]);
  expect(lines.every((l) => l.abort === 'body-cut' || l.abort === 'client-gone')).toBe(true);
  await expect(inFlight()).resolves.toBe(0);
});
