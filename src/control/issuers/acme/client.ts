/**
 * The one file that knows acme-client beyond its documented API, and the context every request to
 * a CA runs in.
 *
 * acme-client has one process-wide axios instance and no hooks for what the edge needs, so this
 * file reaches into it — and nowhere else does:
 *  1. `axios.defaults.acmeSettings` (retryMaxAttempts, retryDefaultDelay): the library's own
 *     retries of network errors and 5xx, made few and short (the renewal scheduler backs off).
 *  2. `axios.interceptors.response.handlers` (axios' internal array): a handler put *before* the
 *     library's retry handler, so a rate limit with a long Retry-After is answered at once (the
 *     scheduler waits, not an issuance holding its lock for hours), every request is timed, and the
 *     network error of a request that got no answer is kept (the library then fails with an
 *     unrelated TypeError).
 *  3. `client.api.http.getDirectory()`: the library's cached copy of the CA's directory, for
 *     `meta.profiles` and `renewalInfo`.
 * Plus public axios API on that instance: a request timeout, interceptors choosing the calling
 * issuer's HTTPS agent (AsyncLocalStorage: never a global agent) and capturing the CA's problem
 * documents and Retry-After.
 *
 * `acmeLibrary()` checks these internals when it first loads the library and fails loudly
 * (ME_ACME_LIBRARY) if one moved; package.json pins the version this was written against, and
 * test/unit/acme-client-contract.test.ts checks the real library object.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type * as https from 'node:https';
import { isIP } from 'node:net';
import type * as acme from 'acme-client';
import { EdgeError, ME_ACME_LIBRARY, ME_ACME_STEP, errorMessage, hasCode, isNetworkCode, problemCategory, type ErrorCategory, type Problem } from '../../../errors';
import { retryAfterMs } from '../../ari';

/** The acme-client version these reach-ins were written and checked against (package.json pins it). */
export const ACME_CLIENT_VERSION = '5.4.0';

/** The protocol library's own retries (network errors, 5xx): few and short — our scheduler backs off. */
export const LIBRARY_RETRIES = { retryMaxAttempts: 3, retryDefaultDelay: 1 };
/** Longest wait for one answer from the CA. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Longest Retry-After the protocol library may sleep through inside one request; longer ones go to the scheduler. */
const INLINE_RETRY_AFTER_MAX_S = 10;

interface RequestContext {
  readonly agent: https.Agent | undefined;
  /** The last problem document seen in a response made in this context. */
  problem: Problem | null;
  /** Retry-After of the last 429/503 seen in this context, ms. */
  retryAfter: number | null;
  /** Why the last request got no answer, when it got none. */
  network?: { readonly message: string; readonly code: unknown };
  /** Told how long each request took. */
  readonly observe?: ((seconds: number) => void) | undefined;
}

/** When a request was sent (performance.now()), kept on the request config. */
const SENT_AT = Symbol('sentAt');
const context = new AsyncLocalStorage<RequestContext>();
let library: typeof acme | null = null;

type Handlers = { handlers?: unknown };

/** Throws ME_ACME_LIBRARY unless `lib` still has every internal this file reaches into. */
export function checkLibrary(lib: typeof acme, version: string = ACME_CLIENT_VERSION): void {
  const moved = (what: string): never => {
    throw new ME_ACME_LIBRARY(version, what, ACME_CLIENT_VERSION);
  };
  const settings = (lib.axios?.defaults as unknown as { acmeSettings?: Record<string, unknown> } | undefined)?.acmeSettings;
  if (settings === null || typeof settings !== 'object') moved('axios.defaults.acmeSettings');
  for (const key of Object.keys(LIBRARY_RETRIES)) if (typeof settings![key] !== 'number') moved(`axios.defaults.acmeSettings.${key}`);
  if (!Array.isArray((lib.axios.interceptors?.response as unknown as Handlers | undefined)?.handlers)) moved('axios.interceptors.response.handlers (an array)');
  if (typeof lib.Client !== 'function') moved('Client');
  // The constructor does no I/O and does not parse the key.
  const client = new lib.Client({ directoryUrl: 'https://acme.invalid/directory', accountKey: Buffer.alloc(0) });
  if (typeof (client as unknown as { api?: { http?: { getDirectory?: unknown } } }).api?.http?.getDirectory !== 'function') {
    moved('client.api.http.getDirectory()');
  }
  if (typeof lib.crypto?.createAlpnCertificate !== 'function' || typeof lib.crypto?.createCsr !== 'function') moved('crypto.createAlpnCertificate/createCsr');
}

/**
 * acme-client, loaded (and checked, and set up) on first use: with its dependencies it takes
 * ≈ 0.3 s and ≈ 25 MiB, which an edge serving valid stored certificates need not pay before its
 * first answer.
 */
export function acmeLibrary(): typeof acme {
  if (library === null) {
    const lib = require('acme-client') as typeof acme;
    checkLibrary(lib, (require('acme-client/package.json') as { version: string }).version);
    install(lib);
    library = lib;
  }
  return library;
}

/** Once per process: route requests through the calling issuer's agent, time them, capture problems. */
function install(lib: typeof acme): void {
  lib.axios.interceptors.request.use((config) => {
    const ctx = context.getStore();
    if (ctx?.agent !== undefined) config.httpsAgent = ctx.agent;
    (config as unknown as Record<symbol, number>)[SENT_AT] = performance.now();
    return config;
  });
  lib.axios.interceptors.response.use((response) => {
    const ctx = context.getStore();
    if (ctx !== undefined) {
      const problem = problemIn(response.status, String(response.headers['content-type'] ?? ''), response.data);
      if (problem !== null) ctx.problem = problem;
      if (response.status === 429 || response.status === 503) {
        const header = response.headers['retry-after'];
        ctx.retryAfter = retryAfterMs(typeof header === 'string' ? header : undefined, Date.now(), 0, 0);
      }
    }
    return response;
  });
  Object.assign((lib.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings, LIBRARY_RETRIES);
  // A CA that accepts the connection and never answers must not hold an attempt (and its lock) forever.
  lib.axios.defaults.timeout = REQUEST_TIMEOUT_MS;
  (lib.axios.interceptors.response as unknown as { handlers: unknown[] }).handlers.unshift({
    fulfilled: null,
    rejected: (error: { code?: unknown; config?: Record<string, unknown>; response?: { status?: number; headers?: Record<string, unknown> } }) => {
      const ctx = context.getStore();
      if (error.response === undefined && ctx !== undefined) ctx.network = { message: errorMessage(error), code: error.code };
      // Every request ends here, answered or not (acme-client routes all answers through its error handler).
      const sentAt = (error.config as Record<symbol, unknown> | undefined)?.[SENT_AT];
      if (typeof sentAt === 'number') ctx?.observe?.((performance.now() - sentAt) / 1000);
      if (error.config !== undefined && error.response?.status === 429) {
        const header = error.response.headers?.['retry-after'];
        const wait = retryAfterMs(typeof header === 'string' ? header : undefined, Date.now(), 0, 0);
        if (wait === 0 || wait > INLINE_RETRY_AFTER_MAX_S * 1000) error.config.retryAttempt = Number.MAX_SAFE_INTEGER;
      }
      return Promise.reject(error);
    },
    synchronous: false,
    runWhen: null,
  });
}

function problemIn(status: number, contentType: string, data: unknown): Problem | null {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return null;
  const body = data as Record<string, unknown>;
  if (status >= 400 && (contentType.includes('problem+json') || typeof body.type === 'string')) return body;
  // A failed challenge (or order) carries its problem in `error`.
  const error = body.error;
  if (body.status === 'invalid' && error !== null && typeof error === 'object' && !Array.isArray(error)) return error as Problem;
  return null;
}

/** The requests of one issuer: its CA, its HTTPS agent, its latency observer. */
export class AcmeCalls {
  constructor(
    readonly directory: string,
    private readonly agent: https.Agent | undefined,
    private readonly observer: () => ((seconds: number) => void) | undefined,
  ) {}

  /** Runs `fn` (any number of steps) with this issuer's agent. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    return context.run({ agent: this.agent, problem: null, retryAfter: null, observe: this.observer() }, fn);
  }

  /**
   * One protocol step in its own capture: a failure becomes ME_ACME_STEP naming the step, with the
   * CA's problem document, its Retry-After, and its category — from the problem, or `network` when
   * the CA never answered (classified here, by the error's code).
   */
  async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const ctx: RequestContext = { agent: this.agent, problem: null, retryAfter: null, observe: this.observer() };
    try {
      return await context.run(ctx, fn);
    } catch (err) {
      if (hasCode(err, ME_ACME_STEP)) throw err;
      const unanswered = ctx.network !== undefined && err instanceof TypeError;
      const why = unanswered ? ctx.network!.message : errorMessage(err);
      let category: ErrorCategory = problemCategory(ctx.problem);
      if (ctx.problem === null && (unanswered ? isNetworkCode(ctx.network!.code) : isNetworkCode((err as { code?: unknown } | null)?.code))) category = 'network';
      throw new ME_ACME_STEP(what, this.directory, why, { problem: ctx.problem, retryAfterMs: ctx.retryAfter, category, cause: err });
    }
  }

  /** A GET outside the protocol (renewal information), through the same agent and captures; any status resolves. */
  get(url: string): Promise<{ status: number; data: unknown; headers: Record<string, unknown> }> {
    return acmeLibrary().axios.get(url, { validateStatus: () => true, responseType: 'json' });
  }
}

/** A field of the CA's directory (dotted path, e.g. "meta.profiles"), from the library's cached copy. */
export async function directoryField(calls: AcmeCalls, client: acme.Client, field: string): Promise<unknown> {
  const http = (client as unknown as { api: { http: { getDirectory: () => Promise<Record<string, unknown>> } } }).api.http;
  const directory = await calls.step('reading the directory', () => http.getDirectory());
  let node: unknown = directory;
  for (const part of field.split('.')) node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined;
  return node ?? null;
}

/** The TLS-ALPN-01 validation certificate for `name` (RFC 8737), made by the library. */
export async function alpnCertificate(name: string, keyAuthorization: string): Promise<{ certPem: string; keyPem: string }> {
  // The library reads only the identifier of the authorization.
  const authz = { identifier: { type: isIP(name) === 0 ? 'dns' : 'ip', value: name } } as acme.Authorization;
  const [key, cert] = await acmeLibrary().crypto.createAlpnCertificate(authz, keyAuthorization);
  return { certPem: cert.toString(), keyPem: key.toString() };
}

/** Whether `err` is an error from an ACME step or check (as opposed to a bug). */
export function isAcmeError(err: unknown): err is EdgeError {
  return err instanceof EdgeError && err.code.startsWith('ME_ACME_');
}
