/**
 * An ACME account: one ECDSA P-256 key per CA and email, created once and kept in the storage in
 * CertMagic's layout (see store/keys.ts; the `.json` holds the account URL as `location`), so a
 * Caddy data directory's account is reused as is. Looked up or registered under the account's
 * storage lock, so two processes on one storage never register two accounts (and never store one
 * account's key beside the other's URL).
 */
import type * as acme from 'acme-client';
import type { Logger } from '../../../observe/log';
import { accountKeys, accountLockKey } from '../../../store/keys';
import type { HeldLock, Storage } from '../../../store/storage';
import { acmeLibrary, type AcmeCalls } from './client';
import { generateCertificateKey } from './keys';

export interface Account {
  readonly client: acme.Client;
  readonly url: string;
}

export interface AccountSettings {
  readonly issuerId: string;
  readonly email: string | null;
  readonly eab: { readonly kid: string; readonly hmacKey: string } | null;
  readonly storage: Storage;
  readonly log: Logger;
}

export class AcmeAccount {
  private account: Promise<Account> | null = null;

  constructor(
    private readonly calls: AcmeCalls,
    private readonly settings: AccountSettings,
  ) {}

  /** The account, loaded or registered on first use; a failure is retried by the next call, not cached. */
  get(): Promise<Account> {
    if (this.account === null) {
      const pending = this.loadOrCreate();
      this.account = pending;
      pending.catch(() => {
        if (this.account === pending) this.account = null;
      });
    }
    return this.account;
  }

  /** The CA forgot the account (a reset staging or test CA): the stored key is registered again on the next get(). */
  async forget(): Promise<void> {
    const { storage, issuerId, email } = this.settings;
    await storage.store(accountKeys(issuerId, email).meta, '{}\n', { secret: false });
    this.account = null;
  }

  private async loadOrCreate(): Promise<Account> {
    const { storage, issuerId, email } = this.settings;
    acmeLibrary(); // loaded first (≈ 0.3 s), not while other processes wait on the lock
    const lock = await storage.lock(accountLockKey(issuerId, email), { purpose: 'ACME account registration' });
    try {
      return await this.loadOrCreateLocked(accountKeys(issuerId, email), lock);
    } finally {
      await lock.release().catch(() => undefined);
    }
  }

  private async loadOrCreateLocked(keys: { key: string; meta: string }, lock: HeldLock): Promise<Account> {
    const { storage, email, log, issuerId, eab } = this.settings;
    const storedKey = await storage.load(keys.key);
    let accountKey: string;
    if (storedKey === null) {
      accountKey = await generateCertificateKey('p256');
      // The key first: an interrupted registration finds the same account again with it.
      await storage.store(keys.key, accountKey, { secret: true, lock });
    } else {
      accountKey = storedKey.toString('utf8');
    }

    const stored = storedKey === null ? null : await readAccountMeta(storage, keys.meta);
    const clientOptions: acme.ClientOptions = {
      directoryUrl: this.calls.directory,
      accountKey,
      backoffAttempts: 12,
      backoffMin: 500,
      backoffMax: 10_000,
      ...(stored?.location !== undefined ? { accountUrl: stored.location } : {}),
      ...(eab !== null ? { externalAccountBinding: { kid: eab.kid, hmacKey: eab.hmacKey } } : {}),
    };
    const client = new (acmeLibrary().Client)(clientOptions);
    if (stored?.location !== undefined) {
      log.debug({ issuer: issuerId, account: stored.location }, 'ACME account loaded from storage');
      return { client, url: stored.location };
    }

    const contact = email === null ? [] : [`mailto:${email}`];
    const terms = await this.calls.step('reading the directory', () => client.getTermsOfServiceUrl());
    const account = await this.calls.step(`registering the ACME account${email === null ? '' : ` for ${email}`}`, () =>
      client.createAccount({ termsOfServiceAgreed: true, contact }),
    );
    const url = client.getAccountUrl();
    const meta = { status: account.status, contact: account.contact ?? contact, termsOfServiceAgreed: true, location: url };
    await storage.store(keys.meta, JSON.stringify(meta, null, 2) + '\n', { secret: false, lock });
    log.info(
      {
        issuer: issuerId,
        directory: this.calls.directory,
        account: url,
        email,
        termsOfService: terms ?? null,
        key: storage.describe(keys.key),
        reusedKey: storedKey !== null,
      },
      storedKey === null
        ? 'ACME account created; by configuring this CA you agree to its terms of service'
        : 'ACME account registered for the stored key',
    );
    return { client, url };
  }
}

async function readAccountMeta(storage: Storage, key: string): Promise<{ location?: string } | null> {
  const raw = await storage.load(key);
  if (raw === null) return null;
  try {
    const parsed: unknown = JSON.parse(raw.toString('utf8'));
    if (parsed !== null && typeof parsed === 'object' && typeof (parsed as { location?: unknown }).location === 'string') {
      return { location: (parsed as { location: string }).location };
    }
  } catch {
    // Unreadable metadata: the account is looked up again with the stored key.
  }
  return {};
}
