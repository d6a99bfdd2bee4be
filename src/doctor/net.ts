/**
 * The doctor's network I/O: address look-ups (with --resolve overrides), SRV look-ups, one TLS
 * handshake that reports what was served, and HTTPS requests sent to a chosen address with a
 * chosen SNI and Host. Every step has a deadline; every failure is a NetError whose message names
 * host:port and the errno, meant for the report as it is.
 */
import { X509Certificate } from 'node:crypto';
import { promises as dns } from 'node:dns';
import type { IncomingHttpHeaders } from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import type { Handshake } from './chain';
import { authority, overrideKey, targetLabel, type Override, type SrvRecord, type Target } from './resolve';

export interface NetContext {
  /** --resolve entries by overrideKey(host, port). */
  readonly overrides: ReadonlyMap<string, Override>;
  /** Trusted roots (PEM): the system's and --ca-file's. */
  readonly ca: readonly string[];
  /** Deadline of every network step, ms. */
  readonly timeoutMs: number;
}

/** A target at one address. */
export interface Endpoint extends Target {
  readonly address: string;
  readonly connectPort: number;
}

/** A failure meant for the report as it is; `code` is the errno or TLS code when there is one. */
export class NetError extends Error {
  constructor(
    message: string,
    readonly code: string | null,
  ) {
    super(message);
  }
}

/** Roots a peer would trust: Node's bundled store and the system's. */
export function systemRoots(): string[] {
  const roots = new Set(tls.getCACertificates('default'));
  try {
    for (const pem of tls.getCACertificates('system')) roots.add(pem);
  } catch {
    // no system store here: the bundled one stands
  }
  return [...roots];
}

const contexts = new WeakMap<NetContext, tls.SecureContext>();

/** One TLS context per run (parsing the trusted roots costs ~20 ms); TLS 1.0 allowed so the check can see it. */
function secureContextOf(ctx: NetContext): tls.SecureContext {
  let context = contexts.get(ctx);
  if (context === undefined) {
    context = tls.createSecureContext({ ca: [...ctx.ca], minVersion: 'TLSv1' });
    contexts.set(ctx, context);
  }
  return context;
}

export function where(ep: Endpoint): string {
  const dialled = `${ep.address}:${ep.connectPort}`;
  const label = targetLabel(ep);
  return label === dialled ? label : `${label} (${dialled})`;
}

function netError(err: unknown, place: string, timeoutMs: number): NetError {
  if (err instanceof NetError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = e.code ?? null;
  if (code === 'ETIMEDOUT') return new NetError(`${place}: no answer within ${timeoutMs / 1000} s (ETIMEDOUT)`, code);
  // System errors are their errno; Node's text ("connect ECONNREFUSED 127.0.0.1:8448") repeats the place.
  if (code !== null && /^E[A-Z]+$/.test(code)) return new NetError(`${place}: ${code}`, code);
  const text = (e.message ?? String(err)).replace(/; if the root CA is installed locally.*$/, '');
  const hint = code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ? ' — a missing intermediate, or an untrusted CA' : '';
  if (code === null) return new NetError(`${place}: ${text}`, null);
  return new NetError(`${place}: ${text.includes(code) ? text : `${text} (${code})`}${hint}`, code);
}

const timedOut = (): Error => Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' });

function deadline<T>(work: Promise<T>, timeoutMs: number, onTimeout: () => void = () => undefined): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(timedOut());
    }, timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** The target at every address it has: the --resolve override, the IP literal itself, or A/AAAA records. */
export async function endpointsOf(ctx: NetContext, target: Target): Promise<Endpoint[]> {
  const override = ctx.overrides.get(overrideKey(target.host, target.port));
  if (override !== undefined) return [{ ...target, address: override.address, connectPort: override.connectPort }];
  if (isIP(target.host) !== 0) return [{ ...target, address: target.host, connectPort: target.port }];
  try {
    const found = await deadline(dns.lookup(target.host, { all: true }), ctx.timeoutMs);
    return found.map((a) => ({ ...target, address: a.address, connectPort: target.port }));
  } catch (err) {
    throw netError(err, `${target.host} has no address (A/AAAA look-up)`, ctx.timeoutMs);
  }
}

/** SRV records of `name`; null when there are none. Other DNS failures are reported in `problem`. */
export async function lookupSrv(ctx: NetContext, name: string): Promise<{ records: SrvRecord[] | null; problem: string | null }> {
  const resolver = new dns.Resolver({ timeout: ctx.timeoutMs, tries: 1 });
  try {
    const records = await deadline(resolver.resolveSrv(name), ctx.timeoutMs, () => resolver.cancel());
    return { records: records.length > 0 ? records : null, problem: null };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return { records: null, problem: null };
    return { records: null, problem: netError(err, `SRV ${name}`, ctx.timeoutMs).message };
  }
}

/** One TLS handshake, verifying nothing: what was served and which protocol was agreed. */
export function handshake(ctx: NetContext, ep: Endpoint): Promise<Handshake> {
  const place = `TLS handshake with ${where(ep)}`;
  return new Promise<Handshake>((resolve, reject) => {
    const socket = tls.connect({
      host: ep.address,
      port: ep.connectPort,
      ...(ep.sni === null ? {} : { servername: ep.sni }),
      secureContext: secureContextOf(ctx),
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    const timer = setTimeout(() => socket.destroy(timedOut()), ctx.timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const served: X509Certificate[] = [];
      const seen = new Set<string>();
      // Node links each certificate to its issuer; a self-signed root links to itself.
      let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      while (c?.raw !== undefined && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        served.push(new X509Certificate(c.raw));
        c = c.issuerCertificate;
      }
      const protocol = socket.getProtocol();
      socket.end();
      resolve({ served, protocol });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      const code = (err as NodeJS.ErrnoException).code;
      const prefix = code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' ? `cannot connect to ${where(ep)}` : place;
      reject(netError(err, prefix, ctx.timeoutMs));
    });
  });
}

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
}

export interface RequestOptions {
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const MAX_BODY = 1024 * 1024;

/** One HTTPS request to the endpoint, the target sent byte for byte, the certificate verified for ep.certName. */
export function request(ctx: NetContext, ep: Endpoint, target: string, opts: RequestOptions = {}): Promise<Answer> {
  const method = opts.method ?? 'GET';
  const place = `${method} https://${authority(ep.host, ep.port)}${target} via ${where(ep)}`;
  // secureContext reaches tls.connect through the agent; @types/node leaves it out of RequestOptions.
  const options: https.RequestOptions & Pick<tls.ConnectionOptions, 'secureContext'> = {
    host: ep.address,
    port: ep.connectPort,
    servername: ep.sni ?? '',
    method,
    path: target,
    headers: { ...opts.headers, host: ep.hostHeader },
    secureContext: secureContextOf(ctx),
    agent: false,
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(ep.certName, cert),
  };
  return new Promise<Answer>((resolve, reject) => {
    const req = https.request(
      options,
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY) req.destroy(new NetError(`${place}: the answer is larger than 1 MiB`, null));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) });
        });
        res.on('error', (err) => req.destroy(err));
      },
    );
    const timer = setTimeout(() => req.destroy(timedOut()), ctx.timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(netError(err, place, ctx.timeoutMs));
    });
    req.end();
  });
}

export interface Fetched {
  readonly answer: Answer;
  /** The URL that answered, after redirects. */
  readonly url: string;
  /** Redirect statuses followed, in order. */
  readonly redirects: readonly number[];
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;

/** GET (or opts.method) an https URL, following 30x redirects and refusing loops. */
export async function fetchUrl(ctx: NetContext, url: string, opts: RequestOptions = {}): Promise<Fetched> {
  const redirects: number[] = [];
  const visited = new Set<string>();
  for (let current = url; ; ) {
    visited.add(current);
    const u = new URL(current);
    if (u.protocol !== 'https:') throw new NetError(`${url} redirects to ${current}, which is not https`, null);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const port = u.port === '' ? 443 : Number(u.port);
    const target: Target = { host, port, sni: isIP(host) === 0 ? host : null, certName: host, hostHeader: u.host };
    const [ep] = await endpointsOf(ctx, target);
    const answer = await request(ctx, ep!, `${u.pathname}${u.search}`, opts);
    const location = answer.headers.location;
    if (!REDIRECTS.has(answer.status) || location === undefined) return { answer, url: current, redirects };
    const next = URL.parse(location, current)?.href;
    if (next === undefined) throw new NetError(`${current} redirects to ${JSON.stringify(location)}, which is not a URL`, null);
    if (visited.has(next) || redirects.length >= MAX_REDIRECTS) throw new NetError(`${url}: redirect loop (${current} → ${next})`, null);
    redirects.push(answer.status);
    current = next;
  }
}
