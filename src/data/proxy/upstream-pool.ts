/**
 * One named upstream as the data plane uses it: an undici keep-alive Pool of at most
 * `connections` HTTP/1.1 connections (one request each: no pipelining), and the figures health
 * and metrics read — requests in flight, how many wait for a connection and since when, and the
 * exchanges aborted, by cause.
 */
import type { Dispatcher, Pool as PoolType } from 'undici';
import type { UpstreamPlan } from '../../config/plan';
import type { UpstreamStats } from '../../plane/messages';

/**
 * undici's Pool alone: the package's index loads fetch, WebSocket, caches and mocks besides
 * (≈ 110 modules, ≈ 13 MiB per worker process); the Pool module is ≈ 20 of them.
 */
const Pool = require('undici/lib/dispatcher/pool') as typeof PoolType;

/** Why a forwarded exchange ended without completing (counted per upstream). */
export type AbortCause =
  | 'client-gone'
  | 'body-cut'
  | 'body-idle'
  | 'body-too-large'
  | 'send-timeout'
  | 'queue-timeout'
  | 'upstream-timeout'
  | 'upstream-error';

/** A queued exchange as the pool tracks it: when it was dispatched. */
export interface Waiting {
  readonly since: number;
}

export class UpstreamPool {
  readonly pool: PoolType;
  /** Exchanges dispatched and not yet over. */
  inFlight = 0;
  /** Exchanges dispatched that have no upstream connection yet, oldest first (a Set keeps insertion order). */
  private readonly waiting = new Set<Waiting>();
  private aborted = new Map<AbortCause, number>();

  constructor(readonly plan: UpstreamPlan) {
    this.pool = new Pool(plan.dial, {
      connections: plan.connections,
      pipelining: 1,
      headersTimeout: plan.timeoutMs,
      bodyTimeout: plan.timeoutMs,
      connectTimeout: plan.connectTimeoutMs,
    });
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    this.pool.dispatch(options, handler);
  }

  began(): void {
    this.inFlight++;
  }

  ended(): void {
    this.inFlight--;
  }

  queued(w: Waiting): void {
    this.waiting.add(w);
  }

  dequeued(w: Waiting): void {
    this.waiting.delete(w);
  }

  abortedBy(cause: AbortCause): void {
    this.aborted.set(cause, (this.aborted.get(cause) ?? 0) + 1);
  }

  /** Gauges as they are now, and aborts since the previous call. */
  take(now: number): UpstreamStats {
    const oldest = this.waiting.values().next();
    const stats: UpstreamStats = {
      upstream: this.plan.name,
      capacity: this.plan.connections,
      inFlight: this.inFlight,
      queued: this.waiting.size,
      oldestQueuedMs: oldest.done ? 0 : Math.max(0, now - oldest.value.since),
      aborted: [...this.aborted].map(([cause, count]) => ({ cause, count })),
    };
    this.aborted = new Map();
    return stats;
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
