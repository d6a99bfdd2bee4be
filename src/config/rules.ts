/**
 * The rules that relate keys of a map to each other, each an error with the keys it relates. They
 * run inside the schema, on the map that holds their keys, once that map's own values are valid
 * (so they never judge a value that is itself wrong). The warnings are still made in expand.ts.
 */
import { ACME_PRESETS, DAY, DEFAULTS, EAB_REQUIRED, type AlertFormat, type Issuer } from './defaults';
import type { IssueSink, PathSeg } from './leaves';
import type { ChallengeType } from './plan';

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

/** An error rule as a zod refinement of the map it belongs to (paths are relative to that map). */
export function enforce<T>(rule: Rule<T, 'error'>): (value: T, ctx: IssueSink) => void {
  return (value, ctx) => rule.check(value, (path, message) => ctx.addIssue({ code: 'custom', path: [...path], message }));
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

/** The keys the challenge rule reads. */
interface ChallengeKeys {
  readonly tls?: { readonly issuer?: Issuer | undefined } | null | undefined;
  readonly listen?: { readonly http?: number | null | undefined } | null | undefined;
  readonly acme?: { readonly challenges?: readonly ChallengeType[] | undefined } | null | undefined;
}

/** With issuer acme, http-01 alone needs the plain-HTTP listener. */
export const acmeChallengeUsable = error<ChallengeKeys>(['acme.challenges', 'listen.http'], (raw, report) => {
  const only = raw.acme?.challenges;
  const issuer = raw.tls?.issuer ?? DEFAULTS.issuer;
  if (issuer === 'acme' && raw.listen?.http === null && only !== undefined && only.every((c) => c === 'http-01')) {
    report(['acme', 'challenges'], 'http-01 is answered on the plain-HTTP listener, which listen.http: null disables; add tls-alpn-01 or enable listen.http');
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
