/**
 * Renewal timing, pure: when a certificate is due, and how long to wait after a failed attempt.
 * All times are milliseconds (epoch for instants).
 */

/** Renew when a third of the certificate's lifetime is left (90-day certificate → at day 60). */
export function renewalTime(notBefore: number, notAfter: number): number {
  return notAfter - (notAfter - notBefore) / 3;
}

export interface RenewalPlan {
  /** When renewal is due (ms epoch). */
  readonly at: number;
  /** now ≥ at. */
  readonly due: boolean;
  /** now ≥ notAfter. */
  readonly expired: boolean;
  /** Why renewal happens at `at`, for logs. */
  readonly reason: string;
}

export const RENEWAL_REASON = '1/3 of lifetime left';

/** The renewal decision for a certificate valid from `notBefore` to `notAfter`, seen at `now`. */
export function describeRenewal(notBefore: number, notAfter: number, now: number): RenewalPlan {
  const at = renewalTime(notBefore, notAfter);
  return { at, due: now >= at, expired: now >= notAfter, reason: RENEWAL_REASON };
}

export const RETRY_BASE_MS = 60_000;
export const RETRY_MAX_MS = 6 * 60 * 60 * 1000;
export const RETRY_JITTER = 0.1;

/**
 * Wait before retry number `attempt` (1 = after the first failure): `baseMs` (60 s), doubling each attempt,
 * capped at 6 h, then spread by ±10% so many edges failing together do not retry in step.
 * `random` returns a number in [0, 1) (Math.random in production).
 */
export function retryDelay(attempt: number, random: () => number, baseMs = RETRY_BASE_MS): number {
  const n = Number.isFinite(attempt) && attempt >= 1 ? Math.floor(attempt) : 1;
  const base = Math.min(baseMs * 2 ** Math.min(n - 1, 40), RETRY_MAX_MS);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(base * (1 + (2 * r - 1) * RETRY_JITTER));
}

/** Renewal failures inside this much of the end are shouted about. */
export const EXPIRY_WARNING_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * "expires in 3 days" / "expires in 5 hours" / "HAS EXPIRED" when `notAfter` is within
 * EXPIRY_WARNING_MS of `now` (or past); null when there is more time than that.
 */
export function expiryWarning(notAfter: number, now: number): string | null {
  const left = notAfter - now;
  if (left > EXPIRY_WARNING_MS) return null;
  if (left <= 0) return 'HAS EXPIRED';
  const hours = left / 3_600_000;
  const count = (n: number, unit: string): string => `EXPIRES IN ${n} ${unit}${n === 1 ? '' : 'S'}`;
  if (hours >= 48) return count(Math.floor(hours / 24), 'DAY');
  if (hours >= 1) return count(Math.floor(hours), 'HOUR');
  return count(Math.max(1, Math.floor(left / 60_000)), 'MINUTE');
}
