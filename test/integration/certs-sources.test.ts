import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Plan, TlsPlan } from '../../src/config/plan';
import { ManualClock } from '../../src/control/clock';
import { FilesSource } from '../../src/control/files-source';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { ManagedSource } from '../../src/control/managed/source';
import { createCertificateSource } from '../../src/control/sources';
import { silentLogger } from '../../src/observe/log';
import type { CertificateMaterial } from '../../src/plane/messages';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-sources-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function planWith(tls: TlsPlan, names: string[] = ['localhost', '127.0.0.1']): Plan {
  return {
    source: path.join(dir, 'matrix-edge.yaml'),
    serverName: names[0]!,
    hostname: names[0]!,
    names,
    listen: { https: [{ port: 8443, addresses: ['127.0.0.1'] }], http: null },
    upstreams: [],
    routes: [],
    wellKnown: { server: '{}', client: '{}', support: null, maxAgeSeconds: 3600 },
    tls,
    acme: null,
    storage: path.join(dir, 'certs'),
    limits: {
      handshakeTimeoutMs: 10_000,
      headerTimeoutMs: 30_000,
      idleTimeoutMs: 120_000,
      maxHeaderBytes: 32_768,
      maxConnections: 10_000,
      maxStreams: 128,
      bodyIdleTimeoutMs: 60_000,
      sendTimeoutMs: 60_000,
      perConnection: 100,
      perAddress: 512,
    },
    hsts: null,
    strictSniHost: false,
    trustedProxies: [],
    drainTimeoutMs: 1000,
    log: { level: 'info', format: 'json', levels: {} },
    requestIdHeader: null,
    workers: 1,
    admin: null,
    alerts: null,
  };
}

describe('createCertificateSource', () => {
  it('internal: a ManagedSource over the local CA, with the root path in the notes', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const { source, notes } = await createCertificateSource(
      planWith({ issuer: 'internal', leafLifetimeSeconds: 7 * 24 * 3600 }),
      silentLogger,
      clock,
    );
    const rootPath = path.join(dir, 'certs', 'pki', 'authorities', 'local', 'root.crt');
    expect(source).toBeInstanceOf(ManagedSource);
    expect(source.id).toBe('local');
    expect(notes).toEqual([`local CA root: ${rootPath} — trust it to verify this edge`]);
    const installed: CertificateMaterial[] = [];
    await source.start((m) => installed.push(m));
    source.stop();
    expect(installed.map((m) => m.names)).toEqual(expect.arrayContaining([['localhost'], ['127.0.0.1']]));
    const root = new X509Certificate(await fsp.readFile(rootPath));
    for (const m of installed) {
      const leaf = new X509Certificate(m.certPem);
      expect(leaf.verify(root.publicKey)).toBe(true);
      expect(leaf.validToDate.getTime()).toBe(clock.now() + 7 * 24 * 3600e3);
    }
    expect(await new CertificateStore(new FileStorage(path.join(dir, 'certs'))).loadCertificate('local', 'localhost')).not.toBeNull();
  });

  it('files: a FilesSource over tls.files', async () => {
    const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger);
    const { certPem, keyPem } = await ca.issue(['localhost'], 24 * 3600e3);
    const cert = path.join(dir, 'a.crt');
    const key = path.join(dir, 'a.key');
    await fsp.writeFile(cert, certPem);
    await fsp.writeFile(key, keyPem);
    const { source, notes } = await createCertificateSource(
      planWith({ issuer: 'files', files: [{ cert, key }], reloadIntervalSeconds: 60 }, ['localhost']),
      silentLogger,
      new ManualClock(),
    );
    expect(source).toBeInstanceOf(FilesSource);
    expect(source.id).toBe('files');
    expect(notes.join('\n')).toMatch(/every 60 s/);
    const installed: CertificateMaterial[] = [];
    await source.start((m) => installed.push(m));
    source.stop();
    expect(installed).toEqual([
      { names: ['localhost'], certPem, keyPem, notAfter: new X509Certificate(certPem).validToDate.toISOString() },
    ]);
  });

  it('acme: a ManagedSource over the ACME issuer, keyed by the directory; no network until started', async () => {
    const plan: Plan = {
      ...planWith({ issuer: 'acme' }, ['example.com']),
      acme: { email: null, directory: 'https://acme-v02.api.letsencrypt.org/directory', caRoots: [], eab: null, profile: null, challenges: ['http-01', 'tls-alpn-01'], keyType: 'p256', fallbacks: [] },
    };
    const { source, notes } = await createCertificateSource(plan, silentLogger, new ManualClock(), () => undefined);
    expect(source).toBeInstanceOf(ManagedSource);
    expect(source.id).toBe('acme-v02.api.letsencrypt.org-directory');
    expect(notes.join('\n')).toMatch(/acme-v02\.api\.letsencrypt\.org\/directory/);
  });

  it('acme: needs an acme section and a channel for challenge answers', async () => {
    await expect(createCertificateSource(planWith({ issuer: 'acme' }), silentLogger)).rejects.toThrow(
      'tls.issuer is acme but the plan has no acme section',
    );
    const plan: Plan = {
      ...planWith({ issuer: 'acme' }, ['example.com']),
      acme: { email: null, directory: 'https://acme-v02.api.letsencrypt.org/directory', caRoots: [], eab: null, profile: null, challenges: ['http-01', 'tls-alpn-01'], keyType: 'p256', fallbacks: [] },
    };
    await expect(createCertificateSource(plan, silentLogger)).rejects.toThrow(/needs a channel to the data plane/);
  });
});
