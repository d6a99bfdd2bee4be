/**
 * An Issuer obtains certificates (CertMagic's Issuer): the local CA, an ACME CA. What only some
 * issuers can do is an optional method a caller checks for (`issuer.renewalInfo !== undefined`),
 * never a downcast to a class.
 */
import type { X509Certificate } from 'node:crypto';
import type { RenewalWindow } from './ari';

export interface IssuedCertificate {
  /** PEM chain, leaf first. */
  readonly certPem: string;
  /** PEM private key of the leaf. */
  readonly keyPem: string;
}

export interface IssueOptions {
  /** The certificate being renewed (ACME `replaces`), when there is one. */
  readonly replacing?: X509Certificate | null;
}

/** A CA's suggested renewal window for one certificate, and when to ask again. */
export interface RenewalAdvice {
  readonly window: RenewalWindow;
  readonly retryAfterMs: number;
}

export interface Issuer {
  /** Storage key (`certificates/<id>/…`) and log label, e.g. "local". */
  readonly id: string;
  /**
   * A certificate for `names`. Throws an error carrying its category (src/errors.ts), and the
   * CA's problem document and Retry-After when there are any.
   */
  issue(names: readonly string[], options?: IssueOptions): Promise<IssuedCertificate>;
  /** The CA's renewal window for `leaf` (ARI); null when the CA offers none. Throws when it cannot be asked. */
  renewalInfo?(leaf: X509Certificate): Promise<RenewalAdvice | null>;
  /** Revokes a certificate this issuer issued (RFC 5280 reason code, default unspecified). */
  revoke?(certPem: string, reason?: number): Promise<void>;
  /** Have `observer` told how long each request to the CA took (for the latency metric). */
  observeRequests?(observer: (seconds: number) => void): void;
}
