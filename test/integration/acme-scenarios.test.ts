/**
 * ACME scenarios against a real Pebble, through the real edge (`tls.issuer: acme`):
 *
 * 1. TLS-ALPN-01 alone (`listen.http: null`): both names issued and served on every HTTPS port.
 * 2. `acme.key_type`: the served leaf carries a P-384 / RSA-2048 key.
 * 3. Renewal (30 s certificates, renewed with a third of the lifetime left) swaps the certificate
 *    for new handshakes while open HTTP/1.1 and HTTP/2 connections keep working on the old one.
 * 4. A CA that rejects 30 % of nonces: issuance still completes.
 * 5. External Account Binding: issued with `acme.eab`; without it the CA's problem is logged, the
 *    listeners stay up and the status shows the error.
 * 6. The CA down at start (listeners up, failures logged, retried) then up: issued. A stored
 *    certificate is served while the CA is down, renewal failures are logged, and a new CA instance
 *    (which forgot the account) renews it.
 *
 * Pebble validates HTTP-01 on `httpPort` and TLS-ALPN-01 on `tlsPort` at 127.0.0.1 for every name,
 * so the edge's listeners are bound on exactly those ports (keepPorts).
 *
 * Every scenario runs twice: on the file storage, and on the in-memory one
 * (test/support/memory-storage.ts) — nothing may depend on files.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as acme from 'acme-client';
import { acmeIssuerId } from '../../src/store/keys';
import type { ManagedCertificates, NameStatus } from '../../src/control/source';
import type { EdgeOptions } from '../../src/edge';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { STORAGE_KINDS, TestStorages } from '../support/storages';
import { freePort, pebbleInstalled, pebbleTls, startPebble, type RunningPebble } from '../support/pebble';
import { waitFor } from '../support/wait';
import { servedChain } from '../support/served-leaf';

jest.setTimeout(90_000);

const SERVER_NAME = 'example.com';
const HOSTNAME = 'matrix.example.com';
const NAMES = [HOSTNAME, SERVER_NAME];
const SOLVED = 'ACME challenge solved';
const ORDER = 'ACME order created';
const ISSUANCE_FAILED = 'certificate issuance failed; no certificate to serve for this name yet';
const RENEWAL_FAILED = 'certificate renewal failed; still serving the current certificate';

type Log = Record<string, unknown>;


/** Every name is served on every port with a chain verifying against `root`; the leaf serials by name. */
async function expectVerified(ports: readonly number[], root: string): Promise<Map<string, string>> {
  const serials = new Map<string, string>();
  for (const port of ports) {
    for (const name of NAMES) {
      const got = await servedChain(port, name, root);
      expect({ port, name, authorized: got.authorized, error: got.error }).toEqual({ port, name, authorized: true, error: null });
      const leaf = got.chain[0]!;
      expect(leaf.checkHost(name)).toBe(name);
      if (serials.has(name)) expect(leaf.serialNumber).toBe(serials.get(name));
      serials.set(name, leaf.serialNumber);
    }
  }
  return serials;
}

/** Resolves whether a TCP connection to 127.0.0.1:port is accepted. */
function tcpConnects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

function acmeYaml(o: { https: readonly number[]; http: number | null; pebble: { directory: string; caRootsFile: string }; acme?: readonly string[] }): string {
  return [
    `server_name: ${SERVER_NAME}`,
    `hostname: ${HOSTNAME}`,
    'listen:',
    `  https: [${o.https.join(', ')}]`,
    `  http: ${o.http === null ? 'null' : o.http}`,
    '  address: ["127.0.0.1"]',
    'tls:',
    '  issuer: acme',
    'acme:',
    `  ca: ${o.pebble.directory}`,
    `  ca_roots: [${JSON.stringify(o.pebble.caRootsFile)}]`,
    '  email: test@example.com',
    ...(o.acme ?? []).map((l) => `  ${l}`),
    '',
  ].join('\n');
}

const source = (edge: TestEdge): ManagedCertificates => edge.edge.certificates.managed!;
const byMsg = (logs: readonly Log[], msg: string): Log[] => logs.filter((l) => l.msg === msg);

/** `whenReady()`, bounded: rejects with the edge's status and last log lines after `ms`. */
async function ready(edge: TestEdge, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no certificates within ${ms} ms: ${JSON.stringify(source(edge).status())}\n${edge.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`)),
      ms,
    );
  });
  try {
    await Promise.race([source(edge).whenReady(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls until every name's served serial differs from `before`; returns the new status. */
async function renewed(edge: TestEdge, before: ReadonlyMap<string, string>, ms: number): Promise<NameStatus[]> {
  const changed = (): boolean => source(edge).status().every((s) => s.serial !== null && s.serial !== before.get(s.name));
  await waitFor('renewed certificates', changed, ms).catch(() => {
    throw new Error(`no renewal within ${ms} ms: ${JSON.stringify(source(edge).status())}\n${edge.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`);
  });
  return source(edge).status();
}

interface H1Reply {
  readonly status: number;
  readonly body: string;
  readonly socket: tls.TLSSocket;
  readonly reused: boolean;
}

/** GET /.well-known/matrix/server through `agent` (keep-alive: the same socket is reused). */
function h1Get(agent: https.Agent, port: number, servername: string): Promise<H1Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, servername, path: '/.well-known/matrix/server', headers: { host: servername }, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), socket: req.socket as tls.TLSSocket, reused: req.reusedSocket }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function h2Get(session: http2.ClientHttp2Session, authority: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ':path': '/.well-known/matrix/server', ':authority': authority });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
    stream.on('error', reject);
    stream.end();
  });
}

function h2Connect(port: number, servername: string, ca: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

const serialOf = (socket: tls.TLSSocket): string => new X509Certificate(socket.getPeerCertificate().raw).serialNumber;

const run = pebbleInstalled() ? describe : describe.skip;

run('ACME scenarios against Pebble', () => {
  describe.each(STORAGE_KINDS)('on %s storage', (kind) => {
    const storages = new TestStorages(kind);
    const pebbles: RunningPebble[] = [];
    const edges: TestEdge[] = [];
    const dirs: string[] = [];
    const cleanups: Array<() => void> = [];

    const newDir = (): string => {
      const dir = tempDir('matrix-edge-acme-');
      dirs.push(dir);
      return dir;
    };
    const pebbleUp = async (opts: Parameters<typeof startPebble>[0]): Promise<RunningPebble> => {
      const p = await startPebble(opts);
      pebbles.push(p);
      return p;
    };
    const edgeUp = async (yaml: string, dir: string, edge: EdgeOptions = {}): Promise<TestEdge> => {
      const e = await startTestEdge(yaml, { dir, keepPorts: true, edge: { ...storages.edgeOptions(dir), ...edge } });
      edges.push(e);
      return e;
    };
    const edgeDown = async (e: TestEdge): Promise<void> => {
      edges.splice(edges.indexOf(e), 1);
      await e.stop(0);
    };
    const pebbleDown = async (p: RunningPebble): Promise<void> => {
      pebbles.splice(pebbles.indexOf(p), 1);
      await p.stop();
    };

    afterEach(async () => {
      for (const c of cleanups.splice(0)) c();
      await Promise.all(edges.splice(0).map((e) => e.stop(0).catch(() => undefined)));
      await Promise.all(pebbles.splice(0).map((p) => p.stop()));
      for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
      storages.clear();
    });

    it('TLS-ALPN-01 only (listen.http: null): both names issued and served on both HTTPS ports', async () => {
      const [p1, p2, deadHttp] = [await freePort(), await freePort(), await freePort()];
      // Nothing listens on Pebble's HTTP-01 port: an HTTP-01 attempt would fail.
      const pebble = await pebbleUp({ httpPort: deadHttp, tlsPort: p1 });
      const started = performance.now();
      const edge = await edgeUp(acmeYaml({ https: [p1, p2], http: null, pebble }), newDir());
      const listening = performance.now();
      expect(edge.httpPort).toBeNull();
      expect(edge.httpsPorts).toEqual([p1, p2]);
      await ready(edge, 30_000);
      console.log(
        `TLS-ALPN-01: listeners up ${Math.round(listening - started)} ms after start; both certificates installed after ${Math.round(performance.now() - started)} ms`,
      );

      const serials = await expectVerified([p1, p2], await pebble.issuingRoot());
      expect(new Set(serials.values()).size).toBe(2);
      const solved = byMsg(edge.logs, SOLVED);
      expect(solved.map((l) => [l.name, l.challenge]).sort()).toEqual(NAMES.map((n) => [n, 'tls-alpn-01']).sort());
      expect(byMsg(edge.logs, 'answered a TLS-ALPN-01 validation').length).toBeGreaterThanOrEqual(2);
      // HTTP-01 was never tried: no order, no challenge, no fallback for it.
      expect(edge.logs.filter((l) => l.challenge === 'http-01')).toEqual([]);
      expect(byMsg(edge.logs, ORDER).map((l) => l.challenge)).toEqual(['tls-alpn-01', 'tls-alpn-01']);
      expect(edge.logs.filter((l) => l.level !== 'info' && l.level !== 'debug')).toEqual([]);
    });

    it.each([
      ['p384', (leaf: X509Certificate) => [leaf.publicKey.asymmetricKeyType, leaf.publicKey.asymmetricKeyDetails?.namedCurve], ['ec', 'secp384r1']],
      ['rsa2048', (leaf: X509Certificate) => [leaf.publicKey.asymmetricKeyType, leaf.publicKey.asymmetricKeyDetails?.modulusLength], ['rsa', 2048]],
    ] as const)('acme.key_type %s: the served leaf has that key', async (keyType, describeKey, expected) => {
      const [httpsPort, httpPort] = [await freePort(), await freePort()];
      const pebble = await pebbleUp({ httpPort, tlsPort: httpsPort });
      const edge = await edgeUp(acmeYaml({ https: [httpsPort], http: httpPort, pebble, acme: [`key_type: ${keyType}`] }), newDir());
      await ready(edge, 30_000);
      const root = await pebble.issuingRoot();
      for (const name of NAMES) {
        const got = await servedChain(httpsPort, name, root);
        expect({ name, authorized: got.authorized, error: got.error }).toEqual({ name, authorized: true, error: null });
        expect(describeKey(got.chain[0]!)).toEqual(expected);
      }
    });

    it('renewal swaps the certificate for new handshakes; open HTTP/1.1 and HTTP/2 connections keep the old one', async () => {
      const [httpsPort, httpPort] = [await freePort(), await freePort()];
      const pebble = await pebbleUp({ httpPort, tlsPort: httpsPort, validitySeconds: 30 });
      const dir = newDir();
      // random 0.5: the middle of an ARI window, should the CA offer one (Pebble's is centred on the 1/3 point).
      const edge = await edgeUp(acmeYaml({ https: [httpsPort], http: httpPort, pebble }), dir, { timing: { random: () => 0.5, retryBaseMs: 1000 } });
      await ready(edge, 30_000);
      const root = await pebble.issuingRoot();
      const first = await expectVerified([httpsPort], root);
      const issuerId = acmeIssuerId(pebble.directory);
      const store = storages.certificates(dir);
      for (const s of source(edge).status()) {
        expect(s.serial).toBe(first.get(s.name));
        const leaf = (await store.loadCertificate(issuerId, s.name))!.leaf;
        const [notBefore, notAfter] = [leaf.validFromDate.getTime(), leaf.validToDate.getTime()];
        expect(Date.parse(s.notAfter!)).toBe(notAfter);
        expect(notAfter - notBefore).toBeLessThanOrEqual(30_000);
        // Renewal planned when a third of the lifetime is left.
        expect(Math.abs(Date.parse(s.nextRenewal!) - (notAfter - (notAfter - notBefore) / 3))).toBeLessThan(1000);
        expect(Date.parse(s.nextRenewal!)).toBeGreaterThan(Date.now());
      }
      const ordersBefore = byMsg(edge.logs, ORDER).length;
      expect(ordersBefore).toBe(2);

      // Connections opened before the renewal, each with one request answered.
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: root });
      cleanups.push(() => agent.destroy());
      const h1Before = await h1Get(agent, httpsPort, SERVER_NAME);
      expect(h1Before.status).toBe(200);
      expect(JSON.parse(h1Before.body)).toEqual({ 'm.server': expect.any(String) });
      expect(serialOf(h1Before.socket)).toBe(first.get(SERVER_NAME));
      const session = await h2Connect(httpsPort, HOSTNAME, root);
      cleanups.push(() => session.destroy());
      const h2Socket = session.socket as tls.TLSSocket;
      expect(h2Socket.alpnProtocol).toBe('h2');
      expect(serialOf(h2Socket)).toBe(first.get(HOSTNAME));
      expect((await h2Get(session, SERVER_NAME)).status).toBe(200);

      const after = await renewed(edge, first, 40_000);

      // New handshakes: the new certificates, verified.
      const second = await expectVerified([httpsPort], root);
      for (const s of after) expect(second.get(s.name)).toBe(s.serial);
      // The open connections still work, on the same sockets, with the certificate they started with.
      const h1After = await h1Get(agent, httpsPort, SERVER_NAME);
      expect(h1After.status).toBe(200);
      expect(h1After.reused).toBe(true);
      expect(h1After.socket).toBe(h1Before.socket);
      expect(h1After.socket.localPort).toBe(h1Before.socket.localPort);
      expect(serialOf(h1After.socket)).toBe(first.get(SERVER_NAME));
      expect(session.closed || session.destroyed).toBe(false);
      expect((await h2Get(session, SERVER_NAME)).status).toBe(200);
      expect(session.socket).toBe(h2Socket);
      expect(serialOf(h2Socket)).toBe(first.get(HOSTNAME));

      // New orders were made, and the store holds the new certificates.
      expect(byMsg(edge.logs, ORDER).length).toBeGreaterThanOrEqual(ordersBefore + 2);
      for (const name of NAMES) {
        const stored = await store.loadCertificate(issuerId, name);
        expect(stored?.meta.serial).toBe(second.get(name));
      }
    });

    it('a CA that rejects 30 % of nonces: both certificates are still issued', async () => {
      const [httpsPort, httpPort] = [await freePort(), await freePort()];
      // Counts the CA's badNonce answers as they reach the protocol library (same process).
      let badNonces = 0;
      const interceptor = acme.axios.interceptors.response.use((response) => {
        const data: unknown = response.data;
        if (response.status === 400 && (data as { type?: unknown } | null)?.type === 'urn:ietf:params:acme:error:badNonce') badNonces += 1;
        return response;
      });
      cleanups.push(() => acme.axios.interceptors.response.eject(interceptor));
      const pebble = await pebbleUp({ httpPort, tlsPort: httpsPort, env: { PEBBLE_WFE_NONCEREJECT: '30' } });
      const edge = await edgeUp(acmeYaml({ https: [httpsPort], http: httpPort, pebble }), newDir(), { timing: { retryBaseMs: 500 } });
      await ready(edge, 30_000);
      await expectVerified([httpsPort], await pebble.issuingRoot());
      // Nonces were rejected on this run (the protocol library retried them).
      expect(pebble.output()).toContain('Configured to reject 30% of good nonces');
      expect(badNonces).toBeGreaterThan(0);
    });

    it('External Account Binding: issued with acme.eab; without it the CA problem is logged and the listeners stay up', async () => {
      const [httpsPort, httpPort] = [await freePort(), await freePort()];
      const pebble = await pebbleUp({ httpPort, tlsPort: httpsPort, eab: true });
      const withEab = await edgeUp(
        acmeYaml({ https: [httpsPort], http: httpPort, pebble, acme: ['eab:', '  kid: kid-1', `  hmac_key: ${pebble.eabKeys['kid-1']}`] }),
        newDir(),
      );
      await ready(withEab, 30_000);
      await expectVerified([httpsPort], await pebble.issuingRoot());
      await edgeDown(withEab);

      // Fresh storage, no EAB.
      const without = await edgeUp(acmeYaml({ https: [httpsPort], http: httpPort, pebble }), newDir());
      await waitFor('issuance failures for both names', () => byMsg(without.logs, ISSUANCE_FAILED).length >= 2, 20_000);
      const failures = byMsg(without.logs, ISSUANCE_FAILED);
      expect(failures.map((l) => l.name).sort()).toEqual([...NAMES].sort());
      for (const f of failures) {
        expect(f.problem).toEqual(expect.objectContaining({ type: 'urn:ietf:params:acme:error:externalAccountRequired' }));
        expect(f.err).toEqual(expect.any(String));
        expect(Date.parse(String(f.retryAt))).toBeGreaterThan(Date.now());
      }
      expect(await tcpConnects(httpsPort)).toBe(true);
      expect(await tcpConnects(httpPort)).toBe(true);
      for (const s of source(without).status()) {
        expect(s.serial).toBeNull();
        expect(s.failures).toBeGreaterThanOrEqual(1);
        expect(s.lastError).toMatch(/externalAccountRequired|external account/i);
        expect(s.nextRenewal).not.toBeNull();
      }
      expect(byMsg(without.logs, ORDER)).toEqual([]);
    });

    it('CA down at start, then up: issued on retry; a stored certificate is served while the CA is down and renewed by a new CA instance', async () => {
      const [httpsPort, httpPort, caPort] = [await freePort(), await freePort(), await freePort()];
      // Pebble's HTTPS identity exists before Pebble does, so acme.ca_roots is valid for every instance.
      const pebbleTlsFiles = await pebbleTls(newDir());
      const directory = `https://127.0.0.1:${caPort}/dir`;
      const yaml = acmeYaml({ https: [httpsPort], http: httpPort, pebble: { directory, caRootsFile: pebbleTlsFiles.caRootsFile } });
      const dir = newDir();
      const timing = { retryBaseMs: 500, random: () => 0.5 };
      const issuerId = acmeIssuerId(directory);
      const store = storages.certificates(dir);

      // 1. No CA: the listeners are up, nothing is served, failures are logged with a retry time.
      const edge = await edgeUp(yaml, dir, { timing });
      expect(edge.plan.storage).toBe(path.join(dir, 'certs'));
      expect(await tcpConnects(httpsPort)).toBe(true);
      expect(await tcpConnects(httpPort)).toBe(true);
      // (Each failed attempt takes ~6 s: the protocol library's own retries.)
      await waitFor('issuance failures for both names', () => new Set(byMsg(edge.logs, ISSUANCE_FAILED).map((l) => l.name)).size === 2, 20_000);
      for (const f of byMsg(edge.logs, ISSUANCE_FAILED)) {
        expect(Date.parse(String(f.retryAt))).toBeGreaterThan(Date.parse(String(f.time)));
        expect(f.err).toContain(directory);
        // The real cause, not the protocol library's internal error after its retries.
        expect(f.err).toMatch(/ECONNREFUSED/);
      }
      for (const s of source(edge).status()) {
        expect(s.serial).toBeNull();
        expect(s.lastError).not.toBeNull();
        expect(s.nextRenewal).not.toBeNull();
      }
      await expect(servedChain(httpsPort, SERVER_NAME, fs.readFileSync(pebbleTlsFiles.caRootsFile, 'utf8'))).rejects.toThrow();

      // The CA comes up on that port. 45 s certificates: due 30 s after issuance, expired 15 s later
      // (a failed renewal is logged ~6 s after it is due, leaving ~9 s to see the old one still served).
      const first = await pebbleUp({ httpPort, tlsPort: httpsPort, listenPort: caPort, tls: pebbleTlsFiles, validitySeconds: 45 });
      expect(first.directory).toBe(directory);
      await ready(edge, 20_000);
      const firstRoot = await first.issuingRoot();
      const issued = await expectVerified([httpsPort], firstRoot);

      // 2. CA down again; restart on the same storage: the stored certificates are served at once.
      await pebbleDown(first);
      await edgeDown(edge);
      const restarted = await edgeUp(yaml, dir, { timing });
      expect(byMsg(restarted.logs, 'certificate installed').filter((l) => l.component === 'certs').map((l) => l.from)).toEqual(['storage', 'storage']);
      expect(await expectVerified([httpsPort], firstRoot)).toEqual(issued);
      for (const name of NAMES) expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(issued.get(name));

      // Once due, renewal fails (no CA) and the stored certificates stay served.
      await waitFor('renewal failures for both names', () => new Set(byMsg(restarted.logs, RENEWAL_FAILED).map((l) => l.name)).size === 2, 40_000);
      expect(await expectVerified([httpsPort], firstRoot)).toEqual(issued);
      for (const f of byMsg(restarted.logs, RENEWAL_FAILED)) {
        expect(Date.parse(String(f.retryAt))).toBeGreaterThan(Date.parse(String(f.time)));
        expect(f.current).toBe(source(restarted).status().find((s) => s.name === f.name)!.notAfter);
      }
      for (const s of source(restarted).status()) {
        expect(s.serial).toBe(issued.get(s.name));
        expect(s.failures).toBeGreaterThanOrEqual(1);
        expect(s.lastError).not.toBeNull();
      }
      expect(byMsg(restarted.logs, ORDER)).toEqual([]);

      // 3. A new CA instance on the same port: it does not know the stored account; renewal succeeds.
      const second = await pebbleUp({ httpPort, tlsPort: httpsPort, listenPort: caPort, tls: pebbleTlsFiles });
      const after = await renewed(restarted, issued, 20_000);
      const renewedServed = await expectVerified([httpsPort], await second.issuingRoot());
      for (const s of after) {
        expect(renewedServed.get(s.name)).toBe(s.serial);
        expect(s.failures).toBe(0);
        expect(s.lastError).toBeNull();
      }
      expect(byMsg(restarted.logs, 'the CA does not know the stored ACME account; registering it again').length).toBeGreaterThanOrEqual(1);
      expect(byMsg(restarted.logs, 'ACME account registered for the stored key').length).toBeGreaterThanOrEqual(1);
      for (const name of NAMES) expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(renewedServed.get(name));
    });
  });
});
