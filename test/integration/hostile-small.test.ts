/**
 * Hostile clients, part 3: small odd requests, each answered on its own terms. Requests Node's
 * HTTP/1.1 parser refuses get a Matrix JSON answer with an access line and a count; 103 Early
 * Hints are relayed; CONNECT and methods HTTP/1.1 cannot carry get 405 on both protocols;
 * `Connection` cannot strip Host or Content-Length; one header limit holds on both protocols;
 * forwarding headers from untrusted clients are dropped; control characters never reach a log
 * raw; strict SNI/Host when asked for.
 *
 * Each test says what the client gets, what the homeserver stand-in received (usually nothing),
 * and where it matters the access line and matrix_edge_requests_total.
 *
 * Tests that need a config key the hardening added (limits.*, tls.strict_sni_host) start their own
 * edge: on the code before it (0e5a331) that config is rejected, which is itself the failure.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import { connectH2, h2request, request, type Reply } from '../support/client';
import { startTestEdge, teardownAfterEach, tempDir, type TestEdge } from '../support/edge';
import { accessLinesSince, requestsTotal } from '../support/figures';
import { H2Connection, headerValue } from '../support/h2raw';
import { headerOf, rawExchange, type RawExchange, type RawResponse } from '../support/raw-h1';
import { startRoomyUpstream } from '../support/roomy-upstream';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';
import { formatPretty } from '../../src/observe/pretty';

const ALLOW = 'GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH';
const HSTS = 'max-age=31536000';
/** C0, DEL and C1 controls: none may appear raw in a log line. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

let upstream: Upstream;
let edge: TestEdge;
let port: number;
const mainDir = tempDir('matrix-edge-small-');
const per = teardownAfterEach('matrix-edge-small-');
const opened: Array<{ close(): void }> = [];

function siteYaml(upstreamUrl: string, o: { tls?: string; more?: string } = {}): string {
  return `server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: null }
upstream: ${upstreamUrl}
tls: { issuer: internal${o.tls ?? ''} }
storage: ./certs
${o.more ?? ''}`;
}

/** An edge of its own for one test (stopped after it), in front of the shared stand-in unless told. */
async function ownEdge(o: { tls?: string; more?: string; upstreamUrl?: string } = {}): Promise<TestEdge> {
  return per.keep(await startTestEdge(siteYaml(o.upstreamUrl ?? upstream.url, o), { dir: per.newDir() }));
}

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(siteYaml(upstream.url), { dir: mainDir });
  port = edge.httpsPorts[0]!;
});

afterEach(() => {
  upstream.behaviour = echo;
  for (const c of opened.splice(0)) c.close();
});

afterAll(async () => {
  await edge.stop(0);
  await upstream.close();
  fs.rmSync(mainDir, { recursive: true, force: true });
});

/** `p`, or a rejection naming `what` after `ms` (a late rejection of `p` is not left unhandled). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The one final response of a raw exchange (its text in the failure message otherwise). */
function only(ex: RawExchange): RawResponse {
  const finals = ex.responses.filter((r) => r.status >= 200);
  if (finals.length !== 1) throw new Error(`expected one response, got ${finals.length}: ${JSON.stringify(ex.text.slice(0, 400))}`);
  return finals[0]!;
}

/** A Matrix JSON error body: errcode and error strings (errcode exactly, when given). */
function expectMatrixJson(body: Buffer, errcode?: string): void {
  const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  expect(typeof parsed.errcode).toBe('string');
  expect(parsed.errcode).toMatch(/^M_[A-Z_]+$/);
  expect(typeof parsed.error).toBe('string');
  if (errcode !== undefined) expect(parsed.errcode).toBe(errcode);
}

/** The access line written for the one request made since `from` that got `status`. */
async function accessLine(on: TestEdge, from: number, status: number): Promise<Record<string, unknown>> {
  await waitFor(`an access line with status ${status}`, () => accessLinesSince(on, from).some((l) => l.status === status), 2000);
  const lines = accessLinesSince(on, from).filter((l) => l.status === status);
  expect(lines.length).toBe(1);
  return lines[0]!;
}

// ---------------------------------------------------------------------------------------------
// 1. HTTP/1.1 requests the parser refuses

describe('HTTP/1.1 requests Node’s parser refuses get a Matrix JSON answer, an access line and a count', () => {
  /** A refusal as every parser-refused request gets it: Matrix JSON, CORS, HSTS, Connection: close, then the close. */
  async function expectRefusal(on: TestEdge, bytes: string, status: number, opts: { errcode?: string; error: RegExp; then?: { afterMs: number; bytes: string } }): Promise<RawExchange> {
    const before = { forwarded: upstream.requests.length, cuts: upstream.cuts.length, logs: on.logs.length, count: await requestsTotal(on, 'reject', status) };
    const ex = await rawExchange(on.httpsPorts[0]!, on.ca, bytes, { untilClose: true, timeoutMs: 5000, ...(opts.then === undefined ? {} : { then: opts.then }) });
    const r = only(ex);
    expect(r.status).toBe(status);
    expect(headerOf(r, 'content-type')).toBe('application/json');
    expectMatrixJson(r.body, opts.errcode);
    expect(headerOf(r, 'access-control-allow-origin')).toBe('*');
    expect(headerOf(r, 'access-control-allow-methods')).toContain('GET');
    expect(headerOf(r, 'strict-transport-security')).toBe(HSTS);
    expect(headerOf(r, 'connection')).toBe('close');
    expect(ex.closed).toBe(true);
    const line = await accessLine(on, before.logs, status);
    expect(line).toMatchObject({ route: 'reject', status });
    expect(String(line.error)).toMatch(opts.error);
    await expect(requestsTotal(on, 'reject', status)).resolves.toBe(before.count + 1);
    expect(upstream.requests.length).toBe(before.forwarded);
    expect(upstream.cuts.length).toBe(before.cuts);
    return ex;
  }

  test('a malformed header line → 400', async () => {
    await expectRefusal(edge, 'GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nthis is not a header line\r\n\r\n', 400, { error: /HPE_/ });
  });

  test('headers over limits.max_header_size (default 32 KiB) → 431 M_TOO_LARGE', async () => {
    const ex = await expectRefusal(edge, `GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nx-big: ${'a'.repeat(40_000)}\r\n\r\n`, 431, {
      errcode: 'M_TOO_LARGE',
      error: /HPE_HEADER_OVERFLOW/,
    });
    expect(only(ex).reason).toBe('Request Header Fields Too Large');
  });

  test.each([
    ['lowercase get', 'get'],
    ['unknown FOO', 'FOO'],
  ])('%s → 405 with Allow', async (_what, method) => {
    const ex = await expectRefusal(edge, `${method} /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n`, 405, { errcode: 'M_UNRECOGNIZED', error: /HPE_INVALID_METHOD/ });
    expect(headerOf(only(ex), 'allow')).toBe(ALLOW);
  });

  // New config key (limits.header_timeout): on 0e5a331 this config is rejected.
  test('headers that never complete, with limits.header_timeout: 1s → 408 after about a second, never minutes', async () => {
    const slow = await ownEdge({ more: 'limits: { header_timeout: 1s }\n' });
    const ex = await expectRefusal(slow, 'GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nX-Part', 408, {
      error: /TIMEOUT/,
      // More of the header section trickles in, never its end.
      then: { afterMs: 300, bytes: 'ial: 1\r\n' },
    });
    expect(ex.ms).toBeGreaterThan(900);
    expect(ex.ms).toBeLessThan(3000);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. 103 Early Hints

describe('an upstream 103 Early Hints', () => {
  const LINK = '</a.css>; rel=preload; as=style';
  const BODY = Buffer.from(JSON.stringify({ versions: ['v1.11'], pad: 'p'.repeat(20_000) }));

  beforeEach(() => {
    upstream.behaviour = (_req, res, record) => {
      record().then(
        () => {
          res.writeEarlyHints({ link: LINK });
          setImmediate(() => {
            if (res.destroyed) return;
            res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
            res.end(BODY);
          });
        },
        () => undefined,
      );
    };
  });

  test('HTTP/1.1: the 103 with its Link, then the whole 200 with its body', async () => {
    const from = edge.logs.length;
    const ex = await rawExchange(port, edge.ca, 'GET /_matrix/client/v3/hints HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(ex.responses.map((r) => r.status)).toEqual([103, 200]);
    expect(headerOf(ex.responses[0]!, 'link')).toBe(LINK);
    expect(ex.responses[1]!.body.equals(BODY)).toBe(true);
    expect((await accessLine(edge, from, 200)).route).not.toBe('reject');
  });

  test('HTTP/2: the 200 with the whole body (and the 103 seen as informational headers)', async () => {
    const session = connectH2(port, edge.ca);
    opened.push(session);
    const informational: http2.IncomingHttpHeaders[] = [];
    const reply = await within(
      3000,
      'the HTTP/2 answer',
      new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const stream = session.request({ ':path': '/_matrix/client/v3/hints', ':authority': `localhost:${port}` });
        stream.on('headers', (h) => informational.push(h));
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (status = Number(h[':status'])));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
        stream.on('error', reject);
      }),
    );
    expect(reply.status).toBe(200);
    expect(reply.body.equals(BODY)).toBe(true);
    expect(informational.map((h) => [h[':status'], h.link])).toEqual([[103, LINK]]);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. CONNECT

describe('CONNECT is never a tunnel', () => {
  test('HTTP/2 CONNECT (:authority localhost:443) → 405 Matrix JSON, nothing forwarded', async () => {
    const before = upstream.requests.length;
    const session = connectH2(port, edge.ca);
    opened.push(session);
    const answer = await within(
      3000,
      'the CONNECT answer',
      new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const stream = session.request({ ':method': 'CONNECT', ':authority': 'localhost:443' });
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (status = Number(h[':status'])));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
        stream.on('error', reject);
        stream.end();
      }),
    );
    expect(answer.status).toBe(405);
    expectMatrixJson(answer.body, 'M_UNRECOGNIZED');
    expect(upstream.requests.length).toBe(before);
    expect(upstream.open).toBe(0);
  });

  test('HTTP/1.1 CONNECT → 405 Matrix JSON, nothing forwarded', async () => {
    const before = upstream.requests.length;
    const ex = await rawExchange(port, edge.ca, 'CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n');
    const r = only(ex);
    expect(r.status).toBe(405);
    expectMatrixJson(r.body, 'M_UNRECOGNIZED');
    expect(upstream.requests.length).toBe(before);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Connection cannot strip Host or Content-Length

describe('Connection does not make the edge drop Host or Content-Length', () => {
  type Seen = { headers: Record<string, string>; bodyLength: number; bodySha256: string; method: string };

  test('GET with Connection: Host → the homeserver gets the Host', async () => {
    const ex = await rawExchange(port, edge.ca, 'GET /_matrix/client/versions?conn=host HTTP/1.1\r\nHost: localhost\r\nConnection: Host\r\n\r\n');
    const r = only(ex);
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body.toString('utf8')) as Seen;
    expect(seen.headers.host).toBe('localhost');
  });

  test('POST with Connection: Content-Length → the homeserver gets the Content-Length and the whole body', async () => {
    // The body follows the headers a moment later, so it is still arriving when the request goes
    // upstream: the length can only come from the client's header, not from a body already read.
    const body = Buffer.alloc(64 * 1024, 'b');
    const ex = await rawExchange(
      port,
      edge.ca,
      `POST /_matrix/client/v3/conn HTTP/1.1\r\nHost: localhost\r\nConnection: Content-Length\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
      { then: { afterMs: 200, bytes: body } },
    );
    const r = only(ex);
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body.toString('utf8')) as Seen;
    expect(seen.method).toBe('POST');
    expect({ length: seen.headers['content-length'], te: seen.headers['transfer-encoding'] }).toEqual({ length: String(body.length), te: undefined });
    expect(seen.bodyLength).toBe(body.length);
    expect(seen.bodySha256).toBe(createHash('sha256').update(body).digest('hex'));
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Methods HTTP/1.1 cannot carry to the homeserver

describe('methods the edge does not carry → 405 with Allow, nothing forwarded', () => {
  test.each(['get', 'FOO', 'TRACE'])('HTTP/2 %s', async (method) => {
    const before = upstream.requests.length;
    const from = edge.logs.length;
    const conn = await H2Connection.connect({ port, ca: edge.ca });
    opened.push(conn);
    const id = conn.request([
      [':method', method],
      [':scheme', 'https'],
      [':path', '/_matrix/client/versions'],
      [':authority', `localhost:${port}`],
    ]);
    const s = await conn.waitFor(id, 'end', 3000);
    expect(s.status).toBe(405);
    expect(headerValue(s.response, 'allow')).toBe(ALLOW);
    expect(headerValue(s.response, 'strict-transport-security')).toBe(HSTS);
    expectMatrixJson(Buffer.concat(s.data), 'M_UNRECOGNIZED');
    expect((await accessLine(edge, from, 405)).route).toBe('reject');
    expect(upstream.requests.length).toBe(before);
    expect(upstream.open).toBe(0);
  });

  test.each(['TRACE', 'PROPFIND'])('HTTP/1.1 %s', async (method) => {
    const before = upstream.requests.length;
    const from = edge.logs.length;
    const ex = await rawExchange(port, edge.ca, `${method} /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    const r = only(ex);
    expect(r.status).toBe(405);
    expect(headerOf(r, 'allow')).toBe(ALLOW);
    expectMatrixJson(r.body, 'M_UNRECOGNIZED');
    expect((await accessLine(edge, from, 405)).route).toBe('reject');
    expect(upstream.requests.length).toBe(before);
  });
});

// ---------------------------------------------------------------------------------------------
// 6. One header limit on both protocols

describe('one header-size limit, the same on HTTP/1.1 and HTTP/2', () => {
  /** `count` fields named x-pad-NNN with values of `size` bytes. */
  const fields = (count: number, size: number): Array<[string, string]> =>
    Array.from({ length: count }, (_v, i) => [`x-pad-${String(i).padStart(3, '0')}`, 'v'.repeat(size)]);

  const h1 = (p: number, ca: string, list: Array<[string, string]>): Promise<RawExchange> =>
    rawExchange(p, ca, `GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n${list.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, { untilClose: false });

  /** HTTP/2 through the raw client: a final answer, or a reset (which the test then reports as such). */
  async function h2(p: number, ca: string, list: Array<[string, string]>): Promise<{ status: number | null; reset: number | null; body: Buffer }> {
    const conn = await H2Connection.connect({ port: p, ca });
    opened.push(conn);
    const id = conn.request([[':method', 'GET'], [':scheme', 'https'], [':path', '/_matrix/client/versions'], [':authority', 'localhost'], ...list]);
    await conn.settle(id, 3000);
    const s = conn.stream(id);
    return { status: s.status, reset: s.resetCode, body: Buffer.concat(s.data) };
  }

  async function expectBoth(on: TestEdge, list: Array<[string, string]>, status: number): Promise<void> {
    const p = on.httpsPorts[0]!;
    const one = only(await h1(p, on.ca, list));
    expect([one.status, one.body.toString('utf8').slice(0, 200)]).toEqual([status, expect.any(String)]);
    const two = await h2(p, on.ca, list);
    expect({ status: two.status, reset: two.reset }).toEqual({ status, reset: null });
    if (status === 431) {
      expectMatrixJson(one.body, 'M_TOO_LARGE');
      expectMatrixJson(two.body, 'M_TOO_LARGE');
    }
  }

  test('default 32 KiB: ~30 KiB pass and ~40 KiB get 431 M_TOO_LARGE on both; 200 small headers pass on both', async () => {
    // The stand-in here takes any header size: what the edge lets through is answered 200.
    const roomy = await startRoomyUpstream();
    per.onEnd(() => roomy.close());
    const site = await ownEdge({ upstreamUrl: roomy.url });
    await expectBoth(site, fields(30, 1000), 200);
    expect(roomy.requests.length).toBe(2);
    await expectBoth(site, fields(40, 1000), 431);
    expect(roomy.requests.length).toBe(2);
    await expectBoth(site, fields(200, 8), 200);
    expect(roomy.requests.length).toBe(4);
    expect(roomy.requests.every((r) => r.rawHeaders.filter((_v, i) => i % 2 === 0 && r.rawHeaders[i]!.startsWith('x-pad-')).length > 0)).toBe(true);
  });

  // New config key (limits.max_header_size): on 0e5a331 this config is rejected.
  test('limits.max_header_size: 8KiB: ~6 KiB pass and 10 KiB get 431 on both', async () => {
    const roomy = await startRoomyUpstream();
    per.onEnd(() => roomy.close());
    const site = await ownEdge({ upstreamUrl: roomy.url, more: 'limits: { max_header_size: 8KiB }\n' });
    await expectBoth(site, fields(6, 1000), 200);
    await expectBoth(site, fields(10, 1000), 431);
    expect(roomy.requests.length).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Forwarding-header families

describe('forwarding headers', () => {
  const FAMILY: Record<string, string> = {
    'x-forwarded-host': 'evil.example',
    'x-forwarded-port': '80',
    'true-client-ip': '6.6.6.1',
    'cf-connecting-ip': '6.6.6.2',
    'fastly-client-ip': '6.6.6.3',
    'x-original-url': '/_synapse/admin/v1/users',
    'x-rewrite-url': '/_synapse/admin/v1/rooms',
    forwarded: 'for=6.6.6.4;host=evil.example;proto=http',
    'x-real-ip': '6.6.6.5',
  };
  type Seen = { headers: Record<string, string> };
  const send = async (on: TestEdge, h2: boolean): Promise<Seen> => {
    const o = { port: on.httpsPorts[0]!, ca: on.ca, path: '/_matrix/client/versions', headers: { ...FAMILY, 'x-forwarded-for': '6.6.6.6' } };
    const reply: Reply = h2 ? await h2request(o) : await request(o);
    expect(reply.status).toBe(200);
    return reply.json<Seen>();
  };

  test.each([
    ['HTTP/1.1', false],
    ['HTTP/2', true],
  ])('from an untrusted client every family is dropped (%s); X-Forwarded-For is the peer', async (_p, h2) => {
    const seen = await send(edge, h2);
    expect(Object.keys(FAMILY).filter((name) => seen.headers[name] !== undefined)).toEqual([]);
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
  });

  test('from a trusted proxy (proxy.trusted_proxies: [127.0.0.1]) they are kept, and X-Forwarded-For appended to', async () => {
    const trusted = await ownEdge({ more: 'proxy: { trusted_proxies: [127.0.0.1] }\n' });
    for (const h2 of [false, true]) {
      const seen = await send(trusted, h2);
      expect(Object.fromEntries(Object.keys(FAMILY).map((name) => [name, seen.headers[name]]))).toEqual(FAMILY);
      expect(seen.headers['x-forwarded-for']).toBe('6.6.6.6, 127.0.0.1');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 8. Control characters in logs

describe('control characters from clients never reach the logs raw', () => {
  /** Every string in a log line, nested ones included. */
  const strings = (v: unknown): string[] =>
    typeof v === 'string' ? [v] : typeof v === 'object' && v !== null ? Object.values(v).flatMap(strings) : [];

  test('a Host with byte 0x9B (a terminal CSI) and a path with raw ESC: answered, logged with visible escapes only', async () => {
    const before = upstream.requests.length;
    const from = edge.logs.length;
    // Host: the parser takes obs-text; the router refuses the name.
    const host = only(await rawExchange(port, edge.ca, Buffer.from('GET /_matrix/client/versions HTTP/1.1\r\nHost: local\x9bhost\r\n\r\n', 'latin1')));
    // Path: raw ESC [2J (clear screen) and a C1 CSI, no %-encoding.
    const path = only(await rawExchange(port, edge.ca, Buffer.from('GET /_matrix/client/versions/\x1b[2J\x9b31m HTTP/1.1\r\nHost: localhost\r\n\r\n', 'latin1')));
    expect(upstream.requests.length).toBe(before);

    await waitFor('the access line of the routed one', () => accessLinesSince(edge, from).some((l) => typeof l.host === 'string'), 2000);
    const lines = accessLinesSince(edge, from);
    const hostLine = lines.find((l) => l.status === host.status && typeof l.host === 'string');
    expect(hostLine).toBeDefined();
    expect(hostLine!.host).toBe('local\\u009bhost');
    // Whatever the lines say of the path (a refused request's has none), nothing raw.
    const raw = edge.logs.slice(from).flatMap(strings).filter((s) => CONTROL.test(s));
    expect(raw).toEqual([]);
    const pathLine = lines.find((l) => l !== hostLine);
    if (typeof pathLine?.path === 'string') expect(pathLine.path).toContain('\\u001b');

    // Both answered in Matrix JSON: the Host refused by the router (the parser takes obs-text), the path by the parser.
    expect(host.status).toBeGreaterThanOrEqual(400);
    expect(host.status).toBeLessThan(500);
    expectMatrixJson(host.body);
    expect(path.status).toBe(400);
    expectMatrixJson(path.body);

    // log.format: pretty (the test edge collects JSON: the formatter is fed the same line).
    const pretty = formatPretty(JSON.stringify(hostLine), false)!;
    expect(pretty).toContain('\\u009b');
    expect(CONTROL.test(pretty.slice(0, -1))).toBe(false);
  });

  test('log.format: pretty escapes control characters of any field itself', () => {
    const line = JSON.stringify({ level: 'info', time: '2026-01-01T00:00:00.000Z', component: 'access', msg: 'request', host: 'a\u009b31mb', path: '/x\u001b[2J y', method: 'G\u0007' });
    const pretty = formatPretty(line, false)!;
    expect(pretty.endsWith('\n')).toBe(true);
    expect(CONTROL.test(pretty.slice(0, -1))).toBe(false);
    expect(pretty).toContain('\\u009b');
    expect(pretty).toContain('\\u001b');
    expect(pretty).toContain('\\u0007');
  });
});

// ---------------------------------------------------------------------------------------------
// 9. SNI vs Host

describe('SNI and Host', () => {
  test('by default a request with SNI localhost and Host example.com (both served) is routed', async () => {
    const one = await request({ port, ca: edge.ca, servername: 'localhost', hostHeader: 'example.com', path: '/_matrix/client/versions' });
    expect(one.status).toBe(200);
    expect(one.json<{ headers: Record<string, string> }>().headers.host).toBe('example.com');
    const two = await h2request({ port, ca: edge.ca, servername: 'localhost', authority: 'example.com', path: '/_matrix/client/versions' });
    expect(two.status).toBe(200);
  });

  // New config key (tls.strict_sni_host): on 0e5a331 this config is rejected.
  test('with tls.strict_sni_host: SNI localhost + Host example.com → 421 M_UNRECOGNIZED; SNI example.com + Host example.com:8448 → 200', async () => {
    const strict = await ownEdge({ tls: ', strict_sni_host: true' });
    const p = strict.httpsPorts[0]!;
    const before = upstream.requests.length;
    const crossed = [
      await request({ port: p, ca: strict.ca, servername: 'localhost', hostHeader: 'example.com', path: '/_matrix/client/versions' }),
      await h2request({ port: p, ca: strict.ca, servername: 'localhost', authority: 'example.com', path: '/_matrix/client/versions' }),
    ];
    for (const r of crossed) {
      expect(r.status).toBe(421);
      expectMatrixJson(r.body, 'M_UNRECOGNIZED');
    }
    expect(upstream.requests.length).toBe(before);
    const matching = [
      await request({ port: p, ca: strict.ca, servername: 'example.com', hostHeader: 'example.com:8448', path: '/_matrix/key/v2/server' }),
      await h2request({ port: p, ca: strict.ca, servername: 'example.com', authority: 'example.com:8448', path: '/_matrix/key/v2/server' }),
      await request({ port: p, ca: strict.ca, servername: 'localhost', hostHeader: `localhost:${p}`, path: '/_matrix/client/versions' }),
    ];
    expect(matching.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(upstream.requests.length).toBe(before + 3);
  });
});
