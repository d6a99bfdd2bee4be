/**
 * Renewal planning for managed certificates: after a certificate is installed (or kept), its next
 * renewal is worked out — asking the issuer for renewal information (ARI) when it offers it — and
 * the name's timer armed. The decisions themselves are pure (schedule.ts).
 */
import { errorMessage } from '../../errors';
import type { Logger } from '../../observe/log';
import type { CertificateStore } from '../../store/certificate-store';
import type { Clock } from '../clock';
import type { Issuer } from '../issuer';
import type { Current, NameState, NameStates } from './name-state';
import * as schedule from './schedule';

export class Planner {
  /** Issuers that said they offer no renewal information. */
  private readonly noAri = new Set<string>();

  constructor(
    private readonly names: NameStates,
    private readonly issuers: readonly Issuer[],
    private readonly store: CertificateStore,
    private readonly clock: Clock,
    private readonly random: () => number,
    private readonly log: Logger,
    /** Starts an attempt for the name (its timer fired). */
    private readonly attempt: (state: NameState) => void,
  ) {}

  /** Whether the name's certificate is due for renewal now. */
  isDue(state: NameState): boolean {
    return schedule.isDue(state.current, state.ari, this.clock.now());
  }

  /** After a certificate is installed (or kept): an attempt at once when asked or needed, else the renewal planned. */
  afterInstall(state: NameState, now: boolean): void {
    if (this.names.stopped) return;
    if (now || state.current === null) {
      state.next = schedule.immediate(state.current, this.clock.now());
      this.names.arm(state, 0, () => this.attempt(state));
      return;
    }
    void this.replan(state).catch((err: unknown) => {
      this.log.error({ name: state.name, err: errorMessage(err) }, 'renewal planning failed; using the 1/3 rule');
    });
  }

  /** Works out the next renewal time (ARI when offered, else 1/3 of the lifetime left) and arms the timer. */
  private async replan(state: NameState): Promise<void> {
    const current = state.current;
    if (current === null || this.names.stopped) return;
    const startedAt = this.clock.now();
    const issuer = this.issuers.find((i) => i.id === current.issuerId);
    let plan = schedule.renewal(current, null, startedAt);
    if (issuer?.renewalInfo !== undefined && !this.noAri.has(issuer.id)) {
      // Until the CA answers (or if it never does), the 1/3 rule holds.
      const known = state.ari !== null && state.ari.serial === current.serial && state.ari.at !== null;
      if (!known) {
        state.next = { at: plan.at, reason: plan.reason };
        this.names.arm(state, plan.at - this.clock.now(), () => {
          if (state.current === current) this.attempt(state);
        });
      }
      await this.refreshAri(state, issuer, current);
      if (this.names.stopped || state.current !== current) return;
      plan = schedule.renewal(current, state.ari, startedAt);
    }
    const { at, reason, wake } = plan;
    state.next = { at, reason };
    this.names.arm(state, wake - this.clock.now(), () => {
      if (state.current === current && this.clock.now() >= at) this.attempt(state);
      else this.afterInstall(state, false);
    });
    // For `matrix-edge certs` when no edge is running to ask.
    await this.store.updateMeta(current.issuerId, state.name, { nextRenewal: new Date(at).toISOString(), nextRenewalReason: reason }).catch(() => undefined);
  }

  /** Asks the issuer for the renewal window when the last answer is due for a re-check. */
  private async refreshAri(state: NameState, issuer: Issuer, current: Current): Promise<void> {
    const now = this.clock.now();
    if (!schedule.ariCheckDue(current, state.ari, now)) return;
    try {
      const advice = await issuer.renewalInfo!(current.leaf);
      if (advice === null) {
        this.noAri.add(issuer.id);
        state.ari = null;
        return;
      }
      const { plan, changed } = schedule.ariAnswered(current, state.ari, advice, now, this.clock.now(), this.random);
      state.ari = plan;
      if (changed) {
        this.log.info(
          {
            name: state.name,
            issuer: issuer.id,
            windowStart: new Date(advice.window.start).toISOString(),
            windowEnd: new Date(advice.window.end).toISOString(),
            renewAt: new Date(plan.at!).toISOString(),
            explanation: advice.window.explanationUrl,
          },
          'renewal window from the CA (ARI)',
        );
      }
    } catch (err) {
      this.log.warn(
        { name: state.name, issuer: issuer.id, err: errorMessage(err) },
        'could not fetch renewal information (ARI); using the 1/3 rule until the next check',
      );
      state.ari = schedule.ariFailed(current, state.ari, now);
    }
  }
}
