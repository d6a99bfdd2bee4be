/**
 * Forwarding to an upstream pool over keep-alive HTTP/1.1 (undici), byte-exact:
 * - the request-target goes upstream exactly as received (never rebuilt through URL);
 * - headers keep their order, case and values, less hop-by-hop ones; Host is kept (HTTP/2:
 *   Host = :authority); X-Forwarded-For is overwritten with the peer (appended to only for
 *   trusted proxies) and X-Forwarded-Proto is https; a request id (X-Request-Id by default) is
 *   added, or kept from a trusted proxy;
 * - bodies stream both ways with backpressure; the upload limit answers 413 M_TOO_LARGE;
 * - upstream failure before response headers → Matrix JSON 502/504; after them → the client's
 *   response is destroyed so a truncated body never looks complete; a client that goes away
 *   aborts the upstream request.
 */
import { randomUUID } from 'node:crypto';
import { BlockList, isIPv6 } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import type { Dispatcher, Pool as PoolType } from 'undici';
import type { UpstreamPlan } from '../../config/plan';
import type { Exchange, Req, Res } from '../exchange';
import { matrixError, sendMatrixError } from './errors';

/**
 * undici's Pool alone: the package's index loads fetch, WebSocket, caches and mocks besides
 * (≈ 110 modules, ≈ 13 MiB per worker process); the Pool module is ≈ 20 of them.
 */
const Pool = require('undici/lib/dispatcher/pool') as typeof PoolType;

/** Request headers never forwarded: hop-by-hop (RFC 9110 §7.6.1) and what the edge sets itself. */
const DROP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
  'x-forwarded-proto',
]);

/** Response headers never relayed: hop-by-hop, and forbidden in HTTP/2 responses. */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Headers a client could use to claim another address; dropped unless the peer is a trusted proxy. */
const SPOOFABLE = new Set(['x-forwarded-for', 'x-real-ip', 'forwarded']);

class BodyTooLarge extends Error {
  readonly code = 'EDGE_BODY_TOO_LARGE';
}
class ClientGone extends Error {
  readonly code = 'EDGE_CLIENT_GONE';
}

/** Counts a body of unknown length and fails once it passes the limit. */
class LimitStream extends Transform {
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) cb(new BodyTooLarge(`request body exceeds ${this.limit} bytes`));
    else cb(null, chunk);
  }
}

export function buildTrustList(entries: readonly string[]): BlockList | null {
  if (entries.length === 0) return null;
  const list = new BlockList();
  for (const entry of entries) {
    const slash = entry.indexOf('/');
    const address = slash === -1 ? entry : entry.slice(0, slash);
    const type = isIPv6(address) ? 'ipv6' : 'ipv4';
    if (slash === -1) list.addAddress(address, type);
    else list.addSubnet(address, Number(entry.slice(slash + 1)), type);
  }
  return list;
}

function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const joined = Array.isArray(value) ? value.join(',') : value;
  const tokens = new Set<string>();
  for (const t of joined.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && token !== 'close' && token !== 'keep-alive') tokens.add(token);
  }
  return tokens.size === 0 ? null : tokens;
}

export class UpstreamPool {
  readonly pool: PoolType;
  constructor(readonly plan: UpstreamPlan) {
    this.pool = new Pool(plan.dial, {
      connections: plan.connections,
      pipelining: 1,
      headersTimeout: plan.timeoutMs,
      bodyTimeout: plan.timeoutMs,
      connectTimeout: plan.connectTimeoutMs,
    });
  }
  close(): Promise<void> {
    return this.pool.close();
  }
  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

/** One forwarded request: the undici dispatch handler that relays the response to the client. */
class Forwarding implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private clientGone = false;
  private resumeOnDrain: (() => void) | null = null;

  constructor(
    private readonly req: Req,
    private readonly res: Res,
    private readonly ex: Exchange,
  ) {
    res.once('close', this.onClientClose);
  }

  private readonly onClientClose = (): void => {
    if (this.res.writableFinished) return;
    this.clientGone = true;
    this.ex.failure ??= 'client closed the connection';
    this.controller?.abort(new ClientGone('client closed the connection'));
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new ClientGone('client closed the connection'));
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    this.ex.upstreamMs = performance.now() - this.ex.start;
    const drop = connectionTokens(headers['connection']);
    const out: Record<string, string | string[]> = {};
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined || DROP_RESPONSE.has(name) || (drop !== null && drop.has(name))) continue;
      out[name] = value;
    }
    const res = this.res;
    if (statusMessage && 'statusMessage' in res && this.req.httpVersionMajor === 1) res.statusMessage = statusMessage;
    try {
      res.writeHead(statusCode, out);
    } catch (err) {
      // An upstream header Node refuses to send (e.g. invalid characters): fail like a bad gateway.
      this.ex.failure = `unrelayable upstream response: ${(err as Error).message}`;
      controller.abort(err as Error);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.ex.bytes += chunk.length;
    if (!this.res.write(chunk)) {
      controller.pause();
      if (this.resumeOnDrain === null) {
        this.resumeOnDrain = () => {
          this.resumeOnDrain = null;
          controller.resume();
        };
        this.res.once('drain', this.resumeOnDrain);
      }
    }
  }

  onResponseEnd(): void {
    this.res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    fail(this.req, this.res, this.ex, err);
  }
}

function fail(req: Req, res: Res, ex: Exchange, err: Error): void {
  const code = (err as { code?: string }).code ?? err.name;
  if (code === 'EDGE_CLIENT_GONE' || res.destroyed) {
    ex.failure ??= 'client closed the connection';
    return;
  }
  ex.failure ??= `${code}: ${err.message}`;
  if (res.headersSent) {
    // The status line is gone: the only honest signal left is to cut the response short.
    res.destroy(err);
    return;
  }
  switch (code) {
    case 'EDGE_BODY_TOO_LARGE':
      refuseTooLarge(req, res, ex);
      return;
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      sendMatrixError(req, res, ex, 504, 'M_UNKNOWN', 'The homeserver did not answer in time');
      return;
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_NOT_SUPPORTED':
      sendMatrixError(req, res, ex, 400, 'M_UNRECOGNIZED', `Malformed request: ${err.message}`, { connection: 'close' });
      return;
    default:
      sendMatrixError(req, res, ex, 502, 'M_UNKNOWN', 'The homeserver is unreachable');
  }
}

const TOO_LARGE = 'Request body is larger than this server accepts';

/** How long a refused upload is still read (and discarded) so its client gets the answer. */
const LINGER_MS = 30_000;

/**
 * 413 M_TOO_LARGE for an upload over the limit. Over HTTP/1.1 the client is usually still
 * sending: closing at once (as Node does after a response to `Connection: close`) resets the
 * connection over the unread data, and the client may never read the answer. So the whole answer
 * is written at once but the response is ended only when the rest of the body has been read and
 * discarded — lingering close, RFC 9112 §9.6 — or after LINGER_MS, when the connection is cut.
 * HTTP/2 ends just the stream.
 */
function refuseTooLarge(req: Req, res: Res, ex: Exchange): void {
  if (req.httpVersionMajor !== 1 || req.complete) {
    sendMatrixError(req, res, ex, 413, 'M_TOO_LARGE', TOO_LARGE);
    return;
  }
  const { body, headers } = matrixError('M_TOO_LARGE', TOO_LARGE);
  res.writeHead(413, headers);
  res.write(body);
  ex.bytes += body.length;
  const socket = req.socket;
  const cut = setTimeout(() => socket.destroy(), LINGER_MS);
  cut.unref();
  const finish = (): void => {
    clearTimeout(cut);
    res.end();
  };
  req.once('end', finish);
  req.once('close', finish);
  req.resume();
}

export interface ProxyOptions {
  /** Peers whose X-Forwarded-For (and X-Real-IP, Forwarded) are kept. */
  readonly trusted: BlockList | null;
  /** The request-id header (lower case; a trusted peer's value is kept, else a new id), or null for none. */
  readonly requestIdHeader: string | null;
}

/** A request id a trusted proxy sent: kept when it is short visible ASCII, else replaced. */
const PASSABLE_ID = /^[\x21-\x7e]{1,200}$/;

/** Forward one request to `upstream`. `maxBodyBytes` is the route's upload limit. */
export function forward(
  req: Req,
  res: Res,
  ex: Exchange,
  upstream: UpstreamPool,
  maxBodyBytes: number,
  opts: ProxyOptions,
  expectContinue: boolean,
): void {
  const h2 = req.httpVersionMajor === 2;
  const reqHeaders = req.headers;

  // Upload limit and body presence, decided before anything goes upstream.
  const declared = reqHeaders['content-length'];
  let length = -1;
  if (declared !== undefined) {
    length = Number(declared);
    if (length > maxBodyBytes) {
      ex.failure = `declared body of ${length} bytes over the limit of ${maxBodyBytes}`;
      refuseTooLarge(req, res, ex);
      return;
    }
  }
  const hasBody = h2
    ? !(req as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders
    : length > 0 || reqHeaders['transfer-encoding'] !== undefined;

  const peer = ex.peer;
  const trusted = opts.trusted !== null && peer !== '' && opts.trusted.check(peer, isIPv6(peer) ? 'ipv6' : 'ipv4');
  const drop = connectionTokens(reqHeaders['connection']);

  // One pass over the raw headers: order and case kept.
  const raw = req.rawHeaders;
  const headers: string[] = [];
  const idHeader = opts.requestIdHeader;
  let cookies: string[] | null = null;
  let forwardedFor: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 58 /* : */ || DROP_REQUEST.has(lower) || (drop !== null && drop.has(lower))) continue;
    if (lower === idHeader) {
      if (trusted && ex.requestId === null && PASSABLE_ID.test(raw[i + 1]!)) ex.requestId = raw[i + 1]!;
      continue;
    }
    if (SPOOFABLE.has(lower)) {
      if (!trusted) continue;
      if (lower === 'x-forwarded-for') {
        forwardedFor = forwardedFor === null ? raw[i + 1]! : `${forwardedFor}, ${raw[i + 1]}`;
        continue;
      }
    }
    if (h2 && lower === 'cookie') {
      // RFC 9113 §8.2.3: HTTP/2 may split cookies across fields; HTTP/1.1 wants one.
      (cookies ??= []).push(raw[i + 1]!);
      continue;
    }
    headers.push(name, raw[i + 1]!);
  }
  if (h2) {
    const authority = reqHeaders[':authority'];
    if (reqHeaders['host'] === undefined && typeof authority === 'string') headers.push('host', authority);
    if (cookies !== null) headers.push('cookie', cookies.join('; '));
  }
  headers.push('x-forwarded-for', forwardedFor === null ? peer : `${forwardedFor}, ${peer}`, 'x-forwarded-proto', 'https');
  if (idHeader !== null) headers.push(idHeader, (ex.requestId ??= randomUUID()));

  let body: Req | LimitStream | null = null;
  if (hasBody) {
    if (declared !== undefined) {
      body = req;
    } else {
      const limited = new LimitStream(maxBodyBytes);
      req.on('error', (err) => limited.destroy(err));
      req.pipe(limited);
      body = limited;
    }
  }
  // `Expect: 100-continue` is answered here, after the limit check, so an oversized upload is
  // refused before the client sends it (the header itself is not forwarded: undici cannot).
  if (expectContinue) res.writeContinue();

  const handler = new Forwarding(req, res, ex);
  try {
    upstream.pool.dispatch({ origin: upstream.plan.dial, method: req.method!, path: req.url!, headers, body }, handler);
  } catch (err) {
    fail(req, res, ex, err as Error);
  }
}
