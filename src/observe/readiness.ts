/**
 * What `/readyz` checks: every configured name has a certificate valid now, and the upstream
 * answered recently — as the data plane reports it, or else by a cheap probe from here
 * (`GET /_matrix/client/versions`, any HTTP status counts as an answer), cached for a few seconds.
 */
import type { UpstreamStats } from '../plane/messages';
import { httpRequest } from './http-request';

/** The certificate served for a name, as installed. Times in ms since the epoch. */
export interface CertificateFacts {
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** One thing that keeps the edge from being ready. */
export type Missing =
  | { readonly check: 'certificate'; readonly name: string; readonly problem: string }
  | { readonly check: 'upstream'; readonly upstream: string; readonly problem: string }
  | { readonly check: 'pool'; readonly upstream: string; readonly problem: string };

/** A request waiting this long for an upstream connection means clients are waiting: not ready. */
export const QUEUE_READY_BOUND_MS = 2000;

/**
 * Upstream pools that make clients wait: every connection in use with requests queued behind
 * them, or a request queued longer than `boundMs`. One line per upstream (the worst worker).
 */
export function poolProblems(pools: readonly UpstreamStats[], boundMs = QUEUE_READY_BOUND_MS): Missing[] {
  const worst = new Map<string, string>();
  for (const p of pools) {
    if (worst.has(p.upstream)) continue;
    if (p.oldestQueuedMs > boundMs) {
      worst.set(p.upstream, `a request has waited ${Math.round(p.oldestQueuedMs)} ms for a free upstream connection (${p.queued} waiting, ${p.inFlight} in flight, capacity ${p.capacity})`);
    } else if (p.queued > 0 && p.inFlight - p.queued >= p.capacity) {
      worst.set(p.upstream, `the upstream pool is saturated: all ${p.capacity} connections in use, ${p.queued} requests waiting`);
    }
  }
  return [...worst].map(([upstream, problem]) => ({ check: 'pool', upstream, problem }));
}

/** Names without a certificate valid at `now`. */
export function certificateProblems(names: readonly string[], installed: ReadonlyMap<string, CertificateFacts>, now: number): Missing[] {
  return names.flatMap((name): Missing[] => {
    const c = installed.get(name);
    const problem =
      c === undefined
        ? 'no certificate yet'
        : now >= c.notAfter
          ? `the certificate expired at ${new Date(c.notAfter).toISOString()}`
          : now < c.notBefore
            ? `the certificate is not valid before ${new Date(c.notBefore).toISOString()}`
            : null;
    return problem === null ? [] : [{ check: 'certificate', name, problem }];
  });
}

export interface UpstreamProbeOptions {
  /** The upstream's name in the plan, e.g. "homeserver". */
  readonly name: string;
  /** The origin dialled (plan `dial`), e.g. http://127.0.0.1:8008. */
  readonly dial: string;
  /** The upstream URL as configured, for the Host header. */
  readonly url: string;
  readonly now: () => number;
  /** When the data plane last saw the upstream answer (ms epoch), or null. */
  readonly dataPlaneAnsweredAt: () => number | null;
  /** A data-plane answer this recent makes a probe unnecessary (default 10 s). */
  readonly recentMs?: number;
  /** How long a probe's result is reused (default 5 s). */
  readonly cacheMs?: number;
  /** Probe timeout (default 2 s). */
  readonly timeoutMs?: number;
}

export const PROBE_PATH = '/_matrix/client/versions';

export class UpstreamProbe {
  private last: { at: number; problem: string | null } | null = null;
  private running: Promise<string | null> | null = null;

  constructor(private readonly o: UpstreamProbeOptions) {}

  /** Null when the upstream answered recently, else why it did not. */
  async check(): Promise<Missing | null> {
    const now = this.o.now();
    const seen = this.o.dataPlaneAnsweredAt();
    if (seen !== null && now - seen <= (this.o.recentMs ?? 10_000)) return null;
    let problem: string | null;
    if (this.last !== null && now - this.last.at < (this.o.cacheMs ?? 5000)) problem = this.last.problem;
    else problem = await (this.running ??= this.probe().finally(() => (this.running = null)));
    return problem === null ? null : { check: 'upstream', upstream: this.o.name, problem };
  }

  private async probe(): Promise<string | null> {
    const timeoutMs = this.o.timeoutMs ?? 2000;
    const url = `${this.o.dial}${PROBE_PATH}`;
    let problem: string | null = null;
    try {
      await httpRequest(url, { method: 'GET', headers: { host: new URL(this.o.url).host }, timeoutMs });
    } catch (err) {
      problem = `GET ${this.o.url}${PROBE_PATH} got no answer: ${String((err as { message?: unknown } | null)?.message ?? err)}`;
    }
    this.last = { at: this.o.now(), problem };
    return problem;
  }
}
