/**
 * The key layout, in one place (CertMagic's KeyBuilder and StorageKeys): CertMagic's layout, so a
 * Caddy data directory can be imported, and lock names.
 *
 *   certificates/<issuer>/<name>/<name>.crt   PEM chain, leaf first
 *   certificates/<issuer>/<name>/<name>.key   PEM private key
 *   certificates/<issuer>/<name>/<name>.json  metadata
 *   certificates/<issuer>/<name>/<name>.new.crt  a replacement's chain, while it is being stored
 *   acme/<issuer>/users/<email>/<user>.key, .json  an ACME account (the .json has its URL as `location`)
 *   pki/authorities/local/root.crt, root.key  the local CA
 *
 * Locks: `issue_cert_<issuer>_<name>` while a certificate is obtained, `acme_account_…` while an
 * account is registered.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { ME_ACME_DIRECTORY_KEY, ME_ISSUER_INVALID, ME_KEY_INVALID, ME_NAME_INVALID } from '../errors';

const DNS_LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/**
 * Throws unless `name` is a lower-case DNS name (optionally a `*.` wildcard) or an IP literal,
 * so it can be used as a key part: no '/', no '..'.
 */
export function validateName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253) {
    throw new ME_NAME_INVALID(JSON.stringify(name), 'a DNS name or an IP address');
  }
  if (isIP(name) !== 0 && !name.includes('%') && name === name.toLowerCase()) return;
  const labels = (name.startsWith('*.') ? name.slice(2) : name).split('.');
  if (!labels.every((l) => DNS_LABEL.test(l))) {
    throw new ME_NAME_INVALID(JSON.stringify(name), "a lower-case DNS name (a-z, 0-9, '-') or an IP address");
  }
}

/** The key part CertMagic uses for a name: `*` → `wildcard_`, `:` (IPv6) → `-`. */
export function storageKey(name: string): string {
  validateName(name);
  return name.replace(/\*/g, 'wildcard_').replace(/:/g, '-');
}

const ISSUER_ID = /^[a-z0-9][a-z0-9._@+-]*$/;

function validateIssuer(issuer: string): void {
  if (typeof issuer !== 'string' || !ISSUER_ID.test(issuer) || issuer.includes('..') || issuer.length > 255) {
    throw new ME_ISSUER_INVALID(JSON.stringify(issuer));
  }
}

const SEGMENT = /^[A-Za-z0-9@._+-]+$/;

/** The segments of a storage key; throws unless it is relative, of [A-Za-z0-9@._+-] segments, no '.' or '..'. */
export function keySegments(key: string): string[] {
  const segments = typeof key === 'string' ? key.split('/') : [];
  const ok = key.length > 0 && key.length <= 1024 && segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..');
  if (!ok) throw new ME_KEY_INVALID(JSON.stringify(key));
  return segments;
}

/** CertMagic's StorageKeys.Safe: lower case, '+' → '_plus_', '*' → 'wildcard_', ':' → '-', '..' removed, only [\w@.-] kept. */
export function safeKey(text: string): string {
  return text
    .trim()
    .toLowerCase()
    .replace(/ /g, '_')
    .replace(/\+/g, '_plus_')
    .replace(/\*/g, 'wildcard_')
    .replace(/:/g, '-')
    .replace(/\.\./g, '')
    .replace(/[^\w@.-]/g, '');
}

/**
 * The storage key of an ACME CA, as CertMagic derives it: host (with port) + path, '/' → '-', made
 * safe and lower-cased, e.g. `acme-v02.api.letsencrypt.org-directory`, `127.0.0.1-14000-dir`.
 */
export function acmeIssuerId(directory: string): string {
  let key = directory;
  try {
    const u = new URL(directory);
    key = u.host;
    const p = u.pathname.replace(/[/\\]/g, '-').replace(/^-+|-+$/g, '');
    if (p !== '') key += `-${p}`;
  } catch {
    // Not a URL: use the text itself, made safe below.
  }
  const safe = safeKey(key).replace(/^[^a-z0-9]+/, '');
  if (safe === '') throw new ME_ACME_DIRECTORY_KEY(JSON.stringify(directory));
  return safe;
}

export interface CertificateKeys {
  readonly cert: string;
  readonly key: string;
  readonly meta: string;
  /** The new chain of a replacement in progress (see CertificateStore.saveCertificate). */
  readonly staged: string;
}

/** The keys of the certificate for `name` from `issuer`. */
export function certificateKeys(issuer: string, name: string): CertificateKeys {
  validateIssuer(issuer);
  const part = storageKey(name);
  const dir = `certificates/${issuer}/${part}`;
  return { cert: `${dir}/${part}.crt`, key: `${dir}/${part}.key`, meta: `${dir}/${part}.json`, staged: `${dir}/${part}.new.crt` };
}

/** The keys of an ACME account's key and metadata (CertMagic's layout; no email → "default"). */
export function accountKeys(issuerId: string, email: string | null): { key: string; meta: string } {
  const who = email === null || email === '' ? 'default' : email;
  const at = who.indexOf('@');
  const username = at === -1 ? who : at === 0 ? who.slice(1) : who.slice(0, at);
  const dir = `acme/${issuerId}/users/${safeKey(who) || 'default'}`;
  const base = safeKey(username) || 'default';
  return { key: `${dir}/${base}.key`, meta: `${dir}/${base}.json` };
}

/** The local CA's root (Caddy's path, so a Caddy root can be imported). */
export const LOCAL_CA_KEYS = { cert: 'pki/authorities/local/root.crt', key: 'pki/authorities/local/root.key' } as const;

/** Lock names longer than this are shortened (they become file names). */
const MAX_LOCK_KEY = 200;

function shortenLockKey(key: string): string {
  if (key.length <= MAX_LOCK_KEY) return key;
  return `${key.slice(0, 183)}_${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

/**
 * The lock held while a certificate for `name` is obtained from `issuerId`:
 * `issue_cert_<issuer>_<name part>`; too long ones are shortened, kept unique by a hash.
 */
export function issueLockKey(issuerId: string, name: string): string {
  validateIssuer(issuerId);
  return shortenLockKey(`issue_cert_${issuerId}_${storageKey(name)}`);
}

/** The lock held while an ACME account is looked up or registered. */
export function accountLockKey(issuerId: string, email: string | null): string {
  const { meta } = accountKeys(issuerId, email);
  return `acme_account_${meta.replace(/\.json$/, '').replace(/\//g, '_')}`.slice(0, MAX_LOCK_KEY);
}
