/**
 * The clock of renewal decisions, injected so renewal logic is tested without sleeping.
 * `systemClock` is the real one; `ManualClock` is for tests.
 */

export interface Timer {
  /** Stop the timer; harmless when it already fired or was cancelled. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Run `fn` once, `ms` milliseconds from now (at once when `ms` ≤ 0). */
  setTimer(fn: () => void, ms: number): Timer;
}

/** setTimeout's largest delay: 2^31 − 1 ms (≈ 24.8 days). Longer delays fire at once in Node. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Wall-clock time and unref'd timers (a pending renewal never keeps the process alive). Delays longer
 * than setTimeout allows are chained: the timer re-arms itself until the deadline is within reach.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn: () => void, ms: number): Timer {
    const deadline = Date.now() + (Number.isNaN(ms) ? 0 : Math.max(0, ms));
    let handle: NodeJS.Timeout | null = null;
    let cancelled = false;
    const arm = (): void => {
      if (cancelled) return;
      const remaining = deadline - Date.now();
      if (remaining > MAX_TIMEOUT_MS) {
        handle = setTimeout(arm, MAX_TIMEOUT_MS);
      } else {
        handle = setTimeout(() => {
          handle = null;
          if (!cancelled) fn();
        }, Math.max(0, remaining));
      }
      handle.unref();
    };
    arm();
    return {
      cancel(): void {
        cancelled = true;
        if (handle !== null) clearTimeout(handle);
        handle = null;
      },
    };
  },
};

interface PendingTimer {
  readonly due: number;
  readonly seq: number;
  readonly fn: () => void;
}

/**
 * A clock that only moves when told. `advance(ms)` fires every timer that falls due, earliest first
 * (ties in creation order), with `now()` set to each timer's due time while it runs; timers created
 * by a firing timer fire in the same advance when they fall due within it.
 */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private pending: PendingTimer[] = [];

  constructor(startMs: number = Date.UTC(2030, 0, 1)) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const timer: PendingTimer = {
      due: this.current + (Number.isNaN(ms) ? 0 : Math.max(0, ms)),
      seq: this.seq++,
      fn,
    };
    this.pending.push(timer);
    return {
      cancel: () => {
        this.pending = this.pending.filter((t) => t !== timer);
      },
    };
  }

  /** Move time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ${ms} is not a non-negative duration`);
    this.advanceTo(this.current + ms);
  }

  /** Move time forward to `time` (ms epoch), firing due timers in order. */
  advanceTo(time: number): void {
    if (time < this.current) throw new RangeError('ManualClock cannot go backwards');
    for (;;) {
      const next = this.nextTimer();
      if (next === null || next.due > time) break;
      this.pending = this.pending.filter((t) => t !== next);
      this.current = Math.max(this.current, next.due);
      next.fn();
    }
    this.current = time;
  }

  /** Due times (ms epoch) of the timers not yet fired, earliest first. */
  pendingTimers(): number[] {
    return [...this.pending].sort(byDue).map((t) => t.due);
  }

  /** Due time of the next timer, or null when none is pending. */
  nextDue(): number | null {
    return this.nextTimer()?.due ?? null;
  }

  private nextTimer(): PendingTimer | null {
    let best: PendingTimer | null = null;
    for (const t of this.pending) if (best === null || byDue(t, best) < 0) best = t;
    return best;
  }
}

function byDue(a: PendingTimer, b: PendingTimer): number {
  return a.due - b.due || a.seq - b.seq;
}
