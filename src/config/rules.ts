/**
 * Every rule that relates keys to each other (or a key to a built-in default), each with its
 * severity, in one place.
 *
 * - An error rejects the config. Error rules run inside the schema, on the map that holds their
 *   keys, once that map's own values are valid (so they never judge a value that is itself wrong).
 * - A warning is reported with a valid config: the setting works, but not as the admin may think.
 *
 * One decision is made here rather than in two places: which ACME challenges can be used. http-01
 * is answered on the plain-HTTP listener, so `listen.http: null` drops it (`usableChallenges`): a
 * warning when another challenge remains, an error when none does, and the plan uses the same list.
 *
 * A setting for another mode is a warning when it only tunes that mode (tls.reload_interval,
 * tls.internal_lifetime, the acme section: "ignored") and an error when it names things the admin
 * expects to be used (tls.files with another issuer, a webhook with format matrix): silently
 * serving other certificates, or alerting nowhere, is worse than refusing to start.
 */
import { BlockList, isIPv6 } from 'node:net';
import {
  ACME_PRESETS,
  CHALLENGE_TYPES,
  DAY,
  DEFAULTS,
  DEFAULT_BLOCKED_PREFIXES,
  DEFAULT_PROXY_PREFIXES,
  EAB_REQUIRED,
  type AlertFormat,
  type Issuer,
} from './defaults';
import { blockedPrefixes, httpPortOf, httpsPortsOf, issuerOf, servedNames } from './effective';
import type { IssueSink, PathSeg } from './leaves';
import type { ChallengeType } from './plan';
import type { RawConfig } from './sections';
import { formatHost, isIpLiteral } from './servername';

export type Severity = 'error' | 'warning';

/** A problem tied to a place in the document by its key path; load.ts turns it into a ConfigIssue. */
export interface PathIssue {
  readonly path: readonly PathSeg[];
  readonly message: string;
  /** Point at the key of the last path segment rather than at its value (unknown keys). */
  readonly at?: 'key';
}

type Report = (path: readonly PathSeg[], message: string, at?: 'key') => void;

export interface Rule<T, S extends Severity = Severity> {
  readonly severity: S;
  /** The keys the rule relates, as written in the config. */
  readonly keys: readonly string[];
  readonly check: (value: T, report: Report) => void;
}

function error<T>(keys: readonly string[], check: (value: T, report: Report) => void): Rule<T, 'error'> {
  return { severity: 'error', keys, check };
}

function warning(keys: readonly string[], check: (raw: RawConfig, report: Report) => void): Rule<RawConfig, 'warning'> {
  return { severity: 'warning', keys, check };
}

/** An error rule as a zod refinement of the map it belongs to (paths are relative to that map). */
export function enforce<T>(rule: Rule<T, 'error'>): (value: T, ctx: IssueSink) => void {
  return (value, ctx) => rule.check(value, (path, message) => ctx.addIssue({ code: 'custom', path: [...path], message }));
}

// ---------------------------------------------------------------------------------------------
// ACME challenges: decided once

/** The keys the challenge decision reads. */
interface ChallengeKeys {
  readonly tls?: { readonly issuer?: Issuer | undefined } | null | undefined;
  readonly listen?: { readonly http?: number | null | undefined } | null | undefined;
  readonly acme?: { readonly challenges?: readonly ChallengeType[] | undefined } | null | undefined;
}

/** The challenges ACME uses (given, else all), without http-01 when there is no plain-HTTP listener. */
export function usableChallenges(raw: ChallengeKeys): { readonly usable: ChallengeType[]; readonly skipped: boolean } {
  const given = raw.acme?.challenges ?? [...CHALLENGE_TYPES];
  if (httpPortOf(raw) !== null || !given.includes('http-01')) return { usable: [...given], skipped: false };
  return { usable: given.filter((c) => c !== 'http-01'), skipped: true };
}

// ---------------------------------------------------------------------------------------------
// Errors, by the map that holds their keys

interface ListenValue {
  readonly https?: readonly number[] | undefined;
  readonly http?: number | null | undefined;
}

export const httpPortNotHttps = error<ListenValue>(['listen.http', 'listen.https'], (listen, report) => {
  const https = listen.https ?? DEFAULTS.https;
  if (listen.http != null && https.includes(listen.http)) {
    report(['http'], `port ${listen.http} is also an https port; choose another port for plain HTTP, or null to disable it`);
  }
});

interface TlsValue {
  readonly issuer?: Issuer | undefined;
  readonly files?: readonly unknown[] | null | undefined;
}

export const filesWithIssuerFiles = error<TlsValue>(['tls.files', 'tls.issuer'], (tls, report) => {
  const issuer = tls.issuer ?? DEFAULTS.issuer;
  if (issuer === 'files') {
    if (tls.files == null || tls.files.length === 0) {
      report(['files'], 'required when tls.issuer is files: list at least one - { cert: /path/fullchain.pem, key: /path/privkey.pem }');
    }
  } else if (tls.files != null) {
    report(['files'], `only used when tls.issuer is files (it is ${issuer} here); remove tls.files or set tls.issuer: files`);
  }
});

interface HstsMap {
  readonly max_age?: number | undefined;
  readonly include_subdomains?: boolean | undefined;
  readonly preload?: boolean | undefined;
}

export const hstsPreload = error<HstsMap>(['tls.hsts.preload', 'tls.hsts.include_subdomains', 'tls.hsts.max_age'], (hsts, report) => {
  const maxAgeMs = hsts.max_age ?? DEFAULTS.hstsMaxAgeMs;
  if (hsts.preload === true && (hsts.include_subdomains !== true || maxAgeMs < 365 * DAY)) {
    report(['preload'], 'preload lists only accept include_subdomains: true with a max_age of at least 365d; set both, or drop preload');
  }
});

interface CaValue {
  readonly ca?: string | undefined;
  readonly eab?: unknown;
}

/** A CA that requires External Account Binding needs `eab` (`where`: how the message names its map). */
function eabRequired(map: string, where: string): Rule<CaValue, 'error'> {
  return error<CaValue>([`${map}.ca`, `${map}.eab`], (ca, report) => {
    const needs = EAB_REQUIRED[ca.ca ?? ACME_PRESETS[DEFAULTS.acmeCa]!];
    if (needs !== undefined && ca.eab === undefined) {
      const [name, how] = [needs.split(' (')[0], needs.slice(needs.indexOf('(') + 1, -1)];
      report(['ca'], `${name} requires External Account Binding: add ${where}eab: { kid: ..., hmac_key: ... }; ${how}`);
    }
  });
}

export const eabForPrimary = eabRequired('acme', 'acme.');
export const eabForFallback = eabRequired('acme.fallback[]', '');

interface ProxyValue {
  readonly forward_prefixes?: readonly string[] | undefined;
  readonly block_prefixes?: readonly string[] | undefined;
}

export const forwardOrBlock = error<ProxyValue>(['proxy.forward_prefixes', 'proxy.block_prefixes'], (proxy, report) => {
  const forward = proxy.forward_prefixes ?? [];
  (proxy.block_prefixes ?? []).forEach((prefix, i) => {
    if (forward.includes(prefix)) {
      report(['block_prefixes', i], `'${prefix}' is also in forward_prefixes; a prefix is either forwarded or blocked, not both`);
    }
  });
});

/** Keys that belong to one alert format only, with the format they belong to. */
const ALERT_KEYS_BY_FORMAT: Readonly<Record<string, AlertFormat>> = {
  webhook: 'generic',
  homeserver: 'matrix',
  room_id: 'matrix',
  access_token: 'matrix',
  access_token_file: 'matrix',
};

type AlertsValue = { readonly format?: AlertFormat | undefined } & { readonly [key: string]: unknown };

export const alertKeysOfFormat = error<AlertsValue>(['alerts.format', ...Object.keys(ALERT_KEYS_BY_FORMAT).map((k) => `alerts.${k}`)], (alerts, report) => {
  const format = alerts.format ?? DEFAULTS.alertFormat;
  for (const [key, owner] of Object.entries(ALERT_KEYS_BY_FORMAT)) {
    if (owner !== format && alerts[key] !== undefined) report([key], `only used with alerts.format: ${owner} (it is ${format} here)`);
  }
});

export const alertTarget = error<AlertsValue>(['alerts.format', 'alerts.webhook', 'alerts.room_id', 'alerts.access_token', 'alerts.access_token_file'], (alerts, report) => {
  const format = alerts.format ?? DEFAULTS.alertFormat;
  if (format === 'generic' && alerts['webhook'] === undefined) {
    report(['webhook'], 'required: the http(s) URL alerts are POSTed to as JSON (or set format: matrix to post to a Matrix room)');
  }
  if (format !== 'matrix') return;
  if (alerts['room_id'] === undefined) report(['room_id'], 'required with format matrix: the room alerts are posted to, like "!abcdef:example.com"');
  const [inline, file] = [alerts['access_token'] !== undefined, alerts['access_token_file'] !== undefined];
  if (inline && file) report(['access_token'], 'give access_token_file or access_token, not both');
  else if (!inline && !file) {
    report(['access_token_file'], 'required with format matrix: a file holding the access token of the account that posts (or access_token inline)');
  }
});

/** `well_known.support`: contacts, support_page or both; a contacts list needs an entry unless there is a page. Looks at keys only. */
export const supportReachable = error<Record<string, unknown>>(
  ['well_known.support.contacts', 'well_known.support.support_page'],
  (support, report) => {
    const [hasContacts, hasPage] = ['contacts' in support, 'support_page' in support];
    if (!hasContacts && !hasPage) report([], 'give contacts, support_page or both (or null to answer 404)');
    const contacts = support['contacts'];
    if (Array.isArray(contacts) && contacts.length === 0 && !hasPage) report(['contacts'], 'list at least one contact');
  },
);

/** Each support contact: matrix_id, email_address or both. Looks at keys only. */
export const contactReachable = error<Record<string, unknown>>(
  ['well_known.support.contacts[].matrix_id', 'well_known.support.contacts[].email_address'],
  (contact, report) => {
    if (contact['matrix_id'] === undefined && contact['email_address'] === undefined) {
      report([], 'each contact needs matrix_id, email_address or both');
    }
  },
);

/** The refinements of the support body and of each contact (bodies.ts runs them even when a value there is invalid). */
export const checkSupport = enforce(supportReachable);
export const checkContact = enforce(contactReachable);

/** With issuer acme, at least one challenge must be usable (see usableChallenges). */
export const acmeChallengeUsable = error<ChallengeKeys>(['acme.challenges', 'listen.http'], (raw, report) => {
  if (issuerOf(raw) === 'acme' && usableChallenges(raw).usable.length === 0) {
    report(['acme', 'challenges'], 'http-01 is answered on the plain-HTTP listener, which listen.http: null disables; add tls-alpn-01 or enable listen.http');
  }
});

// ---------------------------------------------------------------------------------------------
// Warnings, on the whole validated config, in the order they are reported

export const mServerPort = warning(['well_known.server', 'listen.https'], (raw, report) => {
  const server = raw.well_known?.server;
  if (server === undefined) return;
  if (server.port === undefined) {
    report(['well_known', 'server'], `m.server has no port: peers will look up SRV _matrix-fed._tcp.${formatHost(server)} and then use port 8448`);
  } else if (servedNames(raw).includes(server.host.toLowerCase()) && !httpsPortsOf(raw).includes(server.port)) {
    report(['well_known', 'server'], `m.server sends peers to port ${server.port} of a name served here, but listen.https is [${httpsPortsOf(raw).join(', ')}]`);
  }
});

export const blockedByDefault = warning(['proxy.block_prefixes'], (raw, report) => {
  const forward = raw.proxy?.forward_prefixes ?? [];
  (raw.proxy?.block_prefixes ?? []).forEach((prefix, i) => {
    if (DEFAULT_BLOCKED_PREFIXES.includes(prefix) && !forward.includes(prefix)) report(['proxy', 'block_prefixes', i], `'${prefix}' is blocked by default; this entry changes nothing`);
  });
});

export const forwardedPrefixReach = warning(['proxy.forward_prefixes', 'proxy.block_prefixes'], (raw, report) => {
  const blocks = blockedPrefixes(raw);
  (raw.proxy?.forward_prefixes ?? []).forEach((prefix, i) => {
    const blocker = blocks.find((b) => prefix.startsWith(b));
    if (blocker !== undefined) {
      report(
        ['proxy', 'forward_prefixes', i],
        `'${prefix}' lies under the blocked prefix '${blocker}' and will never be forwarded; forward '${blocker}' itself to expose it`,
      );
    }
    if (DEFAULT_PROXY_PREFIXES.includes(prefix)) report(['proxy', 'forward_prefixes', i], `'${prefix}' is forwarded by default; this entry changes nothing`);
  });
});

export const issuerSettings = warning(['tls.issuer', 'tls.reload_interval', 'tls.internal_lifetime'], (raw, report) => {
  const issuer = issuerOf(raw);
  if (raw.tls?.reload_interval !== undefined && issuer !== 'files') {
    report(['tls', 'reload_interval'], `ignored: only used when tls.issuer is files (it is ${issuer})`, 'key');
  }
  if (raw.tls?.internal_lifetime !== undefined && issuer !== 'internal') {
    report(['tls', 'internal_lifetime'], `ignored: only used when tls.issuer is internal (it is ${issuer})`, 'key');
  }
});

export const http01Skipped = warning(['acme.challenges', 'listen.http'], (raw, report) => {
  if (issuerOf(raw) === 'acme' && raw.acme?.challenges !== undefined && usableChallenges(raw).skipped) {
    report(['acme', 'challenges'], 'http-01 is skipped: listen.http is null; tls-alpn-01 alone is used');
  }
});

export const acmeForIssuer = warning(['acme', 'tls.issuer', 'hostname', 'server_name'], (raw, report) => {
  const issuer = issuerOf(raw);
  if (issuer !== 'acme') {
    if (raw.acme !== undefined) report(['acme'], `ignored: the acme section is only used when tls.issuer is acme (it is ${issuer})`, 'key');
    return;
  }
  const local = servedNames(raw).filter((n) => n === 'localhost' || n.endsWith('.localhost') || isIpLiteral(n));
  if (local.length > 0) {
    report(
      raw.hostname !== undefined ? ['hostname'] : ['server_name'],
      `public ACME CAs do not issue certificates for ${local.join(', ')}; use tls.issuer: internal for local development`,
    );
  }
});

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** 127.0.0.0/8, ::1 and the IPv4-mapped 127.x addresses. */
export function isLoopback(address: string): boolean {
  return LOOPBACK.check(address, isIPv6(address) ? 'ipv6' : 'ipv4');
}

export const adminPublic = warning(['admin.listen'], (raw, report) => {
  const listen = raw.admin?.listen === undefined ? DEFAULTS.admin : raw.admin.listen;
  if (listen !== null && !isLoopback(listen.host)) {
    report(
      ['admin', 'listen'],
      `${listen.host} is not a loopback address: /metrics, /healthz and /readyz are public to anyone who can reach port ${listen.port}; bind 127.0.0.1 or firewall the port`,
    );
  }
});

export const alertTokenInline = warning(['alerts.access_token'], (raw, report) => {
  if (raw.alerts?.access_token !== undefined) {
    report(
      ['alerts', 'access_token'],
      'the access token is written in the config; prefer access_token_file (a file only this service can read) so the secret stays out of the YAML',
    );
  }
});

/** Every error rule, for the record (each is attached to its map in sections.ts or bodies.ts). */
export const ERRORS: readonly Rule<never, 'error'>[] = [
  httpPortNotHttps,
  filesWithIssuerFiles,
  hstsPreload,
  eabForPrimary,
  eabForFallback,
  forwardOrBlock,
  alertKeysOfFormat,
  alertTarget,
  supportReachable,
  contactReachable,
  acmeChallengeUsable,
];

export const WARNINGS: readonly Rule<RawConfig, 'warning'>[] = [
  mServerPort,
  blockedByDefault,
  forwardedPrefixReach,
  issuerSettings,
  http01Skipped,
  acmeForIssuer,
  adminPublic,
  alertTokenInline,
];

/** Every warning of a validated config, in rule order. */
export function configWarnings(raw: RawConfig): PathIssue[] {
  const out: PathIssue[] = [];
  for (const rule of WARNINGS) rule.check(raw, (path, message, at) => out.push(at === undefined ? { path, message } : { path, message, at }));
  return out;
}
