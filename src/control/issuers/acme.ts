/**
 * The ACME issuer (`tls.issuer: acme`): obtains certificates from an RFC 8555 CA through the
 * acme-client package, kept behind our own `Issuer` interface so the library can be replaced.
 *
 * - Account: one ECDSA P-256 key per CA + email, created once and kept in the store in CertMagic's
 *   layout (`acme/<issuer>/users/<email>/<username>.{key,json}`, the `.json` holding the account URL
 *   as `location`), so a Caddy data directory's account is reused as is.
 * - Challenges: HTTP-01 only for now. The key authorization goes to the data plane as a
 *   `challenge-add` message before the CA is told to validate, and is withdrawn with
 *   `challenge-remove` afterwards, whatever the outcome.
 * - Keys: a fresh ECDSA P-256 key per certificate.
 * - Trust: the CA's own HTTPS is verified against `acme.ca_roots` when given (only those), else the
 *   default roots. acme-client has one process-wide axios instance, so the agent is chosen per
 *   request from the issuer whose call made it (AsyncLocalStorage), never globally.
 * - Errors carry the CA's problem document (RFC 7807), captured from the responses the same way.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPair } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as https from 'node:https';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import * as acme from 'acme-client';
import type { Logger } from '../../observe/log';
import type { ControlToData, Send } from '../../plane/messages';
import { errorMessage, parseCertificateChain, type FileStore } from '../../store/fs-store';
import type { Issuer } from '../managed-source';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface AcmeIssuerOptions {
  /** Directory URL (presets already expanded). */
  readonly directory: string;
  /** Account contact; null registers without one (stored as "default", like CertMagic). */
  readonly email: string | null;
  /** Absolute paths of PEM files: when non-empty, the only roots trusted for the CA's HTTPS. */
  readonly caRoots: readonly string[];
  /** External Account Binding, for CAs that require it. */
  readonly eab?: { readonly kid: string; readonly hmacKey: string };
  readonly store: FileStore;
  /** Where challenge answers go: the data plane (every worker). */
  readonly send: Send<ControlToData>;
  readonly log: Logger;
}

/** An RFC 7807 problem document as a CA sends it. */
export type Problem = Record<string, unknown>;

/** An ACME failure: the step, the names, and the CA's problem document when it sent one. */
export class AcmeError extends Error {
  constructor(
    message: string,
    readonly problem: Problem | null,
  ) {
    super(problem === null ? message : `${message}; problem document: ${JSON.stringify(problem)}`);
    this.name = 'AcmeError';
  }
}

interface RequestContext {
  readonly agent: https.Agent | undefined;
  /** The last problem document seen in a response made in this context. */
  problem: Problem | null;
}

const context = new AsyncLocalStorage<RequestContext>();
let interceptorsInstalled = false;

/** Once per process: route acme-client's requests through the calling issuer's agent, and capture problems. */
function installInterceptors(): void {
  if (interceptorsInstalled) return;
  interceptorsInstalled = true;
  acme.axios.interceptors.request.use((config) => {
    const ctx = context.getStore();
    if (ctx?.agent !== undefined) config.httpsAgent = ctx.agent;
    return config;
  });
  acme.axios.interceptors.response.use((response) => {
    const ctx = context.getStore();
    if (ctx !== undefined) {
      const problem = problemIn(response.status, String(response.headers['content-type'] ?? ''), response.data);
      if (problem !== null) ctx.problem = problem;
    }
    return response;
  });
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

/**
 * The storage key of a CA, as CertMagic derives it: host (with port) + path, '/' → '-', made safe
 * as a path part and lower-cased, e.g. `acme-v02.api.letsencrypt.org-directory`, `127.0.0.1-14000-dir`.
 */
export function acmeIssuerId(directory: string): string {
  let key = directory;
  try {
    const u = new URL(directory);
    key = u.host;
    const p = u.pathname.replace(/[/\\]/g, '-').replace(/^-+|-+$/g, '');
    if (p !== '') key += `-${p}`;
  } catch {
    // Not a URL: use the text itself, made safe below.
  }
  const safe = safeKey(key).replace(/^[^a-z0-9]+/, '');
  if (safe === '') throw new Error(`cannot derive a storage key from the ACME directory ${JSON.stringify(directory)}`);
  return safe;
}

/** CertMagic's StorageKeys.Safe: lower case, '+' → '_plus_', '*' → 'wildcard_', ':' → '-', '..' removed, only [\w@.-] kept. */
export function safeKey(text: string): string {
  return text
    .trim()
    .toLowerCase()
    .replace(/ /g, '_')
    .replace(/\+/g, '_plus_')
    .replace(/\*/g, 'wildcard_')
    .replace(/:/g, '-')
    .replace(/\.\./g, '')
    .replace(/[^\w@.-]/g, '');
}

/** Storage-relative paths of an account's key and metadata (CertMagic's layout). */
export function accountPaths(issuerId: string, email: string | null): { key: string; meta: string } {
  const who = email === null || email === '' ? 'default' : email;
  const at = who.indexOf('@');
  const username = at === -1 ? who : at === 0 ? who.slice(1) : who.slice(0, at);
  const dir = `acme/${issuerId}/users/${safeKey(who) || 'default'}`;
  const base = safeKey(username) || 'default';
  return { key: `${dir}/${base}.key`, meta: `${dir}/${base}.json` };
}

interface Account {
  readonly client: acme.Client;
  readonly url: string;
}

export class AcmeIssuer implements Issuer {
  readonly id: string;
  private readonly agent: https.Agent | undefined;
  private account: Promise<Account> | null = null;

  private constructor(
    private readonly options: AcmeIssuerOptions,
    agent: https.Agent | undefined,
  ) {
    this.id = acmeIssuerId(options.directory);
    this.agent = agent;
  }

  /** Reads `caRoots` (errors name the file) and prepares the issuer; no network traffic yet. */
  static async create(options: AcmeIssuerOptions): Promise<AcmeIssuer> {
    installInterceptors();
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

  /** The account URL, registering (or finding) the account first when needed. */
  async accountUrl(): Promise<string> {
    return this.run(async () => (await this.getAccount()).url);
  }

  async issue(names: string[]): Promise<{ certPem: string; keyPem: string }> {
    if (names.length === 0) throw new Error('ACME: no names to issue a certificate for');
    return this.run(async () => {
      const { client } = await this.getAccount();
      const log = this.options.log.child({ issuer: this.id, names });
      const label = names.join(', ');

      let order = await this.step(`new order for ${label}`, () =>
        client.createOrder({ identifiers: names.map((value) => ({ type: isIP(value) === 0 ? 'dns' : 'ip', value })) }),
      );
      log.info({ order: order.url }, 'ACME order created');
      const authorizations = await this.step(`fetching the authorizations of ${label}`, () => client.getAuthorizations(order));
      await Promise.all(authorizations.map((authz) => this.authorize(client, authz, log)));

      const orderUrl = order.url;
      // waitForValidStatus returns the CA's object, without the `url` acme-client adds: keep it.
      order = { ...(await this.step(`waiting for the order of ${label} to be ready`, () => client.waitForValidStatus(order))), url: orderUrl };
      const key = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
      const keyPem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
      const [, csr] = await acme.crypto.createCsr({ altNames: [...names] }, keyPem);
      order = { ...(await this.step(`finalizing the order of ${label}`, () => client.finalizeOrder(order, csr))), url: orderUrl };
      const certPem = await this.step(`downloading the certificate of ${label}`, () => client.getCertificate(order));
      log.info({ order: order.url }, 'ACME certificate obtained');
      return { certPem, keyPem };
    });
  }

  /** Solves one authorization with HTTP-01; the answer is published only while the CA validates. */
  private async authorize(client: acme.Client, authz: acme.Authorization, log: Logger): Promise<void> {
    const name = authz.identifier.value;
    if (authz.status === 'valid') {
      log.info({ name }, 'ACME authorization already valid');
      return;
    }
    if (authz.status !== 'pending') {
      throw new AcmeError(`ACME authorization for ${name} is ${authz.status}`, null);
    }
    const challenge = authz.challenges.find((c) => c.type === 'http-01');
    if (challenge === undefined || !('token' in challenge)) {
      const offered = authz.challenges.map((c) => c.type).join(', ') || 'none';
      throw new AcmeError(`the CA offers no http-01 challenge for ${name} (offered: ${offered})`, null);
    }
    const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
    const token = challenge.token;
    this.options.send({ type: 'challenge-add', token, keyAuthorization });
    try {
      await this.step(`http-01 challenge for ${name}`, async () => {
        await client.completeChallenge(challenge);
        await client.waitForValidStatus(challenge);
      });
      log.info({ name, challenge: 'http-01' }, 'ACME challenge solved');
    } finally {
      this.options.send({ type: 'challenge-remove', token });
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

  private async loadOrCreateAccount(): Promise<Account> {
    const { store, email, log } = this.options;
    const paths = accountPaths(this.id, email);
    const storedKey = await store.readFile(paths.key);
    let accountKey: string;
    if (storedKey === null) {
      const pair = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
      accountKey = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
      // The key first: an interrupted registration finds the same account again with it.
      await store.writeFile(paths.key, accountKey, { secret: true });
    } else {
      accountKey = storedKey.toString('utf8');
    }

    const stored = storedKey === null ? null : await readAccountMeta(store, paths.meta);
    const clientOptions: acme.ClientOptions = {
      directoryUrl: this.options.directory,
      accountKey,
      backoffAttempts: 12,
      backoffMin: 500,
      backoffMax: 10_000,
      ...(stored?.location !== undefined ? { accountUrl: stored.location } : {}),
      ...(this.options.eab !== undefined
        ? { externalAccountBinding: { kid: this.options.eab.kid, hmacKey: this.options.eab.hmacKey } }
        : {}),
    };
    const client = new acme.Client(clientOptions);
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
    await store.writeFile(paths.meta, JSON.stringify(meta, null, 2) + '\n', { secret: false });
    log.info(
      {
        issuer: this.id,
        directory: this.options.directory,
        account: url,
        email,
        termsOfService: terms ?? null,
        key: store.resolve(paths.key),
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
    return context.run({ agent: this.agent, problem: null }, fn);
  }

  /** One protocol step, in its own capture: failures become an AcmeError naming the step and the CA's problem. */
  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const ctx: RequestContext = { agent: this.agent, problem: null };
    try {
      return await context.run(ctx, fn);
    } catch (err) {
      if (err instanceof AcmeError) throw err;
      throw new AcmeError(`ACME ${what} at ${this.options.directory} failed: ${errorMessage(err)}`, ctx.problem);
    }
  }
}

async function readAccountMeta(store: FileStore, rel: string): Promise<{ location?: string } | null> {
  const raw = await store.readFile(rel);
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
