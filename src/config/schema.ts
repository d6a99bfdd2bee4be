/**
 * The schema of the raw YAML document (after `toJS()`), as zod schemas with typed output.
 *
 * Structure (maps, unknown keys) is zod's; every leaf value is checked by a small hand-written
 * function so each error is a sentence that says what is allowed. Leaves parse as they check
 * (sizes to bytes, durations to ms, server names to parts); a key that is absent comes out as
 * `undefined` and `expand.ts` applies the defaults in `DEFAULTS`.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseHostname, parseServerName, isMatrixUserId, type ParsedHost, type ParsedServerName } from './servername';
import type { ChallengeType, KeyType } from './plan';
import { formatDuration, formatSize, parseDuration, parseSize, show, type Parsed } from './units';

export type PathSeg = string | number;

/** A problem tied to a place in the document by its key path; load.ts turns it into a ConfigIssue. */
export interface PathIssue {
  readonly path: readonly PathSeg[];
  readonly message: string;
  /** Point at the key of the last path segment rather than at its value (unknown keys). */
  readonly at?: 'key';
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export type Issuer = 'acme' | 'internal' | 'files';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
export type AlertFormat = 'generic' | 'matrix';

export const ISSUERS: readonly Issuer[] = ['acme', 'internal', 'files'];
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
export const ALERT_FORMATS: readonly AlertFormat[] = ['generic', 'matrix'];

/** ACME directory presets accepted by `acme.ca`. */
export const ACME_PRESETS: Readonly<Record<string, string>> = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
  zerossl: 'https://acme.zerossl.com/v2/DV90',
  google: 'https://dv.acme-v02.api.pki.goog/directory',
  buypass: 'https://api.buypass.com/acme/directory',
};

/** Defaults for every optional key (durations in ms, sizes in bytes). */
export const DEFAULTS = {
  https: [443, 8448] as readonly number[],
  http: 80 as number | null,
  addresses: ['0.0.0.0', '::'] as readonly string[],
  upstream: 'http://localhost:8008',
  maxAgeMs: 3_600_000,
  issuer: 'acme' as Issuer,
  reloadIntervalMs: 60_000,
  internalLifetimeMs: 7 * 86_400_000,
  acmeCa: 'letsencrypt',
  keyType: 'p256' as KeyType,
  storage: './certs',
  maxBodyBytes: 50 * 1024 * 1024,
  upstreamTimeoutMs: 330_000,
  connectTimeoutMs: 10_000,
  connections: 4096,
  queueTimeoutMs: 10_000,
  bodyIdleTimeoutMs: 60_000,
  sendTimeoutMs: 60_000,
  perConnection: 100,
  perAddress: 512,
  handshakeTimeoutMs: 10_000,
  headerTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  maxHeaderBytes: 32 * 1024,
  maxConnections: 10_000,
  maxStreams: 128,
  hstsMaxAgeMs: 365 * 86_400_000,
  drainTimeoutMs: 10_000,
  logLevel: 'info' as LogLevel,
  requestIdHeader: 'X-Request-Id',
  admin: { host: '127.0.0.1', port: 9090 } as AdminListenValue,
  alertFormat: 'generic' as AlertFormat,
  alertAfterFailures: 3,
  alertDaysLeft: [14, 7, 2] as readonly number[],
};

const DAY = 86_400_000;
/** Longest delay a Node timer can hold is 2^31-1 ms (≈24.8 days). */
const TIMER_MAX = 24 * DAY;

// ---------------------------------------------------------------------------------------------
// Leaves: a check function wrapped into a zod schema

type Report = (message: string, path?: readonly PathSeg[]) => void;

const INVALID: unique symbol = Symbol('invalid');
type Invalid = typeof INVALID;

function leaf<T>(check: (value: unknown, report: Report) => T | Invalid) {
  return z.unknown().transform((value, ctx): T => {
    let reported = false;
    const out = check(value, (message, path = []) => {
      reported = true;
      ctx.addIssue({ code: 'custom', message, path: [...path] });
    });
    if (out === INVALID || reported) {
      if (!reported) ctx.addIssue({ code: 'custom', message: `invalid value ${show(value)}` });
      return z.NEVER;
    }
    return out;
  });
}

/** A leaf for an optional key: absent stays undefined (expand.ts applies the default). */
function optional<T>(check: (value: unknown, report: Report) => T | Invalid) {
  return leaf(check).optional();
}

function take<T>(parsed: Parsed<T>, report: Report, path?: readonly PathSeg[]): T | Invalid {
  if (parsed.ok) return parsed.value;
  report(parsed.error, path);
  return INVALID;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkPort(value: unknown): Parsed<number> {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 1 && value <= 65535) return { ok: true, value };
    return { ok: false, error: `${value} is not a port (1–65535)` };
  }
  return { ok: false, error: `expected a port number (1–65535); got ${show(value)}` };
}

function isHttpUrl(text: string): boolean {
  if (!/^https?:\/\//i.test(text) || !URL.canParse(text)) return false;
  const u = new URL(text);
  return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
}

/** Reject values JSON cannot carry (NaN, Infinity, binary...) anywhere inside `value`. */
function checkJson(value: unknown, path: readonly PathSeg[], report: Report): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) report(`${show(value)} cannot be written in JSON; use a finite number or a string`, path);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkJson(item, [...path, i], report));
    return;
  }
  if (isMap(value) && (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)) {
    for (const [k, v] of Object.entries(value)) checkJson(v, [...path, k], report);
    return;
  }
  report(`${show(value)} cannot be written in JSON`, path);
}

function oneOf<T extends string>(allowed: readonly T[]) {
  return optional((value, report): T | undefined | Invalid => {
    if (value === undefined) return undefined;
    if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
    report(`expected one of ${allowed.join(', ')}; got ${show(value)}`);
    return INVALID;
  });
}

interface DurationRule {
  readonly min: number;
  readonly max: number;
  readonly wholeSeconds?: boolean;
}

function duration(rule: DurationRule) {
  return optional((value, report): number | undefined | Invalid => {
    if (value === undefined) return undefined;
    const ms = take(parseDuration(value), report);
    if (ms === INVALID) return INVALID;
    if (ms < rule.min) return (report(`must be at least ${formatDuration(rule.min)}; got ${show(value)}`), INVALID);
    if (ms > rule.max) return (report(`must be at most ${formatDuration(rule.max)}; got ${show(value)}`), INVALID);
    if (rule.wholeSeconds && ms % 1000 !== 0) {
      return (report(`must be whole seconds; got ${show(value)}`), INVALID);
    }
    return ms;
  });
}

function pathString(value: unknown, what: string): Parsed<string> {
  if (typeof value !== 'string' || value.trim() === '') {
    return { ok: false, error: `expected the path of ${what}; got ${show(value)}` };
  }
  if (value.includes('\0')) return { ok: false, error: `a path cannot contain a NUL character` };
  return { ok: true, value };
}

function optionalPath(what: string) {
  return optional((value, report): string | undefined | Invalid =>
    value === undefined ? undefined : take(pathString(value, what), report),
  );
}

function requiredPath(what: string) {
  return leaf((value, report): string | Invalid => {
    if (value === undefined) return (report(`missing; give the path of ${what}`), INVALID);
    return take(pathString(value, what), report);
  });
}

function checkPrefix(value: unknown): Parsed<string> {
  if (typeof value !== 'string') return { ok: false, error: `expected a path prefix like /_synapse/admin/; got ${show(value)}` };
  if (!value.startsWith('/')) return { ok: false, error: `a path prefix must start with '/'; got ${show(value)}` };
  if (/[?#\s]/.test(value)) {
    return { ok: false, error: `a path prefix cannot contain '?', '#' or whitespace; got ${show(value)}` };
  }
  if (value.split('/').some((seg) => seg === '.' || seg === '..')) {
    return { ok: false, error: `a path prefix cannot contain '.' or '..' segments; got ${show(value)}` };
  }
  return { ok: true, value };
}

/** A list of items checked one by one; duplicates are errors. `single` accepts a lone item as a list of one. */
function listOf<T>(opts: {
  readonly what: string;
  readonly item: (value: unknown) => Parsed<T>;
  readonly nonEmpty?: boolean;
  readonly single?: boolean;
}) {
  return optional((value, report): T[] | undefined | Invalid => {
    if (value === undefined) return undefined;
    let items: unknown[];
    if (Array.isArray(value)) items = value;
    else if (opts.single && value !== null && !isMap(value)) items = [value];
    else return (report(`expected a list of ${opts.what}; got ${show(value)}`), INVALID);
    if (opts.nonEmpty && items.length === 0) return (report(`list at least one of ${opts.what}`), INVALID);
    const out: T[] = [];
    let bad = false;
    items.forEach((item, i) => {
      const path = Array.isArray(value) ? [i] : [];
      const parsed = opts.item(item);
      if (!parsed.ok) {
        report(parsed.error, path);
        bad = true;
        return;
      }
      const first = out.findIndex((seen) => JSON.stringify(seen) === JSON.stringify(parsed.value));
      if (first >= 0) {
        report(`${show(item)} is listed twice`, path);
        bad = true;
        return;
      }
      out.push(parsed.value);
    });
    return bad ? INVALID : out;
  });
}

// ---------------------------------------------------------------------------------------------
// Values

export interface ServerNameValue extends ParsedServerName {
  /** As written in the config. */
  readonly text: string;
}

const serverName = leaf((value, report): ServerNameValue | Invalid => {
  if (value === undefined) {
    report('missing; set it to the name in your user IDs, e.g. example.com for @alice:example.com');
    return INVALID;
  }
  if (typeof value !== 'string' || value === '') {
    report(`expected a server name like example.com or example.com:8448; got ${show(value)}`);
    return INVALID;
  }
  const parsed = take(parseServerName(value), report);
  return parsed === INVALID ? INVALID : { text: value, ...parsed };
});

const hostname = optional((value, report): ParsedHost | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') {
    report(`expected a host name like matrix.example.com or an IP address; got ${show(value)}`);
    return INVALID;
  }
  return take(parseHostname(value), report);
});

const httpsPorts = listOf({ what: 'ports like [443, 8448]', item: checkPort, nonEmpty: true, single: true });

const httpPort = optional((value, report): number | null | undefined | Invalid => {
  if (value === undefined || value === null) return value;
  return take(checkPort(value), report);
});

const addresses = listOf({
  what: 'IP addresses like ["0.0.0.0", "::"]',
  nonEmpty: true,
  single: true,
  item: (value): Parsed<string> => {
    if (typeof value === 'string' && isIP(value) !== 0) return { ok: true, value };
    return {
      ok: false,
      error: `${show(value)} is not an IP address; bind addresses are IP literals like 0.0.0.0, ::, 127.0.0.1 or ::1`,
    };
  },
});

export interface UpstreamValue {
  /** As written in the config. */
  readonly url: string;
  /** scheme://address:port, `localhost` replaced by 127.0.0.1. */
  readonly dial: string;
}

/** Check an upstream URL: http(s), no user info, path, query or fragment. */
export function checkUpstreamUrl(text: string): Parsed<UpstreamValue> {
  const help = 'an http:// or https:// URL like http://localhost:8008';
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) || !URL.canParse(text)) {
    return { ok: false, error: `expected ${help}; got ${show(text)}` };
  }
  const u = new URL(text);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return { ok: false, error: `expected ${help}; the scheme '${u.protocol.slice(0, -1)}' is not supported` };
  }
  if (u.hostname === '') return { ok: false, error: `expected ${help}; ${show(text)} has no host` };
  if (u.username !== '' || u.password !== '') {
    return { ok: false, error: 'the upstream URL cannot carry a user name or password' };
  }
  if (u.search !== '' || text.includes('?')) return { ok: false, error: 'the upstream URL cannot carry a query (?...)' };
  if (u.hash !== '' || text.includes('#')) return { ok: false, error: 'the upstream URL cannot carry a fragment (#...)' };
  if (u.pathname !== '/' && u.pathname !== '') {
    return {
      ok: false,
      error: `the upstream URL cannot carry a path ('${u.pathname}'): requests are forwarded with their path unchanged; use ${u.origin}`,
    };
  }
  const host = u.hostname === 'localhost' ? '127.0.0.1' : u.hostname;
  const port = u.port !== '' ? u.port : u.protocol === 'https:' ? '443' : '80';
  return { ok: true, value: { url: text, dial: `${u.protocol}//${host}:${port}` } };
}

const upstream = optional((value, report): UpstreamValue | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    report(`expected an http:// or https:// URL like http://localhost:8008; got ${show(value)}`);
    return INVALID;
  }
  return take(checkUpstreamUrl(value), report);
});

export interface MServerValue extends ParsedServerName {
  readonly text: string;
}

const mServer = optional((value, report): MServerValue | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') {
    report(`expected a server name like matrix.example.com:443; got ${show(value)}`);
    return INVALID;
  }
  const parsed = take(parseServerName(value), report);
  return parsed === INVALID ? INVALID : { text: value, ...parsed };
});

const clientBody = optional((value, report): JsonObject | undefined | Invalid => {
  if (value === undefined || value === null) return undefined;
  if (!isMap(value)) {
    report(`expected a map of keys to add to /.well-known/matrix/client; got ${show(value)}`);
    return INVALID;
  }
  checkJson(value, [], report);
  if ('m.homeserver' in value) {
    const hs = value['m.homeserver'];
    if (!isMap(hs)) {
      report(`expected a map like { base_url: "https://matrix.example.com" }; got ${show(hs)}`, ['m.homeserver']);
    } else if ('base_url' in hs) {
      const base = hs['base_url'];
      if (typeof base !== 'string' || !isHttpUrl(base)) {
        report(`expected an http:// or https:// URL; got ${show(base)}`, ['m.homeserver', 'base_url']);
      }
    }
  }
  return value as JsonObject;
});

const supportBody = optional((value, report): JsonObject | null | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (value === null) return null;
  if (!isMap(value)) {
    report(`expected a map with contacts and/or support_page, or null to answer 404; got ${show(value)}`);
    return INVALID;
  }
  checkJson(value, [], report);
  const hasContacts = 'contacts' in value;
  const hasPage = 'support_page' in value;
  if (!hasContacts && !hasPage) {
    report('give contacts, support_page or both (or null to answer 404)');
  }
  if (hasContacts) {
    const contacts = value['contacts'];
    if (!Array.isArray(contacts)) {
      report(`expected a list of contacts like - { role: m.role.admin, matrix_id: "@admin:example.com" }; got ${show(contacts)}`, ['contacts']);
    } else {
      if (contacts.length === 0 && !hasPage) report('list at least one contact', ['contacts']);
      contacts.forEach((contact, i) => {
        const at: PathSeg[] = ['contacts', i];
        if (!isMap(contact)) {
          report(`expected a map with role and matrix_id and/or email_address; got ${show(contact)}`, at);
          return;
        }
        const role = contact['role'];
        if (role === undefined) report('missing; give a role like m.role.admin or m.role.security', [...at, 'role']);
        else if (typeof role !== 'string' || role === '') {
          report(`expected a role like m.role.admin or m.role.security; got ${show(role)}`, [...at, 'role']);
        }
        const mxid = contact['matrix_id'];
        if (mxid !== undefined && (typeof mxid !== 'string' || !isMatrixUserId(mxid))) {
          report(`expected a Matrix user ID like @admin:example.com; got ${show(mxid)}`, [...at, 'matrix_id']);
        }
        const email = contact['email_address'];
        if (email !== undefined && (typeof email !== 'string' || !isEmail(email))) {
          report(`expected an email address like admin@example.com; got ${show(email)}`, [...at, 'email_address']);
        }
        if (mxid === undefined && email === undefined) {
          report('each contact needs matrix_id, email_address or both', at);
        }
      });
    }
  }
  if (hasPage) {
    const page = value['support_page'];
    if (typeof page !== 'string' || !isHttpUrl(page)) {
      report(`expected an http:// or https:// URL; got ${show(page)}`, ['support_page']);
    }
  }
  return value as JsonObject;
});

function isEmail(text: string): boolean {
  return /^[^@\s]+@[^@\s]+$/.test(text);
}

const email = optional((value, report): string | null | undefined | Invalid => {
  if (value === undefined || value === null) return value;
  if (typeof value === 'string' && isEmail(value)) return value;
  report(`expected an email address like admin@example.com; got ${show(value)}`);
  return INVALID;
});

const acmeCa = optional((value, report): string | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value === 'string') {
    const preset = ACME_PRESETS[value];
    if (preset !== undefined && Object.hasOwn(ACME_PRESETS, value)) return preset;
    if (/^https:\/\//i.test(value) && isHttpUrl(value)) return value;
  }
  report(`expected one of ${Object.keys(ACME_PRESETS).join(', ')} or an https:// directory URL; got ${show(value)}`);
  return INVALID;
});

const pathList = (what: string) => listOf({ what, item: (v) => pathString(v, 'a PEM file') });

const trustedProxies = listOf({
  what: 'IP addresses or CIDR ranges like 10.0.0.0/8',
  item: (value): Parsed<string> => {
    const error = `${show(value)} is not an IP address or CIDR range (like 192.0.2.1, 10.0.0.0/8 or fd00::/8)`;
    if (typeof value !== 'string') return { ok: false, error };
    const [ip, bits, extra] = value.split('/');
    const family = isIP(ip ?? '');
    if (family === 0 || extra !== undefined) return { ok: false, error };
    if (bits !== undefined) {
      const max = family === 4 ? 32 : 128;
      if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) {
        return { ok: false, error: `${show(value)}: the prefix length must be 0–${max}` };
      }
    }
    return { ok: true, value };
  },
});

const prefixList = listOf({ what: 'path prefixes like /_synapse/admin/', item: checkPrefix });

const maxBodySize = optional((value, report): number | undefined | Invalid => {
  if (value === undefined) return undefined;
  const bytes = take(parseSize(value), report);
  if (bytes === INVALID) return INVALID;
  if (bytes < 1) return (report(`must be at least 1 byte; got ${show(value)}`), INVALID);
  return bytes;
});

/** A whole number in [min, max]; `what` names the unit in the error ("connections"). */
function count(min: number, max: number, what: string) {
  return optional((value, report): number | undefined | Invalid => {
    if (value === undefined) return undefined;
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
    report(`expected a whole number of ${what} (${min}–${max}); got ${show(value)}`);
    return INVALID;
  });
}

const connections = count(1, 100_000, 'connections');

/** A size like 32KiB within [min, max] bytes. */
function size(min: number, max: number) {
  return optional((value, report): number | undefined | Invalid => {
    if (value === undefined) return undefined;
    const bytes = take(parseSize(value), report);
    if (bytes === INVALID) return INVALID;
    if (bytes < min || bytes > max) return (report(`must be between ${formatSize(min)} and ${formatSize(max)}; got ${show(value)}`), INVALID);
    return bytes;
  });
}

// ---------------------------------------------------------------------------------------------
// Maps

/** `listen:` with nothing under it (null) means "all defaults", like an absent section. */
const emptyToMap = (value: unknown): unknown => (value === null ? {} : value);

const listenShape = { https: httpsPorts, http: httpPort, address: addresses };
const listenSchema = z
  .preprocess(
    emptyToMap,
    z.strictObject(listenShape).superRefine((listen, ctx) => {
      const https = listen.https ?? DEFAULTS.https;
      if (listen.http !== undefined && listen.http !== null && https.includes(listen.http)) {
        ctx.addIssue({
          code: 'custom',
          path: ['http'],
          message: `port ${listen.http} is also an https port; choose another port for plain HTTP, or null to disable it`,
        });
      }
    }),
  )
  .optional();

const wellKnownShape = {
  server: mServer,
  client: clientBody,
  support: supportBody,
  max_age: duration({ min: 0, max: 365 * DAY, wholeSeconds: true }),
};
const wellKnownSchema = z.preprocess(emptyToMap, z.strictObject(wellKnownShape)).optional();

const tlsFileShape = {
  cert: requiredPath('the PEM certificate chain (leaf first)'),
  key: requiredPath('the PEM private key'),
};
/** The parts of `tls.hsts`; absent parts take the defaults. */
export interface HstsValue {
  readonly maxAgeSeconds: number;
  readonly includeSubdomains: boolean;
  readonly preload: boolean;
}

const HSTS_KEYS = ['max_age', 'include_subdomains', 'preload'] as const;

/** `tls.hsts`: false/null (no header), true (the defaults) or a map of HSTS_KEYS. */
const hsts = optional((value, report): HstsValue | null | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (value === false || value === null) return null;
  const given = value === true ? {} : value;
  if (!isMap(given)) {
    report(`expected false (no HSTS) or a map like { max_age: 365d, include_subdomains: false, preload: false }; got ${show(value)}`);
    return INVALID;
  }
  let bad = false;
  for (const key of Object.keys(given)) {
    if (!(HSTS_KEYS as readonly string[]).includes(key)) {
      report(`unknown key '${key}'; allowed here: ${HSTS_KEYS.join(', ')}`, [key]);
      bad = true;
    }
  }
  let maxAgeMs = DEFAULTS.hstsMaxAgeMs;
  if (given['max_age'] !== undefined) {
    const ms = take(parseDuration(given['max_age']), report, ['max_age']);
    if (ms === INVALID) bad = true;
    else if (ms % 1000 !== 0 || ms > 2 * 365 * DAY) {
      report(`must be whole seconds, at most 730d; got ${show(given['max_age'])}`, ['max_age']);
      bad = true;
    } else maxAgeMs = ms;
  }
  const flag = (key: string): boolean => {
    const v = given[key];
    if (v === undefined) return false;
    if (typeof v === 'boolean') return v;
    report(`expected true or false; got ${show(v)}`, [key]);
    bad = true;
    return false;
  };
  const includeSubdomains = flag('include_subdomains');
  const preload = flag('preload');
  if (preload && (!includeSubdomains || maxAgeMs < 365 * DAY)) {
    report('preload lists only accept include_subdomains: true with a max_age of at least 365d; set both, or drop preload', ['preload']);
    bad = true;
  }
  return bad ? INVALID : { maxAgeSeconds: maxAgeMs / 1000, includeSubdomains, preload };
});

const tlsShape = {
  issuer: oneOf(ISSUERS),
  hsts,
  strict_sni_host: optional((value, report): boolean | undefined | Invalid => {
    if (value === undefined || typeof value === 'boolean') return value;
    report(`expected true (421 for a Host the connection's certificate was not chosen for) or false; got ${show(value)}`);
    return INVALID;
  }),
  files: z.preprocess((v) => (v === null ? undefined : v), z.array(z.strictObject(tlsFileShape)).optional()),
  reload_interval: duration({ min: 1000, max: TIMER_MAX }),
  internal_lifetime: duration({ min: 3_600_000, max: 365 * DAY }),
};
const tlsSchema = z
  .preprocess(
    emptyToMap,
    z.strictObject(tlsShape).superRefine((tls, ctx) => {
      const issuer = tls.issuer ?? DEFAULTS.issuer;
      if (issuer === 'files') {
        if (tls.files === undefined || tls.files.length === 0) {
          ctx.addIssue({
            code: 'custom',
            path: ['files'],
            message: 'required when tls.issuer is files: list at least one - { cert: /path/fullchain.pem, key: /path/privkey.pem }',
          });
        }
      } else if (tls.files !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['files'],
          message: `only used when tls.issuer is files (it is ${issuer} here); remove tls.files or set tls.issuer: files`,
        });
      }
    }),
  )
  .optional();

/** CAs that refuse accounts without External Account Binding. */
export const EAB_REQUIRED: Readonly<Record<string, string>> = {
  [ACME_PRESETS.zerossl!]: 'ZeroSSL (EAB credentials are in the ZeroSSL dashboard, Developer section)',
  [ACME_PRESETS.google!]: 'Google Trust Services (create EAB credentials with `gcloud publicca external-account-keys create`)',
};

const eabKid = leaf((value, report): string | Invalid => {
  if (value === undefined) return (report('missing; give the key identifier (kid) your CA issued'), INVALID);
  if (typeof value === 'string' && value.trim() !== '' && !/\s/.test(value)) return value;
  report(`expected the key identifier your CA issued, a non-empty string without spaces; got ${show(value)}`);
  return INVALID;
});

const eabHmacKey = leaf((value, report): string | Invalid => {
  if (value === undefined) return (report('missing; give the HMAC key your CA issued (base64url)'), INVALID);
  if (typeof value === 'string' && /^[A-Za-z0-9_-]+={0,2}$/.test(value) && value.replace(/=+$/, '').length >= 16) {
    return value.replace(/=+$/, '');
  }
  report(`expected the HMAC key your CA issued: base64url text (A-Z a-z 0-9 - _), at least 16 characters; got ${show(value)}`);
  return INVALID;
});

const eabShape = { kid: eabKid, hmac_key: eabHmacKey };
const eabSchema = z.preprocess(emptyToMap, z.strictObject(eabShape)).optional();

const acmeProfile = optional((value, report): string | undefined | Invalid => {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(value)) return value;
  report(`expected a profile name the CA lists, like shortlived or tlsserver; got ${show(value)}`);
  return INVALID;
});

export const CHALLENGE_TYPES: readonly ChallengeType[] = ['http-01', 'tls-alpn-01'];

const challenges = listOf<ChallengeType>({
  what: `challenge types (${CHALLENGE_TYPES.join(', ')})`,
  nonEmpty: true,
  single: true,
  item: (value) =>
    typeof value === 'string' && (CHALLENGE_TYPES as readonly string[]).includes(value)
      ? { ok: true, value: value as ChallengeType }
      : { ok: false, error: `expected one of ${CHALLENGE_TYPES.join(', ')}; got ${show(value)}` },
});

export const KEY_TYPES: readonly KeyType[] = ['p256', 'p384', 'rsa2048', 'rsa4096'];

const caShape = { email, ca: acmeCa, ca_roots: pathList('PEM file paths'), eab: eabSchema, profile: acmeProfile };

/** Every CA-specific check of one CA entry (the primary, or a fallback). */
function checkCa(ca: { ca?: string | undefined; eab?: unknown }, ctx: z.core.$RefinementCtx, where: string): void {
  const directory = ca.ca ?? ACME_PRESETS[DEFAULTS.acmeCa]!;
  const needs = EAB_REQUIRED[directory];
  if (needs !== undefined && ca.eab === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['ca'],
      message: `${needs.split(' (')[0]} requires External Account Binding: add ${where}eab: { kid: ..., hmac_key: ... }; ${needs.slice(needs.indexOf('(') + 1, -1)}`,
    });
  }
}

const fallbackEntry = z.strictObject(caShape).superRefine((ca, ctx) => checkCa(ca, ctx, ''));
const fallbackSchema = z.preprocess((v) => (v === null ? undefined : v), z.array(fallbackEntry).optional());

const acmeShape = {
  ...caShape,
  challenges,
  key_type: oneOf(KEY_TYPES),
  fallback: fallbackSchema,
};
const acmeSchema = z
  .preprocess(
    emptyToMap,
    z.strictObject(acmeShape).superRefine((acme, ctx) => checkCa(acme, ctx, 'acme.')),
  )
  .optional();

const proxyShape = {
  max_body_size: maxBodySize,
  upstream_timeout: duration({ min: 1000, max: TIMER_MAX }),
  connect_timeout: duration({ min: 1, max: TIMER_MAX }),
  connections,
  queue_timeout: duration({ min: 0, max: 300_000 }),
  body_idle_timeout: duration({ min: 1000, max: 3_600_000 }),
  send_timeout: duration({ min: 1000, max: 3_600_000 }),
  max_requests_per_connection: count(1, 100_000, 'requests'),
  max_requests_per_address: count(1, 1_000_000, 'requests'),
  trusted_proxies: trustedProxies,
  forward_prefixes: prefixList,
  block_prefixes: prefixList,
  drain_timeout: duration({ min: 0, max: TIMER_MAX }),
  request_id_header: optional((value, report): string | false | undefined | Invalid => {
    if (value === undefined) return undefined;
    if (value === null || value === false) return false;
    if (typeof value === 'string' && /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/.test(value)) return value;
    report(`expected a header name like X-Request-Id, or false to send none; got ${show(value)}`);
    return INVALID;
  }),
};
const proxySchema = z
  .preprocess(
    emptyToMap,
    z.strictObject(proxyShape).superRefine((proxy, ctx) => {
      const forward = proxy.forward_prefixes ?? [];
      (proxy.block_prefixes ?? []).forEach((prefix, i) => {
        if (forward.includes(prefix)) {
          ctx.addIssue({
            code: 'custom',
            path: ['block_prefixes', i],
            message: `'${prefix}' is also in forward_prefixes; a prefix is either forwarded or blocked, not both`,
          });
        }
      });
    }),
  )
  .optional();

const limitsShape = {
  handshake_timeout: duration({ min: 1000, max: 300_000 }),
  header_timeout: duration({ min: 1000, max: 300_000 }),
  idle_timeout: duration({ min: 1000, max: 3_600_000 }),
  max_header_size: size(4096, 1024 * 1024),
  max_connections: count(1, 1_000_000, 'connections'),
  max_streams: count(1, 10_000, 'streams'),
};
const limitsSchema = z.preprocess(emptyToMap, z.strictObject(limitsShape)).optional();

/** Loggers whose level `log.levels` can set apart from `log.level`. */
export const LOG_COMPONENTS = ['access', 'data', 'tls', 'workers', 'certs', 'control', 'admin', 'alerts'] as const;
export type LogComponent = (typeof LOG_COMPONENTS)[number];

const componentLevels = optional((value, report): Partial<Record<LogComponent, LogLevel>> | undefined | Invalid => {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    report(`expected a map of component: level, like { access: warn, certs: debug }; got ${show(value)}`);
    return INVALID;
  }
  const levels: Partial<Record<LogComponent, LogLevel>> = {};
  for (const [component, level] of Object.entries(value as Record<string, unknown>)) {
    if (!(LOG_COMPONENTS as readonly string[]).includes(component)) {
      report(`unknown component '${component}'; the components are ${LOG_COMPONENTS.join(', ')}`, [component]);
    } else if (typeof level !== 'string' || !(LOG_LEVELS as readonly string[]).includes(level)) {
      report(`expected one of ${LOG_LEVELS.join(', ')}; got ${show(level)}`, [component]);
    } else levels[component as LogComponent] = level as LogLevel;
  }
  return levels;
});

const logShape = { level: oneOf(LOG_LEVELS), format: oneOf(['json', 'pretty'] as const), levels: componentLevels };

/** `workers: auto` (one per CPU) or a count. */
const workers = optional((value, report): number | 'auto' | undefined | Invalid => {
  if (value === undefined || value === 'auto') return value;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 256) return value;
  report(`expected auto (one per CPU) or a whole number of worker processes (1–256); got ${show(value)}`);
  return INVALID;
});
const logSchema = z.preprocess(emptyToMap, z.strictObject(logShape)).optional();

// ---------------------------------------------------------------------------------------------
// Operations: the admin listener (metrics, health) and alerts

export interface AdminListenValue {
  /** IP literal, without brackets. */
  readonly host: string;
  readonly port: number;
}

const ADMIN_LISTEN_HELP = 'an address and port like 127.0.0.1:9090 or [::1]:9090 (or just a port, on 127.0.0.1)';

/** `admin.listen`: "127.0.0.1:9090", "[::1]:9090", "localhost:9090" or a port; null/false: off. Port 0 picks a free one. */
const adminListen = optional((value, report): AdminListenValue | null | undefined | Invalid => {
  if (value === undefined || value === null || value === false) return value === false ? null : value;
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0 && value <= 65535) return { host: DEFAULTS.admin.host, port: value };
    return (report(`${value} is not a port (0–65535)`), INVALID);
  }
  const m = typeof value === 'string' ? /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim()) : null;
  if (m === null) return (report(`expected ${ADMIN_LISTEN_HELP}; got ${show(value)}`), INVALID);
  const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]!);
  const port = Number(m[3]);
  if (isIP(host) === 0) return (report(`${show(host)} is not an IP address; the admin listener binds an IP literal like 127.0.0.1 or [::1]`), INVALID);
  if (port > 65535) return (report(`${port} is not a port (0–65535)`), INVALID);
  return { host, port };
});

const adminShape = { listen: adminListen };
/** `admin: null` or `admin: false` turns the admin listener off, like `admin: { listen: null }`. */
const adminSchema = z
  .preprocess((v) => (v === null || v === false ? { listen: null } : v), z.strictObject(adminShape))
  .optional();

function httpUrl(what: string) {
  return optional((value, report): string | undefined | Invalid => {
    if (value === undefined) return undefined;
    if (typeof value === 'string' && isHttpUrl(value)) return value;
    report(`expected ${what}, an http:// or https:// URL; got ${show(value)}`);
    return INVALID;
  });
}

/** A Matrix room ID (`!opaque:server`); aliases (#room:server) are not accepted by the send API. */
const roomId = optional((value, report): string | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && /^![^:\s]+:\S+$/.test(value)) return value;
  const alias = typeof value === 'string' && value.startsWith('#');
  report(
    alias
      ? `expected a room ID like "!abcdef:example.com", not an alias: find the ID in the room's settings (Advanced); got ${show(value)}`
      : `expected a room ID like "!abcdef:example.com" (quote it: '!' starts a YAML tag); got ${show(value)}`,
  );
  return INVALID;
});

const accessToken = optional((value, report): string | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && /^\S+$/.test(value)) return value;
  report(`expected the access token of the account that posts alerts (one word, no spaces); got ${typeof value === 'string' ? 'text with spaces' : show(value)}`);
  return INVALID;
});

const afterFailures = optional((value, report): number | undefined | Invalid => {
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 100) return value;
  report(`expected a whole number of failed renewals in a row (1–100); got ${show(value)}`);
  return INVALID;
});

const daysLeft = listOf({
  what: 'whole numbers of days like [14, 7, 2]',
  single: true,
  item: (value): Parsed<number> =>
    typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 365
      ? { ok: true, value }
      : { ok: false, error: `expected a whole number of days (1–365); got ${show(value)}` },
});

const alertsShape = {
  format: oneOf(ALERT_FORMATS),
  webhook: httpUrl('the URL alerts are POSTed to'),
  homeserver: httpUrl('the homeserver that posts matrix alerts'),
  room_id: roomId,
  access_token: accessToken,
  access_token_file: optionalPath('a file holding the access token'),
  after_failures: afterFailures,
  days_left: daysLeft,
};

/** Keys that belong to one format only, with the format they belong to. */
const ALERT_KEYS_BY_FORMAT: Readonly<Record<string, AlertFormat>> = {
  webhook: 'generic',
  homeserver: 'matrix',
  room_id: 'matrix',
  access_token: 'matrix',
  access_token_file: 'matrix',
};

/** `alerts: null` (or absent): no alerts. */
const alertsSchema = z.preprocess(
  (v) => (v === null ? undefined : v),
  z
    .strictObject(alertsShape)
    .superRefine((alerts, ctx) => {
      const format = alerts.format ?? DEFAULTS.alertFormat;
      const issue = (path: string, message: string): void => ctx.addIssue({ code: 'custom', path: [path], message });
      for (const [key, owner] of Object.entries(ALERT_KEYS_BY_FORMAT)) {
        if (owner !== format && alerts[key as keyof typeof alerts] !== undefined) {
          issue(key, `only used with alerts.format: ${owner} (it is ${format} here)`);
        }
      }
      if (format === 'generic' && alerts.webhook === undefined) {
        issue('webhook', 'required: the http(s) URL alerts are POSTed to as JSON (or set format: matrix to post to a Matrix room)');
      }
      if (format === 'matrix') {
        if (alerts.room_id === undefined) issue('room_id', 'required with format matrix: the room alerts are posted to, like "!abcdef:example.com"');
        if (alerts.access_token !== undefined && alerts.access_token_file !== undefined) {
          issue('access_token', 'give access_token_file or access_token, not both');
        } else if (alerts.access_token === undefined && alerts.access_token_file === undefined) {
          issue('access_token_file', 'required with format matrix: a file holding the access token of the account that posts (or access_token inline)');
        }
      }
    })
    .optional(),
);

const rootShape = {
  server_name: serverName,
  hostname,
  listen: listenSchema,
  upstream,
  well_known: wellKnownSchema,
  tls: tlsSchema,
  acme: acmeSchema,
  storage: optionalPath('the storage directory'),
  proxy: proxySchema,
  limits: limitsSchema,
  log: logSchema,
  workers,
  admin: adminSchema,
  alerts: alertsSchema,
};

/** The whole document. Its output is the validated raw config that expand.ts turns into a Plan. */
export const configSchema = z.strictObject(rootShape).superRefine((config, ctx) => {
  const only = config.acme?.challenges;
  const issuer = config.tls?.issuer ?? DEFAULTS.issuer;
  if (issuer === 'acme' && config.listen?.http === null && only !== undefined && only.every((c) => c === 'http-01')) {
    ctx.addIssue({
      code: 'custom',
      path: ['acme', 'challenges'],
      message: 'http-01 is answered on the plain-HTTP listener, which listen.http: null disables; add tls-alpn-01 or enable listen.http',
    });
  }
});

export type RawConfig = z.output<typeof configSchema>;

/** Known keys of every map, by key pattern ("" = top level, "tls.files[]" = each files entry). */
export const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(rootShape),
  listen: Object.keys(listenShape),
  well_known: Object.keys(wellKnownShape),
  tls: Object.keys(tlsShape),
  'tls.files[]': Object.keys(tlsFileShape),
  acme: Object.keys(acmeShape),
  'acme.eab': Object.keys(eabShape),
  'acme.fallback[]': Object.keys(caShape),
  'acme.fallback[].eab': Object.keys(eabShape),
  proxy: Object.keys(proxyShape),
  limits: Object.keys(limitsShape),
  log: Object.keys(logShape),
  admin: Object.keys(adminShape),
  alerts: Object.keys(alertsShape),
};

// ---------------------------------------------------------------------------------------------
// Paths, suggestions, and zod issues → sentences

/** `['listen', 'https', 1]` → `listen.https[1]`; keys that are not plain words are quoted. */
export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** `['tls', 'files', 0]` → `tls.files[]`: the KNOWN_KEYS entry of the map at that path. */
function patternOf(path: readonly PathSeg[]): string {
  return path.map((seg) => (typeof seg === 'number' ? '[]' : `.${seg}`)).join('').replace(/^\./, '');
}

function normalizeKey(key: string): string {
  return key.trim().toLowerCase().replace(/[-\s]/g, '_');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The key the admin probably meant: a close sibling ("upstrem" → "upstream"), else the same key in
 * another section ("max_body_size" at the top → "proxy.max_body_size").
 */
export function suggestKey(key: string, pattern: string): string | undefined {
  const wanted = normalizeKey(key);
  const siblings = KNOWN_KEYS[pattern] ?? [];
  // 1. A sibling within a small edit distance ("upstrem" → "upstream", "Server-Name" → "server_name").
  let best: { key: string; dist: number } | undefined;
  for (const candidate of siblings) {
    const norm = normalizeKey(candidate);
    const dist = editDistance(wanted, norm);
    if (dist <= (norm.length >= 6 ? 2 : 1) && dist < (best?.dist ?? Infinity)) best = { key: candidate, dist };
  }
  if (best) return best.key;
  // 2. A section and its key run together ("loglevel" → "log.level", "acme_email" → "acme.email").
  const squashed = wanted.replace(/_/g, '');
  for (const [other, keys] of Object.entries(KNOWN_KEYS)) {
    if (other === '' || other.includes('[]')) continue;
    const match = keys.find((k) => `${other}${k}`.replace(/_/g, '') === squashed);
    if (match !== undefined) return `${other}.${match}`;
  }
  // 3. The same key in another section ("max_body_size" at the top → "proxy.max_body_size").
  for (const [other, keys] of Object.entries(KNOWN_KEYS)) {
    if (other === pattern || other.includes('[]')) continue;
    const match = keys.find((k) => normalizeKey(k) === wanted);
    if (match !== undefined) return other === '' ? match : `${other}.${match}`;
  }
  // 4. A sibling the key abbreviates or extends ("certificate" → "cert").
  const partial = siblings.find((candidate) => {
    const norm = normalizeKey(candidate);
    return Math.min(norm.length, wanted.length) >= 3 && (norm.startsWith(wanted) || wanted.startsWith(norm));
  });
  if (partial !== undefined) return partial;
  return undefined;
}

function unknownKeyMessage(key: string, pattern: string): string {
  const suggestion = suggestKey(key, pattern);
  if (suggestion !== undefined) {
    const elsewhere = pattern !== '' && !suggestion.includes('.') && !(KNOWN_KEYS[pattern] ?? []).includes(suggestion);
    return `unknown key '${key}' (did you mean ${elsewhere ? 'the top-level ' : ''}'${suggestion}'?)`;
  }
  const known = KNOWN_KEYS[pattern];
  return known ? `unknown key '${key}'; allowed here: ${known.join(', ')}` : `unknown key '${key}'`;
}

function valueAt(data: unknown, path: readonly PathSeg[]): unknown {
  let node = data;
  for (const seg of path) {
    if (Array.isArray(node) && typeof seg === 'number') node = node[seg];
    else if (isMap(node) && typeof seg === 'string' && Object.hasOwn(node, seg)) node = node[seg];
    else return undefined;
  }
  return node;
}

function toPathIssues(issues: readonly z.core.$ZodIssue[], data: unknown): PathIssue[] {
  const out: PathIssue[] = [];
  for (const issue of issues) {
    const path = issue.path.map((seg) => (typeof seg === 'number' ? seg : String(seg)));
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...path, key], at: 'key', message: unknownKeyMessage(key, patternOf(path)) });
    } else if (issue.code === 'invalid_type') {
      const got = show(valueAt(data, path));
      if (issue.expected === 'object') {
        const keys = KNOWN_KEYS[patternOf(path)];
        out.push({ path, message: keys ? `expected a map with keys ${keys.join(', ')}; got ${got}` : `expected a map; got ${got}` });
      } else if (issue.expected === 'array') {
        out.push({ path, message: `expected a list; got ${got}` });
      } else {
        out.push({ path, message: `expected ${issue.expected}; got ${got}` });
      }
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

export type ValidateResult =
  | { readonly ok: true; readonly config: RawConfig }
  | { readonly ok: false; readonly issues: readonly PathIssue[] };

/** Validate the plain-JS form of the YAML document. Never throws for bad input. */
export function validateConfig(data: unknown): ValidateResult {
  if (!isMap(data)) {
    return { ok: false, issues: [{ path: [], message: `the config must be a map of keys like 'server_name: example.com'; got ${show(data)}` }] };
  }
  const result = configSchema.safeParse(data);
  if (result.success) return { ok: true, config: result.data };
  return { ok: false, issues: toPathIssues(result.error.issues, data) };
}
