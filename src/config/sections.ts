/**
 * The maps of the config document and the document itself, as zod schemas: each key with the
 * description an admin reads in an editor tooltip. Output: the validated raw config (absent keys
 * stay undefined; expand.ts applies the defaults), which expand.ts turns into a Plan.
 */
import { z } from 'zod';
import { clientBody, supportBody } from './bodies';
import { ALERT_FORMATS, CHALLENGE_TYPES, DAY, DEFAULTS, ISSUERS, KEY_TYPES, LOG_COMPONENTS, LOG_FORMATS, LOG_LEVELS, TIMER_MAX } from './defaults';
import { by, count, duration, email, filePath, httpUrl, listOf, NOT_PLAIN, oneOf, plainMapOnly, portNumber, size, type Says } from './leaves';
import * as rules from './rules';
import { show } from './units';
import * as v from './values';

/** A map with a fixed set of keys; anything else is an unknown key (with a "did you mean"). */
function strictMap<S extends z.ZodRawShape>(shape: S) {
  const says: Says = (value) => `expected a map with keys ${Object.keys(shape).join(', ')}; got ${show(value)}`;
  return z.strictObject(shape, by(says));
}

/** `key:` with nothing under it (null) reads as an empty map. */
const emptyToMap = (value: unknown): unknown => (value === null ? {} : value);

const listSays: Says = (value) => `expected a list; got ${show(value)}`;

// ---------------------------------------------------------------------------------------------

const listenShape = {
  https: v.httpsPorts.describe('TLS ports; every served name is answered on each. A port or a list. Default: [443, 8448].').optional(),
  http: portNumber()
    .nullable()
    .describe('Plain-HTTP port: redirects to HTTPS and answers ACME http-01 challenges; null disables it. Default: 80.')
    .optional(),
  address: v.addresses.describe('Bind addresses (IP literals). An address or a list. Default: ["0.0.0.0", "::"].').optional(),
};
const listen = strictMap(listenShape).superRefine(rules.enforce(rules.httpPortNotHttps));

const wellKnownShape = {
  server: v.mServer
    .describe('m.server: where other servers reach this one, host[:port]. Default: <hostname>:443 (or the first https port).')
    .optional(),
  client: clientBody.nullable().describe('Extra keys of /.well-known/matrix/client, served verbatim; m.homeserver.base_url defaults to https://<hostname>.').optional(),
  support: supportBody.nullable().describe('The /.well-known/matrix/support body (contacts, support_page); null answers 404. Default: null.').optional(),
  max_age: duration({ min: 0, max: 365 * DAY, wholeSeconds: true })
    .describe('Cache-Control max-age of the well-known answers, whole seconds up to 365d. Default: 1h.')
    .optional(),
};
const wellKnown = strictMap(wellKnownShape);

const tlsFileShape = {
  cert: filePath('the PEM certificate chain (leaf first)').describe('PEM certificate chain, leaf first.'),
  key: filePath('the PEM private key').describe('PEM private key of the certificate.'),
};

const flagSays: Says = (value) => `expected true or false; got ${show(value)}`;

const hstsShape = {
  max_age: duration({ min: 0, max: 730 * DAY, wholeSeconds: true, outOfRange: 'must be whole seconds, at most 730d' })
    .describe('max-age of the Strict-Transport-Security header, whole seconds up to 730d. Default: 365d.')
    .optional(),
  include_subdomains: z.boolean(by(flagSays)).describe('Add includeSubDomains. Default: false.').optional(),
  preload: z.boolean(by(flagSays)).describe('Add preload (needs include_subdomains: true and max_age of at least 365d). Default: false.').optional(),
};

/** The parts of `tls.hsts`; absent parts take the defaults. */
export interface HstsValue {
  readonly maxAgeSeconds: number;
  readonly includeSubdomains: boolean;
  readonly preload: boolean;
}

const hstsSays: Says = (value) =>
  `expected false (no HSTS) or a map like { max_age: 365d, include_subdomains: false, preload: false }; got ${value === NOT_PLAIN ? 'a map' : show(value)}`;

/** `tls.hsts`: false/null (no header), true (the defaults) or a map of its parts. */
const hsts = z.preprocess(
  plainMapOnly,
  z.union([z.boolean(), z.null(), strictMap(hstsShape).superRefine(rules.enforce(rules.hstsPreload))], by(hstsSays)).transform((h): HstsValue | null => {
    if (h === false || h === null) return null;
    const given = h === true ? {} : h;
    return {
      maxAgeSeconds: (given.max_age ?? DEFAULTS.hstsMaxAgeMs) / 1000,
      includeSubdomains: given.include_subdomains ?? false,
      preload: given.preload ?? false,
    };
  }),
);

const strictSniSays: Says = (value) =>
  `expected true (421 for a Host the connection's certificate was not chosen for) or false; got ${show(value)}`;

const tlsShape = {
  issuer: oneOf(ISSUERS).describe('Where certificates come from: acme (a public CA), internal (a local CA, for development) or files. Default: acme.').optional(),
  hsts: hsts.describe('Strict-Transport-Security: false for none, true for the defaults, or a map. Default: max_age 365d.').optional(),
  strict_sni_host: z
    .boolean(by(strictSniSays))
    .describe("true: answer 421 to a request whose Host is not a name the connection's certificate was chosen for. Default: false.")
    .optional(),
  files: z
    .array(strictMap(tlsFileShape), by(listSays))
    .nullable()
    .describe('issuer files: the certificates, each { cert, key }; names are matched against their SANs.')
    .optional(),
  reload_interval: duration({ min: 1000, max: TIMER_MAX }).describe('issuer files: how often the files are checked for changes. Default: 60s.').optional(),
  internal_lifetime: duration({ min: 3_600_000, max: 365 * DAY })
    .describe('issuer internal: lifetime of the leaf certificates, 1h to 365d. Default: 7d.')
    .optional(),
};
const tls = strictMap(tlsShape).superRefine(rules.enforce(rules.filesWithIssuerFiles));

const eabShape = {
  kid: v.eabKid.describe('The key identifier (kid) your CA issued.'),
  hmac_key: v.eabHmacKey.describe('The HMAC key your CA issued (base64url).'),
};
const eab = z
  .preprocess(emptyToMap, strictMap(eabShape))
  .describe('External Account Binding credentials, required by zerossl and google.');

const caShape = {
  email: email.nullable().describe('Contact address for expiry and account notices from the CA.').optional(),
  ca: v.acmeCa
    .describe('The CA: letsencrypt, letsencrypt-staging, zerossl, google, buypass, or the https:// URL of an ACME directory. Default: letsencrypt.')
    .optional(),
  ca_roots: v.pemPaths.describe("Extra PEM files trusted for the ACME server's own HTTPS (a test CA).").optional(),
  eab: eab.optional(),
  profile: v.acmeProfile.nullable().describe('An ACME profile the CA lists, like shortlived or tlsserver.').optional(),
};

const acmeShape = {
  ...caShape,
  challenges: listOf({ what: `challenge types (${CHALLENGE_TYPES.join(', ')})`, item: oneOf(CHALLENGE_TYPES), nonEmpty: true, single: true })
    .describe('Challenge types in order of preference; http-01 needs listen.http. Default: [http-01, tls-alpn-01].')
    .optional(),
  key_type: oneOf(KEY_TYPES).describe('Key type of the certificates. Default: p256.').optional(),
  fallback: z
    .array(strictMap(caShape).superRefine(rules.enforce(rules.eabForFallback)), by(listSays))
    .nullable()
    .describe('More CAs, each { ca, email, ca_roots, eab, profile }, tried in order when the first fails; email defaults to acme.email.')
    .optional(),
};
const acme = strictMap(acmeShape).superRefine(rules.enforce(rules.eabForPrimary));

const proxyShape = {
  max_body_size: size(1).describe('Largest request body forwarded (larger: 413), like 50MiB or a number of bytes. Default: 50MiB.').optional(),
  upstream_timeout: duration({ min: 1000, max: TIMER_MAX })
    .describe('Wait for response headers and between body chunks; above the longest long poll. Default: 330s.')
    .optional(),
  connect_timeout: duration({ min: 1, max: TIMER_MAX }).describe('Wait for a connection to the homeserver. Default: 10s.').optional(),
  connections: count(1, 100_000, 'connections').describe('Requests in flight to the homeserver per worker. Default: 4096.').optional(),
  queue_timeout: duration({ min: 0, max: 300_000 }).describe('Longest wait for a free connection before 503. Default: 10s.').optional(),
  body_idle_timeout: duration({ min: 1000, max: 3_600_000 }).describe('An upload sending nothing for this long gets 408. Default: 60s.').optional(),
  send_timeout: duration({ min: 1000, max: 3_600_000 }).describe('A client reading nothing of a response for this long is cut. Default: 60s.').optional(),
  max_requests_per_connection: count(1, 100_000, 'requests').describe('Forwarded requests in flight per client connection (more: 429). Default: 100.').optional(),
  max_requests_per_address: count(1, 1_000_000, 'requests').describe('Forwarded requests in flight per client address, per worker. Default: 512.').optional(),
  trusted_proxies: v.trustedProxies.describe('IPs or CIDR ranges whose X-Forwarded-For is kept (appended to). Default: [].').optional(),
  forward_prefixes: v.prefixList.describe('More path prefixes forwarded; listing /_synapse/admin/ here exposes it. Default: [].').optional(),
  block_prefixes: v.prefixList.describe('More path prefixes answered 404 and never forwarded. Default: [].').optional(),
  drain_timeout: duration({ min: 0, max: TIMER_MAX }).describe('On shutdown, how long requests in flight get to finish. Default: 10s.').optional(),
  request_id_header: v.requestIdHeader
    .describe('Header carrying the request id sent upstream and logged; false sends none. Default: X-Request-Id.')
    .optional(),
};
const proxy = strictMap(proxyShape).superRefine(rules.enforce(rules.forwardOrBlock));

const limitsShape = {
  handshake_timeout: duration({ min: 1000, max: 300_000 }).describe('Longest TLS handshake. Default: 10s.').optional(),
  header_timeout: duration({ min: 1000, max: 300_000 }).describe('Longest wait for an HTTP/1.1 request line and headers. Default: 30s.').optional(),
  idle_timeout: duration({ min: 1000, max: 3_600_000 }).describe('Keep-alive between requests; HTTP/2 with no open stream. Default: 120s.').optional(),
  max_header_size: size(4096, 1024 * 1024).describe('Largest request line plus headers, 4KiB to 1MiB (more: 431). Default: 32KiB.').optional(),
  max_connections: count(1, 1_000_000, 'connections').describe('Client connections per worker. Default: 10000.').optional(),
  max_streams: count(1, 10_000, 'streams').describe('Concurrent HTTP/2 streams per connection. Default: 128.').optional(),
};
const limits = strictMap(limitsShape);

const componentsSays = (issue: z.core.$ZodRawIssue): string =>
  issue.code === 'invalid_key'
    ? `unknown component '${String(issue.input)}'; the components are ${LOG_COMPONENTS.join(', ')}`
    : `expected a map of component: level, like { access: warn, certs: debug }; got ${show(issue.input)}`;

const logShape = {
  level: oneOf(LOG_LEVELS).describe('Log level: trace, debug, info, warn, error or fatal. Default: info.').optional(),
  format: oneOf(LOG_FORMATS).describe('json (one JSON object a line, for log collectors) or pretty (text for a terminal). Default: pretty when stdout is a terminal, else json.').optional(),
  levels: z
    .record(z.string().regex(new RegExp(`^(?:${LOG_COMPONENTS.join('|')})$`)), oneOf(LOG_LEVELS), { error: componentsSays })
    .nullable()
    .describe(`Levels per component, apart from log.level; the components are ${LOG_COMPONENTS.join(', ')}.`)
    .optional(),
};
const log = strictMap(logShape);

const adminShape = {
  listen: v.adminListen
    .describe('Metrics and health (plain HTTP): IP:port, [IPv6]:port or a port on 127.0.0.1; 0 picks a free port; null or false: off. Default: 127.0.0.1:9090.')
    .optional(),
};
const adminSays: Says = (value) => `expected a map with keys listen; got ${show(value)}`;

/** `admin: null` or `admin: false` turns the admin listener off, like `admin: { listen: null }`. */
const admin = z
  .union([z.null(), z.literal(false), strictMap(adminShape)], by(adminSays))
  .transform((a) => (a === null || a === false ? { listen: null } : a));

const roomIdSays: Says = (value) =>
  typeof value === 'string' && value.startsWith('#')
    ? `expected a room ID like "!abcdef:example.com", not an alias: find the ID in the room's settings (Advanced); got ${show(value)}`
    : `expected a room ID like "!abcdef:example.com" (quote it: '!' starts a YAML tag); got ${show(value)}`;

const tokenSays: Says = (value) =>
  `expected the access token of the account that posts alerts (one word, no spaces); got ${typeof value === 'string' ? 'text with spaces' : show(value)}`;

const alertsShape = {
  format: oneOf(ALERT_FORMATS).describe('generic (a JSON POST to webhook) or matrix (an m.notice in a room). Default: generic.').optional(),
  webhook: httpUrl((value) => `expected the URL alerts are POSTed to, an http:// or https:// URL; got ${show(value)}`)
    .describe('format generic: where alerts are POSTed as JSON.')
    .optional(),
  homeserver: httpUrl((value) => `expected the homeserver that posts matrix alerts, an http:// or https:// URL; got ${show(value)}`)
    .describe('format matrix: the client API base URL. Default: the upstream.')
    .optional(),
  room_id: z
    .string(by(roomIdSays))
    .regex(/^![^:\s]+:\S+$/, by(roomIdSays))
    .describe('format matrix: the room ID alerts are posted to, like "!abcdef:example.com" (quoted).')
    .optional(),
  access_token: z.string(by(tokenSays)).regex(/^\S+$/, by(tokenSays)).describe('format matrix: the access token inline (prefer access_token_file).').optional(),
  access_token_file: filePath('a file holding the access token').describe('format matrix: a file holding the access token of the account that posts.').optional(),
  after_failures: count(1, 100, 'failed renewals in a row').describe('Failed renewals of a name in a row before an alert. Default: 3.').optional(),
  days_left: listOf({ what: 'whole numbers of days like [14, 7, 2]', single: true, item: count(1, 365, 'days') })
    .describe('Alert when fewer days are left, each threshold once per certificate. Default: [14, 7, 2].')
    .optional(),
};
const alerts = strictMap(alertsShape).superRefine(rules.enforce(rules.alertKeysOfFormat)).superRefine(rules.enforce(rules.alertTarget));

// ---------------------------------------------------------------------------------------------

const rootShape = {
  server_name: v.serverName.describe('Required: the name in your user IDs (example.com for @alice:example.com); may carry a port.'),
  hostname: v.hostname.describe("Where clients and servers reach the homeserver, like matrix.example.com. Default: server_name's host.").optional(),
  listen: listen.nullable().describe('Listeners: TLS ports, the plain-HTTP port, bind addresses.').optional(),
  upstream: v.upstream.describe('The homeserver, an http:// or https:// URL without a path; localhost is dialled as 127.0.0.1. Default: http://localhost:8008.').optional(),
  well_known: wellKnown.nullable().describe('The /.well-known/matrix/ answers served by the edge.').optional(),
  tls: tls.nullable().describe('Certificates and HTTPS behaviour.').optional(),
  acme: acme.nullable().describe('tls.issuer acme: the CA, account and challenges.').optional(),
  storage: v.storage
    .describe('Directory of certificates, keys, ACME accounts, locks and the local CA (a filesystem path; relative to this file). Default: ./certs.')
    .optional(),
  proxy: proxy.nullable().describe('Forwarding to the homeserver: sizes, timeouts, shares, prefixes, trusted proxies.').optional(),
  limits: limits.nullable().describe('Client connection limits and timeouts.').optional(),
  log: log.nullable().describe('Logging.').optional(),
  workers: v.workers.describe('Data-plane processes: auto (one per CPU) or a number; 1 runs a single process. Default: auto.').optional(),
  admin: admin.describe('The admin listener (/metrics, /healthz, /readyz); null or false turns it off.').optional(),
  alerts: alerts.nullable().describe('Alerts when renewals keep failing or certificates near expiry; absent or null: none.').optional(),
};

/** The whole document. Its output is the validated raw config that expand.ts turns into a Plan. */
export const configSchema = z
  .strictObject(rootShape)
  .superRefine(rules.enforce(rules.acmeChallengeUsable))
  .meta({ title: 'matrix-edge configuration', description: 'The YAML config of matrix-edge, a TLS edge server for a Matrix homeserver.' });

export type RawConfig = z.output<typeof configSchema>;

/** Known keys of every map, by key pattern ("" = top level, "tls.files[]" = each files entry). */
export const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(rootShape),
  listen: Object.keys(listenShape),
  well_known: Object.keys(wellKnownShape),
  tls: Object.keys(tlsShape),
  'tls.hsts': Object.keys(hstsShape),
  'tls.files[]': Object.keys(tlsFileShape),
  acme: Object.keys(acmeShape),
  'acme.eab': Object.keys(eabShape),
  'acme.fallback[]': Object.keys(caShape),
  'acme.fallback[].eab': Object.keys(eabShape),
  proxy: Object.keys(proxyShape),
  limits: Object.keys(limitsShape),
  log: Object.keys(logShape),
  admin: Object.keys(adminShape),
  alerts: Object.keys(alertsShape),
};
