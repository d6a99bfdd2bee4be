/**
 * A data-plane worker process (forked by the primary's WorkerPool through node:cluster): one
 * DataPlane fed by the primary's messages — plan, certificates, challenge answers — binding the
 * plan's listeners with SO_REUSEPORT so every worker accepts on the same ports.
 *
 * Signals are the primary's business: SIGINT/SIGTERM (a terminal's Ctrl-C reaches the whole process
 * group) are ignored here; the primary sends `stop`. If the primary goes away, the worker drains
 * and exits.
 */
import cluster from 'node:cluster';
import { createLogger, createPlanLogger, type Logger } from '../observe/log';
import type { PrimaryToWorker, WorkerToPrimary } from '../plane/messages';
import { errorMessage } from '../errors';
import { DataPlane } from './data-plane';

const WORKER = cluster.worker?.id ?? 0;
/** Drain allowed when the primary disappears without saying stop. */
const ORPHAN_DRAIN_MS = 10_000;

let data: DataPlane | null = null;
let log: Logger = createLogger('info').child({ worker: WORKER });
let stopping = false;

function send(message: WorkerToPrimary): void {
  // With a callback a failed send (the primary just went away) is not an 'error' event that kills
  // the worker; 'disconnect' follows and drains it.
  if (process.connected) process.send?.(message, undefined, undefined, () => undefined);
}

async function stop(drainMs: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  const closing = data?.close(drainMs) ?? Promise.resolve();
  send({ type: 'draining' });
  await closing.catch((err: unknown) => log.error({ err: errorMessage(err) }, 'error while draining'));
  log.flush();
  process.exit(0);
}

process.on('message', (message: PrimaryToWorker) => {
  switch (message.type) {
    case 'plan':
      if (data === null) {
        log = createPlanLogger(message.plan.log).child({ worker: WORKER });
        data = new DataPlane(log, { reusePort: true, worker: WORKER });
      }
      data.receive(message);
      return;
    case 'listen':
      if (data === null) return send({ type: 'listen-failed', error: 'worker: listen before a plan' });
      data.listen().then(
        (listeners) => send({ type: 'listening', listeners }),
        (err: unknown) => send({ type: 'listen-failed', error: errorMessage(err) }),
      );
      return;
    case 'report-stats':
      if (data !== null) send({ type: 'stats', id: message.id, stats: data.takeStats() });
      return;
    case 'stop':
      void stop(message.drainMs);
      return;
    default:
      data?.receive(message);
  }
});

process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);
process.on('disconnect', () => void stop(ORPHAN_DRAIN_MS));
