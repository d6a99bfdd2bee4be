/**
 * TLS posture and HSTS through a real edge.
 *
 * TLS: handshakes with explicit client options show what the HTTPS listeners accept — TLS 1.2 with
 * ECDHE and AEAD suites only (no CBC), key exchange by X25519MLKEM768 (first), X25519 or P-256
 * only, no TLS 1.0/1.1, no client-initiated renegotiation.
 *
 * HSTS: `strict-transport-security` on every HTTPS answer, whoever made it (proxied, well-known,
 * edge errors, refusals the parser made), never on the plain-HTTP listener; configurable, and an
 * upstream's own header wins.
 *
 * Tests needing a config key the hardening added (tls.hsts, proxy.max_requests_per_connection)
 * start their own edge: on the code before it (0e5a331) that config is rejected, which is itself
 * the failure.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as tls from 'node:tls';
import { connectH2, h2request, request, type Reply } from '../support/client';
import { startTestEdge, teardownAfterEach, tempDir, type TestEdge } from '../support/edge';
import { headerOf, rawExchange } from '../support/raw-h1';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

const HSTS = 'max-age=31536000';

let upstream: Upstream;
let edge: TestEdge;
let port: number;
const mainDir = tempDir('matrix-edge-posture-');
const per = teardownAfterEach('matrix-edge-posture-');
const sockets: tls.TLSSocket[] = [];

function siteYaml(o: { tls?: string; more?: string; http?: boolean } = {}): string {
  return `server_name: example.com
hostname: localhost
listen: { https: [8443], http: ${o.http === true ? 8080 : 'null'} }
upstream: ${upstream.url}
tls: { issuer: internal${o.tls ?? ''} }
storage: ./certs
${o.more ?? ''}`;
}

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(siteYaml({ http: true }), { dir: mainDir });
  port = edge.httpsPorts[0]!;
});

afterEach(() => {
  upstream.behaviour = echo;
  for (const s of sockets.splice(0)) s.destroy();
});

afterAll(async () => {
  await edge.stop(0);
  await upstream.close();
  fs.rmSync(mainDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// TLS

interface Negotiated {
  readonly protocol: string | null;
  readonly cipher: string;
  /** The key-exchange group as the client reports it (getEphemeralKeyInfo().name). */
  readonly group: string | undefined;
}

/** One handshake with these client options: what was negotiated, or the error (always settled within 3 s). */
function handshake(options: tls.ConnectionOptions): Promise<Negotiated> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: edge.ca, ALPNProtocols: ['http/1.1'], ...options });
    sockets.push(socket);
    const timer = setTimeout(() => reject(new Error('handshake neither completed nor failed within 3 s')), 3000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const info = socket.getEphemeralKeyInfo() as { name?: string } | null;
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().standardName ?? socket.getCipher().name, group: info?.name });
      socket.destroy();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const failure = (p: Promise<unknown>): Promise<NodeJS.ErrnoException | null> =>
  p.then(
    () => null,
    (err: NodeJS.ErrnoException) => err,
  );

describe('TLS 1.2 suites: ECDHE with AEAD only', () => {
  test('a client offering only CBC suites (TLS 1.2) cannot complete a handshake', async () => {
    const err = await failure(
      handshake({
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ciphers: 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA',
      }),
    );
    expect(err).not.toBeNull();
    // The server's alert (handshake_failure), not a local refusal to offer anything.
    expect(err!.code).toMatch(/ALERT_HANDSHAKE_FAILURE/);
  });

  test.each([
    ['ECDHE-ECDSA-AES128-GCM-SHA256', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'],
    ['ECDHE-ECDSA-CHACHA20-POLY1305', 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256'],
  ])('TLS 1.2 with only %s succeeds', async (suite, standard) => {
    const n = await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: suite });
    expect(n.protocol).toBe('TLSv1.2');
    expect(n.cipher).toBe(standard);
  });
});

describe('key exchange groups: X25519MLKEM768 first, then X25519 and P-256; nothing else', () => {
  test.each([
    ['X25519MLKEM768', 'X25519MLKEM768'],
    ['X25519', 'X25519'],
    ['prime256v1', 'prime256v1'],
  ])('a client offering only %s negotiates it', async (curve, name) => {
    const n = await handshake({ ecdhCurve: curve });
    expect(n.protocol).toBe('TLSv1.3');
    expect(n.group).toBe(name);
  });

  test('a client offering only secp384r1 cannot complete a handshake', async () => {
    // TLS 1.3, where the group list is about key exchange alone (in TLS 1.2 it also names the curves
    // the client takes for the ECDSA certificate, P-256 here, so a P-384-only client fails anyway).
    const err = await failure(handshake({ ecdhCurve: 'secp384r1', minVersion: 'TLSv1.3' }));
    expect(err?.code).toMatch(/ALERT_HANDSHAKE_FAILURE/);
  });

  test('a client offering all of them gets X25519MLKEM768, whatever its own order', async () => {
    for (const curves of ['X25519MLKEM768:X25519:prime256v1:secp384r1', 'secp384r1:prime256v1:X25519:X25519MLKEM768']) {
      const n = await handshake({ ecdhCurve: curves });
      expect([curves, n.group]).toEqual([curves, 'X25519MLKEM768']);
    }
  });

  test('TLS 1.2 key exchange: X25519 is preferred, P-256 works', async () => {
    // A TLS 1.2 client lists P-256 besides X25519: its group list also says which certificate curves it takes.
    for (const [curves, group] of [
      ['X25519:prime256v1', 'X25519'],
      ['prime256v1:X25519', 'X25519'],
      ['prime256v1', 'prime256v1'],
    ] as const) {
      const n = await handshake({ ecdhCurve: curves, maxVersion: 'TLSv1.2' });
      expect([curves, n.protocol, n.group]).toEqual([curves, 'TLSv1.2', group]);
    }
  });
});

describe('protocol versions and renegotiation', () => {
  test.each(['TLSv1', 'TLSv1.1'] as const)('%s is refused by the server', async (version) => {
    // SECLEVEL=0: the client really offers the old version (else it refuses locally).
    const err = await failure(handshake({ minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' }));
    expect(err).not.toBeNull();
    expect(err!.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
  });

  test('client-initiated renegotiation on TLS 1.2 fails and the connection is not renegotiated', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: edge.ca, maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    expect(socket.getProtocol()).toBe('TLSv1.2');
    let handshakes = 0;
    socket.on('secure', () => handshakes++);
    const outcome = await new Promise<{ via: string; err: NodeJS.ErrnoException | null }>((resolve) => {
      const timer = setTimeout(() => resolve({ via: 'timeout', err: null }), 3000);
      socket.once('error', (err) => {
        clearTimeout(timer);
        resolve({ via: 'socket error', err });
      });
      const started = socket.renegotiate({ rejectUnauthorized: false }, (err) => {
        clearTimeout(timer);
        resolve({ via: 'callback', err: err ?? null });
      });
      if (!started) {
        clearTimeout(timer);
        resolve({ via: 'not started', err: new Error('renegotiate() refused to start') });
      }
    });
    expect(outcome.err).not.toBeNull();
    expect(outcome.via).not.toBe('timeout');
    expect(String(outcome.err!.code ?? outcome.err!.message)).toMatch(/RENEGOTIATION/i);
    expect(handshakes).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// HSTS

const get = (path: string, extra: { method?: string; headers?: Record<string, string> } = {}, on: TestEdge = edge): Promise<Reply> =>
  request({ port: on.httpsPorts[0]!, ca: on.ca, path, ...extra });

/** Every value of one header, from a raw [name, value, …] list. */
function all(raw: readonly string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) values.push(raw[i + 1]!);
  return values;
}

describe('Strict-Transport-Security on every HTTPS answer', () => {
  test('a proxied 200 (HTTP/1.1 and HTTP/2)', async () => {
    const one = await get('/_matrix/client/versions');
    expect([one.status, one.headers['strict-transport-security']]).toEqual([200, HSTS]);
    const two = await h2request({ port, ca: edge.ca, path: '/_matrix/client/versions' });
    expect([two.status, two.headers['strict-transport-security']]).toEqual([200, HSTS]);
  });

  test('a well-known answer', async () => {
    const r = await get('/.well-known/matrix/server');
    expect([r.status, r.headers['strict-transport-security']]).toEqual([200, HSTS]);
  });

  test('an edge 404 and an edge 405', async () => {
    const notFound = await get('/index.html');
    expect([notFound.status, notFound.headers['strict-transport-security']]).toEqual([404, HSTS]);
    const notAllowed = await get('/_matrix/client/versions', { method: 'TRACE' });
    expect([notAllowed.status, notAllowed.headers['strict-transport-security']]).toEqual([405, HSTS]);
  });

  test('a 400 the HTTP/1.1 parser refused', async () => {
    const ex = await rawExchange(port, edge.ca, 'GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nnot a header\r\n\r\n');
    expect(ex.responses.map((r) => [r.status, headerOf(r, 'strict-transport-security')])).toEqual([[400, HSTS]]);
  });

  // New config key (proxy.max_requests_per_connection): on 0e5a331 this config is rejected.
  test('a 429 (over the per-connection share, while a request is held)', async () => {
    const site = per.keep(await startTestEdge(siteYaml({ more: 'proxy: { max_requests_per_connection: 1 }\n' }), { dir: per.newDir() }));
    const held: http.ServerResponse[] = [];
    upstream.behaviour = (req, res, record) => {
      if (req.url!.includes('hold')) void record().then(() => held.push(res), () => undefined);
      else echo(req, res, record);
    };
    per.onEnd(async () => {
      for (const res of held.splice(0)) res.destroy();
    });
    const p = site.httpsPorts[0]!;
    const session = connectH2(p, site.ca).on('error', () => undefined);
    per.onEnd(async () => session.destroy());
    const first = h2request({ port: p, ca: site.ca, path: '/_matrix/client/v3/sync?hold=1', session });
    first.catch(() => undefined);
    await waitFor('the first request held upstream', () => held.length === 1, 3000);
    const second = await h2request({ port: p, ca: site.ca, path: '/_matrix/client/v3/sync?second=1', session });
    expect([second.status, second.headers['strict-transport-security'], second.headers['retry-after']]).toEqual([429, HSTS, '1']);
    held[0]!.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    expect((await first).status).toBe(200);
  });

  test('never on the plain-HTTP listener’s redirect', async () => {
    const answer = await new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: edge.httpPort!, path: '/_matrix/client/versions', headers: { host: 'localhost' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(answer.status).toBe(301);
    expect(answer.headers['location']).toMatch(/^https:\/\/localhost/);
    expect(answer.headers['strict-transport-security']).toBeUndefined();
  });

  test('an upstream’s own Strict-Transport-Security wins over the edge’s (one header, the upstream’s)', async () => {
    const own = 'max-age=60; includeSubDomains';
    upstream.behaviour = (_req, res, record) => {
      void record().then(() => {
        res.writeHead(200, { 'content-type': 'application/json', 'strict-transport-security': own });
        res.end('{}');
      });
    };
    const one = await get('/_matrix/client/versions');
    expect(one.status).toBe(200);
    expect(all(one.rawHeaders, 'strict-transport-security')).toEqual([own]);
    const two = await h2request({ port, ca: edge.ca, path: '/_matrix/client/versions' });
    expect([two.status, two.headers['strict-transport-security']]).toEqual([200, own]);
  });
});

// New config key (tls.hsts): on 0e5a331 these configs are rejected.
describe('tls.hsts', () => {
  test('false: no Strict-Transport-Security on a proxied 200, an edge 404 or a parser-refused 400', async () => {
    const site = per.keep(await startTestEdge(siteYaml({ tls: ', hsts: false' }), { dir: per.newDir() }));
    const ok = await get('/_matrix/client/versions', {}, site);
    expect([ok.status, ok.headers['strict-transport-security']]).toEqual([200, undefined]);
    const notFound = await get('/index.html', {}, site);
    expect([notFound.status, notFound.headers['strict-transport-security']]).toEqual([404, undefined]);
    const two = await h2request({ port: site.httpsPorts[0]!, ca: site.ca, path: '/_matrix/client/versions' });
    expect([two.status, two.headers['strict-transport-security']]).toEqual([200, undefined]);
    const ex = await rawExchange(site.httpsPorts[0]!, site.ca, 'GET / HTTP/1.1\r\nHost: localhost\r\nnot a header\r\n\r\n');
    expect(ex.responses.map((r) => [r.status, headerOf(r, 'strict-transport-security')])).toEqual([[400, undefined]]);
  });

  test('{ max_age: 1h } → max-age=3600', async () => {
    const site = per.keep(await startTestEdge(siteYaml({ tls: ', hsts: { max_age: 1h }' }), { dir: per.newDir() }));
    const ok = await get('/_matrix/client/versions', {}, site);
    expect([ok.status, ok.headers['strict-transport-security']]).toEqual([200, 'max-age=3600']);
    const notFound = await get('/index.html', {}, site);
    expect([notFound.status, notFound.headers['strict-transport-security']]).toEqual([404, 'max-age=3600']);
  });
});
