/**
 * Per-name state of managed certificates: what is served, what happens next, the one timer and
 * the one attempt in flight — and serving a certificate (the data plane is told, waiters woken).
 */
import type { X509Certificate } from 'node:crypto';
import type { Logger } from '../../observe/log';
import type { CertificateMaterial } from '../../plane/messages';
import type { Clock, Timer } from '../clock';
import { describeRenewal } from '../renewal';
import type { AttemptResult } from '../source';
import type { AriPlan, Next, Served } from './schedule';

export interface Current extends Served {
  readonly issuerId: string;
  readonly leaf: X509Certificate;
}

export interface NameState {
  readonly name: string;
  current: Current | null;
  timer: Timer | null;
  /** Failed attempts since the last success. */
  failures: number;
  lastError: string | null;
  next: Next | null;
  ari: AriPlan | null;
  inflight: Promise<AttemptResult> | null;
  /** A timer armed while an attempt was running, started once it is over. */
  deferredArm: (() => void) | null;
  /** Modification time of each issuer's stored certificate when last looked at. */
  readonly seen: Map<string, number>;
}

/** Every configured name's state, and the one way a certificate gets served. */
export class NameStates {
  private readonly states = new Map<string, NameState>();
  private install: ((material: CertificateMaterial) => void) | null = null;
  private readyWaiters: Array<() => void> = [];
  stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Creates every name's state; `install` hands a certificate to the data plane. */
  open(names: readonly string[], install: (material: CertificateMaterial) => void): void {
    this.install = install;
    for (const name of names) {
      this.states.set(name, { name, current: null, timer: null, failures: 0, lastError: null, next: null, ari: null, inflight: null, deferredArm: null, seen: new Map() });
    }
  }

  get started(): boolean {
    return this.install !== null;
  }

  get(name: string): NameState | undefined {
    return this.states.get(name);
  }

  all(): NameState[] {
    return [...this.states.values()];
  }

  /** Stops every timer; nothing is armed afterwards. */
  stop(): void {
    this.stopped = true;
    for (const state of this.states.values()) {
      state.timer?.cancel();
      state.timer = null;
    }
  }

  /** Runs `fn` in `delayMs` — or, while an attempt is in flight, once it is over (its lock released). */
  arm(state: NameState, delayMs: number, fn: () => void): void {
    if (state.inflight !== null) {
      const armedAt = this.clock.now();
      state.deferredArm = () => this.arm(state, delayMs - (this.clock.now() - armedAt), fn);
      return;
    }
    state.timer?.cancel();
    state.timer = this.stopped ? null : this.clock.setTimer(fn, Math.max(0, delayMs));
  }

  /** Resolves once every name has a certificate installed (at once when they all do). */
  whenReady(): Promise<void> {
    if (this.states.size > 0 && this.all().every((s) => s.current !== null)) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Serves `leaf` for the name: the data plane gets it, the install is logged, waiters are woken. */
  serve(state: NameState, issuerId: string, leaf: X509Certificate, certPem: string, keyPem: string, from: 'storage' | 'issued'): void {
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
    if (this.readyWaiters.length > 0 && this.all().every((s) => s.current !== null)) {
      for (const resolve of this.readyWaiters.splice(0)) resolve();
    }
  }
}
