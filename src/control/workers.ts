/**
 * The data plane as N worker processes (node:cluster), seen from the primary (control plane) as
 * one data plane: every message goes to every worker, and what a worker must know to serve — the
 * plan, the installed certificates, the pending challenge answers — is kept here and replayed to a
 * worker started later (a replacement for one that crashed). Each worker binds the listeners itself
 * with SO_REUSEPORT; one worker exiting never touches the others' connections.
 */
import cluster, { type Worker } from 'node:cluster';
import * as fs from 'node:fs';
import * as module_ from 'node:module';
import * as path from 'node:path';
import type { Logger } from '../observe/log';
import type { BoundListenerInfo, CertificateMaterial, ControlToData, DataPlaneStats, PrimaryToWorker, WorkerToPrimary } from '../plane/messages';

/** The compiled worker entry, beside this file's compiled directory (dist/data/worker-main.js). */
export function workerEntry(): string {
  return path.join(__dirname, '..', 'data', 'worker-main.js');
}

/** Restarts of a crashing worker are spaced out: 0.1 s doubling to 10 s while crashes keep coming. */
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 10_000;
/** How long stats() waits for a worker's figures. */
const STATS_TIMEOUT_MS = 1000;
/** A worker that lived this long resets the restart delay. */
const HEALTHY_AFTER_MS = 30_000;

interface Slot {
  readonly index: number;
  worker: Worker | null;
  startedAt: number;
  restartDelayMs: number;
}

export class WorkerPool {
  private plan: Extract<ControlToData, { type: 'plan' }> | null = null;
  private readonly certificates = new Map<string, CertificateMaterial>();
  private readonly httpChallenges = new Map<string, string>();
  private readonly alpnChallenges = new Map<string, Extract<ControlToData, { type: 'alpn-challenge-add' }>>();
  private ticketKeys: Extract<ControlToData, { type: 'ticket-keys' }> | null = null;
  private readonly slots: Slot[] = [];
  private closing = false;
  private statsRequests = 0;
  /** Whether the workers have bound their listeners once (later listen() calls follow a new plan). */
  private listened = false;
  /** Called when a worker exits unexpectedly (it is then replaced). */
  onWorkerExit: ((worker: number) => void) | null = null;

  constructor(
    private readonly count: number,
    private readonly log: Logger,
    private readonly entry: string = workerEntry(),
  ) {
    if (!Number.isInteger(count) || count < 1) throw new Error(`worker count must be a whole number ≥ 1; got ${count}`);
  }

  /** Keep what a new worker needs, and pass the message to every live worker. */
  receive(message: ControlToData): void {
    switch (message.type) {
      case 'plan':
        this.plan = message;
        // The first plan starts the workers (fork() hands it to them).
        if (this.slots.length === 0) return this.forkAll();
        break;
      case 'certificate':
        this.certificates.set(message.material.names.join('\n'), message.material);
        break;
      case 'challenge-add':
        this.httpChallenges.set(message.token, message.keyAuthorization);
        break;
      case 'challenge-remove':
        this.httpChallenges.delete(message.token);
        break;
      case 'alpn-challenge-add':
        this.alpnChallenges.set(message.name, message);
        break;
      case 'alpn-challenge-remove':
        this.alpnChallenges.delete(message.name);
        break;
      case 'ticket-keys':
        this.ticketKeys = message;
        break;
    }
    for (const slot of this.slots) if (slot.worker !== null) send(slot.worker, message);
  }

  /**
   * Fork the workers as soon as the plan is known: they load their code while the control plane
   * prepares its certificates, and bind when listen() says so.
   */
  private forkAll(): void {
    if (this.slots.length > 0 || this.closing || !fs.existsSync(this.entry)) return;
    cluster.setupPrimary({ exec: this.entry, args: [], silent: false });
    for (let i = 0; i < this.count; i++) {
      const slot: Slot = { index: i, worker: null, startedAt: 0, restartDelayMs: RESTART_MIN_MS };
      this.slots.push(slot);
      this.fork(slot);
    }
  }

  /**
   * Start the workers (when not yet) and have each bind the current plan's listeners (after a new
   * plan: the added ones; removed ones stop accepting). The first time, a failure stops the workers.
   */
  async listen(): Promise<BoundListenerInfo[]> {
    if (this.plan === null) throw new Error('worker pool: listen() before a plan');
    if (!fs.existsSync(this.entry)) {
      throw new Error(`the data-plane worker ${this.entry} is missing: build the edge (npm run build) or set workers: 1`);
    }
    const first = !this.listened;
    this.forkAll();
    try {
      const bound = await Promise.all(this.slots.filter((slot) => slot.worker !== null).map((slot) => this.bind(slot)));
      if (first) this.log.info({ workers: this.count, pids: this.slots.map((s) => s.worker?.process.pid) }, 'data-plane workers listening');
      this.listened = true;
      return bound[0] ?? [];
    } catch (err) {
      if (first) await this.close(0);
      throw err;
    }
  }

  /** Forks the slot's worker and replays the state. */
  private fork(slot: Slot): void {
    const worker = cluster.fork({ MATRIX_EDGE_WORKER: String(slot.index + 1), ...compileCacheEnv() });
    slot.worker = worker;
    slot.startedAt = Date.now();
    worker.once('exit', (code, signal) => this.onExit(slot, worker, code, signal));
    send(worker, this.plan!);
    for (const material of this.certificates.values()) send(worker, { type: 'certificate', material });
    for (const [token, keyAuthorization] of this.httpChallenges) send(worker, { type: 'challenge-add', token, keyAuthorization });
    for (const add of this.alpnChallenges.values()) send(worker, add);
    if (this.ticketKeys !== null) send(worker, this.ticketKeys);
  }

  /** Tells the slot's worker to bind the current plan's listeners; resolves with what it has bound. */
  private async bind(slot: Slot): Promise<BoundListenerInfo[]> {
    const worker = slot.worker;
    if (worker === null) throw new Error('data-plane worker exited before listening');
    const answer = reply(worker, (m) => (m.type === 'listening' || m.type === 'listen-failed' ? m : undefined));
    send(worker, { type: 'listen' });
    const message = await answer.catch((err: Error) => {
      throw new Error(`data-plane worker ${err.message} before listening`);
    });
    if (message.type === 'listen-failed') throw new Error(message.error);
    return [...message.listeners];
  }

  /**
   * Every live worker's traffic figures since its previous report. A worker that does not answer
   * within a second is left out (its figures come with the next report).
   */
  async statsReport(): Promise<DataPlaneStats[]> {
    const id = ++this.statsRequests;
    const live = this.slots.map((s) => s.worker).filter((w): w is Worker => w !== null && w.isConnected());
    const answers = live.map((worker) => {
      const answer = reply(worker, (m) => (m.type === 'stats' && m.id === id ? m.stats : undefined), STATS_TIMEOUT_MS);
      send(worker, { type: 'report-stats', id });
      return answer.catch(() => null);
    });
    return (await Promise.all(answers)).filter((a): a is DataPlaneStats => a !== null);
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = null;
    if (this.closing) return;
    const lived = Date.now() - slot.startedAt;
    slot.restartDelayMs = lived >= HEALTHY_AFTER_MS ? RESTART_MIN_MS : Math.min(slot.restartDelayMs * 2, RESTART_MAX_MS);
    const delay = lived >= HEALTHY_AFTER_MS ? 0 : slot.restartDelayMs;
    this.onWorkerExit?.(slot.index + 1);
    this.log.error(
      { worker: slot.index + 1, pid: worker.process.pid, code, signal, restartInMs: delay },
      'data-plane worker exited unexpectedly; starting a new one (the other workers keep serving)',
    );
    setTimeout(() => {
      if (this.closing || slot.worker !== null) return;
      this.fork(slot);
      this.bind(slot).then(
        () => this.log.info({ worker: slot.index + 1, pid: slot.worker?.process.pid }, 'data-plane worker replaced'),
        (err: unknown) => this.log.error({ worker: slot.index + 1, err: (err as Error).message }, 'replacement data-plane worker failed'),
      );
    }, delay).unref();
  }

  /**
   * Every worker stops accepting, drains for up to `drainMs`, exits. `onStopAccepting` runs once no
   * worker accepts new connections any more.
   */
  async close(drainMs: number, onStopAccepting?: () => void): Promise<void> {
    this.closing = true;
    const live = this.slots.map((s) => s.worker).filter((w): w is Worker => w !== null && w.isConnected());
    const draining = live.map(
      (worker) =>
        new Promise<void>((resolve) => {
          const onMessage = (message: WorkerToPrimary): void => {
            if (message.type === 'draining') resolve();
          };
          worker.on('message', onMessage);
          worker.once('exit', () => resolve());
        }),
    );
    const exited = live.map(
      (worker) =>
        new Promise<void>((resolve) => {
          if (worker.process.exitCode !== null || worker.process.signalCode !== null) return resolve();
          worker.once('exit', () => resolve());
        }),
    );
    for (const worker of live) send(worker, { type: 'stop', drainMs });
    void Promise.all(draining).then(() => onStopAccepting?.());
    const killer = setTimeout(() => {
      for (const worker of live) worker.process.kill('SIGKILL');
    }, drainMs + 3000);
    await Promise.all(exited);
    clearTimeout(killer);
  }
}

/**
 * The first message from `worker` that `pick` accepts. Rejects when the worker exits first ("exited
 * (SIGKILL)") or, with a timeout, when none came in time.
 */
function reply<T>(worker: Worker, pick: (message: WorkerToPrimary) => T | undefined, timeoutMs = 0): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const settle = (): void => {
      clearTimeout(timer);
      worker.off('message', onMessage);
      worker.off('exit', onExit);
    };
    const onMessage = (message: WorkerToPrimary): void => {
      const value = pick(message);
      if (value === undefined) return;
      settle();
      resolve(value);
    };
    const onExit = (code: number | null, signal: string | null): void => {
      settle();
      reject(new Error(`exited (${signal ?? `code ${code}`})`));
    };
    const timer = timeoutMs > 0 ? setTimeout(() => (settle(), reject(new Error(`did not answer within ${timeoutMs} ms`))), timeoutMs) : undefined;
    worker.on('message', onMessage);
    worker.once('exit', onExit);
  });
}

/** Workers share the primary's compiled-code cache (enabled by bin/matrix-edge.js): a faster start. */
function compileCacheEnv(): Record<string, string> {
  const dir = module_.getCompileCacheDir?.();
  return dir === undefined ? {} : { NODE_COMPILE_CACHE: dir };
}

function send(worker: Worker, message: PrimaryToWorker): void {
  if (worker.isConnected()) worker.send(message);
}
