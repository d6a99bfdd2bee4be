/**
 * The soak's client operations, over real TLS to the edge with Node's https and http2 clients,
 * each from a given loopback source address. Every operation settles once, with an outcome:
 * 'ok' for a well-behaved exchange that got the whole, correct answer; otherwise a short name of
 * what happened ('status 502', 'timeout', 'cut', 'cancelled …', '408' …). Every one is bounded by
 * a deadline of its own, after which its connection or stream is destroyed.
 */
import type { ClientRequest, IncomingMessage } from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import type { Writable } from 'node:stream';
import * as tls from 'node:tls';
import { errorName } from '../test/support/h2raw';

export interface Target {
  /** The edge's HTTPS port on 127.0.0.1. */
  readonly port: number;
  /** The name in SNI, Host and :authority (the edge's hostname). */
  readonly name: string;
  /** The internal CA's root certificate. */
  readonly ca: Buffer;
}

export const SYNC_PATH = '/_matrix/client/v3/sync?timeout=30000&since=s0';
export const VERSIONS_PATH = '/_matrix/client/versions';
export const uploadPath = (bytes: number): string => `/_matrix/media/v3/upload?filename=soak.bin&bench_bytes=${bytes}`;
export const downloadPath = (bytes: number): string => `/_matrix/media/v3/download/localhost/soak?bytes=${bytes}`;
export const syncPath = (holdMs: number): string => `${SYNC_PATH}&bench_hold_ms=${Math.round(holdMs)}`;

/** What the client sends as request bodies: 64 KiB of filler, repeated. */
const FILLER = Buffer.alloc(64 * 1024, 0x5a);

export interface Answer {
  readonly status: number;
  readonly bytes: number;
  /** The start of the body (≤ 1 KiB), for small JSON answers. */
  readonly text: string;
  /** HTTP/2: the RST_STREAM code the stream closed with (0 when it ended normally). */
  readonly rstCode?: number;
}

/** A promise settled once, by whichever comes first (an answer, an error, a deadline). */
export class Once<T> {
  readonly promise: Promise<T>;
  private done = false;
  private resolveFn!: (v: T) => void;
  constructor() {
    this.promise = new Promise<T>((resolve) => (this.resolveFn = resolve));
  }
  get settled(): boolean {
    return this.done;
  }
  settle(v: T): void {
    if (this.done) return;
    this.done = true;
    this.resolveFn(v);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for 'drain', or for the stream's end ('close'), whichever comes first. */
function drained(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.once('drain', done);
    w.once('close', done);
  });
}

/** Writes `bytes` of filler with backpressure; returns how many were handed over (less if the stream died). */
export async function sendBody(w: Writable, bytes: number): Promise<number> {
  let sent = 0;
  while (sent < bytes && !w.destroyed) {
    const n = Math.min(FILLER.length, bytes - sent);
    sent += n;
    if (!w.write(n === FILLER.length ? FILLER : FILLER.subarray(0, n))) await drained(w);
  }
  return sent;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

export interface H1Request {
  readonly agent: https.Agent | false;
  readonly localAddress: string;
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers?: Record<string, string | number>;
}

export function h1Request(t: Target, o: H1Request): ClientRequest {
  return https.request({
    host: '127.0.0.1',
    port: t.port,
    servername: t.name,
    ca: t.ca,
    agent: o.agent,
    localAddress: o.localAddress,
    method: o.method,
    path: o.path,
    headers: { host: `${t.name}:${t.port}`, ...o.headers },
  });
}

/** Reads a response to its end; rejects when it is cut (fewer bytes than declared, a reset). */
export function readH1(res: IncomingMessage, onData?: (total: number) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let text = '';
    res.on('data', (c: Buffer) => {
      bytes += c.length;
      if (text.length < 1024) text += c.toString('latin1', 0, Math.min(c.length, 1024));
      onData?.(bytes);
    });
    res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, text }));
    res.on('error', (err) => reject(err));
    res.on('close', () => {
      if (!res.complete) reject(new Error('cut'));
    });
  });
}

/** A well-behaved HTTP/1.1 exchange: the whole request (with `body` bytes, chunked or not), the whole answer. */
export function h1Exchange(t: Target, o: H1Request, body: { bytes: number; chunked: boolean } | null, timeoutMs: number): Promise<Answer | string> {
  const out = new Once<Answer | string>();
  const headers = { ...o.headers };
  if (body !== null && !body.chunked) headers['content-length'] = body.bytes;
  if (body !== null && body.chunked) headers['transfer-encoding'] = 'chunked';
  const req = h1Request(t, { ...o, headers });
  const timer = setTimeout(() => {
    out.settle('timeout');
    req.destroy();
  }, timeoutMs);
  req.on('response', (res) => {
    readH1(res).then(
      (a) => out.settle(a),
      (err: Error) => out.settle(describe(err)),
    );
  });
  req.on('error', (err) => out.settle(describe(err)));
  if (body === null) req.end();
  else void sendBody(req, body.bytes).then(() => req.end());
  return out.promise.finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// HTTP/2

/** One HTTP/2 session from `localAddress` (the socket made here, so the source address is ours). */
export function h2Connect(t: Target, localAddress: string, windowBytes = 1 << 20): http2.ClientHttp2Session {
  const session = http2.connect(`https://${t.name}:${t.port}`, {
    createConnection: () =>
      tls.connect({ socket: net.connect({ host: '127.0.0.1', port: t.port, localAddress }), servername: t.name, ca: t.ca, ALPNProtocols: ['h2'] }),
    settings: { initialWindowSize: windowBytes },
  });
  session.on('error', () => undefined); // streams report their own failure
  session.on('connect', () => session.setLocalWindowSize(4 * windowBytes));
  return session;
}

/** Long-lived sessions from a set of addresses, reopened when one closes; taken round-robin. */
export class H2Sessions {
  private readonly sessions: Array<http2.ClientHttp2Session | null>;
  private next = 0;

  constructor(
    private readonly t: Target,
    private readonly addresses: readonly string[],
    count: number,
  ) {
    this.sessions = new Array<http2.ClientHttp2Session | null>(count).fill(null);
  }

  get(): http2.ClientHttp2Session {
    const i = this.next++ % this.sessions.length;
    let s = this.sessions[i];
    if (s == null || s.closed || s.destroyed) {
      s = h2Connect(this.t, this.addresses[i % this.addresses.length]!);
      this.sessions[i] = s;
    }
    return s;
  }

  closeAll(): void {
    for (const s of this.sessions) s?.destroy();
  }
}

export function h2Request(session: http2.ClientHttp2Session, t: Target, method: 'GET' | 'POST', path: string, headers: Record<string, string | number> = {}, endStream = method === 'GET'): http2.ClientHttp2Stream {
  return session.request({ ':method': method, ':path': path, ':authority': `${t.name}:${t.port}`, ':scheme': 'https', ...headers }, { endStream });
}

/** Reads a stream's answer to its end; rejects when it is reset or closed before its end. */
export function readH2(stream: http2.ClientHttp2Stream, onData?: (total: number) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let bytes = 0;
    let text = '';
    let ended = false;
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => {
      bytes += c.length;
      if (text.length < 1024) text += c.toString('latin1', 0, Math.min(c.length, 1024));
      onData?.(bytes);
    });
    stream.on('end', () => (ended = true));
    stream.on('close', () => {
      if (ended) resolve({ status, bytes, text, rstCode: stream.rstCode });
    });
    stream.on('error', (err) => reject(err));
    stream.on('close', () => {
      if (!ended) reject(new Error(status === 0 ? `reset before the answer (${errorName(stream.rstCode)})` : `cut (${errorName(stream.rstCode)})`));
    });
  });
}

/** A well-behaved HTTP/2 exchange on `session`: the whole request (with or without content-length), the whole answer. */
export function h2Exchange(
  session: http2.ClientHttp2Session,
  t: Target,
  method: 'GET' | 'POST',
  path: string,
  body: { bytes: number; declared: boolean } | null,
  timeoutMs: number,
): Promise<Answer | string> {
  const out = new Once<Answer | string>();
  const headers: Record<string, number> = body?.declared ? { 'content-length': body.bytes } : {};
  let stream: http2.ClientHttp2Stream;
  try {
    stream = h2Request(session, t, method, path, headers, body === null);
  } catch (err) {
    return Promise.resolve(describe(err as Error));
  }
  const timer = setTimeout(() => {
    out.settle('timeout');
    stream.close(http2.constants.NGHTTP2_CANCEL);
  }, timeoutMs);
  readH2(stream).then(
    (a) => out.settle(a),
    (err: Error) => out.settle(describe(err)),
  );
  if (body !== null) void sendBody(stream, body.bytes).then(() => stream.end());
  return out.promise.finally(() => clearTimeout(timer));
}

/** A short name for a failure: its code when it has one. */
export function describe(err: Error): string {
  const code = (err as { code?: string }).code;
  if (code === 'ERR_HTTP2_STREAM_ERROR') return `h2 ${err.message.replace(/^Stream closed with error code /, '')}`;
  return code ?? err.message.slice(0, 80);
}

/** Checks a well-behaved answer: the status and, where the size is known, every byte. */
export function verdict(a: Answer | string, want: { status?: number; bytes?: number; uploaded?: number; text?: string }): string {
  if (typeof a === 'string') return a;
  if (a.status !== (want.status ?? 200)) return `status ${a.status}`;
  if (want.bytes !== undefined && a.bytes !== want.bytes) return `short body (${a.bytes} of ${want.bytes})`;
  if (want.uploaded !== undefined && !a.text.includes(`"bytes":${want.uploaded}`)) return 'upload size mismatch';
  if (want.text !== undefined && a.text !== want.text) return 'wrong body';
  return 'ok';
}
