/**
 * Managed certificates and the store: the best stored certificate per name is served (at start, and
 * after waiting for another process's lock), and the store is polled — one stat per issuer and
 * name — so a certificate another process (or `matrix-edge renew`) stored is picked up without a
 * restart.
 */
import { errorMessage } from '../../errors';
import type { Logger } from '../../observe/log';
import type { CertificateStore, StoredCertificate } from '../../store/certificate-store';
import type { Clock, Timer } from '../clock';
import type { Issuer } from '../issuer';
import type { NameState, NameStates } from './name-state';

export class StoredCertificates {
  private pollTimer: Timer | null = null;

  constructor(
    private readonly store: CertificateStore,
    private readonly issuers: readonly Issuer[],
    private readonly names: NameStates,
    private readonly log: Logger,
  ) {}

  /** Serves the best stored certificate when it is newer than what is served. Returns whether it did. */
  async installStored(state: NameState, onlyNewer: boolean): Promise<boolean> {
    const stored = await this.loadBest(state);
    if (stored === null) return false;
    const current = state.current;
    if (current !== null && (stored.meta.serial === current.serial || (onlyNewer && stored.leaf.validToDate.getTime() <= current.notAfter))) {
      return false;
    }
    this.names.serve(state, stored.meta.issuer, stored.leaf, stored.certPem, stored.keyPem, 'storage');
    return true;
  }

  /** Notes the stored certificate's modification time as seen (after reading it, or writing it: the poll then skips it). */
  async noteSeen(state: NameState, issuerId: string): Promise<void> {
    state.seen.set(issuerId, await this.store.modified(issuerId, state.name));
  }

  /** Polls every `everyMs` (0: never); `picked` runs for each name whose stored certificate was newer and is now served. */
  startPolling(clock: Clock, everyMs: number, picked: (state: NameState) => void): void {
    if (everyMs <= 0 || this.names.stopped) return;
    this.pollTimer = clock.setTimer(() => {
      void this.poll(picked).finally(() => this.startPolling(clock, everyMs, picked));
    }, everyMs);
  }

  stopPolling(): void {
    this.pollTimer?.cancel();
    this.pollTimer = null;
  }

  /** The best stored certificate for the name across the issuers (latest notAfter), or null. */
  private async loadBest(state: NameState): Promise<StoredCertificate | null> {
    let best: StoredCertificate | null = null;
    for (const issuer of this.issuers) {
      let stored: StoredCertificate | null = null;
      try {
        stored = await this.store.loadCertificate(issuer.id, state.name);
        await this.noteSeen(state, issuer.id);
      } catch (err) {
        this.log.error({ name: state.name, issuer: issuer.id, err: errorMessage(err) }, 'stored certificate is unusable; a new one will be issued');
      }
      if (stored !== null && (best === null || stored.leaf.validToDate > best.leaf.validToDate)) best = stored;
    }
    return best;
  }

  private async poll(picked: (state: NameState) => void): Promise<void> {
    for (const state of this.names.all()) {
      if (this.names.stopped) return;
      if (state.inflight !== null) continue;
      let changed = false;
      for (const issuer of this.issuers) {
        const modified = await this.store.modified(issuer.id, state.name);
        if (modified !== 0 && modified !== (state.seen.get(issuer.id) ?? 0)) changed = true;
      }
      if (!changed) continue;
      if (await this.installStored(state, true).catch(() => false)) picked(state);
    }
  }
}
