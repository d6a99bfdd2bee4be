/**
 * Reads the TLS ClientHello at the start of a new connection, without doing any TLS: the HTTPS
 * listeners look at the SNI name and the offered ALPN protocols before choosing who completes the
 * handshake (ACME TLS-ALPN-01 validations get their challenge certificate, everyone else the
 * normal stack). Pure: bytes in, verdict out; never throws.
 *
 * Anything this module does not fully understand is 'not-tls': the caller passes the bytes on
 * untouched and the normal TLS stack accepts or rejects them as it always would.
 */

/** Most bytes (record headers included) looked at before giving up and passing the connection through. */
export const CLIENT_HELLO_LIMIT = 16 * 1024;

/**
 * How far an inspection of a shorter prefix of the same bytes got, so that the next inspection
 * resumes there instead of walking every record again. Plain data; only valid for those bytes.
 */
export interface ClientHelloProgress {
  /** Where the first record that was not complete yet starts. */
  readonly offset: number;
  /** Handshake bytes carried by the complete records before `offset`. */
  readonly gathered: number;
  /** The ClientHello's length with its handshake header, once known; -1 before. */
  readonly total: number;
}

export type ClientHelloVerdict =
  /** Not decidable yet: no decision is possible before `atLeast` bytes have arrived. */
  | { readonly kind: 'need-more'; readonly atLeast: number; readonly progress: ClientHelloProgress }
  /** Not a ClientHello this module can read (other protocol, malformed, over the limit): pass through. */
  | { readonly kind: 'not-tls' }
  /** A complete, well-formed ClientHello. */
  | {
      readonly kind: 'hello';
      /** The SNI host name, lower case; null without SNI. */
      readonly serverName: string | null;
      /** The ALPN protocols offered, in the client's order; empty without ALPN. */
      readonly alpn: readonly string[];
    };

export interface InspectOptions {
  /** Most bytes to wait for; a ClientHello that needs more is 'not-tls'. */
  readonly limit?: number;
  /** The progress of the previous 'need-more' verdict on a prefix of these bytes. */
  readonly from?: ClientHelloProgress;
}

const NOT_TLS: ClientHelloVerdict = Object.freeze({ kind: 'not-tls' });
const START: ClientHelloProgress = Object.freeze({ offset: 0, gathered: 0, total: -1 });

const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
/** RFC 8446 5.1: a record's plaintext is at most 2^14 bytes. */
const MAX_RECORD_PAYLOAD = 1 << 14;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const SNI_HOST_NAME = 0x00;
const MAX_HOST_NAME = 255;

/**
 * Decide on the bytes received so far on a connection (from its first byte). Passing the
 * previous verdict's progress as `from` keeps the total work linear in the records received.
 */
export function inspectClientHello(bytes: Uint8Array, options: InspectOptions = {}): ClientHelloVerdict {
  try {
    return inspect(bytes, options.limit ?? CLIENT_HELLO_LIMIT, options.from ?? START);
  } catch {
    return NOT_TLS;
  }
}

function inspect(bytes: Uint8Array, limit: number, from: ClientHelloProgress): ClientHelloVerdict {
  // The ClientHello may be spread over several handshake records: walk them, counting their payload.
  let { offset, gathered, total } = from;
  for (;;) {
    const wait = (atLeast: number): ClientHelloVerdict =>
      atLeast > limit ? NOT_TLS : { kind: 'need-more', atLeast, progress: { offset, gathered, total } };
    const available = bytes.length - offset;
    if (available > 0 && bytes[offset] !== CONTENT_HANDSHAKE) return NOT_TLS;
    if (available > 1 && bytes[offset + 1] !== 0x03) return NOT_TLS;
    // The content type and the major version can each decide alone; the length needs the rest.
    if (available < RECORD_HEADER) return wait(offset + (available < 2 ? available + 1 : RECORD_HEADER));
    const length = (bytes[offset + 3]! << 8) | bytes[offset + 4]!;
    // Zero-length handshake fragments are forbidden (RFC 8446 5.1); so are oversized records.
    if (length === 0 || length > MAX_RECORD_PAYLOAD) return NOT_TLS;
    const start = offset + RECORD_HEADER;
    const end = start + length;
    const here = Math.min(end, bytes.length) - start;
    let known = total;
    if (known < 0 && gathered + here >= HANDSHAKE_HEADER) {
      const head = handshakeBytes(bytes, HANDSHAKE_HEADER);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return NOT_TLS;
      known = HANDSHAKE_HEADER + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
    }
    /** Where (in `bytes`) the next thing that can change the verdict ends, if inside this record. */
    const next = start + (known < 0 ? HANDSHAKE_HEADER : known) - gathered;
    if (known >= 0 && next > limit) return NOT_TLS;
    total = known;
    if (known >= 0 && next <= end) {
      // The hello ends inside this record.
      if (bytes.length < next) return wait(next);
      return parseClientHello(handshakeBytes(bytes, known).subarray(HANDSHAKE_HEADER));
    }
    if (here < length) return wait(Math.min(end, next));
    offset = end;
    gathered += length;
  }
}

/** The first `n` handshake bytes, gathered from the records from the start (already checked, and holding them). */
function handshakeBytes(bytes: Uint8Array, n: number): Uint8Array {
  const first = (bytes[3]! << 8) | bytes[4]!;
  if (first >= n) return bytes.subarray(RECORD_HEADER, RECORD_HEADER + n);
  const out = new Uint8Array(n);
  let at = 0;
  for (let offset = 0; at < n; ) {
    const length = (bytes[offset + 3]! << 8) | bytes[offset + 4]!;
    const take = bytes.subarray(offset + RECORD_HEADER, offset + RECORD_HEADER + Math.min(length, n - at));
    if (take.length === 0) throw new Error('records end before the handshake bytes');
    out.set(take, at);
    at += take.length;
    offset += RECORD_HEADER + length;
  }
  return out;
}

/** Bounds-checked reads over one byte range; any overrun marks the reader failed. */
class Reader {
  private pos: number;
  failed = false;

  constructor(
    private readonly bytes: Uint8Array,
    start = 0,
    private readonly end = bytes.length,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    return this.take(1)?.[0] ?? -1;
  }

  u16(): number {
    const b = this.take(2);
    return b === null ? -1 : (b[0]! << 8) | b[1]!;
  }

  take(n: number): Uint8Array | null {
    if (this.failed || n < 0 || n > this.remaining) {
      this.failed = true;
      return null;
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A sub-reader over the next `n` bytes (a length-prefixed vector's body). */
  vector(n: number): Reader {
    const body = this.take(n);
    const sub = new Reader(body ?? new Uint8Array(0));
    sub.failed = body === null;
    return sub;
  }
}

/** RFC 8446 4.1.2 (and the TLS 1.2 form, RFC 5246 7.4.1.2): the ClientHello body. */
function parseClientHello(body: Uint8Array): ClientHelloVerdict {
  const r = new Reader(body);
  r.take(2); // legacy_version
  r.take(32); // random
  const sessionId = r.u8();
  if (sessionId > 32) return NOT_TLS;
  r.take(sessionId);
  const suites = r.u16();
  if (suites < 2 || suites % 2 !== 0) return NOT_TLS;
  r.take(suites);
  const compression = r.u8();
  if (compression < 1) return NOT_TLS;
  r.take(compression);
  if (r.failed) return NOT_TLS;

  let serverName: string | null = null;
  let alpn: string[] = [];
  // A hello without extensions is legal (TLS 1.2 and older): no SNI, no ALPN.
  if (r.remaining === 0) return { kind: 'hello', serverName, alpn };
  const extensions = r.vector(r.u16());
  if (r.failed || r.remaining !== 0) return NOT_TLS;
  const seen = new Set<number>();
  while (extensions.remaining > 0) {
    const type = extensions.u16();
    const data = extensions.vector(extensions.u16());
    if (extensions.failed || seen.has(type)) return NOT_TLS;
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = parseServerName(data);
      if (name === null) return NOT_TLS;
      serverName = name;
    } else if (type === EXT_ALPN) {
      const protocols = parseAlpn(data);
      if (protocols === null) return NOT_TLS;
      alpn = protocols;
    }
  }
  return { kind: 'hello', serverName, alpn };
}

/** RFC 6066 3: exactly one host_name entry (as OpenSSL requires), printable ASCII. */
function parseServerName(data: Reader): string | null {
  const list = data.vector(data.u16());
  if (data.failed || data.remaining !== 0) return null;
  const type = list.u8();
  const name = list.take(list.u16());
  if (list.failed || list.remaining !== 0 || type !== SNI_HOST_NAME || name === null) return null;
  if (name.length === 0 || name.length > MAX_HOST_NAME) return null;
  let text = '';
  for (const byte of name) {
    if (byte < 0x21 || byte > 0x7e) return null;
    text += String.fromCharCode(byte >= 0x41 && byte <= 0x5a ? byte + 0x20 : byte);
  }
  return text;
}

/** RFC 7301 3.1: a non-empty list of non-empty protocol names. */
function parseAlpn(data: Reader): string[] | null {
  const list = data.vector(data.u16());
  if (data.failed || data.remaining !== 0 || list.remaining === 0) return null;
  const protocols: string[] = [];
  while (list.remaining > 0) {
    const name = list.take(list.u8());
    if (list.failed || name === null || name.length === 0) return null;
    protocols.push(Buffer.from(name).toString('latin1'));
  }
  return protocols;
}
