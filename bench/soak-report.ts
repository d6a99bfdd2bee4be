/**
 * The soak's per-minute rows: the client processes' reports and the edge's figures for one minute,
 * summed and formatted as one line; and a summary of the edge's own log.
 */
import * as fs from 'node:fs';
import type { ClientReport } from './soak-client';
import type { Sample } from './soak-probe';

export interface MinuteRow {
  readonly minute: number;
  /** Seconds since the load started. */
  readonly t: number;
  /** Finished per second: well-behaved exchanges that got the whole, right answer, by kind; misbehaving: all. */
  readonly donePerSecond: Record<string, number>;
  readonly getP50Ms: { readonly h1: number; readonly h2: number };
  readonly getP99Ms: { readonly h1: number; readonly h2: number };
  /** From the edge's metrics, this minute: requests by status, aborted upstream exchanges by cause. */
  readonly edgeStatuses: Record<string, number>;
  readonly edgeAborts: Record<string, number>;
  /** What the misbehaving clients saw, by outcome: expected ones and anomalies. */
  readonly expected: Record<string, number>;
  readonly anomalies: Record<string, number>;
  /** Well-behaved exchanges that failed, by "kind: outcome". */
  readonly unexpected: Record<string, number>;
  readonly skipped: Record<string, number>;
  /** The worst client process's event-loop delay p99 this minute, ms. */
  readonly clientLoopP99Ms: number;
  readonly sample: Sample;
  /** Cores used this minute (CPU seconds per second). */
  readonly cpu: Record<string, number>;
}

const add = (into: Record<string, number>, key: string, n: number): void => void (into[key] = (into[key] ?? 0) + n);
export const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = xs.sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** Kinds as the line shows them. */
function kindGroup(kind: string): string {
  if (kind.startsWith('poll')) return 'poll';
  if (kind.startsWith('upload')) return 'upload';
  if (kind.startsWith('download')) return 'download';
  return kind;
}

export interface Tallied {
  donePerSecond: Record<string, number>;
  expected: Record<string, number>;
  anomalies: Record<string, number>;
  unexpected: Record<string, number>;
  skipped: Record<string, number>;
  latencies: { h1: number[]; h2: number[] };
  clientLoopP99Ms: number;
}

export function tally(reports: readonly ClientReport[], seconds: number): Tallied {
  const done: Record<string, number> = { 'get-h1': 0, 'get-h2': 0, poll: 0, upload: 0, download: 0, misbehaving: 0 };
  const out: Tallied = { donePerSecond: {}, expected: {}, anomalies: {}, unexpected: {}, skipped: {}, latencies: { h1: [], h2: [] }, clientLoopP99Ms: 0 };
  for (const r of reports) {
    for (const [key, n] of Object.entries(r.counts)) {
      const [kind, outcome, cls] = key.split('\t') as [string, string, string];
      if (cls === 'ok') add(done, kindGroup(kind), n);
      else if (cls === 'unexpected') add(out.unexpected, `${kind}: ${outcome}`, n);
      else {
        add(done, 'misbehaving', n);
        add(cls === 'expected' ? out.expected : out.anomalies, cls === 'expected' ? outcome : `${kind}: ${outcome}`, n);
      }
    }
    for (const [k, n] of Object.entries(r.skipped)) add(out.skipped, k, n);
    out.clientLoopP99Ms = Math.max(out.clientLoopP99Ms, r.loopDelayMs.p99);
    out.latencies.h1.push(...r.latencies.h1);
    out.latencies.h2.push(...r.latencies.h2);
  }
  for (const [k, n] of Object.entries(done)) out.donePerSecond[k] = n / seconds;
  return out;
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const mib = (kib: number | undefined): string => (kib === undefined ? '–' : (kib / 1024).toFixed(0));
const byProcess = (r: Record<string, number>, fmt: (x: number) => string): string =>
  Object.entries(r)
    .map(([label, v]) => `${label === 'primary' ? 'p' : label.replace('worker ', 'w')} ${fmt(v)}`)
    .join(' ');

export const LINE_LEGEND = [
  'per minute: requests finished/s by kind (well-behaved, whole and correct answers; "bad": misbehaving clients) | p99 (p50) ms of the keep-alive GETs, HTTP/1.1 / HTTP/2',
  '  (client loop: the worst client process\'s event-loop delay p99, ms, part of every client-side latency)',
  '| edge answers this minute by status (408 stalled uploads, 429 over a share, 499 client gone or cut; 5xx) | unexpected: failures of well-behaved clients',
  '| RSS MiB and open fds per edge process (p primary, w1 w2 workers) | upstream: ESTABLISHED connections to the stand-in, requests in flight',
  '| CPU cores used: edge / load side (clients, stand-in, harness) / whole machine',
].join('\n');

export function formatRow(r: MinuteRow): string {
  const d = r.donePerSecond;
  const s = r.edgeStatuses;
  const fiveXX = Object.entries(s).filter(([k]) => k.startsWith('5')).reduce((a, [, n]) => a + n, 0);
  const unexpected = sum(r.unexpected);
  return [
    `min ${String(r.minute).padStart(2)}`,
    `GET ${f1(d['get-h1']!)}/${f1(d['get-h2']!)} poll ${f1(d.poll!)} up ${f1(d.upload!)} down ${f1(d.download!)} bad ${f1(d.misbehaving!)}`,
    `p99 ${f1(r.getP99Ms.h1)}/${f1(r.getP99Ms.h2)} (${f1(r.getP50Ms.h1)}/${f1(r.getP50Ms.h2)}; client loop ${f1(r.clientLoopP99Ms)})`,
    `408 ${s['408'] ?? 0} 429 ${s['429'] ?? 0} 499 ${s['499'] ?? 0} 5xx ${fiveXX}`,
    `unexpected ${unexpected}`,
    `RSS ${byProcess(r.sample.rssKiB, mib)}`,
    `fds ${byProcess(r.sample.fds, String)}`,
    `upstream ${r.sample.upstreamConnections} conns ${r.sample.inFlight} in flight`,
    `CPU ${(r.cpu.edge ?? 0).toFixed(2)}/${((r.cpu.clients ?? 0) + (r.cpu.upstream ?? 0) + (r.cpu.harness ?? 0)).toFixed(2)}/${(r.cpu.machine ?? 0).toFixed(2)}`,
  ].join(' | ');
}

/** Detail lines under a row: what went wrong, if anything did. */
export function rowDetails(r: MinuteRow): string[] {
  const lines: string[] = [];
  const list = (x: Record<string, number>): string =>
    Object.entries(x)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ×${n}`)
      .join('; ');
  if (sum(r.unexpected) > 0) lines.push(`       unexpected (well-behaved clients): ${list(r.unexpected)}`);
  if (sum(r.anomalies) > 0) lines.push(`       misbehaving clients, not what the defaults promise: ${list(r.anomalies)}`);
  if (sum(r.skipped) > 0) lines.push(`       starts skipped (too many of a kind still running): ${list(r.skipped)}`);
  return lines;
}

/** The edge's log (JSON lines at level warn): entries by level and message; request entries by status and abort cause. */
export function summarizeEdgeLog(file: string): { lines: number; byLevel: Record<string, number>; messages: Record<string, number>; requests: Record<string, number> } {
  const out = { lines: 0, byLevel: {} as Record<string, number>, messages: {} as Record<string, number>, requests: {} as Record<string, number> };
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    out.lines++;
    let e: { level?: string | number; msg?: string; status?: number; abort?: string; phase?: string };
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      add(out.messages, `(not JSON) ${line.slice(0, 100)}`, 1);
      continue;
    }
    add(out.byLevel, String(e.level ?? '?'), 1);
    if (e.msg === 'request') add(out.requests, `${e.status ?? '?'} ${e.abort ?? ''} ${e.phase ?? ''}`.trim(), 1);
    else add(out.messages, `${e.level ?? '?'}: ${(e.msg ?? '?').slice(0, 120)}`, 1);
  }
  return out;
}
