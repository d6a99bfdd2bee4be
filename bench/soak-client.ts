/**
 * One client process of the soak (`node bench/child.js bench/soak-client.ts CONFIG_JSON`, with an
 * IPC channel): its share of MIX, from its own loopback addresses — well-behaved clients from one
 * set, misbehaving ones from another, as different hosts on the internet would be. On 'flush' it
 * reports what finished since the last report (counts by kind, outcome and class, and the
 * latencies of the keep-alive GETs); on 'stop' it stops starting work, closes every socket,
 * reports a last time and exits.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import { resolve as pathResolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { cancelH1, cancelH2, cut, greedy, stallUpload, stopReading, type EdgeTimeouts, type Misbehaviour } from './soak-misbehave';
import { downloadPath, h1Exchange, h2Exchange, H2Sessions, sleep, syncPath, uploadPath, verdict, VERSIONS_PATH, type Target } from './soak-ops';

/** The whole soak's traffic, summed over the client processes (rates per second). */
export const MIX = {
  processes: 4,
  getH1: { connections: 16, perSecond: 150 },
  getH2: { sessions: 8, perSecond: 150 },
  /** Long polls held at once; the stand-in answers each after 5–30 s, and the client asks again. */
  pollsH1: 200,
  pollsH2: { sessions: 4, streams: 100 },
  /** 100 KiB–5 MiB (log-uniform); half HTTP/1.1 (Content-Length or chunked), half HTTP/2 (with or without content-length). */
  uploadsPerSecond: 1.5,
  /** 1–20 MiB (log-uniform), half HTTP/1.1, half HTTP/2. */
  downloadsPerSecond: 1,
  misbehaving: { cancelH2: 1.2, cancelH1: 1.0, cut: 0.8, stall: 0.25, stopReading: 0.2, greedyEverySeconds: 60 },
} as const;

export interface ClientConfig {
  readonly index: number;
  readonly port: number;
  readonly name: string;
  readonly caFile: string;
  readonly wellAddresses: readonly string[];
  readonly badAddresses: readonly string[];
  readonly timeouts: EdgeTimeouts;
}

/** Counts by "kind\toutcome\tclass"; class: ok | unexpected (well-behaved) | expected | anomaly (misbehaving). */
export interface ClientReport {
  readonly index: number;
  readonly counts: Record<string, number>;
  readonly latencies: { readonly h1: number[]; readonly h2: number[] };
  /** Starts skipped because too many of that kind were still running (the edge falling behind). */
  readonly skipped: Record<string, number>;
  /** This process's event-loop delay since the last report, ms: p99 and max (a slow client inflates the GET latencies). */
  readonly loopDelayMs: { readonly p99: number; readonly max: number };
  readonly final: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const rand = (a: number, b: number): number => a + Math.random() * (b - a);
const logUniform = (a: number, b: number): number => Math.round(Math.exp(rand(Math.log(a), Math.log(b))));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

class Client {
  private readonly t: Target;
  private stopping = false;
  private counts: Record<string, number> = {};
  private latencies = { h1: [] as number[], h2: [] as number[] };
  private skipped: Record<string, number> = {};
  private readonly running = new Map<string, number>();
  private readonly agents: https.Agent[] = [];
  private readonly sessions: H2Sessions[] = [];
  private readonly share: number;
  private readonly loop = monitorEventLoopDelay({ resolution: 10 });

  constructor(private readonly c: ClientConfig) {
    this.t = { port: c.port, name: c.name, ca: fs.readFileSync(c.caFile) };
    this.share = 1 / MIX.processes;
    this.loop.enable();
  }

  private count(kind: string, outcome: string, cls: string): void {
    const key = `${kind}\t${outcome}\t${cls}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }

  private well(kind: string, outcome: string): void {
    this.count(kind, outcome, outcome === 'ok' ? 'ok' : 'unexpected');
  }

  private bad(kind: string, m: Misbehaviour): void {
    if (this.stopping) return; // torn down by the stop, not by the edge
    this.count(kind, m.outcome, m.expected ? 'expected' : 'anomaly');
  }

  private agent(): https.Agent {
    const a = new https.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });
    this.agents.push(a);
    return a;
  }

  private h2(addresses: readonly string[], count: number): H2Sessions {
    const s = new H2Sessions(this.t, addresses, count);
    this.sessions.push(s);
    return s;
  }

  private wellAddress = (i: number): string => this.c.wellAddresses[i % this.c.wellAddresses.length]!;

  /** Runs `op` as a Poisson process of `perSecond`, at most `max` at once (else counted as skipped). */
  private async poisson(kind: string, perSecond: number, max: number, op: () => Promise<void>): Promise<void> {
    if (perSecond <= 0) return;
    await sleep(Math.random() * 1000);
    while (!this.stopping) {
      await sleep((-Math.log(1 - Math.random()) * 1000) / perSecond);
      if (this.stopping) break;
      const n = this.running.get(kind) ?? 0;
      if (n >= max) {
        this.skipped[kind] = (this.skipped[kind] ?? 0) + 1;
        continue;
      }
      this.running.set(kind, n + 1);
      void op()
        .catch((err: Error) => this.count(kind, `client error: ${err.message}`, 'unexpected'))
        .finally(() => this.running.set(kind, (this.running.get(kind) ?? 1) - 1));
    }
  }

  /** One keep-alive HTTP/1.1 connection sending GETs at `perSecond`, one after the other. */
  private async getH1Loop(i: number, perSecond: number): Promise<void> {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    this.agents.push(agent);
    const interval = 1000 / perSecond;
    let next = performance.now() + Math.random() * interval;
    while (!this.stopping) {
      await sleep(Math.max(0, next - performance.now()));
      next = Math.max(next + interval, performance.now() - interval);
      const t0 = performance.now();
      const a = await h1Exchange(this.t, { agent, localAddress: this.wellAddress(i), method: 'GET', path: VERSIONS_PATH }, null, 10_000);
      const v = verdict(a, {});
      if (v === 'ok') this.latencies.h1.push(performance.now() - t0);
      if (!this.stopping) this.well('get-h1', v);
    }
  }

  /** GETs at `perSecond` on one HTTP/2 session, not waiting for each other (at most 64 open). */
  private async getH2Loop(sessions: H2Sessions, perSecond: number): Promise<void> {
    const interval = 1000 / perSecond;
    let next = performance.now() + Math.random() * interval;
    let open = 0;
    while (!this.stopping) {
      await sleep(Math.max(0, next - performance.now()));
      next = Math.max(next + interval, performance.now() - interval);
      if (open >= 64) {
        this.skipped['get-h2'] = (this.skipped['get-h2'] ?? 0) + 1;
        continue;
      }
      open++;
      const t0 = performance.now();
      void h2Exchange(sessions.get(), this.t, 'GET', VERSIONS_PATH, null, 10_000).then((a) => {
        open--;
        const v = verdict(a, {});
        if (v === 'ok') this.latencies.h2.push(performance.now() - t0);
        if (!this.stopping) this.well('get-h2', v);
      });
    }
  }

  /** A client in a long-poll loop: sync, held 5–30 s by the stand-in, sync again. */
  private async pollLoop(kind: 'poll-h1' | 'poll-h2', next: () => Promise<string>): Promise<void> {
    await sleep(Math.random() * 5000);
    while (!this.stopping) {
      const v = await next();
      if (!this.stopping) this.well(kind, v);
    }
  }

  private async upload(agent: https.Agent, i: number, sessions: H2Sessions): Promise<void> {
    const bytes = logUniform(100 * KiB, 5 * MiB);
    const mode = pick(['h1 length', 'h1 chunked', 'h2 length', 'h2 no length'] as const);
    const a = mode.startsWith('h1')
      ? await h1Exchange(this.t, { agent, localAddress: this.wellAddress(i), method: 'POST', path: uploadPath(bytes) }, { bytes, chunked: mode === 'h1 chunked' }, 120_000)
      : await h2Exchange(sessions.get(), this.t, 'POST', uploadPath(bytes), { bytes, declared: mode === 'h2 length' }, 120_000);
    if (!this.stopping) this.well(mode.startsWith('h1') ? 'upload-h1' : 'upload-h2', verdict(a, { uploaded: bytes }));
  }

  private async download(agent: https.Agent, i: number, sessions: H2Sessions): Promise<void> {
    const bytes = logUniform(1 * MiB, 20 * MiB);
    const h1 = Math.random() < 0.5;
    const a = h1
      ? await h1Exchange(this.t, { agent, localAddress: this.wellAddress(i), method: 'GET', path: downloadPath(bytes) }, null, 120_000)
      : await h2Exchange(sessions.get(), this.t, 'GET', downloadPath(bytes), null, 120_000);
    if (!this.stopping) this.well(h1 ? 'download-h1' : 'download-h2', verdict(a, { bytes }));
  }

  start(): void {
    const s = this.share;
    const n = (total: number): number => Math.max(1, Math.round(total * s));
    for (let i = 0; i < n(MIX.getH1.connections); i++) void this.getH1Loop(i, MIX.getH1.perSecond / MIX.getH1.connections);
    const getSessions = this.h2(this.c.wellAddresses, n(MIX.getH2.sessions));
    for (let i = 0; i < n(MIX.getH2.sessions); i++) void this.getH2Loop(getSessions, MIX.getH2.perSecond / MIX.getH2.sessions);

    const pollAgent = this.agent();
    for (let i = 0; i < n(MIX.pollsH1); i++) {
      void this.pollLoop('poll-h1', async () => {
        const hold = rand(5000, 30_000);
        const a = await h1Exchange(this.t, { agent: pollAgent, localAddress: this.wellAddress(i), method: 'GET', path: syncPath(hold) }, null, hold + 15_000);
        return verdict(a, { text: '{"next_batch":"s1"}' });
      });
    }
    const pollSessions = this.h2(this.c.wellAddresses.slice().reverse(), n(MIX.pollsH2.sessions));
    for (let i = 0; i < n(MIX.pollsH2.streams); i++) {
      void this.pollLoop('poll-h2', async () => {
        const hold = rand(5000, 30_000);
        const a = await h2Exchange(pollSessions.get(), this.t, 'GET', syncPath(hold), null, hold + 15_000);
        return verdict(a, { text: '{"next_batch":"s1"}' });
      });
    }

    const transferAgent = this.agent();
    const transferSessions = this.h2(this.c.wellAddresses, 2);
    let k = 0;
    void this.poisson('upload', MIX.uploadsPerSecond * s, 32, () => this.upload(transferAgent, k++, transferSessions));
    void this.poisson('download', MIX.downloadsPerSecond * s, 32, () => this.download(transferAgent, k++, transferSessions));

    const m = MIX.misbehaving;
    const bad = (): string => pick(this.c.badAddresses);
    const proto = (): 'h1' | 'h2' => (Math.random() < 0.5 ? 'h1' : 'h2');
    const cancelSessions = this.h2(this.c.badAddresses, 2);
    void this.poisson('cancel-h2', m.cancelH2 * s, 64, async () => this.bad('cancel-h2', await cancelH2(cancelSessions.get(), this.t)));
    void this.poisson('cancel-h1', m.cancelH1 * s, 64, async () => this.bad('cancel-h1', await cancelH1(this.t, bad())));
    void this.poisson('cut', m.cut * s, 64, async () => {
      const p = proto();
      this.bad(`cut-${p}`, await cut(this.t, bad(), p));
    });
    void this.poisson('stall', m.stall * s, 64, async () => {
      const p = proto();
      this.bad(`stall-upload-${p}`, await stallUpload(this.t, bad(), p, this.c.timeouts));
    });
    void this.poisson('stop-reading', m.stopReading * s, 64, async () => {
      const p = proto();
      this.bad(`stop-reading-${p}`, await stopReading(this.t, bad(), p, this.c.timeouts));
    });
    void (async () => {
      // The processes take turns, so that a burst comes every greedyEverySeconds overall.
      await sleep((this.c.index + 0.5) * m.greedyEverySeconds * 1000);
      while (!this.stopping) {
        this.bad('greedy-h2', await greedy(this.t, bad()));
        await sleep(m.greedyEverySeconds * MIX.processes * 1000 - 3000);
      }
    })();
  }

  report(final: boolean): ClientReport {
    // The histogram holds whole timer intervals: the resolution (10 ms) is not delay.
    const loopDelayMs = { p99: Math.max(0, this.loop.percentile(99) / 1e6 - 10), max: Math.max(0, this.loop.max / 1e6 - 10) };
    this.loop.reset();
    const r: ClientReport = { index: this.c.index, counts: this.counts, latencies: this.latencies, skipped: this.skipped, loopDelayMs, final };
    this.counts = {};
    this.latencies = { h1: [], h2: [] };
    this.skipped = {};
    return r;
  }

  stop(): void {
    this.stopping = true;
    for (const a of this.agents) a.destroy();
    for (const s of this.sessions) s.closeAll();
  }
}

// Started as `node bench/child.js bench/soak-client.ts CONFIG_JSON`.
if (process.argv[2] !== undefined && pathResolve(process.argv[2]) === __filename) {
  const client = new Client(JSON.parse(process.argv[3]!) as ClientConfig);
  process.on('uncaughtException', (err) => process.stderr.write(`soak client: uncaught: ${err.stack ?? err}\n`));
  process.on('unhandledRejection', (err) => process.stderr.write(`soak client: unhandled rejection: ${(err as Error)?.stack ?? err}\n`));
  process.on('message', (msg: { type: string }) => {
    if (msg.type === 'flush') process.send?.(client.report(false));
    if (msg.type === 'stop') {
      client.stop();
      process.send?.(client.report(true), () => setTimeout(() => process.exit(0), 200));
    }
  });
  client.start();
}
