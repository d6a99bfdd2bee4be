/**
 * Orders: one certificate for some names, each authorization solved by the solver of one challenge
 * type. When an order fails on a challenge type, a new order is tried with the next type; the type
 * that last worked for a name is tried first next time. A fresh key per certificate, of the
 * configured type; `profile` (checked against the CA's directory) and `replaces` (RFC 9773, when
 * the CA offers ARI) go into new orders.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type * as acme from 'acme-client';
import type { ChallengeType, KeyType } from '../../../config/plan';
import {
  EdgeError,
  ME_ACME_AUTHORIZATION,
  ME_ACME_CHALLENGE,
  ME_ACME_NO_CHALLENGE,
  ME_ACME_NO_CHALLENGE_TYPE,
  ME_ACME_NO_SOLVER,
  ME_ACME_PROFILE,
  ME_ACME_STEP,
  hasCode,
} from '../../../errors';
import type { Logger } from '../../../observe/log';
import { ariCertId } from '../../ari';
import type { IssuedCertificate } from '../../issuer';
import type { Challenge, Solver } from '../../solver';
import { acmeLibrary, directoryField, isAcmeError, type AcmeCalls } from './client';
import { generateCertificateKey } from './keys';

export interface OrderSettings {
  /** Profile sent in new orders; null for the CA's default. */
  readonly profile: string | null;
  /** Challenge types, in order of preference. */
  readonly challenges: readonly ChallengeType[];
  readonly keyType: KeyType;
  /** Who publishes the answer to each challenge type. */
  readonly solvers: ReadonlyMap<ChallengeType, Solver>;
}

type OrderRequest = Parameters<acme.Client['createOrder']>[0];

/** A validation that failed (or could not be attempted): worth a new order with another type. */
function isChallengeFailure(err: unknown): err is EdgeError {
  return hasCode(err, ME_ACME_CHALLENGE) || hasCode(err, ME_ACME_NO_CHALLENGE);
}

export class AcmeOrders {
  /** The challenge type that last worked, per name. */
  private readonly worked = new Map<string, ChallengeType>();

  constructor(
    private readonly calls: AcmeCalls,
    private readonly settings: OrderSettings,
  ) {}

  /** A certificate for `names`, trying each enabled challenge type with a new order until one works. */
  async obtain(client: acme.Client, names: readonly string[], replacing: X509Certificate | null, log: Logger): Promise<IssuedCertificate> {
    const extra = await this.orderFields(client, replacing, log);
    const types = this.challengeOrder(names);
    let lastFailure: EdgeError | null = null;
    for (const [i, type] of types.entries()) {
      try {
        const issued = await this.order(client, names, type, extra, log);
        for (const name of names) this.worked.set(name, type);
        return issued;
      } catch (err) {
        if (!isChallengeFailure(err) || i === types.length - 1) throw err;
        lastFailure = err;
        log.warn({ challenge: type, next: types[i + 1], err: err.message }, 'ACME challenge failed; trying the next challenge type with a new order');
      }
    }
    throw lastFailure ?? new ME_ACME_NO_CHALLENGE_TYPE();
  }

  /** `profile` (checked against the directory) and `replaces` (when the CA offers ARI) for a new order. */
  private async orderFields(client: acme.Client, replacing: X509Certificate | null, log: Logger): Promise<Record<string, string>> {
    const extra: Record<string, string> = {};
    const profile = this.settings.profile;
    if (profile !== null) {
      const profiles = await directoryField(this.calls, client, 'meta.profiles');
      const offered = profiles !== null && typeof profiles === 'object' ? Object.keys(profiles) : [];
      if (!offered.includes(profile)) {
        const fix = offered.length === 0 ? 'the CA lists no profiles: remove acme.profile' : `it offers: ${offered.join(', ')}; fix acme.profile`;
        throw new ME_ACME_PROFILE(JSON.stringify(profile), this.calls.directory, fix);
      }
      extra.profile = profile;
    }
    if (replacing !== null && typeof (await directoryField(this.calls, client, 'renewalInfo')) === 'string') {
      try {
        extra.replaces = ariCertId(replacing.raw);
      } catch {
        log.debug({ serial: replacing.serialNumber }, 'the replaced certificate has no ARI id; ordering without replaces');
      }
    }
    return extra;
  }

  /** Enabled challenge types, the one that last worked for these names first. */
  private challengeOrder(names: readonly string[]): ChallengeType[] {
    const enabled = [...this.settings.challenges];
    const preferred = this.worked.get(names[0]!);
    if (preferred === undefined || !enabled.includes(preferred)) return enabled;
    return [preferred, ...enabled.filter((t) => t !== preferred)];
  }

  /** One order, every authorization solved with `type`. */
  private async order(client: acme.Client, names: readonly string[], type: ChallengeType, extra: Record<string, string>, log: Logger): Promise<IssuedCertificate> {
    const label = names.join(', ');
    const identifiers = names.map((value) => ({ type: isIP(value) === 0 ? 'dns' : 'ip', value }));
    let order: acme.Order;
    try {
      order = await this.calls.step(`new order for ${label}`, () => client.createOrder({ identifiers, ...extra } as OrderRequest));
    } catch (err) {
      // A CA may refuse `replaces` (already replaced, or not its certificate): order without it.
      if (extra.replaces === undefined || !isAcmeError(err) || err.problem === null) throw err;
      log.warn({ err: err.message }, 'the CA refused the order naming the certificate it replaces; ordering without replaces');
      const { replaces: _ignored, ...rest } = extra;
      order = await this.calls.step(`new order for ${label}`, () => client.createOrder({ identifiers, ...rest } as OrderRequest));
    }
    log.info({ order: order.url, challenge: type, ...extra }, 'ACME order created');
    const authorizations = await this.calls.step(`fetching the authorizations of ${label}`, () => client.getAuthorizations(order));
    await Promise.all(authorizations.map((authz) => this.authorize(client, authz, type, log)));

    const orderUrl = order.url;
    // waitForValidStatus returns the CA's object, without the `url` acme-client adds: keep it.
    order = { ...(await this.calls.step(`waiting for the order of ${label} to be ready`, () => client.waitForValidStatus(order))), url: orderUrl };
    const keyPem = await generateCertificateKey(this.settings.keyType);
    const [, csr] = await acmeLibrary().crypto.createCsr({ altNames: [...names] }, keyPem);
    order = { ...(await this.calls.step(`finalizing the order of ${label}`, () => client.finalizeOrder(order, csr))), url: orderUrl };
    const certPem = await this.calls.step(`downloading the certificate of ${label}`, () => client.getCertificate(order));
    log.info({ order: order.url }, 'ACME certificate obtained');
    return { certPem, keyPem };
  }

  /** Solves one authorization with `type`: its solver presents the answer only while the CA validates. */
  private async authorize(client: acme.Client, authz: acme.Authorization, type: ChallengeType, log: Logger): Promise<void> {
    const name = authz.identifier.value;
    if (authz.status === 'valid') {
      log.info({ name }, 'ACME authorization already valid');
      return;
    }
    if (authz.status !== 'pending') throw new ME_ACME_AUTHORIZATION(name, authz.status);
    const challenge = authz.challenges.find((c) => c.type === type);
    if (challenge === undefined || !('token' in challenge)) {
      throw new ME_ACME_NO_CHALLENGE(type, name, authz.challenges.map((c) => c.type).join(', ') || 'none');
    }
    const solver = this.settings.solvers.get(type);
    if (solver === undefined) throw new ME_ACME_NO_SOLVER(type);
    const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
    const task: Challenge = { type, name, token: challenge.token, keyAuthorization };
    await solver.present(task);
    try {
      await this.calls.step(`${type} challenge for ${name}`, async () => {
        await client.completeChallenge(challenge);
        await client.waitForValidStatus(challenge);
      });
      log.info({ name, challenge: type }, 'ACME challenge solved');
    } catch (err) {
      if (!hasCode(err, ME_ACME_STEP)) throw err;
      // Counted as a failed challenge, unless the CA was rate limiting.
      throw new ME_ACME_CHALLENGE(err.detail, { problem: err.problem, ...(err.category === 'rateLimited' ? { category: 'rateLimited' } : {}) });
    } finally {
      await solver.cleanUp(task);
    }
  }
}
