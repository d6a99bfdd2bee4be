/**
 * The validated, immutable plan that everything downstream of config loading consumes.
 * Pure data: no functions, no sockets, no classes — it can cross a process boundary as JSON.
 */

/** Where a TLS or plain listener binds. */
export interface ListenerPlan {
  readonly port: number;
  /** Bind addresses, e.g. ["0.0.0.0", "::"]. */
  readonly addresses: readonly string[];
}

/** A named upstream pool. The simple config's `upstream:` expands to one pool named "homeserver". */
export interface UpstreamPlan {
  readonly name: string;
  /** The URL as configured, e.g. "http://localhost:8008". */
  readonly url: string;
  /**
   * The origin actually dialled: scheme://address:port. "localhost" is resolved to 127.0.0.1 at load
   * time so the edge never races IPv4/IPv6 on every connection.
   */
  readonly dial: string;
  /** Time allowed for the upstream's response headers and between body chunks (long polls), ms. */
  readonly timeoutMs: number;
  /** Time allowed to open a connection to the upstream, ms. */
  readonly connectTimeoutMs: number;
  /** Requests in flight to the upstream at once, per data-plane process (one keep-alive connection each). */
  readonly connections: number;
  /** How long a request may wait for a free upstream connection before it is answered 503, ms. */
  readonly queueTimeoutMs: number;
}

/** How a request path is matched. Paths are compared as raw bytes (no decoding). */
export type RouteMatch =
  | { readonly kind: 'exact'; readonly path: string }
  | { readonly kind: 'prefix'; readonly prefix: string };

export type WellKnownKind = 'server' | 'client' | 'support';

export type RouteAction =
  | {
      readonly type: 'proxy';
      readonly upstream: string;
      /** Largest request body accepted, bytes. */
      readonly maxBodyBytes: number;
    }
  | { readonly type: 'well-known'; readonly which: WellKnownKind }
  | {
      /** Answer locally with a Matrix JSON error. */
      readonly type: 'status';
      readonly status: number;
      readonly errcode: string;
      readonly error: string;
    };

/** One routing rule. The router walks the ordered list; the first match wins. */
export interface RoutePlan {
  /** Short label for logs and `check` output, e.g. "matrix", "block:/_synapse/admin/". */
  readonly id: string;
  /** Host names this rule applies to (lower case, no port); null = every served name. */
  readonly hosts: readonly string[] | null;
  readonly match: RouteMatch;
  readonly action: RouteAction;
}

/** A pre-rendered well-known answer: the exact JSON bytes served, or null for 404. */
export interface WellKnownPlan {
  readonly server: string;
  readonly client: string;
  readonly support: string | null;
  /** Cache-Control max-age, seconds. */
  readonly maxAgeSeconds: number;
}

/**
 * What one client may take of what all clients share, and how long the edge waits for a client
 * (the data-plane invariants: every wait has a bound, no client can take the pool).
 */
export interface LimitsPlan {
  /** A TLS handshake must finish within this, ms. */
  readonly handshakeTimeoutMs: number;
  /** HTTP/1.1: a request's line and headers must arrive within this, ms. */
  readonly headerTimeoutMs: number;
  /** An HTTP/1.1 connection between requests, or an HTTP/2 connection with no open stream, is closed after this, ms. */
  readonly idleTimeoutMs: number;
  /** Request line and header fields, counted as HTTP/1.1 would carry them, bytes; larger → 431 on both protocols. */
  readonly maxHeaderBytes: number;
  /** Client connections one data-plane process accepts at once; more are refused (and logged). */
  readonly maxConnections: number;
  /** Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxStreams: number;
  /** No request-body bytes from the client for this long (while the edge is ready for them) → 408, upstream aborted, ms. */
  readonly bodyIdleTimeoutMs: number;
  /** The client reads none of the response for this long → the exchange is cut, upstream aborted, ms. */
  readonly sendTimeoutMs: number;
  /** Forwarded requests in flight per client connection; more → 429 (trusted proxies exempt). */
  readonly perConnection: number;
  /** Forwarded requests in flight per client address, per data-plane process; more → 429 (trusted proxies exempt). */
  readonly perAddress: number;
}

export interface FilesCertificate {
  /** Absolute path of the PEM certificate chain (leaf first). */
  readonly cert: string;
  /** Absolute path of the PEM private key. */
  readonly key: string;
}

export type TlsPlan =
  | { readonly issuer: 'internal'; readonly leafLifetimeSeconds: number }
  | { readonly issuer: 'files'; readonly files: readonly FilesCertificate[]; readonly reloadIntervalSeconds: number }
  | { readonly issuer: 'acme' };

export type ChallengeType = 'http-01' | 'tls-alpn-01';
export type KeyType = 'p256' | 'p384' | 'rsa2048' | 'rsa4096';

/** One ACME CA and the account used with it. */
export interface AcmeCaPlan {
  readonly email: string | null;
  /** Directory URL (presets already expanded). */
  readonly directory: string;
  /** Absolute paths of extra PEM roots trusted for the ACME server's own HTTPS. */
  readonly caRoots: readonly string[];
  /** External Account Binding credentials, for CAs that require them. */
  readonly eab: { readonly kid: string; readonly hmacKey: string } | null;
  /** ACME profile asked for in new orders (the CA must list it), or null for the CA's default. */
  readonly profile: string | null;
}

export interface AcmePlan extends AcmeCaPlan {
  /** Challenge types to use, in order of preference; only those the listeners can answer. */
  readonly challenges: readonly ChallengeType[];
  /** Key type of every certificate's (fresh) key. */
  readonly keyType: KeyType;
  /** CAs tried, in order, after the primary fails for a name. */
  readonly fallbacks: readonly AcmeCaPlan[];
}

/** Where alerts go: a generic JSON webhook, or a Matrix room through a homeserver's client API. */
export type AlertTarget =
  | { readonly format: 'generic'; readonly url: string }
  | {
      readonly format: 'matrix';
      /** Base URL of the homeserver's client API (default: the upstream, so alerts do not depend on this edge's TLS). */
      readonly homeserver: string;
      readonly roomId: string;
      /** Absolute path of a file holding the access token (read at start), or null when it is inline. */
      readonly accessTokenFile: string | null;
      /** The access token written in the config, or null when it is in a file. */
      readonly accessToken: string | null;
    };

export interface AlertsPlan {
  readonly target: AlertTarget;
  /** Renewal failures in a row (for one name) before an alert. */
  readonly afterFailures: number;
  /** Days-left thresholds, largest first; each alerts once per certificate. */
  readonly daysLeft: readonly number[];
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface LogPlan {
  readonly level: LogLevel;
  /** json: one JSON object a line (for log collectors); pretty: aligned text for a terminal. */
  readonly format: 'json' | 'pretty' | 'auto';
  /** Levels of single components (access, data, tls, workers, certs, control, admin, alerts), apart from `level`. */
  readonly levels: Readonly<Partial<Record<string, LogLevel>>>;
}

export interface Plan {
  /** Absolute path of the config file this plan came from. */
  readonly source: string;
  /** The name in user IDs, as configured (may carry a port). */
  readonly serverName: string;
  /** Where clients and servers reach the homeserver (no port). */
  readonly hostname: string;
  /**
   * Every name served and given a certificate (lower case, no port), hostname first.
   * The first is the default certificate for clients that send no SNI.
   */
  readonly names: readonly string[];
  readonly listen: {
    readonly https: readonly ListenerPlan[];
    readonly http: ListenerPlan | null;
  };
  readonly upstreams: readonly UpstreamPlan[];
  readonly routes: readonly RoutePlan[];
  readonly wellKnown: WellKnownPlan;
  readonly tls: TlsPlan;
  readonly acme: AcmePlan | null;
  /** Absolute path of the storage root. */
  readonly storage: string;
  readonly limits: LimitsPlan;
  /** The Strict-Transport-Security value sent on every HTTPS answer, or null for none. */
  readonly hsts: string | null;
  /**
   * Whether a request for a served name other than the one its connection's certificate was chosen
   * for (by SNI) gets 421. Off: the Host header alone picks the route, as in Caddy by default.
   */
  readonly strictSniHost: boolean;
  /** Peers whose X-Forwarded-For is kept (appended to): IPs or CIDRs. */
  readonly trustedProxies: readonly string[];
  /** Longest time in-flight requests get to finish on SIGTERM/SIGINT, ms. */
  readonly drainTimeoutMs: number;
  readonly log: LogPlan;
  /**
   * Header carrying each forwarded request's id upstream (lower case), also in the access log; null = none.
   * A trusted proxy's id is kept, anyone else's replaced.
   */
  readonly requestIdHeader: string | null;
  /** Data-plane worker processes; null = one per CPU (decided at start). 1 = everything in one process. */
  readonly workers: number | null;
  /** The plain-HTTP admin listener (/metrics, /healthz, /readyz): one address; port 0 picks a free one. null = off. */
  readonly admin: ListenerPlan | null;
  /** Alerts about certificates (renewal failing, expiry near, recovery); null = none. */
  readonly alerts: AlertsPlan | null;
}

/** A problem found while loading a config. `line`/`column` are 1-based; absent when not tied to a place. */
export interface ConfigIssue {
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  /** Dotted key path, e.g. "listen.https[1]". Empty for document-level problems. */
  readonly key: string;
  readonly message: string;
}

export type LoadResult =
  | { readonly ok: true; readonly plan: Plan; readonly warnings: readonly ConfigIssue[] }
  | { readonly ok: false; readonly errors: readonly ConfigIssue[]; readonly warnings: readonly ConfigIssue[] };
