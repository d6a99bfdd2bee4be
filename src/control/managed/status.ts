/** What `matrix-edge certs` shows per name: what is served and what happens next. */
import type { NameStatus } from '../source';
import type { NameState } from './name-state';

export function nameStatus(name: string, state: NameState | undefined): NameStatus {
  const c = state?.current ?? null;
  return {
    name,
    issuer: c?.issuerId ?? null,
    serial: c?.serial ?? null,
    notAfter: c === null ? null : new Date(c.notAfter).toISOString(),
    nextRenewal: state?.next == null ? null : new Date(state.next.at).toISOString(),
    nextReason: state?.next?.reason ?? null,
    failures: state?.failures ?? 0,
    lastError: state?.lastError ?? null,
  };
}
