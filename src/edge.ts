/**
 * Composition root: one control plane (certificate source) and the data plane, wired by the
 * plane messages. With one process the channel is a function call.
 */
import * as os from 'node:os';
import type { Plan } from './config/plan';
import { ControlSocket } from './control/control-socket';
import { systemClock, type Clock } from './control/clock';
import { ManagedSource } from './control/managed-source';
import { createCertificateSource, type CertificateTiming } from './control/sources';
import type { CertificateSource } from './control/source';
import { WorkerPool } from './control/workers';
import type { BoundListener } from './data/data-plane';
import type { Logger } from './observe/log';
import type { ControlToData } from './plane/messages';

export interface RunningEdge {
  readonly listeners: readonly BoundListener[];
  /** Lines worth telling the operator at start (e.g. where the local CA's root is). */
  readonly notes: readonly string[];
  /** The certificate source (ACME/local CA: a ManagedSource with status and renewNow). */
  readonly certificates: CertificateSource;
  /** Data-plane worker processes (1: the data plane runs in this process). */
  readonly workers: number;
  /**
   * Stop accepting, drain for up to `drainMs` (default: the plan's), stop the control plane.
   * `onStopAccepting` runs once no listener accepts new connections.
   */
  stop(drainMs?: number, onStopAccepting?: () => void): Promise<void>;
}

/** The data plane as the control plane sees it: in this process, or a pool of worker processes. */
interface DataPlaneHandle {
  receive(message: ControlToData): void;
  listen(): Promise<BoundListener[]>;
  close(drainMs: number, onStopAccepting?: () => void): Promise<void>;
}

export interface EdgeOptions {
  readonly clock?: Clock;
  readonly timing?: CertificateTiming;
  /** Serve `matrix-edge certs` / `renew` on the storage's control socket (default true). */
  readonly controlSocket?: boolean;
}

/** How many data-plane processes the plan asks for (`workers: auto` → one per CPU). */
export function workerCount(plan: Plan): number {
  return plan.workers ?? os.availableParallelism();
}

/** The data plane in this process; loaded only then (with workers the primary never serves). */
function inProcessDataPlane(log: Logger): DataPlaneHandle {
  const { DataPlane } = require('./data/data-plane') as typeof import('./data/data-plane');
  return new DataPlane(log.child({ component: 'data' }));
}

export async function startEdge(plan: Plan, log: Logger, options: EdgeOptions = {}): Promise<RunningEdge> {
  const workers = workerCount(plan);
  const data: DataPlaneHandle = workers === 1 ? inProcessDataPlane(log) : new WorkerPool(workers, log.child({ component: 'workers' }));
  data.receive({ type: 'plan', plan });
  const { source, notes } = await createCertificateSource(
    plan,
    log.child({ component: 'certs' }),
    options.clock ?? systemClock,
    (message) => data.receive(message),
    options.timing,
  );
  let certificates: CertificateSource | null = source;
  let control: ControlSocket | null = null;
  // ACME challenges are answered by the listeners, so they are up first and never wait on the CA:
  // stored certificates are served at once, missing ones arrive in the background.
  // The other sources have every certificate at once: bind after, so no handshake finds none.
  const listenFirst = plan.tls.issuer === 'acme';
  try {
    let listeners = listenFirst ? await data.listen() : null;
    await source.start((material) => data.receive({ type: 'certificate', material }));
    listeners ??= await data.listen();
    if (source instanceof ManagedSource && options.controlSocket !== false) {
      control = await ControlSocket.open(plan.storage, source, log.child({ component: 'control' }));
    }
    return {
      listeners,
      notes,
      certificates: source,
      workers,
      async stop(drainMs = plan.drainTimeoutMs, onStopAccepting) {
        certificates?.stop();
        certificates = null;
        // The listeners stop accepting first, then the rest drains.
        const draining = data.close(drainMs, onStopAccepting);
        await control?.close();
        control = null;
        await draining;
      },
    };
  } catch (err) {
    source.stop();
    await control?.close();
    await data.close(0);
    throw err;
  }
}
