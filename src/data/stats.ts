/**
 * Traffic figures of one data plane, gathered on the request path at the cost of a few map
 * look-ups and reported to the control plane as a DataPlaneStats: counts since the previous report,
 * gauges as they are now. Pure bookkeeping; the data plane calls it, the caller decides when to take.
 */
import { UPSTREAM_LATENCY_BUCKETS } from '../observe/metrics';
import type { DataPlaneStats, UpstreamStats } from '../plane/messages';

interface Latency {
  /** Per bucket of UPSTREAM_LATENCY_BUCKETS (not cumulative), one more at the end for +Inf. */
  buckets: number[];
  sumSeconds: number;
}

/** A connection's byte counters as last reported. */
interface Counted {
  readonly listener: string;
  read: number;
  written: number;
}

/** What is read of a connection: net.Socket and tls.TLSSocket alike. */
export interface CountedSocket {
  readonly bytesRead: number;
  readonly bytesWritten: number;
}

export class TrafficStats {
  /** route → status → count */
  private requests = new Map<string, Map<number, number>>();
  private latency = new Map<string, Latency>();
  private readonly open = new Map<CountedSocket, Counted>();
  /** Every listener label seen, so one with no connection reports 0 rather than nothing. */
  private readonly listeners = new Set<string>();
  private bytesIn = 0;
  private bytesOut = 0;
  private answeredAt: number | null = null;

  constructor(private readonly worker: number) {}

  /** A request was answered (or given up) on `route` with `status`. */
  request(route: string, status: number): void {
    let byStatus = this.requests.get(route);
    if (byStatus === undefined) this.requests.set(route, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  /** The upstream `name` answered with response headers after `ms`. */
  upstreamAnswered(name: string, ms: number): void {
    let l = this.latency.get(name);
    if (l === undefined) this.latency.set(name, (l = { buckets: new Array<number>(UPSTREAM_LATENCY_BUCKETS.length + 1).fill(0), sumSeconds: 0 }));
    const seconds = ms / 1000;
    let i = 0;
    while (i < UPSTREAM_LATENCY_BUCKETS.length && seconds > UPSTREAM_LATENCY_BUCKETS[i]!) i++;
    l.buckets[i]!++;
    l.sumSeconds += seconds;
    this.answeredAt = Date.now();
  }

  /** A client connection opened on `listener` (e.g. "https:443"). */
  opened(socket: CountedSocket, listener: string): void {
    this.listeners.add(listener);
    this.open.set(socket, { listener, read: socket.bytesRead, written: socket.bytesWritten });
  }

  /** The connection closed: its last bytes are counted. */
  closed(socket: CountedSocket): void {
    const c = this.open.get(socket);
    if (c === undefined) return;
    this.count(socket, c);
    this.open.delete(socket);
  }

  private count(socket: CountedSocket, c: Counted): void {
    this.bytesIn += socket.bytesRead - c.read;
    this.bytesOut += socket.bytesWritten - c.written;
    c.read = socket.bytesRead;
    c.written = socket.bytesWritten;
  }

  /**
   * The report since the previous take; counters start again from zero. The upstream pools'
   * figures and the refused connections come from the data plane, which owns them.
   */
  take(upstreams: readonly UpstreamStats[] = [], droppedConnections = 0): DataPlaneStats {
    const openConnections = new Map<string, number>();
    for (const listener of this.listeners) openConnections.set(listener, 0);
    for (const [socket, c] of this.open) {
      this.count(socket, c);
      openConnections.set(c.listener, (openConnections.get(c.listener) ?? 0) + 1);
    }
    const stats: DataPlaneStats = {
      worker: this.worker,
      requests: [...this.requests].flatMap(([route, byStatus]) => [...byStatus].map(([status, count]) => ({ route, status, count }))),
      upstreamLatency: [...this.latency].map(([upstream, l]) => ({ upstream, buckets: l.buckets, sumSeconds: l.sumSeconds })),
      openConnections: [...openConnections].map(([listener, open]) => ({ listener, open })),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      upstreamAnsweredAt: this.answeredAt,
      upstreams,
      droppedConnections,
    };
    this.requests = new Map();
    this.latency = new Map();
    this.bytesIn = 0;
    this.bytesOut = 0;
    this.answeredAt = null;
    return stats;
  }
}
