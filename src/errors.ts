/**
 * Every error the edge raises on purpose, in one registry (the shape of Fastify's lib/errors.js):
 * each has a code, a message template and, where it ends a certificate request, a category that
 * metrics and alerts count by. Callers branch on `code` or `category`, never on the message; the CA's
 * problem document and Retry-After travel as fields.
 *
 * A leaf module: the data plane, the control plane and the store may all import it.
 */
import { format } from 'node:util';

/** Why a certificate request failed, as `matrix_edge_certificate_renewal_failures_total` counts it. */
export const ERROR_CATEGORIES = ['rateLimited', 'network', 'challenge', 'badNonce', 'other'] as const;
export type ErrorCategory = (typeof ERROR_CATEGORIES)[number];

/** An RFC 7807 problem document as a CA sends it. */
export type Problem = Record<string, unknown>;

/** What an error may carry beside its message. */
export interface ErrorDetails {
  /** Overrides the category of the error's definition (e.g. an ACME step that was rate limited). */
  readonly category?: ErrorCategory;
  /** The CA's problem document; the message then ends with it, for the logs. */
  readonly problem?: Problem | null;
  /** How long the CA asked us to wait (Retry-After of a rate limit or an unavailable CA), ms. */
  readonly retryAfterMs?: number | null;
  readonly cause?: unknown;
}

export class EdgeError extends Error {
  readonly code: string;
  readonly category: ErrorCategory;
  readonly problem: Problem | null;
  readonly retryAfterMs: number | null;
  /** The message without the problem document. */
  readonly detail: string;

  constructor(code: string, detail: string, name: string, category: ErrorCategory, details: ErrorDetails = {}) {
    const problem = details.problem ?? null;
    super(problem === null ? detail : `${detail}; problem document: ${JSON.stringify(problem)}`, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = name;
    this.code = code;
    this.detail = detail;
    this.category = details.category ?? category;
    this.problem = problem;
    this.retryAfterMs = details.retryAfterMs ?? null;
  }

  /** The problem type without the ACME namespace, e.g. "rateLimited", "connection"; null without one. */
  get problemType(): string | null {
    return problemType(this.problem);
  }
}

/** One entry of the registry: `new ME_X(arg, …, details?)` formats the template with the args. */
export interface EdgeErrorClass {
  new (...args: Array<string | number | ErrorDetails>): EdgeError;
  readonly code: string;
}

function createError(code: string, template: string, options: { category?: ErrorCategory; name?: string } = {}): EdgeErrorClass {
  const category = options.category ?? 'other';
  const name = options.name ?? 'EdgeError';
  return class extends EdgeError {
    static readonly code = code;
    constructor(...args: Array<string | number | ErrorDetails>) {
      const last = args[args.length - 1];
      const details = last !== undefined && typeof last === 'object' ? (args.pop() as ErrorDetails) : {};
      super(code, format(template, ...args), name, category, details);
    }
  };
}

/** Whether `err` is an error of this definition. */
export function hasCode(err: unknown, definition: EdgeErrorClass): err is EdgeError {
  return err instanceof EdgeError && err.code === definition.code;
}

// ---------------------------------------------------------------------------------------------
// PEM and X.509 (src/pki)

export const ME_PEM_EMPTY = createError('ME_PEM_EMPTY', '%s is empty');
export const ME_PEM_NO_CERTIFICATE = createError('ME_PEM_NO_CERTIFICATE', '%s contains no PEM certificate (-----BEGIN CERTIFICATE-----)');
export const ME_PEM_BAD_CERTIFICATE = createError('ME_PEM_BAD_CERTIFICATE', '%s: certificate #%d cannot be parsed: %s');
export const ME_PEM_NO_KEY = createError('ME_PEM_NO_KEY', '%s contains no PEM private key (-----BEGIN PRIVATE KEY-----)');
export const ME_PEM_BAD_KEY = createError('ME_PEM_BAD_KEY', '%s: private key cannot be parsed: %s');
export const ME_KEY_MISMATCH = createError('ME_KEY_MISMATCH', 'the private key in %s does not match the certificate in %s');
export const ME_NOT_COVERED = createError('ME_NOT_COVERED', '%s does not cover %s (SANs: %s)');

// ---------------------------------------------------------------------------------------------
// Storage and locks (src/store)

export const ME_NAME_INVALID = createError('ME_NAME_INVALID', 'invalid certificate name %s: expected %s');
export const ME_ISSUER_INVALID = createError('ME_ISSUER_INVALID', "invalid issuer id %s: expected lower-case letters, digits, '.', '-', '_'");
export const ME_KEY_INVALID = createError(
  'ME_KEY_INVALID',
  "invalid storage path %s: expected a relative path of [A-Za-z0-9@._+-] segments, no '.' or '..'",
);
export const ME_CERT_KEY_MISSING = createError('ME_CERT_KEY_MISSING', '%s has no private key: %s is missing');
export const ME_LOCK_KEY_INVALID = createError('ME_LOCK_KEY_INVALID', "invalid lock key %s: expected 1-200 characters of [A-Za-z0-9@._+-], no '/' and no '..'");
export const ME_LOCK_OPTIONS = createError('ME_LOCK_OPTIONS', 'lock %s');
export const ME_LOCK_TIMEOUT = createError('ME_LOCK_TIMEOUT', 'timed out after %d ms waiting for the lock %s, held by %s');
export const ME_LOCK_FILE = createError('ME_LOCK_FILE', 'cannot %s the lock file %s: %s');
export const ME_LOCK_RELEASE = createError('ME_LOCK_RELEASE', 'cannot release the lock %s: %s');
export const ME_LOCK_TAKEOVER = createError('ME_LOCK_TAKEOVER', 'cannot take over the stale lock %s: %s');

// ---------------------------------------------------------------------------------------------
// Certificate sources (src/control)

export const ME_SOURCE_CONFIG = createError('ME_SOURCE_CONFIG', '%s');
export const ME_ACME_FALLBACK_TWICE = createError('ME_ACME_FALLBACK_TWICE', 'acme.fallback lists %s twice (or the primary CA again)');
export const ME_ACME_DIRECTORY_KEY = createError('ME_ACME_DIRECTORY_KEY', 'cannot derive a storage key from the ACME directory %s');
export const ME_FILES_NOT_COVERED = createError('ME_FILES_NOT_COVERED', '%s');
export const ME_FILES_UNREADABLE = createError('ME_FILES_UNREADABLE', '%s cannot be read: %s');
/** Every problem of the configured files at start, joined. */
export const ME_FILES_INVALID = createError('ME_FILES_INVALID', '%s');
export const ME_LOCAL_CA_ROOT_KEY_MISSING = createError('ME_LOCAL_CA_ROOT_KEY_MISSING', 'local CA root %s has no private key: %s is missing');
export const ME_LOCAL_CA_ROOT_NOT_CA = createError('ME_LOCAL_CA_ROOT_NOT_CA', 'local CA root %s is not a CA certificate (basicConstraints CA:TRUE missing)');
export const ME_LOCAL_CA_ROOT_EXPIRED = createError(
  'ME_LOCAL_CA_ROOT_EXPIRED',
  'local CA root %s expired on %s: remove %s and %s to create a new root, then trust the new one',
);
export const ME_LOCAL_CA_REQUEST = createError('ME_LOCAL_CA_REQUEST', 'local CA: %s');

// ---------------------------------------------------------------------------------------------
// Managed certificates (src/control/managed)

export const ME_NO_ISSUER = createError('ME_NO_ISSUER', 'a managed certificate source needs at least one issuer');
export const ME_ALREADY_STARTED = createError('ME_ALREADY_STARTED', 'certificate source %s was already started');
export const ME_NOTHING_OBTAINED = createError('ME_NOTHING_OBTAINED', 'no certificate could be obtained from issuer %s: %s');
export const ME_NOT_CONFIGURED = createError('ME_NOT_CONFIGURED', 'not a configured name: %s (configured: %s)');
export const ME_NOT_MANAGED = createError('ME_NOT_MANAGED', 'certificates come from tls.%s: there is no renewal state here');
export const ME_STORAGE_LOCK = createError('ME_STORAGE_LOCK', 'cannot lock the storage: %s');

// ---------------------------------------------------------------------------------------------
// ACME (src/control/issuers/acme)

/** One protocol step failed; the category comes from the CA's problem, or `network` when the CA never answered. */
export const ME_ACME_STEP = createError('ME_ACME_STEP', 'ACME %s at %s failed: %s', { name: 'AcmeError' });
export const ME_ACME_NO_NAMES = createError('ME_ACME_NO_NAMES', 'ACME: no names to issue a certificate for', { name: 'AcmeError' });
export const ME_ACME_NO_CHALLENGE_TYPE = createError('ME_ACME_NO_CHALLENGE_TYPE', 'ACME: no challenge type is enabled', { name: 'AcmeError' });
export const ME_ACME_PROFILE = createError('ME_ACME_PROFILE', 'ACME profile %s is not offered by %s; %s', { name: 'AcmeError' });
export const ME_ACME_AUTHORIZATION = createError('ME_ACME_AUTHORIZATION', 'ACME authorization for %s is %s', { name: 'AcmeError' });
/** A validation the CA refused (or could not attempt): worth a new order with another challenge type. */
export const ME_ACME_CHALLENGE = createError('ME_ACME_CHALLENGE', '%s', { name: 'ChallengeFailed', category: 'challenge' });
export const ME_ACME_NO_CHALLENGE = createError('ME_ACME_NO_CHALLENGE', 'the CA offers no %s challenge for %s (offered: %s)', {
  name: 'ChallengeFailed',
  category: 'challenge',
});
export const ME_ACME_NO_SOLVER = createError('ME_ACME_NO_SOLVER', 'ACME: no solver for %s challenges', { name: 'AcmeError' });
export const ME_ACME_RENEWAL_INFO = createError('ME_ACME_RENEWAL_INFO', 'renewal information from %s is unusable: %s', { name: 'AcmeError' });
export const ME_ACME_ANSWER = createError('ME_ACME_ANSWER', 'the CA answered %d', { name: 'AcmeError' });
export const ME_ACME_CA_ROOTS = createError('ME_ACME_CA_ROOTS', 'acme.ca_roots: cannot read %s: %s');
/** The ACME library moved an internal this edge relies on (see src/control/issuers/acme/client.ts). */
export const ME_ACME_LIBRARY = createError(
  'ME_ACME_LIBRARY',
  'acme-client %s no longer has %s, which src/control/issuers/acme/client.ts relies on: install acme-client %s (the version package.json pins) or update that file',
);

// ---------------------------------------------------------------------------------------------
// Helpers

/** The message of an Error (from any realm), without Node's trailing ", open '<path>'" detail. */
export function errorMessage(err: unknown): string {
  const message =
    err !== null && typeof err === 'object' && typeof (err as { message?: unknown }).message === 'string'
      ? (err as { message: string }).message
      : String(err);
  return message.replace(/, (open|stat|lstat|scandir) '[^']*'$/, '');
}

/** The category an error carries; `other` for errors that carry none. */
export function errorCategory(err: unknown): ErrorCategory {
  const category = (err as { category?: unknown } | null)?.category;
  return ERROR_CATEGORIES.includes(category as ErrorCategory) ? (category as ErrorCategory) : 'other';
}

/** The problem type of an ACME problem document without the namespace, e.g. "rateLimited"; null without one. */
export function problemType(problem: Problem | null | undefined): string | null {
  const type = problem?.type;
  return typeof type === 'string' ? type.replace(/^urn:ietf:params:acme:error:/, '') : null;
}

/** Problem types of a failed validation (RFC 8555 §6.7). */
const CHALLENGE_PROBLEMS = new Set(['unauthorized', 'connection', 'dns', 'tls', 'incorrectResponse', 'caa']);

/** The category of a CA's problem document. */
export function problemCategory(problem: Problem | null | undefined): ErrorCategory {
  const type = problemType(problem);
  if (type === 'rateLimited') return 'rateLimited';
  if (type !== null && CHALLENGE_PROBLEMS.has(type)) return 'challenge';
  if (type === 'badNonce') return 'badNonce';
  return 'other';
}

/** System error codes of a request that got no answer at all (axios' ECONNABORTED is its timeout). */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** Whether a system error code (err.code where a request failed) means the peer could not be reached. */
export function isNetworkCode(code: unknown): boolean {
  return typeof code === 'string' && NETWORK_CODES.has(code);
}
