/**
 * Certificate storage on the local file system, in CertMagic's layout so Caddy's data directory
 * can be imported later:
 *
 *   certificates/<issuer>/<name>/<name>.crt   PEM chain, leaf first
 *   certificates/<issuer>/<name>/<name>.key   PEM private key
 *   certificates/<issuer>/<name>/<name>.json  metadata
 *   pki/authorities/local/root.crt, root.key  the local CA
 *
 * Directories are 0700, keys 0600, other files 0644. Every write is atomic (temp file in the same
 * directory, fsync, rename over the target, fsync the directory), and every read of a certificate
 * checks that the key matches the leaf before anyone serves it.
 */
import { randomBytes, type KeyObject, type X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { isIP } from 'node:net';
import * as path from 'node:path';
import { errorMessage } from '../errors';
import { parseCertificateChain, parsePrivateKey } from '../pki/pem';
import { checkKeyMatches } from '../pki/x509';

export const DIR_MODE = 0o700;
export const SECRET_MODE = 0o600;
export const PUBLIC_MODE = 0o644;

/** What the `.json` next to a certificate records (our keys; a Caddy file's keys are kept beside them). */
export interface CertificateMeta {
  /** The names the certificate was requested for. */
  readonly names: readonly string[];
  /** Issuer id (the `<issuer>` path part), e.g. "local". */
  readonly issuer: string;
  /** Leaf serial number, hex as Node prints it. */
  readonly serial: string;
  /** ISO 8601. */
  readonly notBefore: string;
  /** ISO 8601. */
  readonly notAfter: string;
  /** ISO 8601 of the last issuance attempt. */
  readonly lastAttempt?: string;
  /** Error message of the last attempt, when it failed. */
  readonly lastError?: string;
  /** ISO 8601 of the planned renewal, as the last running edge planned it. */
  readonly nextRenewal?: string;
  /** Why then: "ARI window …" or "1/3 of lifetime left". */
  readonly nextRenewalReason?: string;
}

export interface StoredCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  /** Parsed chain, leaf first (never empty). */
  readonly chain: readonly X509Certificate[];
  readonly leaf: X509Certificate;
  /** From the leaf (serial, dates) and the `.json` (names, lastAttempt, lastError) when it has them. */
  readonly meta: CertificateMeta;
  /** Absolute paths of the three files. */
  readonly paths: { readonly cert: string; readonly key: string; readonly meta: string };
}

export interface CertificateToSave {
  readonly certPem: string;
  readonly keyPem: string;
  readonly meta: CertificateMeta;
}

const DNS_LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/**
 * Throws unless `name` is a lower-case DNS name (optionally a `*.` wildcard) or an IP literal,
 * so it can be used as a path part: no '/', no '..', nothing a file system treats specially.
 */
export function validateName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253) {
    throw new Error(`invalid certificate name ${JSON.stringify(name)}: expected a DNS name or an IP address`);
  }
  if (isIP(name) !== 0 && !name.includes('%') && name === name.toLowerCase()) return;
  const labels = (name.startsWith('*.') ? name.slice(2) : name).split('.');
  if (!labels.every((l) => DNS_LABEL.test(l))) {
    throw new Error(
      `invalid certificate name ${JSON.stringify(name)}: expected a lower-case DNS name (a-z, 0-9, '-') or an IP address`,
    );
  }
}

/** The path part CertMagic uses for a name: `*` → `wildcard_`, `:` (IPv6) → `-`. */
export function storageKey(name: string): string {
  validateName(name);
  return name.replace(/\*/g, 'wildcard_').replace(/:/g, '-');
}

const ISSUER_KEY = /^[a-z0-9][a-z0-9._@+-]*$/;

function validateIssuer(issuer: string): void {
  if (!ISSUER_KEY.test(issuer) || issuer.includes('..') || issuer.length > 255) {
    throw new Error(`invalid issuer key ${JSON.stringify(issuer)}: expected lower-case letters, digits, '.', '-', '_'`);
  }
}

const REL_SEGMENT = /^[A-Za-z0-9@._+-]+$/;

function validateRel(rel: string): string[] {
  const segments = rel.split('/');
  const ok =
    rel.length > 0 &&
    rel.length <= 1024 &&
    segments.every((s) => REL_SEGMENT.test(s) && s !== '.' && s !== '..');
  if (!ok) {
    throw new Error(
      `invalid storage path ${JSON.stringify(rel)}: expected a relative path of [A-Za-z0-9@._+-] segments, no '.' or '..'`,
    );
  }
  return segments;
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

export class FileStore {
  /** Absolute storage root. */
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** Absolute path of a storage-relative path (validated). */
  resolve(rel: string): string {
    return path.join(this.root, ...validateRel(rel));
  }

  /** Storage-relative paths of a certificate's three files. */
  certificatePaths(issuer: string, name: string): { cert: string; key: string; meta: string; staged: string } {
    validateIssuer(issuer);
    const key = storageKey(name);
    const dir = `certificates/${issuer}/${key}`;
    return { cert: `${dir}/${key}.crt`, key: `${dir}/${key}.key`, meta: `${dir}/${key}.json`, staged: `${dir}/${key}.new.crt` };
  }

  /**
   * The stored certificate, or null when there is none. Throws (naming the files) when it is there
   * but unusable: key missing or not matching the leaf, unparsable PEM.
   */
  async loadCertificate(issuer: string, name: string): Promise<StoredCertificate | null> {
    const rel = this.certificatePaths(issuer, name);
    const paths = { cert: this.resolve(rel.cert), key: this.resolve(rel.key), meta: this.resolve(rel.meta) };
    const cert = await this.readFile(rel.cert);
    // A key without a certificate is what an interrupted first save leaves: nothing is stored yet.
    if (cert === null) return null;
    const key = await this.readFile(rel.key);
    if (key === null) throw new Error(`${paths.cert} has no private key: ${paths.key} is missing`);
    let certPem = cert.toString('utf8');
    const keyPem = key.toString('utf8');
    let chain = parseCertificateChain(certPem, paths.cert);
    const privateKey = parsePrivateKey(keyPem, paths.key);
    try {
      checkKeyMatches(chain[0]!, privateKey, paths.cert, paths.key);
    } catch (err) {
      // A replacement interrupted between the key and the chain: the new chain is staged beside.
      const recovered = await this.recoverStaged(rel, privateKey);
      if (recovered === null) throw err;
      ({ certPem, chain } = recovered);
    }
    const leaf = chain[0]!;

    const recorded = await this.readMeta(rel.meta);
    const names =
      Array.isArray(recorded.names) && recorded.names.every((n) => typeof n === 'string')
        ? (recorded.names as string[])
        : [name];
    const meta: CertificateMeta = {
      names,
      issuer,
      serial: leaf.serialNumber,
      notBefore: leaf.validFromDate.toISOString(),
      notAfter: leaf.validToDate.toISOString(),
      ...(typeof recorded.lastAttempt === 'string' ? { lastAttempt: recorded.lastAttempt } : {}),
      ...(typeof recorded.lastError === 'string' ? { lastError: recorded.lastError } : {}),
      ...(typeof recorded.nextRenewal === 'string' ? { nextRenewal: recorded.nextRenewal } : {}),
      ...(typeof recorded.nextRenewalReason === 'string' ? { nextRenewalReason: recorded.nextRenewalReason } : {}),
    };
    return { certPem, keyPem, chain, leaf, meta, paths };
  }

  /**
   * A certificate's `.json` as an object; {} when absent or unreadable (metadata is advisory: the
   * certificate itself is authoritative, and unreadable metadata is replaced on the next write).
   */
  private async readMeta(rel: string): Promise<Record<string, unknown>> {
    const json = await this.readFile(rel);
    if (json === null) return {};
    try {
      const parsed: unknown = JSON.parse(json.toString('utf8'));
      return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }

  /**
   * Replaces a certificate so that a crash at any instant leaves a usable pair: the new chain is
   * staged beside (`<name>.new.crt`), then the key and the chain are replaced, each atomically, then
   * the stage is removed. A reader that finds the new key beside the old chain takes the staged
   * chain (see loadCertificate). Metadata last.
   */
  async saveCertificate(issuer: string, name: string, material: CertificateToSave): Promise<void> {
    const rel = this.certificatePaths(issuer, name);
    await this.writeFile(rel.staged, material.certPem, { secret: false });
    await this.writeFile(rel.key, material.keyPem, { secret: true });
    await this.writeFile(rel.cert, material.certPem, { secret: false });
    await fsp.rm(this.resolve(rel.staged), { force: true });
    await this.writeFile(rel.meta, JSON.stringify(material.meta, null, 2) + '\n', { secret: false });
  }

  /** The staged chain when it matches `key`, made the stored chain; null otherwise. */
  private async recoverStaged(
    rel: { cert: string; staged: string },
    key: KeyObject,
  ): Promise<{ certPem: string; chain: X509Certificate[] } | null> {
    const staged = await this.readFile(rel.staged);
    if (staged === null) return null;
    const certPem = staged.toString('utf8');
    let chain: X509Certificate[];
    try {
      chain = parseCertificateChain(certPem, this.resolve(rel.staged));
      if (!chain[0]!.checkPrivateKey(key)) return null;
    } catch {
      return null;
    }
    await this.writeFile(rel.cert, certPem, { secret: false }).catch(() => undefined);
    await fsp.rm(this.resolve(rel.staged), { force: true }).catch(() => undefined);
    return { certPem, chain };
  }

  /**
   * Records the outcome of an issuance attempt in the certificate's `.json`, keeping every other key
   * (a Caddy file's `sans`/`issuer_data` survive). No-op when no certificate is stored.
   */
  async recordAttempt(issuer: string, name: string, attempt: { at: string; error?: string }): Promise<void> {
    await this.updateMeta(issuer, name, { lastAttempt: attempt.at, lastError: attempt.error });
  }

  /**
   * Merges `patch` into a certificate's `.json` (undefined values remove keys), keeping every other
   * key. No-op when no certificate is stored.
   */
  async updateMeta(issuer: string, name: string, patch: Readonly<Record<string, unknown>>): Promise<void> {
    const rel = this.certificatePaths(issuer, name);
    if ((await this.readFile(rel.cert)) === null) return;
    const next: Record<string, unknown> = { ...(await this.readMeta(rel.meta)) };
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) delete next[key];
      else next[key] = value;
    }
    await this.writeFile(rel.meta, JSON.stringify(next, null, 2) + '\n', { secret: false });
  }

  /** Contents of a storage-relative file, or null when it does not exist. */
  async readFile(rel: string): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.resolve(rel));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /**
   * Atomically replaces a storage-relative file (mode 0600 when `secret`, else 0644), creating
   * missing directories with mode 0700.
   */
  async writeFile(rel: string, data: string | Uint8Array, options: { secret: boolean }): Promise<void> {
    const target = this.resolve(rel);
    const dir = path.dirname(target);
    await this.ensureDir(dir);
    const mode = options.secret ? SECRET_MODE : PUBLIC_MODE;
    const temp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
    let renamed = false;
    try {
      const handle = await fsp.open(temp, 'wx', mode);
      try {
        await handle.chmod(mode); // the umask may have narrowed or widened what open() gave
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fsp.rename(temp, target);
      renamed = true;
      await syncDir(dir);
    } finally {
      if (!renamed) await fsp.rm(temp, { force: true }).catch(() => undefined);
    }
  }

  /**
   * Creates the storage root (and missing parents) with mode 0700 when it is not there, and
   * narrows an existing root that others can read or enter to 0700 (it holds private keys).
   * Returns the mode it had when it was narrowed, else null.
   */
  async ensureRoot(): Promise<number | null> {
    await this.ensureDir(this.root);
    const mode = (await fsp.stat(this.root)).mode & 0o777;
    if ((mode & 0o077) === 0) return null;
    await fsp.chmod(this.root, DIR_MODE);
    return mode;
  }

  /** Creates `dir` (under the root) and its missing parents with mode 0700. */
  private async ensureDir(dir: string): Promise<void> {
    const first = await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
    if (first === undefined) return;
    // chmod what was created, whatever the umask did to it.
    let p = dir;
    for (;;) {
      await fsp.chmod(p, DIR_MODE);
      if (p === first || path.dirname(p) === p) break;
      p = path.dirname(p);
    }
    await syncDir(path.dirname(first));
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
