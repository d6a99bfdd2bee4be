/**
 * The plain-HTTP listener: 301 to HTTPS keeping host and request-target byte for byte, refusals
 * for hosts not served and proxy-style requests, and the ACME HTTP-01 answers fed by plane
 * messages (docs/matrix.md S1 item 16, S3 38).
 */
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { DataPlane, type BoundListener } from '../../src/data/data-plane';
import { createLogger } from '../../src/observe/log';
import type { Plan } from '../../src/config/plan';
import { FileStorage } from '../../src/store/file-storage';
import { request } from '../support/client';
import { planFrom, startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { startUpstream, type Upstream } from '../support/upstream';

interface PlainResponse {
  readonly status: number;
  readonly statusLine: string;
  /** Header names lower-cased; repeated headers in order. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  header(name: string): string | undefined;
}

/** Send raw bytes over plain TCP and parse the one response (Content-Length framed). */
function plainRequest(port: number, bytes: string, timeoutMs = 5000): Promise<PlainResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => socket.write(bytes, 'latin1'));
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete response within ${timeoutMs} ms; got ${JSON.stringify(buffered.toString('latin1'))}`));
    }, timeoutMs);
    const finish = (r: PlainResponse | Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const tryParse = (ended: boolean): void => {
      const headEnd = buffered.indexOf('\r\n\r\n');
      if (headEnd === -1) {
        if (ended) finish(new Error(`connection closed before the response head: ${JSON.stringify(buffered.toString('latin1'))}`));
        return;
      }
      const lines = buffered.subarray(0, headEnd).toString('latin1').split('\r\n');
      const statusLine = lines[0]!;
      const m = /^HTTP\/1\.1 (\d{3})(?: |$)/.exec(statusLine);
      if (m === null) return finish(new Error(`bad status line ${JSON.stringify(statusLine)}`));
      const headers = lines.slice(1).map((line): [string, string] => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
      });
      const lengthHeader = headers.find(([n]) => n === 'content-length')?.[1];
      const start = headEnd + 4;
      let body: Buffer;
      if (lengthHeader !== undefined) {
        const length = Number(lengthHeader);
        if (buffered.length < start + length) {
          if (ended) finish(new Error('connection closed mid-body'));
          return;
        }
        body = Buffer.from(buffered.subarray(start, start + length));
      } else {
        if (!ended) return;
        body = Buffer.from(buffered.subarray(start));
      }
      finish({ status: Number(m[1]), statusLine, headers, body, header: (name) => headers.find(([n]) => n === name)?.[1] });
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      tryParse(false);
    });
    socket.on('end', () => tryParse(true));
    socket.on('error', (err) => finish(err));
  });
}

const get = (port: number, target: string, host: string | null, extra = ''): Promise<PlainResponse> =>
  plainRequest(port, `GET ${target} HTTP/1.1\r\n${host === null ? '' : `Host: ${host}\r\n`}${extra}Connection: close\r\n\r\n`);

/** `count` distinct loopback ports free right now (bound together, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const s = net.createServer();
      await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

function expectMatrixError(res: PlainResponse, status: number, errcode: string): void {
  expect(res.status).toBe(status);
  expect(res.header('location')).toBeUndefined();
  expect(res.header('content-type')).toBe('application/json');
  const body = JSON.parse(res.body.toString('utf8')) as { errcode: unknown; error: unknown };
  expect(body.errcode).toBe(errcode);
  expect(typeof body.error).toBe('string');
}

// ---------------------------------------------------------------------------------------------
// A real edge on fixed (pre-picked free) ports, so redirects can name the real HTTPS port.

let upstream: Upstream;
let edge: TestEdge;
let httpsPort: number;
let fedPort: number;
let plainPort: number;

beforeAll(async () => {
  upstream = await startUpstream();
  [httpsPort, fedPort, plainPort] = (await freePorts(3)) as [number, number, number];
  edge = await startTestEdge(
    `
server_name: example.com
hostname: localhost
listen: { https: [${httpsPort}, ${fedPort}], http: ${plainPort}, address: 127.0.0.1 }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
`,
    { keepPorts: true },
  );
});

afterAll(async () => {
  await edge?.stop();
  await upstream?.close();
  if (edge !== undefined) await fsp.rm(edge.dir, { recursive: true, force: true });
});

describe('redirects to HTTPS', () => {
  test('the edge listens where configured', () => {
    expect(edge.httpPort).toBe(plainPort);
    expect(edge.httpsPorts).toEqual([httpsPort, fedPort]);
  });

  test.each([
    '/_matrix/client/versions?x=%2F',
    '/_matrix/client/v3/rooms/%21a%3Aexample.com/messages?dir=b&from=a+b%20c&ver=1&ver=3',
    '/_matrix//client/v3/room_keys/keys/!r%3Ax/ab%2Fcd%2B?version=1',
    '/_matrix/client/v3/search?q=%F0%9F%98%80',
    '/',
  ])('GET %s → 301 to the first HTTPS port, request-target byte for byte', async (target) => {
    const before = upstream.requests.length;
    const res = await get(plainPort, target, `localhost:${plainPort}`);
    expect(res.status).toBe(301);
    expect(res.header('location')).toBe(`https://localhost:${httpsPort}${target}`);
    expect(res.headers.filter(([n]) => n === 'location')).toHaveLength(1);
    expect(upstream.requests.length).toBe(before);
  });

  test.each([
    ['localhost', 'localhost'],
    ['localhost:PLAIN', 'localhost'],
    ['example.com:PLAIN', 'example.com'],
    ['example.com:80', 'example.com'],
    ['example.com', 'example.com'],
  ])('Host %s → Location host %s, without the plain port', async (hostTemplate, expectedHost) => {
    const host = hostTemplate.replace('PLAIN', String(plainPort));
    const res = await get(plainPort, '/.well-known/matrix/server', host);
    expect(res.status).toBe(301);
    expect(res.header('location')).toBe(`https://${expectedHost}:${httpsPort}/.well-known/matrix/server`);
  });

  test('the redirect is followed to a working HTTPS answer', async () => {
    const res = await get(plainPort, '/.well-known/matrix/server', 'localhost');
    const location = res.header('location')!;
    const m = /^https:\/\/localhost:(\d+)(\/.*)$/.exec(location);
    expect(m).not.toBeNull();
    const reply = await request({ port: Number(m![1]), ca: edge.ca, path: m![2]! });
    expect(reply.status).toBe(200);
    expect(reply.json()).toEqual({ 'm.server': `localhost:${httpsPort}` });
  });
});

describe('refusals on the plain listener', () => {
  test.each(['evil.example', `evil.example:${80}`, 'evil.example:PLAIN', '127.0.0.1'])(
    'unknown Host %s → 421 Matrix JSON, not a redirect, nothing forwarded',
    async (hostTemplate) => {
      const before = upstream.requests.length;
      const res = await get(plainPort, '/_matrix/client/versions', hostTemplate.replace('PLAIN', String(plainPort)));
      expectMatrixError(res, 421, 'M_UNRECOGNIZED');
      expect(upstream.requests.length).toBe(before);
    },
  );

  test.each([
    'http://localhost/_matrix/client/versions',
    `http://127.0.0.1:${1}/_matrix/client/versions`,
    'https://example.com/.well-known/matrix/server',
  ])('absolute-form %s → 400, not a redirect', async (target) => {
    const before = upstream.requests.length;
    const res = await get(plainPort, target, 'localhost');
    expectMatrixError(res, 400, 'M_UNRECOGNIZED');
    expect(upstream.requests.length).toBe(before);
  });

  test('no Host header → 400, not a redirect', async () => {
    const res = await get(plainPort, '/_matrix/client/versions', null);
    expect(res.status).toBe(400);
    expect(res.header('location')).toBeUndefined();
  });

  test('an ACME challenge nobody registered → 404, not a redirect', async () => {
    const res = await get(plainPort, '/.well-known/acme-challenge/unknown-token', 'localhost');
    expectMatrixError(res, 404, 'M_NOT_FOUND');
  });
});

// ---------------------------------------------------------------------------------------------
// ACME HTTP-01 through a DataPlane fed directly with plane messages.

describe('ACME HTTP-01 answers (DataPlane driven by plane messages)', () => {
  let dir: string;
  let plane: DataPlane;
  let bound: BoundListener[];
  let port: number;

  beforeAll(async () => {
    dir = tempDir('matrix-edge-plain-acme-');
    const loaded = planFrom(
      `
server_name: example.com
hostname: localhost
listen: { https: [8443], http: 8080, address: 127.0.0.1 }
upstream: http://127.0.0.1:9
tls: { issuer: internal }
storage: ./certs
`,
      dir,
    );
    const plan: Plan = {
      ...loaded,
      listen: { https: [{ port: 0, addresses: ['127.0.0.1'] }], http: { port: 0, addresses: ['127.0.0.1'] } },
    };
    const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), createLogger('silent'));
    const issued = await ca.issue(plan.names, 24 * 60 * 60 * 1000);
    plane = new DataPlane(createLogger('silent'));
    plane.receive({ type: 'plan', plan });
    plane.receive({
      type: 'certificate',
      material: { names: [...plan.names], certPem: issued.certPem, keyPem: issued.keyPem, notAfter: new Date(Date.now() + 86_400_000).toISOString() },
    });
    bound = await plane.listen();
    port = bound.find((l) => l.kind === 'http')!.port;
  });

  afterAll(async () => {
    await plane?.close(0);
    if (dir !== undefined) await fsp.rm(dir, { recursive: true, force: true });
  });

  const token = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0';
  const keyAuthorization = `${token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;

  test('the plane binds one HTTPS and one plain listener on loopback', () => {
    expect(bound.map((l) => [l.kind, l.address])).toEqual([
      ['https', '127.0.0.1'],
      ['http', '127.0.0.1'],
    ]);
    expect(port).toBeGreaterThan(0);
  });

  test('challenge-add → 200 text/plain with the key authorization; challenge-remove → 404', async () => {
    const target = `/.well-known/acme-challenge/${token}`;
    const before = await get(port, target, 'localhost');
    expectMatrixError(before, 404, 'M_NOT_FOUND');

    plane.receive({ type: 'challenge-add', token, keyAuthorization });
    for (const host of ['localhost', 'example.com', `example.com:${port}`, 'EXAMPLE.COM']) {
      const res = await get(port, target, host);
      expect(res.status).toBe(200);
      expect(res.header('content-type')).toBe('text/plain');
      expect(res.header('location')).toBeUndefined();
      expect(res.body.toString('latin1')).toBe(keyAuthorization);
      expect(Number(res.header('content-length'))).toBe(Buffer.byteLength(keyAuthorization));
    }
    // another token is still unknown, and a host not served gets no answer
    expectMatrixError(await get(port, `/.well-known/acme-challenge/${token}x`, 'localhost'), 404, 'M_NOT_FOUND');
    expectMatrixError(await get(port, target, 'evil.example'), 421, 'M_UNRECOGNIZED');

    plane.receive({ type: 'challenge-remove', token });
    expectMatrixError(await get(port, target, 'localhost'), 404, 'M_NOT_FOUND');
  });

  test('anything else on the plain listener is still a redirect', async () => {
    const res = await get(port, '/_matrix/client/versions', 'localhost');
    expect(res.status).toBe(301);
    expect(res.header('location')).toMatch(/^https:\/\/localhost(:\d+)?\/_matrix\/client\/versions$/);
  });
});
