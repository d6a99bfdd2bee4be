/**
 * Certificates in a Storage (CertMagic's layout, see keys.ts): a chain, its key and a `.json` of
 * metadata per issuer and name.
 *
 * - Every read checks that the key matches the leaf before anyone serves it.
 * - A replacement is crash-safe: the new chain is staged beside (`<name>.new.crt`), then the key
 *   and the chain are replaced (each atomically), then the stage is removed, metadata last. A
 *   reader that finds the new key beside the old chain takes the staged chain.
 * - The metadata keeps keys it does not own (a Caddy file's `sans`, `issuer_data`).
 */
import type { KeyObject, X509Certificate } from 'node:crypto';
import { ME_CERT_KEY_MISSING } from '../errors';
import { parseCertificateChain, parsePrivateKey } from '../pki/pem';
import { checkKeyMatches, keyMatches } from '../pki/x509';
import { certificateKeys, type CertificateKeys } from './keys';
import type { HeldLock, Storage } from './storage';

/** What the `.json` next to a certificate records (our keys; a Caddy file's keys are kept beside them). */
export interface CertificateMeta {
  /** The names the certificate was requested for. */
  readonly names: readonly string[];
  /** Issuer id (the `<issuer>` key part), e.g. "local". */
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
  /** Where the three parts live (Storage.describe: file paths for the file storage), for messages. */
  readonly locations: { readonly cert: string; readonly key: string; readonly meta: string };
}

export interface CertificateToSave {
  readonly certPem: string;
  readonly keyPem: string;
  readonly meta: CertificateMeta;
}

export class CertificateStore {
  constructor(readonly storage: Storage) {}

  /**
   * The stored certificate, or null when there is none. Throws (naming where) when it is there but
   * unusable: key missing or not matching the leaf, unparsable PEM.
   */
  async loadCertificate(issuer: string, name: string): Promise<StoredCertificate | null> {
    const keys = certificateKeys(issuer, name);
    const at = { cert: this.storage.describe(keys.cert), key: this.storage.describe(keys.key), meta: this.storage.describe(keys.meta) };
    const cert = await this.storage.load(keys.cert);
    // A key without a certificate is what an interrupted first save leaves: nothing is stored yet.
    if (cert === null) return null;
    const key = await this.storage.load(keys.key);
    if (key === null) throw new ME_CERT_KEY_MISSING(at.cert, at.key);
    let certPem = cert.toString('utf8');
    const keyPem = key.toString('utf8');
    let chain = parseCertificateChain(certPem, at.cert);
    const privateKey = parsePrivateKey(keyPem, at.key);
    try {
      checkKeyMatches(chain[0]!, privateKey, at.cert, at.key);
    } catch (err) {
      // A replacement interrupted between the key and the chain: the new chain is staged beside.
      const recovered = await this.recoverStaged(keys, privateKey);
      if (recovered === null) throw err;
      ({ certPem, chain } = recovered);
    }
    const leaf = chain[0]!;

    const recorded = await this.readMeta(keys.meta);
    const names =
      Array.isArray(recorded.names) && recorded.names.every((n) => typeof n === 'string') ? (recorded.names as string[]) : [name];
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
    return { certPem, keyPem, chain, leaf, meta, locations: at };
  }

  /**
   * When the certificate for `name` from `issuer` was last written (ms since the epoch; 0 when there
   * is none): how a process notices that another one stored a certificate.
   */
  async modified(issuer: string, name: string): Promise<number> {
    try {
      return (await this.storage.stat(certificateKeys(issuer, name).cert))?.modifiedMs ?? 0;
    } catch {
      return 0;
    }
  }

  /**
   * Replaces a certificate so that a crash at any instant leaves a usable pair (see the module
   * comment). `lock`: the issuance lock held meanwhile, for storages that fence writes.
   */
  async saveCertificate(issuer: string, name: string, material: CertificateToSave, lock?: HeldLock): Promise<void> {
    const keys = certificateKeys(issuer, name);
    const under = lock === undefined ? {} : { lock };
    await this.storage.store(keys.staged, material.certPem, { ...under, secret: false });
    await this.storage.store(keys.key, material.keyPem, { ...under, secret: true });
    await this.storage.store(keys.cert, material.certPem, { ...under, secret: false });
    await this.storage.delete(keys.staged, under);
    await this.storage.store(keys.meta, JSON.stringify(material.meta, null, 2) + '\n', { ...under, secret: false });
  }

  /**
   * Records the outcome of an issuance attempt in the certificate's `.json`, keeping every other
   * key. No-op when no certificate is stored.
   */
  async recordAttempt(issuer: string, name: string, attempt: { at: string; error?: string }): Promise<void> {
    await this.updateMeta(issuer, name, { lastAttempt: attempt.at, lastError: attempt.error });
  }

  /** Merges `patch` into a certificate's `.json` (undefined values remove keys). No-op when no certificate is stored. */
  async updateMeta(issuer: string, name: string, patch: Readonly<Record<string, unknown>>): Promise<void> {
    const keys = certificateKeys(issuer, name);
    if ((await this.storage.load(keys.cert)) === null) return;
    const next: Record<string, unknown> = { ...(await this.readMeta(keys.meta)) };
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) delete next[key];
      else next[key] = value;
    }
    await this.storage.store(keys.meta, JSON.stringify(next, null, 2) + '\n', { secret: false });
  }

  /**
   * A certificate's `.json` as an object; {} when absent or unreadable (metadata is advisory: the
   * certificate itself is authoritative, and unreadable metadata is replaced on the next write).
   */
  private async readMeta(key: string): Promise<Record<string, unknown>> {
    const json = await this.storage.load(key);
    if (json === null) return {};
    try {
      const parsed: unknown = JSON.parse(json.toString('utf8'));
      return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }

  /** The staged chain when it matches `key`, made the stored chain; null otherwise. */
  private async recoverStaged(keys: CertificateKeys, key: KeyObject): Promise<{ certPem: string; chain: X509Certificate[] } | null> {
    const staged = await this.storage.load(keys.staged);
    if (staged === null) return null;
    const certPem = staged.toString('utf8');
    let chain: X509Certificate[];
    try {
      chain = parseCertificateChain(certPem, this.storage.describe(keys.staged));
      if (!keyMatches(chain[0]!, key)) return null;
    } catch {
      return null;
    }
    await this.storage.store(keys.cert, certPem, { secret: false }).catch(() => undefined);
    await this.storage.delete(keys.staged).catch(() => undefined);
    return { certPem, chain };
  }
}
