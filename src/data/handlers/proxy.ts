/**
 * Forwarding to an upstream pool over keep-alive HTTP/1.1 (undici), byte-exact: the
 * request-target goes upstream exactly as received (never rebuilt through URL), headers as
 * prepared by `prepareUpstreamHeaders`, bodies streamed both ways with backpressure. What is
 * decided here, before anything goes upstream: the upload limit (413), the client's share of the
 * pool (429), and whether there is a body. The exchange itself is a `Forwarding`.
 */
import { randomUUID } from 'node:crypto';
import type { Http2ServerRequest } from 'node:http2';
import { BlockList, isIPv6 } from 'node:net';
import type { LimitsPlan } from '../../config/plan';
import type { Exchange, Req, Res } from '../exchange';
import { Forwarding, refuseTooLarge } from '../proxy/forwarding';
import { prepareUpstreamHeaders } from '../proxy/headers';
import { RequestBody } from '../proxy/request-body';
import type { ClientShares } from '../proxy/shares';
import type { UpstreamPool } from '../proxy/upstream-pool';
import { sendMatrixError } from './errors';

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

export interface ProxyOptions {
  /** Peers whose X-Forwarded-For (and the other forwarding headers, and request ids) are kept. */
  readonly trusted: BlockList | null;
  /** The request-id header (lower case; a trusted peer's value is kept, else a new id), or null for none. */
  readonly requestIdHeader: string | null;
  readonly limits: LimitsPlan;
  readonly shares: ClientShares;
}

/** The client connection a request came on: the socket (HTTP/1.1) or the session (HTTP/2). */
function connectionOf(req: Req): object {
  return req.httpVersionMajor === 2 ? (req as Http2ServerRequest).stream.session! : req.socket;
}

/** How long a client told 429 is asked to wait. */
const RETRY_AFTER_S = 1;

/** Forward one request to `upstream`. `maxBodyBytes` is the route's upload limit. */
export function forward(req: Req, res: Res, ex: Exchange, upstream: UpstreamPool, maxBodyBytes: number, opts: ProxyOptions, expectContinue: boolean): void {
  const h2 = req.httpVersionMajor === 2;
  const declaredHeader = req.headers['content-length'];
  const declared = declaredHeader === undefined ? -1 : Number(declaredHeader);
  if (declared > maxBodyBytes) {
    ex.failure = `declared body of ${declared} bytes over the limit of ${maxBodyBytes}`;
    refuseTooLarge(req, res, ex);
    return;
  }
  const hasBody = h2 ? !(req as Http2ServerRequest).stream.endAfterHeaders : declared > 0 || req.headers['transfer-encoding'] !== undefined;

  const peer = ex.peer;
  const trusted = opts.trusted !== null && peer !== '' && opts.trusted.check(peer, isIPv6(peer) ? 'ipv6' : 'ipv4');
  const share = opts.shares.acquire(connectionOf(req), peer, trusted);
  if (typeof share === 'string') {
    ex.failure = `over the client's share: ${share === 'connection' ? opts.limits.perConnection : opts.limits.perAddress} forwarded requests in flight per ${share}`;
    const close: Record<string, string> = !h2 && hasBody ? { connection: 'close' } : {};
    sendMatrixError(req, res, ex, 429, 'M_LIMIT_EXCEEDED', `Too many requests in flight from this ${share === 'connection' ? 'connection' : 'address'}`, { 'retry-after': String(RETRY_AFTER_S), ...close }, { retry_after_ms: RETRY_AFTER_S * 1000 });
    return;
  }

  const prepared = prepareUpstreamHeaders({
    rawHeaders: req.rawHeaders,
    connection: req.headers['connection'],
    h2,
    authority: req.headers[':authority'] as string | undefined,
    peer,
    trusted,
    requestIdHeader: opts.requestIdHeader,
    newId: randomUUID,
  });
  ex.requestId = prepared.requestId;

  const forwarding = new Forwarding(req, res, ex, upstream, share, { sendTimeoutMs: opts.limits.sendTimeoutMs, queueTimeoutMs: upstream.plan.queueTimeoutMs });
  if (hasBody) {
    forwarding.body = new RequestBody(req, {
      limit: maxBodyBytes,
      declared,
      idleMs: opts.limits.bodyIdleTimeoutMs,
      onFailure: (err) => forwarding.bodyFailed(err),
    });
  }
  // `Expect: 100-continue` is answered here, after the limit check, so an oversized upload is
  // refused before the client sends it (the header itself is not forwarded: undici cannot).
  if (expectContinue) res.writeContinue();
  forwarding.start({ origin: upstream.plan.dial, method: req.method!, path: req.url!, headers: prepared.headers, body: forwarding.body });
}
