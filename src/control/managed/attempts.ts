/**
 * One attempt to obtain a name's certificate: serialised per name, and across processes by the
 * name's storage lock, under which the store is read again first (another process may just have
 * stored one), then the primary issuer is asked, then each fallback. Every failure is logged with
 * the CA's problem; when all failed, the name backs off (schedule.retry) and a loud warning goes
 * out inside the last 7 days.
 */
import type { X509Certificate } from 'node:crypto';
import { ME_STORAGE_LOCK, errorCategory, errorMessage, type ErrorCategory } from '../../errors';
import type { Logger } from '../../observe/log';
import { parseCertificateChain, parsePrivateKey } from '../../pki/pem';
import { checkCovers, checkKeyMatches } from '../../pki/x509';
import type { CertificateMeta, CertificateStore } from '../../store/certificate-store';
import { issueLockKey } from '../../store/keys';
import type { HeldLock, Locker } from '../../store/storage';
import type { Clock } from '../clock';
import type { Issuer } from '../issuer';
import { expiryWarning } from '../renewal';
import type { AttemptResult, CertificateEvent } from '../source';
import type { NameState, NameStates } from './name-state';
import type { Planner } from './planner';
import * as schedule from './schedule';
import type { StoredCertificates } from './store-poll';

interface FailedRequest {
  readonly issuer: string;
  readonly error: string;
  readonly category: ErrorCategory;
  readonly retryAfterMs: number | null;
  /** The CA's problem document, when it sent one. */
  readonly problem: unknown;
}

export interface AttemptSettings {
  /** The primary issuer's id: the lock key and the label of a failure to lock. */
  readonly id: string;
  readonly issuers: readonly Issuer[];
  readonly store: CertificateStore;
  readonly locks: Locker;
  readonly clock: Clock;
  readonly random: () => number;
  readonly retryBaseMs: number;
  readonly log: Logger;
  readonly emit: (event: CertificateEvent) => void;
}

export class Attempts {
  constructor(
    private readonly names: NameStates,
    private readonly stored: StoredCertificates,
    private readonly planner: Planner,
    private readonly s: AttemptSettings,
  ) {}

  /** One attempt for a name; while one is in flight, that one. */
  attempt(state: NameState, force: boolean): Promise<AttemptResult> {
    if (state.inflight !== null) return state.inflight;
    state.timer?.cancel();
    state.timer = null;
    const run = this.run(state, force).finally(() => {
      state.inflight = null;
      // Timers armed during the attempt start only now, after the lock is released.
      const deferred = state.deferredArm;
      state.deferredArm = null;
      deferred?.();
    });
    state.inflight = run;
    return run;
  }

  private async run(state: NameState, force: boolean): Promise<AttemptResult> {
    const { name } = state;
    const { log } = this.s;
    const stopped: AttemptResult = { name, ok: false, serial: null, outcome: 'failed', error: 'stopped' };
    if (this.names.stopped) return stopped;
    let lock: HeldLock;
    try {
      lock = await this.s.locks.lock(issueLockKey(this.s.id, name), {
        purpose: `certificate for ${name}`,
        onWait: (holder) =>
          log.info({ name, holder: holder === null ? null : { pid: holder.pid, host: holder.host, since: holder.created } }, 'another process is obtaining this certificate; waiting for it'),
        onTakeover: (holder, reason) => log.warn({ name, reason, holder: holder === null ? null : { pid: holder.pid, host: holder.host } }, 'took over a stale storage lock'),
      });
    } catch (err) {
      const failure = new ME_STORAGE_LOCK(errorMessage(err));
      return this.failed(state, [{ issuer: this.s.id, error: failure.message, category: failure.category, retryAfterMs: null, problem: null }]);
    }
    try {
      if (this.names.stopped) return stopped;
      // Another process may have renewed it while we waited for the lock.
      const changed = await this.stored.installStored(state, true);
      if (!force && state.current !== null && !this.planner.isDue(state)) {
        if (changed) log.info({ name, serial: state.current.serial }, 'a renewed certificate was already in storage; no new order');
        state.failures = 0;
        state.lastError = null;
        this.planner.afterInstall(state, false);
        return { name, ok: true, serial: state.current.serial, outcome: changed ? 'stored' : 'not-due', error: null };
      }
      const errors: FailedRequest[] = [];
      for (const [i, issuer] of this.s.issuers.entries()) {
        if (this.names.stopped) break;
        const result = await this.ask(state, issuer, lock, i === this.s.issuers.length - 1);
        if ('error' in result) errors.push(result.error);
        else return result.done;
      }
      return this.failed(state, errors);
    } finally {
      await lock.release().catch(() => undefined);
    }
  }

  /** One request to one issuer: the certificate stored and served, or why not. */
  private async ask(state: NameState, issuer: Issuer, lock: HeldLock, last: boolean): Promise<{ done: AttemptResult } | { error: FailedRequest }> {
    const { name } = state;
    const { log, emit } = this.s;
    const attemptAt = new Date(this.s.clock.now()).toISOString();
    log.info({ name, issuer: issuer.id, renewing: state.current?.serial ?? null }, 'requesting a certificate');
    try {
      const { certPem, keyPem } = await issuer.issue([name], { replacing: state.current?.issuerId === issuer.id ? state.current.leaf : null });
      const leaf = checkIssued(name, certPem, keyPem, issuer.id);
      emit({ type: 'request', name, issuer: issuer.id, ok: true });
      if (!(await lock.stillHeld())) {
        log.warn({ name }, 'the storage lock was taken over while this certificate was being obtained (this process looked hung); storing it anyway');
      }
      await this.save(state, issuer.id, leaf, certPem, keyPem, attemptAt, lock);
      const done: AttemptResult = { name, ok: true, serial: leaf.serialNumber, outcome: 'renewed', error: null };
      if (this.names.stopped) return { done };
      const recovered = state.failures > 0 ? (state.current === null ? 'certificate obtained after earlier failures' : 'certificate renewal recovered') : null;
      state.failures = 0;
      state.lastError = null;
      this.names.serve(state, issuer.id, leaf, certPem, keyPem, 'issued');
      if (recovered !== null) log.info({ name, issuer: issuer.id }, recovered);
      this.planner.afterInstall(state, false);
      return { done };
    } catch (err) {
      const message = errorMessage(err);
      const category = errorCategory(err);
      const retryAfterMs = (err as { retryAfterMs?: unknown } | null)?.retryAfterMs;
      const problem = (err as { problem?: unknown } | null)?.problem ?? null;
      emit({ type: 'request', name, issuer: issuer.id, ok: false, errorType: category, error: message });
      if (!last) log.error({ name, issuer: issuer.id, err: message, problem }, 'certificate request failed; trying the next CA');
      await this.s.store.recordAttempt(issuer.id, name, { at: attemptAt, error: message }).catch(() => undefined);
      return { error: { issuer: issuer.id, error: message, category, retryAfterMs: typeof retryAfterMs === 'number' ? retryAfterMs : null, problem } };
    }
  }

  /** Every issuer failed: back off (at least the CA's Retry-After), warn loudly near expiry. */
  private failed(state: NameState, errors: readonly FailedRequest[]): AttemptResult {
    const { name } = state;
    const { log } = this.s;
    state.failures += 1;
    state.lastError = errors.length === 1 ? errors[0]!.error : errors.map((e) => `${e.issuer}: ${e.error}`).join('; ');
    const now = this.s.clock.now();
    const current = state.current;
    const asked = Math.max(0, ...errors.map((e) => e.retryAfterMs ?? 0));
    const next = schedule.retry({ failures: state.failures, now, notAfter: current?.notAfter ?? null, retryAfterMs: asked, baseMs: this.s.retryBaseMs, random: this.s.random });
    log.error(
      {
        name,
        issuer: errors[errors.length - 1]?.issuer,
        attempt: state.failures,
        retryAt: new Date(next.at).toISOString(),
        problem: errors[errors.length - 1]?.problem ?? null,
        retryAfterMs: asked > 0 ? asked : undefined,
        current: current === null ? null : new Date(current.notAfter).toISOString(),
        err: state.lastError,
      },
      current === null ? 'certificate issuance failed; no certificate to serve for this name yet' : 'certificate renewal failed; still serving the current certificate',
    );
    const warning = current === null ? null : expiryWarning(current.notAfter, now);
    if (warning !== null) {
      log.fatal(
        { name, alert: 'certificate-expiring', notAfter: new Date(current!.notAfter).toISOString(), failures: state.failures, err: state.lastError },
        `CERTIFICATE FOR ${name} ${warning} AND RENEWAL KEEPS FAILING: fix the cause above (DNS, ports 80/443, the CA) — clients will be refused when it expires`,
      );
    }
    state.next = { at: next.at, reason: next.reason };
    this.names.arm(state, next.delayMs, () => void this.attempt(state, false));
    const category = errors[errors.length - 1]?.category ?? 'other';
    this.s.emit({ type: 'failed', name, failures: state.failures, error: state.lastError, category, notAfter: current?.notAfter ?? null });
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
      await this.s.store.saveCertificate(issuerId, state.name, { certPem, keyPem, meta }, lock);
      await this.stored.noteSeen(state, issuerId);
    } catch (err) {
      // The certificate is good: serve it; it is issued again after the next restart.
      this.s.log.error(
        { name: state.name, issuer: issuerId, err: errorMessage(err), storage: this.s.store.storage.describe() },
        'could not store the new certificate; serving it from memory',
      );
    }
  }
}

/** Parses what an issuer returned and checks it is usable for `name`; returns the leaf. */
function checkIssued(name: string, certPem: string, keyPem: string, issuer: string): X509Certificate {
  const label = `certificate from issuer ${issuer}`;
  const leaf = parseCertificateChain(certPem, label)[0]!;
  checkKeyMatches(leaf, parsePrivateKey(keyPem, `key from issuer ${issuer}`), label, `key from issuer ${issuer}`);
  checkCovers(leaf, name, label);
  return leaf;
}
