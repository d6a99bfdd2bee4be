/**
 * A wall clock that tests can move forward: now() is Date.now() plus an offset, timers run on real
 * setTimeout (unref'd, like systemClock), and `jump(ms)` adds to the offset so timers that fall
 * due fire at once. For in-process edges whose renewal waits (Retry-After, backoff) are longer
 * than a test may sleep, while everything else (CA, sockets) runs in real time.
 */
import type { Clock, Timer } from '../../src/control/clock';

interface Pending {
  readonly due: number;
  readonly fn: () => void;
  handle: NodeJS.Timeout | null;
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export class JumpClock implements Clock {
  private offset = 0;
  private readonly pending = new Set<Pending>();

  now(): number {
    return Date.now() + this.offset;
  }

  /** How far ahead of the wall clock this clock is, ms. */
  get ahead(): number {
    return this.offset;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const timer: Pending = { due: this.now() + (Number.isNaN(ms) ? 0 : Math.max(0, ms)), fn, handle: null };
    this.pending.add(timer);
    this.schedule(timer);
    return {
      cancel: () => {
        this.pending.delete(timer);
        if (timer.handle !== null) clearTimeout(timer.handle);
        timer.handle = null;
      },
    };
  }

  /** Moves time forward by `ms`; timers now due fire (asynchronously, earliest first). */
  jump(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`JumpClock.jump: ${ms} is not a non-negative duration`);
    this.offset += ms;
    for (const timer of [...this.pending].sort((a, b) => a.due - b.due)) this.schedule(timer);
  }

  /** Due times (this clock's ms epoch) of the timers not yet fired, earliest first. */
  pendingTimers(): number[] {
    return [...this.pending].map((t) => t.due).sort((a, b) => a - b);
  }

  private schedule(timer: Pending): void {
    if (timer.handle !== null) clearTimeout(timer.handle);
    const wait = Math.min(Math.max(0, timer.due - this.now()), MAX_TIMEOUT_MS);
    timer.handle = setTimeout(() => this.fire(timer), wait);
    timer.handle.unref();
  }

  private fire(timer: Pending): void {
    timer.handle = null;
    if (!this.pending.has(timer)) return;
    if (this.now() < timer.due) return this.schedule(timer);
    this.pending.delete(timer);
    timer.fn();
  }
}
