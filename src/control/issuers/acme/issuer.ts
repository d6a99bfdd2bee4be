/**
 * The ACME issuer (`tls.issuer: acme`): certificates from an RFC 8555 CA through acme-client, kept
 * behind our own Issuer interface so the library can be replaced. The parts, one concept a file:
 *
 * - client.ts: the library (loaded on first use, its internals checked), the request context
 *   (this issuer's HTTPS agent, captured problem documents and Retry-After), protocol steps whose
 *   failures carry their category.
 * - account.ts: the account, looked up or registered once under its storage lock.
 * - order.ts: orders and their authorizations, answered by the solvers (HTTP-01, TLS-ALPN-01),
 *   falling back to the next challenge type.
 * - renewal-info.ts: the CA's renewal window (ARI).
 *
 * Trust: the CA's own HTTPS is verified against `acme.ca_roots` when given (only those), else the
 * default roots. Rate limits: a 429 is not retried inside the protocol library; its Retry-After
 * reaches the scheduler through the error's `retryAfterMs`.
 */
import type { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as https from 'node:https';
import type { ChallengeType, KeyType } from '../../../config/plan';
import { EdgeError, ME_ACME_CA_ROOTS, ME_ACME_NO_NAMES, errorMessage } from '../../../errors';
import type { Logger } from '../../../observe/log';
import { parseCertificateChain } from '../../../pki/pem';
import { acmeIssuerId } from '../../../store/keys';
import type { Storage } from '../../../store/storage';
import type { IssuedCertificate, IssueOptions, Issuer, RenewalAdvice } from '../../issuer';
import type { Solver } from '../../solver';
import { AcmeAccount } from './account';
import { AcmeCalls } from './client';
import { AcmeOrders } from './order';
import { fetchRenewalInfo } from './renewal-info';

export interface AcmeIssuerOptions {
  /** Directory URL (presets already expanded). */
  readonly directory: string;
  /** Account contact; null registers without one (stored as "default", like CertMagic). */
  readonly email: string | null;
  /** Absolute paths of PEM files: when non-empty, the only roots trusted for the CA's HTTPS. */
  readonly caRoots: readonly string[];
  /** External Account Binding, for CAs that require it. */
  readonly eab?: { readonly kid: string; readonly hmacKey: string } | null;
  /** Profile sent in new orders; null for the CA's default. */
  readonly profile?: string | null;
  /** Challenge types, in order of preference (default: http-01, tls-alpn-01). */
  readonly challenges?: readonly ChallengeType[];
  /** Key type of certificate keys (default p256). */
  readonly keyType?: KeyType;
  readonly storage: Storage;
  /** Who publishes the answer to each challenge type (the issuer never does itself). */
  readonly solvers: ReadonlyMap<ChallengeType, Solver>;
  readonly log: Logger;
}

export class AcmeIssuer implements Issuer {
  readonly id: string;
  private readonly calls: AcmeCalls;
  private readonly account: AcmeAccount;
  private readonly orders: AcmeOrders;
  private requestObserver: ((seconds: number) => void) | undefined;

  private constructor(
    private readonly options: AcmeIssuerOptions,
    agent: https.Agent | undefined,
  ) {
    this.id = acmeIssuerId(options.directory);
    this.calls = new AcmeCalls(options.directory, agent, () => this.requestObserver);
    this.account = new AcmeAccount(this.calls, { issuerId: this.id, email: options.email, eab: options.eab ?? null, storage: options.storage, log: options.log });
    this.orders = new AcmeOrders(this.calls, {
      profile: options.profile ?? null,
      challenges: options.challenges ?? ['http-01', 'tls-alpn-01'],
      keyType: options.keyType ?? 'p256',
      solvers: options.solvers,
    });
  }

  /** Reads `caRoots` (errors name the file) and prepares the issuer; no network traffic yet. */
  static async create(options: AcmeIssuerOptions): Promise<AcmeIssuer> {
    let agent: https.Agent | undefined;
    if (options.caRoots.length > 0) {
      const ca: string[] = [];
      for (const file of options.caRoots) {
        let pem: string;
        try {
          pem = await fsp.readFile(file, 'utf8');
        } catch (err) {
          throw new ME_ACME_CA_ROOTS(file, errorMessage(err));
        }
        parseCertificateChain(pem, `acme.ca_roots file ${file}`);
        ca.push(pem);
      }
      agent = new https.Agent({ ca, keepAlive: true, timeout: 5000 });
    }
    return new AcmeIssuer(options, agent);
  }

  /** `observer` is told how long each HTTP request to the CA took, answered or not. */
  observeRequests(observer: (seconds: number) => void): void {
    this.requestObserver = observer;
  }

  async issue(names: readonly string[], options: IssueOptions = {}): Promise<IssuedCertificate> {
    if (names.length === 0) throw new ME_ACME_NO_NAMES();
    try {
      return await this.issueOnce(names, options);
    } catch (err) {
      // The CA forgot the stored account (a reset staging or test CA): register the stored key again.
      if (!(err instanceof EdgeError) || err.problemType !== 'accountDoesNotExist') throw err;
      this.options.log.warn({ issuer: this.id, err: err.message }, 'the CA does not know the stored ACME account; registering it again');
      await this.account.forget();
      return this.issueOnce(names, options);
    }
  }

  private issueOnce(names: readonly string[], options: IssueOptions): Promise<IssuedCertificate> {
    return this.calls.run(async () => {
      const { client } = await this.account.get();
      return this.orders.obtain(client, names, options.replacing ?? null, this.options.log.child({ issuer: this.id, names }));
    });
  }

  /**
   * The CA's suggested renewal window for `leaf` (RFC 9773), or null when the CA offers no
   * renewal information. Throws when the CA cannot be asked.
   */
  renewalInfo(leaf: X509Certificate): Promise<RenewalAdvice | null> {
    return this.calls.run(async () => {
      const { client } = await this.account.get();
      return fetchRenewalInfo(this.calls, client, leaf, { logger: this.options.log, issuer: this.id });
    });
  }

  /** Revokes `certPem` (RFC 8555 §7.6) with the account's key; `reason` is an RFC 5280 reason code. */
  revoke(certPem: string, reason?: number): Promise<void> {
    return this.calls.run(async () => {
      const { client } = await this.account.get();
      await this.calls.step('revoking a certificate', () => client.revokeCertificate(certPem, reason === undefined ? {} : { reason }));
    });
  }
}
