import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ariCertId,
  certIdFrom,
  chooseRenewalTime,
  parseHttpDate,
  parseRenewalInfo,
  parseRfc3339,
  retryAfterMs,
  type RenewalWindow,
} from '../../src/control/ari';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** What openssl prints for a certificate: AKI keyid bytes and serial magnitude, both as hex. */
function opensslView(pemFile: string): { akiHex: string | null; serialHex: string } {
  const out = execFileSync('openssl', ['x509', '-in', pemFile, '-noout', '-ext', 'authorityKeyIdentifier', '-serial'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'], // "No extensions in certificate" goes to stderr
  });
  const serial = /^serial=([0-9A-Fa-f]+)$/m.exec(out);
  if (serial === null) throw new Error(`no serial in openssl output:\n${out}`);
  const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?((?:[0-9A-Fa-f]{2}:)*[0-9A-Fa-f]{2})/.exec(out);
  return { akiHex: aki === null ? null : aki[1]!.replace(/:/g, '').toLowerCase(), serialHex: serial[1]!.toLowerCase() };
}

/** DER INTEGER content octets from openssl's magnitude hex: a 0x00 in front when the high bit is set. */
function serialContentHex(magnitudeHex: string): string {
  const even = magnitudeHex.length % 2 === 1 ? `0${magnitudeHex}` : magnitudeHex;
  return parseInt(even.slice(0, 2), 16) & 0x80 ? `00${even}` : even;
}

const b64u = (hex: string): string => Buffer.from(hex, 'hex').toString('base64url');

// A tiny DER writer, to build certificate-shaped inputs with exactly chosen fields.
function tlv(tag: number, body: Buffer): Buffer {
  const len = body.length;
  if (len < 0x80) return Buffer.concat([Buffer.from([tag, len]), body]);
  const bytes: number[] = [];
  for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.concat([Buffer.from([tag, 0x80 | bytes.length, ...bytes]), body]);
}
const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const AKI_OID = tlv(0x06, Buffer.from([0x55, 0x1d, 0x23]));
const SKI_OID = tlv(0x06, Buffer.from([0x55, 0x1d, 0x0e]));
const NULL_ALG = seq(tlv(0x06, Buffer.from([0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])));
const NAME = seq();

/** Certificate-shaped DER: version, serial (content octets as given), placeholder fields, extensions. */
function fakeCert(serialContent: Buffer, extensions: Buffer[] | null, withVersion = true): Buffer {
  const tbs = seq(
    ...(withVersion ? [tlv(0xa0, tlv(0x02, Buffer.from([2])))] : []),
    tlv(0x02, serialContent),
    NULL_ALG,
    NAME,
    seq(tlv(0x17, Buffer.from('300101000000Z')), tlv(0x17, Buffer.from('300102000000Z'))),
    NAME,
    seq(NULL_ALG, tlv(0x03, Buffer.from([0, 4, 1, 2]))),
    ...(extensions === null ? [] : [tlv(0xa3, seq(...extensions))]),
  );
  return seq(tbs, NULL_ALG, tlv(0x03, Buffer.from([0, 1, 2, 3])));
}
const ext = (oid: Buffer, value: Buffer, critical = false): Buffer =>
  seq(oid, ...(critical ? [tlv(0x01, Buffer.from([0xff]))] : []), tlv(0x04, value));

// RFC 9773's worked example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
// serial 0x87654321 (DER content 00 87 65 43 21).
const EXAMPLE_AKI = Buffer.from('69885B6B87464041E1B37B847BA0AE2CDE01C8D4', 'hex');
const EXAMPLE_SERIAL = Buffer.from('0087654321', 'hex');
const EXAMPLE_CERT_ID = 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE';

describe('certIdFrom', () => {
  it("reproduces RFC 9773's example", () => {
    expect(certIdFrom(EXAMPLE_AKI, EXAMPLE_SERIAL)).toBe(EXAMPLE_CERT_ID);
  });

  it('uses base64url without padding', () => {
    expect(certIdFrom(Buffer.from([0xfb, 0xff]), Buffer.from([0x3e]))).toBe('-_8.Pg');
  });

  it('rejects empty parts', () => {
    expect(() => certIdFrom(Buffer.alloc(0), EXAMPLE_SERIAL)).toThrow(/keyIdentifier is empty/);
    expect(() => certIdFrom(EXAMPLE_AKI, Buffer.alloc(0))).toThrow(/serial number is empty/);
  });
});

describe('ariCertId on constructed DER', () => {
  const akiValue = seq(tlv(0x80, EXAMPLE_AKI));

  it("reproduces RFC 9773's example from a certificate-shaped structure", () => {
    const der = fakeCert(EXAMPLE_SERIAL, [ext(SKI_OID, tlv(0x04, Buffer.alloc(20, 7))), ext(AKI_OID, akiValue)]);
    expect(ariCertId(der)).toBe(EXAMPLE_CERT_ID);
    expect(ariCertId(new Uint8Array(der))).toBe(EXAMPLE_CERT_ID);
  });

  it('reads a critical AKI, one with issuer and serial too, and a v1-style TBS without version', () => {
    const full = seq(tlv(0x80, EXAMPLE_AKI), tlv(0xa1, seq()), tlv(0x82, Buffer.from([1])));
    expect(ariCertId(fakeCert(EXAMPLE_SERIAL, [ext(AKI_OID, full, true)]))).toBe(EXAMPLE_CERT_ID);
    expect(ariCertId(fakeCert(EXAMPLE_SERIAL, [ext(AKI_OID, akiValue)], false))).toBe(EXAMPLE_CERT_ID);
  });

  it('handles long-form lengths (a large extension before the AKI)', () => {
    const big = ext(tlv(0x06, Buffer.from([0x2a, 0x03])), Buffer.alloc(70_000, 1));
    expect(ariCertId(fakeCert(EXAMPLE_SERIAL, [big, ext(AKI_OID, akiValue)]))).toBe(EXAMPLE_CERT_ID);
  });

  it('throws a clear error without an AKI keyIdentifier', () => {
    expect(() => ariCertId(fakeCert(EXAMPLE_SERIAL, null))).toThrow(/no Authority Key Identifier keyIdentifier/);
    expect(() => ariCertId(fakeCert(EXAMPLE_SERIAL, [ext(SKI_OID, tlv(0x04, Buffer.alloc(20)))]))).toThrow(
      /no Authority Key Identifier keyIdentifier/,
    );
    // AKI present but with only authorityCertIssuer/authorityCertSerialNumber.
    const noKeyId = seq(tlv(0xa1, seq()), tlv(0x82, Buffer.from([1])));
    expect(() => ariCertId(fakeCert(EXAMPLE_SERIAL, [ext(AKI_OID, noKeyId)]))).toThrow(/no Authority Key Identifier keyIdentifier/);
  });

  it('throws on garbage, truncation and PEM', () => {
    const der = fakeCert(EXAMPLE_SERIAL, [ext(AKI_OID, akiValue)]);
    expect(() => ariCertId(der.subarray(0, der.length - 5))).toThrow(/malformed certificate DER/);
    expect(() => ariCertId(Buffer.from([1, 2, 3]))).toThrow(/malformed certificate DER/);
    expect(() => ariCertId(Buffer.alloc(0))).toThrow(/malformed certificate DER/);
    expect(() => ariCertId(Buffer.concat([der, Buffer.from([0])]))).toThrow(/trailing bytes/);
    expect(() => ariCertId(Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'))).toThrow(/PEM/);
  });
});

const withOpenssl = opensslAvailable() ? describe : describe.skip;
if (!opensslAvailable()) console.warn('ari.test.ts: skipping the openssl cross-checks: openssl is not installed');

withOpenssl('ariCertId on real certificates, cross-checked with openssl', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-ari-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function opensslCert(name: string, serial: string, extra: string[]): string {
    const certFile = path.join(dir, `${name}.crt`);
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', path.join(dir, `${name}.key`), '-out', certFile, '-days', '1',
        '-subj', `/CN=${name}`, '-set_serial', serial, ...extra,
      ],
      { stdio: 'ignore' },
    );
    return certFile;
  }

  it('matches openssl for a serial with the high bit set (leading 0x00)', () => {
    const file = opensslCert('high', '0x87654321', ['-addext', 'subjectKeyIdentifier=hash', '-addext', 'authorityKeyIdentifier=keyid:always']);
    const cert = new X509Certificate(fs.readFileSync(file));
    const view = opensslView(file);
    expect(view.akiHex).toMatch(/^[0-9a-f]{40}$/);
    expect(view.serialHex).toBe('87654321');
    expect(cert.serialNumber.toLowerCase()).toBe('87654321');
    const id = ariCertId(cert.raw);
    expect(id).toBe(`${b64u(view.akiHex!)}.${b64u('0087654321')}`);
    expect(id.split('.')[1]).toBe('AIdlQyE');
  });

  it('matches openssl for a serial without the high bit', () => {
    const file = opensslCert('low', '0x17654321', ['-addext', 'subjectKeyIdentifier=hash', '-addext', 'authorityKeyIdentifier=keyid:always']);
    const view = opensslView(file);
    const id = ariCertId(new X509Certificate(fs.readFileSync(file)).raw);
    expect(id).toBe(`${b64u(view.akiHex!)}.${b64u(serialContentHex(view.serialHex))}`);
    expect(id.split('.')[1]).toBe(b64u('17654321'));
  });

  it('throws for a certificate openssl shows without an AKI', () => {
    const file = opensslCert('noaki', '0x1234', ['-addext', 'subjectKeyIdentifier=none', '-addext', 'authorityKeyIdentifier=none']);
    expect(opensslView(file).akiHex).toBeNull();
    expect(() => ariCertId(new X509Certificate(fs.readFileSync(file)).raw)).toThrow(/no Authority Key Identifier keyIdentifier/);
  });

  it("matches openssl for a leaf of the project's local CA (AKI = the root's SKI)", async () => {
    const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger);
    const issued = await ca.issue(['a.test'], HOUR);
    const file = path.join(dir, 'leaf.crt');
    fs.writeFileSync(file, issued.certPem);
    const leaf = new X509Certificate(issued.certPem);
    const view = opensslView(file);
    expect(view.akiHex).not.toBeNull();
    expect(serialContentHex(view.serialHex)).toBe(serialContentHex(leaf.serialNumber.toLowerCase()));
    expect(ariCertId(leaf.raw)).toBe(`${b64u(view.akiHex!)}.${b64u(serialContentHex(view.serialHex))}`);
  });
});

describe('parseRfc3339', () => {
  it('reads Z, offsets, fractions and lowercase separators', () => {
    expect(parseRfc3339('2025-01-02T04:00:00Z')).toBe(Date.UTC(2025, 0, 2, 4));
    expect(parseRfc3339('2025-01-02t04:00:00z')).toBe(Date.UTC(2025, 0, 2, 4));
    expect(parseRfc3339('2025-01-02T06:30:00+02:30')).toBe(Date.UTC(2025, 0, 2, 4));
    expect(parseRfc3339('2025-01-01T23:00:00-05:00')).toBe(Date.UTC(2025, 0, 2, 4));
    expect(parseRfc3339('2025-01-02T04:00:00.123456789Z')).toBe(Date.UTC(2025, 0, 2, 4, 0, 0, 123));
    expect(parseRfc3339('2025-01-02T04:00:00.5Z')).toBe(Date.UTC(2025, 0, 2, 4, 0, 0, 500));
    expect(parseRfc3339('2024-02-29T00:00:00Z')).toBe(Date.UTC(2024, 1, 29));
  });

  it('rejects what is not RFC 3339', () => {
    for (const bad of [
      '2025-01-02',
      '2025-01-02T04:00:00',
      '2025-01-02 04:00:00Z',
      '2025-02-29T00:00:00Z',
      '2025-13-01T00:00:00Z',
      '2025-01-01T24:00:00Z',
      '2025-01-01T00:00:00+24:00',
      'Thu, 02 Jan 2025 04:00:00 GMT',
      '',
    ]) {
      expect(parseRfc3339(bad)).toBeNaN();
    }
  });
});

describe('parseRenewalInfo', () => {
  const start = '2025-01-02T04:00:00Z';
  const end = '2025-01-03T04:00:00Z';

  it('reads the window and the optional explanation URL', () => {
    expect(parseRenewalInfo({ suggestedWindow: { start, end } })).toEqual({
      start: Date.UTC(2025, 0, 2, 4),
      end: Date.UTC(2025, 0, 3, 4),
      explanationUrl: null,
    });
    expect(parseRenewalInfo({ suggestedWindow: { start, end }, explanationURL: 'https://acme.example.com/docs/ari' }).explanationUrl).toBe(
      'https://acme.example.com/docs/ari',
    );
    expect(parseRenewalInfo({ suggestedWindow: { start, end }, explanationURL: null }).explanationUrl).toBeNull();
    expect(parseRenewalInfo(JSON.stringify({ suggestedWindow: { start, end } })).start).toBe(Date.UTC(2025, 0, 2, 4));
    // Unknown members are ignored.
    expect(parseRenewalInfo({ suggestedWindow: { start, end, extra: 1 }, other: true }).end).toBe(Date.UTC(2025, 0, 3, 4));
  });

  it('says what is wrong', () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /not a JSON object/],
      [[], /not a JSON object/],
      ['{not json', /not JSON/],
      [{}, /suggestedWindow is missing/],
      [{ suggestedWindow: 'soon' }, /suggestedWindow is not an object/],
      [{ suggestedWindow: { end } }, /suggestedWindow.start is missing/],
      [{ suggestedWindow: { start } }, /suggestedWindow.end is missing/],
      [{ suggestedWindow: { start: 1735790400, end } }, /suggestedWindow.start is not a string/],
      [{ suggestedWindow: { start: 'tomorrow', end } }, /suggestedWindow.start "tomorrow" is not an RFC 3339 date-time/],
      [{ suggestedWindow: { start, end: '2025-01-03' } }, /suggestedWindow.end "2025-01-03" is not an RFC 3339/],
      [{ suggestedWindow: { start, end: start } }, /end \(2025-01-02T04:00:00.000Z\) is not after suggestedWindow.start/],
      [{ suggestedWindow: { start: end, end: start } }, /is not after/],
      [{ suggestedWindow: { start, end }, explanationURL: 42 }, /explanationURL is not a string/],
      [{ suggestedWindow: { start, end }, explanationURL: 'docs/ari' }, /explanationURL "docs\/ari" is not an absolute URL/],
    ];
    for (const [body, message] of cases) {
      expect(() => parseRenewalInfo(body)).toThrow(message);
    }
  });
});

describe('chooseRenewalTime', () => {
  const start = Date.UTC(2030, 0, 1);
  const window: RenewalWindow = { start, end: start + DAY, explanationUrl: null };
  const before = start - DAY;

  it('is uniform in [start, end) for a future window', () => {
    expect(chooseRenewalTime(window, before, () => 0)).toBe(start);
    expect(chooseRenewalTime(window, before, () => 0.5)).toBe(start + DAY / 2);
    const late = chooseRenewalTime(window, before, () => 0.999);
    expect(late).toBe(start + Math.floor(0.999 * DAY));
    expect(late).toBeLessThan(window.end);
  });

  it('stays inside the window for out-of-range random values', () => {
    expect(chooseRenewalTime(window, before, () => 1)).toBe(window.end - 1);
    expect(chooseRenewalTime(window, before, () => 7)).toBe(window.end - 1);
    expect(chooseRenewalTime(window, before, () => -1)).toBe(start);
    expect(chooseRenewalTime(window, before, () => NaN)).toBe(start);
  });

  it('renews at once when the chosen instant has passed', () => {
    // Window wholly in the past.
    const now = window.end + HOUR;
    for (const r of [0, 0.5, 0.999]) expect(chooseRenewalTime(window, now, () => r)).toBe(now);
    // Window straddling now: a pick before now becomes now, a later pick stays.
    const mid = start + DAY / 2;
    expect(chooseRenewalTime(window, mid, () => 0)).toBe(mid);
    expect(chooseRenewalTime(window, mid, () => 0.25)).toBe(mid);
    expect(chooseRenewalTime(window, mid, () => 0.75)).toBe(start + 0.75 * DAY);
  });

  it('handles a one-millisecond window', () => {
    const tiny: RenewalWindow = { start, end: start + 1, explanationUrl: null };
    expect(chooseRenewalTime(tiny, before, () => 0.999)).toBe(start);
  });
});

describe('retryAfterMs', () => {
  const now = Date.UTC(2030, 0, 1, 12);
  const fallback = 6 * HOUR;

  it('reads delta-seconds', () => {
    expect(retryAfterMs('3600', now, fallback)).toBe(HOUR);
    expect(retryAfterMs(' 120 ', now, fallback)).toBe(2 * MINUTE);
  });

  it('reads an HTTP-date in all three forms', () => {
    expect(retryAfterMs('Tue, 01 Jan 2030 14:00:00 GMT', now, fallback)).toBe(2 * HOUR);
    expect(retryAfterMs('Tuesday, 01-Jan-30 14:00:00 GMT', now, fallback)).toBe(2 * HOUR);
    expect(retryAfterMs('Tue Jan  1 14:00:00 2030', now, fallback)).toBe(2 * HOUR);
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT', now)).toBe(Date.UTC(1994, 10, 6, 8, 49, 37));
    // Two-digit years: never more than 50 years ahead of now.
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', now)).toBe(Date.UTC(1994, 10, 6, 8, 49, 37));
    expect(parseHttpDate('Wednesday, 06-Nov-75 08:49:37 GMT', now)).toBe(Date.UTC(2075, 10, 6, 8, 49, 37));
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994', now)).toBe(Date.UTC(1994, 10, 6, 8, 49, 37));
  });

  it('falls back when the header is missing or unreadable', () => {
    for (const header of [undefined, null, '', '   ', 'soon', '-5', '1.5', '2030-01-01T14:00:00Z', 'Tue, 32 Jan 2030 14:00:00 GMT']) {
      expect(retryAfterMs(header, now, fallback)).toBe(fallback);
    }
  });

  it('clamps to [min, max]', () => {
    expect(retryAfterMs('0', now, fallback)).toBe(MINUTE);
    expect(retryAfterMs('5', now, fallback)).toBe(MINUTE);
    expect(retryAfterMs('Tue, 01 Jan 2030 11:00:00 GMT', now, fallback)).toBe(MINUTE); // in the past
    expect(retryAfterMs(String(7 * 24 * 3600), now, fallback)).toBe(DAY);
    expect(retryAfterMs('9'.repeat(400), now, fallback)).toBe(DAY);
    expect(retryAfterMs(undefined, now, 5)).toBe(MINUTE);
    expect(retryAfterMs(undefined, now, 3 * DAY)).toBe(DAY);
    expect(retryAfterMs('30', now, fallback, 10_000, 20_000)).toBe(20_000);
    expect(retryAfterMs('1', now, fallback, 10_000, 20_000)).toBe(10_000);
    expect(retryAfterMs('15', now, fallback, 10_000, 20_000)).toBe(15_000);
  });
});
