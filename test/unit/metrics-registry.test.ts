import { EdgeMetrics, UPSTREAM_LATENCY_BUCKETS } from '../../src/observe/metrics';
import { families, metric, samples } from '../support/metrics';

const NOW = Date.UTC(2030, 0, 1);

describe('EdgeMetrics', () => {
  test('every family is there from the start; unlabelled counters read 0; the content type is Prometheus text', async () => {
    const { contentType, body } = await new EdgeMetrics(() => NOW).scrape();
    expect(contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    const types = families(body);
    expect(Object.fromEntries([...types].filter(([name]) => name.startsWith('matrix_edge_')))).toEqual({
      matrix_edge_certificate_not_after_seconds: 'gauge',
      matrix_edge_certificate_renewal_in_seconds: 'gauge',
      matrix_edge_certificate_renewal_attempts_total: 'counter',
      matrix_edge_certificate_renewal_failures_total: 'counter',
      matrix_edge_acme_request_duration_seconds: 'histogram',
      matrix_edge_workers: 'gauge',
      matrix_edge_worker_restarts_total: 'counter',
      matrix_edge_requests_total: 'counter',
      matrix_edge_upstream_response_seconds: 'histogram',
      matrix_edge_open_connections: 'gauge',
      matrix_edge_upstream_requests_in_flight: 'gauge',
      matrix_edge_upstream_requests_queued: 'gauge',
      matrix_edge_upstream_queue_wait_seconds: 'gauge',
      matrix_edge_upstream_capacity: 'gauge',
      matrix_edge_upstream_aborts_total: 'counter',
      matrix_edge_connections_refused_total: 'counter',
      matrix_edge_received_bytes_total: 'counter',
      matrix_edge_sent_bytes_total: 'counter',
    });
    // prom-client's default process metrics come along.
    expect(types.get('process_cpu_user_seconds_total')).toBe('counter');
    expect(types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
    expect(metric(body, 'matrix_edge_worker_restarts_total')).toBe(0);
    expect(metric(body, 'matrix_edge_received_bytes_total')).toBe(0);
    expect(metric(body, 'matrix_edge_connections_refused_total')).toBe(0);
  });

  test('upstream pools: in flight, queued and capacity summed over workers, the longest wait, aborts by cause', async () => {
    const m = new EdgeMetrics(() => NOW);
    const pool = (worker: number, inFlight: number, queued: number, oldestQueuedMs: number, aborted: Array<{ cause: string; count: number }>) =>
      m.recordDataPlaneStats({
        worker,
        requests: [],
        upstreamLatency: [],
        openConnections: [],
        bytesIn: 0,
        bytesOut: 0,
        upstreamAnsweredAt: null,
        upstreams: [{ upstream: 'homeserver', capacity: 64, inFlight, queued, oldestQueuedMs, aborted }],
        droppedConnections: worker,
      });
    pool(1, 10, 2, 1500, [{ cause: 'client-gone', count: 3 }]);
    pool(2, 5, 1, 250, [{ cause: 'client-gone', count: 1 }, { cause: 'body-idle', count: 2 }]);
    let { body } = await m.scrape();
    expect(metric(body, 'matrix_edge_upstream_requests_in_flight', { upstream: 'homeserver' })).toBe(15);
    expect(metric(body, 'matrix_edge_upstream_requests_queued', { upstream: 'homeserver' })).toBe(3);
    expect(metric(body, 'matrix_edge_upstream_queue_wait_seconds', { upstream: 'homeserver' })).toBe(1.5);
    expect(metric(body, 'matrix_edge_upstream_capacity', { upstream: 'homeserver' })).toBe(128);
    expect(metric(body, 'matrix_edge_upstream_aborts_total', { upstream: 'homeserver', cause: 'client-gone' })).toBe(4);
    expect(metric(body, 'matrix_edge_upstream_aborts_total', { upstream: 'homeserver', cause: 'body-idle' })).toBe(2);
    expect(metric(body, 'matrix_edge_connections_refused_total')).toBe(3);
    // The next report replaces a worker's gauges; a restarted worker's are dropped.
    pool(1, 0, 0, 0, []);
    m.workerRestarted(2);
    ({ body } = await m.scrape());
    expect(metric(body, 'matrix_edge_upstream_requests_in_flight', { upstream: 'homeserver' })).toBe(0);
    expect(metric(body, 'matrix_edge_upstream_capacity', { upstream: 'homeserver' })).toBe(64);
    expect(metric(body, 'matrix_edge_upstream_aborts_total', { upstream: 'homeserver', cause: 'client-gone' })).toBe(4);
  });

  test('certificate gauges are read at scrape time', async () => {
    let now = NOW;
    const m = new EdgeMetrics(() => now);
    m.certificates = () => [
      { name: 'a.example', issuer: 'local', notAfter: NOW + 90_000_000, nextRenewal: NOW + 60_000_000 },
      { name: 'b.example', issuer: 'files', notAfter: NOW + 1000, nextRenewal: null },
    ];
    now += 10_000;
    const { body } = await m.scrape();
    expect(metric(body, 'matrix_edge_certificate_not_after_seconds', { name: 'a.example', issuer: 'local' })).toBe((NOW + 90_000_000) / 1000);
    expect(metric(body, 'matrix_edge_certificate_not_after_seconds', { name: 'b.example', issuer: 'files' })).toBe((NOW + 1000) / 1000);
    expect(metric(body, 'matrix_edge_certificate_renewal_in_seconds', { name: 'a.example' })).toBe(60_000 - 10);
    expect(metric(body, 'matrix_edge_certificate_renewal_in_seconds', { name: 'b.example' })).toBeUndefined();
  });

  test('attempts, failures by CA and error type (every type listed from the first attempt), CA latency', async () => {
    const m = new EdgeMetrics(() => NOW);
    m.issueAttempt('ca-1');
    m.issueAttempt('ca-1');
    m.issueFailure('ca-1', 'network');
    m.issueAttempt('ca-2');
    m.caRequest('ca-1', 0.07);
    m.caRequest('ca-1', 3);
    const { body } = await m.scrape();
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'ca-1' })).toBe(2);
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'ca-2' })).toBe(1);
    expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca: 'ca-1', error_type: 'network' })).toBe(1);
    for (const type of ['rateLimited', 'challenge', 'badNonce', 'other']) {
      expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca: 'ca-1', error_type: type })).toBe(0);
      expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca: 'ca-2', error_type: type })).toBe(0);
    }
    const bucket = (le: string): number | undefined => metric(body, 'matrix_edge_acme_request_duration_seconds_bucket', { ca: 'ca-1', le });
    expect([bucket('0.05'), bucket('0.1'), bucket('2.5'), bucket('5'), bucket('+Inf')]).toEqual([0, 1, 1, 2, 2]);
    expect(metric(body, 'matrix_edge_acme_request_duration_seconds_sum', { ca: 'ca-1' })).toBeCloseTo(3.07);
    expect(metric(body, 'matrix_edge_acme_request_duration_seconds_count', { ca: 'ca-1' })).toBe(2);
  });

  test('data-plane reports: counts add up, open connections are summed over workers, a restarted worker drops out', async () => {
    const m = new EdgeMetrics(() => NOW);
    m.setWorkers(2);
    const latency = (i: number, n: number): number[] => UPSTREAM_LATENCY_BUCKETS.map((_, j) => (j === i ? n : 0)).concat([0]);
    const report = (worker: number, open: number, answeredAt: number | null) =>
      m.recordDataPlaneStats({
        worker,
        requests: [
          { route: 'proxy:/_matrix/', status: 200, count: 5 },
          { route: 'fallback', status: 404, count: 1 },
        ],
        upstreamLatency: [{ upstream: 'homeserver', buckets: latency(2, 5), sumSeconds: 0.1 }],
        openConnections: [{ listener: 'https:443', open }],
        bytesIn: 100,
        bytesOut: 1000,
        upstreamAnsweredAt: answeredAt,
        upstreams: [],
        droppedConnections: 0,
      });
    report(1, 3, NOW - 5000);
    report(2, 4, null);
    report(1, 2, NOW - 1000);
    let { body } = await m.scrape();
    expect(metric(body, 'matrix_edge_workers')).toBe(2);
    expect(metric(body, 'matrix_edge_requests_total', { route: 'proxy:/_matrix/', status: '200' })).toBe(15);
    expect(metric(body, 'matrix_edge_requests_total', { route: 'fallback', status: '404' })).toBe(3);
    expect(metric(body, 'matrix_edge_upstream_response_seconds_bucket', { upstream: 'homeserver', le: '0.01' })).toBe(0);
    expect(metric(body, 'matrix_edge_upstream_response_seconds_bucket', { upstream: 'homeserver', le: '0.025' })).toBe(15);
    expect(metric(body, 'matrix_edge_upstream_response_seconds_bucket', { upstream: 'homeserver', le: '+Inf' })).toBe(15);
    expect(metric(body, 'matrix_edge_upstream_response_seconds_count', { upstream: 'homeserver' })).toBe(15);
    expect(metric(body, 'matrix_edge_open_connections', { listener: 'https:443' })).toBe(6);
    expect(metric(body, 'matrix_edge_received_bytes_total')).toBe(300);
    expect(metric(body, 'matrix_edge_sent_bytes_total')).toBe(3000);
    expect(m.upstreamAnsweredAt).toBe(NOW - 1000);

    m.workerRestarted(2);
    ({ body } = await m.scrape());
    expect(metric(body, 'matrix_edge_worker_restarts_total')).toBe(1);
    expect(metric(body, 'matrix_edge_open_connections', { listener: 'https:443' })).toBe(2);
  });

  test('bucket counts of the wrong length are ignored', async () => {
    const m = new EdgeMetrics(() => NOW);
    m.recordDataPlaneStats({
      worker: 1,
      requests: [],
      upstreamLatency: [{ upstream: 'homeserver', buckets: [1, 2], sumSeconds: 1 }],
      openConnections: [],
      bytesIn: 0,
      bytesOut: 0,
      upstreamAnsweredAt: null,
      upstreams: [],
      droppedConnections: 0,
    });
    const { body } = await m.scrape();
    expect(samples(body).filter((s) => s.name.startsWith('matrix_edge_upstream_response_seconds'))).toEqual([]);
  });

  test('each edge has its own registry', async () => {
    const a = new EdgeMetrics(() => NOW);
    const b = new EdgeMetrics(() => NOW);
    a.issueAttempt('ca');
    await a.scrape();
    a.issueAttempt('ca');
    expect(metric((await a.scrape()).body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'ca' })).toBe(2);
    expect(metric((await b.scrape()).body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'ca' })).toBeUndefined();
  });
});
