/**
 * Validated raw config → Plan: defaults, derived values, pre-rendered well-known bodies and the
 * ordered route list, one small pure function per part of the plan. Paths are resolved as strings
 * against `baseDir`; nothing is read. The warnings come from rules.ts.
 */
import * as path from 'node:path';
import type { JsonObject } from './bodies';
import { ACME_PRESETS, DEFAULTS } from './defaults';
import { blockedPrefixes, hostOf, httpPortOf, httpsPortsOf, issuerOf, proxiedPrefixes, sectionOf, servedNames, type Section } from './effective';
import type {
  AcmeCaPlan,
  AcmePlan,
  AlertsPlan,
  LimitsPlan,
  ListenerPlan,
  LogPlan,
  Plan,
  RoutePlan,
  TlsPlan,
  UpstreamPlan,
  WellKnownKind,
  WellKnownPlan,
} from './plan';
import { configWarnings, usableChallenges, type PathIssue } from './rules';
import type { HstsValue, RawConfig } from './sections';
import { formatHost } from './servername';
import { checkUpstreamUrl, type UpstreamValue } from './values';

export { DEFAULT_BLOCKED_PREFIXES, DEFAULT_PROXY_PREFIXES } from './defaults';
export { isLoopback } from './rules';

export interface ExpandContext {
  /** Absolute path of the config file. */
  readonly source: string;
  /** Directory relative paths resolve against (the config file's directory). */
  readonly baseDir: string;
}

export interface ExpandResult {
  readonly plan: Plan;
  readonly warnings: readonly PathIssue[];
}

export const UPSTREAM_NAME = 'homeserver';

type Resolve = (p: string) => string;

export function expandConfig(raw: RawConfig, ctx: ExpandContext): ExpandResult {
  const resolve: Resolve = (p) => path.resolve(ctx.baseDir, p);
  const names = namesPlan(raw);
  const upstream = upstreamOf(raw);
  const proxy = sectionOf(raw, 'proxy');
  const plan: Plan = {
    source: ctx.source,
    serverName: raw.server_name.text,
    hostname: names.hostname,
    names: names.names,
    listen: listenPlan(raw),
    upstreams: upstreamsPlan(raw, upstream),
    routes: routesPlan(raw),
    wellKnown: wellKnownPlan(raw, names.hostname),
    tls: tlsPlan(raw, resolve),
    acme: acmePlan(raw, resolve),
    storage: resolve(raw.storage ?? DEFAULTS.storage),
    limits: limitsPlan(raw),
    hsts: hstsHeader(raw.tls?.hsts),
    strictSniHost: raw.tls?.strict_sni_host ?? false,
    trustedProxies: proxy.trusted_proxies ?? [],
    drainTimeoutMs: proxy.drain_timeout ?? DEFAULTS.drainTimeoutMs,
    log: logPlan(raw),
    requestIdHeader: proxy.request_id_header === false ? null : (proxy.request_id_header ?? DEFAULTS.requestIdHeader).toLowerCase(),
    workers: raw.workers === undefined || raw.workers === 'auto' ? null : raw.workers,
    admin: adminPlan(raw),
    alerts: alertsPlan(raw, upstream.url, resolve),
  };
  return { plan, warnings: configWarnings(raw) };
}

// ---------------------------------------------------------------------------------------------
// Names and listeners

/** plan.hostname keeps URL form (IPv6 in brackets); plan.names holds bare lower-case hosts. */
function namesPlan(raw: RawConfig): { readonly hostname: string; readonly names: string[] } {
  const host = hostOf(raw);
  return { hostname: formatHost({ host: host.host.toLowerCase(), kind: host.kind }), names: servedNames(raw) };
}

function listenPlan(raw: RawConfig): Plan['listen'] {
  const addresses = raw.listen?.address ?? DEFAULTS.addresses;
  const http = httpPortOf(raw);
  return {
    https: httpsPortsOf(raw).map((port) => ({ port, addresses: [...addresses] })),
    http: http === null ? null : { port: http, addresses: [...addresses] },
  };
}

/** The port clients and servers are told about: 443 when served, else the first https port. */
function publicPortOf(raw: RawConfig): number {
  const https = httpsPortsOf(raw);
  return https.includes(443) ? 443 : https[0]!;
}

// ---------------------------------------------------------------------------------------------
// Upstreams, well-known, routes

function upstreamOf(raw: RawConfig): UpstreamValue {
  if (raw.upstream !== undefined) return raw.upstream;
  const parsed = checkUpstreamUrl(DEFAULTS.upstream);
  if (!parsed.ok) throw new Error(`bad built-in default upstream: ${parsed.error}`);
  return parsed.value;
}

function upstreamsPlan(raw: RawConfig, upstream: UpstreamValue): UpstreamPlan[] {
  const proxy = sectionOf(raw, 'proxy');
  return [
    {
      name: UPSTREAM_NAME,
      url: upstream.url,
      dial: upstream.dial,
      timeoutMs: proxy.upstream_timeout ?? DEFAULTS.upstreamTimeoutMs,
      connectTimeoutMs: proxy.connect_timeout ?? DEFAULTS.connectTimeoutMs,
      connections: proxy.connections ?? DEFAULTS.connections,
      queueTimeoutMs: proxy.queue_timeout ?? DEFAULTS.queueTimeoutMs,
    },
  ];
}

function wellKnownPlan(raw: RawConfig, hostname: string): WellKnownPlan {
  const wk = sectionOf(raw, 'well_known');
  const publicPort = publicPortOf(raw);
  const defaultBaseUrl = `https://${hostname}${publicPort === 443 ? '' : `:${publicPort}`}`;
  const client: JsonObject = {};
  const given = wk.client ?? {};
  if (!Object.hasOwn(given, 'm.homeserver')) client['m.homeserver'] = { base_url: defaultBaseUrl };
  for (const [key, value] of Object.entries(given)) {
    client[key] = key === 'm.homeserver' ? { base_url: defaultBaseUrl, ...(value as JsonObject) } : value;
  }
  const support = wk.support ?? null;
  return {
    server: JSON.stringify({ 'm.server': wk.server?.text ?? `${hostname}:${publicPort}` }),
    client: JSON.stringify(client),
    support: support === null ? null : JSON.stringify(support),
    maxAgeSeconds: (wk.max_age ?? DEFAULTS.maxAgeMs) / 1000,
  };
}

/** Well-known, blocks, proxies, fallback. First match wins. */
function routesPlan(raw: RawConfig): RoutePlan[] {
  const maxBodyBytes = raw.proxy?.max_body_size ?? DEFAULTS.maxBodyBytes;
  const wellKnown = (which: WellKnownKind): RoutePlan => ({
    id: `well-known:${which}`,
    hosts: null,
    match: { kind: 'exact', path: `/.well-known/matrix/${which}` },
    action: { type: 'well-known', which },
  });
  return [
    wellKnown('server'),
    wellKnown('client'),
    wellKnown('support'),
    ...blockedPrefixes(raw).map(
      (prefix): RoutePlan => ({
        id: `block:${prefix}`,
        hosts: null,
        match: { kind: 'prefix', prefix },
        action: { type: 'status', status: 404, errcode: 'M_NOT_FOUND', error: `${prefix} is not exposed on this server` },
      }),
    ),
    ...proxiedPrefixes(raw).map(
      (prefix): RoutePlan => ({
        id: `proxy:${prefix}`,
        hosts: null,
        match: { kind: 'prefix', prefix },
        action: { type: 'proxy', upstream: UPSTREAM_NAME, maxBodyBytes },
      }),
    ),
    {
      id: 'fallback',
      hosts: null,
      match: { kind: 'prefix', prefix: '/' },
      action: { type: 'status', status: 404, errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// TLS and ACME

function tlsPlan(raw: RawConfig, resolve: Resolve): TlsPlan {
  const tls = sectionOf(raw, 'tls');
  const issuer = issuerOf(raw);
  if (issuer === 'internal') return { issuer, leafLifetimeSeconds: (tls.internal_lifetime ?? DEFAULTS.internalLifetimeMs) / 1000 };
  if (issuer === 'files') {
    return {
      issuer,
      files: (tls.files ?? []).map((f) => ({ cert: resolve(f.cert), key: resolve(f.key) })),
      reloadIntervalSeconds: (tls.reload_interval ?? DEFAULTS.reloadIntervalMs) / 1000,
    };
  }
  return { issuer };
}

type CaSection = Partial<Pick<NonNullable<Section<'acme'>['fallback']>[number], 'email' | 'ca' | 'ca_roots' | 'eab' | 'profile'>>;

/** One CA entry → its plan; a fallback without an email uses the primary's. */
function caPlan(a: CaSection, primary: AcmeCaPlan | null, resolve: Resolve): AcmeCaPlan {
  return {
    email: a.email !== undefined ? a.email : (primary?.email ?? null),
    directory: a.ca ?? ACME_PRESETS[DEFAULTS.acmeCa]!,
    caRoots: (a.ca_roots ?? []).map(resolve),
    eab: a.eab === undefined ? null : { kid: a.eab.kid, hmacKey: a.eab.hmac_key },
    profile: a.profile ?? null,
  };
}

function acmePlan(raw: RawConfig, resolve: Resolve): AcmePlan | null {
  if (issuerOf(raw) !== 'acme') return null;
  const acme = sectionOf(raw, 'acme');
  const primary = caPlan(acme, null, resolve);
  return {
    ...primary,
    challenges: usableChallenges(raw).usable,
    keyType: acme.key_type ?? DEFAULTS.keyType,
    fallbacks: (acme.fallback ?? []).map((f) => caPlan(f, primary, resolve)),
  };
}

/** The Strict-Transport-Security header value (absent: the defaults; null: none). */
function hstsHeader(h: HstsValue | null | undefined): string | null {
  if (h === null) return null;
  const v = h ?? { maxAgeSeconds: DEFAULTS.hstsMaxAgeMs / 1000, includeSubdomains: false, preload: false };
  return `max-age=${v.maxAgeSeconds}${v.includeSubdomains ? '; includeSubDomains' : ''}${v.preload ? '; preload' : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Limits and operations

function limitsPlan(raw: RawConfig): LimitsPlan {
  const l = sectionOf(raw, 'limits');
  const p = sectionOf(raw, 'proxy');
  return {
    handshakeTimeoutMs: l.handshake_timeout ?? DEFAULTS.handshakeTimeoutMs,
    headerTimeoutMs: l.header_timeout ?? DEFAULTS.headerTimeoutMs,
    idleTimeoutMs: l.idle_timeout ?? DEFAULTS.idleTimeoutMs,
    maxHeaderBytes: l.max_header_size ?? DEFAULTS.maxHeaderBytes,
    maxConnections: l.max_connections ?? DEFAULTS.maxConnections,
    maxStreams: l.max_streams ?? DEFAULTS.maxStreams,
    bodyIdleTimeoutMs: p.body_idle_timeout ?? DEFAULTS.bodyIdleTimeoutMs,
    sendTimeoutMs: p.send_timeout ?? DEFAULTS.sendTimeoutMs,
    perConnection: p.max_requests_per_connection ?? DEFAULTS.perConnection,
    perAddress: p.max_requests_per_address ?? DEFAULTS.perAddress,
  };
}

function logPlan(raw: RawConfig): LogPlan {
  const log = sectionOf(raw, 'log');
  return { level: log.level ?? DEFAULTS.logLevel, format: log.format ?? 'auto', levels: log.levels ?? {} };
}

function adminPlan(raw: RawConfig): ListenerPlan | null {
  const listen = raw.admin?.listen === undefined ? DEFAULTS.admin : raw.admin.listen;
  return listen === null ? null : { port: listen.port, addresses: [listen.host] };
}

function alertsPlan(raw: RawConfig, upstreamUrl: string, resolve: Resolve): AlertsPlan | null {
  const a = raw.alerts;
  if (a == null) return null;
  const format = a.format ?? DEFAULTS.alertFormat;
  return {
    target:
      format === 'generic'
        ? { format, url: a.webhook! }
        : {
            format,
            homeserver: (a.homeserver ?? upstreamUrl).replace(/\/+$/, ''),
            roomId: a.room_id!,
            accessTokenFile: a.access_token_file === undefined ? null : resolve(a.access_token_file),
            accessToken: a.access_token ?? null,
          },
    afterFailures: a.after_failures ?? DEFAULTS.alertAfterFailures,
    daysLeft: [...(a.days_left ?? DEFAULTS.alertDaysLeft)].sort((x, y) => y - x),
  };
}
