/**
 * Certificates the edge obtains and renews itself, from an issuer (the local CA now, ACME next):
 * one certificate per configured name, kept in the store, renewed when a third of the lifetime is
 * left, retried with backoff on failure while the current certificate keeps being served.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from '../observe/log';
import type { CertificateMaterial } from '../plane/messages';
import {
  checkKeyMatches,
  errorMessage,
  parseCertificateChain,
  parsePrivateKey,
  type CertificateMeta,
  type FileStore,
} from '../store/fs-store';
import { systemClock, type Clock, type Timer } from './clock';
import { describeRenewal, retryDelay } from './renewal';
import type { CertificateSource } from './source';

export interface Issuer {
  /** Storage key (`certificates/<id>/…`) and log label, e.g. "local". */
  readonly id: string;
  issue(names: string[]): Promise<{ certPem: string; keyPem: string }>;
}

export interface ManagedSourceOptions {
  /** Names to keep a certificate for (one certificate each), e.g. plan.names. */
  readonly names: readonly string[];
  readonly store: FileStore;
  readonly issuer: Issuer;
  readonly log: Logger;
  readonly clock?: Clock;
  /** [0, 1) for retry jitter; Math.random by default. */
  readonly random?: () => number;
}

interface Current {
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serial: string;
}

interface NameState {
  readonly name: string;
  current: Current | null;
  timer: Timer | null;
  /** Failed attempts since the last success. */
  failures: number;
}

export class ManagedSource implements CertificateSource {
  readonly id: string;
  private readonly names: readonly string[];
  private readonly store: FileStore;
  private readonly issuer: Issuer;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly states = new Map<string, NameState>();
  private install: ((material: CertificateMaterial) => void) | null = null;
  private stopped = false;

  constructor(options: ManagedSourceOptions) {
    this.id = options.issuer.id;
    this.names = [...new Set(options.names)];
    this.store = options.store;
    this.issuer = options.issuer;
    this.log = options.log;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
  }

  async start(install: (material: CertificateMaterial) => void): Promise<void> {
    if (this.install !== null) throw new Error(`certificate source ${this.id} was already started`);
    this.install = install;
    const results = await Promise.all(this.names.map((name) => this.startName(name)));
    const failed = results.filter((r): r is string => r !== null);
    if (failed.length > 0) {
      this.stop();
      throw new Error(
        `no certificate could be obtained from issuer ${this.id}: ${failed.join('; ')}`,
      );
    }
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.states.values()) {
      state.timer?.cancel();
      state.timer = null;
    }
  }

  /** Returns null when the name has a certificate, else why it has none. */
  private async startName(name: string): Promise<string | null> {
    const state: NameState = { name, current: null, timer: null, failures: 0 };
    this.states.set(name, state);

    let stored = null;
    try {
      stored = await this.store.loadCertificate(this.issuer.id, name);
    } catch (err) {
      this.log.error(
        { name, issuer: this.issuer.id, err: errorMessage(err) },
        'stored certificate is unusable; issuing a new one',
      );
    }
    if (stored !== null) {
      this.installCertificate(state, stored.leaf, stored.certPem, stored.keyPem);
      const renewal = describeRenewal(state.current!.notBefore, state.current!.notAfter, this.clock.now());
      if (renewal.expired) {
        // Serving an expired certificate helps nobody: renew before start() resolves (a failure is
        // retried in the background; the expired one stays installed meanwhile).
        await this.renew(state);
      } else if (renewal.due) {
        this.schedule(state, 0);
      } else {
        this.schedule(state, renewal.at - this.clock.now());
      }
      return null;
    }
    const error = await this.renew(state);
    return error === null ? null : `${name}: ${error}`;
  }

  /** One issuance attempt. Returns null on success, else the error message (a retry is scheduled). */
  private async renew(state: NameState): Promise<string | null> {
    if (this.stopped) return 'stopped';
    state.timer = null;
    const { name } = state;
    const attemptAt = new Date(this.clock.now()).toISOString();
    let certPem: string;
    let keyPem: string;
    let leaf: X509Certificate;
    try {
      ({ certPem, keyPem } = await this.issuer.issue([name]));
      leaf = checkIssued(name, certPem, keyPem, this.issuer.id);
    } catch (err) {
      const message = errorMessage(err);
      state.failures += 1;
      const delay = retryDelay(state.failures, this.random);
      this.log.error(
        {
          name,
          issuer: this.issuer.id,
          err: message,
          attempt: state.failures,
          retryAt: new Date(this.clock.now() + delay).toISOString(),
          current: state.current === null ? null : new Date(state.current.notAfter).toISOString(),
        },
        state.current === null
          ? 'certificate issuance failed; no certificate to serve for this name'
          : 'certificate renewal failed; still serving the current certificate',
      );
      await this.store.recordAttempt(this.issuer.id, name, { at: attemptAt, error: message }).catch(() => undefined);
      this.schedule(state, delay);
      return message;
    }

    const meta: CertificateMeta = {
      names: [name],
      issuer: this.issuer.id,
      serial: leaf.serialNumber,
      notBefore: leaf.validFromDate.toISOString(),
      notAfter: leaf.validToDate.toISOString(),
      lastAttempt: attemptAt,
    };
    try {
      await this.store.saveCertificate(this.issuer.id, name, { certPem, keyPem, meta });
    } catch (err) {
      // The certificate is good: serve it; it is issued again after the next restart.
      this.log.error(
        { name, issuer: this.issuer.id, err: errorMessage(err), storage: this.store.root },
        'could not store the new certificate; serving it from memory',
      );
    }
    if (this.stopped) return null;
    state.failures = 0;
    this.installCertificate(state, leaf, certPem, keyPem);
    const current = state.current!;
    const renewal = describeRenewal(current.notBefore, current.notAfter, this.clock.now());
    this.schedule(state, renewal.at - this.clock.now());
    return null;
  }

  private installCertificate(state: NameState, leaf: X509Certificate, certPem: string, keyPem: string): void {
    const notBefore = leaf.validFromDate.getTime();
    const notAfter = leaf.validToDate.getTime();
    state.current = { notBefore, notAfter, serial: leaf.serialNumber };
    const renewal = describeRenewal(notBefore, notAfter, this.clock.now());
    const material: CertificateMaterial = {
      names: [state.name],
      certPem,
      keyPem,
      notAfter: new Date(notAfter).toISOString(),
    };
    this.log.info(
      {
        name: state.name,
        issuer: this.issuer.id,
        serial: leaf.serialNumber,
        notAfter: material.notAfter,
        renewAt: new Date(renewal.at).toISOString(),
        renewReason: renewal.reason,
        expired: renewal.expired,
      },
      'certificate installed',
    );
    this.install?.(material);
  }

  private schedule(state: NameState, delayMs: number): void {
    state.timer?.cancel();
    if (this.stopped) {
      state.timer = null;
      return;
    }
    state.timer = this.clock.setTimer(() => {
      void this.renew(state).catch((err: unknown) => {
        this.log.error({ name: state.name, issuer: this.issuer.id, err: errorMessage(err) }, 'renewal crashed');
      });
    }, Math.max(0, delayMs));
  }
}

/** Parses what an issuer returned and checks it is usable for `name`; returns the leaf. */
function checkIssued(name: string, certPem: string, keyPem: string, issuer: string): X509Certificate {
  const label = `certificate from issuer ${issuer}`;
  const leaf = parseCertificateChain(certPem, label)[0]!;
  checkKeyMatches(leaf, parsePrivateKey(keyPem, `key from issuer ${issuer}`), label, `key from issuer ${issuer}`);
  const covers =
    isIP(name) !== 0
      ? leaf.checkIP(name) !== undefined
      : leaf.checkHost(name, { subject: 'never', partialWildcards: false }) !== undefined;
  if (!covers) throw new Error(`${label} does not cover ${name} (SANs: ${leaf.subjectAltName ?? 'none'})`);
  return leaf;
}
