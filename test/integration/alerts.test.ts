/**
 * Alerts from a real edge to real HTTP receivers in this test:
 *
 * 1. Generic webhook, a real Pebble: the CA is down at start, issuance fails again and again — one
 *    alert per name once `after_failures` is reached, none for the failures after; the CA comes
 *    up — one recovery per name.
 * 2. Matrix format: the alert is a PUT of an m.notice to the room on the homeserver (by default the
 *    upstream), with the Bearer token from the token file; a refused delivery is retried with the
 *    same transaction ID; the token never reaches the log.
 * 3. An unreadable token file stops the start with one line naming the key.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { ManagedCertificates } from '../../src/control/source';
import { startTestEdge, teardownAfterEach } from '../support/edge';
import { freePort, pebbleInstalled, pebbleTls, startPebble, type RunningPebble } from '../support/pebble';
import { waitFor } from '../support/wait';

jest.setTimeout(90_000);

interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  readonly status: number;
}

interface Receiver {
  readonly url: string;
  readonly requests: Received[];
  /** The requests answered 2xx, bodies parsed. */
  accepted(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

/** A real HTTP server recording every request; `status(n)` answers the n-th (0-based). */
async function startReceiver(status: (n: number) => number = () => 200): Promise<Receiver> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const code = status(requests.length);
      requests.push({ method: req.method!, url: req.url!, headers: req.headers, body, status: code });
      res.writeHead(code, { 'content-type': 'application/json' }).end(code < 300 ? '{"event_id":"$ok"}' : '{"errcode":"M_UNKNOWN","error":"try again"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    accepted: () => requests.filter((r) => r.status < 300).map((r) => JSON.parse(r.body) as Record<string, unknown>),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const { keep, onEnd, newDir } = teardownAfterEach('matrix-edge-alerts-');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const acmeLines = (directory: string, caRootsFile: string): string[] => [
  `acme: { ca: "${directory}", ca_roots: [${JSON.stringify(caRootsFile)}], email: test@example.com }`,
];

const withPebble = pebbleInstalled() ? it : it.skip;

withPebble('generic webhook: one alert per name after N failures in a row, none after, one recovery when the CA is back', async () => {
  const [httpsPort, httpPort, caPort] = [await freePort(), await freePort(), await freePort()];
  const tlsFiles = await pebbleTls(newDir());
  const directory = `https://127.0.0.1:${caPort}/dir`;
  const hook = await startReceiver();
  onEnd(() => hook.close());
  const yaml = [
    'server_name: example.com',
    'hostname: matrix.example.com',
    `listen: { https: [${httpsPort}], http: ${httpPort}, address: [127.0.0.1] }`,
    ...acmeLines(directory, tlsFiles.caRootsFile),
    'alerts:',
    `  webhook: ${hook.url}/hooks/edge`,
    '  after_failures: 2',
    '',
  ].join('\n');
  const edge = await startTestEdge(yaml, { dir: newDir(), keepPorts: true, edge: { timing: { retryBaseMs: 500, random: () => 0.5 } } });
  keep(edge);
  const source = edge.edge.certificates.managed!;

  // (Each failed attempt takes ~6 s: the protocol library's own retries.) A third failure each: still one alert per name.
  await waitFor('three failed attempts for each name', () => source.status().every((s) => s.failures >= 3), 45_000);
  await sleep(300);
  expect(hook.requests.map((r) => [r.method, r.url, r.headers['content-type']])).toEqual([
    ['POST', '/hooks/edge', 'application/json'],
    ['POST', '/hooks/edge', 'application/json'],
  ]);
  const failing = hook.accepted();
  expect(failing.map((a) => a.name).sort()).toEqual(['example.com', 'matrix.example.com']);
  for (const alert of failing) {
    expect(Object.keys(alert).sort()).toEqual(['at', 'details', 'event', 'message', 'name', 'severity']);
    expect(alert).toMatchObject({ event: 'renewal-failing', severity: 'critical', details: { failures: 2, notAfter: null } });
    expect(alert.message).toMatch(/^Obtaining the certificate for \S+ has failed 2 times in a row; nothing is served for this name yet\. Last error: .*ECONNREFUSED/);
    expect(Date.parse(String(alert.at))).toBeLessThanOrEqual(Date.now());
  }
  expect(edge.logs.filter((l) => l.component === 'alerts' && l.msg === 'alert delivered')).toHaveLength(2);

  // The CA comes up: the next retries get the certificates, and each name gets one recovery.
  const pebbles: RunningPebble[] = [await startPebble({ httpPort, tlsPort: httpsPort, listenPort: caPort, tls: tlsFiles })];
  onEnd(() => Promise.all(pebbles.map((p) => p.stop())));
  await waitFor('both certificates', () => source.status().every((s) => s.serial !== null), 30_000);
  await waitFor('the recoveries', () => hook.accepted().length >= 4, 5000);
  await sleep(500);
  const recovered = hook.accepted().slice(2);
  expect(hook.accepted()).toHaveLength(4);
  expect(recovered.map((a) => a.name).sort()).toEqual(['example.com', 'matrix.example.com']);
  for (const alert of recovered) {
    const status = source.status().find((s) => s.name === alert.name)!;
    expect(alert).toMatchObject({ event: 'recovered', severity: 'info', details: { serial: status.serial, notAfter: status.notAfter, resolved: ['renewal-failing'] } });
  }
});

it('matrix format: PUT m.room.message to the room on the upstream, Bearer token from the file, retried with the same transaction ID', async () => {
  const dir = newDir();
  const [httpsPort, deadCa] = [await freePort(), await freePort()];
  const { caRootsFile } = await pebbleTls(newDir());
  // The homeserver stand-in refuses the first delivery.
  const homeserver = await startReceiver((n) => (n === 0 ? 502 : 200));
  onEnd(() => homeserver.close());
  const token = 'syt_YWxlcnRz_secretsecret_1a2b3c';
  fs.writeFileSync(path.join(dir, 'alert-token'), `${token}\n`, { mode: 0o600 });
  const yaml = [
    'server_name: example.com',
    `listen: { https: [${httpsPort}], http: null, address: [127.0.0.1] }`,
    `upstream: ${homeserver.url}`,
    ...acmeLines(`https://127.0.0.1:${deadCa}/dir`, caRootsFile),
    'alerts:',
    '  format: matrix',
    '  room_id: "!ops:example.com"',
    '  access_token_file: alert-token',
    '  after_failures: 1',
    '',
  ].join('\n');
  const edge = await startTestEdge(yaml, { dir, keepPorts: true, edge: { operations: { alerts: { retryBaseMs: 100 } } } });
  keep(edge);

  await waitFor('the alert delivered', () => homeserver.accepted().length === 1, 20_000);
  expect(homeserver.requests).toHaveLength(2);
  const [refused, delivered] = homeserver.requests as [Received, Received];
  expect(delivered.method).toBe('PUT');
  expect(delivered.url).toMatch(/^\/_matrix\/client\/v3\/rooms\/!ops%3Aexample\.com\/send\/m\.room\.message\/[0-9a-f-]{36}$/);
  expect(refused.url).toBe(delivered.url); // the same transaction ID: the homeserver posts it once
  expect(delivered.headers.authorization).toBe(`Bearer ${token}`);
  expect(delivered.headers['content-type']).toBe('application/json');
  const content = JSON.parse(delivered.body) as Record<string, unknown>;
  expect(Object.keys(content).sort()).toEqual(['body', 'msgtype']);
  expect(content.msgtype).toBe('m.notice');
  expect(content.body).toMatch(/^\[matrix-edge critical\] Obtaining the certificate for example\.com has failed 1 time in a row; nothing is served for this name yet\. Last error: .*ECONNREFUSED/);
  const retry = edge.logs.find((l) => l.msg === 'alert delivery failed; retrying')!;
  expect(retry).toMatchObject({ level: 'warn', component: 'alerts', name: 'example.com', attempt: 1, retryInMs: 100, to: homeserver.url, err: expect.stringMatching(/^HTTP 502/) });
  expect(JSON.stringify(edge.logs)).not.toContain(token);
});

it('an unreadable access token file stops the start with one line naming the key', async () => {
  const dir = newDir();
  const yaml = ['server_name: localhost', 'tls: { issuer: internal }', 'alerts: { format: matrix, room_id: "!ops:localhost", access_token_file: missing-token }', ''].join('\n');
  await expect(startTestEdge(yaml, { dir })).rejects.toThrow(`alerts.access_token_file: cannot read ${path.join(dir, 'missing-token')}: ENOENT: no such file or directory`);
});
