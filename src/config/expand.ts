/**
 * Validated raw config → Plan: defaults, derived values, pre-rendered well-known bodies and the
 * ordered route list. Pure: paths are resolved as strings against `baseDir`, nothing is read.
 */
import * as path from 'node:path';
import type { AcmeCaPlan, AcmePlan, AlertsPlan, LimitsPlan, ListenerPlan, Plan, RoutePlan, TlsPlan, WellKnownKind } from './plan';
import { ACME_PRESETS, CHALLENGE_TYPES, DEFAULTS, checkUpstreamUrl, type HstsValue, type JsonObject, type PathIssue, type RawConfig } from './schema';
import { formatHost, isIpLiteral, type ParsedHost } from './servername';
import { BlockList, isIPv6 } from 'node:net';

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

/** Prefixes answered 404 unless the very same prefix is listed in proxy.forward_prefixes. */
export const DEFAULT_BLOCKED_PREFIXES: readonly string[] = ['/_synapse/admin/', '/_dendrite/'];
/** Prefixes always forwarded to the homeserver. */
export const DEFAULT_PROXY_PREFIXES: readonly string[] = ['/_matrix/', '/_synapse/client/'];

export const UPSTREAM_NAME = 'homeserver';

type Section<K extends keyof RawConfig> = NonNullable<RawConfig[K]>;

/** Lower-case, bracket-free form of a host: how it appears in `plan.names`. */
function nameOf(host: ParsedHost): string {
  return host.host.toLowerCase();
}

type CaSection = Partial<Pick<Section<'acme'>, 'email' | 'ca' | 'ca_roots' | 'eab' | 'profile'>>;

/** One CA entry → its plan; a fallback without an email uses the primary's. */
function caPlan(a: CaSection, primary: AcmeCaPlan | null, resolve: (p: string) => string): AcmeCaPlan {
  return {
    email: a.email !== undefined ? a.email : (primary?.email ?? null),
    directory: a.ca ?? ACME_PRESETS[DEFAULTS.acmeCa]!,
    caRoots: (a.ca_roots ?? []).map(resolve),
    eab: a.eab === undefined ? null : { kid: a.eab.kid, hmacKey: a.eab.hmac_key },
    profile: a.profile ?? null,
  };
}

function defaultUpstream(): { url: string; dial: string } {
  const parsed = checkUpstreamUrl(DEFAULTS.upstream);
  if (!parsed.ok) throw new Error(`bad built-in default upstream: ${parsed.error}`);
  return parsed.value;
}

export function expandConfig(raw: RawConfig, ctx: ExpandContext): ExpandResult {
  const warnings: PathIssue[] = [];
  const resolve = (p: string): string => path.resolve(ctx.baseDir, p);

  // Names. plan.hostname keeps URL form (IPv6 in brackets); plan.names holds bare lower-case hosts.
  const host: ParsedHost = raw.hostname ?? { host: raw.server_name.host, kind: raw.server_name.kind };
  const hostname = formatHost({ host: nameOf(host), kind: host.kind });
  const names = [nameOf(host)];
  const serverHost = raw.server_name.host.toLowerCase();
  if (!names.includes(serverHost)) names.push(serverHost);

  // Listeners.
  const listen: Partial<Section<'listen'>> = raw.listen ?? {};
  const httpsPorts = listen.https ?? DEFAULTS.https;
  const addresses = listen.address ?? DEFAULTS.addresses;
  const httpPort = listen.http === undefined ? DEFAULTS.http : listen.http;
  const https: ListenerPlan[] = httpsPorts.map((port) => ({ port, addresses: [...addresses] }));
  const http: ListenerPlan | null = httpPort === null ? null : { port: httpPort, addresses: [...addresses] };
  /** The port clients and servers are told about: 443 when served, else the first https port. */
  const publicPort = httpsPorts.includes(443) ? 443 : httpsPorts[0]!;

  // Upstream.
  const upstream = raw.upstream ?? defaultUpstream();
  const proxy: Partial<Section<'proxy'>> = raw.proxy ?? {};
  const maxBodyBytes = proxy.max_body_size ?? DEFAULTS.maxBodyBytes;

  // Well-known.
  const wk: Partial<Section<'well_known'>> = raw.well_known ?? {};
  const mServer = wk.server?.text ?? `${hostname}:${publicPort}`;
  if (wk.server !== undefined) {
    if (wk.server.port === undefined) {
      warnings.push({
        path: ['well_known', 'server'],
        message: `m.server has no port: peers will look up SRV _matrix-fed._tcp.${formatHost(wk.server)} and then use port 8448`,
      });
    } else if (names.includes(wk.server.host.toLowerCase()) && !httpsPorts.includes(wk.server.port)) {
      warnings.push({
        path: ['well_known', 'server'],
        message: `m.server sends peers to port ${wk.server.port} of a name served here, but listen.https is [${httpsPorts.join(', ')}]`,
      });
    }
  }
  const defaultBaseUrl = `https://${hostname}${publicPort === 443 ? '' : `:${publicPort}`}`;
  const client: JsonObject = {};
  const given = wk.client ?? {};
  if (!Object.hasOwn(given, 'm.homeserver')) client['m.homeserver'] = { base_url: defaultBaseUrl };
  for (const [key, value] of Object.entries(given)) {
    client[key] = key === 'm.homeserver' ? { base_url: defaultBaseUrl, ...(value as JsonObject) } : value;
  }
  const support = wk.support ?? null;

  // Routes: well-known, blocks, proxies, fallback. First match wins.
  const forward = proxy.forward_prefixes ?? [];
  const extraBlocks = proxy.block_prefixes ?? [];
  const blocks = DEFAULT_BLOCKED_PREFIXES.filter((p) => !forward.includes(p));
  extraBlocks.forEach((prefix, i) => {
    if (blocks.includes(prefix)) {
      warnings.push({ path: ['proxy', 'block_prefixes', i], message: `'${prefix}' is blocked by default; this entry changes nothing` });
    } else blocks.push(prefix);
  });
  const proxied = [...DEFAULT_PROXY_PREFIXES];
  forward.forEach((prefix, i) => {
    const blocker = blocks.find((b) => prefix.startsWith(b));
    if (blocker !== undefined) {
      warnings.push({
        path: ['proxy', 'forward_prefixes', i],
        message: `'${prefix}' lies under the blocked prefix '${blocker}' and will never be forwarded; forward '${blocker}' itself to expose it`,
      });
    }
    if (proxied.includes(prefix)) {
      warnings.push({ path: ['proxy', 'forward_prefixes', i], message: `'${prefix}' is forwarded by default; this entry changes nothing` });
    } else proxied.push(prefix);
  });

  const wellKnownRoute = (which: WellKnownKind): RoutePlan => ({
    id: `well-known:${which}`,
    hosts: null,
    match: { kind: 'exact', path: `/.well-known/matrix/${which}` },
    action: { type: 'well-known', which },
  });
  const routes: RoutePlan[] = [
    wellKnownRoute('server'),
    wellKnownRoute('client'),
    wellKnownRoute('support'),
    ...blocks.map(
      (prefix): RoutePlan => ({
        id: `block:${prefix}`,
        hosts: null,
        match: { kind: 'prefix', prefix },
        action: { type: 'status', status: 404, errcode: 'M_NOT_FOUND', error: `${prefix} is not exposed on this server` },
      }),
    ),
    ...proxied.map(
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

  // TLS and ACME.
  const tlsRaw: Partial<Section<'tls'>> = raw.tls ?? {};
  const issuer = tlsRaw.issuer ?? DEFAULTS.issuer;
  let tls: TlsPlan;
  if (issuer === 'internal') {
    tls = { issuer, leafLifetimeSeconds: (tlsRaw.internal_lifetime ?? DEFAULTS.internalLifetimeMs) / 1000 };
  } else if (issuer === 'files') {
    tls = {
      issuer,
      files: (tlsRaw.files ?? []).map((f) => ({ cert: resolve(f.cert), key: resolve(f.key) })),
      reloadIntervalSeconds: (tlsRaw.reload_interval ?? DEFAULTS.reloadIntervalMs) / 1000,
    };
  } else {
    tls = { issuer };
  }
  if (tlsRaw.reload_interval !== undefined && issuer !== 'files') {
    warnings.push({ path: ['tls', 'reload_interval'], at: 'key', message: `ignored: only used when tls.issuer is files (it is ${issuer})` });
  }
  if (tlsRaw.internal_lifetime !== undefined && issuer !== 'internal') {
    warnings.push({ path: ['tls', 'internal_lifetime'], at: 'key', message: `ignored: only used when tls.issuer is internal (it is ${issuer})` });
  }

  let acme: AcmePlan | null = null;
  if (issuer === 'acme') {
    const a: Partial<Section<'acme'>> = raw.acme ?? {};
    const primary = caPlan(a, null, resolve);
    let challenges = a.challenges ?? [...CHALLENGE_TYPES];
    if (http === null && challenges.includes('http-01')) {
      // http-01 as the only challenge with no plain-HTTP listener is a schema error.
      if (a.challenges !== undefined) {
        warnings.push({ path: ['acme', 'challenges'], message: 'http-01 is skipped: listen.http is null; tls-alpn-01 alone is used' });
      }
      challenges = challenges.filter((c) => c !== 'http-01');
    }
    acme = {
      ...primary,
      challenges,
      keyType: a.key_type ?? DEFAULTS.keyType,
      fallbacks: (a.fallback ?? []).map((f) => caPlan(f, primary, resolve)),
    };
    const local = names.filter((n) => n === 'localhost' || n.endsWith('.localhost') || isIpLiteral(n));
    if (local.length > 0) {
      warnings.push({
        path: raw.hostname !== undefined ? ['hostname'] : ['server_name'],
        message: `public ACME CAs do not issue certificates for ${local.join(', ')}; use tls.issuer: internal for local development`,
      });
    }
  } else if (raw.acme !== undefined) {
    warnings.push({ path: ['acme'], at: 'key', message: `ignored: the acme section is only used when tls.issuer is acme (it is ${issuer})` });
  }

  const admin = adminPlan(raw, warnings);
  const alerts = alertsPlan(raw, upstream.url, resolve, warnings);

  const plan: Plan = {
    source: ctx.source,
    serverName: raw.server_name.text,
    hostname,
    names,
    listen: { https, http },
    upstreams: [
      {
        name: UPSTREAM_NAME,
        url: upstream.url,
        dial: upstream.dial,
        timeoutMs: proxy.upstream_timeout ?? DEFAULTS.upstreamTimeoutMs,
        connectTimeoutMs: proxy.connect_timeout ?? DEFAULTS.connectTimeoutMs,
        connections: proxy.connections ?? DEFAULTS.connections,
        queueTimeoutMs: proxy.queue_timeout ?? DEFAULTS.queueTimeoutMs,
      },
    ],
    routes,
    wellKnown: {
      server: JSON.stringify({ 'm.server': mServer }),
      client: JSON.stringify(client),
      support: support === null ? null : JSON.stringify(support),
      maxAgeSeconds: (wk.max_age ?? DEFAULTS.maxAgeMs) / 1000,
    },
    tls,
    acme,
    storage: resolve(raw.storage ?? DEFAULTS.storage),
    limits: limitsPlan(raw),
    hsts: hstsValue(tlsRaw.hsts),
    strictSniHost: tlsRaw.strict_sni_host ?? false,
    trustedProxies: proxy.trusted_proxies ?? [],
    drainTimeoutMs: proxy.drain_timeout ?? DEFAULTS.drainTimeoutMs,
    log: { level: raw.log?.level ?? DEFAULTS.logLevel, format: raw.log?.format ?? 'json', levels: raw.log?.levels ?? {} },
    requestIdHeader: proxy.request_id_header === false ? null : (proxy.request_id_header ?? DEFAULTS.requestIdHeader).toLowerCase(),
    workers: raw.workers === undefined || raw.workers === 'auto' ? null : raw.workers,
    admin,
    alerts,
  };
  return { plan, warnings };
}

function limitsPlan(raw: RawConfig): LimitsPlan {
  const l: Partial<Section<'limits'>> = raw.limits ?? {};
  const p: Partial<Section<'proxy'>> = raw.proxy ?? {};
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

/** The Strict-Transport-Security header value (absent: the defaults; null: none). */
function hstsValue(h: HstsValue | null | undefined): string | null {
  if (h === null) return null;
  const v = h ?? { maxAgeSeconds: DEFAULTS.hstsMaxAgeMs / 1000, includeSubdomains: false, preload: false };
  return `max-age=${v.maxAgeSeconds}${v.includeSubdomains ? '; includeSubDomains' : ''}${v.preload ? '; preload' : ''}`;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** 127.0.0.0/8, ::1 and the IPv4-mapped 127.x addresses. */
export function isLoopback(address: string): boolean {
  return LOOPBACK.check(address, isIPv6(address) ? 'ipv6' : 'ipv4');
}

function adminPlan(raw: RawConfig, warnings: PathIssue[]): ListenerPlan | null {
  const listen = raw.admin?.listen === undefined ? DEFAULTS.admin : raw.admin.listen;
  if (listen === null) return null;
  if (!isLoopback(listen.host)) {
    warnings.push({
      path: ['admin', 'listen'],
      message: `${listen.host} is not a loopback address: /metrics, /healthz and /readyz are public to anyone who can reach port ${listen.port}; bind 127.0.0.1 or firewall the port`,
    });
  }
  return { port: listen.port, addresses: [listen.host] };
}

function alertsPlan(raw: RawConfig, upstreamUrl: string, resolve: (p: string) => string, warnings: PathIssue[]): AlertsPlan | null {
  const a = raw.alerts;
  if (a == null) return null;
  const format = a.format ?? DEFAULTS.alertFormat;
  if (a.access_token !== undefined) {
    warnings.push({
      path: ['alerts', 'access_token'],
      message: 'the access token is written in the config; prefer access_token_file (a file only this service can read) so the secret stays out of the YAML',
    });
  }
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
