/**
 * The admin listener of a real edge: /metrics, /healthz, /readyz over real sockets.
 *
 * 1. Local CA: endpoints, content types, 404s; certificate gauges equal to the served leaf;
 *    /readyz follows the upstream (down → 503 naming it, any HTTP answer again → 200).
 * 2. A taken admin address stops the start with one line, before any listener is bound.
 * 3. Pebble (20 s certificates): /readyz 503 while no certificate is there; metrics after a
 *    renewal and after failed renewals (CA stopped) with exact counts; /readyz 503 once the
 *    certificates have expired, 200 again once a CA is back and has renewed them.
 * 4. Through the CLI with two worker processes: the primary serves the admin listener.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { acmeIssuerId } from '../../src/store/keys';
import type { ManagedCertificates } from '../../src/control/source';
import { startEdge } from '../../src/edge';
import { createLogger } from '../../src/observe/log';
import { planFrom, startTestEdge, teardownAfterEach, type TestEdge } from '../support/edge';
import { adminGet, metric } from '../support/metrics';
import { freePort, pebbleInstalled, pebbleTls, startPebble, type RunningPebble } from '../support/pebble';
import { ensureBuilt, freePorts, killAll, startServingEdge, tryConnect, writeConfig } from '../support/proc-edge';
import { servedChain, servedLeaf } from '../support/served-leaf';
import { startUpstream, type Upstream } from '../support/upstream';

jest.setTimeout(90_000);

const { keep, onEnd, newDir } = teardownAfterEach('matrix-edge-metrics-');
afterAll(() => killAll());
const adminPort = (e: TestEdge): number => e.edge.admin!.port;
const scrape = async (e: TestEdge): Promise<string> => (await adminGet(adminPort(e), '/metrics')).body;
const readyz = async (e: TestEdge): Promise<{ status: number; body: { status: string; missing?: Array<Record<string, string>> } }> => {
  const r = await adminGet(adminPort(e), '/readyz');
  return { status: r.status, body: JSON.parse(r.body) as { status: string; missing?: Array<Record<string, string>> } };
};

/** A plain HTTP server on `port` answering 404 to everything (any answer counts as the upstream being up). */
async function listen404(port: number): Promise<() => Promise<void>> {
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  return () => new Promise((resolve) => server.close(() => resolve()));
}

describe('admin listener (local CA)', () => {
  let upstream: Upstream;
  beforeEach(async () => {
    upstream = await startUpstream();
    onEnd(() => upstream.close());
  });

  const edgeUp = async (): Promise<TestEdge> => {
    const e = await startTestEdge(
      ['server_name: localhost', `upstream: ${upstream.url}`, 'listen: { https: [8443], http: null }', 'tls: { issuer: internal }', 'storage: ./certs', ''].join('\n'),
      { dir: newDir(), edge: { operations: { probe: { cacheMs: 0 } } } },
    );
    keep(e);
    return e;
  };

  it('serves /healthz, /metrics and /readyz; anything else is a Matrix 404', async () => {
    const edge = await edgeUp();
    expect(edge.edge.admin).toEqual({ address: '127.0.0.1', port: expect.any(Number) });
    expect(edge.logs.find((l) => l.msg === 'admin listener serving metrics and health')).toMatchObject({ address: '127.0.0.1', port: adminPort(edge), component: 'admin' });

    const health = await adminGet(adminPort(edge), '/healthz');
    expect([health.status, health.headers['content-type'], JSON.parse(health.body)]).toEqual([200, 'application/json', { status: 'ok' }]);
    const head = await adminGet(adminPort(edge), '/healthz', 'HEAD');
    expect([head.status, head.body]).toEqual([200, '']);

    const metrics = await adminGet(adminPort(edge), '/metrics?x=1');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(metrics.headers['cache-control']).toBe('no-store');
    const leaf = (await servedChain(edge.httpsPorts[0]!, 'localhost', edge.ca)).chain[0]!;
    const status = edge.edge.certificates.managed!.status()[0]!;
    expect(metric(metrics.body, 'matrix_edge_certificate_not_after_seconds', { name: 'localhost', issuer: 'local' })).toBe(leaf.validToDate.getTime() / 1000);
    const renewIn = metric(metrics.body, 'matrix_edge_certificate_renewal_in_seconds', { name: 'localhost' })!;
    expect(Math.abs(renewIn - (Date.parse(status.nextRenewal!) - Date.now()) / 1000)).toBeLessThan(5);
    expect(metric(metrics.body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'local' })).toBe(1);
    expect(metric(metrics.body, 'matrix_edge_certificate_renewal_failures_total', { ca: 'local', error_type: 'other' })).toBe(0);
    expect(metric(metrics.body, 'matrix_edge_workers')).toBe(1);
    expect(metric(metrics.body, 'matrix_edge_worker_restarts_total')).toBe(0);
    expect(metric(metrics.body, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    for (const [method, path] of [['GET', '/'], ['GET', '/metrics/'], ['POST', '/metrics'], ['GET', '/_matrix/client/versions']] as const) {
      const r = await adminGet(adminPort(edge), path, method);
      expect({ method, path, status: r.status, type: r.headers['content-type'] }).toEqual({ method, path, status: 404, type: 'application/json' });
      expect(JSON.parse(r.body)).toEqual({ errcode: 'M_NOT_FOUND', error: expect.stringContaining('GET /metrics, /healthz and /readyz') });
    }
  });

  it('/readyz follows the upstream: 503 naming it while it is down, 200 once anything answers HTTP', async () => {
    const edge = await edgeUp();
    const before = upstream.requests.length;
    expect(await readyz(edge)).toEqual({ status: 200, body: { status: 'ready' } });
    // The probe: GET /_matrix/client/versions with the upstream's Host.
    const probe = upstream.requests[before]!;
    expect([probe.method, probe.target, probe.headers.host]).toEqual(['GET', '/_matrix/client/versions', `127.0.0.1:${upstream.port}`]);

    await upstream.close();
    const down = await readyz(edge);
    expect(down.status).toBe(503);
    expect(down.body).toEqual({
      status: 'not ready',
      missing: [{ check: 'upstream', upstream: 'homeserver', problem: expect.stringMatching(new RegExp(`^GET ${upstream.url}/_matrix/client/versions got no answer: .*ECONNREFUSED`)) }],
    });
    // /healthz is about the process only.
    expect((await adminGet(adminPort(edge), '/healthz')).status).toBe(200);

    onEnd(await listen404(upstream.port));
    expect(await readyz(edge)).toEqual({ status: 200, body: { status: 'ready' } });
  });

  it('admin off: no admin listener', async () => {
    const e = await startTestEdge(['server_name: localhost', 'tls: { issuer: internal }', 'admin: false', ''].join('\n'), { dir: newDir() });
    keep(e);
    expect(e.edge.admin).toBeNull();
    expect(e.logs.some((l) => l.component === 'admin')).toBe(false);
  });
});

it('a taken admin address stops the start with one line, and nothing is left listening', async () => {
  const [taken, httpsPort] = await freePorts(2);
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(taken, '127.0.0.1', resolve));
  onEnd(() => new Promise((resolve) => holder.close(resolve)));
  const dir = newDir();
  const plan = planFrom(
    ['server_name: localhost', `listen: { https: [${httpsPort}], http: null, address: [127.0.0.1] }`, 'tls: { issuer: internal }', `admin: { listen: "127.0.0.1:${taken}" }`, 'workers: 1', ''].join('\n'),
    dir,
  );
  await expect(startEdge(plan, createLogger('silent'))).rejects.toThrow(
    `cannot listen for admin (metrics, health) on 127.0.0.1:${taken}: the address is already in use (another edge, or another exporter on that port?); choose another admin.listen`,
  );
  expect(await tryConnect(httpsPort!)).toBe('ECONNREFUSED');
});

const withPebble = pebbleInstalled() ? describe : describe.skip;

withPebble('metrics and readiness through renewals (Pebble)', () => {
  const NAMES = ['matrix.example.com', 'example.com'];
  const acmeYaml = (httpsPort: number, httpPort: number, upstream: string, pebble: { directory: string; caRootsFile: string }): string =>
    [
      'server_name: example.com',
      'hostname: matrix.example.com',
      `listen: { https: [${httpsPort}], http: ${httpPort}, address: [127.0.0.1] }`,
      `upstream: ${upstream}`,
      `acme: { ca: "${pebble.directory}", ca_roots: [${JSON.stringify(pebble.caRootsFile)}], email: test@example.com }`,
      '',
    ].join('\n');

  it('503 while no name has a certificate', async () => {
    const [httpsPort, httpPort, deadCa] = await freePorts(3);
    const { caRootsFile } = await pebbleTls(newDir());
    const upstream = await startUpstream();
    onEnd(() => upstream.close());
    const edge = await startTestEdge(acmeYaml(httpsPort!, httpPort!, upstream.url, { directory: `https://127.0.0.1:${deadCa}/dir`, caRootsFile }), { dir: newDir(), keepPorts: true });
    keep(edge);
    const r = await readyz(edge);
    expect(r.status).toBe(503);
    expect(r.body).toEqual({ status: 'not ready', missing: NAMES.map((name) => ({ check: 'certificate', name, problem: 'no certificate yet' })) });
  });

  it('counts after a renewal and after failed renewals (CA stopped); 503 once expired, 200 once renewed', async () => {
    const [httpsPort, httpPort, caPort] = [await freePort(), await freePort(), await freePort()];
    const tlsFiles = await pebbleTls(newDir());
    const upstream = await startUpstream();
    onEnd(() => upstream.close());
    const pebbles: RunningPebble[] = [];
    onEnd(() => Promise.all(pebbles.map((p) => p.stop())));
    const pebbleUp = async (): Promise<RunningPebble> => {
      const p = await startPebble({ httpPort, tlsPort: httpsPort, listenPort: caPort, tls: tlsFiles, validitySeconds: 20 });
      pebbles.push(p);
      return p;
    };
    const pebble = await pebbleUp();
    const ca = acmeIssuerId(pebble.directory);
    // The default 60 s retry delay: no retry runs by itself while the counts are checked.
    const edge = await startTestEdge(acmeYaml(httpsPort, httpPort, upstream.url, pebble), { dir: newDir(), keepPorts: true, edge: { operations: { probe: { cacheMs: 0 } } } });
    keep(edge);
    const source = edge.edge.certificates.managed!;
    await source.whenReady();
    expect(await readyz(edge)).toEqual({ status: 200, body: { status: 'ready' } });
    let body = await scrape(edge);
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca })).toBe(2);
    const latencyAtStart = metric(body, 'matrix_edge_acme_request_duration_seconds_count', { ca })!;
    // Per order at least: new order, authorization, challenge, its status, finalize, certificate.
    expect(latencyAtStart).toBeGreaterThanOrEqual(2 * 6);
    expect(metric(body, 'matrix_edge_acme_request_duration_seconds_bucket', { ca, le: '+Inf' })).toBe(latencyAtStart);
    expect(metric(body, 'matrix_edge_acme_request_duration_seconds_sum', { ca })).toBeGreaterThan(0);

    // A renewal (forced, as `matrix-edge renew --force` does): counted, and the gauges show the new certificates.
    const renewed = await source.renewNow(null, true);
    expect(renewed.map((r) => r.outcome)).toEqual(['renewed', 'renewed']);
    body = await scrape(edge);
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca })).toBe(4);
    for (const name of NAMES) {
      const leaf = (await servedLeaf(httpsPort, name))!;
      expect(leaf.serialNumber).toBe(renewed.find((r) => r.name === name)!.serial);
      expect(metric(body, 'matrix_edge_certificate_not_after_seconds', { name, issuer: ca })).toBe(leaf.validToDate.getTime() / 1000);
      // Renewal planned with a third of the (20 s) lifetime left.
      const renewIn = metric(body, 'matrix_edge_certificate_renewal_in_seconds', { name })!;
      const expected = (leaf.validToDate.getTime() - (leaf.validToDate.getTime() - leaf.validFromDate.getTime()) / 3 - Date.now()) / 1000;
      expect(Math.abs(renewIn - expected)).toBeLessThan(2);
    }
    for (const type of ['rateLimited', 'network', 'challenge', 'badNonce', 'other']) {
      expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca, error_type: type })).toBe(0);
    }
    const latencyRenewed = metric(body, 'matrix_edge_acme_request_duration_seconds_count', { ca })!;
    expect(latencyRenewed).toBeGreaterThanOrEqual(latencyAtStart + 2 * 6);

    // The CA goes away: a renewal fails for both names with network errors; the certificates are still served.
    await pebble.stop();
    pebbles.splice(0);
    const failed = await source.renewNow(null, true);
    expect(failed.map((r) => r.outcome)).toEqual(['failed', 'failed']);
    body = await scrape(edge);
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca })).toBe(6);
    expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca, error_type: 'network' })).toBe(2);
    for (const type of ['rateLimited', 'challenge', 'badNonce', 'other']) {
      expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca, error_type: type })).toBe(0);
    }
    // Refused requests are timed too: the first request and the library's 3 retries, per name.
    expect(metric(body, 'matrix_edge_acme_request_duration_seconds_count', { ca })).toBe(latencyRenewed + 2 * 4);
    expect(await readyz(edge)).toEqual({ status: 200, body: { status: 'ready' } });

    // Past their expiry: /readyz names both.
    const expiry = Math.max(...source.status().map((s) => Date.parse(s.notAfter!)));
    await new Promise((r) => setTimeout(r, expiry - Date.now() + 200));
    const expired = await readyz(edge);
    expect(expired.status).toBe(503);
    expect(expired.body).toEqual({
      status: 'not ready',
      missing: NAMES.map((name) => ({ check: 'certificate', name, problem: expect.stringMatching(/^the certificate expired at \d{4}-/) })),
    });

    // A CA again: renewed (they are due), /readyz is 200 again.
    await pebbleUp();
    expect((await source.renewNow(null, false)).map((r) => r.outcome)).toEqual(['renewed', 'renewed']);
    expect(await readyz(edge)).toEqual({ status: 200, body: { status: 'ready' } });
    body = await scrape(edge);
    expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca })).toBe(8);
    expect(metric(body, 'matrix_edge_certificate_renewal_failures_total', { ca, error_type: 'network' })).toBe(2);
  });
});

it('with worker processes (CLI): the primary serves the admin listener and counts the workers', async () => {
  await ensureBuilt();
  const dir = newDir();
  const upstream = await startUpstream();
  onEnd(() => upstream.close());
  const [https] = await freePorts(1);
  const config = writeConfig(
    dir,
    ['server_name: localhost', `listen: { https: [${https}], http: null, address: [127.0.0.1] }`, `upstream: ${upstream.url}`, 'tls: { issuer: internal }', 'storage: ./certs', 'workers: 2', ''].join('\n'),
  );
  expect(fs.readFileSync(config, 'utf8')).toContain('admin: { listen: "127.0.0.1:0" }');
  const { edge } = await startServingEdge(config);
  onEnd(() => edge.kill());
  const port = (await edge.waitForLog('admin listener serving metrics and health')).port as number;
  const body = (await adminGet(port, '/metrics')).body;
  expect(metric(body, 'matrix_edge_workers')).toBe(2);
  expect(metric(body, 'matrix_edge_certificate_renewal_attempts_total', { ca: 'local' })).toBe(1);
  expect((await adminGet(port, '/readyz')).status).toBe(200);
  edge.child.kill('SIGTERM');
  expect((await edge.exited).code).toBe(0);
  expect(await tryConnect(port)).toBe('ECONNREFUSED');
});
