/** Human-readable config issues and the effective plan shown by `matrix-edge check`. */
import type { AcmeCaPlan, AlertsPlan, ConfigIssue, LimitsPlan, ListenerPlan, LogPlan, Plan, RouteAction, RouteMatch } from './plan';
import { formatDuration, formatSize } from './units';

/** `FILE:LINE:COL KEY: MESSAGE`, leaving out the parts that are absent (e.g. `FILE: MESSAGE`). */
export function formatIssue(issue: ConfigIssue): string {
  let place = issue.file;
  if (issue.line !== undefined) {
    place += `:${issue.line}`;
    if (issue.column !== undefined) place += `:${issue.column}`;
  }
  const head = [place, issue.key].filter((part) => part !== '').join(' ');
  return head === '' ? issue.message : `${head}: ${issue.message}`;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
function table(rows: readonly (readonly string[])[], indent = '  '): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => indent + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

function describeMatch(match: RouteMatch): string {
  return match.kind === 'exact' ? `exact ${match.path}` : `prefix ${match.prefix}`;
}

function describeAction(action: RouteAction): string {
  switch (action.type) {
    case 'proxy':
      return `proxy to ${action.upstream} (max body ${formatSize(action.maxBodyBytes)})`;
    case 'well-known':
      return `well-known ${action.which}`;
    case 'status':
      return `${action.status} ${action.errcode} "${action.error}"`;
  }
}

function describeIssuer(plan: Plan): string[] {
  const tls = plan.tls;
  switch (tls.issuer) {
    case 'internal':
      return [`internal (local CA for development; leaf certificates live ${formatDuration(tls.leafLifetimeSeconds * 1000)})`];
    case 'files':
      return [
        `files (checked for changes every ${formatDuration(tls.reloadIntervalSeconds * 1000)})`,
        ...tls.files.map((f) => `  cert ${f.cert}  key ${f.key}`),
      ];
    case 'acme': {
      const acme = plan.acme;
      if (acme === null) return ['acme'];
      const ca = (c: AcmeCaPlan, label: string): string[] => [
        `${label} ${c.directory}`,
        `  account email ${c.email ?? '(none)'}${c.eab === null ? '' : `, external account ${c.eab.kid}`}`,
        ...(c.profile === null ? [] : [`  profile ${c.profile}`]),
        ...(c.caRoots.length > 0 ? [`  trusting the CA's HTTPS with ${c.caRoots.join(', ')}`] : []),
      ];
      return [
        ...ca(acme, 'acme'),
        `  challenges ${acme.challenges.join(', ')}; certificate keys ${acme.keyType}`,
        ...acme.fallbacks.flatMap((f, i) => ca(f, `  fallback ${i + 1}:`).map((line, j) => (j === 0 ? line : `  ${line}`))),
      ];
    }
  }
}

/** `http://127.0.0.1:9090`, `http://[::1]:9090`. */
export function adminUrl(admin: ListenerPlan): string {
  const host = admin.addresses[0] ?? '127.0.0.1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${admin.port}`;
}

function describeAlerts(alerts: AlertsPlan | null): string[] {
  if (alerts === null) return ['off (set alerts.webhook, or alerts.format: matrix, to be told when renewals fail)'];
  const t = alerts.target;
  const where =
    t.format === 'generic'
      ? `JSON to ${t.url}`
      : `Matrix room ${t.roomId} via ${t.homeserver} (token ${t.accessTokenFile === null ? 'inline in the config' : `from ${t.accessTokenFile}`})`;
  return [
    where,
    `after ${alerts.afterFailures} failed renewal${alerts.afterFailures === 1 ? '' : 's'} in a row, at ${alerts.daysLeft.join(', ')} days left, and on recovery`,
  ];
}

/** The effective plan, as `matrix-edge check` prints it. */
function describeLog(log: LogPlan): string {
  const apart = Object.entries(log.levels).map(([component, level]) => `${component} ${level}`);
  return `${log.level}, ${log.format === 'auto' ? 'pretty on a terminal, else json' : log.format}${apart.length > 0 ? `; ${apart.join(', ')}` : ''}`;
}

function describeLimits(l: LimitsPlan): string[] {
  return [
    `TLS handshake ${formatDuration(l.handshakeTimeoutMs)}, request headers ${formatDuration(l.headerTimeoutMs)}, idle connection ${formatDuration(l.idleTimeoutMs)}`,
    `headers at most ${formatSize(l.maxHeaderBytes)}; ${l.maxConnections} connections per worker; ${l.maxStreams} HTTP/2 streams per connection`,
    `request body idle ${formatDuration(l.bodyIdleTimeoutMs)}; client not reading ${formatDuration(l.sendTimeoutMs)}`,
    `forwarded requests in flight: ${l.perConnection} per connection, ${l.perAddress} per client address (trusted proxies exempt)`,
  ];
}

export function describePlan(plan: Plan, warnings: readonly ConfigIssue[]): string {
  const out: string[] = [];
  out.push(`Config ${plan.source}`);
  out.push('');
  const issuer = describeIssuer(plan);
  out.push(...table([
    ['Server name', plan.serverName],
    ['Hostname', plan.hostname],
    ['Served names', `${plan.names.join(', ')} (each gets a certificate)`],
    ['Issuer', issuer[0]!],
    ...issuer.slice(1).map((line) => ['', line]),
  ], ''));
  out.push('');

  out.push('Listeners');
  out.push(...table([
    ...plan.listen.https.map((l) => ['https', String(l.port), l.addresses.join(', ')]),
    plan.listen.http === null
      ? ['http', '-', 'disabled (no HTTP-01 challenges, no redirect)']
      : ['http', String(plan.listen.http.port), `${plan.listen.http.addresses.join(', ')}  (${plan.tls.issuer === 'acme' ? 'ACME HTTP-01 challenges, ' : ''}redirect to https)`],
  ]));
  out.push('');

  out.push('Upstreams');
  out.push(...table([
    ['NAME', 'URL', 'DIAL', 'TIMEOUT', 'CONNECT', 'CONNECTIONS', 'QUEUE'],
    ...plan.upstreams.map((u) => [
      u.name,
      u.url,
      u.dial,
      formatDuration(u.timeoutMs),
      formatDuration(u.connectTimeoutMs),
      String(u.connections),
      formatDuration(u.queueTimeoutMs),
    ]),
  ]));
  out.push('');

  out.push('Routes (first match wins)');
  out.push(...table([
    ['#', 'ID', 'HOSTS', 'MATCH', 'ACTION'],
    ...plan.routes.map((r, i) => [
      String(i + 1),
      r.id,
      r.hosts === null ? '*' : r.hosts.join(','),
      describeMatch(r.match),
      describeAction(r.action),
    ]),
  ]));
  out.push('');

  out.push(`Well-known bodies (Cache-Control: max-age=${plan.wellKnown.maxAgeSeconds})`);
  out.push(...table([
    ['/.well-known/matrix/server', plan.wellKnown.server],
    ['/.well-known/matrix/client', plan.wellKnown.client],
    ['/.well-known/matrix/support', plan.wellKnown.support ?? '404 (not configured)'],
  ]));
  out.push('');

  out.push(...table([
    [
      'Trusted proxies',
      plan.trustedProxies.length > 0 ? plan.trustedProxies.join(', ') : 'none (X-Forwarded-For from clients is replaced)',
    ],
    ['HSTS', plan.hsts ?? 'off'],
    ['SNI and Host', plan.strictSniHost ? 'strict: 421 for a Host another certificate is served for' : 'Host picks the route (tls.strict_sni_host: false)'],
    ...describeLimits(plan.limits).map((line, i) => [i === 0 ? 'Limits' : '', line]),
    ['Storage', plan.storage],
    ['Drain timeout', formatDuration(plan.drainTimeoutMs)],
    ['Log', describeLog(plan.log)],
    ['Request ids', plan.requestIdHeader === null ? 'none' : `${plan.requestIdHeader} (sent upstream, in the access log)`],
    ['Admin', plan.admin === null ? 'off' : `${adminUrl(plan.admin)}  (/metrics, /healthz, /readyz)`],
    ...describeAlerts(plan.alerts).map((line, i) => [i === 0 ? 'Alerts' : '', line]),
  ], ''));

  out.push('');
  if (warnings.length === 0) out.push('No warnings.');
  else {
    out.push(`${warnings.length} warning${warnings.length === 1 ? '' : 's'}:`);
    out.push(...warnings.map((w) => `  ${formatIssue(w)}`));
  }
  return `${out.join('\n')}\n`;
}
