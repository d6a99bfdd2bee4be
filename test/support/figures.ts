/** What a running test edge says about itself: its /metrics figures and its access lines. */
import type { TestEdge } from './edge';
import { adminGet, metric, samples } from './metrics';

/** The edge's /metrics text (a scrape collects the data plane's figures first). */
export async function scrape(edge: TestEdge): Promise<string> {
  const answer = await adminGet(edge.edge.admin!.port, '/metrics');
  if (answer.status !== 200) throw new Error(`/metrics answered ${answer.status}`);
  return answer.body;
}

/** matrix_edge_requests_total for one route and status (0 before the first). */
export async function requestsTotal(edge: TestEdge, route: string, status: number): Promise<number> {
  return metric(await scrape(edge), 'matrix_edge_requests_total', { route, status: String(status) }) ?? 0;
}

/** The sum of every sample of a metric (0 when there is none). */
export function sumOf(text: string, name: string): number {
  return samples(text)
    .filter((s) => s.name === name)
    .reduce((a, s) => a + s.value, 0);
}

/** Access lines ('request') logged since `from` (an index into edge.logs). */
export function accessLinesSince(edge: TestEdge, from: number): Array<Record<string, unknown>> {
  return edge.logs.slice(from).filter((l) => l.msg === 'request');
}

/** Resolves once the async `predicate()` holds; rejects naming `what` after `timeoutMs` (polls every 20 ms). */
export async function waitForAsync(what: string, predicate: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
