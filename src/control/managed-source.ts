/**
 * Certificates the edge obtains and renews itself, from one or more issuers (the local CA, or an
 * ACME CA with optional fallback CAs): one certificate per configured name, kept in the store.
 *
 * - Start: stored certificates are installed at once (an expired one too, while its renewal runs).
 *   In background mode (ACME) missing ones are obtained after start() resolves, so listeners never
 *   wait on a CA; otherwise (local CA) start() waits for them.
 * - Renewal: inside the CA's ARI window when its issuer offers one (re-checked as the CA asks),
 *   else when a third of the lifetime is left. Every attempt holds the name's storage lock and
 *   first re-reads the store, so two processes on one storage order a certificate once.
 * - Failure: the primary issuer, then each fallback; then exponential backoff (at least the CA's
 *   Retry-After, never past the point where the current certificate would lapse untried), every
 *   failure logged with the CA's problem, a loud warning inside the last 7 days.
 * - The store is polled, so a certificate another process (or `matrix-edge renew`) stored is
 *   picked up without a restart.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from '../observe/log';
import type { CertificateMaterial } from '../plane/messages';
import { errorCategory, errorMessage } from '../errors';
import { parseCertificateChain, parsePrivateKey } from '../pki/pem';
import { checkKeyMatches } from '../pki/x509';
import type { CertificateMeta, CertificateStore, StoredCertificate } from '../store/certificate-store';
import { issueLockKey } from '../store/keys';
import type { HeldLock, Locker } from '../store/storage';
import { chooseRenewalTime, type RenewalWindow } from './ari';
import { systemClock, type Clock, type Timer } from './clock';
import { describeRenewal, expiryWarning, retryDelay, RETRY_BASE_MS } from './renewal';
import type { Issuer } from './issuer';
import type { AttemptResult, CertificateEvent, CertificateListener, CertificateSource, ManagedCertificates, NameStatus } from './source';

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

interface Current {
  readonly issuerId: string;
  readonly leaf: X509Certificate;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serial: string;
}

interface AriState {
  readonly serial: string;
  readonly window: RenewalWindow | null;
  /** The time chosen inside the window (kept while the window stays the same). */
  readonly at: number | null;
  readonly nextCheck: number;
}

interface NameState {
  readonly name: string;
  current: Current | null;
  timer: Timer | null;
  /** Failed attempts since the last success. */
  failures: number;
  lastError: string | null;
  next: { at: number; reason: string } | null;
  ari: AriState | null;
  inflight: Promise<AttemptResult> | null;
  /** A timer armed while an attempt was running, started once it is over. */
  deferredArm: (() => void) | null;
  /** mtime of each issuer's stored `.crt` when last looked at. */
  readonly seen: Map<string, number>;
}

interface FailedRequest {
  readonly issuer: string;
  readonly error: string;
  readonly retryAfterMs: number | null;
  /** The CA's problem document, when it sent one. */
  readonly problem: unknown;
}

const ARI_RETRY_ON_ERROR_MS = 60 * 60 * 1000;

export class ManagedSource implements CertificateSource, ManagedCertificates {
  readonly id: string;
  private readonly names: readonly string[];
  private readonly store: CertificateStore;
  private readonly issuers: readonly Issuer[];
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly background: boolean;
  private readonly locks: Locker;
  private readonly storePollMs: number;
  private readonly retryBaseMs: number;
  private readonly states = new Map<string, NameState>();
  private readonly noAri = new Set<string>();
  private install: ((material: CertificateMaterial) => void) | null = null;
  private pollTimer: Timer | null = null;
  private readyWaiters: Array<() => void> = [];
  private readonly listeners = new Set<CertificateListener>();
  private stopped = false;

  constructor(options: ManagedSourceOptions) {
    if (options.issuers.length === 0) throw new Error('a managed certificate source needs at least one issuer');
    this.issuers = options.issuers;
    this.id = this.issuers[0]!.id;
    this.names = [...new Set(options.names)];
    this.store = options.store;
    this.log = options.log;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.background = options.background ?? false;
    this.locks = options.locks ?? this.store.storage;
    this.storePollMs = options.storePollMs ?? 10_000;
    this.retryBaseMs = options.retryBaseMs ?? RETRY_BASE_MS;
    for (const issuer of this.issuers) {
      issuer.observeRequests?.((seconds) => this.emit({ type: 'ca-request', issuer: issuer.id, seconds }));
    }
  }

  get managed(): ManagedCertificates {
    return this;
  }

  /** Be told about requests, failures and CA latency (see CertificateEvent). Returns the unsubscribe. */
  on(listener: CertificateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: CertificateEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ event: event.type, err: errorMessage(err) }, 'a certificate event listener failed');
      }
    }
  }

  async start(install: (material: CertificateMaterial) => void): Promise<void> {
    if (this.install !== null) throw new Error(`certificate source ${this.id} was already started`);
    this.install = install;
    for (const name of this.names) {
      this.states.set(name, {
        name,
        current: null,
        timer: null,
        failures: 0,
        lastError: null,
        next: null,
        ari: null,
        inflight: null,
        deferredArm: null,
        seen: new Map(),
      });
    }
    // Whatever is stored is served at once, expired or not.
    await Promise.all([...this.states.values()].map((state) => this.installStored(state, false)));
    const missing = [...this.states.values()].filter((s) => s.current === null || this.isExpired(s.current));
    if (this.background) {
      if (missing.length > 0) {
        this.log.info(
          { issuer: this.id, names: missing.map((s) => s.name) },
          'obtaining certificates in the background; listeners are already serving',
        );
      }
      for (const state of this.states.values()) this.afterInstall(state, missing.includes(state));
    } else {
      const results = await Promise.all(missing.map((state) => this.attempt(state, false)));
      for (const state of this.states.values()) if (!missing.includes(state)) this.afterInstall(state, false);
      const failed = results.filter((r) => !r.ok && this.states.get(r.name)!.current === null);
      if (failed.length > 0) {
        this.stop();
        throw new Error(
          `no certificate could be obtained from issuer ${this.id}: ${failed.map((r) => `${r.name}: ${r.error}`).join('; ')}`,
        );
      }
    }
    this.schedulePoll();
  }

  stop(): void {
    this.stopped = true;
    this.pollTimer?.cancel();
    this.pollTimer = null;
    for (const state of this.states.values()) {
      state.timer?.cancel();
      state.timer = null;
    }
  }

  /** Resolves once every name has a certificate installed (at once when they all do). */
  whenReady(): Promise<void> {
    if ([...this.states.values()].every((s) => s.current !== null) && this.states.size > 0) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Per name: what is served and what happens next. */
  status(): NameStatus[] {
    return this.names.map((name) => {
      const s = this.states.get(name);
      const c = s?.current ?? null;
      return {
        name,
        issuer: c?.issuerId ?? null,
        serial: c?.serial ?? null,
        notAfter: c === null ? null : new Date(c.notAfter).toISOString(),
        nextRenewal: s?.next == null ? null : new Date(s.next.at).toISOString(),
        nextReason: s?.next?.reason ?? null,
        failures: s?.failures ?? 0,
        lastError: s?.lastError ?? null,
      };
    });
  }

  /**
   * Renew now (`matrix-edge renew`): every name, or those given. Without `force` a name whose
   * stored certificate is not due yet is left alone.
   */
  async renewNow(names: readonly string[] | null, force: boolean): Promise<AttemptResult[]> {
    const wanted = names === null || names.length === 0 ? this.names : names;
    const unknown = wanted.filter((n) => !this.states.has(n));
    if (unknown.length > 0) throw new Error(`not a configured name: ${unknown.join(', ')} (configured: ${this.names.join(', ')})`);
    return Promise.all(
      wanted.map(async (name) => {
        const state = this.states.get(name)!;
        if (state.inflight !== null) await state.inflight.catch(() => undefined);
        if (!force && state.current !== null && !this.isDue(state)) {
          return { name, ok: true, serial: state.current.serial, outcome: 'not-due', error: null };
        }
        return this.attempt(state, force);
      }),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Store

  /** The best stored certificate for `name` across the issuers (latest notAfter), or null. */
  private async loadBest(state: NameState): Promise<StoredCertificate | null> {
    let best: StoredCertificate | null = null;
    for (const issuer of this.issuers) {
      let stored: StoredCertificate | null = null;
      try {
        stored = await this.store.loadCertificate(issuer.id, state.name);
        state.seen.set(issuer.id, await this.store.modified(issuer.id, state.name));
      } catch (err) {
        this.log.error(
          { name: state.name, issuer: issuer.id, err: errorMessage(err) },
          'stored certificate is unusable; a new one will be issued',
        );
      }
      if (stored !== null && (best === null || stored.leaf.validToDate > best.leaf.validToDate)) best = stored;
    }
    return best;
  }

  /** Installs the best stored certificate when it is newer than what is served. Returns whether it did. */
  private async installStored(state: NameState, onlyNewer: boolean): Promise<boolean> {
    const stored = await this.loadBest(state);
    if (stored === null) return false;
    const current = state.current;
    if (current !== null && (stored.meta.serial === current.serial || (onlyNewer && stored.leaf.validToDate.getTime() <= current.notAfter))) {
      return false;
    }
    this.installCertificate(state, stored.meta.issuer, stored.leaf, stored.certPem, stored.keyPem, 'storage');
    return true;
  }

  /** Picks up certificates another process stored (cheap: one stat per issuer and name). */
  private schedulePoll(): void {
    if (this.storePollMs <= 0 || this.stopped) return;
    this.pollTimer = this.clock.setTimer(() => {
      void this.pollStore().finally(() => this.schedulePoll());
    }, this.storePollMs);
  }

  private async pollStore(): Promise<void> {
    for (const state of this.states.values()) {
      if (this.stopped) return;
      if (state.inflight !== null) continue;
      let changed = false;
      for (const issuer of this.issuers) {
        const mtime = await this.store.modified(issuer.id, state.name);
        if (mtime !== 0 && mtime !== (state.seen.get(issuer.id) ?? 0)) changed = true;
      }
      if (!changed) continue;
      if (await this.installStored(state, true).catch(() => false)) {
        state.failures = 0;
        state.lastError = null;
        this.afterInstall(state, false);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Attempts

  /** One renewal attempt for a name, serialised per name and locked across processes. */
  private attempt(state: NameState, force: boolean): Promise<AttemptResult> {
    if (state.inflight !== null) return state.inflight;
    state.timer?.cancel();
    state.timer = null;
    const run = this.runAttempt(state, force).finally(() => {
      state.inflight = null;
      // Timers armed during the attempt start only now, after the lock is released.
      const deferred = state.deferredArm;
      state.deferredArm = null;
      deferred?.();
    });
    state.inflight = run;
    return run;
  }

  private async runAttempt(state: NameState, force: boolean): Promise<AttemptResult> {
    const { name } = state;
    if (this.stopped) return { name, ok: false, serial: null, outcome: 'failed', error: 'stopped' };
    let lock: HeldLock;
    try {
      lock = await this.locks.lock(issueLockKey(this.id, name), {
        purpose: `certificate for ${name}`,
        onWait: (holder) =>
          this.log.info(
            { name, holder: holder === null ? null : { pid: holder.pid, host: holder.host, since: holder.created } },
            'another process is obtaining this certificate; waiting for it',
          ),
        onTakeover: (holder, reason) =>
          this.log.warn({ name, reason, holder: holder === null ? null : { pid: holder.pid, host: holder.host } }, 'took over a stale storage lock'),
      });
    } catch (err) {
      return this.failed(state, [{ issuer: this.id, error: `cannot lock the storage: ${errorMessage(err)}`, retryAfterMs: null, problem: null }]);
    }
    try {
      if (this.stopped) return { name, ok: false, serial: null, outcome: 'failed', error: 'stopped' };
      // Another process may have renewed it while we waited for the lock.
      const changed = await this.installStored(state, true);
      if (!force && state.current !== null && !this.isDue(state)) {
        if (changed) this.log.info({ name, serial: state.current.serial }, 'a renewed certificate was already in storage; no new order');
        state.failures = 0;
        state.lastError = null;
        this.afterInstall(state, false);
        return { name, ok: true, serial: state.current.serial, outcome: changed ? 'stored' : 'not-due', error: null };
      }

      const errors: FailedRequest[] = [];
      for (const issuer of this.issuers) {
        if (this.stopped) break;
        const attemptAt = new Date(this.clock.now()).toISOString();
        this.log.info({ name, issuer: issuer.id, renewing: state.current?.serial ?? null }, 'requesting a certificate');
        try {
          const { certPem, keyPem } = await issuer.issue([name], { replacing: state.current?.issuerId === issuer.id ? state.current.leaf : null });
          const leaf = checkIssued(name, certPem, keyPem, issuer.id);
          this.emit({ type: 'request', name, issuer: issuer.id, ok: true });
          if (!(await lock.stillHeld())) {
            this.log.warn({ name }, 'the storage lock was taken over while this certificate was being obtained (this process looked hung); storing it anyway');
          }
          await this.save(state, issuer.id, leaf, certPem, keyPem, attemptAt, lock);
          if (this.stopped) return { name, ok: true, serial: leaf.serialNumber, outcome: 'renewed', error: null };
          const recovered = state.failures > 0 ? (state.current === null ? 'certificate obtained after earlier failures' : 'certificate renewal recovered') : null;
          state.failures = 0;
          state.lastError = null;
          this.installCertificate(state, issuer.id, leaf, certPem, keyPem, 'issued');
          if (recovered !== null) this.log.info({ name, issuer: issuer.id }, recovered);
          this.afterInstall(state, false);
          return { name, ok: true, serial: leaf.serialNumber, outcome: 'renewed', error: null };
        } catch (err) {
          const message = errorMessage(err);
          const retryAfterMs = (err as { retryAfterMs?: unknown }).retryAfterMs;
          const problem = (err as { problem?: unknown }).problem ?? null;
          errors.push({ issuer: issuer.id, error: message, retryAfterMs: typeof retryAfterMs === 'number' ? retryAfterMs : null, problem });
          this.emit({ type: 'request', name, issuer: issuer.id, ok: false, errorType: errorCategory(err), error: message });
          if (this.issuers.indexOf(issuer) < this.issuers.length - 1) {
            this.log.error({ name, issuer: issuer.id, err: message, problem }, 'certificate request failed; trying the next CA');
          }
          await this.store.recordAttempt(issuer.id, name, { at: attemptAt, error: message }).catch(() => undefined);
        }
      }
      return this.failed(state, errors);
    } finally {
      await lock.release().catch(() => undefined);
    }
  }

  /** Every issuer failed: back off (respecting Retry-After), warn loudly near expiry. */
  private failed(state: NameState, errors: readonly FailedRequest[]): AttemptResult {
    const { name } = state;
    state.failures += 1;
    state.lastError = errors.length === 1 ? errors[0]!.error : errors.map((e) => `${e.issuer}: ${e.error}`).join('; ');
    const now = this.clock.now();
    let delay = retryDelay(state.failures, this.random, this.retryBaseMs);
    const current = state.current;
    if (current !== null && current.notAfter > now) {
      // Never let the backoff sleep past the certificate: try again at least twice before it lapses.
      delay = Math.min(delay, Math.max(this.retryBaseMs, (current.notAfter - now) / 3));
    }
    const asked = Math.max(0, ...errors.map((e) => e.retryAfterMs ?? 0));
    delay = Math.max(delay, asked);
    const retryAt = now + delay;
    this.log.error(
      {
        name,
        issuer: errors[errors.length - 1]?.issuer,
        attempt: state.failures,
        retryAt: new Date(retryAt).toISOString(),
        problem: errors[errors.length - 1]?.problem ?? null,
        retryAfterMs: asked > 0 ? asked : undefined,
        current: current === null ? null : new Date(current.notAfter).toISOString(),
        err: state.lastError,
      },
      current === null
        ? 'certificate issuance failed; no certificate to serve for this name yet'
        : 'certificate renewal failed; still serving the current certificate',
    );
    const warning = current === null ? null : expiryWarning(current.notAfter, now);
    if (warning !== null) {
      this.log.fatal(
        { name, alert: 'certificate-expiring', notAfter: new Date(current!.notAfter).toISOString(), failures: state.failures, err: state.lastError },
        `CERTIFICATE FOR ${name} ${warning} AND RENEWAL KEEPS FAILING: fix the cause above (DNS, ports 80/443, the CA) — clients will be refused when it expires`,
      );
    }
    state.next = { at: retryAt, reason: `retry ${state.failures} after a failure` };
    this.arm(state, delay, () => void this.attempt(state, false));
    this.emit({ type: 'failed', name, failures: state.failures, error: state.lastError, notAfter: current?.notAfter ?? null });
    return { name, ok: false, serial: current?.serial ?? null, outcome: 'failed', error: state.lastError };
  }

  private async save(state: NameState, issuerId: string, leaf: X509Certificate, certPem: string, keyPem: string, attemptAt: string, lock: HeldLock): Promise<void> {
    const meta: CertificateMeta = {
      names: [state.name],
      issuer: issuerId,
      serial: leaf.serialNumber,
      notBefore: leaf.validFromDate.toISOString(),
      notAfter: leaf.validToDate.toISOString(),
      lastAttempt: attemptAt,
    };
    try {
      await this.store.saveCertificate(issuerId, state.name, { certPem, keyPem, meta }, lock);
      state.seen.set(issuerId, await this.store.modified(issuerId, state.name));
    } catch (err) {
      // The certificate is good: serve it; it is issued again after the next restart.
      this.log.error(
        { name: state.name, issuer: issuerId, err: errorMessage(err), storage: this.store.storage.describe() },
        'could not store the new certificate; serving it from memory',
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // Scheduling

  private isExpired(current: Current): boolean {
    return this.clock.now() >= current.notAfter;
  }

  private isDue(state: NameState): boolean {
    const c = state.current;
    if (c === null) return true;
    const now = this.clock.now();
    if (state.ari !== null && state.ari.serial === c.serial && state.ari.at !== null) return now >= state.ari.at || now >= c.notAfter;
    return describeRenewal(c.notBefore, c.notAfter, now).due;
  }

  /** After a certificate is installed (or kept): renew at once when asked/needed, else plan the renewal. */
  private afterInstall(state: NameState, now: boolean): void {
    if (this.stopped) return;
    if (now || state.current === null) {
      state.next = { at: this.clock.now(), reason: state.current === null ? 'no certificate yet' : 'expired' };
      this.arm(state, 0, () => void this.attempt(state, false));
      return;
    }
    void this.replan(state).catch((err: unknown) => {
      this.log.error({ name: state.name, err: errorMessage(err) }, 'renewal planning failed; using the 1/3 rule');
    });
  }

  /** Works out the next renewal time (ARI when offered, else 1/3 of the lifetime left) and arms the timer. */
  private async replan(state: NameState): Promise<void> {
    const current = state.current;
    if (current === null || this.stopped) return;
    const rule = describeRenewal(current.notBefore, current.notAfter, this.clock.now());
    let at = rule.at;
    let reason = rule.reason;
    let wake = rule.at;
    const issuer = this.issuers.find((i) => i.id === current.issuerId);
    if (issuer?.renewalInfo !== undefined && !this.noAri.has(issuer.id)) {
      // Until the CA answers (or if it never does), the 1/3 rule holds.
      const known = state.ari !== null && state.ari.serial === current.serial && state.ari.at !== null ? state.ari.at : null;
      state.next = known === null ? { at: rule.at, reason: rule.reason } : state.next;
      if (known === null) {
        this.arm(state, rule.at - this.clock.now(), () => {
          if (state.current === current) void this.attempt(state, false);
        });
      }
      await this.refreshAri(state, issuer, current);
      const ari = state.ari;
      if (this.stopped || state.current !== current) return;
      if (ari !== null) {
        if (ari.at !== null && ari.window !== null) {
          at = ari.at;
          reason = `ARI window ${new Date(ari.window.start).toISOString()} – ${new Date(ari.window.end).toISOString()}`;
        }
        wake = Math.min(at, ari.nextCheck);
      }
    }
    state.next = { at, reason };
    this.arm(state, wake - this.clock.now(), () => {
      if (state.current === current && this.clock.now() >= at) void this.attempt(state, false);
      else this.afterInstall(state, false);
    });
    // For `matrix-edge certs` when no edge is running to ask.
    await this.store
      .updateMeta(current.issuerId, state.name, { nextRenewal: new Date(at).toISOString(), nextRenewalReason: reason })
      .catch(() => undefined);
  }

  private async refreshAri(state: NameState, issuer: Issuer, current: Current): Promise<void> {
    const now = this.clock.now();
    const known = state.ari !== null && state.ari.serial === current.serial ? state.ari : null;
    if (known !== null && now < known.nextCheck) return;
    try {
      const advice = await issuer.renewalInfo!(current.leaf);
      if (advice === null) {
        this.noAri.add(issuer.id);
        state.ari = null;
        return;
      }
      const { window } = advice;
      const same = known?.window != null && known.window.start === window.start && known.window.end === window.end;
      const at = same && known.at !== null ? known.at : chooseRenewalTime(window, now, this.random);
      state.ari = { serial: current.serial, window, at, nextCheck: this.clock.now() + advice.retryAfterMs };
      if (!same) {
        this.log.info(
          {
            name: state.name,
            issuer: issuer.id,
            windowStart: new Date(window.start).toISOString(),
            windowEnd: new Date(window.end).toISOString(),
            renewAt: new Date(at).toISOString(),
            explanation: window.explanationUrl,
          },
          'renewal window from the CA (ARI)',
        );
      }
    } catch (err) {
      this.log.warn(
        { name: state.name, issuer: issuer.id, err: errorMessage(err) },
        'could not fetch renewal information (ARI); using the 1/3 rule until the next check',
      );
      state.ari = { serial: current.serial, window: known?.window ?? null, at: known?.at ?? null, nextCheck: now + ARI_RETRY_ON_ERROR_MS };
    }
  }

  private arm(state: NameState, delayMs: number, fn: () => void): void {
    if (state.inflight !== null) {
      const armedAt = this.clock.now();
      state.deferredArm = () => this.arm(state, delayMs - (this.clock.now() - armedAt), fn);
      return;
    }
    state.timer?.cancel();
    state.timer = this.stopped ? null : this.clock.setTimer(fn, Math.max(0, delayMs));
  }

  private installCertificate(
    state: NameState,
    issuerId: string,
    leaf: X509Certificate,
    certPem: string,
    keyPem: string,
    from: 'storage' | 'issued',
  ): void {
    const notBefore = leaf.validFromDate.getTime();
    const notAfter = leaf.validToDate.getTime();
    state.current = { issuerId, leaf, notBefore, notAfter, serial: leaf.serialNumber };
    if (state.ari !== null && state.ari.serial !== leaf.serialNumber) state.ari = null;
    const material: CertificateMaterial = { names: [state.name], certPem, keyPem, notAfter: new Date(notAfter).toISOString() };
    const rule = describeRenewal(notBefore, notAfter, this.clock.now());
    const expired = rule.expired;
    this.log.info(
      {
        name: state.name,
        issuer: issuerId,
        serial: leaf.serialNumber,
        notAfter: material.notAfter,
        from,
        renewAt: new Date(rule.at).toISOString(),
        renewReason: rule.reason,
        expired,
        ...(expired ? { note: 'expired: served while a new one is obtained' } : {}),
      },
      'certificate installed',
    );
    this.install?.(material);
    if (this.readyWaiters.length > 0 && [...this.states.values()].every((s) => s.current !== null)) {
      for (const resolve of this.readyWaiters.splice(0)) resolve();
    }
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
