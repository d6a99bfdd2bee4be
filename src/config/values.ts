/**
 * The values of the config that are more than a number, a word or a path: names, URLs, addresses,
 * prefixes, credentials. Each is a zod type an editor can check plus, where needed, a transform to
 * the parsed value; every problem is worded from the value as written.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { ACME_PRESETS, DEFAULTS, type AdminListenValue } from './defaults';
import { by, checkPath, failureOf, filePath, isHttpUrl, listOf, parsedBy, portNumber, type Says } from './leaves';
import { parseHostname, parseServerName, type ParsedHost, type ParsedServerName } from './servername';
import { show, type Parsed } from './units';

// ---------------------------------------------------------------------------------------------
// Names

export interface ServerNameValue extends ParsedServerName {
  /** As written in the config. */
  readonly text: string;
}

/** The shape of a server name: a bracketed IPv6 literal or a DNS name / IPv4, then an optional port. */
const SERVER_NAME_PATTERN = /^(?:\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]+)(?::[0-9]{1,5})?$/;

function serverNameSays(missing: string | undefined, example: string): Says {
  return (v) => {
    if (v === undefined && missing !== undefined) return missing;
    if (typeof v !== 'string' || v === '') return `expected a server name like ${example}; got ${show(v)}`;
    return failureOf(parseServerName(v), `invalid server name ${show(v)}`);
  };
}

function serverNameOf(says: Says) {
  return z
    .string(by(says))
    .min(1, by(says))
    .regex(SERVER_NAME_PATTERN, by(says))
    .transform(parsedBy((text: string): Parsed<ServerNameValue> => {
      const parsed = parseServerName(text);
      return parsed.ok ? { ok: true, value: { text, ...parsed.value } } : parsed;
    }));
}

/** `server_name`: required. */
export const serverName = serverNameOf(
  serverNameSays('missing; set it to the name in your user IDs, e.g. example.com for @alice:example.com', 'example.com or example.com:8448'),
);

/** `well_known.server` (m.server). */
export const mServer = serverNameOf(serverNameSays(undefined, 'matrix.example.com:443'));

const hostnameSays: Says = (v) =>
  typeof v !== 'string' || v === ''
    ? `expected a host name like matrix.example.com or an IP address; got ${show(v)}`
    : failureOf(parseHostname(v), `invalid host name ${show(v)}`);

/** `hostname`: a DNS name or an IP literal (IPv6 with or without brackets, zone allowed), no port. */
export const hostname = z
  .string(by(hostnameSays))
  .min(1, by(hostnameSays))
  .regex(/^(?:\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.:%-]+)$/, by(hostnameSays))
  .transform(parsedBy((text: string): Parsed<ParsedHost> => parseHostname(text)));

// ---------------------------------------------------------------------------------------------
// Addresses and URLs

export const httpsPorts = listOf({ what: 'ports like [443, 8448]', item: portNumber(), nonEmpty: true, single: true });

const bindAddressSays: Says = (v) =>
  `${show(v)} is not an IP address; bind addresses are IP literals like 0.0.0.0, ::, 127.0.0.1 or ::1`;

export const addresses = listOf({
  what: 'IP addresses like ["0.0.0.0", "::"]',
  nonEmpty: true,
  single: true,
  item: z
    .string(by(bindAddressSays))
    .regex(/^[0-9A-Za-z.:%-]+$/, by(bindAddressSays))
    .refine((text) => isIP(text) !== 0, by(bindAddressSays)),
});

export interface UpstreamValue {
  /** As written in the config. */
  readonly url: string;
  /** scheme://address:port, `localhost` replaced by 127.0.0.1. */
  readonly dial: string;
}

const UPSTREAM_HELP = 'an http:// or https:// URL like http://localhost:8008';

/** Check an upstream URL: http(s), no user info, path, query or fragment. */
export function checkUpstreamUrl(text: string): Parsed<UpstreamValue> {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) || !URL.canParse(text)) {
    return { ok: false, error: `expected ${UPSTREAM_HELP}; got ${show(text)}` };
  }
  const u = new URL(text);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return { ok: false, error: `expected ${UPSTREAM_HELP}; the scheme '${u.protocol.slice(0, -1)}' is not supported` };
  }
  if (u.hostname === '') return { ok: false, error: `expected ${UPSTREAM_HELP}; ${show(text)} has no host` };
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

const upstreamSays: Says = (v) =>
  typeof v === 'string' ? failureOf(checkUpstreamUrl(v), `invalid URL ${show(v)}`) : `expected ${UPSTREAM_HELP}; got ${show(v)}`;

export const upstream = z
  .string(by(upstreamSays))
  .regex(/^[Hh][Tt][Tt][Pp][Ss]?:\/\//, by(upstreamSays))
  .transform(parsedBy(checkUpstreamUrl));

/** `acme.ca`: a preset name, or the https:// URL of an ACME directory; parsed to the directory URL. */
export const acmeCa = (() => {
  const says: Says = (v) => `expected one of ${Object.keys(ACME_PRESETS).join(', ')} or an https:// directory URL; got ${show(v)}`;
  const presets = Object.keys(ACME_PRESETS) as [string, ...string[]];
  const url = z.string(by(says)).regex(/^[Hh][Tt][Tt][Pp][Ss]:\/\//, by(says)).refine(isHttpUrl, by(says));
  return z.union([z.enum(presets, by(says)), url], by(says)).transform((v) => (Object.hasOwn(ACME_PRESETS, v) ? ACME_PRESETS[v]! : v));
})();

const trustedProxySays: Says = (v) => {
  const checked = checkTrustedProxy(v);
  return checked.ok ? `invalid value ${show(v)}` : checked.error;
};

function checkTrustedProxy(value: unknown): Parsed<string> {
  const error = `${show(value)} is not an IP address or CIDR range (like 192.0.2.1, 10.0.0.0/8 or fd00::/8)`;
  if (typeof value !== 'string') return { ok: false, error };
  const [ip, bits, extra] = value.split('/');
  const family = isIP(ip ?? '');
  if (family === 0 || extra !== undefined) return { ok: false, error };
  if (bits !== undefined) {
    const max = family === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return { ok: false, error: `${show(value)}: the prefix length must be 0–${max}` };
  }
  return { ok: true, value };
}

export const trustedProxies = listOf({
  what: 'IP addresses or CIDR ranges like 10.0.0.0/8',
  item: z
    .string(by(trustedProxySays))
    .regex(/^[0-9A-Za-z.:%-]+(?:\/[0-9]+)?$/, by(trustedProxySays))
    .refine((v) => checkTrustedProxy(v).ok, by(trustedProxySays)),
});

function checkPrefix(value: unknown): Parsed<string> {
  if (typeof value !== 'string') return { ok: false, error: `expected a path prefix like /_synapse/admin/; got ${show(value)}` };
  if (!value.startsWith('/')) return { ok: false, error: `a path prefix must start with '/'; got ${show(value)}` };
  if (/[?#\s]/.test(value)) return { ok: false, error: `a path prefix cannot contain '?', '#' or whitespace; got ${show(value)}` };
  if (value.split('/').some((seg) => seg === '.' || seg === '..')) {
    return { ok: false, error: `a path prefix cannot contain '.' or '..' segments; got ${show(value)}` };
  }
  return { ok: true, value };
}

const prefixSays: Says = (v) => failureOf(checkPrefix(v), `invalid prefix ${show(v)}`);

/** A path prefix: starts with '/', no '?', '#', whitespace, '.' or '..' segments. */
export const prefixList = listOf({
  what: 'path prefixes like /_synapse/admin/',
  item: z
    .string(by(prefixSays))
    .regex(/^\/[^?#\s]*$/, by(prefixSays))
    .refine((v) => checkPrefix(v).ok, by(prefixSays)),
});

export const pemPaths = listOf({ what: 'PEM file paths', item: filePath('a PEM file') });

// ---------------------------------------------------------------------------------------------
// Storage, admin listener, header names

/** A URL where a directory is expected: `redis://...` would otherwise be a directory named `redis:`. */
const URL_SHAPED = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

function storageSays(v: unknown): string {
  if (typeof v === 'string' && URL_SHAPED.test(v)) {
    const scheme = v.slice(0, v.indexOf(':')).toLowerCase();
    const what = scheme === 'redis' || scheme === 'rediss' ? 'Redis storage is not supported yet' : `'${scheme}://' storage is not supported`;
    return `${what}; expected a filesystem path for the storage directory, like ./certs or /var/lib/matrix-edge; got ${show(v)}`;
  }
  return failureOf(checkPath(v, 'the storage directory'), `invalid path ${show(v)}`);
}

/** `storage`: a directory path (not blank, no NUL) that is not URL-shaped, until URL-shaped storage means something. */
export const storage = z.string(by(storageSays)).regex(/^(?![A-Za-z][A-Za-z0-9+.-]*:\/\/)[^\0]*[^\0\s][^\0]*$/, by(storageSays));

const ADMIN_LISTEN_HELP = 'an address and port like 127.0.0.1:9090 or [::1]:9090 (or just a port, on 127.0.0.1)';
const ADMIN_LISTEN_PATTERN = /^\s*(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})\s*$/;

function parseAdminListen(value: number | string): Parsed<AdminListenValue> {
  if (typeof value === 'number') return { ok: true, value: { host: DEFAULTS.admin.host, port: value } };
  const m = ADMIN_LISTEN_PATTERN.exec(value);
  if (m === null) return { ok: false, error: `expected ${ADMIN_LISTEN_HELP}; got ${show(value)}` };
  const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]!);
  const port = Number(m[3]);
  if (isIP(host) === 0) {
    return { ok: false, error: `${show(host)} is not an IP address; the admin listener binds an IP literal like 127.0.0.1 or [::1]` };
  }
  if (port > 65535) return { ok: false, error: `${port} is not a port (0–65535)` };
  return { ok: true, value: { host, port } };
}

const adminListenSays: Says = (v) =>
  typeof v === 'number' ? `${v} is not a port (0–65535)` : `expected ${ADMIN_LISTEN_HELP}; got ${show(v)}`;

/** `admin.listen`: "127.0.0.1:9090", "[::1]:9090", "localhost:9090" or a port; null/false: off. Port 0 picks a free one. */
export const adminListen = z
  .union(
    [z.null(), z.literal(false), portNumber(0), z.string(by(adminListenSays)).regex(ADMIN_LISTEN_PATTERN, by(adminListenSays))],
    by(adminListenSays),
  )
  .transform((v, ctx): AdminListenValue | null => (v === null || v === false ? null : parsedBy(parseAdminListen)(v, ctx)));

const headerNameSays: Says = (v) => `expected a header name like X-Request-Id, or false to send none; got ${show(v)}`;

/** `proxy.request_id_header`: a header name, or false/null for none. */
export const requestIdHeader = z
  .union([z.string(by(headerNameSays)).regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, by(headerNameSays)), z.literal(false), z.null()], by(headerNameSays))
  .transform((v): string | false => (v === null ? false : v));

const workersSays: Says = (v) => `expected auto (one per CPU) or a whole number of worker processes (1–256); got ${show(v)}`;

/** `workers`: auto (one per CPU) or a count. */
export const workers = z.union(
  [z.literal('auto', by(workersSays)), z.number(by(workersSays)).int(by(workersSays)).min(1, by(workersSays)).max(256, by(workersSays))],
  by(workersSays),
);

// ---------------------------------------------------------------------------------------------
// ACME credentials

const kidSays: Says = (v) =>
  v === undefined
    ? 'missing; give the key identifier (kid) your CA issued'
    : `expected the key identifier your CA issued, a non-empty string without spaces; got ${show(v)}`;

export const eabKid = z.string(by(kidSays)).regex(/^\S+$/, by(kidSays));

const hmacSays: Says = (v) =>
  v === undefined
    ? 'missing; give the HMAC key your CA issued (base64url)'
    : `expected the HMAC key your CA issued: base64url text (A-Z a-z 0-9 - _), at least 16 characters; got ${show(v)}`;

/** base64url, at least 16 characters before any '=' padding; parsed without the padding. */
export const eabHmacKey = z
  .string(by(hmacSays))
  .regex(/^[A-Za-z0-9_-]{16,}={0,2}$/, by(hmacSays))
  .transform((v) => v.replace(/=+$/, ''));

const profileSays: Says = (v) => `expected a profile name the CA lists, like shortlived or tlsserver; got ${show(v)}`;

export const acmeProfile = z.string(by(profileSays)).regex(/^[A-Za-z0-9._-]{1,64}$/, by(profileSays));
