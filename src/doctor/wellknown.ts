/**
 * Judging the three /.well-known/matrix/ answers: the server delegation (and how long peers cache
 * it), the client discovery document with its CORS headers, and the support document. Pure.
 */
import { isMatrixUserId, parseServerName, type ParsedServerName } from '../config/servername';
import { failed, passed, warned, type Verdict } from './report';

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The body as a JSON object, or why it is not one. */
export function jsonObject(body: Buffer): { ok: true; value: JsonObject } | { ok: false; problem: string } {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return { ok: false, problem: `the body is not JSON (${(err as Error).message})` };
  }
  if (!isObject(value)) return { ok: false, problem: 'the body is JSON but not an object' };
  return { ok: true, value };
}

export type ServerWellKnown = { readonly ok: true; readonly delegated: ParsedServerName } | { readonly ok: false; readonly problem: string };

/** A 200 answer of /.well-known/matrix/server: the delegated server name, or what is wrong. */
export function parseServerWellKnown(body: Buffer): ServerWellKnown {
  const json = jsonObject(body);
  if (!json.ok) return json;
  const m = json.value['m.server'];
  if (m === undefined) return { ok: false, problem: 'the JSON has no m.server' };
  if (typeof m !== 'string') return { ok: false, problem: `m.server is ${JSON.stringify(m)}, not a string` };
  const parsed = parseServerName(m);
  if (!parsed.ok) return { ok: false, problem: `m.server ${JSON.stringify(m)} is not a server name: ${parsed.error}` };
  return { ok: true, delegated: parsed.value };
}

/** The spec's default cache time for a well-known answer without caching headers, and its recommended cap. */
export const DEFAULT_CACHE_SECONDS = 24 * 3600;
export const MAX_CACHE_SECONDS = 48 * 3600;

export interface CacheLifetime {
  /** Seconds peers keep the answer; null when the headers say nothing. */
  readonly seconds: number | null;
  /** Which header decided, e.g. "Cache-Control max-age=3600". */
  readonly source: string;
}

/**
 * How long peers cache a well-known answer, read the way Synapse reads it: `no-store` → 0, else
 * `max-age`, else `Expires` (relative to the answer's `Date`, or now), an unreadable `Expires`
 * counting as already expired; nothing → null (peers then use the 24 h default).
 */
export function cacheLifetime(headers: { cacheControl?: string; expires?: string; date?: string }, nowMs: number): CacheLifetime {
  const directives = (headers.cacheControl ?? '')
    .split(',')
    .map((d) => d.trim().toLowerCase())
    .filter((d) => d !== '');
  if (directives.includes('no-store')) return { seconds: 0, source: 'Cache-Control no-store' };
  const maxAge = directives.find((d) => d.startsWith('max-age='));
  if (maxAge !== undefined && /^max-age="?\d+"?$/.test(maxAge)) {
    const seconds = Number(maxAge.slice('max-age='.length).replace(/"/g, ''));
    return { seconds, source: `Cache-Control max-age=${seconds}` };
  }
  if (headers.expires !== undefined) {
    const expires = httpDate(headers.expires);
    const base = headers.date === undefined ? nowMs : httpDate(headers.date);
    if (Number.isNaN(expires) || Number.isNaN(base)) return { seconds: 0, source: `Expires ${headers.expires} (unreadable: already expired)` };
    return { seconds: Math.max(0, Math.round((expires - base) / 1000)), source: `Expires ${headers.expires}` };
  }
  return { seconds: null, source: 'no Cache-Control max-age and no Expires' };
}

/** An HTTP-date (all three forms carry hh:mm:ss) as ms, NaN otherwise — Date.parse alone takes "0" for 2000. */
function httpDate(text: string): number {
  return /\d{1,2}:\d{2}:\d{2}/.test(text) ? Date.parse(text) : NaN;
}

export function formatSeconds(seconds: number): string {
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60) return `${Math.round(seconds / 60)} min`;
  return `${seconds} s`;
}

const CACHE_FIX = 'send Cache-Control: max-age=<seconds> between 1 h and 48 h (matrix-edge: well_known.max_age)';

export function judgeCacheLifetime(lifetime: CacheLifetime): Verdict {
  if (lifetime.seconds === null) {
    return warned(`${lifetime.source}: peers cache it for ${formatSeconds(DEFAULT_CACHE_SECONDS)} (the spec's default)`, CACHE_FIX);
  }
  const cached = `peers cache it for ${formatSeconds(lifetime.seconds)} (${lifetime.source})`;
  if (lifetime.seconds > MAX_CACHE_SECONDS) {
    return warned(`${cached}, more than the 48 h the spec recommends as a cap: a change of m.server takes that long to reach every peer`, CACHE_FIX);
  }
  return passed(cached);
}

/** Values of one header in a raw header list (Node joins repeated ones, which would hide `*, *`). */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
  return out;
}

/** The CORS header browsers need on a well-known GET: exactly one `Access-Control-Allow-Origin: *`. */
export function corsProblem(rawHeaders: readonly string[]): string | null {
  const values = headerValues(rawHeaders, 'access-control-allow-origin');
  if (values.length === 0) return 'no Access-Control-Allow-Origin header: browser clients (Element Web) cannot read it';
  if (values.length > 1 || values[0]!.trim() !== '*') {
    return `Access-Control-Allow-Origin is ${values.map((v) => JSON.stringify(v)).join(' + ')}, not one '*': browsers refuse it`;
  }
  return null;
}

const PREFLIGHT_METHODS = ['GET', 'OPTIONS'];
const PREFLIGHT_HEADERS = ['x-requested-with', 'content-type', 'authorization'];

/** The OPTIONS preflight answer: 2xx with the CORS headers the client-server spec lists. */
export function judgePreflight(status: number, rawHeaders: readonly string[]): Verdict {
  const fix = 'answer OPTIONS with 204 and Access-Control-Allow-Origin: *, Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS, Access-Control-Allow-Headers: X-Requested-With, Content-Type, Authorization';
  const list = (name: string): string[] =>
    headerValues(rawHeaders, name).flatMap((v) => v.split(',').map((s) => s.trim().toLowerCase()));
  const missing: string[] = [];
  if (status < 200 || status > 299) missing.push(`status ${status}, not 2xx`);
  if (!list('access-control-allow-origin').includes('*')) missing.push('no Access-Control-Allow-Origin: *');
  const methods = list('access-control-allow-methods');
  const noMethods = PREFLIGHT_METHODS.filter((m) => !methods.includes(m.toLowerCase()));
  if (noMethods.length > 0) missing.push(`Access-Control-Allow-Methods lacks ${noMethods.join(', ')}`);
  const headers = list('access-control-allow-headers');
  const noHeaders = PREFLIGHT_HEADERS.filter((h) => !headers.includes(h));
  if (noHeaders.length > 0) missing.push(`Access-Control-Allow-Headers lacks ${noHeaders.join(', ')}`);
  if (missing.length > 0) return warned(`OPTIONS preflight: ${missing.join('; ')}`, fix);
  return passed(`OPTIONS ${status} with Access-Control-Allow-Origin/-Methods/-Headers`);
}

/** m.homeserver.base_url of a client well-known, or why there is none. */
export function clientBaseUrl(json: JsonObject): { ok: true; url: string } | { ok: false; problem: string } {
  const hs = json['m.homeserver'];
  if (!isObject(hs)) return { ok: false, problem: 'the JSON has no m.homeserver object' };
  const url = hs['base_url'];
  if (typeof url !== 'string') return { ok: false, problem: 'm.homeserver has no base_url string' };
  if (!/^https?:\/\/[^/]/i.test(url) || !URL.canParse(url)) return { ok: false, problem: `m.homeserver.base_url ${JSON.stringify(url)} is not an http(s) URL` };
  return { ok: true, url: url.replace(/\/+$/, '') };
}

/** What breaks the /.well-known/matrix/support schema (contacts with role and an address, or a support_page). */
export function supportProblems(json: JsonObject): string[] {
  const problems: string[] = [];
  const { contacts, support_page: page } = json;
  if (contacts === undefined && page === undefined) problems.push('neither contacts nor support_page');
  if (page !== undefined && (typeof page !== 'string' || !URL.canParse(page))) problems.push('support_page is not a URL');
  if (contacts !== undefined && !Array.isArray(contacts)) problems.push('contacts is not a list');
  if (Array.isArray(contacts)) {
    contacts.forEach((c: unknown, i) => {
      if (!isObject(c)) return void problems.push(`contacts[${i}] is not an object`);
      if (typeof c['role'] !== 'string' || c['role'] === '') problems.push(`contacts[${i}] has no role`);
      const mxid = c['matrix_id'];
      const email = c['email_address'];
      if (mxid === undefined && email === undefined) problems.push(`contacts[${i}] has neither matrix_id nor email_address`);
      if (mxid !== undefined && (typeof mxid !== 'string' || !isMatrixUserId(mxid))) problems.push(`contacts[${i}].matrix_id is not a user ID`);
      if (email !== undefined && typeof email !== 'string') problems.push(`contacts[${i}].email_address is not a string`);
    });
  }
  return problems;
}
