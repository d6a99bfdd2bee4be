/**
 * The edge's Prometheus metrics. One EdgeMetrics per running edge, with its own registry (tests run
 * several edges in one process). Values are kept here as plain numbers — recording one is a map
 * update — and prom-client is loaded at the first scrape (≈ 0.1 s of module loading an edge that is
 * never scraped does not pay, nor a start waiting for its first answer), to write them out in the
 * Prometheus text format beside its default process metrics.
 *
 * Families, all registered from the start (counters without labels read 0 until fed):
 * - certificates: not_after and seconds to the planned renewal per name, read at scrape time;
 * - ACME: attempts and failures by CA (and error type), CA request latency;
 * - workers: configured count, restarts;
 * - data plane (fed by the workers' `stats` reports, see DataPlaneStats): requests by route and
 *   status, upstream latency, open connections per listener, bytes in and out.
 */
import type { Metric, Registry } from 'prom-client';
import { ERROR_CATEGORIES, type ErrorCategory } from '../errors';
import type { DataPlaneStats, UpstreamStats } from '../plane/messages';

/** Why a certificate request failed, as counted by `matrix_edge_certificate_renewal_failures_total`: the error's category. */
export const ISSUE_ERROR_TYPES = ERROR_CATEGORIES;
export type IssueErrorType = ErrorCategory;

/** Upper bounds (seconds) of the upstream latency buckets; DataPlaneStats counts per bucket use them, plus +Inf. */
export const UPSTREAM_LATENCY_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Upper bounds (seconds) of the ACME request latency buckets. */
export const ACME_LATENCY_BUCKETS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** One name's certificate as the gauges show it. Times in ms since the epoch. */
export interface CertificateReading {
  readonly name: string;
  /** Storage key of the issuer, e.g. "acme-v02.api.letsencrypt.org-directory", "local", "files". */
  readonly issuer: string;
  readonly notAfter: number;
  /** When renewal is planned (null: not managed here, e.g. tls.issuer files). */
  readonly nextRenewal: number | null;
}

type Labels = Readonly<Record<string, string>>;

interface Sample {
  readonly metricName?: string;
  readonly labels: Record<string, string | number>;
  readonly value: number;
}

/** A metric family in the shape prom-client's Registry reads: name, help, type, and the samples at scrape. */
abstract class Family {
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  protected abstract samples(): Sample[];
  async get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Sample[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values: this.samples() };
  }
}

const keyOf = (labels: Labels): string => JSON.stringify(labels);

/** Counters or gauges by label values. */
class Values extends Family {
  private readonly series = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly type: 'counter' | 'gauge',
    name: string,
    help: string,
  ) {
    super(name, help);
  }
  add(labels: Labels, n = 1): void {
    const s = this.series.get(keyOf(labels));
    if (s === undefined) this.series.set(keyOf(labels), { labels, value: n });
    else s.value += n;
  }
  set(labels: Labels, value: number): void {
    this.series.set(keyOf(labels), { labels, value });
  }
  protected samples(): Sample[] {
    return [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: s.value }));
  }
}

/** A gauge computed at scrape time. */
class Computed extends Family {
  readonly type = 'gauge';
  constructor(
    name: string,
    help: string,
    private readonly read: () => Sample[],
  ) {
    super(name, help);
  }
  protected samples(): Sample[] {
    return this.read();
  }
}

/** A histogram fed one value at a time or with counts per bucket (from the workers). */
class Histogram extends Family {
  readonly type = 'histogram';
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number }>();
  constructor(
    name: string,
    help: string,
    private readonly bounds: readonly number[],
  ) {
    super(name, help);
  }
  private seriesOf(labels: Labels): { counts: number[]; sum: number } {
    let s = this.series.get(keyOf(labels));
    if (s === undefined) this.series.set(keyOf(labels), (s = { labels, counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0 }));
    return s;
  }
  observe(labels: Labels, value: number): void {
    const s = this.seriesOf(labels);
    const i = this.bounds.findIndex((b) => value <= b);
    s.counts[i === -1 ? this.bounds.length : i]! += 1;
    s.sum += value;
  }
  /** Adds per-bucket counts (one per bound, then +Inf); ignored (false) when their number does not match. */
  add(labels: Labels, counts: readonly number[], sum: number): boolean {
    if (counts.length !== this.bounds.length + 1) return false;
    const s = this.seriesOf(labels);
    counts.forEach((n, i) => (s.counts[i]! += n));
    s.sum += sum;
    return true;
  }
  protected samples(): Sample[] {
    const out: Sample[] = [];
    for (const { labels, counts, sum } of this.series.values()) {
      let total = 0;
      counts.forEach((n, i) => {
        total += n;
        out.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: this.bounds[i] ?? '+Inf' }, value: total });
      });
      out.push({ metricName: `${this.name}_sum`, labels: { ...labels }, value: sum });
      out.push({ metricName: `${this.name}_count`, labels: { ...labels }, value: total });
    }
    return out;
  }
}

/** prom-client's default process metrics (CPU, memory, event loop, GC), collected once per process from the first scrape. */
let processRegistry: Registry | null = null;

function processMetrics(prom: typeof import('prom-client')): readonly Metric[] {
  if (processRegistry === null) {
    processRegistry = new prom.Registry();
    prom.collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry.getMetricsAsArray() as unknown as Metric[];
}

export class EdgeMetrics {
  /** What the certificate gauges show; the control plane sets it once the certificate source exists. */
  certificates: () => readonly CertificateReading[] = () => [];

  private readonly attempts = new Values('counter', 'matrix_edge_certificate_renewal_attempts_total', 'Certificate requests made to a CA (first issuance and renewals), by CA.');
  private readonly failures = new Values(
    'counter',
    'matrix_edge_certificate_renewal_failures_total',
    'Certificate requests that failed, by CA and error type (rateLimited, network, challenge, badNonce, other).',
  );
  private readonly acmeLatency = new Histogram('matrix_edge_acme_request_duration_seconds', 'Time for one HTTP request to an ACME CA to be answered (or fail), by CA.', ACME_LATENCY_BUCKETS);
  private readonly workers = new Values('gauge', 'matrix_edge_workers', 'Data-plane worker processes configured (1: the data plane runs in the primary process).');
  private readonly restarts = new Values('counter', 'matrix_edge_worker_restarts_total', 'Data-plane worker processes restarted after exiting unexpectedly.');
  private readonly requests = new Values('counter', 'matrix_edge_requests_total', 'Requests answered by the data plane, by route and status code.');
  private readonly upstreamLatency = new Histogram(
    'matrix_edge_upstream_response_seconds',
    'Time from forwarding a request to the upstream until its response headers, by upstream.',
    UPSTREAM_LATENCY_BUCKETS,
  );
  private readonly bytesIn = new Values('counter', 'matrix_edge_received_bytes_total', 'Bytes received from clients on their connections (after TLS; headers and bodies).');
  private readonly bytesOut = new Values('counter', 'matrix_edge_sent_bytes_total', 'Bytes sent to clients on their connections (before TLS; headers and bodies).');
  private readonly aborts = new Values(
    'counter',
    'matrix_edge_upstream_aborts_total',
    'Forwarded exchanges aborted, by upstream and cause (client-gone, body-cut, body-idle, body-too-large, send-timeout, queue-timeout, upstream-timeout, upstream-error).',
  );
  private readonly refused = new Values('counter', 'matrix_edge_connections_refused_total', 'Client connections refused because limits.max_connections was reached.');
  /** Open connections per worker and listener, as last reported. */
  private readonly connections = new Map<number, ReadonlyMap<string, number>>();
  /** Each worker's upstream pools, as last reported. */
  private readonly pools = new Map<number, readonly UpstreamStats[]>();
  private readonly knownCas = new Set<string>();
  private lastUpstreamAnswer: number | null = null;
  private registry: Registry | null = null;
  private readonly families: readonly Family[];

  constructor(private readonly now: () => number = Date.now) {
    const byName = (read: (c: CertificateReading) => Sample | null) => () =>
      this.certificates().flatMap((c) => {
        const sample = read(c);
        return sample === null ? [] : [sample];
      });
    this.families = [
      new Computed(
        'matrix_edge_certificate_not_after_seconds',
        'Expiry (notAfter) of the certificate served for each name, seconds since the epoch.',
        byName((c) => ({ labels: { name: c.name, issuer: c.issuer }, value: c.notAfter / 1000 })),
      ),
      new Computed(
        'matrix_edge_certificate_renewal_in_seconds',
        'Seconds until the next planned renewal attempt for each name (after a failure: until the retry).',
        byName((c) => (c.nextRenewal === null ? null : { labels: { name: c.name }, value: (c.nextRenewal - this.now()) / 1000 })),
      ),
      this.attempts,
      this.failures,
      this.acmeLatency,
      this.workers,
      this.restarts,
      this.requests,
      this.upstreamLatency,
      new Computed('matrix_edge_open_connections', 'Client connections open now, by listener (summed over the workers).', () => this.openConnections()),
      new Computed('matrix_edge_upstream_requests_in_flight', 'Forwarded requests not over yet (waiting for an upstream connection or using one), by upstream, summed over the workers.', () =>
        this.poolSum((p) => p.inFlight),
      ),
      new Computed('matrix_edge_upstream_requests_queued', 'Forwarded requests waiting for a free upstream connection, by upstream, summed over the workers.', () =>
        this.poolSum((p) => p.queued),
      ),
      new Computed('matrix_edge_upstream_queue_wait_seconds', 'How long the oldest request waiting for an upstream connection has waited, by upstream (the longest over the workers).', () =>
        this.poolMax((p) => p.oldestQueuedMs / 1000),
      ),
      new Computed('matrix_edge_upstream_capacity', 'Requests the upstream pool carries at once (its connections), by upstream, summed over the workers.', () =>
        this.poolSum((p) => p.capacity),
      ),
      this.aborts,
      this.refused,
      this.bytesIn,
      this.bytesOut,
    ];
    for (const zero of [this.restarts, this.bytesIn, this.bytesOut, this.refused]) zero.add({}, 0);
  }

  /** One certificate request to a CA began. */
  issueAttempt(ca: string): void {
    if (!this.knownCas.has(ca)) {
      this.knownCas.add(ca);
      for (const type of ISSUE_ERROR_TYPES) this.failures.add({ ca, error_type: type }, 0);
    }
    this.attempts.add({ ca });
  }

  issueFailure(ca: string, type: IssueErrorType): void {
    this.failures.add({ ca, error_type: type });
  }

  /** One HTTP request to an ACME CA was answered (or failed) after `seconds`. */
  caRequest(ca: string, seconds: number): void {
    this.acmeLatency.observe({ ca }, seconds);
  }

  setWorkers(count: number): void {
    this.workers.set({}, count);
  }

  /** A data-plane worker exited unexpectedly and is being replaced (its connection and pool gauges are dropped). */
  workerRestarted(worker: number): void {
    this.restarts.add({});
    this.connections.delete(worker);
    this.pools.delete(worker);
  }

  /** Every worker's pool figures as last reported. */
  get upstreamPools(): readonly UpstreamStats[] {
    return [...this.pools.values()].flat();
  }

  private poolSum(read: (p: UpstreamStats) => number): Sample[] {
    const sums = new Map<string, number>();
    for (const p of this.upstreamPools) sums.set(p.upstream, (sums.get(p.upstream) ?? 0) + read(p));
    return [...sums].map(([upstream, value]) => ({ labels: { upstream }, value }));
  }

  private poolMax(read: (p: UpstreamStats) => number): Sample[] {
    const max = new Map<string, number>();
    for (const p of this.upstreamPools) max.set(p.upstream, Math.max(max.get(p.upstream) ?? 0, read(p)));
    return [...max].map(([upstream, value]) => ({ labels: { upstream }, value }));
  }

  /** A data-plane report (see DataPlaneStats): counts are added, open connections replace that worker's last ones. */
  recordDataPlaneStats(stats: DataPlaneStats): void {
    for (const r of stats.requests) this.requests.add({ route: r.route, status: String(r.status) }, r.count);
    for (const u of stats.upstreamLatency) this.upstreamLatency.add({ upstream: u.upstream }, u.buckets, u.sumSeconds);
    this.connections.set(stats.worker, new Map(stats.openConnections.map((c) => [c.listener, c.open])));
    this.pools.set(stats.worker, stats.upstreams);
    for (const u of stats.upstreams) for (const a of u.aborted) this.aborts.add({ upstream: u.upstream, cause: a.cause }, a.count);
    this.refused.add({}, stats.droppedConnections);
    this.bytesIn.add({}, stats.bytesIn);
    this.bytesOut.add({}, stats.bytesOut);
    if (stats.upstreamAnsweredAt !== null) this.lastUpstreamAnswer = Math.max(this.lastUpstreamAnswer ?? 0, stats.upstreamAnsweredAt);
  }

  /** When the data plane last reported an answer from the upstream (ms epoch), or null. */
  get upstreamAnsweredAt(): number | null {
    return this.lastUpstreamAnswer;
  }

  private openConnections(): Sample[] {
    const sums = new Map<string, number>();
    for (const perListener of this.connections.values()) {
      for (const [listener, open] of perListener) sums.set(listener, (sums.get(listener) ?? 0) + open);
    }
    return [...sums].map(([listener, value]) => ({ labels: { listener }, value }));
  }

  /** Every family (this edge's and the process's) in the Prometheus text format. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    if (this.registry === null) {
      const prom = require('prom-client') as typeof import('prom-client');
      const registry = new prom.Registry();
      for (const family of this.families) registry.registerMetric(family as unknown as Metric);
      for (const metric of processMetrics(prom)) registry.registerMetric(metric);
      this.registry = registry;
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
