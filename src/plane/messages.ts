/**
 * The messages between the control plane (decides, owns durable state) and the data plane
 * (owns sockets). Plain JSON-serialisable data so the same messages can go over cluster IPC.
 */
import type { Plan } from '../config/plan';

/** A certificate chain and its key, ready to serve. */
export interface CertificateMaterial {
  /** DNS names (lower case) this certificate is served for; from the plan, not from the certificate. */
  readonly names: readonly string[];
  /** PEM chain, leaf first. */
  readonly certPem: string;
  /** PEM private key matching the leaf. */
  readonly keyPem: string;
  /** ISO 8601 expiry of the leaf, for logs. */
  readonly notAfter: string;
}

export type ControlToData =
  | { readonly type: 'plan'; readonly plan: Plan }
  | { readonly type: 'certificate'; readonly material: CertificateMaterial }
  /** ACME HTTP-01: answer `GET /.well-known/acme-challenge/<token>` with the key authorization. */
  | { readonly type: 'challenge-add'; readonly token: string; readonly keyAuthorization: string }
  | { readonly type: 'challenge-remove'; readonly token: string }
  /**
   * ACME TLS-ALPN-01: a ClientHello for `name` offering ALPN `acme-tls/1` gets this self-signed
   * challenge certificate (RFC 8737) on every HTTPS listener; other handshakes are unaffected.
   */
  | { readonly type: 'alpn-challenge-add'; readonly name: string; readonly certPem: string; readonly keyPem: string }
  | { readonly type: 'alpn-challenge-remove'; readonly name: string };

export type DataToControl =
  | { readonly type: 'challenge-hit'; readonly token: string; readonly host: string }
  | { readonly type: 'ready'; readonly worker: number };

/** One direction of the channel: in-process it is a function call, across processes an IPC send. */
export type Send<T> = (message: T) => void;

/** What the primary process tells a data-plane worker process, beyond the plane messages. */
export type PrimaryToWorker =
  | ControlToData
  /** Bind the plan's listeners (SO_REUSEPORT: every worker binds the same ports). */
  | { readonly type: 'listen' }
  /** Stop accepting, drain for up to drainMs, exit. */
  | { readonly type: 'stop'; readonly drainMs: number };

export interface BoundListenerInfo {
  readonly kind: 'https' | 'http';
  readonly address: string;
  readonly port: number;
}

export type WorkerToPrimary =
  | { readonly type: 'listening'; readonly listeners: readonly BoundListenerInfo[] }
  | { readonly type: 'listen-failed'; readonly error: string }
  /** The worker no longer accepts connections (it is draining). */
  | { readonly type: 'draining' };
