import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ManualClock, systemClock } from '../../src/control/clock';
import { FilesSource } from '../../src/control/files-source';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { createLogger, type Logger } from '../../src/observe/log';
import type { CertificateMaterial } from '../../src/plane/messages';
import { FileStorage } from '../../src/store/file-storage';
import { captureLog, waitFor, type LogLine } from '../support/wait';

const DAY = 24 * 60 * 60 * 1000;
const INTERVAL = 30_000;


const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 30));

let dir: string;
let clock: ManualClock;
let ca: LocalCa;
const sources: FilesSource[] = [];

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-files-'));
  clock = new ManualClock(Date.now());
  ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), createLogger('silent'), clock);
});
afterEach(async () => {
  for (const s of sources.splice(0)) s.stop();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Issues a certificate for `names` and writes `<base>.crt`/`<base>.key` into the temp dir. */
async function writePair(base: string, names: string[], lifetimeMs = 90 * DAY): Promise<{ cert: string; key: string; serial: string }> {
  const { certPem, keyPem } = await ca.issue(names, lifetimeMs);
  const cert = path.join(dir, `${base}.crt`);
  const key = path.join(dir, `${base}.key`);
  await fsp.writeFile(cert, certPem + ca.rootPem); // a chain, leaf first
  await fsp.writeFile(key, keyPem, { mode: 0o600 });
  return { cert, key, serial: new X509Certificate(certPem).serialNumber };
}

function makeSource(
  names: string[],
  files: Array<{ cert: string; key: string }>,
  log: Logger = createLogger('silent'),
  options: { reloadIntervalMs?: number; clock?: ManualClock | typeof systemClock } = {},
): FilesSource {
  const source = new FilesSource({
    names,
    files,
    reloadIntervalMs: options.reloadIntervalMs ?? INTERVAL,
    log,
    clock: options.clock ?? clock,
  });
  sources.push(source);
  return source;
}

const serialOf = (m: CertificateMaterial): string => new X509Certificate(m.certPem).serialNumber;

describe('FilesSource', () => {
  it('assigns names by exact SAN first, then a single-label wildcard', async () => {
    const wild = await writePair('wild', ['*.example.com', 'example.com']);
    const exact = await writePair('exact', ['matrix.example.com']);
    const installed: CertificateMaterial[] = [];
    // the wildcard file comes first, yet matrix.example.com goes to its exact match
    await makeSource(['matrix.example.com', 'example.com', 'chat.example.com'], [wild, exact]).start((m) =>
      installed.push(m),
    );
    expect(installed).toHaveLength(2);
    const byCert = new Map(installed.map((m) => [serialOf(m), m]));
    expect(byCert.get(wild.serial)!.names).toEqual(['example.com', 'chat.example.com']);
    expect(byCert.get(exact.serial)!.names).toEqual(['matrix.example.com']);
    expect(byCert.get(wild.serial)!.certPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2); // chain kept
    expect(byCert.get(exact.serial)!.notAfter).toBe(new X509Certificate(await fsp.readFile(exact.cert)).validToDate.toISOString());
  });

  it('does not let a wildcard cover two labels or the bare parent', async () => {
    const wild = await writePair('wild', ['*.example.com']);
    await expect(makeSource(['a.b.example.com'], [wild]).start(() => undefined)).rejects.toThrow(
      'no certificate in tls.files covers a.b.example.com (SANs seen: *.example.com)',
    );
    await expect(makeSource(['example.com'], [wild]).start(() => undefined)).rejects.toThrow(
      'no certificate in tls.files covers example.com (SANs seen: *.example.com)',
    );
  });

  it('names every uncovered name and the SANs it saw', async () => {
    const a = await writePair('a', ['a.example', '127.0.0.1']);
    const b = await writePair('b', ['b.example']);
    const err = await makeSource(['a.example', 'c.example', '127.0.0.1', '10.0.0.1'], [a, b])
      .start(() => undefined)
      .then(
        () => null,
        (e: Error) => e,
      );
    expect(err!.message).toBe(
      'no certificate in tls.files covers c.example (SANs seen: a.example, 127.0.0.1, b.example); ' +
        'no certificate in tls.files covers 10.0.0.1 (SANs seen: a.example, 127.0.0.1, b.example)',
    );
  });

  it('rejects a key that does not match its certificate, naming both paths', async () => {
    const a = await writePair('a', ['a.example']);
    const b = await writePair('b', ['a.example']);
    await expect(makeSource(['a.example'], [{ cert: a.cert, key: b.key }]).start(() => undefined)).rejects.toThrow(
      `the private key in tls.files[0].key ${b.key} does not match the certificate in tls.files[0].cert ${a.cert}`,
    );
  });

  it('explains unreadable, empty and non-PEM files', async () => {
    const a = await writePair('a', ['a.example']);
    const missing = path.join(dir, 'missing.crt');
    await expect(makeSource(['a.example'], [{ cert: missing, key: a.key }]).start(() => undefined)).rejects.toThrow(
      new RegExp(`tls.files\\[0\\].cert ${missing} cannot be read: ENOENT: no such file or directory$`),
    );
    const empty = path.join(dir, 'empty.key');
    await fsp.writeFile(empty, '');
    await expect(makeSource(['a.example'], [{ cert: a.cert, key: empty }]).start(() => undefined)).rejects.toThrow(
      `tls.files[0].key ${empty} is empty`,
    );
    const der = path.join(dir, 'der.crt');
    await fsp.writeFile(der, new X509Certificate(await fsp.readFile(a.cert)).raw);
    await expect(makeSource(['a.example'], [{ cert: der, key: a.key }]).start(() => undefined)).rejects.toThrow(
      `tls.files[0].cert ${der} contains no PEM certificate`,
    );
    await expect(makeSource(['a.example'], [{ cert: a.cert, key: a.cert }]).start(() => undefined)).rejects.toThrow(
      `tls.files[0].key ${a.cert} contains no PEM private key`,
    );
  });

  it('picks up a replaced pair on the next interval', async () => {
    const { log, lines } = captureLog();
    const a = await writePair('a', ['a.example']);
    const installed: CertificateMaterial[] = [];
    await makeSource(['a.example'], [a], log).start((m) => installed.push(m));
    expect(installed).toHaveLength(1);

    clock.advance(INTERVAL); // nothing changed
    await settle();
    expect(installed).toHaveLength(1);

    const next = await writePair('a', ['a.example']);
    expect(next.serial).not.toBe(a.serial);
    clock.advance(INTERVAL - 1);
    await settle();
    expect(installed).toHaveLength(1);
    clock.advance(1);
    await waitFor('the reloaded certificate', () => installed.length === 2);
    expect(serialOf(installed[1]!)).toBe(next.serial);
    expect(installed[1]!.names).toEqual(['a.example']);
    expect(lines.some((l) => l.msg === 'certificate reloaded' && l.level === 'info')).toBe(true);
  });

  it('keeps the old certificate when the replacement is broken, and logs it once', async () => {
    const { log, lines } = captureLog();
    const a = await writePair('a', ['a.example']);
    const installed: CertificateMaterial[] = [];
    await makeSource(['a.example'], [a], log).start((m) => installed.push(m));

    // half-way through an update: new certificate, old key
    const next = await ca.issue(['a.example'], 90 * DAY);
    await fsp.writeFile(a.cert, next.certPem);
    clock.advance(INTERVAL);
    await waitFor('the error log', () => lines.some((l) => l.level === 'error'));
    clock.advance(INTERVAL);
    await settle();
    expect(installed).toHaveLength(1);
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.err).toMatch(/does not match/);
    expect(errors[0]!.msg).toBe('certificate files cannot be used; still serving the previous certificate');

    // garbage, then a certificate that no longer covers the name
    await fsp.writeFile(a.cert, 'garbage');
    clock.advance(INTERVAL);
    await waitFor('the second error', () => lines.filter((l) => l.level === 'error').length === 2);
    const other = await writePair('a', ['b.example']);
    clock.advance(INTERVAL);
    await waitFor('the third error', () => lines.filter((l) => l.level === 'error').length === 3);
    expect(lines.filter((l) => l.level === 'error')[2]!.err).toMatch(/no longer covers a\.example/);
    expect(installed).toHaveLength(1);
    expect(other.serial).toBeTruthy();

    // the key arrives: valid again
    await fsp.writeFile(a.cert, next.certPem);
    await fsp.writeFile(a.key, next.keyPem);
    clock.advance(INTERVAL);
    await waitFor('the fixed certificate', () => installed.length === 2);
    expect(installed[1]!.certPem).toBe(next.certPem);
  });

  it('keeps serving when the files disappear', async () => {
    const { log, lines } = captureLog();
    const a = await writePair('a', ['a.example']);
    const installed: CertificateMaterial[] = [];
    await makeSource(['a.example'], [a], log).start((m) => installed.push(m));
    await fsp.rm(a.key);
    clock.advance(INTERVAL);
    await waitFor('the error log', () => lines.some((l) => l.level === 'error'));
    expect(lines.find((l) => l.level === 'error')!.err).toMatch(/cannot be read/);
    expect(installed).toHaveLength(1);
  });

  it('warns about a certificate that expires within 14 days or has expired', async () => {
    const { log, lines } = captureLog();
    const soon = await writePair('soon', ['a.example'], 10 * DAY);
    await makeSource(['a.example'], [soon], log).start(() => undefined);
    const warnings = (): LogLine[] => lines.filter((l) => l.level === 'warn');
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(/expires within 14 days/);
    clock.advance(INTERVAL);
    await settle();
    expect(warnings()).toHaveLength(1); // not repeated every interval
    clock.advance(11 * DAY);
    await waitFor('the expired warning', () => warnings().length === 2);
    expect(warnings()[1]!.msg).toMatch(/has expired/);

    const fresh = captureLog();
    const ok = await writePair('ok', ['b.example'], 60 * DAY);
    await makeSource(['b.example'], [ok], fresh.log).start(() => undefined);
    expect(fresh.lines.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('reloads on a short real interval with the system clock', async () => {
    const real = await LocalCa.open(new FileStorage(path.join(dir, 'ca-real')), createLogger('silent'));
    const first = await real.issue(['a.example'], 90 * DAY);
    const cert = path.join(dir, 'real.crt');
    const key = path.join(dir, 'real.key');
    await fsp.writeFile(cert, first.certPem);
    await fsp.writeFile(key, first.keyPem);
    const installed: CertificateMaterial[] = [];
    await makeSource(['a.example'], [{ cert, key }], createLogger('silent'), {
      reloadIntervalMs: 40,
      clock: systemClock,
    }).start((m) => installed.push(m));
    const second = await real.issue(['a.example'], 90 * DAY);
    await fsp.writeFile(key, second.keyPem);
    await fsp.writeFile(cert, second.certPem);
    await waitFor('the reloaded certificate', () => installed.length === 2);
    expect(installed[1]!.certPem).toBe(second.certPem);
  });
});
