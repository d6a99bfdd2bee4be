/**
 * Starts a real edge in-process on loopback with ephemeral ports and a fresh storage directory,
 * from YAML exactly as an admin would write it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { loadConfigText } from '../../src/config/load';
import type { Plan } from '../../src/config/plan';
import { startEdge, type EdgeOptions, type RunningEdge } from '../../src/edge';
import { createLogger, createPlanLogger } from '../../src/observe/log';

export interface TestEdge {
  readonly plan: Plan;
  readonly edge: RunningEdge;
  readonly dir: string;
  /** Ports bound, in plan order: https[i] and http. */
  readonly httpsPorts: number[];
  readonly httpPort: number | null;
  /** PEM of the local CA root, to trust in clients (internal issuer only). */
  readonly ca: string;
  /** Every JSON log line written so far. */
  readonly logs: Array<Record<string, unknown>>;
  stop(drainMs?: number): Promise<void>;
}

export function tempDir(prefix = 'matrix-edge-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function planFrom(yaml: string, dir: string): Plan {
  const file = path.join(dir, 'matrix-edge.yaml');
  fs.writeFileSync(file, yaml);
  const result = loadConfigText(yaml, file, dir);
  if (!result.ok) throw new Error(`test config rejected: ${JSON.stringify(result.errors)}`);
  return result.plan;
}

/**
 * @param yaml  config text; listen ports in it are replaced by ephemeral ones (one https
 *              listener per configured https port, all on `addresses`)
 */
export async function startTestEdge(
  yaml: string,
  opts: { addresses?: string[]; dir?: string; keepPorts?: boolean; edge?: EdgeOptions; planLog?: boolean } = {},
): Promise<TestEdge> {
  const dir = opts.dir ?? tempDir();
  const loaded = planFrom(yaml, dir);
  const addresses = opts.addresses ?? ['127.0.0.1'];
  // In-process: the data plane runs in this process (worker processes are tested through the CLI).
  // The admin listener, when on, gets a free port: edges run side by side.
  const single: Plan = { ...loaded, workers: 1, admin: loaded.admin === null ? null : { ...loaded.admin, port: 0 } };
  const plan: Plan = opts.keepPorts
    ? single
    : {
        ...single,
        listen: {
          https: loaded.listen.https.map(() => ({ port: 0, addresses })),
          http: loaded.listen.http === null ? null : { port: 0, addresses },
        },
      };
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  // The log lines are collected as JSON; with planLog the plan's levels apply (its format does not).
  const log = opts.planLog === true ? createPlanLogger({ ...plan.log, format: 'json' }, sink) : createLogger('info', sink);
  const edge = await startEdge(plan, log, opts.edge);
  const https = edge.listeners.filter((l) => l.kind === 'https');
  const httpsPorts = [...new Set(https.map((l) => l.port))];
  const plain = edge.listeners.find((l) => l.kind === 'http');
  const caPath = path.join(plan.storage, 'pki/authorities/local/root.crt');
  return {
    plan,
    edge,
    dir,
    httpsPorts,
    httpPort: plain?.port ?? null,
    ca: fs.existsSync(caPath) ? fs.readFileSync(caPath, 'utf8') : '',
    logs,
    stop: (drainMs = 2000) => edge.stop(drainMs),
  };
}

/**
 * Teardown after each test of a file: edges kept with `keep` stopped, `onEnd` functions run (last
 * first), directories from `newDir` removed.
 */
export function teardownAfterEach(prefix: string): { keep(edge: TestEdge): TestEdge; onEnd(fn: () => Promise<unknown>): void; newDir(): string } {
  const edges: TestEdge[] = [];
  const closers: Array<() => Promise<unknown>> = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(edges.splice(0).map((e) => e.stop(0).catch(() => undefined)));
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  return {
    keep: (edge) => (edges.push(edge), edge),
    onEnd: (fn) => void closers.push(fn),
    newDir: () => {
      const d = tempDir(prefix);
      dirs.push(d);
      return d;
    },
  };
}
