/**
 * The fixed vocabulary of the config: allowed values of the enumerations, ACME presets, and the
 * default of every optional key. Shared by the schema (validation), the rules and the expansion.
 */
import type { ChallengeType, KeyType } from './plan';

export type Issuer = 'acme' | 'internal' | 'files';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
export type AlertFormat = 'generic' | 'matrix';

export const ISSUERS: readonly Issuer[] = ['acme', 'internal', 'files'];
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export const ALERT_FORMATS: readonly AlertFormat[] = ['generic', 'matrix'];
export const CHALLENGE_TYPES: readonly ChallengeType[] = ['http-01', 'tls-alpn-01'];
export const KEY_TYPES: readonly KeyType[] = ['p256', 'p384', 'rsa2048', 'rsa4096'];

/** Loggers whose level `log.levels` can set apart from `log.level`. */
export const LOG_COMPONENTS = ['access', 'data', 'tls', 'workers', 'certs', 'control', 'admin', 'alerts'] as const;
export type LogComponent = (typeof LOG_COMPONENTS)[number];

/** ACME directory presets accepted by `acme.ca`. */
export const ACME_PRESETS: Readonly<Record<string, string>> = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
  zerossl: 'https://acme.zerossl.com/v2/DV90',
  google: 'https://dv.acme-v02.api.pki.goog/directory',
  buypass: 'https://api.buypass.com/acme/directory',
};

/** CAs that refuse accounts without External Account Binding. */
export const EAB_REQUIRED: Readonly<Record<string, string>> = {
  [ACME_PRESETS.zerossl!]: 'ZeroSSL (EAB credentials are in the ZeroSSL dashboard, Developer section)',
  [ACME_PRESETS.google!]: 'Google Trust Services (create EAB credentials with `gcloud publicca external-account-keys create`)',
};

export interface AdminListenValue {
  /** IP literal, without brackets. */
  readonly host: string;
  readonly port: number;
}

/** Prefixes answered 404 unless the very same prefix is listed in proxy.forward_prefixes. */
export const DEFAULT_BLOCKED_PREFIXES: readonly string[] = ['/_synapse/admin/', '/_dendrite/'];
/** Prefixes always forwarded to the homeserver. */
export const DEFAULT_PROXY_PREFIXES: readonly string[] = ['/_matrix/', '/_synapse/client/'];

export const DAY = 86_400_000;
/** Longest delay a Node timer can hold is 2^31-1 ms (≈24.8 days). */
export const TIMER_MAX = 24 * DAY;

/** Defaults for every optional key (durations in ms, sizes in bytes). */
export const DEFAULTS = {
  https: [443, 8448] as readonly number[],
  http: 80 as number | null,
  addresses: ['0.0.0.0', '::'] as readonly string[],
  upstream: 'http://localhost:8008',
  maxAgeMs: 3_600_000,
  issuer: 'acme' as Issuer,
  reloadIntervalMs: 60_000,
  internalLifetimeMs: 7 * DAY,
  acmeCa: 'letsencrypt',
  keyType: 'p256' as KeyType,
  storage: './certs',
  maxBodyBytes: 50 * 1024 * 1024,
  upstreamTimeoutMs: 330_000,
  connectTimeoutMs: 10_000,
  connections: 4096,
  queueTimeoutMs: 10_000,
  bodyIdleTimeoutMs: 60_000,
  sendTimeoutMs: 60_000,
  perConnection: 100,
  perAddress: 512,
  handshakeTimeoutMs: 10_000,
  headerTimeoutMs: 30_000,
  idleTimeoutMs: 120_000,
  maxHeaderBytes: 32 * 1024,
  maxConnections: 10_000,
  maxStreams: 128,
  hstsMaxAgeMs: 365 * DAY,
  drainTimeoutMs: 10_000,
  logLevel: 'info' as LogLevel,
  requestIdHeader: 'X-Request-Id',
  admin: { host: '127.0.0.1', port: 9090 } as AdminListenValue,
  alertFormat: 'generic' as AlertFormat,
  alertAfterFailures: 3,
  alertDaysLeft: [14, 7, 2] as readonly number[],
};
