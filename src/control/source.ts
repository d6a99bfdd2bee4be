/**
 * Certificate sources: where the control plane gets the certificates it hands to the data plane —
 * `internal` (local CA) and `acme` (a ManagedSource over issuers), `files` (admin-provided PEM).
 * Every source says whether it manages certificates itself (`managed`: status, renewal, events),
 * so no caller needs to know which class it is.
 */
import type { ErrorCategory } from '../errors';
import type { CertificateMaterial } from '../plane/messages';

export interface CertificateSource {
  /** Storage key of this source in logs and `certs` output, e.g. "local". */
  readonly id: string;
  /** Renewal state and control when this source obtains and renews certificates itself; null otherwise. */
  readonly managed: ManagedCertificates | null;
  /**
   * Produce a certificate for every configured name, then keep them fresh. `install` is called
   * once per certificate at start and again whenever one is replaced (renewal, file change).
   * Resolves once every name has a certificate (a background source: once the stored ones are
   * installed); rejects with a clear Error when one cannot be had.
   */
  start(install: (material: CertificateMaterial) => void): Promise<void>;
  /** Stop timers and watchers; never throws. */
  stop(): void;
}

/** Certificates a source obtains and renews itself (`matrix-edge certs`, `renew`, metrics and alerts). */
export interface ManagedCertificates {
  /** Per name: what is served and what happens next. */
  status(): NameStatus[];
  /**
   * Renew now (`matrix-edge renew`): every name (null or []), or those given. Without `force` a
   * name whose certificate is not due yet is left alone. Rejects naming a name that is not configured.
   */
  renewNow(names: readonly string[] | null, force: boolean): Promise<AttemptResult[]>;
  /** Be told about requests, failures and CA latency. Returns the unsubscribe. */
  on(listener: CertificateListener): () => void;
  /** Resolves once every name has a certificate installed (at once when they all do). */
  whenReady(): Promise<void>;
}

export interface NameStatus {
  readonly name: string;
  readonly issuer: string | null;
  readonly serial: string | null;
  readonly notAfter: string | null;
  readonly nextRenewal: string | null;
  readonly nextReason: string | null;
  readonly failures: number;
  readonly lastError: string | null;
}

export interface AttemptResult {
  readonly name: string;
  readonly ok: boolean;
  /** Serial of the certificate served after the attempt. */
  readonly serial: string | null;
  /** renewed: a new order; stored: another process had renewed it; not-due: left alone; failed. */
  readonly outcome: 'renewed' | 'stored' | 'not-due' | 'failed';
  readonly error: string | null;
}

/** What managed certificates tell their listeners (metrics, alerts). */
export type CertificateEvent =
  /** One certificate request to one issuer ended (a name's attempt asks the primary, then each fallback). */
  | { readonly type: 'request'; readonly name: string; readonly issuer: string; readonly ok: true }
  | { readonly type: 'request'; readonly name: string; readonly issuer: string; readonly ok: false; readonly errorType: ErrorCategory; readonly error: string }
  /**
   * A name's attempt failed with every issuer: `failures` in a row so far; `category` of the last
   * issuer's failure; `notAfter` (ms) of what is still served.
   */
  | { readonly type: 'failed'; readonly name: string; readonly failures: number; readonly error: string; readonly category: ErrorCategory; readonly notAfter: number | null }
  /** One HTTP request to an issuer's CA took `seconds`. */
  | { readonly type: 'ca-request'; readonly issuer: string; readonly seconds: number };

export type CertificateListener = (event: CertificateEvent) => void;
