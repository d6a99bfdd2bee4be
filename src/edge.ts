/**
 * Composition root: one control plane (certificate source) and the data plane, wired by the
 * plane messages. With one process the channel is a function call.
 */
import * as os from 'node:os';
import { formatIssue } from './config/describe';
import { loadConfigFile } from './config/load';
import type { Plan } from './config/plan';
import { ControlSocket, type ReloadOutcome } from './control/control-socket';
import { systemClock, type Clock } from './control/clock';
import { startOperations, type Operations, type OperationsOptions } from './control/operations';
import { decideReload } from './control/reload';
import { rotateTicketKeys } from './control/ticket-keys';
import { createCertificateSource, type CertificateSourceSetup, type CertificateTiming } from './control/sources';
import type { CertificateSource, ManagedCertificates } from './control/source';
import { WorkerPool } from './control/workers';
import type { BoundListener } from './data/data-plane';
import type { Logger } from './observe/log';
import { descriptorsNeeded, descriptorWarning, openFilesLimit } from './observe/fd-limit';
import { EdgeMetrics } from './observe/metrics';
import type { CertificateMaterial, ControlToData, DataPlaneStats } from './plane/messages';
import { errorMessage, ME_NOT_MANAGED } from './errors';
import { FileStorage } from './store/file-storage';
import { securePrivateRoot } from './store/private-dir';
import type { Storage } from './store/storage';

export interface RunningEdge {
  readonly listeners: readonly BoundListener[];
  /** The plan in effect (a reload replaces it). */
  readonly plan: Plan;
  /** Lines worth telling the operator at start (e.g. where the local CA's root is). */
  readonly notes: readonly string[];
  /** The certificate source in effect (ACME/local CA: `managed` has status and renewNow). */
  readonly certificates: CertificateSource;
  /** Data-plane worker processes (1: the data plane runs in this process). */
  readonly workers: number;
  /** Where the admin listener (metrics, health) listens; null when `admin` is off. */
  readonly admin: { readonly address: string; readonly port: number } | null;
  /** This edge's metrics (the data plane reports into it: workerRestarted, recordDataPlaneStats). */
  readonly metrics: EdgeMetrics;
  /**
   * Stop accepting, drain for up to `drainMs` (default: the plan's), stop the control plane.
   * `onStopAccepting` runs once no listener accepts new connections.
   */
  stop(drainMs?: number, onStopAccepting?: () => void): Promise<void>;
  /**
   * Load the config file again; when it is valid apply it live (routes, well-known, upstreams,
   * names, listeners; open connections carry on), else change nothing. Logs the outcome; never throws.
   */
  reload(): Promise<ReloadOutcome>;
}

/** The data plane as the control plane sees it: in this process, or a pool of worker processes. */
interface DataPlaneHandle {
  receive(message: ControlToData): void;
  listen(): Promise<BoundListener[]>;
  /** Traffic figures since the previous call: one report per data-plane process. */
  statsReport(): Promise<DataPlaneStats[]>;
  close(drainMs: number, onStopAccepting?: () => void): Promise<void>;
}

export interface EdgeOptions {
  readonly clock?: Clock;
  readonly timing?: CertificateTiming;
  /** Serve `matrix-edge certs` / `renew` / `reload` on the storage's control socket (default true). */
  readonly controlSocket?: boolean;
  /** Alert and readiness-probe timing (tests shorten them). */
  readonly operations?: OperationsOptions;
  /**
   * Where certificates, ACME accounts and locks are kept (default: files in plan.storage). The
   * control socket stays a file in plan.storage whatever this is: it is a local thing.
   */
  readonly storage?: Storage;
}

/** How many data-plane processes the plan asks for (`workers: auto` → one per CPU). */
export function workerCount(plan: Plan): number {
  return plan.workers ?? os.availableParallelism();
}

/** The data plane in this process; loaded only then (with workers the primary never serves). */
function inProcessDataPlane(log: Logger): DataPlaneHandle {
  const { DataPlane } = require('./data/data-plane') as typeof import('./data/data-plane');
  return new DataPlane(log);
}

/** Data-plane worker processes; their restarts are counted in the metrics. */
function workerPool(workers: number, log: Logger, metrics: EdgeMetrics): DataPlaneHandle {
  const pool = new WorkerPool(workers, log.child({ component: 'workers' }));
  pool.onWorkerExit = (worker) => metrics.workerRestarted(worker);
  return pool;
}

/** The storage directory exists and only this user can enter it; a looser mode is narrowed, loudly. */
async function secureStorage(storage: string, log: Logger): Promise<void> {
  const was = await securePrivateRoot(storage);
  if (was !== null) {
    log.warn(
      { storage, mode: `0${was.toString(8)}`, now: '0700' },
      'the storage directory could be read by other users (it holds private keys): its mode is now 0700',
    );
  }
}

export async function startEdge(initialPlan: Plan, log: Logger, options: EdgeOptions = {}): Promise<RunningEdge> {
  let plan = initialPlan;
  const workers = workerCount(plan);
  const clock = options.clock ?? systemClock;
  const metrics = new EdgeMetrics(() => clock.now());
  metrics.setWorkers(workers);
  await secureStorage(plan.storage, log);
  const fdWarning = descriptorWarning(plan, openFilesLimit());
  if (fdWarning !== null) log.warn({ needed: descriptorsNeeded(plan) }, fdWarning);
  const data: DataPlaneHandle = workers === 1 ? inProcessDataPlane(log) : workerPool(workers, log, metrics);
  data.receive({ type: 'plan', plan });
  const certLog = log.child({ component: 'certs' });
  // Read once: the storage is a restart-only setting.
  const storage = options.storage ?? new FileStorage(plan.storage);
  const newSource = (p: Plan): Promise<CertificateSourceSetup> =>
    createCertificateSource(p, certLog, clock, (message) => data.receive(message), options.timing, storage);
  let setup: CertificateSourceSetup;
  try {
    setup = await newSource(plan);
  } catch (err) {
    await data.close(0); // workers may be starting already
    throw err;
  }
  const { source: initialSource, notes } = setup;
  const stopTicketKeys = rotateTicketKeys((message) => data.receive(message), clock);
  let source: CertificateSource = initialSource;
  let control: ControlSocket | null = null;
  let operations: Operations | null = null;
  let stopped = false;
  // ACME challenges are answered by the listeners, so they are up first and never wait on the CA:
  // stored certificates are served at once, missing ones arrive in the background.
  // The other sources have every certificate at once: bind after, so no handshake finds none.
  const listenFirst = plan.tls.issuer === 'acme';
  try {
    // The admin listener (metrics, health) and alerts first: a taken admin address stops the start before anything serves.
    const ops = (operations = await startOperations({
      plan,
      source,
      metrics,
      log,
      clock,
      options: options.operations,
      dataPlaneStats: () => data.statsReport(),
    }));
    const install = (material: CertificateMaterial): void => {
      data.receive({ type: 'certificate', material });
      ops.certificateInstalled(material);
    };
    let listeners = listenFirst ? await data.listen() : null;
    await source.start(install);
    listeners ??= await data.listen();

    /** Load the config file again and apply what changed (see control/reload.ts). */
    const applyReload = async (): Promise<ReloadOutcome> => {
      const file = plan.source;
      const loaded = loadConfigFile(file);
      if (!loaded.ok) return { ok: false, source: file, errors: loaded.errors.map(formatIssue) };
      for (const w of loaded.warnings) log.warn({ key: w.key, line: w.line }, formatIssue(w));
      const decision = decideReload(plan, loaded.plan);
      if (decision.certificates) {
        // The new source first: should it fail (unreadable files, a bad CA root), nothing has changed.
        let next: CertificateSource | null = null;
        try {
          next = (await newSource(decision.plan)).source;
          await next.start(install);
        } catch (err) {
          next?.stop();
          return { ok: false, source: file, errors: [`certificates: ${errorMessage(err)}`] };
        }
        source.stop();
        source = next;
      }
      data.receive({ type: 'plan', plan: decision.plan });
      plan = decision.plan;
      ops.reconfigure(plan, source);
      if (decision.listeners) {
        try {
          listeners = await data.listen();
        } catch (err) {
          return { ok: false, source: file, errors: [`listeners: ${errorMessage(err)} (the rest of the new config is in effect)`] };
        }
      }
      return { ok: true, source: file, changes: decision.changes, deferred: decision.deferred };
    };
    let reloads: Promise<unknown> = Promise.resolve();
    const reload = (): Promise<ReloadOutcome> => {
      const run = reloads.then(async () => {
        if (stopped) return { ok: false as const, source: plan.source, errors: ['the edge is stopping'] };
        const outcome = await applyReload().catch((err: unknown) => ({ ok: false as const, source: plan.source, errors: [errorMessage(err)] }));
        if (outcome.ok) log.info({ source: outcome.source, changes: outcome.changes, deferred: outcome.deferred }, 'config reloaded');
        else log.error({ source: outcome.source, errors: outcome.errors }, 'config reload failed: the running config is unchanged');
        return outcome;
      });
      reloads = run;
      return run;
    };

    if (options.controlSocket !== false) {
      const managed = (): ManagedCertificates => {
        if (source.managed !== null) return source.managed;
        throw new ME_NOT_MANAGED(plan.tls.issuer);
      };
      control = await ControlSocket.open(
        plan.storage,
        { status: () => managed().status(), renew: (names, force) => managed().renewNow(names, force), reload },
        log.child({ component: 'control' }),
      );
    }
    return {
      get listeners() {
        return listeners!;
      },
      notes,
      get certificates() {
        return source;
      },
      get plan() {
        return plan;
      },
      workers,
      admin: ops.admin,
      metrics,
      reload,
      async stop(drainMs = plan.drainTimeoutMs, onStopAccepting) {
        stopped = true;
        stopTicketKeys();
        source.stop();
        // The listeners stop accepting first, then the rest drains.
        const draining = data.close(drainMs, onStopAccepting);
        await control?.close();
        control = null;
        await draining;
        await operations?.stop();
        operations = null;
      },
    };
  } catch (err) {
    stopTicketKeys();
    source.stop();
    await control?.close();
    await operations?.stop();
    await data.close(0);
    throw err;
  }
}
