/**
 * The ACME issuer (`tls.issuer: acme`): obtains certificates from an RFC 8555 CA through the
 * acme-client package, kept behind our own `Issuer` interface so the library can be replaced.
 *
 * - Account: one ECDSA P-256 key per CA + email, created once and kept in the store in CertMagic's
 *   layout (`acme/<issuer>/users/<email>/<username>.{key,json}`, the `.json` holding the account URL
 *   as `location`), so a Caddy data directory's account is reused as is.
 * - Challenges: HTTP-01 and TLS-ALPN-01, in the configured order of preference. The solver of the
 *   type (src/control/solver.ts) presents the answer before the CA is told to validate and cleans
 *   it up afterwards, whatever the outcome.
 *   When an order fails on one challenge type, a new order is tried with the next type; the type
 *   that last worked for a name is tried first next time.
 * - Keys: a fresh key per certificate, of the configured type (ECDSA P-256 by default).
 * - Profiles and renewal information: `profile` is sent in new orders when the CA lists it (a clear
 *   error when it does not); `replaces` names the certificate being renewed when the CA offers ARI
 *   (RFC 9773), whose suggested window `renewalInfo()` fetches.
 * - Rate limits: a 429 is not retried inside the protocol library; its Retry-After reaches the
 *   scheduler through `AcmeError.retryAfterMs`, which waits at least that long.
 * - Trust: the CA's own HTTPS is verified against `acme.ca_roots` when given (only those), else the
 *   default roots. acme-client has one process-wide axios instance, so the agent is chosen per
 *   request from the issuer whose call made it (AsyncLocalStorage), never globally.
 * - Errors carry the CA's problem document (RFC 7807), captured from the responses the same way.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPair, type X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as https from 'node:https';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type * as acme from 'acme-client';
import type { ChallengeType, KeyType } from '../../config/plan';
import type { Logger } from '../../observe/log';
import { errorMessage } from '../../errors';
import { parseCertificateChain } from '../../pki/pem';
import { accountKeys, accountLockKey, acmeIssuerId } from '../../store/keys';
import type { Storage } from '../../store/storage';
import { ariCertId, parseRenewalInfo, retryAfterMs, type RenewalWindow } from '../ari';
import type { IssuedCertificate, IssueOptions, Issuer, RenewalAdvice } from '../issuer';
import type { Challenge, Solver } from '../solver';

const generateKeyPairAsync = promisify(generateKeyPair);

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

/** An RFC 7807 problem document as a CA sends it. */
export type Problem = Record<string, unknown>;

/** An ACME failure: the step, the names, and the CA's problem document when it sent one. */
export class AcmeError extends Error {
  constructor(
    message: string,
    readonly problem: Problem | null,
    /** How long the CA asked us to wait (Retry-After on a rate limit or an unavailable CA), ms. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(problem === null ? message : `${message}; problem document: ${JSON.stringify(problem)}`);
    this.name = 'AcmeError';
  }

  /** The problem type without the ACME namespace, e.g. "rateLimited", "connection"; null without one. */
  get problemType(): string | null {
    const type = this.problem?.type;
    return typeof type === 'string' ? type.replace(/^urn:ietf:params:acme:error:/, '') : null;
  }
}

interface RequestContext {
  readonly agent: https.Agent | undefined;
  /** The last problem document seen in a response made in this context. */
  problem: Problem | null;
  /** Retry-After of the last 429/503 seen in this context, ms. */
  retryAfter: number | null;
  /** Why the last request got no answer, when it got none. */
  networkError?: string;
  /** Told how long each request took (the issuer's latency observer). */
  readonly observe?: ((seconds: number) => void) | undefined;
}

/** When a request was sent (performance.now()), kept on acme-client's request config. */
const SENT_AT = Symbol('sentAt');

/** The protocol library's own retries (network errors, 5xx): few and short — our scheduler backs off. */
const LIBRARY_RETRIES = { retryMaxAttempts: 3, retryDefaultDelay: 1 };
/** Longest wait for one answer from the CA. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Longest Retry-After the protocol library may sleep through inside one request; longer ones go to the scheduler. */
const INLINE_RETRY_AFTER_MAX_S = 10;

const context = new AsyncLocalStorage<RequestContext>();
let library: typeof acme | null = null;

/**
 * acme-client, loaded on first use: with its dependencies it takes ≈ 0.3 s and ≈ 25 MiB to load,
 * which an edge serving valid stored certificates need not pay before its first answer.
 */
function acmeLibrary(): typeof acme {
  if (library === null) {
    library = require('acme-client') as typeof acme;
    installInterceptors(library);
  }
  return library;
}

/** Once per process: route acme-client's requests through the calling issuer's agent, and capture problems. */
function installInterceptors(acme: typeof import('acme-client')): void {
  acme.axios.interceptors.request.use((config) => {
    const ctx = context.getStore();
    if (ctx?.agent !== undefined) config.httpsAgent = ctx.agent;
    (config as unknown as Record<symbol, number>)[SENT_AT] = performance.now();
    return config;
  });
  acme.axios.interceptors.response.use((response) => {
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
  Object.assign((acme.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings, LIBRARY_RETRIES);
  // A CA that accepts the connection and never answers must not hold an attempt (and its lock) forever.
  acme.axios.defaults.timeout = REQUEST_TIMEOUT_MS;
  // Runs before the library's retry handler: a rate limit with a long Retry-After is not slept
  // through inside the request (it would hold the issuance for hours); it is answered at once and
  // the scheduler waits instead.
  const handlers = (acme.axios.interceptors.response as unknown as { handlers?: unknown[] }).handlers;
  if (Array.isArray(handlers)) {
    handlers.unshift({
      fulfilled: null,
      rejected: (error: { config?: Record<string, unknown>; response?: { status?: number; headers?: Record<string, unknown> } }) => {
        // No answer at all (refused, DNS, timeout): remember why — once the library's retries are
        // spent it fails with an unrelated TypeError, and the step reports this instead.
        const ctx = context.getStore();
        if (error.response === undefined && ctx !== undefined) ctx.networkError = errorMessage(error);
        // Every request ends here, answered or not (acme-client routes all answers through its error handler).
        const sentAt = (error.config as Record<symbol, unknown> | undefined)?.[SENT_AT];
        if (typeof sentAt === 'number') ctx?.observe?.((performance.now() - sentAt) / 1000);
        const status = error.response?.status;
        if (error.config !== undefined && status === 429) {
          const header = error.response?.headers?.['retry-after'];
          const wait = retryAfterMs(typeof header === 'string' ? header : undefined, Date.now(), 0, 0);
          if (wait === 0 || wait > INLINE_RETRY_AFTER_MAX_S * 1000) error.config.retryAttempt = Number.MAX_SAFE_INTEGER;
        }
        return Promise.reject(error);
      },
      synchronous: false,
      runWhen: null,
    });
  }
}

/** The TLS-ALPN-01 validation certificate for `name` (RFC 8737), made by the ACME library. */
export async function alpnCertificate(name: string, keyAuthorization: string): Promise<{ certPem: string; keyPem: string }> {
  // The library reads only the identifier of the authorization.
  const authz = { identifier: { type: isIP(name) === 0 ? 'dns' : 'ip', value: name } } as acme.Authorization;
  const [key, cert] = await acmeLibrary().crypto.createAlpnCertificate(authz, keyAuthorization);
  return { certPem: cert.toString(), keyPem: key.toString() };
}

/** A fresh private key (PKCS#8 PEM) of the configured type. */
export async function generateCertificateKey(type: KeyType): Promise<string> {
  const pair =
    type === 'p256' || type === 'p384'
      ? await generateKeyPairAsync('ec', { namedCurve: type === 'p256' ? 'P-256' : 'P-384' })
      : await generateKeyPairAsync('rsa', { modulusLength: type === 'rsa2048' ? 2048 : 4096 });
  return pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** A validation the CA refused (or could not attempt): worth a new order with another challenge type. */
export class ChallengeFailed extends AcmeError {
  constructor(
    message: string,
    problem: Problem | null,
    readonly challenge: ChallengeType,
  ) {
    super(message, problem);
    this.name = 'ChallengeFailed';
  }
}

function problemIn(status: number, contentType: string, data: unknown): Problem | null {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return null;
  const body = data as Record<string, unknown>;
  if (status >= 400 && (contentType.includes('problem+json') || typeof body.type === 'string')) return body;
  // A failed challenge (or order) carries its problem in `error`.
  const error = body.error;
  if (body.status === 'invalid' && error !== null && typeof error === 'object' && !Array.isArray(error)) {
    return error as Problem;
  }
  return null;
}

interface Account {
  readonly client: acme.Client;
  readonly url: string;
}

export class AcmeIssuer implements Issuer {
  readonly id: string;
  private readonly agent: https.Agent | undefined;
  private account: Promise<Account> | null = null;
  /** The challenge type that last worked, per name. */
  private readonly worked = new Map<string, ChallengeType>();
  private requestObserver: ((seconds: number) => void) | undefined;

  private constructor(
    private readonly options: AcmeIssuerOptions,
    agent: https.Agent | undefined,
  ) {
    this.id = acmeIssuerId(options.directory);
    this.agent = agent;
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
          throw new Error(`acme.ca_roots: cannot read ${file}: ${errorMessage(err)}`);
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

  /** The account URL, registering (or finding) the account first when needed. */
  async accountUrl(): Promise<string> {
    return this.run(async () => (await this.getAccount()).url);
  }

  async issue(names: readonly string[], options: IssueOptions = {}): Promise<IssuedCertificate> {
    if (names.length === 0) throw new Error('ACME: no names to issue a certificate for');
    try {
      return await this.issueOnce(names, options);
    } catch (err) {
      // The CA forgot the stored account (a reset staging or test CA): register the stored key again.
      if (!(err instanceof AcmeError) || err.problemType !== 'accountDoesNotExist') throw err;
      this.options.log.warn({ issuer: this.id, err: err.message }, 'the CA does not know the stored ACME account; registering it again');
      await this.options.storage.store(accountKeys(this.id, this.options.email).meta, '{}\n', { secret: false });
      this.account = null;
      return this.issueOnce(names, options);
    }
  }

  private async issueOnce(names: readonly string[], options: IssueOptions): Promise<IssuedCertificate> {
    return this.run(async () => {
      const { client } = await this.getAccount();
      const log = this.options.log.child({ issuer: this.id, names });
      const extra = await this.orderFields(client, options.replacing ?? null, log);
      const types = this.challengeOrder(names);
      let lastFailure: ChallengeFailed | null = null;
      for (const [i, type] of types.entries()) {
        try {
          const issued = await this.order(client, names, type, extra, log);
          for (const name of names) this.worked.set(name, type);
          return issued;
        } catch (err) {
          if (!(err instanceof ChallengeFailed) || i === types.length - 1) throw err;
          lastFailure = err;
          log.warn({ challenge: type, next: types[i + 1], err: err.message }, 'ACME challenge failed; trying the next challenge type with a new order');
        }
      }
      throw lastFailure ?? new AcmeError('ACME: no challenge type is enabled', null);
    });
  }

  /**
   * The CA's suggested renewal window for `leaf` (RFC 9773), or null when the CA offers no
   * renewal information. Throws an AcmeError when the CA cannot be asked.
   */
  async renewalInfo(leaf: X509Certificate): Promise<RenewalAdvice | null> {
    return this.run(async () => {
      const { client } = await this.getAccount();
      const base = await this.directoryField(client, 'renewalInfo');
      if (typeof base !== 'string') return null;
      let certId: string;
      try {
        certId = ariCertId(leaf.raw);
      } catch (err) {
        this.options.log.debug({ issuer: this.id, err: errorMessage(err) }, 'no ARI certificate id (no authority key identifier)');
        return null;
      }
      const url = `${base.replace(/\/+$/, '')}/${certId}`;
      const response = await this.step(`fetching renewal information ${url}`, async () => {
        const r = await acmeLibrary().axios.get(url, { validateStatus: () => true, responseType: 'json' });
        if (r.status !== 200) throw new Error(`the CA answered ${r.status}`);
        return r;
      });
      let window: RenewalWindow;
      try {
        window = parseRenewalInfo(response.data);
      } catch (err) {
        throw new AcmeError(`renewal information from ${url} is unusable: ${errorMessage(err)}`, null);
      }
      const header = response.headers['retry-after'];
      // RFC 9773: poll again after Retry-After; without one, within a few hours.
      const retry = retryAfterMs(typeof header === 'string' ? header : undefined, Date.now(), 6 * 3600_000);
      return { window, retryAfterMs: retry };
    });
  }

  /** `profile` (checked against the directory) and `replaces` (when the CA offers ARI) for a new order. */
  private async orderFields(client: acme.Client, replacing: X509Certificate | null, log: Logger): Promise<Record<string, string>> {
    const extra: Record<string, string> = {};
    const profile = this.options.profile ?? null;
    if (profile !== null) {
      const profiles = await this.directoryField(client, 'meta.profiles');
      const offered = profiles !== null && typeof profiles === 'object' ? Object.keys(profiles) : [];
      if (!offered.includes(profile)) {
        throw new AcmeError(
          `ACME profile ${JSON.stringify(profile)} is not offered by ${this.options.directory}; ` +
            (offered.length === 0 ? 'the CA lists no profiles: remove acme.profile' : `it offers: ${offered.join(', ')}; fix acme.profile`),
          null,
        );
      }
      extra.profile = profile;
    }
    if (replacing !== null && typeof (await this.directoryField(client, 'renewalInfo')) === 'string') {
      try {
        extra.replaces = ariCertId(replacing.raw);
      } catch {
        log.debug({ serial: replacing.serialNumber }, 'the replaced certificate has no ARI id; ordering without replaces');
      }
    }
    return extra;
  }

  /** A field of the CA's directory (dotted path into `meta`), read through the library's cached copy. */
  private async directoryField(client: acme.Client, field: string): Promise<unknown> {
    const http = (client as unknown as { api?: { http?: { getDirectory?: () => Promise<Record<string, unknown>> } } }).api?.http;
    if (http?.getDirectory === undefined) throw new Error('the ACME library no longer exposes its directory; update src/control/issuers/acme.ts');
    const directory = await this.step('reading the directory', () => http.getDirectory!());
    let node: unknown = directory;
    for (const part of field.split('.')) {
      node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined;
    }
    return node ?? null;
  }

  /** Enabled challenge types, the one that last worked for these names first. */
  private challengeOrder(names: readonly string[]): ChallengeType[] {
    const enabled = [...(this.options.challenges ?? ['http-01', 'tls-alpn-01'])];
    const preferred = this.worked.get(names[0]!);
    if (preferred === undefined || !enabled.includes(preferred)) return enabled;
    return [preferred, ...enabled.filter((t) => t !== preferred)];
  }

  /** One order, every authorization solved with `type`. */
  private async order(
    client: acme.Client,
    names: readonly string[],
    type: ChallengeType,
    extra: Record<string, string>,
    log: Logger,
  ): Promise<{ certPem: string; keyPem: string }> {
    const label = names.join(', ');
    const identifiers = names.map((value) => ({ type: isIP(value) === 0 ? 'dns' : 'ip', value }));
    let order: acme.Order;
    try {
      order = await this.step(`new order for ${label}`, () => client.createOrder({ identifiers, ...extra } as Parameters<acme.Client["createOrder"]>[0]));
    } catch (err) {
      // A CA may refuse `replaces` (already replaced, or not its certificate): order without it.
      if (extra.replaces === undefined || !(err instanceof AcmeError) || err.problem === null) throw err;
      log.warn({ err: err.message }, 'the CA refused the order naming the certificate it replaces; ordering without replaces');
      const { replaces: _ignored, ...rest } = extra;
      order = await this.step(`new order for ${label}`, () => client.createOrder({ identifiers, ...rest } as Parameters<acme.Client["createOrder"]>[0]));
    }
    log.info({ order: order.url, challenge: type, ...extra }, 'ACME order created');
    const authorizations = await this.step(`fetching the authorizations of ${label}`, () => client.getAuthorizations(order));
    await Promise.all(authorizations.map((authz) => this.authorize(client, authz, type, log)));

    const orderUrl = order.url;
    // waitForValidStatus returns the CA's object, without the `url` acme-client adds: keep it.
    order = { ...(await this.step(`waiting for the order of ${label} to be ready`, () => client.waitForValidStatus(order))), url: orderUrl };
    const keyPem = await generateCertificateKey(this.options.keyType ?? 'p256');
    const [, csr] = await acmeLibrary().crypto.createCsr({ altNames: [...names] }, keyPem);
    order = { ...(await this.step(`finalizing the order of ${label}`, () => client.finalizeOrder(order, csr))), url: orderUrl };
    const certPem = await this.step(`downloading the certificate of ${label}`, () => client.getCertificate(order));
    log.info({ order: order.url }, 'ACME certificate obtained');
    return { certPem, keyPem };
  }

  /** Solves one authorization with `type`; the answer is published only while the CA validates. */
  private async authorize(client: acme.Client, authz: acme.Authorization, type: ChallengeType, log: Logger): Promise<void> {
    const name = authz.identifier.value;
    if (authz.status === 'valid') {
      log.info({ name }, 'ACME authorization already valid');
      return;
    }
    if (authz.status !== 'pending') {
      throw new AcmeError(`ACME authorization for ${name} is ${authz.status}`, null);
    }
    const challenge = authz.challenges.find((c) => c.type === type);
    if (challenge === undefined || !('token' in challenge)) {
      const offered = authz.challenges.map((c) => c.type).join(', ') || 'none';
      throw new ChallengeFailed(`the CA offers no ${type} challenge for ${name} (offered: ${offered})`, null, type);
    }
    const solver = this.options.solvers.get(type);
    if (solver === undefined) throw new Error(`ACME: no solver for ${type} challenges`);
    const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
    const task: Challenge = { type, name, token: challenge.token, keyAuthorization };
    await solver.present(task);
    try {
      await this.step(`${type} challenge for ${name}`, async () => {
        await client.completeChallenge(challenge);
        await client.waitForValidStatus(challenge);
      });
      log.info({ name, challenge: type }, 'ACME challenge solved');
    } catch (err) {
      if (!(err instanceof AcmeError)) throw err;
      throw new ChallengeFailed(err.message.replace(/; problem document: .*$/s, ''), err.problem, type);
    } finally {
      await solver.cleanUp(task);
    }
  }

  private getAccount(): Promise<Account> {
    if (this.account === null) {
      const pending = this.loadOrCreateAccount();
      this.account = pending;
      // A failure is retried by the next issuance, not cached.
      pending.catch(() => {
        if (this.account === pending) this.account = null;
      });
    }
    return this.account;
  }

  /**
   * Under the account's storage lock, so two processes on one storage never register two
   * accounts (and never store one account's key beside the other's URL).
   */
  private async loadOrCreateAccount(): Promise<Account> {
    const paths = accountKeys(this.id, this.options.email);
    acmeLibrary(); // loaded first (≈ 0.3 s), not while other processes wait on the lock
    const lock = await this.options.storage.lock(accountLockKey(this.id, this.options.email), { purpose: 'ACME account registration' });
    try {
      return await this.loadOrCreateAccountLocked(paths);
    } finally {
      await lock.release().catch(() => undefined);
    }
  }

  private async loadOrCreateAccountLocked(paths: { key: string; meta: string }): Promise<Account> {
    const { storage, email, log } = this.options;
    const storedKey = await storage.load(paths.key);
    let accountKey: string;
    if (storedKey === null) {
      accountKey = await generateCertificateKey('p256');
      // The key first: an interrupted registration finds the same account again with it.
      await storage.store(paths.key, accountKey, { secret: true });
    } else {
      accountKey = storedKey.toString('utf8');
    }

    const stored = storedKey === null ? null : await readAccountMeta(storage, paths.meta);
    const clientOptions: acme.ClientOptions = {
      directoryUrl: this.options.directory,
      accountKey,
      backoffAttempts: 12,
      backoffMin: 500,
      backoffMax: 10_000,
      ...(stored?.location !== undefined ? { accountUrl: stored.location } : {}),
      ...(this.options.eab !== undefined && this.options.eab !== null
        ? { externalAccountBinding: { kid: this.options.eab.kid, hmacKey: this.options.eab.hmacKey } }
        : {}),
    };
    const client = new (acmeLibrary().Client)(clientOptions);
    if (stored?.location !== undefined) {
      log.debug({ issuer: this.id, account: stored.location }, 'ACME account loaded from storage');
      return { client, url: stored.location };
    }

    const contact = email === null ? [] : [`mailto:${email}`];
    const terms = await this.step('reading the directory', () => client.getTermsOfServiceUrl());
    const account = await this.step(`registering the ACME account${email === null ? '' : ` for ${email}`}`, () =>
      client.createAccount({ termsOfServiceAgreed: true, contact }),
    );
    const url = client.getAccountUrl();
    const meta = {
      status: account.status,
      contact: account.contact ?? contact,
      termsOfServiceAgreed: true,
      location: url,
    };
    await storage.store(paths.meta, JSON.stringify(meta, null, 2) + '\n', { secret: false });
    log.info(
      {
        issuer: this.id,
        directory: this.options.directory,
        account: url,
        email,
        termsOfService: terms ?? null,
        key: storage.describe(paths.key),
        reusedKey: storedKey !== null,
      },
      storedKey === null
        ? 'ACME account created; by configuring this CA you agree to its terms of service'
        : 'ACME account registered for the stored key',
    );
    return { client, url };
  }

  /** Runs `fn` with this issuer's agent and a fresh problem capture. */
  private run<T>(fn: () => Promise<T>): Promise<T> {
    return context.run({ agent: this.agent, problem: null, retryAfter: null, observe: this.requestObserver }, fn);
  }

  /** One protocol step, in its own capture: failures become an AcmeError naming the step and the CA's problem. */
  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const ctx: RequestContext = { agent: this.agent, problem: null, retryAfter: null, observe: this.requestObserver };
    try {
      return await context.run(ctx, fn);
    } catch (err) {
      if (err instanceof AcmeError) throw err;
      const why = ctx.networkError !== undefined && err instanceof TypeError ? ctx.networkError : errorMessage(err);
      throw new AcmeError(`ACME ${what} at ${this.options.directory} failed: ${why}`, ctx.problem, ctx.retryAfter);
    }
  }
}

async function readAccountMeta(storage: Storage, key: string): Promise<{ location?: string } | null> {
  const raw = await storage.load(key);
  if (raw === null) return null;
  try {
    const parsed: unknown = JSON.parse(raw.toString('utf8'));
    if (parsed !== null && typeof parsed === 'object' && typeof (parsed as { location?: unknown }).location === 'string') {
      return { location: (parsed as { location: string }).location };
    }
  } catch {
    // Unreadable metadata: the account is looked up again with the stored key.
  }
  return {};
}
