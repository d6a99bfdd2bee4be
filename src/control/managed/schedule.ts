/**
 * When to try a name next, and why — pure: data in, a time (ms since the epoch) and a reason out.
 * Nothing here reads a clock or arms a timer; the caller passes `now` (from the injected Clock)
 * and `random` (Math.random in production).
 *
 * - Renewal: inside the CA's ARI window when it gave one (a time chosen in it, kept while the
 *   window stays the same; re-checked as the CA asks), else when a third of the lifetime is left.
 * - Failure: exponential backoff with jitter, at least the CA's Retry-After, and never past the
 *   point where the certificate still served would lapse untried (a third of the time left).
 */
import { chooseRenewalTime, type RenewalWindow } from '../ari';
import { describeRenewal, retryDelay } from '../renewal';

/** The certificate served for a name, as far as scheduling goes. */
export interface Served {
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** What the CA's renewal information said about the certificate with `serial`. */
export interface AriPlan {
  readonly serial: string;
  /** The CA's window; null when it could not be asked yet (an error). */
  readonly window: RenewalWindow | null;
  /** The time chosen inside the window. */
  readonly at: number | null;
  /** When to ask the CA again. */
  readonly nextCheck: number;
}

export interface Next {
  readonly at: number;
  readonly reason: string;
}

/** How long to wait before asking again after the CA could not be asked for renewal information. */
export const ARI_RETRY_ON_ERROR_MS = 60 * 60 * 1000;

/** The ARI plan when it is about `served` (the same serial), else null. */
function planFor(served: Served, ari: AriPlan | null): AriPlan | null {
  return ari !== null && ari.serial === served.serial ? ari : null;
}

/** Whether `served` is due for renewal at `now` (always once it has expired, or when there is none). */
export function isDue(served: Served | null, ari: AriPlan | null, now: number): boolean {
  if (served === null) return true;
  const plan = planFor(served, ari);
  if (plan !== null && plan.at !== null) return now >= plan.at || now >= served.notAfter;
  return describeRenewal(served.notBefore, served.notAfter, now).due;
}

/** An attempt at once: there is no certificate yet, or the one served has expired. */
export function immediate(served: Served | null, now: number): Next {
  return { at: now, reason: served === null ? 'no certificate yet' : 'expired' };
}

/**
 * When `served` is renewed and why (ARI when the plan has a chosen time, else the 1/3 rule), and
 * when to wake up — earlier than `at` when the CA is to be asked again before then.
 */
export function renewal(served: Served, ari: AriPlan | null, now: number): Next & { readonly wake: number } {
  const rule = describeRenewal(served.notBefore, served.notAfter, now);
  const plan = planFor(served, ari);
  if (plan === null) return { at: rule.at, reason: rule.reason, wake: rule.at };
  const windowed = plan.at !== null && plan.window !== null;
  const at = windowed ? plan.at! : rule.at;
  const reason = windowed ? `ARI window ${new Date(plan.window!.start).toISOString()} – ${new Date(plan.window!.end).toISOString()}` : rule.reason;
  return { at, reason, wake: Math.min(at, plan.nextCheck) };
}

/** Whether the CA is to be asked for renewal information about `served` at `now`. */
export function ariCheckDue(served: Served, ari: AriPlan | null, now: number): boolean {
  const plan = planFor(served, ari);
  return plan === null || now >= plan.nextCheck;
}

/**
 * The plan after the CA answered with `window` (asked at `askedAt`, answered at `answeredAt`, to
 * be asked again `retryAfterMs` later). The time chosen in the window is kept while the window
 * stays the same; `changed` says whether it did not.
 */
export function ariAnswered(
  served: Served,
  known: AriPlan | null,
  answer: { readonly window: RenewalWindow; readonly retryAfterMs: number },
  askedAt: number,
  answeredAt: number,
  random: () => number,
): { readonly plan: AriPlan; readonly changed: boolean } {
  const previous = planFor(served, known);
  const { window } = answer;
  const same = previous?.window != null && previous.window.start === window.start && previous.window.end === window.end;
  const at = same && previous.at !== null ? previous.at : chooseRenewalTime(window, askedAt, random);
  return { plan: { serial: served.serial, window, at, nextCheck: answeredAt + answer.retryAfterMs }, changed: !same };
}

/** The plan after the CA could not be asked at `now`: what was known stays, asked again in an hour. */
export function ariFailed(served: Served, known: AriPlan | null, now: number): AriPlan {
  const previous = planFor(served, known);
  return { serial: served.serial, window: previous?.window ?? null, at: previous?.at ?? null, nextCheck: now + ARI_RETRY_ON_ERROR_MS };
}

export interface RetryInput {
  /** Failed attempts in a row, this one included (1 after the first failure). */
  readonly failures: number;
  readonly now: number;
  /** notAfter of the certificate still served; null when there is none. */
  readonly notAfter: number | null;
  /** The longest Retry-After the CAs asked for in this attempt, ms (0: none). */
  readonly retryAfterMs: number;
  /** First retry delay (doubling up to 6 h). */
  readonly baseMs: number;
  readonly random: () => number;
}

/** When to try again after every issuer failed. */
export function retry(input: RetryInput): Next & { readonly delayMs: number } {
  const { failures, now, notAfter, baseMs } = input;
  let delay = retryDelay(failures, input.random, baseMs);
  // Never let the backoff sleep past the certificate: try again at least twice before it lapses.
  if (notAfter !== null && notAfter > now) delay = Math.min(delay, Math.max(baseMs, (notAfter - now) / 3));
  delay = Math.max(delay, input.retryAfterMs);
  return { at: now + delay, delayMs: delay, reason: `retry ${failures} after a failure` };
}
