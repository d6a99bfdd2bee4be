/**
 * Composition root: one control plane (certificate source) and the data plane, wired by the
 * plane messages. With one process the channel is a function call.
 */
import type { Plan } from './config/plan';
import { createCertificateSource } from './control/sources';
import type { CertificateSource } from './control/source';
import { DataPlane, type BoundListener } from './data/data-plane';
import type { Logger } from './observe/log';

export interface RunningEdge {
  readonly listeners: readonly BoundListener[];
  /** Lines worth telling the operator at start (e.g. where the local CA's root is). */
  readonly notes: readonly string[];
  /** Stop accepting, drain for up to `drainMs` (default: the plan's), stop the control plane. */
  stop(drainMs?: number): Promise<void>;
}

export async function startEdge(plan: Plan, log: Logger): Promise<RunningEdge> {
  const data = new DataPlane(log.child({ component: 'data' }));
  data.receive({ type: 'plan', plan });
  const { source, notes } = await createCertificateSource(plan, log.child({ component: 'certs' }));
  let certificates: CertificateSource | null = source;
  try {
    await source.start((material) => data.receive({ type: 'certificate', material }));
    const listeners = await data.listen();
    return {
      listeners,
      notes,
      async stop(drainMs = plan.drainTimeoutMs) {
        certificates?.stop();
        certificates = null;
        await data.close(drainMs);
      },
    };
  } catch (err) {
    source.stop();
    await data.close(0);
    throw err;
  }
}
