/**
 * What the soak reads while it runs: each edge process's RSS and open descriptors from /proc, the
 * upstream connections from /proc/net/tcp, the edge's /metrics and the stand-in's /_bench/stats;
 * and the verdict drawn from those samples at the end.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { descendants } from './procs';

export interface Sample {
  /** Seconds since the load started. */
  readonly t: number;
  /** Per edge process label ('primary', 'worker 1', …): VmRSS in KiB and open descriptors. */
  readonly rssKiB: Record<string, number>;
  readonly fds: Record<string, number>;
  /** ESTABLISHED TCP connections to the stand-in's port (the edge's side of them). */
  readonly upstreamConnections: number;
  readonly inFlight: number;
  readonly queued: number;
  readonly openConnections: number;
}

// ---------------------------------------------------------------------------------------------
// /proc

function vmRssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

function fdCount(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/**
 * The edge's processes by label: the primary, and its children (the workers) numbered in the
 * order their pids were first seen — a restarted worker gets a new number.
 */
export class EdgeProcesses {
  private readonly labels = new Map<number, string>();
  private workersSeen = 0;

  constructor(readonly primary: number) {
    this.labels.set(primary, 'primary');
  }

  current(): Map<string, number> {
    const out = new Map<string, number>([['primary', this.primary]]);
    for (const pid of descendants(this.primary).slice(1).sort((a, b) => a - b)) {
      if (!this.labels.has(pid)) this.labels.set(pid, `worker ${++this.workersSeen}`);
      out.set(this.labels.get(pid)!, pid);
    }
    return out;
  }

  /** Workers seen over the run (2 when none was restarted). */
  get workersEverSeen(): number {
    return this.workersSeen;
  }

  read(): { rssKiB: Record<string, number>; fds: Record<string, number>; pids: Record<string, number> } {
    const rssKiB: Record<string, number> = {};
    const fds: Record<string, number> = {};
    const pids: Record<string, number> = {};
    for (const [label, pid] of this.current()) {
      const rss = vmRssKiB(pid);
      const n = fdCount(pid);
      if (rss === null || n === null) continue;
      rssKiB[label] = rss;
      fds[label] = n;
      pids[label] = pid;
    }
    return { rssKiB, fds, pids };
  }
}

/** ESTABLISHED TCP connections whose remote port is `port` (/proc/net/tcp and tcp6). */
export function establishedTo(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st …
      if (f.length > 3 && f[3] === '01' && f[2]!.endsWith(`:${hexPort}`)) n++;
    }
  }
  return n;
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING',
};

/** "0100007F:1F90" (/proc/net/tcp, IPv4) → "127.0.0.1:8080". */
function endpoint(hex: string): string {
  const [addr, port] = hex.split(':') as [string, string];
  const ip = addr.length === 8 ? [3, 2, 1, 0].map((i) => parseInt(addr.slice(i * 2, i * 2 + 2), 16)).join('.') : addr;
  return `${ip}:${parseInt(port, 16)}`;
}

/** The TCP sockets whose local port is `port` (the edge's side of its client connections), but the listener: state, peer, queues. */
export function socketsOn(port: number): string[] {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !f[1]!.endsWith(hexPort) || f[3] === '0A') continue;
    const [tx, rx] = f[4]!.split(':').map((h) => parseInt(h, 16));
    out.push(`${TCP_STATES[f[3]!] ?? f[3]} from ${endpoint(f[2]!)} (send queue ${tx}, receive queue ${rx})`);
  }
  return out;
}

export function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP reads

export function getText(port: number, path: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Prometheus text → series ("name{labels}" as written) → value. */
export type Metrics = Map<string, number>;

export async function scrape(adminPort: number): Promise<Metrics> {
  const out: Metrics = new Map();
  for (const line of (await getText(adminPort, '/metrics')).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** The sum over a family's series, optionally only those whose labels contain `labelText` (e.g. 'status="408"'). */
export function total(m: Metrics, name: string, labelText?: string): number {
  let sum = 0;
  for (const [series, value] of m) {
    const brace = series.indexOf('{');
    const n = brace === -1 ? series : series.slice(0, brace);
    if (n === name && (labelText === undefined || series.includes(labelText))) sum += value;
  }
  return sum;
}

/** A family's values by one label (e.g. requests by status, aborts by cause). */
export function byLabel(m: Metrics, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [series, value] of m) {
    if (!series.startsWith(`${name}{`)) continue;
    const v = new RegExp(`[{,]${label}="([^"]*)"`).exec(series)?.[1];
    if (v !== undefined) out[v] = (out[v] ?? 0) + value;
  }
  return out;
}

export interface StandInStats {
  readonly held: number;
  readonly uploads: number;
  readonly uploadsShort: number;
}

export async function standInStats(port: number): Promise<StandInStats> {
  return JSON.parse(await getText(port, '/_bench/stats')) as StandInStats;
}

// ---------------------------------------------------------------------------------------------
// Verdict

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

const MiB = 1024;
const signed = (x: number, digits = 0): string => `${x >= 0 ? '+' : ''}${x.toFixed(digits)}`;

/** Where the growth is measured from: the end of minute 1 (half-time for a run of a minute). */
export const refSeconds = (seconds: number): number => Math.min(60, seconds / 2);

const nearest = (samples: readonly Sample[], t: number): Sample | undefined =>
  samples.reduce<Sample | undefined>((best, s) => (best === undefined || Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best), undefined);

interface Trend {
  /** The rise of the least-squares line from `ref` to the end of the load. */
  readonly grew: number;
  /** Its value at `ref` (what the allowance is a share of). */
  readonly atRef: number;
  readonly values: number[];
}

/**
 * Growth from the end of minute 1 to the end, read from every sample after minute 1 (a 5 s
 * cadence) rather than from two: the least-squares line through them, from `ref` to the end. Two
 * samples would mostly measure where each falls on a worker's sawtooth (V8 grows the heap in
 * steps and gives 30–50 MiB back after a full collection, every few minutes), while a leak is a
 * slope.
 */
function trend(samples: readonly Sample[], seconds: number, read: (s: Sample) => number | undefined): Trend | null {
  const ref = refSeconds(seconds);
  const points = samples.flatMap((s) => (s.t >= ref && read(s) !== undefined ? [[s.t, read(s)!] as const] : []));
  if (points.length < 3) return null;
  const mx = points.reduce((a, [x]) => a + x, 0) / points.length;
  const my = points.reduce((a, [, y]) => a + y, 0) / points.length;
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  const slope = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / sxx;
  return { grew: slope * (seconds - ref), atRef: my + slope * (ref - mx), values: points.map(([, y]) => y) };
}

/**
 * A count (descriptors, connections): the lowest value of the second half of the load after
 * minute 1 against the lowest of the first half, which may be exceeded by `share` or `floor`,
 * whichever is larger. These counts step up and down with the load's peaks rather than wobble
 * around a mean — an idle upstream connection stays pooled until the stand-in's keep-alive (120 s)
 * ends it, and the greedy client's next burst, a minute later, reuses it; one slow moment (a CPU
 * stall) piles requests up and sets a new high for two minutes — while what is leaked stays and
 * lifts the lowest value too. The highest values are printed beside it.
 */
export function growthCheck(name: string, samples: readonly Sample[], seconds: number, read: (s: Sample) => number | undefined, o: { share: number; floor: number }): Check {
  const ref = refSeconds(seconds);
  const mid = (ref + seconds) / 2;
  const values = (a: number, b: number): number[] => samples.flatMap((s) => (s.t >= a && s.t < b && read(s) !== undefined ? [read(s)!] : []));
  const early = values(ref, mid);
  const late = values(mid, seconds + 0.5);
  if (early.length === 0 || late.length === 0) return { name, ok: false, detail: 'no samples in a half' };
  const before = Math.min(...early);
  const grew = Math.min(...late) - before;
  const allowed = Math.max(o.share * before, o.floor);
  return {
    name,
    ok: grew <= allowed,
    detail: `lowest ${before} in ${ref.toFixed(0)}–${mid.toFixed(0)} s → ${Math.min(...late)} in ${mid.toFixed(0)}–${seconds.toFixed(0)} s (${signed(grew)}, allowed +${allowed.toFixed(0)}); highest ${Math.max(...early)} → ${Math.max(...late)}`,
  };
}

/** RSS of each process: growth from the end of minute 1 to the end within max(20 %, 16 MiB); the two end samples and the peak printed beside it. */
export function rssChecks(samples: readonly Sample[], seconds: number): Check[] {
  const ref = refSeconds(seconds);
  const a = nearest(samples, ref);
  const b = nearest(samples, seconds);
  if (a === undefined || b === undefined) return [{ name: 'RSS flat', ok: false, detail: 'no samples' }];
  const m = (kib: number): string => (kib / MiB).toFixed(1);
  return Object.keys(a.rssKiB).map((label) => {
    const name = `RSS flat: ${label}`;
    const to = b.rssKiB[label];
    if (to === undefined) return { name, ok: false, detail: `${label} is gone at the end (restarted?)` };
    const t = trend(samples, seconds, (s) => s.rssKiB[label]);
    if (t === null) return { name, ok: false, detail: 'too few samples after minute 1' };
    const allowed = Math.max(0.2 * t.atRef, 16 * MiB);
    const from = a.rssKiB[label]!;
    return {
      name,
      ok: t.grew <= allowed,
      detail:
        `${signed(t.grew / MiB, 1)} MiB from ${ref.toFixed(0)} s to the end (allowed +${m(allowed)}); ` +
        `samples ${m(Math.min(...t.values))}–${m(Math.max(...t.values))} MiB, ${m(from)} at the end of minute 1, ${m(to)} at the end`,
    };
  });
}
