/**
 * Operating the edge, on the control plane: the admin listener (metrics, health) and alerts, fed
 * by what the certificate source reports (managed certificates' events: requests, failures, CA latency)
 * and by every certificate handed to the data plane.
 */
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { AlertTarget, Plan } from '../config/plan';
import { AdminServer } from '../observe/admin-server';
import { Alerting, type AlertingOptions } from '../observe/alerts';
import type { Logger } from '../observe/log';
import type { EdgeMetrics } from '../observe/metrics';
import { certificateProblems, poolProblems, UpstreamProbe, type CertificateFacts, type Missing, type UpstreamProbeOptions } from '../observe/readiness';
import type { CertificateMaterial, DataPlaneStats } from '../plane/messages';
import { errorMessage } from '../errors';
import type { Clock } from './clock';
import type { CertificateEvent, CertificateSource } from './source';

/** Timing of alerts and of the upstream probe (tests shorten them; production uses the defaults). */
export interface OperationsOptions {
  readonly alerts?: AlertingOptions;
  readonly probe?: Pick<UpstreamProbeOptions, 'recentMs' | 'cacheMs' | 'timeoutMs'>;
}

export interface Operations {
  /** Where the admin listener listens; null when admin is off. */
  readonly admin: { readonly address: string; readonly port: number } | null;
  /** A certificate the data plane now serves: for the gauges, readiness and the expiry alerts. */
  certificateInstalled(material: CertificateMaterial): void;
  /** After a live reload: the names and upstream of the new plan, and its certificate source. */
  reconfigure(plan: Plan, source: CertificateSource): void;
  stop(): Promise<void>;
}

export interface OperationsSetup {
  readonly plan: Plan;
  readonly source: CertificateSource;
  readonly metrics: EdgeMetrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly options?: OperationsOptions;
  /** The data plane's traffic figures since the last call (asked for before each scrape and readiness check). */
  readonly dataPlaneStats?: () => Promise<readonly DataPlaneStats[]>;
}

/** Starts alerts and binds the admin listener; rejects (with nothing left running) when it cannot. */
export async function startOperations(setup: OperationsSetup): Promise<Operations> {
  const { metrics, log, clock, options = {} } = setup;
  let { plan, source } = setup;
  const installed = new Map<string, CertificateFacts>();
  let managed = source.managed;

  metrics.certificates = () => {
    const status = new Map((managed?.status() ?? []).map((s) => [s.name, s]));
    return plan.names.flatMap((name) => {
      const c = installed.get(name);
      const s = status.get(name);
      if (c === undefined) return [];
      return [{ name, issuer: s?.issuer ?? source.id, notAfter: c.notAfter, nextRenewal: s?.nextRenewal == null ? null : Date.parse(s.nextRenewal) }];
    });
  };

  const alerting =
    plan.alerts === null ? null : Alerting.create(plan.alerts, await accessToken(plan.alerts.target), log.child({ component: 'alerts' }), clock, options.alerts);
  const onEvent = (event: CertificateEvent): void => {
    if (event.type === 'request') {
      metrics.issueAttempt(event.issuer);
      if (!event.ok) metrics.issueFailure(event.issuer, event.errorType);
    } else if (event.type === 'ca-request') metrics.caRequest(event.issuer, event.seconds);
    else alerting?.renewalFailed(event);
  };
  let unsubscribe = managed?.on(onEvent) ?? null;

  const upstreamProbe = (p: Plan): UpstreamProbe | null => {
    const upstream = p.upstreams[0];
    return upstream === undefined
      ? null
      : new UpstreamProbe({ ...options.probe, name: upstream.name, dial: upstream.dial, url: upstream.url, now: () => clock.now(), dataPlaneAnsweredAt: () => metrics.upstreamAnsweredAt });
  };
  let probe = upstreamProbe(plan);
  const collect = async (): Promise<void> => {
    for (const stats of (await setup.dataPlaneStats?.()) ?? []) metrics.recordDataPlaneStats(stats);
  };
  const missing = async (): Promise<Missing[]> => {
    await collect();
    const problems = [...certificateProblems(plan.names, installed, clock.now()), ...poolProblems(metrics.upstreamPools)];
    const upstreamProblem = probe === null ? null : await probe.check();
    return upstreamProblem === null ? problems : [...problems, upstreamProblem];
  };

  let admin: AdminServer | null = null;
  if (plan.admin !== null) {
    try {
      admin = await AdminServer.listen(plan.admin.addresses[0]!, plan.admin.port, { metrics: async () => (await collect(), metrics.scrape()), missing }, log.child({ component: 'admin' }));
    } catch (err) {
      unsubscribe?.();
      alerting?.stop();
      throw err;
    }
  }

  return {
    admin: admin?.address ?? null,
    certificateInstalled(material) {
      const leaf = new X509Certificate(material.certPem);
      const facts: CertificateFacts = { serial: leaf.serialNumber, notBefore: leaf.validFromDate.getTime(), notAfter: leaf.validToDate.getTime() };
      for (const name of material.names) {
        installed.set(name, facts);
        alerting?.certificateInstalled(name, facts);
      }
    },
    reconfigure(next, nextSource) {
      if (nextSource !== source) {
        unsubscribe?.();
        source = nextSource;
        managed = source.managed;
        unsubscribe = managed?.on(onEvent) ?? null;
      }
      if (JSON.stringify(next.upstreams[0]) !== JSON.stringify(plan.upstreams[0])) probe = upstreamProbe(next);
      for (const name of installed.keys()) if (!next.names.includes(name)) installed.delete(name);
      plan = next;
    },
    async stop() {
      unsubscribe?.();
      alerting?.stop();
      await admin?.close();
    },
  };
}

/** The matrix format's access token: inline, or read from its file (errors name the key). */
async function accessToken(target: AlertTarget): Promise<string | null> {
  if (target.format !== 'matrix' || target.accessTokenFile === null) return target.format === 'matrix' ? target.accessToken : null;
  let text: string;
  try {
    text = await fsp.readFile(target.accessTokenFile, 'utf8');
  } catch (err) {
    throw new Error(`alerts.access_token_file: cannot read ${target.accessTokenFile}: ${errorMessage(err)}`);
  }
  const token = text.trim();
  if (!/^\S+$/.test(token)) throw new Error(`alerts.access_token_file: ${target.accessTokenFile} holds no access token (one word expected)`);
  return token;
}
