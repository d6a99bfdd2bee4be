/**
 * A stand-in ACME directory in front of a real Pebble, for what Pebble 2.4 lacks: ACME Renewal
 * Information (RFC 9773) and certificate profiles. It is an HTTPS server on 127.0.0.1 with Pebble's
 * own certificate (so `pebble.caRootsFile` trusts it too) that forwards every request to Pebble
 * with the Host header left as the front's host:port. Pebble builds the URLs in its responses
 * (directory, Location, Link) and checks each JWS `url` from the request's Host and path, so a
 * client sees only the front's URLs, signs them, and Pebble accepts them.
 *
 * On top of forwarding, the front
 *   - adds `renewalInfo` (ARI on) and `meta.profiles` (profiles given) to the directory;
 *   - answers GET <renewalInfo>/<certID> itself from a test-controlled function (default 404) and
 *     records each such request;
 *   - records each newOrder request's payload (identifiers, profile, replaces) and Pebble's answer.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { RunningPebble } from './pebble';

export interface RenewalInfoAnswer {
  /** HTTP status of the renewalInfo response. */
  readonly status: number;
  /** The suggested window; sent as `{ suggestedWindow: { start, end } }` in RFC 3339. */
  readonly window?: { readonly start: Date; readonly end: Date };
  /** Retry-After header, in seconds. */
  readonly retryAfterSeconds?: number;
  /** `explanationURL` member of the body. */
  readonly explanationURL?: string;
  /** A raw body sent as-is instead of the one built from the fields above (for malformed answers). */
  readonly body?: string;
}

/** Decides the renewalInfo answer for a certID (the path segment after /renewal-info/). */
export type RenewalInfoHandler = (certId: string) => RenewalInfoAnswer | Promise<RenewalInfoAnswer>;

export interface RecordedOrder {
  /** `identifiers` of the newOrder payload, as the client sent them. */
  readonly identifiers: Array<{ type: string; value: string }>;
  /** `profile` of the payload (undefined when the client sent none). */
  readonly profile: string | undefined;
  /** `replaces` (an ARI certID) of the payload (undefined when the client sent none). */
  readonly replaces: string | undefined;
  /** The whole decoded payload. */
  readonly payload: Record<string, unknown>;
  /** The `url` of the JWS protected header: what the client signed. */
  readonly jwsUrl: string | undefined;
  /** Pebble's HTTP status; null until Pebble has answered (or when forwarding failed). */
  status: number | null;
  /** Pebble's Location header (the order URL), when it gave one. */
  location: string | null;
}

export interface RenewalInfoRequest {
  readonly certId: string;
  /** ms epoch */
  readonly at: number;
  /** The status the front answered. */
  readonly status: number;
}

export interface AcmeFrontOptions {
  readonly pebble: RunningPebble;
  /** Advertise `renewalInfo` in the directory and answer renewalInfo requests. */
  readonly ari?: boolean;
  /** Advertised as the directory's `meta.profiles` (name → description). */
  readonly profiles?: Record<string, string>;
  /**
   * Port on 127.0.0.1 (default 0: any free one). Pebble ties account URLs (the JWS `kid`) to the
   * Host they were created through, so a front restarted for the same stored account needs the
   * same port.
   */
  readonly port?: number;
}

export interface AcmeFront {
  /** The front's directory URL (Pebble's directory path, on the front's origin). */
  readonly directory: string;
  /** "https://127.0.0.1:<port>" */
  readonly origin: string;
  /** The advertised renewalInfo base URL (no trailing slash); set even when ARI is off. */
  readonly renewalInfoUrl: string;
  /** Every newOrder request, in order of arrival. */
  readonly orders: RecordedOrder[];
  /** Every renewalInfo request the front answered (ARI on), in order of arrival. */
  readonly renewalInfoRequests: RenewalInfoRequest[];
  /** Replaces the renewalInfo handler (the initial one answers 404 to everything). */
  setRenewalInfo(fn: RenewalInfoHandler): void;
  /** Stops listening, drops open connections; never throws. */
  close(): Promise<void>;
}

const RENEWAL_INFO_PATH = '/renewal-info';

/** Headers that belong to one connection, not to the message: never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length', // set again for the buffered body
]);

const notFound: RenewalInfoHandler = () => ({ status: 404 });

function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

function decodeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The payload and protected header of a flattened JWS request body; empty objects when unreadable. */
function decodeJws(body: Buffer): { payload: Record<string, unknown>; protectedHeader: Record<string, unknown> } {
  const jws = decodeJson(body.toString('utf8'));
  const part = (name: string): Record<string, unknown> => {
    if (!isRecord(jws) || typeof jws[name] !== 'string') return {};
    const decoded = decodeJson(Buffer.from(jws[name] as string, 'base64url').toString('utf8'));
    return isRecord(decoded) ? decoded : {};
  };
  return { payload: part('payload'), protectedHeader: part('protected') };
}

interface Upstream {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

export async function startAcmeFront(opts: AcmeFrontOptions): Promise<AcmeFront> {
  const { pebble } = opts;
  const ca = fs.readFileSync(pebble.caRootsFile, 'utf8');
  const cert = fs.readFileSync(pebble.certFile, 'utf8');
  const key = fs.readFileSync(pebble.keyFile, 'utf8');
  const [pebbleHost, pebblePortText] = pebble.listenAddress.split(':') as [string, string];
  const pebblePort = Number(pebblePortText);
  const directoryPath = new URL(pebble.directory).pathname;
  // Pebble's certificate names localhost and 127.0.0.1; the SNI/identity check uses this name,
  // whatever Host the forwarded request carries.
  const agent = new https.Agent({ ca, keepAlive: true, servername: 'localhost' });

  const orders: RecordedOrder[] = [];
  const renewalInfoRequests: RenewalInfoRequest[] = [];
  let renewalInfo: RenewalInfoHandler = notFound;
  let origin = '';

  function toPebble(method: string, path: string, headers: http.OutgoingHttpHeaders, body: Buffer): Promise<Upstream> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: pebbleHost, port: pebblePort, method, path, headers, agent, servername: 'localhost', timeout: 15_000 },
        (res) => {
          readBody(res).then((b) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }), reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`pebble did not answer ${method} ${path} within 15 s`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  // The newOrder path, from Pebble's own directory (the same on any Host).
  const pebbleDirectory = decodeJson(
    (await toPebble('GET', directoryPath, { host: pebble.listenAddress }, Buffer.alloc(0))).body.toString('utf8'),
  );
  if (!isRecord(pebbleDirectory) || typeof pebbleDirectory['newOrder'] !== 'string') {
    agent.destroy();
    throw new Error(`acme-front: Pebble's directory has no newOrder: ${JSON.stringify(pebbleDirectory)}`);
  }
  const newOrderPath = new URL(pebbleDirectory['newOrder']).pathname;

  async function answerRenewalInfo(certId: string, res: http.ServerResponse): Promise<void> {
    let answer: RenewalInfoAnswer;
    try {
      answer = await renewalInfo(certId);
    } catch (err) {
      answer = { status: 500, body: JSON.stringify({ detail: `acme-front renewalInfo handler threw: ${(err as Error).message}` }) };
    }
    renewalInfoRequests.push({ certId, at: Date.now(), status: answer.status });
    const headers: http.OutgoingHttpHeaders = {};
    if (answer.retryAfterSeconds !== undefined) headers['retry-after'] = String(answer.retryAfterSeconds);
    let body: string;
    if (answer.body !== undefined) {
      body = answer.body;
      headers['content-type'] = 'application/json';
    } else if (answer.window !== undefined) {
      body = JSON.stringify({
        suggestedWindow: { start: answer.window.start.toISOString(), end: answer.window.end.toISOString() },
        ...(answer.explanationURL !== undefined ? { explanationURL: answer.explanationURL } : {}),
      });
      headers['content-type'] = 'application/json';
    } else {
      body = JSON.stringify({
        type: 'urn:ietf:params:acme:error:malformed',
        detail: `no renewal information for ${certId}`,
        status: answer.status,
      });
      headers['content-type'] = 'application/problem+json';
    }
    headers['content-length'] = Buffer.byteLength(body);
    res.writeHead(answer.status, headers);
    res.end(body);
  }

  /** Adds renewalInfo and meta.profiles to Pebble's directory; other answers pass unchanged. */
  function rewriteDirectory(up: Upstream): Buffer {
    const dir = decodeJson(up.body.toString('utf8'));
    if (up.status !== 200 || !isRecord(dir)) return up.body;
    if (opts.ari === true) dir['renewalInfo'] = `${origin}${RENEWAL_INFO_PATH}`;
    if (opts.profiles !== undefined) {
      const meta = isRecord(dir['meta']) ? dir['meta'] : {};
      dir['meta'] = { ...meta, profiles: { ...opts.profiles } };
    }
    return Buffer.from(JSON.stringify(dir, null, 2), 'utf8');
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const pathname = url.split('?')[0]!;
    const body = await readBody(req);

    if (opts.ari === true && (pathname === RENEWAL_INFO_PATH || pathname.startsWith(`${RENEWAL_INFO_PATH}/`))) {
      if (method !== 'GET') {
        res.writeHead(405, { allow: 'GET', 'content-length': 0 });
        res.end();
        return;
      }
      const certId = decodeURIComponent(pathname.slice(RENEWAL_INFO_PATH.length + 1));
      await answerRenewalInfo(certId, res);
      return;
    }

    let order: RecordedOrder | null = null;
    if (method === 'POST' && pathname === newOrderPath) {
      const { payload, protectedHeader } = decodeJws(body);
      order = {
        identifiers: Array.isArray(payload['identifiers']) ? (payload['identifiers'] as RecordedOrder['identifiers']) : [],
        profile: typeof payload['profile'] === 'string' ? payload['profile'] : undefined,
        replaces: typeof payload['replaces'] === 'string' ? payload['replaces'] : undefined,
        payload,
        jwsUrl: typeof protectedHeader['url'] === 'string' ? protectedHeader['url'] : undefined,
        status: null,
        location: null,
      };
      orders.push(order);
    }

    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
    }
    // Pebble derives its URLs and the expected JWS url from this: keep the front's host:port.
    headers['host'] = req.headers.host ?? new URL(origin).host;
    if (body.length > 0 || method === 'POST' || method === 'PUT') headers['content-length'] = body.length;

    let up: Upstream;
    try {
      up = await toPebble(method, url, headers, body);
    } catch (err) {
      const text = `acme-front: forwarding ${method} ${url} to Pebble failed: ${(err as Error).message}\n`;
      res.writeHead(502, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (order !== null) {
      order.status = up.status;
      order.location = typeof up.headers.location === 'string' ? up.headers.location : null;
    }
    const out = method === 'GET' && pathname === directoryPath ? rewriteDirectory(up) : up.body;
    const outHeaders: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(up.headers)) {
      if (!HOP_BY_HOP.has(name) && value !== undefined) outHeaders[name] = value;
    }
    outHeaders['content-length'] = out.length;
    res.writeHead(up.status, outHeaders);
    res.end(method === 'HEAD' ? undefined : out);
  }

  const server = https.createServer({ cert, key }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        const text = `acme-front: ${(err as Error).message}\n`;
        res.writeHead(500, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      } else {
        res.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void => {
      agent.destroy();
      reject(err);
    };
    server.once('error', failed);
    server.listen({ host: '127.0.0.1', port: opts.port ?? 0 }, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  origin = `https://127.0.0.1:${port}`;

  return {
    directory: `${origin}${directoryPath}`,
    origin,
    renewalInfoUrl: `${origin}${RENEWAL_INFO_PATH}`,
    orders,
    renewalInfoRequests,
    setRenewalInfo(fn) {
      renewalInfo = fn;
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      agent.destroy();
    },
  };
}
