/**
 * Live reload, the decisions: what differs between the running plan and a newly loaded one, what
 * of it applies live, and what waits for a restart. Pure — the edge does the applying.
 */
import type { Plan } from '../config/plan';

export interface ReloadDecision {
  /** The plan to run: the new one, with the settings that need a restart kept as they run now. */
  readonly plan: Plan;
  /** One line per change applied, for the log and `matrix-edge reload`. */
  readonly changes: readonly string[];
  /** Changes that need a restart to take effect (kept as they run now). */
  readonly deferred: readonly string[];
  /** The certificate source must be replaced (names or tls/acme settings changed). */
  readonly certificates: boolean;
  /** Listeners were added or removed. */
  readonly listeners: boolean;
}

/**
 * Settings read once at start: the storage holds locks, the control socket and the certificates in
 * use; the worker count fixes the processes; admin, alerts and log level are set up at start.
 */
const RESTART_ONLY = ['storage', 'workers', 'admin', 'alerts', 'log'] as const;

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function listed(values: readonly string[]): string {
  return values.length === 0 ? '(none)' : values.join(', ');
}

export function decideReload(running: Plan, loaded: Plan): ReloadDecision {
  const changes: string[] = [];
  const deferred: string[] = [];
  const kept: Partial<Record<(typeof RESTART_ONLY)[number], unknown>> = {};
  for (const key of RESTART_ONLY) {
    if (same(running[key], loaded[key])) continue;
    deferred.push(`${key} (takes effect at the next restart)`);
    kept[key] = running[key];
  }
  const plan = { ...loaded, ...kept } as Plan;

  const added = plan.names.filter((n) => !running.names.includes(n));
  const removed = running.names.filter((n) => !plan.names.includes(n));
  if (added.length > 0) changes.push(`names added: ${listed(added)}`);
  if (removed.length > 0) changes.push(`names removed: ${listed(removed)}`);
  if (added.length === 0 && removed.length === 0 && !same(running.names, plan.names)) changes.push(`default name: ${plan.names[0]}`);
  const certificates = !same(running.names, plan.names) || !same(running.tls, plan.tls) || !same(running.acme, plan.acme);
  if (!same(running.tls, plan.tls)) changes.push(`tls: issuer ${plan.tls.issuer}`);
  if (!same(running.acme, plan.acme)) changes.push('acme settings');

  const listeners = !same(running.listen, plan.listen);
  if (listeners) {
    const https = plan.listen.https.map((l) => l.port).join(', ');
    changes.push(`listeners: https ${https}; http ${plan.listen.http === null ? 'off' : plan.listen.http.port}`);
  }
  for (const u of plan.upstreams) {
    const before = running.upstreams.find((r) => r.name === u.name);
    if (before === undefined) changes.push(`upstream ${u.name} added: ${u.url}`);
    else if (!same(before, u)) changes.push(before.url === u.url ? `upstream ${u.name}: settings` : `upstream ${u.name}: ${before.url} → ${u.url}`);
  }
  for (const r of running.upstreams) if (!plan.upstreams.some((u) => u.name === r.name)) changes.push(`upstream ${r.name} removed`);
  if (!same(running.routes, plan.routes)) changes.push('routes');
  for (const kind of ['server', 'client', 'support'] as const) {
    if (running.wellKnown[kind] !== plan.wellKnown[kind]) changes.push(`/.well-known/matrix/${kind}`);
  }
  if (running.wellKnown.maxAgeSeconds !== plan.wellKnown.maxAgeSeconds) changes.push('well-known max-age');
  if (!same(running.trustedProxies, plan.trustedProxies)) changes.push('trusted proxies');
  if (running.drainTimeoutMs !== plan.drainTimeoutMs) changes.push('drain timeout');
  if (running.serverName !== plan.serverName) changes.push(`server name: ${plan.serverName}`);
  return { plan, changes, deferred, certificates, listeners };
}
