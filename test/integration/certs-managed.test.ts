import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ManualClock } from '../../src/control/clock';
import { LocalCa } from '../../src/control/issuers/local-ca';
import type { Issuer } from '../../src/control/issuer';
import type { CertificateEvent } from '../../src/control/source';
import { ME_ACME_STEP } from '../../src/errors';
import { ManagedSource } from '../../src/control/managed/source';
import { renewalTime } from '../../src/control/renewal';
import { createLogger, type Logger } from '../../src/observe/log';
import type { CertificateMaterial } from '../../src/plane/messages';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { MemoryStorage } from '../support/memory-storage';
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
  async issue(names: readonly string[]): Promise<{ certPem: string; keyPem: string }> {
    this.calls++;
    if (this.failWith !== null) throw new Error(this.failWith);
    return this.ca.issue(names, this.lifetimeMs);
  }
}

describe.each(['file', 'memory'] as const)('on %s storage', (kind) => {
  let dir: string;
  let clock: ManualClock;
  let store: CertificateStore;
  let ca: LocalCa;
  const sources: ManagedSource[] = [];

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-managed-'));
    clock = new ManualClock(Date.UTC(2030, 2, 1, 10, 0, 0));
    store = new CertificateStore(kind === 'file' ? new FileStorage(dir) : new MemoryStorage());
    ca = await LocalCa.open(store.storage, createLogger('silent'), clock);
  });
  afterEach(async () => {
    for (const s of sources.splice(0)) s.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  function makeSource(issuer: Issuer, names: string[], log: Logger): ManagedSource {
    const source = new ManagedSource({ names, store, issuers: [issuer], log, clock, random: () => 0.5, storePollMs: 0 });
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
      await waitFor(`the third retry timer (next due ${clock.nextDue()! - due})`, () => clock.nextDue() === due + 180_000 + 240_000);
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

    it('background mode: start resolves before missing certificates exist; whenReady resolves once they do', async () => {
      const issuer = new TestIssuer(ca);
      const installed: CertificateMaterial[] = [];
      const source = new ManagedSource({ names: ['a.example'], store, issuers: [issuer], log: captureLog().log, clock, random: () => 0.5, storePollMs: 0, background: true });
      sources.push(source);
      await source.start((m) => installed.push(m));
      expect(installed).toHaveLength(0);
      expect(source.status()[0]).toMatchObject({ name: 'a.example', serial: null, nextReason: 'no certificate yet' });
      clock.advance(0);
      await source.whenReady();
      expect(installed).toHaveLength(1);
      expect(source.status()[0]!.serial).toBe(leafOf(installed[0]!).serialNumber);
    });

    it('tries each fallback CA in order after the primary fails, and stores under the CA that issued', async () => {
      const { log, lines } = captureLog();
      const primary: Issuer = { id: 'primary.example-dir', issue: () => Promise.reject(new Error('primary down')) };
      const second: Issuer = { id: 'second.example-dir', issue: () => Promise.reject(new Error('second down')) };
      const third = new TestIssuer(ca);
      const source = new ManagedSource({ names: ['a.example'], store, issuers: [primary, second, { id: 'third.example-dir', issue: (n) => third.issue(n) }], log, clock, storePollMs: 0 });
      sources.push(source);
      await source.start(() => undefined);
      expect(third.calls).toBe(1);
      expect(source.status()[0]!.issuer).toBe('third.example-dir');
      expect(await store.loadCertificate('third.example-dir', 'a.example')).not.toBeNull();
      expect(lines.filter((l) => l.msg === 'certificate request failed; trying the next CA').map((l) => [l.issuer, l.err])).toEqual([
        ['primary.example-dir', 'primary down'],
        ['second.example-dir', 'second down'],
      ]);
      // After a restart the stored certificate of the fallback CA is found and served.
      source.stop();
      const again = new ManagedSource({ names: ['a.example'], store, issuers: [primary, second, { id: 'third.example-dir', issue: (n) => third.issue(n) }], log, clock, storePollMs: 0 });
      sources.push(again);
      await again.start(() => undefined);
      expect(third.calls).toBe(1);
    });

    it("waits at least the CA's Retry-After, and never backs off past the certificate's expiry", async () => {
      const issuer = new TestIssuer(ca);
      const installed: CertificateMaterial[] = [];
      await makeSource(issuer, ['a.example'], captureLog().log).start((m) => installed.push(m));
      const old = leafOf(installed[0]!);
      const due = renewalTime(old.validFromDate.getTime(), old.validToDate.getTime());
      const limited = Object.assign(new Error('rateLimited'), { retryAfterMs: 3 * 3600_000 });
      const rateLimited: Issuer = { id: 'local', issue: () => Promise.reject(limited) };
      const source = makeSource(rateLimited, ['a.example'], captureLog().log);
      sources[0]!.stop();
      await source.start(() => undefined);
      clock.advanceTo(due);
      await waitFor('the retry timer', () => clock.nextDue() !== null && clock.nextDue()! > due);
      expect(clock.nextDue()).toBe(due + 3 * 3600_000);
      // Close to expiry the backoff is capped at a third of the time left (at least the base delay).
      source.stop();
      clock.advanceTo(old.validToDate.getTime() - 6 * 3600_000);
      const plain: Issuer = { id: 'local', issue: () => Promise.reject(new Error('down')) };
      const late = makeSource(plain, ['a.example'], captureLog().log);
      await late.start(() => undefined);
      clock.advance(0);
      await waitFor('the capped retry timer', () => clock.nextDue() !== null && clock.nextDue()! > clock.now());
      expect(clock.nextDue()! - clock.now()).toBeLessThanOrEqual(2 * 3600_000);
    });

    it('tells its listeners each request and failure, with the category the issuer\'s error carries', async () => {
      const limited = new ME_ACME_STEP('new order for a.example', 'https://ca.example/dir', 'the CA answered 429', { category: 'rateLimited', retryAfterMs: 1000 });
      const primary: Issuer = { id: 'primary.example-dir', issue: () => Promise.reject(limited) };
      const second: Issuer = { id: 'second.example-dir', issue: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:1')) };
      const source = new ManagedSource({ names: ['a.example'], store, issuers: [primary, second], log: captureLog().log, clock, storePollMs: 0, background: true });
      sources.push(source);
      const events: CertificateEvent[] = [];
      source.managed.on((e) => events.push(e));
      await source.start(() => undefined);
      clock.advance(0);
      await waitFor('the failure', () => events.some((e) => e.type === 'failed'));
      expect(events.map((e) => (e.type === 'request' ? [e.issuer, e.ok ? 'ok' : e.errorType] : e.type === 'failed' ? ['failed', e.category] : [e.type]))).toEqual([
        ['primary.example-dir', 'rateLimited'],
        // A plain error carries no category: counted as other, whatever its message says.
        ['second.example-dir', 'other'],
        ['failed', 'other'],
      ]);
    });

    it('shouts when renewal keeps failing within 7 days of expiry', async () => {
      const issuer = new TestIssuer(ca);
      const installed: CertificateMaterial[] = [];
      const first = makeSource(issuer, ['a.example'], captureLog().log);
      await first.start((m) => installed.push(m));
      first.stop();
      const notAfter = leafOf(installed[0]!).validToDate.getTime();
      clock.advanceTo(notAfter - 2 * DAY - 3600_000);
      const { log, lines } = captureLog();
      const failing: Issuer = { id: 'local', issue: () => Promise.reject(new Error('DNS points elsewhere')) };
      await makeSource(failing, ['a.example'], log).start(() => undefined);
      clock.advance(0);
      await waitFor('the loud warning', () => lines.some((l) => l.alert === 'certificate-expiring'));
      const loud = lines.find((l) => l.alert === 'certificate-expiring')!;
      expect(loud.level).toBe('fatal');
      expect(loud.msg).toMatch(/^CERTIFICATE FOR a\.example EXPIRES IN 2 DAYS AND RENEWAL KEEPS FAILING/);
      expect(loud.err).toBe('DNS points elsewhere');
    });

    it('renews inside the ARI window when the issuer offers one, and follows a changed window', async () => {
      const issuer = new TestIssuer(ca);
      let window = { start: 0, end: 0, explanationUrl: null as string | null };
      const asked: string[] = [];
      const ari: Issuer = {
        id: 'local',
        issue: (n) => issuer.issue(n),
        renewalInfo: (leaf) => {
          asked.push(leaf.serialNumber);
          return Promise.resolve({ window, retryAfterMs: 6 * 3600_000 });
        },
      };
      window = { start: clock.now() + 2 * DAY, end: clock.now() + 3 * DAY, explanationUrl: null };
      const installed: CertificateMaterial[] = [];
      const source = makeSource(ari, ['a.example'], captureLog().log);
      await source.start((m) => installed.push(m));
      await waitFor('the ARI plan', () => source.status()[0]!.nextReason?.startsWith('ARI window') === true);
      // random 0.5: the middle of the window; the timer wakes for the re-check 6 h later first.
      expect(source.status()[0]!.nextRenewal).toBe(new Date(clock.now() + 2.5 * DAY).toISOString());
      expect(clock.nextDue()).toBe(clock.now() + 6 * 3600_000);
      let recorded: string | undefined;
      for (let i = 0; i < 100 && recorded === undefined; i++) {
        recorded = (await store.loadCertificate('local', 'a.example'))!.meta.nextRenewalReason;
        if (recorded === undefined) await new Promise((r) => setTimeout(r, 10));
      }
      expect(recorded).toMatch(/^ARI window/);
      // The CA moves the window into the past (e.g. a revocation): renewed at the next check.
      window = { start: clock.now() - 3600_000, end: clock.now(), explanationUrl: 'https://ca.example/incident' };
      clock.advance(6 * 3600_000);
      await waitFor('the ARI-driven renewal', () => {
        clock.advance(0); // the re-planned renewal is due at once
        return installed.length === 2;
      });
      expect(asked[0]).toBe(leafOf(installed[0]!).serialNumber);
    });

    it('picks up a certificate another process stored, without ordering one', async () => {
      const issuer = new TestIssuer(ca);
      const installed: CertificateMaterial[] = [];
      const source = new ManagedSource({ names: ['a.example'], store, issuers: [issuer], log: captureLog().log, clock, random: () => 0.5, storePollMs: 1000 });
      sources.push(source);
      await source.start((m) => installed.push(m));
      const other = await ca.issue(['a.example'], LIFETIME + DAY);
      const leaf = new X509Certificate(other.certPem);
      await store.saveCertificate('local', 'a.example', {
        ...other,
        meta: { names: ['a.example'], issuer: 'local', serial: leaf.serialNumber, notBefore: leaf.validFromDate.toISOString(), notAfter: leaf.validToDate.toISOString() },
      });
      clock.advance(1000);
      await waitFor('the stored certificate', () => installed.length === 2);
      expect(leafOf(installed[1]!).serialNumber).toBe(leaf.serialNumber);
      expect(issuer.calls).toBe(1);
    });
  });
});
