/**
 * Forwarding through a real edge (real TLS, real sockets) to a recording upstream stand-in:
 * docs/matrix.md S1 items 3–6, 10, 11, 13, 15; S2 20–22, 26, 29; S3 30–32, 36–38.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { connectH2, h2request, rawTls, request, type Reply } from '../support/client';
import { startTestEdge, type TestEdge } from '../support/edge';
import { echo, startUpstream, type Upstream } from '../support/upstream';

let upstream: Upstream;
let edge: TestEdge;
let port: number;
let fedPort: number;

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(`
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: 8080 }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
proxy:
  max_body_size: 1MiB
  upstream_timeout: 2s
`);
  [port, fedPort] = edge.httpsPorts as [number, number];
});

afterAll(async () => {
  await edge.stop();
  await upstream.close();
});

const get = (path: string, extra: Partial<Parameters<typeof request>[0]> = {}): Promise<Reply> =>
  request({ port, ca: edge.ca, path, ...extra });

/** Every value of one header, from a raw [name, value, …] list. */
const header = (raw: readonly string[], name: string): string[] => {
  const values: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) values.push(raw[i + 1]!);
  return values;
};

describe('request-target is forwarded byte for byte', () => {
  test.each([
    '/_matrix/federation/v1/query/directory?room_alias=%23a%3Aexample.com',
    '/_matrix/client/v3/room_keys/keys/!r%3Ax/ab%2Fcd%2B?version=1',
    '/_matrix//client/v3//sync',
    '/_matrix/client/v3/rooms/%21abc%3Aexample.com/state/m.room.name/%25x',
    '/_matrix/media/v3/download/example.com/a%2eb',
    '/_matrix/client/v3/user/@a:example.com/filter;jsessionid=1',
    '/_matrix/client/v3/pushrules/',
    '/_matrix/client/v3/sync?ver=1&ver=3&x=a+b%20c',
    '/_matrix/client/v3/search?next_batch=%F0%9F%98%80&q=%00',
    "/_matrix/client/v3/profile/@u:example.com?q=(a)!*'~",
    '/_synapse/client/password_reset/email/submit_token?token=a%2Bb&sid=1',
  ])('%s', async (target) => {
    const reply = await get(target);
    expect(reply.status).toBe(200);
    expect(reply.json().target).toBe(target);
  });
});

test('an X-Matrix signed PUT reaches the upstream with header and body bytes unchanged', async () => {
  const body = Buffer.from(JSON.stringify({ origin: 'other.example', pdus: [{ content: { body: 'é ✓' } }] }));
  const auth = 'X-Matrix origin="other.example",destination="example.com",key="ed25519:a_1",sig="ABCdef+/=="';
  const reply = await request({
    port: fedPort,
    ca: edge.ca,
    servername: 'example.com',
    hostHeader: 'example.com:8448',
    method: 'PUT',
    path: '/_matrix/federation/v1/send/1700000000000',
    headers: { authorization: auth, 'content-type': 'application/json', 'user-agent': 'Synapse/1.120.0' },
    body,
  });
  expect(reply.status).toBe(200);
  const seen = reply.json<{ headers: Record<string, string>; bodySha256: string; bodyLength: number; httpVersion: string; method: string }>();
  expect(seen.method).toBe('PUT');
  expect(seen.headers.authorization).toBe(auth);
  expect(seen.headers['user-agent']).toBe('Synapse/1.120.0');
  expect(seen.headers['content-length']).toBe(String(body.length));
  expect(seen.bodyLength).toBe(body.length);
  expect(seen.bodySha256).toBe(createHash('sha256').update(body).digest('hex'));
  expect(seen.httpVersion).toBe('1.1');
});

describe('Host forms route and go upstream unchanged', () => {
  test.each([
    ['localhost', 'localhost'],
    ['example.com', 'example.com:8448'],
    ['example.com', 'example.com'],
    ['example.com', 'EXAMPLE.com:443'],
    ['localhost', 'example.com:8448'],
  ])('SNI %s, Host %s', async (servername, hostHeader) => {
    for (const p of [port, fedPort]) {
      const reply = await request({ port: p, ca: edge.ca, servername, hostHeader, path: '/_matrix/key/v2/server' });
      expect(reply.status).toBe(200);
      expect(reply.json<{ headers: Record<string, string> }>().headers.host).toBe(hostHeader);
    }
  });
});

test('X-Forwarded-For is overwritten with the peer, X-Forwarded-Proto is https, spoofable headers are dropped', async () => {
  const reply = await get('/_matrix/client/versions', {
    headers: { 'x-forwarded-for': '1.2.3.4', 'x-forwarded-proto': 'http', 'x-real-ip': '5.6.7.8', forwarded: 'for=1.2.3.4' },
  });
  const seen = reply.json<{ rawHeaders: string[]; headers: Record<string, string> }>();
  expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
  expect(seen.headers['x-forwarded-proto']).toBe('https');
  expect(seen.headers['x-real-ip']).toBeUndefined();
  expect(seen.headers['forwarded']).toBeUndefined();
  expect(header(seen.rawHeaders, 'x-forwarded-for')).toEqual(['127.0.0.1']);
});

test('hop-by-hop headers and those named in Connection are not forwarded; end-to-end ones are, in order', async () => {
  const reply = await get('/_matrix/client/versions', {
    headers: { connection: 'keep-alive, x-hop', 'x-hop': 'secret', 'keep-alive': 'timeout=5', te: 'trailers', 'x-first': '1', 'x-second': '2' },
  });
  const seen = reply.json<{ rawHeaders: string[]; headers: Record<string, string> }>();
  expect(seen.headers['x-hop']).toBeUndefined();
  expect(seen.headers['te']).toBeUndefined();
  expect(seen.headers['keep-alive']).toBeUndefined();
  const names = seen.rawHeaders.filter((_v, i) => i % 2 === 0).map((n) => n.toLowerCase());
  expect(names.indexOf('x-first')).toBeLessThan(names.indexOf('x-second'));
});

test('OPTIONS on a client API path and any User-Agent are forwarded like any request', async () => {
  for (const ua of ['Go-http-client/1.1', 'Synapse/1.120.0', 'curl/8', '']) {
    const reply = await get('/_matrix/client/v3/sync', { method: 'OPTIONS', headers: { 'user-agent': ua, origin: 'https://app.element.io' } });
    expect(reply.status).toBe(200);
    expect(reply.json().method).toBe('OPTIONS');
  }
});

test('the upstream CORS headers are relayed alone: the edge adds none', async () => {
  upstream.behaviour = (_req, res, record) => {
    void record().then(() => {
      res.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': 'application/json' });
      res.end('{}');
    });
  };
  try {
    const reply = await get('/_matrix/client/versions', { headers: { origin: 'https://app.element.io' } });
    expect(header(reply.rawHeaders, 'access-control-allow-origin')).toEqual(['*']);
    expect(reply.headers['access-control-allow-methods']).toBeUndefined();
  } finally {
    upstream.behaviour = echo;
  }
});

test('a chunked upstream response is relayed intact, with the upstream content headers', async () => {
  const parts = Array.from({ length: 50 }, (_v, i) => Buffer.alloc(1000 + i, i));
  upstream.behaviour = (_req, res, record) => {
    void record().then(async () => {
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-disposition': 'attachment; filename="a b.bin"',
        'content-security-policy': "sandbox; default-src 'none'",
        'cross-origin-resource-policy': 'cross-origin',
      });
      for (const p of parts) {
        res.write(p);
        await new Promise((r) => setImmediate(r));
      }
      res.end();
    });
  };
  try {
    const reply = await get('/_matrix/media/v3/download/example.com/abc');
    expect(reply.status).toBe(200);
    expect(reply.body.equals(Buffer.concat(parts))).toBe(true);
    expect(reply.headers['content-disposition']).toBe('attachment; filename="a b.bin"');
    expect(reply.headers['content-security-policy']).toBe("sandbox; default-src 'none'");
    expect(reply.headers['cross-origin-resource-policy']).toBe('cross-origin');
  } finally {
    upstream.behaviour = echo;
  }
});

describe('paths the edge answers itself, never forwarding', () => {
  test.each([
    ['/_matrix/../_synapse/admin/v1/users', 400],
    ['/_matrix/%2e%2e/_synapse/admin/v1/users', 400],
    ['/_matrix/client/%2E/versions', 400],
    ['/_matrix/..%2f_synapse/admin/v1/users', 400],
    ['/_synapse/admin/v1/users', 404],
    ['/_synapse/%61dmin/v1/users', 404],
    ['//_synapse/admin/v1/users', 404],
    ['/_dendrite/admin/evacuateRoom/!a:b', 404],
    ['/index.html', 404],
    ['/_matrix', 404],
  ])('%s → %i', async (target, status) => {
    const before = upstream.requests.length;
    const reply = await get(target);
    expect(reply.status).toBe(status);
    expect(reply.headers['content-type']).toBe('application/json');
    expect(reply.headers['access-control-allow-origin']).toBe('*');
    expect(typeof reply.json().errcode).toBe('string');
    expect(typeof reply.json().error).toBe('string');
    expect(upstream.requests.length).toBe(before);
  });

  test('a Host the edge does not serve is refused (421) and not forwarded', async () => {
    const before = upstream.requests.length;
    const reply = await get('/_matrix/client/versions', { hostHeader: 'evil.example' });
    expect(reply.status).toBe(421);
    expect(reply.json().errcode).toBe('M_UNRECOGNIZED');
    expect(upstream.requests.length).toBe(before);
  });

  test('absolute-form targets and CONNECT never make it an open proxy', async () => {
    const before = upstream.requests.length;
    const absolute = await rawTls(port, edge.ca, 'GET http://127.0.0.1:1/_matrix/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    expect(absolute).toMatch(/^HTTP\/1\.1 400 /);
    const connect = await rawTls(port, edge.ca, `CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: 127.0.0.1:${upstream.port}\r\n\r\n`);
    expect(connect).toMatch(/^HTTP\/1\.1 405 /);
    expect(connect).toContain('M_UNRECOGNIZED');
    expect(upstream.requests.length).toBe(before);
  });

  test('a Content-Length + Transfer-Encoding smuggling attempt is refused and nothing is smuggled', async () => {
    const before = upstream.requests.length;
    const smuggled = 'GET /_synapse/admin/v1/users HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const body = `0\r\n\r\n${smuggled}`;
    const attempt =
      'POST /_matrix/client/v3/keys/query HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
      `Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
    const answer = await rawTls(port, edge.ca, attempt);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    await new Promise((r) => setTimeout(r, 200));
    expect(upstream.requests.slice(before).map((r) => r.target)).not.toContain('/_synapse/admin/v1/users');
  });
});

describe('upload limit', () => {
  test('a body under the limit is forwarded whole, declared or chunked', async () => {
    const body = Buffer.alloc(900 * 1024, 7);
    const digest = createHash('sha256').update(body).digest('hex');
    const declared = await get('/_matrix/media/v3/upload', { method: 'POST', body, headers: { 'content-type': 'image/png' } });
    expect(declared.status).toBe(200);
    expect(declared.json().bodySha256).toBe(digest);
    const chunked = await get('/_matrix/media/v3/upload', { method: 'POST', body: Readable.from([body.subarray(0, 1000), body.subarray(1000)]) });
    expect(chunked.status).toBe(200);
    expect(chunked.json<{ headers: Record<string, string> }>().headers['transfer-encoding']).toBe('chunked');
    expect(chunked.json().bodySha256).toBe(digest);
  });

  test('a declared body over the limit gets 413 M_TOO_LARGE without reaching the upstream', async () => {
    const before = upstream.requests.length;
    const reply = await get('/_matrix/media/v3/upload', { method: 'POST', body: Buffer.alloc(1024 * 1024 + 1) });
    expect(reply.status).toBe(413);
    expect(reply.json()).toEqual({ errcode: 'M_TOO_LARGE', error: expect.any(String) });
    expect(reply.headers['access-control-allow-origin']).toBe('*');
    expect(upstream.requests.length).toBe(before);
  });

  test('a chunked body that grows over the limit gets 413 M_TOO_LARGE', async () => {
    upstream.behaviour = (_req, res, record) => {
      // Answer only once the whole body is read: the edge must cut it off first.
      record().then(
        () => res.end('{}'),
        () => res.destroy(),
      );
    };
    try {
      const chunks = Array.from({ length: 20 }, () => Buffer.alloc(64 * 1024, 1));
      const reply = await get('/_matrix/media/v3/upload', { method: 'POST', body: Readable.from(chunks) });
      expect(reply.status).toBe(413);
      expect(reply.json().errcode).toBe('M_TOO_LARGE');
    } finally {
      upstream.behaviour = echo;
    }
  });
});

describe('upstream failures are Matrix JSON with CORS', () => {
  test('no answer within upstream_timeout → 504', async () => {
    upstream.behaviour = () => {
      /* never answer */
    };
    try {
      const reply = await get('/_matrix/client/v3/sync?timeout=30000');
      expect(reply.status).toBe(504);
      expect(reply.json().errcode).toBe('M_UNKNOWN');
      expect(reply.headers['access-control-allow-origin']).toBe('*');
    } finally {
      upstream.behaviour = echo;
    }
  });

  test('the upstream resets the connection → 502', async () => {
    upstream.behaviour = (req) => req.socket.destroy();
    try {
      const reply = await get('/_matrix/client/versions');
      expect(reply.status).toBe(502);
      expect(reply.json().errcode).toBe('M_UNKNOWN');
      expect(reply.headers['content-type']).toBe('application/json');
    } finally {
      upstream.behaviour = echo;
    }
  });

  test('a response cut short after its headers is not passed off as complete', async () => {
    upstream.behaviour = (_req, res, record) => {
      void record().then(() => {
        res.writeHead(200, { 'content-length': 100000 });
        res.write(Buffer.alloc(1000));
        setTimeout(() => res.socket?.destroy(), 50);
      });
    };
    try {
      await expect(get('/_matrix/media/v3/download/example.com/cut')).rejects.toThrow();
    } finally {
      upstream.behaviour = echo;
    }
  });
});

test('HTTP/2 requests go upstream as HTTP/1.1 with Host = :authority and cookies joined', async () => {
  const session = connectH2(port, edge.ca, 'example.com');
  try {
    const reply = await h2request({
      port,
      ca: edge.ca,
      session,
      authority: 'example.com',
      path: '/_matrix/client/v3/room_keys/keys/!r%3Ax/ab%2Fcd%2B?version=1',
      headers: { cookie: ['a=1', 'b=2'] as unknown as string },
    });
    expect(reply.status).toBe(200);
    const seen = reply.json<{ target: string; httpVersion: string; headers: Record<string, string> }>();
    expect(seen.target).toBe('/_matrix/client/v3/room_keys/keys/!r%3Ax/ab%2Fcd%2B?version=1');
    expect(seen.httpVersion).toBe('1.1');
    expect(seen.headers.host).toBe('example.com');
    expect(seen.headers.cookie).toBe('a=1; b=2');
    const upload = Buffer.alloc(200_000, 3);
    const put = await h2request({ port, ca: edge.ca, session, authority: 'example.com', method: 'PUT', path: '/_matrix/client/v3/x', body: upload });
    expect(put.json().bodySha256).toBe(createHash('sha256').update(upload).digest('hex'));
  } finally {
    session.close();
  }
});

test('an 8 KiB request-target is accepted and forwarded', async () => {
  const target = `/_matrix/client/v3/rooms/!a:example.com/messages?filter=${'x'.repeat(8192)}`;
  const reply = await get(target);
  expect(reply.status).toBe(200);
  expect(reply.json().target).toBe(target);
});

test('every request leaves one access-log line with method, host, path, status, bytes and timings', async () => {
  await get('/_matrix/client/versions?probe=access-log');
  await new Promise((r) => setTimeout(r, 50));
  const line = edge.logs.find((l) => l.component === 'access' && l.path === '/_matrix/client/versions?probe=access-log');
  expect(line).toMatchObject({ method: 'GET', host: `localhost:${port}`, status: 200, route: 'proxy:/_matrix/' });
  expect(line!.bytes).toBeGreaterThan(0);
  expect(typeof line!.ms).toBe('number');
  expect(typeof line!.upstream_ms).toBe('number');
});
