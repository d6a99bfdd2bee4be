/**
 * The renewal scheduler, pure: the 1/3 rule, the ARI window, backoff with jitter and the CA's
 * Retry-After, the lapse cap. Time comes from a ManualClock, as the managed source gets it.
 */
import { ManualClock } from '../../src/control/clock';
import * as schedule from '../../src/control/managed/schedule';

const HOUR = 3600_000;
const DAY = 24 * HOUR;
const mid = (): number => 0.5; // no jitter; the middle of a window

let clock: ManualClock;
beforeEach(() => {
  clock = new ManualClock(Date.UTC(2030, 0, 1));
});

/** A 90-day certificate issued now. */
const served = (serial = 'aa'): schedule.Served => ({ serial, notBefore: clock.now(), notAfter: clock.now() + 90 * DAY });

describe('renewal', () => {
  it('without ARI: when a third of the lifetime is left, waking then', () => {
    const cert = served();
    expect(schedule.renewal(cert, null, clock.now())).toEqual({ at: cert.notBefore + 60 * DAY, reason: '1/3 of lifetime left', wake: cert.notBefore + 60 * DAY });
    clock.advance(60 * DAY - 1);
    expect(schedule.isDue(cert, null, clock.now())).toBe(false);
    clock.advance(1);
    expect(schedule.isDue(cert, null, clock.now())).toBe(true);
  });

  it('with an ARI window: the chosen time inside it, waking for the re-check first', () => {
    const cert = served();
    const window = { start: clock.now() + 50 * DAY, end: clock.now() + 52 * DAY, explanationUrl: null };
    const { plan, changed } = schedule.ariAnswered(cert, null, { window, retryAfterMs: 6 * HOUR }, clock.now(), clock.now(), mid);
    expect(changed).toBe(true);
    expect(plan).toEqual({ serial: 'aa', window, at: window.start + DAY, nextCheck: clock.now() + 6 * HOUR });
    expect(schedule.renewal(cert, plan, clock.now())).toEqual({
      at: window.start + DAY,
      reason: `ARI window ${new Date(window.start).toISOString()} – ${new Date(window.end).toISOString()}`,
      wake: clock.now() + 6 * HOUR,
    });
    expect(schedule.ariCheckDue(cert, plan, clock.now())).toBe(false);
    clock.advance(6 * HOUR);
    expect(schedule.ariCheckDue(cert, plan, clock.now())).toBe(true);
    // Due at the chosen time, before the 1/3 point.
    clock.advanceTo(window.start + DAY - 1);
    expect(schedule.isDue(cert, plan, clock.now())).toBe(false);
    clock.advance(1);
    expect(schedule.isDue(cert, plan, clock.now())).toBe(true);
  });

  it('keeps the chosen time while the window stays the same, and chooses again when it moves', () => {
    const cert = served();
    const window = { start: clock.now() + 50 * DAY, end: clock.now() + 52 * DAY, explanationUrl: null };
    const first = schedule.ariAnswered(cert, null, { window, retryAfterMs: HOUR }, clock.now(), clock.now(), mid).plan;
    clock.advance(HOUR);
    const again = schedule.ariAnswered(cert, first, { window, retryAfterMs: HOUR }, clock.now(), clock.now(), () => 0.9);
    expect(again).toEqual({ plan: { ...first, nextCheck: clock.now() + HOUR }, changed: false });
    const moved = { start: clock.now() - HOUR, end: clock.now(), explanationUrl: 'https://ca.example/incident' };
    const after = schedule.ariAnswered(cert, first, { window: moved, retryAfterMs: HOUR }, clock.now(), clock.now(), mid);
    expect(after.changed).toBe(true);
    expect(after.plan.at).toBe(clock.now()); // the window is in the past: at once
    expect(schedule.isDue(cert, after.plan, clock.now())).toBe(true);
  });

  it('ignores a plan about another certificate', () => {
    const cert = served('bb');
    const other: schedule.AriPlan = { serial: 'aa', window: null, at: clock.now(), nextCheck: clock.now() + DAY };
    expect(schedule.isDue(cert, other, clock.now())).toBe(false);
    expect(schedule.renewal(cert, other, clock.now()).reason).toBe('1/3 of lifetime left');
    expect(schedule.ariCheckDue(cert, other, clock.now())).toBe(true);
  });

  it('when the CA cannot be asked: what was known stays, asked again in an hour, the 1/3 rule until then', () => {
    const cert = served();
    const failed = schedule.ariFailed(cert, null, clock.now());
    expect(failed).toEqual({ serial: 'aa', window: null, at: null, nextCheck: clock.now() + schedule.ARI_RETRY_ON_ERROR_MS });
    expect(schedule.renewal(cert, failed, clock.now())).toEqual({ at: cert.notBefore + 60 * DAY, reason: '1/3 of lifetime left', wake: clock.now() + HOUR });
    const window = { start: clock.now() + DAY, end: clock.now() + 2 * DAY, explanationUrl: null };
    const known = schedule.ariAnswered(cert, null, { window, retryAfterMs: HOUR }, clock.now(), clock.now(), mid).plan;
    expect(schedule.ariFailed(cert, known, clock.now())).toEqual({ ...known, nextCheck: clock.now() + HOUR });
  });

  it('an attempt at once without a certificate, or with an expired one; always due then', () => {
    expect(schedule.immediate(null, clock.now())).toEqual({ at: clock.now(), reason: 'no certificate yet' });
    expect(schedule.immediate(served(), clock.now())).toEqual({ at: clock.now(), reason: 'expired' });
    expect(schedule.isDue(null, null, clock.now())).toBe(true);
    const cert = served();
    const late: schedule.AriPlan = { serial: 'aa', window: { start: 0, end: 1, explanationUrl: null }, at: cert.notAfter + DAY, nextCheck: 0 };
    clock.advanceTo(cert.notAfter);
    expect(schedule.isDue(cert, late, clock.now())).toBe(true);
  });
});

describe('retry', () => {
  const input = (over: Partial<schedule.RetryInput> = {}): schedule.RetryInput => ({
    failures: 1,
    now: clock.now(),
    notAfter: clock.now() + 60 * DAY,
    retryAfterMs: 0,
    baseMs: 60_000,
    random: mid,
    ...over,
  });

  it('backs off exponentially from the base delay, with the failure count in the reason', () => {
    expect([1, 2, 3, 4].map((failures) => schedule.retry(input({ failures })).delayMs)).toEqual([60_000, 120_000, 240_000, 480_000]);
    expect(schedule.retry(input({ failures: 3 }))).toEqual({ at: clock.now() + 240_000, delayMs: 240_000, reason: 'retry 3 after a failure' });
    expect(schedule.retry(input({ failures: 30 })).delayMs).toBe(6 * HOUR);
  });

  it('spreads by ±10% (jitter)', () => {
    expect(schedule.retry(input({ random: () => 0 })).delayMs).toBe(54_000);
    expect(schedule.retry(input({ random: () => 0.999999 })).delayMs).toBeCloseTo(66_000, -1);
  });

  it("waits at least the CA's Retry-After", () => {
    expect(schedule.retry(input({ retryAfterMs: 3 * HOUR })).delayMs).toBe(3 * HOUR);
    expect(schedule.retry(input({ failures: 10, retryAfterMs: HOUR })).delayMs).toBe(6 * HOUR);
  });

  it('never sleeps past the certificate still served: at most a third of the time left (at least the base delay)', () => {
    const notAfter = clock.now() + 6 * HOUR;
    expect(schedule.retry(input({ failures: 12, notAfter })).delayMs).toBe(2 * HOUR);
    expect(schedule.retry(input({ failures: 12, notAfter: clock.now() + 60_000 })).delayMs).toBe(60_000);
    // An expired certificate, or none: the backoff alone.
    expect(schedule.retry(input({ failures: 12, notAfter: clock.now() - 1 })).delayMs).toBe(6 * HOUR);
    expect(schedule.retry(input({ failures: 12, notAfter: null })).delayMs).toBe(6 * HOUR);
    // The CA's Retry-After still wins over the cap.
    expect(schedule.retry(input({ failures: 12, notAfter, retryAfterMs: 3 * HOUR })).delayMs).toBe(3 * HOUR);
  });
});
