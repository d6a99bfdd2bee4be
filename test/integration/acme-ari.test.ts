/**
 * ARI (RFC 9773) and ACME profiles through the real edge (in-process) against Pebble behind the
 * ARI/profiles front (test/support/acme-front.ts): renewal inside the CA's window, `replaces` on
 * renewal, Retry-After re-checks (on a clock that can jump ahead), the 1/3 rule without ARI, and
 * profile selection and errors. One name per test, each its own, so the front's records separate.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ariCertId } from '../../src/control/ari';
import { acmeIssuerId } from '../../src/store/keys';
import type { ManagedCertificates, NameStatus } from '../../src/control/source';
import type { EdgeOptions } from '../../src/edge';
import { startAcmeFront, type AcmeFront, type RecordedOrder, type RenewalInfoAnswer } from '../support/acme-front';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { JumpClock } from '../support/jump-clock';
import { freePort, pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import { servedLeaf, waitForLeaf } from '../support/served-leaf';
import { waitFor } from '../support/wait';

jest.setTimeout(45_000);

const HOUR = 3600_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

if (!pebbleInstalled()) console.warn('acme-ari.test.ts: skipped: pebble is not installed (run scripts/test-deps.sh)');
const run = pebbleInstalled() ? describe : describe.skip;

run('ARI and profiles through the edge, against Pebble behind the front', () => {
  let pebble: RunningPebble;
  let ariFront: AcmeFront;
  let plainFront: AcmeFront;
  let profileFront: AcmeFront;
  let httpsPort: number;
  let httpPort: number;
  let edge: TestEdge | null = null;
  let dir: string | null = null;

  beforeAll(async () => {
    httpsPort = await freePort();
    httpPort = await freePort();
    // No random nonce rejections (each newOrder reaches Pebble once) and no authorization reuse.
    pebble = await startPebble({ httpPort, tlsPort: httpsPort, env: { PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' } });
    ariFront = await startAcmeFront({ pebble, ari: true });
    plainFront = await startAcmeFront({ pebble });
    profileFront = await startAcmeFront({ pebble, profiles: { shortlived: 'six-day certificates', tlsserver: 'TLS server, 90 days' } });
  });

  afterEach(async () => {
    await edge?.stop(0).catch(() => undefined);
    edge = null;
    if (dir !== null) fs.rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  afterAll(async () => {
    await Promise.all([ariFront?.close(), plainFront?.close(), profileFront?.close()]);
    await pebble?.stop();
  });

  function yaml(name: string, directory: string, profile?: string): string {
    return [
      `server_name: ${name}`,
      'listen:',
      `  https: [${httpsPort}]`,
      `  http: ${httpPort}`,
      '  address: ["127.0.0.1"]',
      'tls:',
      '  issuer: acme',
      'acme:',
      `  ca: ${directory}`,
      `  ca_roots: [${JSON.stringify(pebble.caRootsFile)}]`,
      '  email: test@example.com',
      ...(profile === undefined ? [] : [`  profile: ${profile}`]),
      '',
    ].join('\n');
  }

  async function start(name: string, directory: string, opts: { profile?: string; clock?: EdgeOptions['clock'] } = {}): Promise<ManagedCertificates> {
    dir = tempDir('matrix-edge-ari-');
    edge = await startTestEdge(yaml(name, directory, opts.profile), {
      dir,
      keepPorts: true,
      edge: {
        ...(opts.clock === undefined ? {} : { clock: opts.clock }),
        timing: { storePollMs: 0, retryBaseMs: 10 * 60_000, random: () => 0.5 },
      },
    });
    return edge.edge.certificates.managed!;
  }

  const statusOf = (source: ManagedCertificates, name: string): NameStatus => source.status().find((s) => s.name === name)!;
  const ordersFor = (front: AcmeFront, name: string): RecordedOrder[] =>
    front.orders.filter((o) => o.identifiers.some((i) => i.value === name));
  const storedFile = (directory: string, name: string, ext: 'crt' | 'json'): string =>
    path.join(dir!, 'certs', 'certificates', acmeIssuerId(directory), name, `${name}.${ext}`);
  const window = (start: number, end: number): { start: Date; end: Date } => ({ start: new Date(start), end: new Date(end) });

  it('ARI window in the future: renewal planned inside it (random 0.5 → the middle), recorded in storage', async () => {
    const name = 'ari-future.example.com';
    const now = Date.now();
    const w = window(now + HOUR, now + 2 * HOUR);
    const asked = ariFront.renewalInfoRequests.length;
    ariFront.setRenewalInfo(() => ({ status: 200, window: w, retryAfterSeconds: 3600 }));

    const source = await start(name, ariFront.directory);
    await source.whenReady();
    await waitFor('an ARI-based plan', () => statusOf(source, name).nextReason?.startsWith('ARI window') === true, 15_000);

    const st = statusOf(source, name);
    const leaf = await waitForLeaf(httpsPort, name);
    expect(st.serial).toBe(leaf.serialNumber);
    expect(st.nextRenewal).toBe(new Date(w.start.getTime() + HOUR / 2).toISOString());
    expect(st.nextReason).toContain(w.start.toISOString());
    expect(st.nextReason).toContain(w.end.toISOString());
    expect(st.failures).toBe(0);
    expect(st.lastError).toBeNull();

    // Asked with the certificate's own certID; one order, replacing nothing.
    const requests = ariFront.renewalInfoRequests.slice(asked);
    expect(requests.length).toBeGreaterThanOrEqual(1);
    expect(new Set(requests.map((r) => r.certId))).toEqual(new Set([ariCertId(leaf.raw)]));
    expect(ordersFor(ariFront, name).map((o) => o.replaces)).toEqual([undefined]);

    // For `matrix-edge certs` without a running edge: the plan is in the certificate's .json.
    const jsonFile = storedFile(ariFront.directory, name, 'json');
    await waitFor('nextRenewal in the stored .json', () => fs.existsSync(jsonFile) && 'nextRenewal' in JSON.parse(fs.readFileSync(jsonFile, 'utf8')));
    const meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as Record<string, unknown>;
    expect(meta.nextRenewal).toBe(st.nextRenewal);
    expect(meta.nextRenewalReason).toBe(st.nextReason);
    expect(meta.serial).toBe(leaf.serialNumber);
  });

  it('ARI window in the past: renewed at once after issuance, the new order `replaces` the first certificate, the new one served', async () => {
    const name = 'ari-past.example.com';
    const now = Date.now();
    const past = window(now - 2 * HOUR, now - HOUR);
    const future = window(now + 24 * HOUR, now + 48 * HOUR);
    const asked = ariFront.renewalInfoRequests.length;
    // The first certificate's certID, computed here from the stored PEM (saved before the edge asks).
    let firstId: string | null = null;
    let firstSerial: string | null = null;
    ariFront.setRenewalInfo((certId): RenewalInfoAnswer => {
      if (firstId === null) {
        const leaf = new X509Certificate(fs.readFileSync(storedFile(ariFront.directory, name, 'crt')));
        firstId = ariCertId(leaf.raw);
        firstSerial = leaf.serialNumber;
      }
      return { status: 200, window: certId === firstId ? past : future, retryAfterSeconds: 3600 };
    });

    const source = await start(name, ariFront.directory);
    await waitFor('the renewal order', () => ordersFor(ariFront, name).length >= 2, 30_000);
    // Installed, and planned from its own ARI answer (the future window).
    await waitFor('the renewed certificate installed and planned', () => {
      const s = statusOf(source, name);
      return (
        s.serial !== null &&
        s.serial !== firstSerial &&
        s.nextReason?.startsWith('ARI window') === true &&
        s.nextRenewal !== null &&
        new Date(s.nextRenewal).getTime() >= future.start.getTime()
      );
    }, 15_000);

    expect(firstId).not.toBeNull();
    const orders = ordersFor(ariFront, name);
    expect(orders.map((o) => o.replaces)).toEqual([undefined, firstId]);
    expect(orders.every((o) => o.status === 201)).toBe(true);
    // The first renewal-info request named the first certificate.
    const requests = ariFront.renewalInfoRequests.slice(asked);
    expect(requests[0]!.certId).toBe(firstId);
    expect(statusOf(source, name).nextReason).toMatch(/^ARI window /);

    const st = statusOf(source, name);
    const served = await waitForLeaf(httpsPort, name, (l) => l.serialNumber === st.serial);
    expect(served.serialNumber).not.toBe(firstSerial);
    // The second certificate was asked about too and got the future window: no third order.
    expect(requests.map((r) => r.certId)).toContain(ariCertId(served.raw));
    expect(new Date(st.nextRenewal!).getTime()).toBeGreaterThanOrEqual(future.start.getTime());
    expect(new Date(st.nextRenewal!).getTime()).toBeLessThan(future.end.getTime());
    await sleep(500);
    expect(ordersFor(ariFront, name)).toHaveLength(2);
    expect(edge!.logs.filter((l) => l.msg === 'ACME order created').map((l) => l.replaces)).toEqual([undefined, firstId]);
  });

  it('Retry-After: re-checked when it says (never sooner than the 1-minute floor), a changed window acted on', async () => {
    const name = 'ari-retry.example.com';
    const clock = new JumpClock();
    const now = Date.now();
    const future = window(now + HOUR, now + 2 * HOUR);
    const past = window(now - 2 * HOUR, now - HOUR);
    const asked = ariFront.renewalInfoRequests.length;
    let answer: RenewalInfoAnswer = { status: 200, window: future, retryAfterSeconds: 2 };
    let firstId: string | null = null;
    ariFront.setRenewalInfo((certId) => (firstId === null || certId === firstId ? answer : { status: 200, window: window(now + 24 * HOUR, now + 48 * HOUR) }));
    const requests = (): string[] => ariFront.renewalInfoRequests.slice(asked).map((r) => r.certId);

    const source = await start(name, ariFront.directory, { clock });
    await source.whenReady();
    const first = await waitForLeaf(httpsPort, name);
    firstId = ariCertId(first.raw);
    await waitFor('the first ARI answer used', () => statusOf(source, name).nextReason?.startsWith('ARI window') === true, 15_000);
    expect(requests()).toEqual([firstId]);
    expect(statusOf(source, name).nextRenewal).toBe(new Date(future.start.getTime() + HOUR / 2).toISOString());

    // Retry-After: 2 is raised to the one-minute floor (src/control/ari.ts retryAfterMs): 30 s on, no re-check.
    answer = { status: 200, window: future, retryAfterSeconds: 120 };
    clock.jump(30_000);
    await sleep(800);
    expect(requests()).toHaveLength(1);
    // Past the minute: re-checked; same window, so the same renewal time is kept.
    clock.jump(31_000);
    await waitFor('the second renewal-info request', () => requests().length === 2, 5000);
    await sleep(300);
    expect(statusOf(source, name).nextRenewal).toBe(new Date(future.start.getTime() + HOUR / 2).toISOString());

    // The CA moves the window into the past; the edge only learns at the next check, 120 s later.
    answer = { status: 200, window: past, retryAfterSeconds: 120 };
    clock.jump(100_000);
    await sleep(800);
    expect(requests()).toHaveLength(2);
    expect(ordersFor(ariFront, name)).toHaveLength(1);
    clock.jump(21_000);
    await waitFor('the renewal after the changed window', () => ordersFor(ariFront, name).length === 2, 10_000);
    expect(requests().slice(0, 3)).toEqual([firstId, firstId, firstId]);
    expect(ordersFor(ariFront, name).map((o) => o.replaces)).toEqual([undefined, firstId]);
    await waitFor('the renewed certificate installed', () => statusOf(source, name).serial !== first.serialNumber, 15_000);
    const renewed = await waitForLeaf(httpsPort, name, (l) => l.serialNumber !== first.serialNumber);
    expect(renewed.serialNumber).toBe(statusOf(source, name).serial);
  });

  it('CA without ARI: 1/3 of lifetime left, and a forced renewal carries no `replaces`', async () => {
    const name = 'no-ari.example.com';
    const source = await start(name, plainFront.directory);
    await source.whenReady();
    await waitFor('the renewal plan', () => statusOf(source, name).nextReason !== null, 15_000);
    const leaf = await waitForLeaf(httpsPort, name);
    const st = statusOf(source, name);
    expect(st.nextReason).toBe('1/3 of lifetime left');
    const notBefore = leaf.validFromDate.getTime();
    const notAfter = leaf.validToDate.getTime();
    expect(st.nextRenewal).toBe(new Date(notAfter - (notAfter - notBefore) / 3).toISOString());
    expect(plainFront.renewalInfoRequests).toEqual([]);

    const results = await source.renewNow(null, true);
    expect(results).toEqual([{ name, ok: true, serial: expect.any(String), outcome: 'renewed', error: null }]);
    expect(results[0]!.serial).not.toBe(leaf.serialNumber);
    const orders = ordersFor(plainFront, name);
    expect(orders).toHaveLength(2);
    expect(orders.map((o) => 'replaces' in o.payload)).toEqual([false, false]);
    const served = await waitForLeaf(httpsPort, name, (l) => l.serialNumber === results[0]!.serial);
    expect(served.serialNumber).toBe(statusOf(source, name).serial);
    await waitFor('the plan of the new certificate', () => statusOf(source, name).nextReason === '1/3 of lifetime left');
  });

  it('profile offered by the CA: every order carries it', async () => {
    const name = 'profile.example.com';
    const source = await start(name, profileFront.directory, { profile: 'shortlived' });
    await source.whenReady();
    await waitForLeaf(httpsPort, name);
    const orders = ordersFor(profileFront, name);
    expect(orders.length).toBeGreaterThanOrEqual(1);
    expect(orders.map((o) => o.profile)).toEqual(orders.map(() => 'shortlived'));
    expect(statusOf(source, name).lastError).toBeNull();
  });

  it('profile the CA does not offer: no certificate, the error names it and the offered profiles', async () => {
    const name = 'profile-missing.example.com';
    const source = await start(name, profileFront.directory, { profile: 'nonexistent' });
    await waitFor('the failure', () => statusOf(source, name).lastError !== null, 20_000);
    const st = statusOf(source, name);
    expect(st.serial).toBeNull();
    expect(st.failures).toBe(1);
    expect(st.lastError).toContain('"nonexistent"');
    expect(st.lastError).toContain('shortlived, tlsserver');
    expect(ordersFor(profileFront, name)).toEqual([]);
    expect(await servedLeaf(httpsPort, name)).toBeNull();
  });

  it('profile set but the CA lists none (plain Pebble): the error says so', async () => {
    const name = 'profile-none.example.com';
    const source = await start(name, pebble.directory, { profile: 'shortlived' });
    await waitFor('the failure', () => statusOf(source, name).lastError !== null, 20_000);
    const st = statusOf(source, name);
    expect(st.serial).toBeNull();
    expect(st.lastError).toContain('"shortlived"');
    expect(st.lastError).toMatch(/lists no profiles/);
  });
});
