/**
 * The upstream request's header list, prepared by one pure step so its rules are table-tested
 * without sockets: order and case kept; hop-by-hop headers and those named in `Connection` dropped
 * (never Host or Content-Length, whatever `Connection` says); every forwarding-header family from
 * an untrusted peer dropped; X-Forwarded-For set to the peer (appended to a trusted proxy's);
 * X-Forwarded-Proto https; a request id kept from a trusted proxy or made anew; HTTP/2 cookies
 * joined and `:authority` carried as Host.
 */

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

/** What `Connection` may not remove: the request's target host and its body framing. */
const NEVER_CONNECTION_DROPPED = new Set(['host', 'content-length']);

/**
 * Headers with which a client could claim another address, host, scheme or path to the upstream
 * (or to software behind it). Dropped unless the peer is a trusted proxy; with `x-forwarded-*`
 * matched as a prefix.
 */
const FORWARDING = new Set([
  'forwarded',
  'x-real-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'fastly-client-ip',
  'akamai-client-ip',
  'x-client-ip',
  'x-cluster-client-ip',
  'client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-proxyuser-ip',
  'x-envoy-external-address',
  'x-azure-clientip',
  'x-azure-socketip',
  'x-appengine-user-ip',
  'x-host',
  'x-original-host',
  'x-original-url',
  'x-rewrite-url',
  'x-original-forwarded-for',
]);

export function isForwardingHeader(lower: string): boolean {
  return FORWARDING.has(lower) || lower.startsWith('x-forwarded-');
}

/** A request id a trusted proxy sent: kept when it is short visible ASCII, else replaced. */
const PASSABLE_ID = /^[\x21-\x7e]{1,200}$/;

/** Lower-case tokens of `Connection` other than close/keep-alive, or null when there are none. */
export function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const joined = Array.isArray(value) ? value.join(',') : value;
  const tokens = new Set<string>();
  for (const t of joined.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && token !== 'close' && token !== 'keep-alive') tokens.add(token);
  }
  return tokens.size === 0 ? null : tokens;
}

export interface UpstreamHeadersInput {
  /** The client's header list as received: [name, value, …]; HTTP/2 pseudo-headers included. */
  readonly rawHeaders: readonly string[];
  /** The client's `Connection` value (HTTP/1.1), parsed by the server. */
  readonly connection: string | string[] | undefined;
  /** HTTP/2: cookies are joined, and `:authority` becomes Host when there is none. */
  readonly h2: boolean;
  readonly authority: string | undefined;
  /** The client's address as the edge sees it. */
  readonly peer: string;
  /** Whether the peer is a trusted proxy (its forwarding headers and request id are kept). */
  readonly trusted: boolean;
  /** The request-id header, lower case, or null for none. */
  readonly requestIdHeader: string | null;
  /** Makes a new request id (randomUUID in production). */
  readonly newId: () => string;
}

export interface UpstreamHeaders {
  /** [name, value, …] as undici sends them. */
  readonly headers: string[];
  /** The id sent upstream (and logged), or null when request ids are off. */
  readonly requestId: string | null;
}

export function prepareUpstreamHeaders(input: UpstreamHeadersInput): UpstreamHeaders {
  const { rawHeaders: raw, trusted, requestIdHeader: idHeader } = input;
  const drop = connectionTokens(input.connection);
  const headers: string[] = [];
  let requestId: string | null = null;
  let cookies: string[] | null = null;
  let forwardedFor: string | null = null;
  let hasHost = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 58 /* : */ || DROP_REQUEST.has(lower)) continue;
    if (drop !== null && drop.has(lower) && !NEVER_CONNECTION_DROPPED.has(lower)) continue;
    if (lower === idHeader) {
      if (trusted && requestId === null && PASSABLE_ID.test(value)) requestId = value;
      continue;
    }
    if (lower === 'x-forwarded-for') {
      if (trusted) forwardedFor = forwardedFor === null ? value : `${forwardedFor}, ${value}`;
      continue;
    }
    if (!trusted && isForwardingHeader(lower)) continue;
    if (input.h2 && lower === 'cookie') {
      // RFC 9113 §8.2.3: HTTP/2 may split cookies across fields; HTTP/1.1 wants one.
      (cookies ??= []).push(value);
      continue;
    }
    if (lower === 'host') hasHost = true;
    headers.push(name, value);
  }
  if (input.h2) {
    if (!hasHost && input.authority !== undefined) headers.push('host', input.authority);
    if (cookies !== null) headers.push('cookie', cookies.join('; '));
  }
  headers.push('x-forwarded-for', forwardedFor === null ? input.peer : `${forwardedFor}, ${input.peer}`, 'x-forwarded-proto', 'https');
  if (idHeader !== null) headers.push(idHeader, (requestId ??= input.newId()));
  return { headers, requestId };
}

/** Response headers never relayed: hop-by-hop, and forbidden in HTTP/2 responses. */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The upstream's response headers as relayed to the client: hop-by-hop ones and those named in Connection dropped. */
export function relayedResponseHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const drop = connectionTokens(headers['connection']);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || DROP_RESPONSE.has(name) || (drop !== null && drop.has(name))) continue;
    out[name] = value;
  }
  return out;
}
