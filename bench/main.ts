/**
 * `npm run bench`: direct vs matrix-edge vs Caddy on loopback, interleaved (every round measures
 * each scenario on each target back to back, the order rotating from round to round), then the
 * table of medians, spreads and paired ratios, bench/results/<timestamp>.json (+ .md, .svg) and,
 * for a complete full-size run, bench/chart.svg. See bench/README.md.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeCerts, type Certs } from './certs';
import { parseOptions, SCENARIOS, USAGE, type Options, type Scenario } from './options';
import { descendants, freePorts, installCleanup, killAllSync, sleep, start, stop, tail, treeMemory, type Proc } from './procs';
import { chartSvg, infoTable, markdownTable, summarizeRows, type Sample } from './report';
import { LOAD_NAME, measure, url, VERSIONS_PATH, WELL_KNOWN_PATH, type Context, type Served, type Target } from './scenarios';
import {
  buildEdgeSnapshot,
  caddyfile,
  checkEdgeConfig,
  probe,
  ROOT,
  startCaddy,
  startEdge,
  waitForAnswer,
  writeEdgeConfig,
  type ServerSetup,
} from './servers';
import { prepareStartup, timeToAnswer, type StartupTarget } from './startup';
import { buildNoResumeShim, checkNoResume, toolVersions, wrk, h2load } from './tools';
import { VERSIONS_BODY } from './upstream';

const say = (text: string): void => void process.stdout.write(`${text}\n`);

function rotate<T>(list: readonly T[], by: number): T[] {
  const k = by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

function requireTools(): void {
  const missing = ['wrk', 'h2load', 'caddy', 'curl', 'cc', 'openssl', 'pebble', 'pebble-challtestsrv'].filter(
    (tool) => !(process.env.PATH ?? '').split(':').some((dir) => fs.existsSync(path.join(dir, tool))),
  );
  if (missing.length > 0) throw new Error(`missing: ${missing.join(', ')}; run: sh scripts/bench-deps.sh`);
}

function httpGet(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (s: string) => (body += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** Reads a file to the end (and so into the page cache). */
function readThrough(file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.createReadStream(file, { highWaterMark: 1 << 20 })
      .on('data', () => undefined)
      .on('end', () => resolve())
      .on('error', reject);
  });
}

async function startUpstream(runDir: string): Promise<{ proc: Proc; port: number }> {
  const [port] = (await freePorts(1)) as [number];
  const proc = start('upstream', process.execPath, [path.join(__dirname, 'child.js'), path.join(__dirname, 'upstream.ts'), String(port)], {
    logFile: path.join(runDir, 'upstream.log'),
  });
  const deadline = performance.now() + 20_000;
  for (;;) {
    const ok = await httpGet(port, VERSIONS_PATH).then(
      (r) => r.status === 200 && r.body === VERSIONS_BODY,
      () => false,
    );
    if (ok) return { proc, port };
    if (!proc.running() || performance.now() > deadline) throw new Error(`the upstream stand-in did not start:\n${tail(proc.logFile!)}`);
    await sleep(50);
  }
}

interface Running {
  readonly served: Served;
  readonly setup: ServerSetup;
}

async function startLoadServer(
  kind: 'edge' | 'caddy' | 'edge-info',
  o: { runDir: string; cli: string; certs: Certs; upstreamPort: number; workers: string | null },
  tag: string = kind,
): Promise<Running> {
  const dir = path.join(o.runDir, tag);
  fs.mkdirSync(dir, { recursive: true });
  const [a, b, http] = (await freePorts(3)) as [number, number, number];
  const setup: ServerSetup = {
    hostname: LOAD_NAME,
    serverName: LOAD_NAME,
    ports: { https: [a, b], http },
    upstreamPort: o.upstreamPort,
    tls: { kind: 'files', cert: o.certs.certFile, key: o.certs.keyFile },
    storage: path.join(dir, 'storage'),
    logLevel: kind === 'edge-info' ? 'info' : 'warn',
  };
  fs.mkdirSync(setup.storage, { recursive: true });
  const logFile = path.join(dir, 'server.log');
  let proc: Proc;
  if (kind === 'caddy') {
    const file = path.join(dir, 'Caddyfile');
    fs.writeFileSync(file, caddyfile(setup));
    proc = startCaddy('Caddy', file, path.join(dir, 'home'), logFile);
  } else {
    const file = writeEdgeConfig(path.join(dir, 'edge.yaml'), setup, o.workers);
    proc = startEdge(kind === 'edge' ? 'matrix-edge' : 'matrix-edge (log info)', o.cli, file, logFile);
  }
  const ca = fs.readFileSync(o.certs.caFile);
  await waitForAnswer(proc, { port: a, name: LOAD_NAME, path: WELL_KNOWN_PATH, ca, timeoutMs: 30_000 });
  // Every HTTPS port answers (the ports pattern is the same for both servers).
  for (const port of [a, b]) {
    if ((await probe(port, LOAD_NAME, VERSIONS_PATH, ca)) !== 200) throw new Error(`${proc.name}: no 200 for ${VERSIONS_PATH} on port ${port}`);
  }
  return { served: { proc, port: a }, setup };
}

/** The edge's `workers` value: as asked, unless `matrix-edge check` refuses the key. */
function resolveWorkers(opts: Options, cli: string, runDir: string, notes: string[]): string | null {
  if (opts.workers === 'none') return null;
  const probeSetup: ServerSetup = {
    hostname: LOAD_NAME,
    serverName: LOAD_NAME,
    ports: { https: [8443, 8448], http: 8080 },
    upstreamPort: 8008,
    tls: { kind: 'files', cert: path.join(runDir, 'certs/leaf.crt'), key: path.join(runDir, 'certs/leaf.key') },
    storage: path.join(runDir, 'check-storage'),
    logLevel: 'warn',
  };
  const file = writeEdgeConfig(path.join(runDir, 'check.yaml'), probeSetup, opts.workers);
  const problem = checkEdgeConfig(cli, file);
  if (problem === null) return opts.workers;
  if (/workers/.test(problem)) {
    notes.push(`matrix-edge check refused \`workers: ${opts.workers}\`; ran without the key (${problem.split('\n')[0]})`);
    return null;
  }
  throw new Error(`matrix-edge check refused the bench config:\n${problem}`);
}

async function sanity(ctx: Context, ca: Buffer): Promise<void> {
  for (const target of ['edge', 'caddy'] as const) {
    const s = ctx.servers[target]!;
    for (const p of [VERSIONS_PATH, WELL_KNOWN_PATH]) {
      const status = await probe(s.port, LOAD_NAME, p, ca);
      if (status !== 200) throw new Error(`${target}: ${p} answered ${status}`);
    }
  }
  for (const target of ['direct', 'edge', 'caddy'] as const) {
    const r = await wrk({ url: url(ctx, target, VERSIONS_PATH), connections: 2, seconds: 1 });
    if (r.errors > 0 || !(r.requests > 0)) throw new Error(`${target}: sanity run had ${r.errors} errors in ${r.requests} requests:\n${r.output}`);
  }
}

function describe(scenario: string, target: string, m: Record<string, number>): string {
  const f = (x: number | undefined, d = 0): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
  const cpu = `CPU: ${m.serverCores !== undefined ? `server ${f(m.serverCores, 2)} + ` : ''}upstream ${f(m.upstreamCores, 2)} of machine ${f(m.machineBusyCores, 2)} cores`;
  switch (scenario) {
    case 'h1':
    case 'h2':
    case 'wellknown':
      return `${f(m.rps)} req/s, p50 ${f(m.p50, 2)} ms, p99 ${f(m.p99, 2)} ms; ${f(m.accepted)} TCP accepts; ${cpu}`;
    case 'handshake':
      return `${f(m.rps)} handshakes/s, ${f(m.acceptedPerRequest, 3)} TCP accepts per request; ${cpu}`;
    case 'upload':
    case 'download':
      return target === 'direct'
        ? `${f(m.mbps)} MB/s; ${cpu}`
        : `${f(m.mbps)} MB/s, peak RSS ${f(m.peakRssMiB, 1)} MiB (${f(m.baseRssMiB, 1)} before) over ${f(m.processes)} processes; ${cpu}`;
    case 'idle':
      return `${f(m.kibPerConn, 1)} KiB/connection (RSS ${f(m.baseRssMiB, 1)} → ${f(m.heldRssMiB, 1)} MiB; opened in ${f(m.openMs)} ms)`;
    case 'longrun':
      return `RSS ${f(m.rssMiB, 1)} MiB after this round's load`;
    default:
      return `first answer ${f(m.firstMs)} ms, both names ${f(m.allMs)} ms`;
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseOptions(argv, process.env);
  if (opts.help) {
    say(USAGE);
    return 0;
  }
  const began = Date.now();
  const notes: string[] = [];
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-bench-'));
  const pebbles: StartupTarget[] = [];
  /** The run directory goes at the end unless --keep, or a failure left logs worth reading in it. */
  let keepDir = opts.keep;
  const cleanup = async (): Promise<void> => {
    await Promise.all(pebbles.map((p) => p.pebble.stop().catch(() => undefined)));
    killAllSync();
    if (!keepDir) fs.rmSync(runDir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: still running after ${opts.maxMinutes} min (--max-minutes): stopping\n`);
    killAllSync();
    process.exit(3);
  }, opts.maxMinutes * 60_000);

  try {
    requireTools();
    const versions = toolVersions();
    const cpus = os.availableParallelism();
    say(`bench: Node ${process.version}, Caddy ${versions.caddy}, ${cpus} CPUs (${os.cpus()[0]?.model ?? '?'}), ${os.type()} ${os.release()}`);
    say(`bench: ${opts.rounds} rounds, ${opts.seconds} s per load run, ${opts.transferMiB} MiB transfers, ${opts.idle} idle polls; scenarios ${[...opts.scenarios].join(', ')}`);
    say(`bench: run directory ${runDir}`);
    const limit = /Max open files\s+(\d+|unlimited)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    if (opts.scenarios.has('idle') && limit !== undefined && limit !== 'unlimited' && Number(limit) < opts.idle * 2 + 1000) {
      notes.push(`open-files limit ${limit} is low for ${opts.idle} idle polls (run through npm run bench / bench/run.sh, which raises it)`);
    }

    // The edge, built from this moment's sources into bench/.build/dist.
    const build = buildEdgeSnapshot();
    if (!build.ok) notes.push(`npx tsc reported errors while building the edge snapshot (it was emitted anyway): ${build.output.split('\n')[0]}`);
    const certs = makeCerts(path.join(runDir, 'certs'));
    const workers = resolveWorkers(opts, build.cli, runDir, notes);

    const shim = buildNoResumeShim(runDir);
    const hs = await checkNoResume(shim, certs.certFile, certs.keyFile);
    // (a few connections are still open when wrk stops: they count as connections, not requests)
    if (hs.resumed > 0 || hs.requests === 0 || Math.abs(hs.connections - hs.requests) > 8) {
      throw new Error(`wrk with the no-resumption shim: ${hs.connections} connections, ${hs.resumed} resumed, ${hs.requests} requests: not one full handshake per request`);
    }
    say(`bench: wrk + no-resume shim: ${hs.requests} requests, ${hs.connections} TLS connections, ${hs.resumed} resumed`);

    const upstream = await startUpstream(runDir);

    // The ACME targets: one Pebble each, started once, before any load. test/support/pebble.ts
    // picks Pebble's own ports among the ephemeral ones, so one may be taken between its check and
    // Pebble's bind: try again then.
    const startupTargets: StartupTarget[] = [];
    if (opts.scenarios.has('startup')) {
      const pebbleTls = { certFile: certs.certFile, keyFile: certs.keyFile, caRootsFile: certs.caFile };
      for (const kind of ['edge', 'caddy'] as const) {
        for (let attempt = 1; ; attempt++) {
          try {
            const t = await prepareStartup(kind, { dir: path.join(runDir, `acme-${kind}`), upstreamPort: upstream.port, tls: pebbleTls });
            pebbles.push(t);
            startupTargets.push(t);
            break;
          } catch (err) {
            if (attempt >= 3) throw err;
            notes.push(`Pebble for ${kind} failed to start (attempt ${attempt}), retried: ${String((err as Error).message).split('\n').slice(-2).join(' ').trim()}`);
          }
        }
      }
    }
    const common = { runDir, cli: build.cli, certs, upstreamPort: upstream.port, workers };
    const edge = await startLoadServer('edge', common);
    const caddy = await startLoadServer('caddy', common);
    const edgeProcesses = descendants(edge.served.proc.pid).length;
    say(`bench: upstream :${upstream.port}; matrix-edge :${edge.setup.ports.https.join(',')} (workers: ${workers ?? 'key left out'}; ${edgeProcesses} processes); Caddy :${caddy.setup.ports.https.join(',')}`);

    const transferBytes = opts.transferMiB * 1024 * 1024;
    const uploadFile = path.join(runDir, 'upload.bin');
    fs.writeFileSync(uploadFile, '');
    fs.truncateSync(uploadFile, transferBytes); // sparse: reads as zeros without touching the disk
    if (opts.scenarios.has('upload')) await readThrough(uploadFile); // into the page cache, for every target alike

    const ctx: Context = {
      runDir,
      seconds: opts.seconds,
      transferBytes,
      uploadFile,
      idle: opts.idle,
      caFile: certs.caFile,
      shim,
      upstreamPort: upstream.port,
      upstreamPid: upstream.proc.pid,
      servers: { edge: edge.served, caddy: caddy.served },
    };
    const ca = fs.readFileSync(certs.caFile);
    await sanity(ctx, ca);

    // Warm-up (not recorded): JIT and connection pools of every target.
    const warm = opts.quick ? 1 : 2;
    for (const target of ['direct', 'edge', 'caddy'] as const) {
      await wrk({ url: url(ctx, target, VERSIONS_PATH), connections: 32, seconds: warm });
      if (target !== 'direct') await h2load({ url: url(ctx, target, VERSIONS_PATH), connections: 32, streams: 10, seconds: warm, logFile: path.join(runDir, 'warm.log') });
    }

    const samples: Sample[] = [];
    const record = (scenario: string, target: Target, round: number, metrics: Record<string, number>): void => {
      samples.push({ scenario, target, round, metrics });
      say(`  [round ${round}] ${scenario.padEnd(14)} ${target.padEnd(9)} ${describe(scenario, target, metrics)}`);
    };
    const load: Exclude<Scenario, 'startup'>[] = ['h1', 'h2', 'handshake', 'wellknown'];
    // Memory is measured on a fresh process of each server (same config, ports of its own): on the
    // long-running ones it would mostly show what the load scenarios left in their heaps.
    const memory: Exclude<Scenario, 'startup'>[] = ['upload', 'download', 'idle'];
    for (let round = 1; round <= opts.rounds; round++) {
      say(`bench: round ${round} of ${opts.rounds} (${Math.round((Date.now() - began) / 1000)} s so far)`);
      for (const scenario of load) {
        if (!opts.scenarios.has(scenario)) continue;
        for (const target of rotate(['direct', 'edge', 'caddy'] as Target[], round - 1)) {
          record(scenario, target, round, await measure(ctx, scenario, target));
          await sleep(300);
        }
      }
      if (load.some((s) => opts.scenarios.has(s))) {
        for (const target of ['edge', 'caddy'] as const) {
          record('longrun', target, round, { rssMiB: treeMemory(ctx.servers[target]!.proc.pid).rssKiB / 1024 });
        }
      }
      for (const scenario of memory) {
        if (!opts.scenarios.has(scenario)) continue;
        const targets: Target[] = scenario === 'idle' ? ['edge', 'caddy'] : ['direct', 'edge', 'caddy'];
        for (const target of rotate(targets, round - 1)) {
          if (target === 'direct') {
            record(scenario, target, round, await measure(ctx, scenario, target));
          } else {
            const fresh = await startLoadServer(target as 'edge' | 'caddy', common, `${target}-${scenario}-${round}`);
            await sleep(500);
            try {
              record(scenario, target, round, await measure({ ...ctx, servers: { ...ctx.servers, [target]: fresh.served } }, scenario, target));
            } finally {
              await stop(fresh.served.proc);
            }
          }
          await sleep(300);
        }
      }
      if (opts.scenarios.has('startup')) {
        for (const t of rotate(startupTargets, round - 1)) {
          for (const mode of ['fresh', 'stored'] as const) {
            const r = await timeToAnswer(t, mode, { cli: build.cli, workers, round });
            record(`startup-${mode}`, t.kind, round, { firstMs: r.firstMs, allMs: r.allMs });
          }
        }
      }
    }

    // One round with matrix-edge at log level info (an access-log line per request), against the
    // warn-level edge in the same round.
    const infoSamples: Sample[] = [];
    if (opts.infoRound && (opts.scenarios.has('h1') || opts.scenarios.has('h2'))) {
      say('bench: log-level round: matrix-edge at info vs at warn');
      const info = await startLoadServer('edge-info', common);
      const infoCtx: Context = { ...ctx, servers: { ...ctx.servers, 'edge-info': info.served } };
      await wrk({ url: url(infoCtx, 'edge-info', VERSIONS_PATH), connections: 32, seconds: warm });
      let flip = 0;
      for (const scenario of ['h1', 'h2'] as const) {
        if (!opts.scenarios.has(scenario)) continue;
        for (const target of rotate(['edge', 'edge-info'] as Target[], flip++)) {
          const metrics = await measure(infoCtx, scenario, target);
          infoSamples.push({ scenario, target, round: 1, metrics });
          say(`  [log round] ${scenario.padEnd(14)} ${target.padEnd(9)} ${describe(scenario, target, metrics)}`);
          await sleep(300);
        }
      }
      await stop(info.served.proc);
    }

    await stop(edge.served.proc);
    await stop(caddy.served.proc);
    await stop(upstream.proc);
    const seconds = (Date.now() - began) / 1000;

    // Report.
    const rows = summarizeRows(samples);
    const table = markdownTable(rows);
    const logTable = infoTable(infoSamples);
    const stamp = new Date(began).toISOString().replace(/[:.]/g, '-');
    const machine = `Node ${process.version} · Caddy ${versions.caddy.split(' ')[0]} · ${cpus} CPUs · ${opts.rounds} rounds × ${opts.seconds} s · ${opts.transferMiB} MiB · ${opts.idle} idle · matrix-edge workers: ${workers ?? 'key left out'} (${edgeProcesses} processes) · ${stamp.slice(0, 10)}`;
    const header = [
      `matrix-edge benchmark, ${new Date(began).toISOString()}`,
      `Node ${process.version} (harness and matrix-edge), Caddy ${versions.caddy}, ${cpus} CPUs (${os.cpus()[0]?.model ?? '?'}), ${os.type()} ${os.release()}`,
      `${versions.wrk}; ${versions.h2load}; curl ${versions.curl.split(' ')[1] ?? ''}; pebble ${versions.pebble}`,
      `${opts.rounds} interleaved rounds, ${opts.seconds} s per load run, ${opts.transferMiB} MiB transfers, ${opts.idle} idle long polls; matrix-edge workers: ${workers ?? 'key left out'} (${edgeProcesses} processes: primary + workers); log level warn for both`,
      `cells: median (min–max) over rounds; ratios paired per round; run time ${Math.round(seconds)} s`,
    ];
    const md = [
      ...header.map((l) => `${l}  `),
      '',
      table,
      ...(logTable ? ['', 'matrix-edge access log (one JSON line per request at info):', '', logTable] : []),
      ...(notes.length > 0 ? ['', 'Notes:', ...notes.map((n) => `- ${n}`)] : []),
      '',
    ].join('\n');
    const resultsDir = path.join(ROOT, 'bench/results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const jsonFile = path.join(resultsDir, `${stamp}.json`);
    fs.writeFileSync(
      jsonFile,
      `${JSON.stringify(
        {
          startedAt: new Date(began).toISOString(),
          seconds,
          node: process.version,
          versions,
          cpus,
          cpuModel: os.cpus()[0]?.model,
          kernel: `${os.type()} ${os.release()}`,
          options: { ...opts, scenarios: [...opts.scenarios] },
          workers,
          edgeProcesses,
          ports: { upstream: upstream.port, edge: edge.setup.ports, caddy: caddy.setup.ports },
          handshakeCheck: hs,
          notes,
          samples,
          logLevelRound: infoSamples,
          summary: rows,
        },
        null,
        2,
      )}\n`,
    );
    fs.writeFileSync(path.join(resultsDir, `${stamp}.md`), md);
    const svg = chartSvg(rows, machine);
    fs.writeFileSync(path.join(resultsDir, `${stamp}.svg`), svg);
    // The README's chart is replaced only by a complete, full-size run.
    const complete = opts.scenarios.size === SCENARIOS.length && !opts.quick;
    if (complete) fs.writeFileSync(path.join(ROOT, 'bench/chart.svg'), svg);
    say('');
    say(md);
    const base = path.relative(ROOT, jsonFile).replace(/\.json$/, '');
    say(`bench: raw numbers ${base}.json; table ${base}.md; chart ${base}.svg${complete ? ' and bench/chart.svg' : ''}; ${Math.round(seconds)} s`);
    return 0;
  } catch (err) {
    keepDir = true;
    process.stderr.write(`bench: failed: ${(err as Error).stack ?? String(err)}\nbench: logs kept in ${runDir}\n`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
}
