/**
 * The doctor's checks in order: server discovery (well-known, SRV, fallback), then at every
 * address found TLS, signing keys, version and path integrity, then client discovery (client
 * well-known with CORS, the homeserver's client API, the support document). The judging is pure
 * (chain, keys, paths, wellknown); this file sends the requests and names the results.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { formatServerName, type ParsedServerName } from '../config/servername';
import { judgeHandshake } from './chain';
import { judgeServerKeys, judgeVersion } from './keys';
import { endpointsOf, fetchUrl, handshake, lookupSrv, NetError, request, where, type Endpoint, type Fetched, type NetContext } from './net';
import { judgePaths, pathProbes } from './paths';
import { failed, named, passed, warned, type CheckResult, type Verdict } from './report';
import { afterSrv, afterWellKnown, authority, firstStep, targetLabel, type SrvOutcome, type Target } from './resolve';
import {
  cacheLifetime,
  clientBaseUrl,
  corsProblem,
  jsonObject,
  judgeCacheLifetime,
  judgePreflight,
  parseServerWellKnown,
  supportProblems,
} from './wellknown';

/** What is being checked, and what the edge's config says it serves (null: no config). */
export interface Subject {
  readonly name: ParsedServerName;
  readonly expect: {
    /** The /.well-known/matrix/server body the edge serves, or null when it serves none. */
    readonly serverWellKnown: string | null;
    readonly clientWellKnown: boolean;
    /** m.homeserver.base_url of the client well-known the edge serves. */
    readonly baseUrl: string | null;
  } | null;
}

const ELEMENT_ORIGIN = 'https://app.element.io';

/** One doctor run: what is checked, how to reach it, and the results so far. */
interface Run {
  readonly subject: Subject;
  readonly ctx: NetContext;
  readonly trusted: readonly X509Certificate[];
  readonly results: CheckResult[];
}

export async function runChecks(subject: Subject, ctx: NetContext): Promise<CheckResult[]> {
  const trusted = ctx.ca.flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch {
      return [];
    }
  });
  const run: Run = { subject, ctx, trusted, results: [] };
  for (const target of await discover(run)) {
    let endpoints: Endpoint[];
    try {
      endpoints = await endpointsOf(ctx, target);
    } catch (err) {
      run.results.push(named(`tls ${targetLabel(target)}`, failed(message(err), `add an A/AAAA record for ${target.host}`)));
      continue;
    }
    for (const ep of endpoints) {
      await checkFederation(run, ep, endpoints.length > 1 ? `${targetLabel(ep)} [${ep.address}]` : targetLabel(ep));
    }
  }
  await checkClient(run);
  return run.results;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A fetch that found nothing listening (no address, connection refused), as opposed to a broken answer. */
function nothingThere(err: unknown): boolean {
  return err instanceof NetError && (err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND');
}

/** The fix for a failed fetch: the certificate when TLS failed, else `otherwise`. */
function fetchFix(err: unknown, host: string, otherwise: string): string {
  const code = err instanceof NetError ? err.code : null;
  const tlsProblem = code !== null && !/^E[A-Z]+$/.test(code);
  return tlsProblem ? `serve a certificate for ${host} with its full chain on port 443` : otherwise;
}

// ---- server discovery ------------------------------------------------------------------------

async function discover(run: Run): Promise<readonly Target[]> {
  const { subject, ctx } = run;
  let step = firstStep(subject.name);
  const trail = [formatServerName(subject.name)];
  if (step.kind === 'well-known') {
    const delegated = await checkServerWellKnown(run, step.hostname);
    trail.push(delegated === null ? 'no delegation' : `well-known m.server ${formatServerName(delegated)}`);
    step = afterWellKnown(step.hostname, delegated);
  }
  let targets: readonly Target[] = [];
  let deprecated: string | null = null;
  if (step.kind === 'srv') {
    const outcome = await srvStep(step.hostname, ctx);
    trail.push(outcome.via);
    targets = outcome.targets;
    if (outcome.deprecated) deprecated = step.hostname;
  } else if (step.kind === 'targets') {
    if (trail.length === 1) trail.push(step.via);
    targets = step.targets;
  }
  const shown = targets.map((t) => `${targetLabel(t)} (SNI ${t.sni ?? 'none'}, Host ${t.hostHeader})`).join(', ');
  const detail = `${trail.join(' → ')} → ${shown}`;
  run.results.push(
    named(
      'resolution',
      deprecated === null
        ? passed(detail)
        : warned(`${detail}: only the deprecated _matrix._tcp SRV record exists`, `add the same record as _matrix-fed._tcp.${deprecated} (Matrix v1.8+ looks that name up first)`),
    ),
  );
  return targets;
}

async function srvStep(hostname: string, ctx: NetContext): Promise<SrvOutcome> {
  // A --resolve entry for the host stands in for its DNS: its SRV records are not looked up.
  if ([...ctx.overrides.values()].some((o) => o.host === hostname.toLowerCase())) {
    const outcome = afterSrv(hostname, null, null);
    return { ...outcome, via: `SRV not looked up (--resolve names ${hostname}): port 8448` };
  }
  const fed = await lookupSrv(ctx, `_matrix-fed._tcp.${hostname}`);
  const legacy = fed.records === null ? await lookupSrv(ctx, `_matrix._tcp.${hostname}`) : { records: null, problem: null };
  const outcome = afterSrv(hostname, fed.records, legacy.records);
  const problems = [fed.problem, legacy.problem].filter((p) => p !== null);
  return problems.length === 0 ? outcome : { ...outcome, via: `${outcome.via} (${problems.join('; ')})` };
}

/** Step 3: the delegation, judged; returns the delegated server name or null (no valid answer). */
async function checkServerWellKnown({ subject, ctx, results }: Run, hostname: string): Promise<ParsedServerName | null> {
  const url = `https://${authority(hostname, 443)}/.well-known/matrix/server`;
  const served = subject.expect?.serverWellKnown ?? null;
  const fallback = 'peers fall back to SRV and port 8448';
  const report = (problem: string, soft: boolean, fix: string): null => {
    const detail = `${problem}: ${fallback}`;
    results.push(named('well-known server', served === null && soft ? passed(detail) : failed(detail, fix)));
    return null;
  };
  const fixMissing =
    served === null
      ? `serve {"m.server": "<host>:<port>"} as JSON at ${url}`
      : `make ${url} reach this edge (it answers ${served}): point ${hostname} at it, or serve that JSON there`;
  let fetched: Fetched;
  try {
    fetched = await fetchUrl(ctx, url);
  } catch (err) {
    return report(message(err), nothingThere(err), fetchFix(err, hostname, fixMissing));
  }
  const { answer, redirects } = fetched;
  if (answer.status === 404) return report(`${url} answered 404`, true, fixMissing);
  if (answer.status !== 200) return report(`${url} answered ${answer.status}`, false, fixMissing);
  const parsed = parseServerWellKnown(answer.body);
  if (!parsed.ok) {
    return report(`${url}: ${parsed.problem}`, false, `serve ${served ?? '{"m.server": "<host>:<port>"}'} at ${url}, as JSON`);
  }
  const mServer = formatServerName(parsed.delegated);
  const notes: Array<[problem: string, fix: string]> = [];
  if (redirects.includes(308)) notes.push(['it is reached through a 308 redirect, which Synapse does not follow', 'redirect with 301, 302 or 307, or serve the JSON directly']);
  if (answer.body.length > 50 * 1024) notes.push(['the body is over 50 KiB, more than Synapse reads', 'serve the m.server JSON alone']);
  const expected = served === null ? undefined : (JSON.parse(served) as { 'm.server'?: string })['m.server'];
  if (expected !== undefined && expected !== mServer) {
    notes.push([`the config says ${expected}: ${hostname} is not answered by this edge`, `point ${hostname} at this edge, or serve ${served} there`]);
  }
  const detail = `m.server ${mServer}${redirects.length > 0 ? ` (after ${redirects.length} redirect${redirects.length === 1 ? '' : 's'})` : ''}`;
  const verdict = notes.length === 0 ? passed(detail) : warned(`${detail}; ${notes.map((n) => n[0]).join('; ')}`, notes.map((n) => n[1]).join('; '));
  results.push(named('well-known server', verdict));
  const header = (n: string): string | undefined => {
    const v = answer.headers[n];
    return Array.isArray(v) ? v.join(', ') : v;
  };
  const lifetime = cacheLifetime({ cacheControl: header('cache-control'), expires: header('expires'), date: header('date') }, Date.now());
  results.push(named('well-known server cache', judgeCacheLifetime(lifetime)));
  return parsed.delegated;
}

// ---- one federation address ----------------------------------------------------------------

function networkFix(err: unknown, ep: Endpoint): string {
  const code = err instanceof NetError ? err.code : null;
  if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH') {
    return `open port ${ep.port} of ${ep.host} to the edge (firewall, port forwarding), or point the delegation (m.server or SRV) at a port it listens on`;
  }
  return `check the TLS listener at ${where(ep)}`;
}

async function checkFederation({ subject, ctx, trusted, results }: Run, ep: Endpoint, label: string): Promise<void> {
  const nowMs = Date.now();
  let tlsVerdict: Verdict;
  try {
    tlsVerdict = judgeHandshake(await handshake(ctx, ep), trusted, ep.certName, nowMs);
  } catch (err) {
    tlsVerdict = failed(message(err), networkFix(err, ep));
  }
  results.push(named(`tls ${label}`, tlsVerdict));
  if (tlsVerdict.status === 'FAIL') return;

  const serverName = formatServerName(subject.name);
  const get = async (path: string, judge: (body: Buffer) => Verdict): Promise<Verdict> => {
    try {
      const answer = await request(ctx, ep, path);
      if (answer.status !== 200) return failed(`GET ${path} answered ${answer.status}`, `make ${path} reach the homeserver through ${where(ep)}`);
      return judge(answer.body);
    } catch (err) {
      return failed(message(err), networkFix(err, ep));
    }
  };
  results.push(named(`keys ${label}`, await get('/_matrix/key/v2/server', (body) => judgeServerKeys(body, serverName, nowMs))));
  results.push(named(`version ${label}`, await get('/_matrix/federation/v1/version', judgeVersion)));

  let paths: Verdict;
  try {
    const probes = pathProbes(serverName, randomBytes(6).toString('hex'));
    const answers = [];
    for (const probe of probes) answers.push({ probe, answer: await request(ctx, ep, probe.path) });
    paths = judgePaths(answers);
  } catch (err) {
    paths = failed(message(err), networkFix(err, ep));
  }
  results.push(named(`paths ${label}`, paths));
}

// ---- client discovery ----------------------------------------------------------------------

async function checkClient({ subject, ctx, results }: Run): Promise<void> {
  const base = `https://${authority(subject.name.host, 443)}/.well-known/matrix`;
  const client = await checkClientWellKnown(`${base}/client`, subject, ctx);
  results.push(named('well-known client', client.verdict));
  if (client.url !== null) results.push(named('well-known client CORS', await judgePreflightAt(ctx, client.url)));
  const baseUrl = client.baseUrl ?? subject.expect?.baseUrl ?? null;
  if (baseUrl !== null) results.push(named('client versions', await checkVersions(ctx, baseUrl)));
  results.push(named('well-known support', await checkSupport(ctx, `${base}/support`)));
}

/** The client well-known; `url` (where it answered) and `baseUrl` are set when it is usable. */
async function checkClientWellKnown(url: string, subject: Subject, ctx: NetContext): Promise<{ verdict: Verdict; url: string | null; baseUrl: string | null }> {
  const expected = subject.expect?.clientWellKnown ?? false;
  const fix = expected
    ? `make ${url} reach this edge (it serves the client well-known): point ${subject.name.host} at it`
    : `serve {"m.homeserver": {"base_url": "https://…"}} as JSON at ${url}, with Access-Control-Allow-Origin: *`;
  const unusable = (verdict: Verdict): { verdict: Verdict; url: null; baseUrl: null } => ({ verdict, url: null, baseUrl: null });
  let fetched: Fetched;
  try {
    fetched = await fetchUrl(ctx, url, { headers: { origin: ELEMENT_ORIGIN } });
  } catch (err) {
    return unusable((expected ? failed : warned)(`${message(err)}: clients cannot discover the homeserver`, fetchFix(err, subject.name.host, fix)));
  }
  const { answer } = fetched;
  if (answer.status === 404) return unusable((expected ? failed : warned)(`${url} answered 404: users must type the homeserver URL`, fix));
  if (answer.status !== 200) return unusable(failed(`${url} answered ${answer.status}: clients stop discovery`, fix));
  const json = jsonObject(answer.body);
  const found = json.ok ? clientBaseUrl(json.value) : json;
  if (!found.ok) return unusable(failed(`${url}: ${found.problem}`, fix));
  const cors = corsProblem(answer.rawHeaders);
  const verdict = cors === null ? passed(`m.homeserver.base_url ${found.url}, Access-Control-Allow-Origin: *`) : failed(cors, 'answer the well-known files with exactly one Access-Control-Allow-Origin: *');
  return { verdict, url: fetched.url, baseUrl: found.url };
}

async function judgePreflightAt(ctx: NetContext, url: string): Promise<Verdict> {
  const headers = { origin: ELEMENT_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' };
  try {
    const { answer } = await fetchUrl(ctx, url, { method: 'OPTIONS', headers });
    return judgePreflight(answer.status, answer.rawHeaders);
  } catch (err) {
    return warned(`OPTIONS preflight: ${message(err)}`, 'answer OPTIONS on the well-known files with 204 and the CORS headers');
  }
}

async function checkVersions(ctx: NetContext, baseUrl: string): Promise<Verdict> {
  const url = `${baseUrl}/_matrix/client/versions`;
  const fix = `make ${baseUrl}/_matrix/client/ reach the homeserver (m.homeserver.base_url must be the address clients use)`;
  try {
    const { answer } = await fetchUrl(ctx, url);
    if (answer.status !== 200) return failed(`${url} answered ${answer.status}`, fix);
    const json = jsonObject(answer.body);
    const versions = json.ok ? json.value['versions'] : undefined;
    if (!Array.isArray(versions) || versions.length === 0 || !versions.every((v) => typeof v === 'string')) {
      return failed(`${url}: ${json.ok ? 'no versions list of strings' : json.problem}`, fix);
    }
    return passed(`${url}: ${versions.join(', ')}`);
  } catch (err) {
    return failed(message(err), fix);
  }
}

async function checkSupport(ctx: NetContext, url: string): Promise<Verdict> {
  const fix = 'serve {"contacts": [{"role": "m.role.admin", "matrix_id": "@admin:…"}]} and/or {"support_page": "https://…"} (matrix-edge: well_known.support)';
  try {
    const { answer } = await fetchUrl(ctx, url);
    if (answer.status === 404) return passed('not published (optional)');
    if (answer.status !== 200) return warned(`${url} answered ${answer.status}`, fix);
    const json = jsonObject(answer.body);
    const problems = json.ok ? supportProblems(json.value) : [json.problem];
    if (problems.length > 0) return warned(`${url}: ${problems.join('; ')}`, fix);
    return passed(`${url}: schema valid`);
  } catch (err) {
    // Nothing listening is the client well-known's finding already; the support file is optional.
    return nothingThere(err) ? passed(`not reachable (${message(err)}); optional`) : warned(message(err), fix);
  }
}
