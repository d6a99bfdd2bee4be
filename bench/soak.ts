/**
 * `npm run soak`: mixed traffic against the edge with its default settings for N minutes (10 by
 * default), from MIX's client processes, with a share of misbehaving clients; one line per minute
 * and a verdict: flat memory, no descriptor or upstream-connection growth, no failure for a
 * well-behaved client, nothing left in flight once the load stops. See bench/README.md ("Soak").
 *
 *   node bench/child.js bench/soak.ts [--minutes N | --quick] [--json FILE] [--keep]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULTS } from '../src/config/defaults';
import { freePorts, installCleanup, kill, killAllSync, machineCpuSeconds, sleep, start, stop, tail, treeCpuSeconds, type Proc } from './procs';
import { ROOT, waitForAnswer } from './servers';
import { MIX, type ClientConfig, type ClientReport } from './soak-client';
import { byLabel, cpuModel, EdgeProcesses, establishedTo, growthCheck, rssChecks, scrape, socketsOn, standInStats, total, type Check, type Metrics, type Sample } from './soak-probe';
import { formatRow, LINE_LEGEND, percentile, rowDetails, summarizeEdgeLog, sum, tally, type MinuteRow } from './soak-report';

const say = (text: string): void => void process.stdout.write(`${text}\n`);
const SAMPLE_MS = 5000;
const DRAIN_MS = 30_000;
const NAME = 'localhost';
const USAGE = 'usage: npm run soak -- [--minutes N (default 10) | --quick (2 minutes)] [--json FILE] [--keep (the run directory)]';

interface Options {
  readonly minutes: number;
  readonly json: string | null;
  readonly keep: boolean;
}

function parseOptions(argv: readonly string[]): Options | string {
  let minutes = 10;
  let json: string | null = null;
  let keep = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') minutes = 2;
    else if (a === '--minutes' && /^\d+$/.test(argv[i + 1] ?? '') && Number(argv[i + 1]) >= 1) minutes = Number(argv[++i]);
    else if (a === '--json' && argv[i + 1] !== undefined) json = path.resolve(argv[++i]!);
    else if (a === '--keep') keep = true;
    else return a === '--help' || a === '-h' ? USAGE : `unknown or incomplete option ${a}\n${USAGE}`;
  }
  return { minutes, json, keep };
}

/** The edge's config: its defaults, but for what a loopback run needs (ports, name, storage) and what the brief fixes. */
function edgeConfig(ports: { https: [number, number]; http: number; admin: number; upstream: number }, storage: string): Record<string, unknown> {
  return {
    server_name: NAME,
    hostname: NAME,
    listen: { https: ports.https, http: ports.http, address: ['127.0.0.1'] },
    upstream: `http://127.0.0.1:${ports.upstream}`,
    tls: { issuer: 'internal' },
    storage,
    workers: 2,
    log: { level: 'warn' },
    admin: { listen: `127.0.0.1:${ports.admin}` },
  };
}

async function waitFor<T>(what: string, read: () => Promise<T | null> | T | null, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve()
      .then(read)
      .catch(() => null);
    if (v !== null) return v;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Asks every client process for its report (final: stop it first); a missing answer is an error. */
function collect(clients: readonly Proc[], type: 'flush' | 'stop'): Promise<ClientReport[]> {
  return Promise.all(
    clients.map(
      (c) =>
        new Promise<ClientReport>((resolve, reject) => {
          if (!c.running()) return reject(new Error(`${c.name} has exited:\n${tail(c.logFile!)}`));
          const timer = setTimeout(() => reject(new Error(`${c.name} did not report within 10 s:\n${tail(c.logFile!)}`)), 10_000);
          c.child.once('message', (m: ClientReport) => {
            clearTimeout(timer);
            resolve(m);
          });
          c.child.send({ type });
        }),
    ),
  );
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseOptions(argv);
  if (typeof opts === 'string') {
    say(opts);
    return opts === USAGE ? 0 : 2;
  }
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-soak-'));
  let keepDir = opts.keep;
  installCleanup(async () => killAllSync());
  const watchdog = setTimeout(() => {
    process.stderr.write(`soak: still running ${opts.minutes + 4} min after the start: stopping\n`);
    killAllSync();
    process.exit(3);
  }, (opts.minutes + 4) * 60_000);
  const notes: string[] = [];
  const machine = { cpuModel: cpuModel(), cores: os.availableParallelism(), node: process.version, kernel: `${os.type()} ${os.release()}`, memoryMiB: Math.round(os.totalmem() / 2 ** 20) };
  let edge: Proc | null = null;
  try {
    const cli = path.join(ROOT, 'bin/matrix-edge.js');
    const built = path.join(ROOT, 'dist/cli.js');
    if (!fs.existsSync(built)) throw new Error('dist/cli.js is missing: run `npm run build` first');
    const builtAt = fs.statSync(built).mtimeMs;
    const newer = fs.readdirSync(path.join(ROOT, 'src'), { recursive: true }).filter((f) => String(f).endsWith('.ts') && fs.statSync(path.join(ROOT, 'src', String(f))).mtimeMs > builtAt);
    if (newer.length > 0) notes.push(`dist/ is older than ${newer.length} file(s) in src/ (e.g. src/${newer[0]}): this run tests what was last built (npm run build)`);
    const limit = /Max open files\s+(\d+|unlimited)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    if (limit !== undefined && limit !== 'unlimited' && Number(limit) < 16_384) notes.push(`open-files limit ${limit} (run through npm run soak / bench/soak.sh, which raises it)`);
    say(`soak: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryMiB} MiB, Node ${machine.node}, ${machine.kernel}`);
    say(`soak: ${opts.minutes} min of load + ≤ ${DRAIN_MS / 1000} s drain; run directory ${runDir}`);

    const [a, b, httpPort, admin, upstreamPort] = (await freePorts(5)) as [number, number, number, number, number];
    const upstream = start('upstream', process.execPath, [path.join(__dirname, 'child.js'), path.join(__dirname, 'upstream.ts'), String(upstreamPort)], { logFile: path.join(runDir, 'upstream.log') });
    await waitFor('the stand-in', () => standInStats(upstreamPort), 20_000);

    const storage = path.join(runDir, 'storage');
    const config = edgeConfig({ https: [a, b], http: httpPort, admin, upstream: upstreamPort }, storage);
    const configFile = path.join(runDir, 'edge.yaml');
    fs.writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
    const edgeLog = path.join(runDir, 'edge.log');
    edge = start('matrix-edge', process.execPath, [cli, 'start', '--config', configFile], { cwd: ROOT, logFile: edgeLog });
    const caFile = path.join(storage, 'pki/authorities/local/root.crt');
    await waitFor('the internal CA root', () => (fs.existsSync(caFile) ? true : null), 30_000);
    await waitForAnswer(edge, { port: a, name: NAME, path: '/_matrix/client/versions', ca: fs.readFileSync(caFile), timeoutMs: 30_000 });
    const procs = new EdgeProcesses(edge.pid);
    await waitFor('two edge workers', () => (procs.current().size === 3 ? true : null), 30_000);
    const timeouts = { bodyIdleMs: DEFAULTS.bodyIdleTimeoutMs, sendTimeoutMs: DEFAULTS.sendTimeoutMs };
    say(`soak: stand-in :${upstreamPort}; matrix-edge :${a} (pids ${[...procs.current().values()].join(', ')}), admin :${admin}; body_idle_timeout ${timeouts.bodyIdleMs / 1000} s, send_timeout ${timeouts.sendTimeoutMs / 1000} s`);

    const clients: Proc[] = [];
    for (let i = 0; i < MIX.processes; i++) {
      const c: ClientConfig = {
        index: i,
        port: a,
        name: NAME,
        caFile,
        wellAddresses: Array.from({ length: 10 }, (_, k) => `127.0.0.${10 + i * 10 + k}`),
        badAddresses: Array.from({ length: 10 }, (_, k) => `127.0.0.${200 + i * 10 + k}`),
        timeouts,
      };
      const script = [path.join(__dirname, 'child.js'), path.join(__dirname, 'soak-client.ts'), JSON.stringify(c)];
      clients.push(start(`client ${i}`, process.execPath, script, { ipc: true, logFile: path.join(runDir, `client-${i}.log`) }));
    }

    // The load: a sample every 5 s, a row every minute.
    const samples: Sample[] = [];
    const rows: MinuteRow[] = [];
    const t0 = performance.now();
    const seconds = (): number => (performance.now() - t0) / 1000;
    const takeSample = async (): Promise<{ sample: Sample; metrics: Metrics }> => {
      const m = await scrape(admin);
      const p = procs.read();
      const sample: Sample = {
        t: Math.round(seconds() * 10) / 10,
        rssKiB: p.rssKiB,
        fds: p.fds,
        upstreamConnections: establishedTo(upstreamPort),
        inFlight: total(m, 'matrix_edge_upstream_requests_in_flight'),
        queued: total(m, 'matrix_edge_upstream_requests_queued'),
        openConnections: total(m, 'matrix_edge_open_connections'),
      };
      samples.push(sample);
      return { sample, metrics: m };
    };
    const cpu = (): Record<string, number> => ({
      edge: treeCpuSeconds(edge!.pid),
      upstream: treeCpuSeconds(upstream.pid),
      clients: clients.reduce((n, c) => n + treeCpuSeconds(c.pid), 0),
      harness: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
      machine: machineCpuSeconds().busy,
    });
    let lastMetrics = (await takeSample()).metrics;
    let lastCpu = cpu();
    samples.length = 0;
    say(LINE_LEGEND);
    for (let minute = 1; minute <= opts.minutes; minute++) {
      for (let k = 1; k < 60_000 / SAMPLE_MS; k++) {
        await sleep(Math.max(0, t0 + ((minute - 1) * 60 + (k * SAMPLE_MS) / 1000) * 1000 - performance.now()));
        await takeSample();
      }
      await sleep(Math.max(0, t0 + minute * 60_000 - performance.now()));
      const reports = await collect(clients, 'flush');
      const { sample, metrics } = await takeSample();
      const nowCpu = cpu();
      const delta = (name: string, label: string): Record<string, number> => {
        const before = byLabel(lastMetrics, name, label);
        return Object.fromEntries(Object.entries(byLabel(metrics, name, label)).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
      };
      const t = tally(reports, 60);
      const row: MinuteRow = {
        minute,
        t: sample.t,
        donePerSecond: t.donePerSecond,
        getP50Ms: { h1: percentile(t.latencies.h1, 50), h2: percentile(t.latencies.h2, 50) },
        getP99Ms: { h1: percentile(t.latencies.h1, 99), h2: percentile(t.latencies.h2, 99) },
        edgeStatuses: delta('matrix_edge_requests_total', 'status'),
        edgeAborts: delta('matrix_edge_upstream_aborts_total', 'cause'),
        expected: t.expected,
        anomalies: t.anomalies,
        unexpected: t.unexpected,
        skipped: t.skipped,
        clientLoopP99Ms: t.clientLoopP99Ms,
        sample,
        cpu: Object.fromEntries(Object.entries(nowCpu).map(([k, v]) => [k, (v - lastCpu[k]!) / 60])),
      };
      rows.push(row);
      lastMetrics = metrics;
      lastCpu = nowCpu;
      say(formatRow(row));
      for (const line of rowDetails(row)) say(line);
    }
    const loadSeconds = seconds();

    // Stop the load; everything the clients had open goes with them. Then the drain.
    const finals = await collect(clients, 'stop').catch((err: Error) => (notes.push(`final client reports: ${err.message}`), [] as ClientReport[]));
    await Promise.all(clients.map((c) => Promise.race([c.exited, sleep(5000)]).then(() => kill(c))));
    const stopAt = performance.now();
    const drain = { seconds: NaN, inFlight: NaN, queued: NaN, openConnections: NaN, standInHeld: NaN };
    for (;;) {
      const m = await scrape(admin);
      drain.inFlight = total(m, 'matrix_edge_upstream_requests_in_flight');
      drain.queued = total(m, 'matrix_edge_upstream_requests_queued');
      drain.openConnections = total(m, 'matrix_edge_open_connections');
      drain.standInHeld = (await standInStats(upstreamPort)).held;
      drain.seconds = (performance.now() - stopAt) / 1000;
      if ((drain.inFlight === 0 && drain.queued === 0 && drain.openConnections === 0 && drain.standInHeld === 0) || drain.seconds > DRAIN_MS / 1000) break;
      await sleep(500);
    }
    // Client connections the edge still counts as open, seen from the kernel (none should be left).
    const leftOpen = drain.openConnections > 0 ? [a, b].flatMap((port) => socketsOn(port).map((x) => `:${port} ${x}`)) : [];
    const afterDrain = procs.read();
    const finalMetrics = await scrape(admin);
    const stand = await standInStats(upstreamPort);

    // The verdict.
    // What finished between the last row and the stop counts too.
    const last = tally(finals, 1);
    type Tallies = { unexpected: Record<string, number>; anomalies: Record<string, number>; expected: Record<string, number> };
    const merge = (pick: (r: Tallies) => Record<string, number>): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const r of [...rows, last]) for (const [k, n] of Object.entries(pick(r))) out[k] = (out[k] ?? 0) + n;
      return out;
    };
    const unexpected = merge((r) => r.unexpected);
    const anomalies = merge((r) => r.anomalies);
    const expectedOutcomes = merge((r) => r.expected);
    const done: Record<string, number> = {};
    for (const r of rows) for (const [k, v] of Object.entries(r.donePerSecond)) done[k] = (done[k] ?? 0) + Math.round(v * 60);
    const restarts = total(finalMetrics, 'matrix_edge_worker_restarts_total');
    const checks: Check[] = [
      ...rssChecks(samples, loadSeconds),
      growthCheck('fds flat: primary', samples, loadSeconds, (s) => s.fds.primary, { share: 0.1, floor: 8 }),
      // Which worker the kernel hands a new connection (SO_REUSEPORT) varies: their sum is compared.
      growthCheck('fds flat: workers (sum)', samples, loadSeconds, (s) => sum(Object.fromEntries(Object.entries(s.fds).filter(([l]) => l !== 'primary'))), { share: 0.1, floor: 8 }),
      growthCheck('upstream connections flat', samples, loadSeconds, (s) => s.upstreamConnections, { share: 0.1, floor: 8 }),
      { name: 'no unexpected error for a well-behaved client', ok: sum(unexpected) === 0, detail: sum(unexpected) === 0 ? '0' : JSON.stringify(unexpected) },
      { name: 'no cut upload delivered upstream as complete', ok: stand.uploadsShort === 0, detail: `${stand.uploadsShort} of ${stand.uploads} uploads the stand-in saw end` },
      { name: 'in flight back to 0 after the load', ok: drain.inFlight === 0 && drain.queued === 0, detail: `in flight ${drain.inFlight}, queued ${drain.queued}, polls held upstream ${drain.standInHeld}, ${drain.seconds.toFixed(1)} s after the clients stopped` },
      {
        name: 'no client connection left open after the load',
        ok: drain.openConnections === 0,
        detail: `matrix_edge_open_connections ${drain.openConnections} ${drain.seconds.toFixed(1)} s after the clients stopped${leftOpen.length > 0 ? `; the kernel's view of the edge's ports: ${leftOpen.join('; ')}` : ''}`,
      },
      { name: 'no worker restarted', ok: restarts === 0 && procs.workersEverSeen === 2, detail: `${restarts} restarts, ${procs.workersEverSeen} worker pids seen` },
    ];
    const ok = checks.every((c) => c.ok);
    say('');
    say(`soak: verdict after ${opts.minutes} min (${machine.cpuModel}, ${machine.cores} cores, Node ${machine.node}): ${ok ? 'HOLDS' : 'FAILS'}`);
    for (const c of checks) say(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
    const gets = (done['get-h1'] ?? 0) + (done['get-h2'] ?? 0);
    const bad = done.misbehaving ?? 0;
    const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;
    say(`  info requests finished: ${Object.entries(done).map(([k, n]) => `${k} ${n}`).join(', ')}; misbehaving clients ${pct(bad / (sum(done) - gets))} of the exchanges besides the steady GETs (${pct(bad / sum(done))} of all)`);
    say(`  info misbehaving clients got: ${Object.entries(expectedOutcomes).sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k} ×${n}`).join('; ')}`);
    const anomalyCount = sum(anomalies);
    say(`  info misbehaving clients, outcomes the defaults do not promise (not part of the verdict): ${anomalyCount === 0 ? 'none' : JSON.stringify(anomalies)}`);
    say(`  info after the drain: RSS MiB ${Object.entries(afterDrain.rssKiB).map(([l, v]) => `${l} ${(v / 1024).toFixed(0)}`).join(', ')}; fds ${Object.entries(afterDrain.fds).map(([l, v]) => `${l} ${v}`).join(', ')}; idle upstream connections ${establishedTo(upstreamPort)}`);
    const log = summarizeEdgeLog(edgeLog);
    const topMessages = Object.entries(log.messages).sort((x, y) => y[1] - x[1]).slice(0, 8);
    say(`  info edge log: ${log.lines} lines (${JSON.stringify(log.byLevel)}); request entries ${JSON.stringify(log.requests)}${topMessages.length ? `; other: ${topMessages.map(([m, n]) => `${m} ×${n}`).join('; ')}` : ''}`);
    for (const c of clients) {
      const text = tail(c.logFile!, 600).trim();
      if (text !== '') notes.push(`${c.name} wrote to its log (a client-side problem?): ${text.split('\n')[0]}`);
    }
    for (const n of notes) say(`  note ${n}`);

    if (edge !== null) {
      const t = performance.now();
      await stop(edge, 15_000);
      const exit = await edge.exited;
      say(`  info matrix-edge stopped (SIGTERM) in ${((performance.now() - t) / 1000).toFixed(1)} s, exit ${exit.code ?? exit.signal}`);
      edge = null;
    }
    await stop(upstream, 2000);
    if (opts.json !== null) {
      fs.mkdirSync(path.dirname(opts.json), { recursive: true });
      const json = { machine, options: opts, config, mix: MIX, timeouts, loadSeconds, rows, samples, drain, leftOpen, afterDrain, standIn: stand, checks, ok, done, expectedOutcomes, anomalies, unexpected, edgeLog: log, notes };
      fs.writeFileSync(opts.json, `${JSON.stringify(json, null, 2)}\n`);
      say(`soak: JSON in ${opts.json}`);
    }
    if (!ok) keepDir = true;
    return ok ? 0 : 1;
  } catch (err) {
    keepDir = true;
    process.stderr.write(`soak: failed: ${(err as Error).stack ?? String(err)}\n${edge !== null ? `edge log:\n${tail(path.join(runDir, 'edge.log'))}\n` : ''}`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    killAllSync();
    if (keepDir) say(`soak: logs kept in ${runDir}`);
    else fs.rmSync(runDir, { recursive: true, force: true });
  }
}

// Started as `node bench/child.js bench/soak.ts [options]` (bench/soak.sh).
if (process.argv[2] !== undefined && path.resolve(process.argv[2]) === __filename) {
  main(process.argv.slice(3)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`soak: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
}
