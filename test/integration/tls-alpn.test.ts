/**
 * ACME TLS-ALPN-01 (RFC 8737) on the HTTPS listeners: a data plane fed by hand with a plan, a
 * local-CA certificate and challenge certificates made by acme-client, probed by real TLS clients.
 */
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import * as acme from 'acme-client';
import type { Plan } from '../../src/config/plan';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { DataPlane } from '../../src/data/data-plane';
import { createLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';
import { connectH2, h2request, request } from '../support/client';
import { planFrom, tempDir } from '../support/edge';
import { captureLog, waitFor, type LogLine } from '../support/wait';

const DAY = 24 * 60 * 60 * 1000;
const NAMES = ['localhost', 'example.com'];
const ANSWERED = 'answered a TLS-ALPN-01 validation';

interface ChallengeCertificate {
  readonly name: string;
  readonly keyAuthorization: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
}

async function challengeCertificate(name: string, keyAuthorization: string): Promise<ChallengeCertificate> {
  const key = await acme.crypto.createPrivateEcdsaKey();
  const authz = { identifier: { type: 'dns', value: name } } as unknown as acme.Authorization;
  const [keyPem, certPem] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, key);
  return {
    name,
    keyAuthorization,
    certPem: certPem.toString(),
    keyPem: keyPem.toString(),
    fingerprint: new X509Certificate(certPem).fingerprint256,
  };
}

type Validation =
  | {
      readonly outcome: 'negotiated';
      readonly alpn: string | false | null;
      readonly certPem: string;
      readonly fingerprint: string;
      /** Application bytes the server sent after the handshake. */
      readonly appData: number;
      /** The server closed the connection by itself. */
      readonly closedByServer: boolean;
    }
  | { readonly outcome: 'failed'; readonly error: string };

/**
 * What an ACME validator sees: a handshake offering (by default only) acme-tls/1. A handshake
 * that negotiates something else is cut at once; one that negotiates acme-tls/1 is watched until
 * the server closes it (or 3 s pass).
 */
function validate(port: number, servername: string | null, opts: { alpn?: string[]; socket?: Duplex } = {}): Promise<Validation> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ...(servername === null ? {} : { servername }),
      ALPNProtocols: opts.alpn ?? ['acme-tls/1'],
      rejectUnauthorized: false,
      ...(opts.socket === undefined ? {} : { socket: opts.socket }),
    });
    let secured: { alpn: string | false | null; certPem: string; fingerprint: string } | null = null;
    let appData = 0;
    let ended = false;
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on('secureConnect', () => {
      const cert = new X509Certificate(socket.getPeerCertificate().raw);
      secured = { alpn: socket.alpnProtocol, certPem: cert.toString(), fingerprint: cert.fingerprint256 };
      if (socket.alpnProtocol !== 'acme-tls/1') socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => (appData += chunk.length));
    socket.on('end', () => (ended = true));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(timer);
      if (secured === null) resolve({ outcome: 'failed', error: 'no handshake' });
      else resolve({ outcome: 'negotiated', ...secured, appData, closedByServer: ended });
    });
  });
}

function recordSplit(record: Buffer, size: number): Buffer {
  const out: Buffer[] = [];
  const payload = record.subarray(5);
  for (let at = 0; at < payload.length; at += size) {
    const part = payload.subarray(at, at + size);
    const header = Buffer.from(record.subarray(0, 5));
    header.writeUInt16BE(part.length, 3);
    out.push(header, part);
  }
  return Buffer.concat(out);
}

/**
 * A TLS client's transport to the edge that delivers the client's first TLS record one byte per
 * TCP write (yielding to the event loop between writes), optionally re-cut into handshake
 * records of `recordSize` bytes; everything after goes through as is.
 */
function trickle(port: number, recordSize: number | null = null): Duplex {
  const raw = net.connect({ host: '127.0.0.1', port, noDelay: true });
  let first: Buffer | null = Buffer.alloc(0);
  const duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      if (first === null) {
        raw.write(chunk, () => callback());
        return;
      }
      first = Buffer.concat([first, chunk]);
      if (first.length < 5 || first.length < 5 + first.readUInt16BE(3)) {
        callback();
        return;
      }
      const end = 5 + first.readUInt16BE(3);
      const hello = recordSize === null ? first.subarray(0, end) : recordSplit(first.subarray(0, end), recordSize);
      const rest = first.subarray(end);
      first = null;
      void (async () => {
        for (const byte of hello) {
          if (raw.destroyed) break;
          raw.write(Buffer.of(byte));
          await new Promise((r) => setImmediate(r));
        }
        if (rest.length > 0 && !raw.destroyed) raw.write(rest);
        callback();
      })();
    },
    final(callback) {
      raw.end();
      callback();
    },
    destroy(err, callback) {
      raw.destroy();
      callback(err);
    },
  });
  raw.on('data', (chunk: Buffer) => duplex.push(chunk));
  raw.on('end', () => duplex.push(null));
  raw.on('error', (err) => duplex.destroy(err));
  raw.on('close', () => duplex.destroy());
  return duplex;
}

/** An HTTP/1.1 request over a TLS connection made on `transport`; everything the server sends until it closes. */
function http1Over(transport: Duplex, port: number, rootPem: string): Promise<{ alpn: string | false | null; authorized: boolean; response: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: rootPem, ALPNProtocols: ['http/1.1'], socket: transport }, () => {
      socket.write('GET /.well-known/matrix/server HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve({ alpn: socket.alpnProtocol, authorized: socket.authorized, response: Buffer.concat(chunks).toString('latin1') }));
  });
}

/** A raw TCP connection, open and idle, with its close observed. */
async function openRaw(port: number, bytes?: Buffer): Promise<{ socket: net.Socket; closed: () => boolean }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  let isClosed = false;
  socket.on('error', () => {});
  socket.on('close', () => (isClosed = true));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  if (bytes !== undefined) socket.write(bytes);
  return { socket, closed: () => isClosed };
}

// ---------------------------------------------------------------------------------------------
// One data plane: two HTTPS ports, certificates from the local CA for localhost and example.com

const tempDirs: string[] = [];
const rawSockets: net.Socket[] = [];
let data: DataPlane;
let lines: LogLine[];
let ports: number[];
let rootPem: string;
let servedFingerprint: string;
let example: ChallengeCertificate;
let local: ChallengeCertificate;

function testPlan(dir: string): Plan {
  const loaded = planFrom(
    `
server_name: example.com
hostname: localhost
listen: { https: [8443, 8448], http: 8080 }
upstream: http://127.0.0.1:9
tls: { issuer: internal }
storage: ./certs
`,
    dir,
  );
  return { ...loaded, listen: { https: loaded.listen.https.map(() => ({ port: 0, addresses: ['127.0.0.1'] })), http: null } };
}

async function startPlane(dir: string, log = createLogger('silent')): Promise<{ plane: DataPlane; ports: number[]; rootPem: string }> {
  const plane = new DataPlane(log);
  plane.receive({ type: 'plan', plan: testPlan(dir) });
  const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), createLogger('silent'));
  const { certPem, keyPem } = await ca.issue(NAMES, DAY);
  plane.receive({ type: 'certificate', material: { names: NAMES, certPem, keyPem, notAfter: new Date(Date.now() + DAY).toISOString() } });
  const bound = await plane.listen();
  return { plane, ports: bound.filter((l) => l.kind === 'https').map((l) => l.port), rootPem: ca.rootPem };
}

beforeAll(async () => {
  const dir = tempDir();
  tempDirs.push(dir);
  const captured = captureLog();
  lines = captured.lines;
  ({ plane: data, ports, rootPem } = await startPlane(dir, captured.log));
  const served = await validate(ports[0]!, 'localhost', { alpn: ['h2', 'http/1.1'] });
  if (served.outcome !== 'negotiated') throw new Error('the HTTPS listener does not answer');
  servedFingerprint = served.fingerprint;
  example = await challengeCertificate('example.com', 'token-example.thumbprint-example');
  local = await challengeCertificate('localhost', 'token-local.thumbprint-local');
});

afterEach(() => {
  for (const socket of rawSockets.splice(0)) socket.destroy();
  for (const name of NAMES) data.receive({ type: 'alpn-challenge-remove', name });
});

afterAll(async () => {
  await data?.close(1000);
  for (const dir of tempDirs) await fsp.rm(dir, { recursive: true, force: true });
});

const addChallenge = (c: ChallengeCertificate, name = c.name): void =>
  data.receive({ type: 'alpn-challenge-add', name, certPem: c.certPem, keyPem: c.keyPem });
const answeredLines = (): LogLine[] => lines.filter((l) => l.msg === ANSWERED);

function expectAnswered(v: Validation, c: ChallengeCertificate): void {
  expect(v.outcome).toBe('negotiated');
  if (v.outcome !== 'negotiated') return;
  expect(v.alpn).toBe('acme-tls/1');
  expect(v.fingerprint).toBe(c.fingerprint);
  expect(acme.crypto.isAlpnCertificateAuthorizationValid(v.certPem, c.keyAuthorization)).toBe(true);
  expect(new X509Certificate(v.certPem).checkHost(c.name)).toBe(c.name);
  // RFC 8737 3: nothing but the handshake, then the connection is closed
  expect(v.appData).toBe(0);
  expect(v.closedByServer).toBe(true);
}

/** The connection is refused or gets no acme-tls/1, and never the challenge certificate. */
function expectNotAnswered(v: Validation): void {
  if (v.outcome === 'negotiated') {
    expect(v.alpn).not.toBe('acme-tls/1');
    expect([example.fingerprint, local.fingerprint]).not.toContain(v.fingerprint);
  }
}

async function expectNormalService(port: number): Promise<void> {
  const h2 = await h2request({ port, ca: rootPem, path: '/.well-known/matrix/server' });
  expect(h2.status).toBe(200);
  const h1 = await request({ port, ca: rootPem, path: '/.well-known/matrix/server' });
  expect(h1.status).toBe(200);
  const hello = await validate(port, 'example.com', { alpn: ['h2', 'http/1.1'] });
  expect(hello.outcome === 'negotiated' && hello.alpn).toBe('h2');
  expect(hello.outcome === 'negotiated' && hello.fingerprint).toBe(servedFingerprint);
}

describe('a pending TLS-ALPN-01 challenge', () => {
  test('is answered on every HTTPS port with the challenge certificate, then closed', async () => {
    expect(ports).toHaveLength(2);
    addChallenge(example);
    const before = answeredLines().length;
    for (const port of ports) expectAnswered(await validate(port, 'example.com'), example);
    await waitFor('the log lines', () => answeredLines().length === before + 2);
    expect(answeredLines().slice(before)).toEqual([
      expect.objectContaining({ level: 'info', component: 'tls', name: 'example.com', challenge: 'tls-alpn-01' }),
      expect.objectContaining({ level: 'info', component: 'tls', name: 'example.com', challenge: 'tls-alpn-01' }),
    ]);
  });

  test('matches the name without regard to case, on either side', async () => {
    addChallenge(local, 'LocalHost');
    expectAnswered(await validate(ports[1]!, 'LOCALHOST'), local);
  });

  test('several names pending at once each get their own certificate', async () => {
    addChallenge(example);
    addChallenge(local);
    expectAnswered(await validate(ports[0]!, 'localhost'), local);
    expectAnswered(await validate(ports[0]!, 'example.com'), example);
  });

  test('acme-tls/1 offered among other protocols is still a validation', async () => {
    addChallenge(example);
    expectAnswered(await validate(ports[0]!, 'example.com', { alpn: ['h2', 'acme-tls/1'] }), example);
  });

  test('ordinary HTTP/2 and HTTP/1.1 clients still get the served certificate and their answers', async () => {
    addChallenge(example);
    addChallenge(local);
    for (const port of ports) await expectNormalService(port);
    // a session opened during the challenge keeps working
    const session = connectH2(ports[0]!, rootPem, 'example.com');
    try {
      const reply = await h2request({ port: ports[0]!, ca: rootPem, path: '/.well-known/matrix/server', session });
      expect(reply.status).toBe(200);
    } finally {
      session.close();
    }
  });

  test('acme-tls/1 for a name without a pending challenge gets no handshake', async () => {
    addChallenge(example);
    const before = answeredLines().length;
    for (const port of ports) {
      for (const name of ['localhost', 'evil.example', null]) {
        const v = await validate(port, name);
        expect(v.outcome).toBe('failed');
      }
    }
    expect(answeredLines()).toHaveLength(before);
  });

  test('after alpn-challenge-remove, acme-tls/1 is no longer negotiated', async () => {
    addChallenge(example);
    addChallenge(local);
    expectAnswered(await validate(ports[0]!, 'example.com'), example);
    data.receive({ type: 'alpn-challenge-remove', name: 'example.com' });
    // another challenge still pending: the connection is screened and refused
    expect(await validate(ports[0]!, 'example.com')).toEqual({ outcome: 'failed', error: 'no handshake' });
    expectAnswered(await validate(ports[0]!, 'localhost'), local);
    // none pending: the listener's own TLS answers, which does not speak acme-tls/1
    data.receive({ type: 'alpn-challenge-remove', name: 'LOCALHOST' });
    for (const port of ports) {
      for (const name of ['example.com', 'localhost']) expectNotAnswered(await validate(port, name));
      await expectNormalService(port);
    }
  });

  test('a ClientHello arriving one byte per TCP write', async () => {
    addChallenge(example);
    expectAnswered(await validate(ports[0]!, 'example.com', { socket: trickle(ports[0]!) }), example);
    const normal = await http1Over(trickle(ports[1]!), ports[1]!, rootPem);
    expect(normal.authorized).toBe(true);
    expect(normal.alpn).toBe('http/1.1');
    expect(normal.response).toMatch(/^HTTP\/1\.1 200 /);
  });

  test.each([[1], [7], [100]])('a ClientHello cut into handshake records of %i bytes, one byte per TCP write', async (size) => {
    addChallenge(example);
    expectAnswered(await validate(ports[1]!, 'example.com', { socket: trickle(ports[1]!, size) }), example);
    const normal = await http1Over(trickle(ports[0]!, size), ports[0]!, rootPem);
    expect(normal.response).toMatch(/^HTTP\/1\.1 200 /);
  });

  test('peers that send nothing or half a ClientHello do not hold up anyone else', async () => {
    addChallenge(example);
    const silent = await openRaw(ports[0]!);
    const half = await openRaw(ports[0]!, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
    rawSockets.push(silent.socket, half.socket);
    expectAnswered(await validate(ports[0]!, 'example.com'), example);
    await expectNormalService(ports[0]!);
    expect(silent.closed()).toBe(false);
    expect(half.closed()).toBe(false);
  });

  test('bytes that are not a ClientHello get exactly what the normal stack gives them', async () => {
    const samples = [
      'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      '\x16\x03\x01\x00\x04\x02\x00\x00\x00', // a ServerHello
      '\x16\x03\x01\x00\x00', // a zero-length handshake record: OpenSSL waits for more
      '\x80\x2e\x01\x03\x01', // the start of an SSLv2-style hello: OpenSSL waits for the rest
    ].map((s) => Buffer.from(s, 'latin1'));
    /** What the server sends back and whether it closes, within 300 ms. */
    const observe = async (bytes: Buffer): Promise<{ reply: string; closed: boolean }> => {
      const peer = await openRaw(ports[0]!);
      rawSockets.push(peer.socket);
      const reply: Buffer[] = [];
      peer.socket.on('data', (c: Buffer) => reply.push(c));
      peer.socket.write(bytes);
      await new Promise((r) => setTimeout(r, 300));
      return { reply: Buffer.concat(reply).toString('hex'), closed: peer.closed() };
    };
    const unscreened = [];
    for (const bytes of samples) unscreened.push(await observe(bytes));
    addChallenge(example);
    const screened = [];
    for (const bytes of samples) screened.push(await observe(bytes));
    expect(screened).toEqual(unscreened);
    expect(unscreened.map((o) => o.closed)).toEqual([true, true, true, false, false]);
    expectAnswered(await validate(ports[0]!, 'example.com'), example);
  });

  test('a peer that hangs up mid-hello or resets the connection leaves the listener serving', async () => {
    addChallenge(example);
    const hangUp = await openRaw(ports[0]!, Buffer.from([0x16, 0x03, 0x01, 0x01, 0x00, 0x01]));
    hangUp.socket.end();
    await waitFor('the connection to close', hangUp.closed);
    const reset = await openRaw(ports[1]!, Buffer.from([0x16, 0x03]));
    reset.socket.resetAndDestroy();
    await waitFor('the connection to close', reset.closed);
    expectAnswered(await validate(ports[0]!, 'example.com'), example);
    expectAnswered(await validate(ports[1]!, 'example.com'), example);
  });
});

describe('a peer that never completes its ClientHello', () => {
  test('is cut after 10 s', async () => {
    addChallenge(example);
    const opened = performance.now();
    const half = await openRaw(ports[0]!, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    rawSockets.push(half.socket);
    await waitFor('the connection to be cut', half.closed, 15_000);
    const after = performance.now() - opened;
    expect(after).toBeGreaterThan(9_500);
    expect(after).toBeLessThan(12_000);
  }, 20_000);
});

describe('closing the data plane', () => {
  test('connections still showing their ClientHello are cut at once, not drained', async () => {
    const dir = tempDir();
    tempDirs.push(dir);
    const { plane, ports: own } = await startPlane(dir);
    plane.receive({ type: 'alpn-challenge-add', name: example.name, certPem: example.certPem, keyPem: example.keyPem });
    const silent = await openRaw(own[0]!);
    const half = await openRaw(own[1]!, Buffer.from([0x16, 0x03, 0x01]));
    rawSockets.push(silent.socket, half.socket);
    // a later connection answered on each port: both listeners have accepted the idle ones
    for (const port of own) expectAnswered(await validate(port, 'example.com'), example);
    expect(silent.closed() || half.closed()).toBe(false);
    const started = Date.now();
    await plane.close(10_000);
    expect(Date.now() - started).toBeLessThan(2000);
    await waitFor('the connections to close', () => silent.closed() && half.closed());
  });
});
