/**
 * Certificates the edge obtains and renews itself, from one or more issuers (the local CA, or an
 * ACME CA with optional fallback CAs): one certificate per configured name, kept in the store.
 *
 * - Start: stored certificates are installed at once (an expired one too, while its renewal runs).
 *   In background mode (ACME) missing ones are obtained after start() resolves, so listeners never
 *   wait on a CA; otherwise (local CA) start() waits for them.
 * - Renewal (planner.ts, schedule.ts): inside the CA's ARI window when its issuer offers one, else
 *   when a third of the lifetime is left.
 * - Attempts (attempts.ts): under the name's storage lock, after re-reading the store, so two
 *   processes on one storage order a certificate once; the primary issuer, then each fallback;
 *   then backoff.
 * - The store is polled (store-poll.ts) for certificates another process stored.
 */
import { ME_ALREADY_STARTED, ME_NO_ISSUER, ME_NOT_CONFIGURED, ME_NOTHING_OBTAINED } from '../../errors';
import type { Logger } from '../../observe/log';
import type { CertificateMaterial } from '../../plane/messages';
import type { CertificateStore } from '../../store/certificate-store';
import type { Locker } from '../../store/storage';
import { systemClock, type Clock } from '../clock';
import type { Issuer } from '../issuer';
import { RETRY_BASE_MS } from '../renewal';
import type { AttemptResult, CertificateListener, CertificateSource, ManagedCertificates, NameStatus } from '../source';
import { Attempts } from './attempts';
import { CertificateEvents } from './events';
import { NameStates, type NameState } from './name-state';
import { Planner } from './planner';
import { nameStatus } from './status';
import { StoredCertificates } from './store-poll';

export interface ManagedSourceOptions {
  /** Names to keep a certificate for (one certificate each), e.g. plan.names. */
  readonly names: readonly string[];
  readonly store: CertificateStore;
  /** The issuers, primary first, then fallbacks in order. */
  readonly issuers: readonly Issuer[];
  readonly log: Logger;
  readonly clock?: Clock;
  /** [0, 1) for retry jitter and ARI times; Math.random by default. */
  readonly random?: () => number;
  /** Resolve start() once stored certificates are installed; obtain missing ones afterwards. */
  readonly background?: boolean;
  /** Storage locks (default: the store's storage). */
  readonly locks?: Locker;
  /** How often the store is checked for certificates stored by another process, ms (0: never). Default 10 s. */
  readonly storePollMs?: number;
  /** First retry delay after a failure, ms (default 60 s; doubles up to 6 h). */
  readonly retryBaseMs?: number;
}

export class ManagedSource implements CertificateSource, ManagedCertificates {
  readonly id: string;
  private readonly names: readonly string[];
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly background: boolean;
  private readonly storePollMs: number;
  private readonly states: NameStates;
  private readonly events: CertificateEvents;
  private readonly stored: StoredCertificates;
  private readonly planner: Planner;
  private readonly attempts: Attempts;

  constructor(options: ManagedSourceOptions) {
    if (options.issuers.length === 0) throw new ME_NO_ISSUER();
    const { issuers, store, log } = options;
    this.id = issuers[0]!.id;
    this.names = [...new Set(options.names)];
    this.log = log;
    this.clock = options.clock ?? systemClock;
    this.background = options.background ?? false;
    this.storePollMs = options.storePollMs ?? 10_000;
    const random = options.random ?? Math.random;
    this.states = new NameStates(this.clock, log);
    this.events = new CertificateEvents(log);
    this.stored = new StoredCertificates(store, issuers, this.states, log);
    this.planner = new Planner(this.states, issuers, store, this.clock, random, log, (state) => void this.attempts.attempt(state, false));
    this.attempts = new Attempts(this.states, this.stored, this.planner, {
      id: this.id,
      issuers,
      store,
      locks: options.locks ?? store.storage,
      clock: this.clock,
      random,
      retryBaseMs: options.retryBaseMs ?? RETRY_BASE_MS,
      log,
      emit: (event) => this.events.emit(event),
    });
    for (const issuer of issuers) issuer.observeRequests?.((seconds) => this.events.emit({ type: 'ca-request', issuer: issuer.id, seconds }));
  }

  get managed(): ManagedCertificates {
    return this;
  }

  on(listener: CertificateListener): () => void {
    return this.events.on(listener);
  }

  async start(install: (material: CertificateMaterial) => void): Promise<void> {
    if (this.states.started) throw new ME_ALREADY_STARTED(this.id);
    this.states.open(this.names, install);
    const all = this.states.all();
    // Whatever is stored is served at once, expired or not.
    await Promise.all(all.map((state) => this.stored.installStored(state, false)));
    const missing = all.filter((s) => s.current === null || this.clock.now() >= s.current.notAfter);
    if (this.background) {
      if (missing.length > 0) {
        this.log.info({ issuer: this.id, names: missing.map((s) => s.name) }, 'obtaining certificates in the background; listeners are already serving');
      }
      for (const state of all) this.planner.afterInstall(state, missing.includes(state));
    } else {
      const results = await Promise.all(missing.map((state) => this.attempts.attempt(state, false)));
      for (const state of all) if (!missing.includes(state)) this.planner.afterInstall(state, false);
      const failed = results.filter((r) => !r.ok && this.states.get(r.name)!.current === null);
      if (failed.length > 0) {
        this.stop();
        throw new ME_NOTHING_OBTAINED(this.id, failed.map((r) => `${r.name}: ${r.error}`).join('; '));
      }
    }
    this.stored.startPolling(this.clock, this.storePollMs, (state: NameState) => {
      state.failures = 0;
      state.lastError = null;
      this.planner.afterInstall(state, false);
    });
  }

  stop(): void {
    this.stored.stopPolling();
    this.states.stop();
  }

  whenReady(): Promise<void> {
    return this.states.whenReady();
  }

  status(): NameStatus[] {
    return this.names.map((name) => nameStatus(name, this.states.get(name)));
  }

  async renewNow(names: readonly string[] | null, force: boolean): Promise<AttemptResult[]> {
    const wanted = names === null || names.length === 0 ? this.names : names;
    const unknown = wanted.filter((n) => this.states.get(n) === undefined);
    if (unknown.length > 0) throw new ME_NOT_CONFIGURED(unknown.join(', '), this.names.join(', '));
    return Promise.all(
      wanted.map(async (name) => {
        const state = this.states.get(name)!;
        if (state.inflight !== null) await state.inflight.catch(() => undefined);
        if (!force && state.current !== null && !this.planner.isDue(state)) {
          return { name, ok: true, serial: state.current.serial, outcome: 'not-due' as const, error: null };
        }
        return this.attempts.attempt(state, force);
      }),
    );
  }
}
