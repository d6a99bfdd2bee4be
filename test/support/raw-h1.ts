/**
 * HTTP/1.1 written byte for byte over TLS, and the answers read back as they came — informational
 * (1xx) responses included — for requests Node's client will not send (malformed lines, raw
 * latin1 bytes, lowercase or unknown methods, headers a test wants verbatim).
 */
import * as tls from 'node:tls';

export interface RawResponse {
  readonly status: number;
  readonly reason: string;
  /** Header names in lower case, every value in order. */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly body: Buffer;
}

export interface RawExchange {
  /** Every complete response, in order (1xx ones included). */
  readonly responses: RawResponse[];
  /** Everything received, as latin1. */
  readonly text: string;
  /** Whether the server closed the connection before we stopped reading. */
  readonly closed: boolean;
  /** Milliseconds from the request's first byte to the last response's end (or the close). */
  readonly ms: number;
}

/** The first value of a header of a parsed response. */
export function headerOf(r: RawResponse, name: string): string | undefined {
  return r.headers[name.toLowerCase()]?.[0];
}

/**
 * Complete responses at the start of `bytes` (framed by Content-Length, chunked, or 1xx/204/304
 * without a body), and how many bytes they took. A response still arriving is not included.
 */
export function parseResponses(bytes: Buffer): { responses: RawResponse[]; used: number } {
  const responses: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = bytes.indexOf('\r\n\r\n', at, 'latin1');
    if (end === -1) break;
    const [statusLine, ...lines] = bytes.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine!);
    if (m === null) break; // not HTTP/1.1: left to the caller, in `text`
    const status = Number(m[1]);
    const headers: Record<string, string[]> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      (headers[name] ??= []).push(line.slice(colon + 1).trim());
    }
    let bodyStart = end + 4;
    let body: Buffer;
    if (status < 200 || status === 204 || status === 304) body = Buffer.alloc(0);
    else if (headers['transfer-encoding']?.some((v) => /chunked/i.test(v))) {
      const chunked = dechunk(bytes, bodyStart);
      if (chunked === null) break;
      responses.push({ status, reason: m[2]!, headers, body: chunked.body });
      at = chunked.end;
      continue;
    } else {
      const length = Number(headers['content-length']?.[0] ?? 0);
      if (bytes.length < bodyStart + length) break;
      body = bytes.subarray(bodyStart, bodyStart + length);
      bodyStart += length;
    }
    responses.push({ status, reason: m[2]!, headers, body: Buffer.from(body) });
    at = bodyStart;
  }
  return { responses, used: at };
}

/** A chunked body starting at `from` (trailers skipped), or null while incomplete. */
function dechunk(bytes: Buffer, from: number): { body: Buffer; end: number } | null {
  const parts: Buffer[] = [];
  let p = from;
  for (;;) {
    const lineEnd = bytes.indexOf('\r\n', p, 'latin1');
    if (lineEnd === -1) return null;
    const size = parseInt(bytes.subarray(p, lineEnd).toString('latin1'), 16);
    if (size === 0) {
      const end = bytes.indexOf('\r\n\r\n', lineEnd, 'latin1');
      return end === -1 ? null : { body: Buffer.concat(parts), end: end + 4 };
    }
    if (bytes.length < lineEnd + 2 + size + 2) return null;
    parts.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
    p = lineEnd + 2 + size + 2;
  }
}

export interface RawOptions {
  readonly servername?: string;
  /** Stop once this many final (non-1xx) responses are complete (default 1). */
  readonly finals?: number;
  /** Read on until the server closes (or the timeout), whatever has come. */
  readonly untilClose?: boolean;
  /** Give up reading after this long, ms (default 5000); the result says what came. */
  readonly timeoutMs?: number;
  /** Bytes written later, after this many ms (a client that pauses mid-request). */
  readonly then?: { readonly afterMs: number; readonly bytes: string | Buffer };
}

/**
 * Connect (TLS, ALPN http/1.1), write `bytes`, and read until the server closes, the expected
 * final responses are complete, or the timeout; then close our side.
 */
export function rawExchange(port: number, ca: string, bytes: string | Buffer, o: RawOptions = {}): Promise<RawExchange> {
  const finals = o.finals ?? 1;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: o.servername ?? 'localhost', ALPNProtocols: ['http/1.1'] });
    const chunks: Buffer[] = [];
    let started = 0;
    let later: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(later);
      const all = Buffer.concat(chunks);
      socket.destroy();
      resolve({ responses: parseResponses(all).responses, text: all.toString('latin1'), closed, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish(false), o.timeoutMs ?? 5000);
    socket.once('secureConnect', () => {
      started = performance.now();
      socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
      if (o.then !== undefined) {
        const next = o.then;
        later = setTimeout(() => socket.writable && socket.write(typeof next.bytes === 'string' ? Buffer.from(next.bytes, 'latin1') : next.bytes), next.afterMs);
      }
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      const { responses } = parseResponses(Buffer.concat(chunks));
      if (o.untilClose !== true && responses.filter((r) => r.status >= 200).length >= finals) finish(false);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (err) => {
      if (chunks.length > 0 || started > 0) finish(true);
      else {
        settled = true;
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}
