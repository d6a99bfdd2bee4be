import { MAX_TIMEOUT_MS, ManualClock, systemClock } from '../../src/control/clock';
import {
  RENEWAL_REASON,
  RETRY_BASE_MS,
  RETRY_MAX_MS,
  describeRenewal,
  expiryWarning,
  renewalTime,
  retryDelay,
} from '../../src/control/renewal';

const DAY = 24 * 60 * 60 * 1000;

describe('renewalTime', () => {
  it('is when a third of the lifetime is left', () => {
    const notBefore = Date.UTC(2030, 0, 1);
    expect(renewalTime(notBefore, notBefore + 90 * DAY)).toBe(notBefore + 60 * DAY);
    expect(renewalTime(0, 3000)).toBe(2000);
  });
});

describe('describeRenewal', () => {
  const notBefore = 0;
  const notAfter = 90 * DAY;
  it('is not due before the renewal time', () => {
    expect(describeRenewal(notBefore, notAfter, 60 * DAY - 1)).toEqual({
      at: 60 * DAY,
      due: false,
      expired: false,
      reason: '1/3 of lifetime left',
    });
  });
  it('is due from the renewal time on, and says when it has expired', () => {
    expect(describeRenewal(notBefore, notAfter, 60 * DAY)).toMatchObject({ due: true, expired: false });
    expect(describeRenewal(notBefore, notAfter, 90 * DAY)).toMatchObject({ due: true, expired: true });
    expect(RENEWAL_REASON).toBe('1/3 of lifetime left');
  });
});

describe('retryDelay', () => {
  const mid = (): number => 0.5; // no jitter
  it('starts at 60 s and doubles', () => {
    expect([1, 2, 3, 4, 5].map((a) => retryDelay(a, mid))).toEqual([60e3, 120e3, 240e3, 480e3, 960e3]);
    expect(RETRY_BASE_MS).toBe(60_000);
  });
  it('is capped at 6 h', () => {
    expect(retryDelay(9, mid)).toBe(60e3 * 256); // 4.27 h: still doubling
    expect(retryDelay(10, mid)).toBe(6 * 3600e3); // 8.53 h → capped
    expect(retryDelay(1000, mid)).toBe(RETRY_MAX_MS);
  });
  it('spreads by ±10%', () => {
    expect(retryDelay(1, () => 0)).toBe(54_000);
    expect(retryDelay(1, () => 0.999999)).toBeCloseTo(66_000, -1);
    expect(retryDelay(50, () => 0)).toBe(RETRY_MAX_MS * 0.9);
    for (let i = 0; i < 200; i++) {
      const d = retryDelay(3, Math.random);
      expect(d).toBeGreaterThanOrEqual(240e3 * 0.9);
      expect(d).toBeLessThanOrEqual(240e3 * 1.1);
    }
  });
  it('treats attempts below 1 and nonsense as the first', () => {
    expect(retryDelay(0, mid)).toBe(60e3);
    expect(retryDelay(-3, mid)).toBe(60e3);
    expect(retryDelay(Number.NaN, mid)).toBe(60e3);
  });
});

describe('ManualClock', () => {
  it('fires due timers in order, with now() at each due time', () => {
    const clock = new ManualClock(1000);
    const seen: Array<[string, number]> = [];
    clock.setTimer(() => seen.push(['b', clock.now()]), 200);
    clock.setTimer(() => seen.push(['a', clock.now()]), 100);
    clock.setTimer(() => seen.push(['a2', clock.now()]), 100);
    clock.setTimer(() => seen.push(['late', clock.now()]), 5000);
    clock.advance(250);
    expect(seen).toEqual([
      ['a', 1100],
      ['a2', 1100],
      ['b', 1200],
    ]);
    expect(clock.now()).toBe(1250);
    expect(clock.pendingTimers()).toEqual([6000]);
  });
  it('cancels, and fires timers created by timers within the same advance', () => {
    const clock = new ManualClock(0);
    const seen: number[] = [];
    const t = clock.setTimer(() => seen.push(-1), 10);
    t.cancel();
    t.cancel();
    clock.setTimer(() => {
      seen.push(clock.now());
      clock.setTimer(() => seen.push(clock.now()), 30);
    }, 20);
    clock.advance(100);
    expect(seen).toEqual([20, 50]);
    expect(clock.nextDue()).toBeNull();
  });
  it('fires zero and negative delays on advance(0), never backwards', () => {
    const clock = new ManualClock(5);
    let fired = 0;
    clock.setTimer(() => fired++, 0);
    clock.setTimer(() => fired++, -10);
    expect(fired).toBe(0);
    clock.advance(0);
    expect(fired).toBe(2);
    expect(() => clock.advanceTo(1)).toThrow(RangeError);
  });
});

describe('systemClock', () => {
  afterEach(() => jest.useRealTimers());

  it('runs a short timer, and a cancelled one never', async () => {
    let fired = 0;
    let cancelled = 0;
    const done = new Promise<void>((resolve) => {
      systemClock.setTimer(() => {
        fired++;
        resolve();
      }, 5);
    });
    systemClock.setTimer(() => cancelled++, 1).cancel();
    // The timers are unref'd; this keeps the test's event loop alive meanwhile.
    const keepAlive = setTimeout(() => undefined, 1000);
    await done;
    clearTimeout(keepAlive);
    await new Promise((r) => setTimeout(r, 10));
    expect(fired).toBe(1);
    expect(cancelled).toBe(0);
    expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(50);
  });

  it('chains delays longer than setTimeout allows', () => {
    jest.useFakeTimers({ now: Date.UTC(2030, 0, 1) });
    const spy = jest.spyOn(global, 'setTimeout');
    let fired = 0;
    const delay = 60 * DAY; // > 2^31 - 1 ms (24.8 days)
    systemClock.setTimer(() => fired++, delay);
    expect(spy.mock.calls.every(([, ms]) => (ms ?? 0) <= MAX_TIMEOUT_MS)).toBe(true);
    jest.advanceTimersByTime(delay - 1);
    expect(fired).toBe(0);
    jest.advanceTimersByTime(1);
    expect(fired).toBe(1);
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(3);
    expect(spy.mock.calls.every(([, ms]) => (ms ?? 0) <= MAX_TIMEOUT_MS)).toBe(true);
    spy.mockRestore();
  });

  it('cancels a chained timer between links', () => {
    jest.useFakeTimers({ now: Date.UTC(2030, 0, 1) });
    let fired = 0;
    const timer = systemClock.setTimer(() => fired++, 60 * DAY);
    jest.advanceTimersByTime(30 * DAY);
    timer.cancel();
    jest.advanceTimersByTime(60 * DAY);
    expect(fired).toBe(0);
  });
});

describe('expiryWarning', () => {
  const now = Date.UTC(2030, 0, 1);
  const H = 3_600_000;
  test.each([
    [8 * 24 * H, null],
    [7 * 24 * H + 1, null],
    [7 * 24 * H, 'EXPIRES IN 7 DAYS'],
    [49 * H, 'EXPIRES IN 2 DAYS'],
    [47 * H, 'EXPIRES IN 47 HOURS'],
    [H, 'EXPIRES IN 1 HOUR'],
    [59 * 60_000, 'EXPIRES IN 59 MINUTES'],
    [1, 'EXPIRES IN 1 MINUTE'],
    [0, 'HAS EXPIRED'],
    [-H, 'HAS EXPIRED'],
  ])('%d ms left → %s', (left, expected) => {
    expect(expiryWarning(now + left, now)).toBe(expected);
  });
});

describe('retryDelay with a shorter base', () => {
  test('doubles from the base and stays under the cap', () => {
    expect([1, 2, 3].map((n) => retryDelay(n, () => 0.5, 500))).toEqual([500, 1000, 2000]);
    expect(retryDelay(60, () => 0.5, 500)).toBe(6 * 60 * 60 * 1000);
  });
});
