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
  | { readonly type: 'alpn-challenge-remove'; readonly name: string }
  /**
   * TLS session ticket keys (48 bytes, base64) for every HTTPS listener of every worker, so a
   * client resumes its session whichever worker it reaches; replaced on rotation.
   */
  | { readonly type: 'ticket-keys'; readonly keys: string };

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
  /** Send the traffic figures gathered since the previous report (a `stats` message with this id). */
  | { readonly type: 'report-stats'; readonly id: number }
  /** Stop accepting, drain for up to drainMs, exit. */
  | { readonly type: 'stop'; readonly drainMs: number };

export interface BoundListenerInfo {
  readonly kind: 'https' | 'http';
  readonly address: string;
  readonly port: number;
}

/**
 * What a data-plane process reports to the primary every few seconds, for the metrics
 * (EdgeMetrics.recordDataPlaneStats): counts since its previous report, gauges as they are now.
 */
export interface DataPlaneStats {
  /** The worker's number (1…N); 0 for the data plane running in the primary. */
  readonly worker: number;
  /** Requests answered since the previous report, by route id (plan.routes[].id) and status code. */
  readonly requests: readonly { readonly route: string; readonly status: number; readonly count: number }[];
  /**
   * Upstream latency (request forwarded → response headers) since the previous report, per upstream:
   * how many fell in each bucket of UPSTREAM_LATENCY_BUCKETS (src/observe/metrics.ts; not
   * cumulative, one more count at the end for +Inf) and their sum in seconds.
   */
  readonly upstreamLatency: readonly { readonly upstream: string; readonly buckets: readonly number[]; readonly sumSeconds: number }[];
  /** Client connections open now, per listener, e.g. "https:443", "http:80". */
  readonly openConnections: readonly { readonly listener: string; readonly open: number }[];
  /** Bytes read from and written to client connections (plaintext, headers included) since the previous report. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** When (ms epoch) the upstream last answered a forwarded request; null when it has not since the previous report. */
  readonly upstreamAnsweredAt: number | null;
  /** Each upstream pool: gauges as they are now, aborts since the previous report. */
  readonly upstreams: readonly UpstreamStats[];
  /** Client connections refused since the previous report because limits.max_connections was reached. */
  readonly droppedConnections: number;
}

/** One upstream pool of one data-plane process, as DataPlaneStats reports it. */
export interface UpstreamStats {
  readonly upstream: string;
  /** Requests the pool carries at once (its connections). */
  readonly capacity: number;
  /** Forwarded exchanges not over yet: waiting for a connection, or using one. */
  readonly inFlight: number;
  /** Of those, the ones still waiting for a connection, and for how long the oldest has waited (ms). */
  readonly queued: number;
  readonly oldestQueuedMs: number;
  /** Exchanges aborted since the previous report, by cause (client-gone, body-idle, send-timeout, …). */
  readonly aborted: readonly { readonly cause: string; readonly count: number }[];
}

export type WorkerToPrimary =
  | { readonly type: 'listening'; readonly listeners: readonly BoundListenerInfo[] }
  /** Traffic figures for the metrics, answering `report-stats` with its id. */
  | { readonly type: 'stats'; readonly id: number; readonly stats: DataPlaneStats }
  | { readonly type: 'listen-failed'; readonly error: string }
  /** The worker no longer accepts connections (it is draining). */
  | { readonly type: 'draining' };
