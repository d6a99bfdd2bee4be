/**
 * The open-files limit against what the limits allow: every client connection and every upstream
 * connection is a file descriptor, and a process that runs out cannot accept, dial or open a
 * certificate. Node (unlike Go) does not raise the soft limit itself, and systemd's default soft
 * limit is 1024, far below limits.max_connections.
 */
import * as fs from 'node:fs';
import type { Plan } from '../config/plan';

/** Descriptors a data-plane process may need at the plan's limits (plus a margin for files, logs, IPC). */
export function descriptorsNeeded(plan: Plan): number {
  return plan.limits.maxConnections + plan.upstreams.reduce((n, u) => n + u.connections, 0) + 64;
}

/** The soft `Max open files` limit of this process, from /proc (null where there is none). */
export function openFilesLimit(limits = '/proc/self/limits'): number | null {
  let text: string;
  try {
    text = fs.readFileSync(limits, 'utf8');
  } catch {
    return null;
  }
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  if (m === null) return null;
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** A warning when the soft limit is below what the plan's limits need; null when it is enough (or unknown). */
export function descriptorWarning(plan: Plan, soft: number | null): string | null {
  const needed = descriptorsNeeded(plan);
  if (soft === null || soft >= needed) return null;
  return (
    `the open-files limit is ${soft}, but limits.max_connections (${plan.limits.maxConnections}) and proxy.connections ` +
    `allow ${needed} descriptors per process: past ${soft} new connections fail. Raise it (LimitNOFILE=${needed} in the ` +
    'systemd unit, `ulimit -n`, or `ulimits: nofile` in compose) or lower those limits'
  );
}
