/**
 * The inline well-known answers through a real edge (HTTP/1.1 and HTTP/2), with the homeserver
 * down: docs/matrix.md S1 items 7, 8; S2 17, 18, 27, 28; S3 34.
 */
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { connectH2, h2request, request, type Reply } from '../support/client';
import { startTestEdge, type TestEdge } from '../support/edge';

const KINDS = ['server', 'client', 'support'] as const;

const RTC_FOCI = [
  { type: 'livekit', livekit_service_url: 'https://livekit.example.com/jwt' },
  { type: 'nextgen_new_foci_type', props_for_nextgen_foci: 'val' },
];
const E2EE = { default: false, secure_backup_required: true, secure_backup_setup_methods: ['passphrase'], force_disable: false };
const SUPPORT = {
  contacts: [
    { role: 'm.role.admin', matrix_id: '@admin:example.com', email_address: 'admin@example.com' },
    { role: 'm.role.security', email_address: 'security@example.com' },
  ],
  support_page: 'https://example.com/support',
};

/** A loopback port nothing listens on: bound then closed. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Every value of one header, from a raw [name, value, …] list. */
const headerValues = (raw: readonly string[], name: string): string[] => {
  const values: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) values.push(raw[i + 1]!);
  return values;
};

const maxAgeOf = (headers: IncomingHttpHeaders): number | null => {
  const value = headers['cache-control'];
  const m = typeof value === 'string' ? /(?:^|[,\s])max-age=(\d+)(?:$|[,\s])/.exec(value) : null;
  return m === null ? null : Number(m[1]);
};

/** The CORS headers a browser needs, exactly once each. */
function expectCors(reply: Reply, h2 = false): void {
  if (h2) {
    // node:http2 joins repeated fields with ", ": a duplicate shows up as "*, *"
    expect(reply.headers['access-control-allow-origin']).toBe('*');
  } else {
    expect(headerValues(reply.rawHeaders, 'access-control-allow-origin')).toEqual(['*']);
  }
}

function expectPreflight(reply: Reply, h2 = false): void {
  expect(reply.status).toBeGreaterThanOrEqual(200);
  expect(reply.status).toBeLessThan(300);
  expectCors(reply, h2);
  const methods = String(reply.headers['access-control-allow-methods']).split(/\s*,\s*/);
  expect(methods).toEqual(expect.arrayContaining(['GET', 'OPTIONS']));
  const allowed = String(reply.headers['access-control-allow-headers'])
    .split(/\s*,\s*/)
    .map((h) => h.toLowerCase());
  expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type', 'x-requested-with']));
}

function expectMatrixError(reply: Reply, status: number, errcode: string): void {
  expect(reply.status).toBe(status);
  expect(reply.headers['content-type']).toBe('application/json');
  const body = reply.json();
  expect(body.errcode).toBe(errcode);
  expect(typeof body.error).toBe('string');
  expect((body.error as string).length).toBeGreaterThan(0);
}

/** Schema of /.well-known/matrix/support (spec v1.10+). */
function expectSupportSchema(body: Record<string, unknown>): void {
  expect('contacts' in body || 'support_page' in body).toBe(true);
  if ('support_page' in body) expect(body.support_page).toMatch(/^https?:\/\/[^/\s]+/);
  if ('contacts' in body) {
    expect(Array.isArray(body.contacts)).toBe(true);
    for (const contact of body.contacts as Array<Record<string, unknown>>) {
      expect(typeof contact.role).toBe('string');
      expect(contact.role).toMatch(/^(m\.role\.(admin|security)|[a-z0-9_.-]+\.[a-z0-9_.-]+)$/i);
      expect('matrix_id' in contact || 'email_address' in contact).toBe(true);
      if ('matrix_id' in contact) expect(contact.matrix_id).toMatch(/^@[^:\s]+:[^\s]+$/);
      if ('email_address' in contact) expect(contact.email_address).toMatch(/^[^@\s]+@[^@\s]+$/);
    }
  }
}

let edge: TestEdge;
let bare: TestEdge;
let deadPort: number;

beforeAll(async () => {
  deadPort = await closedPort();
  edge = await startTestEdge(`
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: null }
upstream: http://127.0.0.1:${deadPort}
tls: { issuer: internal }
storage: ./certs
well_known:
  server: matrix.example.com:443
  max_age: 2h
  client:
    m.identity_server: { base_url: "https://vector.im" }
    org.matrix.msc4143.rtc_foci: ${JSON.stringify(RTC_FOCI)}
    io.element.e2ee: ${JSON.stringify(E2EE)}
    org.example.motd: "Welcome, é ✓"
    org.example.limit: 42
    org.example.enabled: false
  support: ${JSON.stringify(SUPPORT)}
`);
  // defaults: no support, no max_age, no m.server
  bare = await startTestEdge(`
server_name: example.com
hostname: localhost
listen: { https: [8443], http: null }
upstream: http://127.0.0.1:${deadPort}
tls: { issuer: internal }
storage: ./certs
`);
});

afterAll(async () => {
  await edge?.stop();
  await bare?.stop();
  for (const e of [edge, bare]) if (e !== undefined) await fsp.rm(e.dir, { recursive: true, force: true });
});

describe('the homeserver is down', () => {
  test('a proxied request fails with 502, proving the upstream really is down', async () => {
    const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, path: '/_matrix/client/versions' });
    expectMatrixError(reply, 502, 'M_UNKNOWN');
  });

  test.each(['server', 'client'] as const)('/.well-known/matrix/%s still answers 200', async (which) => {
    for (const e of [edge, bare]) {
      const reply = await request({ port: e.httpsPorts[0]!, ca: e.ca, path: `/.well-known/matrix/${which}` });
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toBe('application/json');
    }
  });
});

describe('/.well-known/matrix/server', () => {
  test.each([
    ['localhost', 0, 'localhost'],
    ['example.com', 0, 'example.com'],
    ['example.com', 1, 'example.com:8448'],
    ['example.com', 1, 'example.com'],
    ['localhost', 1, 'localhost:443'],
  ])('SNI %s, port #%i, Host %s: 200 JSON with the configured m.server', async (servername, i, hostHeader) => {
    const reply = await request({ port: edge.httpsPorts[i]!, ca: edge.ca, servername, hostHeader, path: '/.well-known/matrix/server' });
    expect(reply.status).toBe(200);
    expect(reply.headers.location).toBeUndefined();
    expect(reply.headers['content-type']).toBe('application/json');
    expectCors(reply);
    expect(maxAgeOf(reply.headers)).toBe(7200);
    expect(headerValues(reply.rawHeaders, 'cache-control')).toHaveLength(1);
    expect(reply.body.toString('utf8')).toBe('{"m.server":"matrix.example.com:443"}');
    expect(reply.json()).toEqual({ 'm.server': 'matrix.example.com:443' });
    expect(reply.body.length).toBeLessThan(50 * 1024);
    expect(Number(reply.headers['content-length'])).toBe(reply.body.length);
  });

  test('defaults: m.server is the hostname and first HTTPS port, max-age is one hour', async () => {
    const reply = await request({ port: bare.httpsPorts[0]!, ca: bare.ca, path: '/.well-known/matrix/server' });
    expect(reply.status).toBe(200);
    expect(reply.json()).toEqual({ 'm.server': 'localhost:8443' });
    expect(maxAgeOf(reply.headers)).toBe(3600);
    expectCors(reply);
  });

  test('HEAD gets the headers and no body', async () => {
    const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, method: 'HEAD', path: '/.well-known/matrix/server' });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/json');
    expect(reply.body.length).toBe(0);
    expectCors(reply);
  });
});

describe('/.well-known/matrix/client', () => {
  test('from a browser origin: 200 JSON with m.homeserver.base_url and the extra keys verbatim', async () => {
    const reply = await request({
      port: edge.httpsPorts[0]!,
      ca: edge.ca,
      path: '/.well-known/matrix/client',
      headers: { origin: 'https://app.element.io', 'user-agent': 'Mozilla/5.0' },
    });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/json');
    expectCors(reply);
    expect(maxAgeOf(reply.headers)).toBe(7200);
    expect(reply.body.length).toBeLessThan(50 * 1024);
    expect(reply.json()).toEqual({
      'm.homeserver': { base_url: 'https://localhost:8443' },
      'm.identity_server': { base_url: 'https://vector.im' },
      'org.matrix.msc4143.rtc_foci': RTC_FOCI,
      'io.element.e2ee': E2EE,
      'org.example.motd': 'Welcome, é ✓',
      'org.example.limit': 42,
      'org.example.enabled': false,
    });
    expect(Array.isArray(reply.json()['org.matrix.msc4143.rtc_foci'])).toBe(true);
  });

  test('defaults: only m.homeserver, pointing at the hostname', async () => {
    const reply = await request({ port: bare.httpsPorts[0]!, ca: bare.ca, path: '/.well-known/matrix/client', headers: { origin: 'https://app.element.io' } });
    expect(reply.status).toBe(200);
    expect(reply.json()).toEqual({ 'm.homeserver': { base_url: 'https://localhost:8443' } });
    expectCors(reply);
  });
});

describe('/.well-known/matrix/support', () => {
  test('configured: schema-valid JSON, as configured, with CORS and Cache-Control', async () => {
    const reply = await request({ port: edge.httpsPorts[1]!, ca: edge.ca, servername: 'example.com', hostHeader: 'example.com', path: '/.well-known/matrix/support' });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/json');
    expectCors(reply);
    expect(maxAgeOf(reply.headers)).toBe(7200);
    expectSupportSchema(reply.json());
    expect(reply.json()).toEqual(SUPPORT);
  });

  test('not configured: 404 Matrix JSON with CORS', async () => {
    const reply = await request({ port: bare.httpsPorts[0]!, ca: bare.ca, path: '/.well-known/matrix/support', headers: { origin: 'https://app.element.io' } });
    expectMatrixError(reply, 404, 'M_NOT_FOUND');
    expectCors(reply);
  });
});

describe('methods', () => {
  test.each(KINDS)('OPTIONS /.well-known/matrix/%s: a 2xx preflight with allow-origin/-methods/-headers', async (which) => {
    for (const e of [edge, bare]) {
      const reply = await request({
        port: e.httpsPorts[0]!,
        ca: e.ca,
        method: 'OPTIONS',
        path: `/.well-known/matrix/${which}`,
        headers: { origin: 'https://app.element.io', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
      });
      expectPreflight(reply);
    }
  });

  test.each(KINDS)('POST /.well-known/matrix/%s: 405 Matrix JSON with CORS', async (which) => {
    const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, method: 'POST', path: `/.well-known/matrix/${which}`, body: '{}' });
    expectMatrixError(reply, 405, 'M_UNRECOGNIZED');
    expectCors(reply);
    expect(String(reply.headers.allow).split(/\s*,\s*/)).toEqual(expect.arrayContaining(['GET', 'OPTIONS']));
  });
});

describe('over HTTP/2', () => {
  let session: ReturnType<typeof connectH2>;
  let port: number;

  beforeAll(() => {
    port = edge.httpsPorts[1]!;
    session = connectH2(port, edge.ca, 'example.com');
  });
  afterAll(() => {
    session.close();
  });

  const h2 = (path: string, extra: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> =>
    h2request({ port, ca: edge.ca, session, authority: 'example.com:8448', path, ...extra });

  test('server: 200 JSON, CORS once, Cache-Control', async () => {
    const reply = await h2('/.well-known/matrix/server');
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/json');
    expectCors(reply, true);
    expect(maxAgeOf(reply.headers)).toBe(7200);
    expect(reply.json()).toEqual({ 'm.server': 'matrix.example.com:443' });
  });

  test('client: the same JSON as over HTTP/1.1', async () => {
    const reply = await h2('/.well-known/matrix/client', { headers: { origin: 'https://app.element.io' } });
    expect(reply.status).toBe(200);
    expectCors(reply, true);
    const over1 = await request({ port, ca: edge.ca, servername: 'example.com', hostHeader: 'example.com:8448', path: '/.well-known/matrix/client' });
    expect(reply.body.equals(over1.body)).toBe(true);
    expect(reply.json<{ 'm.homeserver': { base_url: string } }>()['m.homeserver'].base_url).toBe('https://localhost:8443');
  });

  test('support: configured JSON', async () => {
    const reply = await h2('/.well-known/matrix/support');
    expect(reply.status).toBe(200);
    expectCors(reply, true);
    expectSupportSchema(reply.json());
    expect(reply.json()).toEqual(SUPPORT);
  });

  test.each(KINDS)('OPTIONS %s: preflight', async (which) => {
    expectPreflight(await h2(`/.well-known/matrix/${which}`, { method: 'OPTIONS', headers: { origin: 'https://app.element.io' } }), true);
  });

  test.each(KINDS)('POST %s: 405 Matrix JSON', async (which) => {
    const reply = await h2(`/.well-known/matrix/${which}`, { method: 'POST', body: '{}' });
    expectMatrixError(reply, 405, 'M_UNRECOGNIZED');
    expectCors(reply, true);
  });

  test('support not configured: 404 Matrix JSON with CORS', async () => {
    const reply = await h2request({ port: bare.httpsPorts[0]!, ca: bare.ca, path: '/.well-known/matrix/support' });
    expectMatrixError(reply, 404, 'M_NOT_FOUND');
    expectCors(reply, true);
  });
});
