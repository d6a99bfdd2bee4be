/**
 * ACME Renewal Information (ARI, RFC 9773), pure helpers: the certificate identifier a client puts
 * in `<renewalInfo>/<certID>`, the server's suggested renewal window, the moment to renew inside it,
 * and how long to wait before asking again (Retry-After). All times are milliseconds (epoch for
 * instants). Nothing here does I/O.
 */

// ---------------------------------------------------------------------------------------------
// certID: base64url(AuthorityKeyIdentifier.keyIdentifier) "." base64url(serialNumber content octets)

/**
 * The ARI certificate identifier from its two parts: the raw bytes of the leaf's Authority Key
 * Identifier `keyIdentifier`, and the content octets of its DER serialNumber INTEGER (exactly as
 * encoded, so with the leading 0x00 when the first magnitude byte has its high bit set). Both are
 * base64url without padding, joined by a dot.
 */
export function certIdFrom(akiKeyId: Uint8Array, serialContent: Uint8Array): string {
  if (akiKeyId.length === 0) throw new Error('ARI certID: the Authority Key Identifier keyIdentifier is empty');
  if (serialContent.length === 0) throw new Error('ARI certID: the serial number is empty');
  return `${Buffer.from(akiKeyId).toString('base64url')}.${Buffer.from(serialContent).toString('base64url')}`;
}

/**
 * The ARI certID of a leaf certificate given as DER (e.g. `X509Certificate.raw`). Reads the
 * serialNumber and the Authority Key Identifier extension (2.5.29.35) from the TBSCertificate.
 * Throws when the input is not a DER certificate or carries no AKI keyIdentifier (ARI cannot name
 * such a certificate).
 */
export function ariCertId(leafDer: Buffer | Uint8Array): string {
  const der = Buffer.from(leafDer.buffer, leafDer.byteOffset, leafDer.byteLength);
  if (der.subarray(0, 10).toString('latin1') === '-----BEGIN') {
    throw new Error('ARI certID: expected a DER certificate, got PEM text (pass X509Certificate.raw)');
  }
  const { serial, akiKeyId } = readLeaf(der);
  if (akiKeyId === null) {
    throw new Error('ARI certID: the certificate has no Authority Key Identifier keyIdentifier (extension 2.5.29.35), so ARI cannot identify it');
  }
  return certIdFrom(akiKeyId, serial);
}

interface Tlv {
  readonly tag: number;
  /** Offset of the first content byte. */
  readonly contentStart: number;
  /** Offset just past the last content byte. */
  readonly end: number;
}

const TAG_INTEGER = 0x02;
const TAG_OCTET_STRING = 0x04;
const TAG_OID = 0x06;
const TAG_BOOLEAN = 0x01;
const TAG_SEQUENCE = 0x30;
const TAG_VERSION = 0xa0; // [0] EXPLICIT in TBSCertificate
const TAG_EXTENSIONS = 0xa3; // [3] EXPLICIT in TBSCertificate
const TAG_KEY_IDENTIFIER = 0x80; // [0] IMPLICIT OCTET STRING in AuthorityKeyIdentifier
/** DER content of OBJECT IDENTIFIER 2.5.29.35 (id-ce-authorityKeyIdentifier). */
const OID_AKI = Buffer.from([0x55, 0x1d, 0x23]);

/** One TLV at `pos`, bounded by `limit`; single-byte tags and definite lengths only (DER). */
function readTlv(der: Buffer, pos: number, limit: number, what: string): Tlv {
  if (pos + 2 > limit) throw new Error(`ARI certID: malformed certificate DER: ${what} is truncated`);
  const tag = der[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new Error(`ARI certID: malformed certificate DER: ${what} has a multi-byte tag`);
  let length = der[pos + 1]!;
  let contentStart = pos + 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 4) throw new Error(`ARI certID: malformed certificate DER: ${what} has an unsupported length form`);
    if (contentStart + n > limit) throw new Error(`ARI certID: malformed certificate DER: ${what} is truncated`);
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + der[contentStart + i]!;
    contentStart += n;
  }
  const end = contentStart + length;
  if (end > limit) throw new Error(`ARI certID: malformed certificate DER: ${what} runs past its container`);
  return { tag, contentStart, end };
}

/** The TLVs directly inside `parent`. */
function childrenOf(der: Buffer, parent: Tlv, what: string): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.contentStart; p < parent.end; ) {
    const t = readTlv(der, p, parent.end, what);
    out.push(t);
    p = t.end;
  }
  return out;
}

function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined) throw new Error(`ARI certID: malformed certificate DER: ${what} is missing`);
  if (t.tag !== tag) {
    throw new Error(`ARI certID: malformed certificate DER: ${what} has tag 0x${t.tag.toString(16)}, expected 0x${tag.toString(16)}`);
  }
  return t;
}

function content(der: Buffer, t: Tlv): Buffer {
  return der.subarray(t.contentStart, t.end);
}

/** serialNumber content octets and the AKI keyIdentifier (null when absent) of a DER certificate. */
function readLeaf(der: Buffer): { serial: Buffer; akiKeyId: Buffer | null } {
  const cert = expectTag(readTlv(der, 0, der.length, 'Certificate'), TAG_SEQUENCE, 'Certificate');
  if (cert.end !== der.length) throw new Error('ARI certID: malformed certificate DER: trailing bytes after the Certificate');
  const tbs = expectTag(childrenOf(der, cert, 'Certificate')[0], TAG_SEQUENCE, 'TBSCertificate');
  const fields = childrenOf(der, tbs, 'TBSCertificate field');
  const first = fields[0]?.tag === TAG_VERSION ? 1 : 0;
  const serialTlv = expectTag(fields[first], TAG_INTEGER, 'serialNumber');
  const serial = content(der, serialTlv);
  if (serial.length === 0) throw new Error('ARI certID: malformed certificate DER: empty serialNumber');

  // After serialNumber: signature, issuer, validity, subject, subjectPublicKeyInfo, then the
  // optional [1] issuerUniqueID, [2] subjectUniqueID and [3] extensions.
  const extField = fields.slice(first + 6).find((t) => t.tag === TAG_EXTENSIONS);
  if (extField === undefined) return { serial, akiKeyId: null };
  const list = expectTag(childrenOf(der, extField, 'extensions')[0], TAG_SEQUENCE, 'Extensions');
  for (const ext of childrenOf(der, list, 'Extension')) {
    expectTag(ext, TAG_SEQUENCE, 'Extension');
    const parts = childrenOf(der, ext, 'Extension field');
    const id = expectTag(parts[0], TAG_OID, 'extnID');
    if (!content(der, id).equals(OID_AKI)) continue;
    const valueIndex = parts[1]?.tag === TAG_BOOLEAN ? 2 : 1;
    const value = expectTag(parts[valueIndex], TAG_OCTET_STRING, 'authorityKeyIdentifier extnValue');
    // extnValue wraps the DER of AuthorityKeyIdentifier ::= SEQUENCE { [0] keyIdentifier OPTIONAL, ... }
    const aki = expectTag(readTlv(der, value.contentStart, value.end, 'AuthorityKeyIdentifier'), TAG_SEQUENCE, 'AuthorityKeyIdentifier');
    const keyId = childrenOf(der, aki, 'AuthorityKeyIdentifier field').find((t) => t.tag === TAG_KEY_IDENTIFIER);
    if (keyId === undefined || keyId.end === keyId.contentStart) return { serial, akiKeyId: null };
    return { serial, akiKeyId: content(der, keyId) };
  }
  return { serial, akiKeyId: null };
}

// ---------------------------------------------------------------------------------------------
// The renewalInfo response

export interface RenewalWindow {
  /** Start of the suggested window, ms epoch (inclusive). */
  readonly start: number;
  /** End of the suggested window, ms epoch (exclusive); always after `start`. */
  readonly end: number;
  /** The CA's page explaining the window (e.g. a revocation incident), when it gave one. */
  readonly explanationUrl: string | null;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** An RFC 3339 date-time → ms epoch; NaN when the text is not one (fractions past ms are cut). */
export function parseRfc3339(text: string): number {
  const m = RFC3339.exec(text);
  if (m === null) return NaN;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const ms = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 60) return NaN;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day < 1 || day > daysInMonth) return NaN;
  let offsetMinutes = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return NaN;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  // Date.UTC maps years 0–99 to 1900–1999; setUTCFullYear keeps them literal.
  const d = new Date(Date.UTC(2000, month - 1, day, hour, minute, second, ms));
  d.setUTCFullYear(year);
  return d.getTime() - offsetMinutes * 60_000;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates a renewalInfo response body (the parsed JSON object, or its text):
 * `{ suggestedWindow: { start, end }, explanationURL? }` with RFC 3339 `start` and `end`, `end`
 * strictly after `start`, and `explanationURL` (when present and not null) an absolute URL.
 * Throws an Error saying what is wrong; RFC 9773 asks clients to fall back to their own schedule
 * when the response is malformed.
 */
export function parseRenewalInfo(body: unknown): RenewalWindow {
  let value = body;
  if (typeof value === 'string' || Buffer.isBuffer(value)) {
    try {
      value = JSON.parse(value.toString());
    } catch (err) {
      throw new Error(`renewalInfo: the response is not JSON: ${(err as Error).message}`);
    }
  }
  if (!isRecord(value)) throw new Error('renewalInfo: the response is not a JSON object');
  const window = value['suggestedWindow'];
  if (window === undefined) throw new Error('renewalInfo: suggestedWindow is missing');
  if (!isRecord(window)) throw new Error('renewalInfo: suggestedWindow is not an object');
  const instant = (name: 'start' | 'end'): number => {
    const raw = window[name];
    if (raw === undefined) throw new Error(`renewalInfo: suggestedWindow.${name} is missing`);
    if (typeof raw !== 'string') throw new Error(`renewalInfo: suggestedWindow.${name} is not a string`);
    const ms = parseRfc3339(raw);
    if (Number.isNaN(ms)) throw new Error(`renewalInfo: suggestedWindow.${name} ${JSON.stringify(raw)} is not an RFC 3339 date-time`);
    return ms;
  };
  const start = instant('start');
  const end = instant('end');
  if (!(end > start)) {
    throw new Error(
      `renewalInfo: suggestedWindow.end (${new Date(end).toISOString()}) is not after suggestedWindow.start (${new Date(start).toISOString()})`,
    );
  }
  let explanationUrl: string | null = null;
  const explanation = value['explanationURL'];
  if (explanation !== undefined && explanation !== null) {
    if (typeof explanation !== 'string') throw new Error('renewalInfo: explanationURL is not a string');
    if (!URL.canParse(explanation)) throw new Error(`renewalInfo: explanationURL ${JSON.stringify(explanation)} is not an absolute URL`);
    explanationUrl = explanation;
  }
  return { start, end, explanationUrl };
}

/**
 * When to renew inside the suggested window (RFC 9773 section 4.2): a uniformly random instant in
 * [start, end), so clients given the same window spread their load; when that instant has already
 * passed (the window started in the past, or lies wholly there), `now`: renew at once.
 * `random` returns a number in [0, 1) (Math.random in production); values outside are clamped.
 */
export function chooseRenewalTime(window: RenewalWindow, now: number, random: () => number): number {
  const span = window.end - window.start;
  let r = random();
  if (!(r > 0)) r = 0; // also NaN
  const offset = Math.max(0, Math.min(Math.floor(r * span), span - 1));
  const at = window.start + offset;
  return at < now ? now : at;
}

// ---------------------------------------------------------------------------------------------
// Retry-After

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const WEEKDAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const WEEKDAY_LONG = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTH = '(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const CLOCK = '(\\d{2}):(\\d{2}):(\\d{2})';
/** Sun, 06 Nov 1994 08:49:37 GMT (the preferred form). */
const IMF_FIXDATE = new RegExp(`^${WEEKDAY}, (\\d{2}) ${MONTH} (\\d{4}) ${CLOCK} GMT$`);
/** Sunday, 06-Nov-94 08:49:37 GMT (obsolete, still to be accepted). */
const RFC850_DATE = new RegExp(`^${WEEKDAY_LONG}, (\\d{2})-${MONTH}-(\\d{2}) ${CLOCK} GMT$`);
/** Sun Nov  6 08:49:37 1994 (obsolete, still to be accepted; GMT). */
const ASCTIME_DATE = new RegExp(`^${WEEKDAY} ${MONTH} ( \\d|\\d{2}) ${CLOCK} (\\d{4})$`);

function utc(year: number, month: string, day: number, h: string, m: string, s: string): number {
  const monthIndex = MONTHS.indexOf(month.toLowerCase());
  const hour = Number(h);
  const minute = Number(m);
  const second = Number(s);
  if (hour > 23 || minute > 59 || second > 60 || day < 1 || day > new Date(Date.UTC(year, monthIndex + 1, 0)).getUTCDate()) return NaN;
  return Date.UTC(year, monthIndex, day, hour, minute, second);
}

/** An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) → ms epoch; NaN otherwise. */
export function parseHttpDate(text: string, now: number): number {
  let m = IMF_FIXDATE.exec(text);
  if (m !== null) return utc(Number(m[3]), m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  m = RFC850_DATE.exec(text);
  if (m !== null) {
    // Two-digit year: the one nearest to `now` that is not more than 50 years in the future.
    const yy = Number(m[3]);
    const thisYear = new Date(now).getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + yy;
    if (year > thisYear + 50) year -= 100;
    return utc(year, m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  }
  m = ASCTIME_DATE.exec(text);
  if (m !== null) return utc(Number(m[6]), m[1]!, Number(m[2]!.trim()), m[3]!, m[4]!, m[5]!);
  return NaN;
}

/**
 * How long to wait before the next renewalInfo request, from the response's Retry-After header:
 * delta-seconds or an HTTP-date (relative to `now`). A missing or unreadable header gives
 * `fallbackMs`. The result is always clamped to [min, max] (default one minute to one day), so a
 * CA cannot make the edge poll in a tight loop nor stop polling for days.
 */
export function retryAfterMs(
  header: string | undefined | null,
  now: number,
  fallbackMs: number,
  min = 60_000,
  max = 24 * 3600_000,
): number {
  let wait = fallbackMs;
  const text = header?.trim() ?? '';
  if (/^\d+$/.test(text)) {
    wait = Number(text) * 1000;
  } else if (text !== '') {
    const at = parseHttpDate(text, now);
    if (!Number.isNaN(at)) wait = at - now;
  }
  if (Number.isNaN(wait)) wait = min;
  return Math.min(Math.max(wait, min), max);
}
