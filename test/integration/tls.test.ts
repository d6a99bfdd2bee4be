/**
 * TLS on the HTTPS listeners through a real edge: docs/matrix.md S1 items 1, 2, 12, 14, 16 (the same
 * certificate on every port), S3 33, 35, 38.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { createLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';
import { connectH2, h2request, request } from '../support/client';
import { startTestEdge, type TestEdge } from '../support/edge';
import { startUpstream, type Upstream } from '../support/upstream';

const DAY = 24 * 60 * 60 * 1000;
const NAMES = ['localhost', 'example.com'] as const;
const SERVER_BODY = JSON.stringify({ 'm.server': 'localhost:8443' });

// ---------------------------------------------------------------------------------------------
// Helpers: raw TLS handshakes and HTTP/1.1 over a socket we control

interface Hello {
  readonly der: Buffer;
  readonly cert: X509Certificate;
  readonly protocol: string | null;
  readonly alpn: string | false | null;
  readonly authorized: boolean;
  /** Node reports the reason as a code string (e.g. ERR_TLS_CERT_ALTNAME_INVALID), null when verified. */
  readonly authorizationError: string | null;
}

interface HelloOptions {
  /** SNI; null sends none (the host is an IP literal, so Node sends none either). */
  readonly servername: string | null;
  readonly ca?: string;
  readonly host?: string;
  readonly minVersion?: tls.SecureVersion;
  readonly maxVersion?: tls.SecureVersion;
  readonly ciphers?: string;
  /** ALPN protocols offered; null offers no ALPN extension. */
  readonly alpn?: string[] | null;
}

function connectOptions(port: number, o: HelloOptions): tls.ConnectionOptions {
  return {
    host: o.host ?? '127.0.0.1',
    port,
    ...(o.servername === null ? {} : { servername: o.servername }),
    ...(o.ca === undefined ? {} : { ca: o.ca }),
    ...(o.minVersion === undefined ? {} : { minVersion: o.minVersion }),
    ...(o.maxVersion === undefined ? {} : { maxVersion: o.maxVersion }),
    ...(o.ciphers === undefined ? {} : { ciphers: o.ciphers }),
    ...(o.alpn === null ? {} : { ALPNProtocols: o.alpn ?? ['h2', 'http/1.1'] }),
    rejectUnauthorized: false,
  };
}

/** Open a TLS connection (never resuming a session), wait for the handshake. */
function openTls(port: number, o: HelloOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(connectOptions(port, o), () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

function describeHello(socket: tls.TLSSocket): Hello {
  const peer = socket.getPeerCertificate(true);
  const der = peer.raw;
  return {
    der,
    cert: new X509Certificate(der),
    protocol: socket.getProtocol(),
    alpn: socket.alpnProtocol,
    authorized: socket.authorized,
    authorizationError: socket.authorizationError === undefined || socket.authorizationError === null ? null : String(socket.authorizationError),
  };
}

async function hello(port: number, o: HelloOptions): Promise<Hello> {
  const socket = await openTls(port, o);
  try {
    return describeHello(socket);
  } finally {
    socket.destroy();
  }
}

interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** Reads HTTP/1.1 responses (Content-Length framed) one after another from a socket. */
class ResponseReader {
  private buffered = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(socket: tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
  }

  get closed(): boolean {
    return this.ended;
  }

  private async more(deadline: number): Promise<void> {
    if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffered.toString('latin1'))}`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for the response')), Math.max(0, deadline - Date.now()));
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }

  async next(timeoutMs = 5000): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs;
    let headEnd: number;
    while ((headEnd = this.buffered.indexOf('\r\n\r\n')) === -1) await this.more(deadline);
    const head = this.buffered.subarray(0, headEnd).toString('latin1').split('\r\n');
    const statusLine = /^HTTP\/1\.1 (\d{3}) /.exec(head[0]!);
    if (statusLine === null) throw new Error(`not an HTTP/1.1 status line: ${head[0]}`);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length'] ?? NaN);
    if (!Number.isInteger(length)) throw new Error(`response without Content-Length: ${head.join(' | ')}`);
    while (this.buffered.length < headEnd + 4 + length) await this.more(deadline);
    const body = Buffer.from(this.buffered.subarray(headEnd + 4, headEnd + 4 + length));
    this.buffered = this.buffered.subarray(headEnd + 4 + length);
    return { status: Number(statusLine[1]), headers, body };
  }

  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      try {
        await this.more(deadline);
      } catch {
        return this.ended;
      }
    }
    return true;
  }
}

const wellKnownRequest = (host: string, connection?: string): string =>
  `GET /.well-known/matrix/server HTTP/1.1\r\nHost: ${host}\r\n${connection === undefined ? '' : `Connection: ${connection}\r\n`}\r\n`;

/** One HTTPS request that accepts any certificate (for names the edge does not serve). */
function insecureRequest(o: { port: number; servername: string; hostHeader: string; path: string }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: o.port,
        path: o.path,
        servername: o.servername,
        rejectUnauthorized: false,
        headers: { host: o.hostHeader },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers[k] = v;
          resolve({ status: res.statusCode!, headers, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function listFiles(root: string): Promise<string[]> {
  const entries = await fsp.readdir(root, { recursive: true }).catch(() => [] as string[]);
  return entries.map((e) => e.toString());
}

async function pollUntil<T>(what: string, probe: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const serialOfSocket = (socket: tls.TLSSocket): string => new X509Certificate(socket.getPeerCertificate().raw).serialNumber;

/** Synchronous probe (a child process) so a describe block can be skipped at collection time. */
function canBindIpv6Loopback(): boolean {
  const probe = spawnSync(
    process.execPath,
    ['-e', "require('net').createServer().once('error',()=>process.exit(3)).listen(0,'::1',function(){this.close(()=>process.exit(0))})"],
    { timeout: 10_000 },
  );
  return probe.status === 0;
}

// ---------------------------------------------------------------------------------------------
// One edge with the local CA: server_name example.com, hostname localhost, two HTTPS ports

let upstream: Upstream;
let edge: TestEdge;
let root: X509Certificate;
const tempDirs: string[] = [];

beforeAll(async () => {
  upstream = await startUpstream();
  edge = await startTestEdge(`
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: 8080 }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
`);
  root = new X509Certificate(edge.ca);
  tempDirs.push(edge.dir);
});

afterAll(async () => {
  await edge?.stop();
  await upstream?.close();
  for (const dir of tempDirs) await fsp.rm(dir, { recursive: true, force: true });
});

const portOf = (i: number): number => edge.httpsPorts[i]!;
const PORTS = [
  ['8443', 0],
  ['8448', 1],
] as const;

describe('certificates by SNI', () => {
  test('the edge listens on two HTTPS ports', () => {
    expect(edge.httpsPorts).toHaveLength(2);
    expect(root.ca).toBe(true);
  });

  describe.each(NAMES.map((n) => [n]))('SNI %s', (name) => {
    test.each(PORTS)('port %s: a certificate valid for the name, issued by the local CA root', async (_label, i) => {
      const h = await hello(portOf(i), { servername: name, ca: edge.ca });
      expect([h.authorized, h.authorizationError]).toEqual([true, null]);
      expect(h.cert.checkHost(name)).toBe(name);
      expect(h.cert.checkIssued(root)).toBe(true);
      expect(h.cert.verify(root.publicKey)).toBe(true);
      const now = Date.now();
      expect(h.cert.validFromDate.getTime()).toBeLessThanOrEqual(now);
      expect(h.cert.validToDate.getTime()).toBeGreaterThan(now);
      expect(h.cert.ca).toBe(false);
    });

    test('the same certificate on every HTTPS port', async () => {
      const a = await hello(portOf(0), { servername: name });
      const b = await hello(portOf(1), { servername: name });
      expect(b.cert.fingerprint256).toBe(a.cert.fingerprint256);
    });
  });

  test.each(PORTS)('port %s: no SNI gets the hostname certificate, valid and from the local CA', async (_label, i) => {
    const none = await hello(portOf(i), { servername: null, ca: edge.ca });
    const named = await hello(portOf(i), { servername: 'localhost' });
    expect(none.cert.checkHost('localhost')).toBe('localhost');
    expect(none.cert.verify(root.publicKey)).toBe(true);
    expect(none.cert.checkIssued(root)).toBe(true);
    expect(none.cert.fingerprint256).toBe(named.cert.fingerprint256);
    expect(none.cert.subject).not.toBe(none.cert.issuer); // not self-signed
  });
});

describe('names the edge does not serve', () => {
  test('an unknown SNI gets no certificate minted for it', async () => {
    for (const [, i] of PORTS) {
      const h = await hello(portOf(i), { servername: 'evil.example', ca: edge.ca });
      expect(h.cert.checkHost('evil.example')).toBeUndefined();
      expect(h.authorized).toBe(false);
      // what it gets instead is the hostname's certificate
      expect(h.cert.checkHost('localhost')).toBe('localhost');
    }
    const stored = await listFiles(path.join(edge.plan.storage, 'certificates'));
    expect(stored.some((p) => p.split(path.sep).includes('localhost'))).toBe(true);
    expect(stored.some((p) => p.split(path.sep).includes('example.com'))).toBe(true);
    expect(stored.filter((p) => p.includes('evil'))).toEqual([]);
    const installed = edge.logs.filter((l) => l.msg === 'certificate installed').flatMap((l) => l.names as string[]);
    expect(installed).not.toContain('evil.example');
  });

  test('an HTTP/1.1 request for an unknown host is refused with 421 and never reaches the upstream', async () => {
    const before = upstream.requests.length;
    for (const [, i] of PORTS) {
      for (const hostHeader of ['evil.example', `evil.example:${portOf(i)}`]) {
        const reply = await insecureRequest({ port: portOf(i), servername: 'evil.example', hostHeader, path: '/_matrix/client/versions' });
        expect(reply.status).toBe(421);
        expect(reply.headers['content-type']).toBe('application/json');
        expect(JSON.parse(reply.body.toString('utf8'))).toEqual({ errcode: 'M_UNRECOGNIZED', error: expect.stringContaining('evil.example') });
      }
    }
    expect(upstream.requests.length).toBe(before);
    const stored = await listFiles(path.join(edge.plan.storage, 'certificates'));
    expect(stored.filter((p) => p.includes('evil'))).toEqual([]);
  });

  test('an HTTP/2 request for an unknown :authority is refused with 421 and never reaches the upstream', async () => {
    const before = upstream.requests.length;
    const session = http2.connect(`https://127.0.0.1:${portOf(1)}`, { servername: 'evil.example', rejectUnauthorized: false });
    try {
      const reply = await h2request({ port: portOf(1), ca: edge.ca, session, authority: 'evil.example', path: '/_matrix/federation/v1/version' });
      expect(reply.status).toBe(421);
      expect(reply.json().errcode).toBe('M_UNRECOGNIZED');
    } finally {
      session.close();
    }
    expect(upstream.requests.length).toBe(before);
  });
});

describe('protocol versions', () => {
  const legacy = { ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  let control: tls.Server;
  let controlPort: number;

  beforeAll(async () => {
    // A deliberately permissive server, to prove this client really offers TLS 1.0/1.1: a refusal
    // from the edge is then the edge's doing, not the client's.
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-tls-legacy-'));
    tempDirs.push(dir);
    const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), createLogger('silent'));
    const { certPem, keyPem } = await ca.issue(['localhost'], DAY);
    control = tls.createServer({ cert: certPem, key: keyPem, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    controlPort = (control.address() as { port: number }).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => control.close(() => resolve()));
  });

  test.each(['TLSv1', 'TLSv1.1'] as const)('%s is refused by the edge on every port', async (version) => {
    const offered = await hello(controlPort, { servername: 'localhost', minVersion: version, maxVersion: version, ...legacy });
    expect(offered.protocol).toBe(version); // the client can and does speak it

    for (const [, i] of PORTS) {
      for (const servername of ['localhost', 'example.com', null]) {
        const err = await hello(portOf(i), { servername, minVersion: version, maxVersion: version, ...legacy }).then(
          () => null,
          (e: NodeJS.ErrnoException) => e,
        );
        expect(err).not.toBeNull();
        // alert 70 (protocol_version) received from the server, not "no protocols available" locally
        expect(err!.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
      }
    }
  });

  test.each(['TLSv1.2', 'TLSv1.3'] as const)('%s is accepted and serves a request', async (version) => {
    for (const [, i] of PORTS) {
      const socket = await openTls(portOf(i), { servername: 'localhost', ca: edge.ca, minVersion: version, maxVersion: version, alpn: ['http/1.1'] });
      try {
        expect(socket.getProtocol()).toBe(version);
        expect(socket.authorized).toBe(true);
        const reader = new ResponseReader(socket);
        socket.write(wellKnownRequest('localhost', 'close'));
        const res = await reader.next();
        expect(res.status).toBe(200);
        expect(res.body.toString('utf8')).toBe(SERVER_BODY);
      } finally {
        socket.destroy();
      }
    }
  });

  test('a client offering TLS 1.0–1.3 gets TLS 1.3', async () => {
    const h = await hello(portOf(1), { servername: 'example.com', minVersion: 'TLSv1', maxVersion: 'TLSv1.3', ...legacy });
    expect(h.protocol).toBe('TLSv1.3');
  });
});

describe('ALPN and HTTP/1.1 clients', () => {
  test.each(PORTS)('port %s: offering h2 and http/1.1 negotiates h2, and an HTTP/2 request works', async (_label, i) => {
    const socket = await openTls(portOf(i), { servername: 'example.com', ca: edge.ca, alpn: ['h2', 'http/1.1'] });
    expect(socket.alpnProtocol).toBe('h2');
    const session = http2.connect(`https://127.0.0.1:${portOf(i)}`, { createConnection: () => socket });
    try {
      const reply = await h2request({ port: portOf(i), ca: edge.ca, session, authority: 'example.com', path: '/.well-known/matrix/server' });
      expect(reply.status).toBe(200);
      expect(reply.body.toString('utf8')).toBe(SERVER_BODY);
      expect(session.alpnProtocol).toBe('h2');
    } finally {
      session.close();
      socket.destroy();
    }
  });

  test.each(PORTS)('port %s: offering only http/1.1 negotiates http/1.1, and a request works', async (_label, i) => {
    const socket = await openTls(portOf(i), { servername: 'localhost', ca: edge.ca, alpn: ['http/1.1'] });
    try {
      expect(socket.alpnProtocol).toBe('http/1.1');
      const reader = new ResponseReader(socket);
      socket.write(wellKnownRequest(`localhost:${portOf(i)}`, 'close'));
      const res = await reader.next();
      expect(res.status).toBe(200);
      expect(res.body.toString('utf8')).toBe(SERVER_BODY);
    } finally {
      socket.destroy();
    }
  });

  test.each(PORTS)('port %s: no ALPN is HTTP/1.1, served with keep-alive and then Connection: close', async (_label, i) => {
    const socket = await openTls(portOf(i), { servername: 'example.com', ca: edge.ca, alpn: null });
    try {
      expect(socket.alpnProtocol).toBe(false);
      const reader = new ResponseReader(socket);
      socket.write(wellKnownRequest('example.com'));
      const first = await reader.next();
      expect(first.status).toBe(200);
      expect(first.body.toString('utf8')).toBe(SERVER_BODY);
      expect(first.headers['connection']).not.toBe('close');
      // the same connection serves a second request, proxied this time
      socket.write(`GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: example.com:8448\r\nUser-Agent: Synapse/1.120.0\r\n\r\n`);
      const second = await reader.next();
      expect(second.status).toBe(200);
      expect(JSON.parse(second.body.toString('utf8')).target).toBe('/_matrix/federation/v1/version');
      socket.write(wellKnownRequest('example.com', 'close'));
      const third = await reader.next();
      expect(third.status).toBe(200);
      expect(third.headers['connection']).toBe('close');
      expect(await reader.closedWithin(2000)).toBe(true);
    } finally {
      socket.destroy();
    }
  });
});

const canBindV6 = canBindIpv6Loopback();
if (!canBindV6) console.warn('tls.test.ts: skipping the IPv6 tests: ::1 cannot be bound on this machine');
const describeV6 = canBindV6 ? describe : describe.skip;

describeV6('IPv4 and IPv6 listeners (skipped when ::1 cannot be bound)', () => {
  let dual: TestEdge;

  beforeAll(async () => {
    dual = await startTestEdge(
      `
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
`,
      { addresses: ['127.0.0.1', '::1'] },
    );
    tempDirs.push(dual.dir);
  });

  afterAll(async () => {
    await dual?.stop();
  });

  test('both families are bound for every HTTPS port and give the same answers', async () => {
    const https = dual.edge.listeners.filter((l) => l.kind === 'https');
    expect(https.map((l) => l.address).sort()).toEqual(['127.0.0.1', '127.0.0.1', '::1', '::1']);
    const bodies = new Set<string>();
    for (const l of https) {
      const reply = await request({ host: l.address, port: l.port, ca: dual.ca, path: '/.well-known/matrix/server' });
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toBe('application/json');
      bodies.add(reply.body.toString('utf8'));

      const proxied = await request({ host: l.address, port: l.port, ca: dual.ca, path: '/_matrix/federation/v1/version?x=1' });
      expect(proxied.status).toBe(200);
      const seen = proxied.json<{ target: string; headers: Record<string, string> }>();
      expect(seen.target).toBe('/_matrix/federation/v1/version?x=1');
      expect(seen.headers['x-forwarded-for']).toBe(l.address);

      const h = await hello(l.port, { host: l.address, servername: 'example.com', ca: dual.ca });
      expect(h.authorized).toBe(true);
      expect(h.cert.checkHost('example.com')).toBe('example.com');
    }
    expect([...bodies]).toEqual([SERVER_BODY]);
  });
});

describe('certificate replacement under open connections (tls.issuer: files)', () => {
  let dir: string;
  let ca: LocalCa;
  let filesEdge: TestEdge;
  let certPath: string;
  let keyPath: string;
  let firstSerial: string;

  const writePair = async (): Promise<string> => {
    const { certPem, keyPem } = await ca.issue(['localhost', 'example.com'], 30 * DAY);
    // Replace atomically (rename), key first: the reloader never reads half a file.
    await fsp.writeFile(`${keyPath}.tmp`, keyPem, { mode: 0o600 });
    await fsp.writeFile(`${certPath}.tmp`, certPem + ca.rootPem);
    await fsp.rename(`${keyPath}.tmp`, keyPath);
    await fsp.rename(`${certPath}.tmp`, certPath);
    return new X509Certificate(certPem).serialNumber;
  };

  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-tls-swap-'));
    tempDirs.push(dir);
    ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), createLogger('silent'));
    certPath = path.join(dir, 'fullchain.pem');
    keyPath = path.join(dir, 'privkey.pem');
    firstSerial = await writePair();
    filesEdge = await startTestEdge(
      `
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: null }
upstream: ${upstream.url}
tls:
  issuer: files
  files: [{ cert: ${certPath}, key: ${keyPath} }]
  reload_interval: 1s
storage: ./certs
`,
      { dir },
    );
  });

  afterAll(async () => {
    await filesEdge?.stop();
  });

  interface Sent {
    readonly status: number;
    readonly body: string;
    readonly socket: tls.TLSSocket;
    readonly localPort: number;
  }

  const viaAgent = (agent: https.Agent, port: number): Promise<Sent> =>
    new Promise((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port, path: '/.well-known/matrix/server', ca: ca.rootPem, servername: 'localhost', headers: { host: 'localhost' }, agent },
        (res) => {
          const socket = res.socket as tls.TLSSocket;
          const localPort = socket.localPort!;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8'), socket, localPort }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });

  test('a new certificate is served to new connections on every port; open HTTP/1.1 and HTTP/2 connections carry on', async () => {
    const port = filesEdge.httpsPorts[0]!;
    const fedPort = filesEdge.httpsPorts[1]!;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const session = connectH2(fedPort, ca.rootPem, 'example.com');
    try {
      // Before: both connections open, both on the first certificate.
      const first = await viaAgent(agent, port);
      expect(first.status).toBe(200);
      expect(first.body).toBe(SERVER_BODY);
      expect(serialOfSocket(first.socket)).toBe(firstSerial);
      const h2before = await h2request({ port: fedPort, ca: ca.rootPem, session, authority: 'example.com:8448', path: '/.well-known/matrix/server' });
      expect(h2before.status).toBe(200);
      const h2socket = session.socket as tls.TLSSocket;
      expect(serialOfSocket(h2socket)).toBe(firstSerial);

      // Swap the files; wait until a new connection sees the new certificate.
      const secondSerial = await writePair();
      expect(secondSerial).not.toBe(firstSerial);
      await pollUntil(
        'a new connection to present the new certificate',
        () => hello(port, { servername: 'localhost', ca: ca.rootPem }),
        (h) => h.cert.serialNumber === secondSerial,
      );

      // Every listener, every name and no SNI: the new certificate, valid.
      const caRoot = new X509Certificate(ca.rootPem);
      for (const p of [port, fedPort]) {
        for (const servername of ['localhost', 'example.com', null]) {
          const h = await hello(p, { servername, ca: ca.rootPem });
          expect(h.cert.serialNumber).toBe(secondSerial);
          expect(h.cert.checkHost(servername ?? 'localhost')).toBe(servername ?? 'localhost');
          expect(h.cert.checkIssued(caRoot)).toBe(true);
          expect(h.cert.verify(caRoot.publicKey)).toBe(true);
          // with no SNI the client checks the name against 127.0.0.1, so only the chain is checked above
          if (servername !== null) expect([h.authorized, h.authorizationError]).toEqual([true, null]);
        }
      }

      // The kept-alive HTTP/1.1 connection was not dropped: same socket, old certificate.
      expect(first.socket.destroyed).toBe(false);
      const again = await viaAgent(agent, port);
      expect(again.status).toBe(200);
      expect(again.body).toBe(SERVER_BODY);
      expect(again.socket).toBe(first.socket);
      expect(again.localPort).toBe(first.localPort);
      expect(serialOfSocket(again.socket)).toBe(firstSerial);

      // The open HTTP/2 session was not dropped either.
      expect(session.closed).toBe(false);
      expect(session.destroyed).toBe(false);
      const h2after = await h2request({ port: fedPort, ca: ca.rootPem, session, authority: 'example.com:8448', path: '/.well-known/matrix/server' });
      expect(h2after.status).toBe(200);
      expect(h2after.body.toString('utf8')).toBe(SERVER_BODY);
      expect(session.socket as tls.TLSSocket).toBe(h2socket);
      expect(serialOfSocket(h2socket)).toBe(firstSerial);

      // New HTTP/2 sessions get the new certificate.
      const fresh = await h2request({ port: fedPort, ca: ca.rootPem, servername: 'example.com', authority: 'example.com', path: '/.well-known/matrix/server' });
      expect(fresh.status).toBe(200);
    } finally {
      agent.destroy();
      session.close();
    }
  });

  test('after the swap TLS 1.1 is still refused and TLS 1.2 still accepted, with and without SNI', async () => {
    for (const p of filesEdge.httpsPorts) {
      for (const servername of ['localhost', null]) {
        const err = await hello(p, { servername, minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }).then(
          () => null,
          (e: NodeJS.ErrnoException) => e,
        );
        expect(err?.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
        const ok = await hello(p, { servername, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ca: ca.rootPem });
        expect(ok.protocol).toBe('TLSv1.2');
        expect(ok.alpn).toBe('h2');
      }
    }
  });
});
