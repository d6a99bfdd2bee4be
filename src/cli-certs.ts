/**
 * `matrix-edge certs` and `matrix-edge renew`: ask the edge running on the same storage through
 * its control socket; with none running, read the storage (certs) or bind the listeners for the
 * time of the renewal (renew).
 */
import type { Plan } from './config/plan';
import { askEdge, type ControlAnswer } from './control/control-socket';
import type { AttemptResult, NameStatus } from './control/source';
import { describeRenewal } from './control/renewal';
import { startEdge } from './edge';
import { createPlanLogger } from './observe/log';
import { errorMessage } from './errors';
import { CertificateStore, type StoredCertificate } from './store/certificate-store';
import { FileStorage } from './store/file-storage';
import { acmeIssuerId } from './store/keys';

/** A reload may start a certificate source (a new name's first certificate from the local CA). */
const RELOAD_TIMEOUT_MS = 60_000;
const STATUS_TIMEOUT_MS = 10_000;
/** A renewal through the running edge waits for the CA: bounded, but generously. */
const RENEW_TIMEOUT_MS = 15 * 60_000;

/** Storage keys of the issuers the plan uses, primary first. */
export function issuerIds(plan: Plan): string[] {
  switch (plan.tls.issuer) {
    case 'internal':
      return ['local'];
    case 'acme':
      return plan.acme === null ? [] : [plan.acme, ...plan.acme.fallbacks].map((ca) => acmeIssuerId(ca.directory));
    case 'files':
      return [];
  }
}

/** The per-name status as the storage records it (no edge running). */
async function statusFromStorage(plan: Plan): Promise<NameStatus[]> {
  const store = new CertificateStore(new FileStorage(plan.storage));
  const ids = issuerIds(plan);
  const now = Date.now();
  const out: NameStatus[] = [];
  for (const name of plan.names) {
    let best: StoredCertificate | null = null;
    let problem: string | null = null;
    for (const id of ids) {
      try {
        const stored = await store.loadCertificate(id, name);
        if (stored !== null && (best === null || stored.leaf.validToDate > best.leaf.validToDate)) best = stored;
      } catch (err) {
        problem = errorMessage(err);
      }
    }
    if (best === null) {
      out.push({ name, issuer: null, serial: null, notAfter: null, nextRenewal: null, nextReason: null, failures: 0, lastError: problem });
      continue;
    }
    const { meta } = best;
    const rule = describeRenewal(best.leaf.validFromDate.getTime(), best.leaf.validToDate.getTime(), now);
    out.push({
      name,
      issuer: meta.issuer,
      serial: meta.serial,
      notAfter: meta.notAfter,
      nextRenewal: meta.nextRenewal ?? new Date(rule.at).toISOString(),
      nextReason: meta.nextRenewalReason ?? rule.reason,
      failures: meta.lastError === undefined ? 0 : 1,
      lastError: meta.lastError ?? null,
    });
  }
  return out;
}

function table(rows: readonly string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

export async function listCertificates(plan: Plan, options: { json: boolean }): Promise<number> {
  if (plan.tls.issuer === 'files') {
    process.stdout.write('certificates come from tls.files; they are renewed by whatever writes those files (the edge reloads them)\n');
    return 0;
  }
  let answer: ControlAnswer | null = null;
  try {
    answer = await askEdge(plan.storage, { cmd: 'status' }, STATUS_TIMEOUT_MS);
  } catch (err) {
    process.stderr.write(`matrix-edge: ${errorMessage(err)}; reading the storage instead\n`);
  }
  let names: readonly NameStatus[];
  let from: string;
  if (answer !== null && answer.ok && 'names' in answer) {
    names = answer.names;
    from = `the running edge (pid ${answer.pid})`;
  } else {
    names = await statusFromStorage(plan);
    from = `the storage ${plan.storage} (no edge is running on it)`;
  }
  const bad = names.filter((n) => n.serial === null || n.lastError !== null);
  if (options.json) {
    process.stdout.write(JSON.stringify({ from, names }, null, 2) + '\n');
    return bad.length > 0 ? 1 : 0;
  }
  const rows = [
    ['NAME', 'ISSUER', 'SERIAL', 'NOT AFTER', 'NEXT RENEWAL', 'WHY', 'LAST ERROR'],
    ...names.map((n) => [
      n.name,
      n.issuer ?? '-',
      n.serial ?? '(none)',
      n.notAfter ?? '-',
      n.nextRenewal ?? '-',
      n.nextReason ?? '-',
      n.lastError === null ? '-' : n.lastError.length > 160 ? `${n.lastError.slice(0, 157)}...` : n.lastError,
    ]),
  ];
  process.stdout.write(`from ${from}\n${table(rows)}`);
  return bad.length > 0 ? 1 : 0;
}

function printResults(results: readonly AttemptResult[]): number {
  for (const r of results) {
    const line =
      r.outcome === 'renewed'
        ? `${r.name}: renewed (serial ${r.serial})`
        : r.outcome === 'stored'
          ? `${r.name}: another process had just renewed it (serial ${r.serial})`
          : r.outcome === 'not-due'
            ? `${r.name}: not due yet (serial ${r.serial}); --force renews anyway`
            : `${r.name}: FAILED: ${r.error ?? 'unknown error'}`;
    process.stdout.write(line + '\n');
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

export async function renewCertificates(plan: Plan, options: { names: readonly string[]; force: boolean }): Promise<number> {
  if (plan.tls.issuer === 'files') {
    process.stderr.write('matrix-edge: tls.issuer is files: renew those certificates where they come from; the edge reloads the files\n');
    return 2;
  }
  const unknown = options.names.filter((n) => !plan.names.includes(n));
  if (unknown.length > 0) {
    process.stderr.write(`matrix-edge: not a configured name: ${unknown.join(', ')} (configured: ${plan.names.join(', ')})\n`);
    return 2;
  }
  let answer: ControlAnswer | null;
  try {
    answer = await askEdge(plan.storage, { cmd: 'renew', names: options.names, force: options.force }, RENEW_TIMEOUT_MS);
  } catch (err) {
    process.stderr.write(`matrix-edge: ${errorMessage(err)}\n`);
    return 1;
  }
  if (answer !== null) {
    if (!answer.ok) {
      process.stderr.write(`matrix-edge: the running edge refused: ${answer.error}\n`);
      return 1;
    }
    if (!('results' in answer)) {
      process.stderr.write('matrix-edge: the running edge answered without renewal results (is it another version?)\n');
      return 1;
    }
    process.stdout.write(`renewed by the running edge (pid ${answer.pid}); it serves the new certificates already\n`);
    return printResults(answer.results);
  }

  // No edge on this storage: bind the listeners (the CA's challenges come to them) for the renewal.
  const log = createPlanLogger(plan.log, process.stderr);
  let edge;
  try {
    // A one-off process for the renewal: no admin listener, no alerts.
    edge = await startEdge({ ...plan, workers: 1, admin: null, alerts: null }, log, { controlSocket: false });
  } catch (err) {
    process.stderr.write(`matrix-edge: cannot renew: ${errorMessage(err)}\n`);
    return 1;
  }
  try {
    const managed = edge.certificates.managed;
    if (managed === null) return 1;
    return printResults(await managed.renewNow(options.names, options.force));
  } finally {
    await edge.stop(0);
    log.flush();
  }
}

/** `matrix-edge reload`: the edge running on the plan's storage loads its config again. */
export async function reloadEdge(plan: Plan): Promise<number> {
  let answer: ControlAnswer | null;
  try {
    answer = await askEdge(plan.storage, { cmd: 'reload' }, RELOAD_TIMEOUT_MS);
  } catch (err) {
    process.stderr.write(`matrix-edge: ${errorMessage(err)}\n`);
    return 1;
  }
  if (answer === null) {
    process.stderr.write(`matrix-edge: no edge is running on the storage ${plan.storage}: nothing to reload (start one with \`matrix-edge start\`)\n`);
    return 1;
  }
  if (!answer.ok || !('reload' in answer)) {
    process.stderr.write(`matrix-edge: the running edge refused: ${answer.ok ? 'no reload result (is it another version?)' : answer.error}\n`);
    return 1;
  }
  const outcome = answer.reload;
  if (outcome.source !== plan.source) {
    process.stderr.write(`warning: the running edge (pid ${answer.pid}) reads ${outcome.source}, not ${plan.source}\n`);
  }
  if (!outcome.ok) {
    for (const e of outcome.errors) process.stderr.write(`error: ${e}\n`);
    process.stderr.write(`matrix-edge: the running edge (pid ${answer.pid}) kept its config\n`);
    // A config the edge finds invalid is the same kind of failure as one found here.
    return outcome.errors.some((e) => e.startsWith(`${outcome.source}:`)) ? 2 : 1;
  }
  const what = outcome.changes.length === 0 ? 'no change' : outcome.changes.join('; ');
  process.stdout.write(`reloaded by the running edge (pid ${answer.pid}): ${what}\n`);
  for (const d of outcome.deferred) process.stdout.write(`not applied until a restart: ${d}\n`);
  return 0;
}
