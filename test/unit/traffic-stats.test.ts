import { TrafficStats } from '../../src/data/stats';
import { UPSTREAM_LATENCY_BUCKETS } from '../../src/observe/metrics';

/** A connection whose byte counters the test moves by hand. */
function conn(read = 0, written = 0): { bytesRead: number; bytesWritten: number } {
  return { bytesRead: read, bytesWritten: written };
}

test('requests are counted by route and status, and counters restart after each take', () => {
  const stats = new TrafficStats(2);
  stats.request('client', 200);
  stats.request('client', 200);
  stats.request('client', 404);
  stats.request('federation', 200);
  const first = stats.take();
  expect(first.worker).toBe(2);
  expect(first.requests).toEqual(
    expect.arrayContaining([
      { route: 'client', status: 200, count: 2 },
      { route: 'client', status: 404, count: 1 },
      { route: 'federation', status: 200, count: 1 },
    ]),
  );
  expect(first.requests).toHaveLength(3);
  expect(stats.take().requests).toEqual([]);
});

test('upstream latency lands in the right bucket, +Inf last, with the sum in seconds', () => {
  const stats = new TrafficStats(0);
  stats.upstreamAnswered('homeserver', 3); // 0.003 s: first bucket (≤ 0.005)
  stats.upstreamAnswered('homeserver', 5); // exactly on a bound: that bucket
  stats.upstreamAnswered('homeserver', 700); // 0.7 s: the ≤ 1 bucket
  stats.upstreamAnswered('homeserver', 10 * 60_000); // past the last bound: +Inf
  const before = Date.now();
  const { upstreamLatency, upstreamAnsweredAt } = stats.take();
  expect(upstreamLatency).toHaveLength(1);
  const [l] = upstreamLatency;
  expect(l!.upstream).toBe('homeserver');
  expect(l!.buckets).toHaveLength(UPSTREAM_LATENCY_BUCKETS.length + 1);
  expect(l!.buckets[0]).toBe(2);
  expect(l!.buckets[UPSTREAM_LATENCY_BUCKETS.indexOf(1)]).toBe(1);
  expect(l!.buckets[UPSTREAM_LATENCY_BUCKETS.length]).toBe(1);
  expect(l!.buckets.reduce((a, b) => a + b, 0)).toBe(4);
  expect(l!.sumSeconds).toBeCloseTo(0.003 + 0.005 + 0.7 + 600, 6);
  expect(upstreamAnsweredAt).toBeLessThanOrEqual(before);
  expect(stats.take().upstreamAnsweredAt).toBeNull();
});

test('bytes are counted as they pass on open connections and at close; open connections per listener, 0 kept', () => {
  const stats = new TrafficStats(1);
  const a = conn(100, 10); // counters already moved before tracking: not counted
  const b = conn();
  stats.opened(a, 'https:443');
  stats.opened(b, 'http:80');
  a.bytesRead += 500;
  a.bytesWritten += 2000;
  let report = stats.take();
  expect(report.bytesIn).toBe(500);
  expect(report.bytesOut).toBe(2000);
  expect(report.openConnections).toEqual(expect.arrayContaining([{ listener: 'https:443', open: 1 }, { listener: 'http:80', open: 1 }]));

  a.bytesRead += 7;
  b.bytesWritten += 300;
  stats.closed(b);
  stats.closed(b); // twice: no double count
  report = stats.take();
  expect(report.bytesIn).toBe(7);
  expect(report.bytesOut).toBe(300);
  expect(report.openConnections).toEqual(expect.arrayContaining([{ listener: 'https:443', open: 1 }, { listener: 'http:80', open: 0 }]));
  expect(report.openConnections).toHaveLength(2);
});
