/**
 * Composition root: one control plane (certificate source) and the data plane, wired by the
 * plane messages. With one process the channel is a function call.
 */
import type { Plan } from './config/plan';
import { systemClock } from './control/clock';
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
  const { source, notes } = await createCertificateSource(plan, log.child({ component: 'certs' }), systemClock, (message) =>
    data.receive(message),
  );
  let certificates: CertificateSource | null = source;
  // ACME challenges (HTTP-01) are answered by the listeners, so they must be up before issuance.
  // The other sources have every certificate at once: bind after, so no handshake finds none.
  const listenFirst = plan.tls.issuer === 'acme';
  try {
    let listeners = listenFirst ? await data.listen() : null;
    await source.start((material) => data.receive({ type: 'certificate', material }));
    listeners ??= await data.listen();
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
