import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ManualClock } from '../../src/control/clock';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { ManagedSource, type Issuer } from '../../src/control/managed-source';
import { renewalTime } from '../../src/control/renewal';
import { createLogger, type Logger } from '../../src/observe/log';
import type { CertificateMaterial } from '../../src/plane/messages';
import { FileStore } from '../../src/store/fs-store';
import { captureLog, waitFor } from '../support/wait';

const DAY = 24 * 60 * 60 * 1000;
const LIFETIME = 9 * DAY; // renewal at 6 days (plus the 5-minute backdate's share)


class TestIssuer implements Issuer {
  readonly id = 'local';
  calls = 0;
  failWith: string | null = null;
  constructor(
    private readonly ca: LocalCa,
    private readonly lifetimeMs = LIFETIME,
  ) {}
  async issue(names: string[]): Promise<{ certPem: string; keyPem: string }> {
    this.calls++;
    if (this.failWith !== null) throw new Error(this.failWith);
    return this.ca.issue(names, this.lifetimeMs);
  }
}

let dir: string;
let clock: ManualClock;
let store: FileStore;
let ca: LocalCa;
const sources: ManagedSource[] = [];

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-managed-'));
  clock = new ManualClock(Date.UTC(2030, 2, 1, 10, 0, 0));
  store = new FileStore(dir);
  ca = await LocalCa.open(store, createLogger('silent'), clock);
});
afterEach(async () => {
  for (const s of sources.splice(0)) s.stop();
  await fsp.rm(dir, { recursive: true, force: true });
});

function makeSource(issuer: Issuer, names: string[], log: Logger): ManagedSource {
  const source = new ManagedSource({ names, store, issuer, log, clock, random: () => 0.5 });
  sources.push(source);
  return source;
}

const leafOf = (m: CertificateMaterial): X509Certificate => new X509Certificate(m.certPem);

describe('ManagedSource', () => {
  it('issues one certificate per name, stores it, installs it and logs the install', async () => {
    const { log, lines } = captureLog();
    const issuer = new TestIssuer(ca);
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['matrix.example.com', 'example.com', '127.0.0.1'], log).start((m) => installed.push(m));

    expect(issuer.calls).toBe(3);
    expect(installed.map((m) => m.names)).toEqual(
      expect.arrayContaining([['matrix.example.com'], ['example.com'], ['127.0.0.1']]),
    );
    for (const m of installed) {
      const leaf = leafOf(m);
      expect(leaf.verify(ca.root.publicKey)).toBe(true);
      expect(m.notAfter).toBe(leaf.validToDate.toISOString());
      const stored = await store.loadCertificate('local', m.names[0]!);
      expect(stored!.certPem).toBe(m.certPem);
      expect(stored!.meta.lastAttempt).toBe(new Date(clock.now()).toISOString());
    }
    const infos = lines.filter((l) => l.msg === 'certificate installed');
    expect(infos).toHaveLength(3);
    const first = infos.find((l) => l.name === 'matrix.example.com')!;
    expect(first.level).toBe('info');
    expect(first.issuer).toBe('local');
    expect(first.notAfter).toBe(new Date(clock.now() + LIFETIME).toISOString());
    expect(first.renewAt).toBe(
      new Date(renewalTime(clock.now() - 5 * 60_000, clock.now() + LIFETIME)).toISOString(),
    );
    expect(first.renewReason).toBe('1/3 of lifetime left');
    // one renewal timer per name, at the renewal time
    expect(clock.pendingTimers()).toHaveLength(3);
  });

  it('serves the stored certificate after a restart without issuing again', async () => {
    const issuer = new TestIssuer(ca);
    const first: CertificateMaterial[] = [];
    const s1 = makeSource(issuer, ['a.example'], captureLog().log);
    await s1.start((m) => first.push(m));
    s1.stop();
    expect(clock.pendingTimers()).toEqual([]);

    const second: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], captureLog().log).start((m) => second.push(m));
    expect(issuer.calls).toBe(1);
    expect(second).toHaveLength(1);
    expect(second[0]!.certPem).toBe(first[0]!.certPem);
  });

  it('renews when time passes the renewal time and installs the new certificate', async () => {
    const { log } = captureLog();
    const issuer = new TestIssuer(ca);
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], log).start((m) => installed.push(m));
    const old = leafOf(installed[0]!);
    const due = renewalTime(old.validFromDate.getTime(), old.validToDate.getTime());
    expect(clock.nextDue()).toBe(due);

    clock.advanceTo(due - 1000);
    await new Promise((r) => setTimeout(r, 20));
    expect(installed).toHaveLength(1);

    clock.advanceTo(due);
    await waitFor('the renewed certificate', () => installed.length === 2);
    const renewed = leafOf(installed[1]!);
    expect(renewed.serialNumber).not.toBe(old.serialNumber);
    expect(renewed.validToDate.getTime()).toBeGreaterThan(old.validToDate.getTime());
    expect(installed[1]!.names).toEqual(['a.example']);
    expect((await store.loadCertificate('local', 'a.example'))!.leaf.serialNumber).toBe(renewed.serialNumber);
    expect(clock.nextDue()).toBe(renewalTime(renewed.validFromDate.getTime(), renewed.validToDate.getTime()));
  });

  it('retries a failing issuer with backoff, keeps serving the old certificate, logs the cause', async () => {
    const { log, lines } = captureLog();
    const issuer = new TestIssuer(ca);
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], log).start((m) => installed.push(m));
    const old = leafOf(installed[0]!);
    const due = renewalTime(old.validFromDate.getTime(), old.validToDate.getTime());

    issuer.failWith = 'CA unreachable: ECONNREFUSED';
    clock.advanceTo(due);
    await waitFor('the first retry timer', () => clock.nextDue() !== null);
    expect(clock.nextDue()).toBe(due + 60_000); // attempt 1: 60 s (no jitter with random 0.5)
    clock.advance(60_000);
    await waitFor('the second retry timer', () => clock.nextDue() === due + 60_000 + 120_000);
    clock.advance(120_000);
    await waitFor('the third retry timer', () => clock.nextDue() === due + 180_000 + 240_000);
    expect(issuer.calls).toBe(4);
    expect(installed).toHaveLength(1);

    const errors = lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatchObject({
      name: 'a.example',
      issuer: 'local',
      err: 'CA unreachable: ECONNREFUSED',
      attempt: 1,
      msg: 'certificate renewal failed; still serving the current certificate',
    });
    expect(errors[2]!.attempt).toBe(3);
    const stored = await store.loadCertificate('local', 'a.example');
    expect(stored!.leaf.serialNumber).toBe(old.serialNumber);
    expect(stored!.meta.lastError).toBe('CA unreachable: ECONNREFUSED');

    issuer.failWith = null;
    clock.advance(240_000);
    await waitFor('the renewed certificate', () => installed.length === 2);
    expect(leafOf(installed[1]!).serialNumber).not.toBe(old.serialNumber);
    expect((await store.loadCertificate('local', 'a.example'))!.meta.lastError).toBeUndefined();
    // the backoff was reset: the next timer is the new certificate's renewal time
    const renewed = leafOf(installed[1]!);
    expect(clock.nextDue()).toBe(renewalTime(renewed.validFromDate.getTime(), renewed.validToDate.getTime()));
  });

  it('installs an expired stored certificate at once, then renews it before start resolves', async () => {
    const issuer = new TestIssuer(ca);
    const s1 = makeSource(issuer, ['a.example'], captureLog().log);
    const first: CertificateMaterial[] = [];
    await s1.start((m) => first.push(m));
    s1.stop();
    clock.advance(LIFETIME + DAY); // the stored certificate is now expired

    const { log, lines } = captureLog();
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], log).start((m) => installed.push(m));
    expect(installed).toHaveLength(2);
    expect(installed[0]!.certPem).toBe(first[0]!.certPem);
    expect(lines.find((l) => l.msg === 'certificate installed')!.expired).toBe(true);
    expect(leafOf(installed[1]!).validToDate.getTime()).toBeGreaterThan(clock.now());
  });

  it('serves an expired stored certificate while its renewal keeps failing', async () => {
    const issuer = new TestIssuer(ca);
    const s1 = makeSource(issuer, ['a.example'], captureLog().log);
    await s1.start(() => undefined);
    s1.stop();
    clock.advance(LIFETIME + DAY);
    issuer.failWith = 'down';
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], captureLog().log).start((m) => installed.push(m));
    expect(installed).toHaveLength(1);
    expect(clock.nextDue()).toBe(clock.now() + 60_000);
  });

  it('renews a due (not yet expired) stored certificate in the background', async () => {
    const issuer = new TestIssuer(ca);
    const s1 = makeSource(issuer, ['a.example'], captureLog().log);
    await s1.start(() => undefined);
    s1.stop();
    clock.advance(7 * DAY);
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], captureLog().log).start((m) => installed.push(m));
    expect(installed).toHaveLength(1);
    expect(clock.nextDue()).toBe(clock.now());
    clock.advance(0);
    await waitFor('the renewed certificate', () => installed.length === 2);
  });

  it('rejects start when a name has no certificate and the first attempt fails', async () => {
    const { log, lines } = captureLog();
    const issuer = new TestIssuer(ca);
    issuer.failWith = 'rate limited';
    const source = makeSource(issuer, ['a.example', 'b.example'], log);
    await expect(source.start(() => undefined)).rejects.toThrow(
      /no certificate could be obtained from issuer local: a\.example: rate limited; b\.example: rate limited/,
    );
    expect(clock.pendingTimers()).toEqual([]); // stopped
    expect(lines.filter((l) => l.level === 'error').map((l) => l.err)).toEqual(['rate limited', 'rate limited']);
  });

  it('replaces a stored certificate whose key does not match', async () => {
    const issuer = new TestIssuer(ca);
    const a = await ca.issue(['a.example'], LIFETIME);
    const b = await ca.issue(['a.example'], LIFETIME);
    await store.saveCertificate('local', 'a.example', {
      certPem: a.certPem,
      keyPem: b.keyPem,
      meta: { names: ['a.example'], issuer: 'local', serial: '1', notBefore: '', notAfter: '' },
    });
    const { log, lines } = captureLog();
    const installed: CertificateMaterial[] = [];
    await makeSource(issuer, ['a.example'], log).start((m) => installed.push(m));
    expect(issuer.calls).toBe(1);
    expect(installed).toHaveLength(1);
    expect(lines.find((l) => l.level === 'error')!.err).toMatch(/does not match/);
    expect(await store.loadCertificate('local', 'a.example')).not.toBeNull();
  });

  it('refuses an issued certificate that does not cover the name', async () => {
    const wrong: Issuer = { id: 'local', issue: () => ca.issue(['other.example'], LIFETIME) };
    await expect(makeSource(wrong, ['a.example'], captureLog().log).start(() => undefined)).rejects.toThrow(
      /does not cover a\.example/,
    );
  });
});
