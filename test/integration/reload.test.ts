/**
 * Live reload through the real CLI: `SIGHUP` to `matrix-edge start`, and `matrix-edge reload`
 * through the control socket. A valid new config is applied live (well-known bodies, names added
 * and removed, the upstream) while an HTTP/1.1 long poll and an HTTP/2 stream that are in flight
 * carry on on their connections; an invalid one changes nothing and is reported with file and
 * line. With `workers: 2` (worker processes) and `workers: 1` (the data plane in the primary).
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import type * as http2 from 'node:http2';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { connectH2, h2request, handshake, KeepAliveConn, request, type Reply } from '../support/client';
import { ensureBuilt, freePorts, killAll, localCaRoot, runCli, startServingEdge, tempDir, writeConfig, type EdgeProcess, type LogLine } from '../support/proc-edge';
import { echo, startUpstream, type Upstream } from '../support/upstream';
import { waitFor } from '../support/wait';

jest.setTimeout(30_000);

const SYNC = '/_matrix/client/v3/sync';
const RELOADED = 'config reloaded';
const RELOAD_FAILED = 'config reload failed: the running config is unchanged';
const OLD_M_SERVER = 'old.example.org:443';
const NEW_M_SERVER = 'new.example.org:8448';

/** A /sync answer of some size, so a truncated relay would show. */
const SYNC_BODY = JSON.stringify({
  next_batch: 's72595_4483_1934',
  rooms: {
    join: Object.fromEntries(
      Array.from({ length: 100 }, (_, i) => [`!room${i}:example.com`, { timeline: { events: [{ type: 'm.room.message', content: { body: `message ${i} ✓` } }] } }]),
    ),
  },
});

// ---------------------------------------------------------------------------------------------
// Upstream stand-ins: one that holds /sync long polls until the test releases them

interface HoldingUpstream {
  readonly upstream: Upstream;
  /** /sync requests that reached the upstream and have not been answered yet. */
  readonly held: Array<{ target: string; res: http.ServerResponse }>;
  /** Answer every held /sync with 200 and SYNC_BODY. */
  release(): void;
}

/** An upstream that holds /sync for up to 60 s (a long poll) or until release(); everything else is echoed. */
async function startHoldingUpstream(): Promise<HoldingUpstream> {
  const upstream = await startUpstream();
  const held: HoldingUpstream['held'] = [];
  const answer = (res: http.ServerResponse): void => {
    if (res.destroyed || res.headersSent) return;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(SYNC_BODY) });
    res.end(SYNC_BODY);
  };
  upstream.behaviour = (req, res, record) => {
    if (!req.url!.startsWith(SYNC)) return echo(req, res, record);
    void record().then(() => {
      const entry = { target: req.url!, res };
      held.push(entry);
      const timer = setTimeout(() => answer(res), 60_000);
      res.once('close', () => {
        clearTimeout(timer);
        const i = held.indexOf(entry);
        if (i !== -1) held.splice(i, 1);
      });
    });
  };
  return { upstream, held, release: () => held.splice(0).forEach((h) => answer(h.res)) };
}

/** Opens a kept-alive HTTP/1.1 connection (closed after each test) and waits for its handshake. */
async function openConn(port: number, ca: string | null, servername: string): Promise<KeepAliveConn> {
  const conn = KeepAliveConn.open(port, ca, { servername });
  open.push(conn);
  await conn.ready;
  return conn;
}

const open: KeepAliveConn[] = [];
const sessions: http2.ClientHttp2Session[] = [];

// ---------------------------------------------------------------------------------------------
// An edge process on a config file the tests rewrite

interface Spec {
  readonly serverName: string;
  readonly hostname?: string;
  readonly upstream: string;
  readonly mServer: string;
  readonly workers: 1 | 2;
}

interface Running {
  readonly edge: EdgeProcess;
  readonly dir: string;
  readonly config: string;
  readonly port: number;
  /** The local CA root (PEM). */
  readonly ca: string;
  /** The processes that run the data plane: the workers, or the primary with `workers: 1`. */
  readonly dataPids: readonly number[];
}

const dirs: string[] = [];

function yamlFor(spec: Spec, port: number): string {
  return [
    `server_name: ${spec.serverName}`,
    ...(spec.hostname === undefined ? [] : [`hostname: ${spec.hostname}`]),
    `listen: { https: [${port}], http: null, address: [127.0.0.1] }`,
    `upstream: ${spec.upstream}`,
    `well_known: { server: "${spec.mServer}" }`,
    'tls: { issuer: internal }',
    'storage: ./certs',
    `workers: ${spec.workers}`,
    '',
  ].join('\n');
}

async function startEdge(spec: Spec): Promise<Running> {
  const dir = tempDir('matrix-edge-reload-');
  dirs.push(dir);
  const [port] = await freePorts(1);
  const config = writeConfig(dir, yamlFor(spec, port!));
  const { edge } = await startServingEdge(config);
  const listening = edge.logs.find((l) => l.msg === 'data-plane workers listening');
  const dataPids = spec.workers === 1 ? [edge.pid] : (listening!.pids as number[]);
  expect(dataPids).toHaveLength(spec.workers);
  return { edge, dir, config, port: port!, ca: localCaRoot(path.join(dir, 'certs')), dataPids };
}

/** Rewrite the config file in place (same path, same port). */
function rewrite(r: Running, yaml: string): void {
  writeConfig(r.dir, yaml);
}

/** The first log line with one of these msgs printed after the first `since` lines; fails at once if the edge exits. */
async function logAfter(r: Running, since: number, msgs: readonly string[], timeoutMs = 10_000): Promise<LogLine> {
  const find = (): LogLine | undefined => r.edge.logs.slice(since).find((l) => msgs.includes(l.msg ?? ''));
  const exited = (): boolean => r.edge.child.exitCode !== null || r.edge.child.signalCode !== null;
  await waitFor(`log line ${msgs.join(' or ')}`, () => find() !== undefined || exited(), timeoutMs).catch(() => undefined);
  const line = find();
  if (line !== undefined) return line;
  const how = exited() ? `the edge exited (${r.edge.child.exitCode ?? r.edge.child.signalCode})` : `not within ${timeoutMs} ms`;
  const last = r.edge.logs.slice(-6).map((l) => JSON.stringify(l)).join('\n');
  throw new Error(`no log line '${msgs.join("' or '")}': ${how}\nlast logs:\n${last}\nstderr: ${r.edge.stderr()}`);
}

/** SIGHUP the primary and resolve with its answer: the 'config reloaded' line or the failure line. */
function sighup(r: Running): Promise<LogLine> {
  const since = r.edge.logs.length;
  process.kill(r.edge.pid, 'SIGHUP');
  return logAfter(r, since, [RELOADED, RELOAD_FAILED]);
}

/** `matrix-edge reload` on the edge's config file: exit 0, one line naming the changes, and the same changes in the edge's log. */
async function reloadCommand(r: Running, changes: readonly string[]): Promise<void> {
  const since = r.edge.logs.length;
  const run = await runCli(['reload', '--config', r.config]);
  expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
    code: 0,
    stdout: `reloaded by the running edge (pid ${r.edge.pid}): ${changes.join('; ')}\n`,
    stderr: '',
  });
  expect(await logAfter(r, since, [RELOADED])).toMatchObject({ level: 'info', source: r.config, changes, deferred: [] });
}

/** Waits until every data-plane process has logged installing a certificate for `name` after log line `since`. */
async function certificateInEveryDataPlane(r: Running, since: number, name: string): Promise<void> {
  await waitFor(`a certificate for ${name} in every data-plane process`, () =>
    r.dataPids.every((pid) =>
      r.edge.logs.slice(since).some((l) => l.pid === pid && l.component === 'tls' && l.msg === 'certificate installed' && Array.isArray(l.names) && l.names.includes(name)),
    ),
  );
}

/** The edge ran through without restarting a process: one 'serving' line, no worker replaced, no exit. */
function expectNoRestart(r: Running): void {
  expect(r.edge.child.exitCode).toBeNull();
  expect(r.edge.logs.filter((l) => l.msg === 'matrix-edge is serving')).toHaveLength(1);
  expect(r.edge.logs.filter((l) => l.msg === 'data-plane worker replaced' || String(l.msg).startsWith('data-plane worker exited'))).toEqual([]);
}

/** GET on a new connection (SNI and Host = `name`, verified against the local CA). */
function fresh(r: Running, target: string, name = 'localhost'): Promise<Reply> {
  return request({ port: r.port, ca: r.ca, path: target, servername: name, hostHeader: `${name}:${r.port}` });
}

/** The m.server a new connection gets, asked `times` times (new connections spread over the workers). */
async function mServerOnNewConnections(r: Running, times = 4, name = 'localhost'): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < times; i++) {
    const reply = await fresh(r, '/.well-known/matrix/server', name);
    expect(reply.status).toBe(200);
    seen.push(reply.json<{ 'm.server': string }>()['m.server']);
  }
  return seen;
}

/** The config errors `matrix-edge check` reports for the file, without the "error: " prefix. */
async function checkErrors(config: string): Promise<string[]> {
  const run = await runCli(['check', '--config', config]);
  expect(run.code).toBe(2);
  return run.stderr
    .split('\n')
    .filter((l) => l.startsWith('error: '))
    .map((l) => l.slice('error: '.length));
}

/** 1-based number of the line of `yaml` that starts with `prefix`. */
function lineOf(yaml: string, prefix: string): number {
  const index = yaml.split('\n').findIndex((l) => l.startsWith(prefix));
  if (index === -1) throw new Error(`no line starting with '${prefix}'`);
  return index + 1;
}

let holding: HoldingUpstream;

beforeAll(async () => {
  await ensureBuilt();
  holding = await startHoldingUpstream();
}, 180_000);

afterEach(async () => {
  holding?.release();
  for (const c of open.splice(0)) c.socket.destroy();
  for (const s of sessions.splice(0)) s.destroy();
});

afterAll(async () => {
  await killAll();
  await holding?.upstream.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe.each([2, 1] as const)('workers: %i', (workers) => {
  afterEach(killAll);

  test('SIGHUP applies a new m.server and an added name; the HTTP/1.1 long poll and the HTTP/2 stream in flight complete on their connections', async () => {
    const before: Spec = { serverName: 'localhost', upstream: holding.upstream.url, mServer: OLD_M_SERVER, workers };
    const r = await startEdge(before);
    expect(await mServerOnNewConnections(r)).toEqual(Array(4).fill(OLD_M_SERVER));
    expect((await handshake(r.port, { servername: 'example.com', ca: r.ca })).authorized).toBe(false);

    // In flight: a long poll on a kept-alive HTTP/1.1 connection and a stream of an HTTP/2 session.
    const h1 = await openConn(r.port, r.ca, 'localhost');
    const h1Serial = h1.leaf().serialNumber;
    const h1Poll = h1.get(`${SYNC}?timeout=60000&since=h1`, 'localhost');
    const session = connectH2(r.port, r.ca);
    sessions.push(session);
    const h2Poll = h2request({ session, port: r.port, ca: r.ca, path: `${SYNC}?timeout=60000&since=h2` });
    await waitFor('both long polls held by the upstream', () => holding.held.length === 2);

    // The new config: example.com (delegating to localhost) is added, m.server changes.
    rewrite(r, yamlFor({ ...before, serverName: 'example.com', hostname: 'localhost', mServer: NEW_M_SERVER }, r.port));
    const since = r.edge.logs.length;
    const outcome = await sighup(r);
    expect(outcome).toMatchObject({
      msg: RELOADED,
      level: 'info',
      pid: r.edge.pid,
      source: r.config,
      changes: ['names added: example.com', '/.well-known/matrix/server', 'server name: example.com'],
      deferred: [],
    });

    // New connections get the new body while the polls are still held.
    expect(holding.held.map((h) => h.target).sort()).toEqual([`${SYNC}?timeout=60000&since=h1`, `${SYNC}?timeout=60000&since=h2`]);
    expect(await mServerOnNewConnections(r)).toEqual(Array(4).fill(NEW_M_SERVER));

    // The added name: a certificate for it from the local CA, on every data-plane process, and served.
    await certificateInEveryDataPlane(r, since, 'example.com');
    const root = new X509Certificate(r.ca);
    for (let i = 0; i < 4; i++) {
      const hello = await handshake(r.port, { servername: 'example.com', ca: r.ca });
      expect([hello.authorized, hello.authorizationError]).toEqual([true, null]);
      const leaf = new X509Certificate(hello.cert.raw);
      expect(leaf.checkHost('example.com')).toBe('example.com');
      expect(leaf.checkIssued(root)).toBe(true);
    }
    expect(await mServerOnNewConnections(r, 2, 'example.com')).toEqual([NEW_M_SERVER, NEW_M_SERVER]);

    // Released after the reload: both polls complete, whole, on the connections they started on.
    holding.release();
    expect(await h1Poll).toMatchObject({ status: 200, body: SYNC_BODY });
    expect((await h2Poll).status).toBe(200);
    expect((await h2Poll).body.toString('utf8')).toBe(SYNC_BODY);
    expect(h1.leaf().serialNumber).toBe(h1Serial);
    const again = await h1.get('/_matrix/client/versions?again=h1', 'localhost');
    expect(again?.status).toBe(200);
    expect(JSON.parse(again!.body)).toMatchObject({ target: '/_matrix/client/versions?again=h1' });
    expect(session.closed || session.destroyed).toBe(false);
    const h2Again = await h2request({ session, port: r.port, ca: r.ca, path: '/_matrix/client/versions?again=h2' });
    expect([h2Again.status, h2Again.json().target]).toEqual([200, '/_matrix/client/versions?again=h2']);
    expectNoRestart(r);
  });
});

describe('a broken config on reload (workers: 1)', () => {
  let r: Running;
  const good: Spec = { serverName: 'localhost', upstream: 'http://127.0.0.1:9', mServer: OLD_M_SERVER, workers: 1 };
  const changed = yamlFor({ ...good, mServer: NEW_M_SERVER }, 0);

  beforeAll(async () => {
    r = await startEdge(good);
  });
  afterAll(killAll);

  const brokenCases = [
    {
      what: 'a YAML syntax error',
      yaml: (port: number) => yamlFor({ ...good, mServer: NEW_M_SERVER }, port).replace(`well_known: { server: "${NEW_M_SERVER}" }`, `well_known: { server: "${NEW_M_SERVER}" ]`),
      /** Where the error points: the ']' that should close the flow map. */
      at: `:${lineOf(changed, 'well_known:')}:${`well_known: { server: "${NEW_M_SERVER}" ]`.length}: YAML syntax error: `,
    },
    {
      what: 'an unknown key',
      yaml: (port: number) => yamlFor({ ...good, mServer: NEW_M_SERVER }, port).replace('well_known:', 'well_knwn:'),
      at: `:${lineOf(changed, 'well_known:')}:1 well_knwn: unknown key 'well_knwn' (did you mean 'well_known'?)`,
    },
  ];

  test.each(brokenCases)('$what: SIGHUP logs the errors with file and line, the old config keeps serving; `reload` exits 2 with them', async ({ yaml, at }) => {
    rewrite(r, yaml(r.port));
    const expected = await checkErrors(r.config);
    expect(expected[0]!.startsWith(`${r.config}${at}`)).toBe(true);

    const outcome = await sighup(r);
    expect(outcome).toMatchObject({ msg: RELOAD_FAILED, level: 'error', source: r.config, errors: expected });
    expect(await mServerOnNewConnections(r, 2)).toEqual([OLD_M_SERVER, OLD_M_SERVER]);

    const since = r.edge.logs.length;
    const run = await runCli(['reload', '--config', r.config]);
    expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 2, stdout: '' });
    for (const error of expected) expect(run.stderr).toContain(error);
    expect(r.edge.logs.slice(since).filter((l) => l.msg === RELOADED)).toEqual([]);
    expect(await mServerOnNewConnections(r, 2)).toEqual([OLD_M_SERVER, OLD_M_SERVER]);
    expectNoRestart(r);
  });

  test('the file fixed: `reload` exits 0 and the change applies', async () => {
    rewrite(r, yamlFor({ ...good, mServer: NEW_M_SERVER }, r.port));
    await reloadCommand(r, ['/.well-known/matrix/server']);
    expect(await mServerOnNewConnections(r, 2)).toEqual([NEW_M_SERVER, NEW_M_SERVER]);
    expectNoRestart(r);
  });
});

describe('reload switches (workers: 2)', () => {
  afterEach(killAll);

  test('the upstream: the request in flight on the first completes, new requests reach the second', async () => {
    const second = await startUpstream();
    try {
      const spec: Spec = { serverName: 'localhost', upstream: holding.upstream.url, mServer: OLD_M_SERVER, workers: 2 };
      const r = await startEdge(spec);
      const firstSeen = holding.upstream.requests.length;
      const poll = fresh(r, `${SYNC}?timeout=60000&since=first`);
      await waitFor('the long poll held by the first upstream', () => holding.held.length === 1);

      rewrite(r, yamlFor({ ...spec, upstream: second.url }, r.port));
      await reloadCommand(r, [`upstream homeserver: ${holding.upstream.url} → ${second.url}`]);

      const targets = Array.from({ length: 6 }, (_, i) => `/_matrix/client/versions?n=${i}`);
      for (const target of targets) {
        const reply = await fresh(r, target);
        expect([reply.status, reply.json().target]).toEqual([200, target]);
      }
      expect(second.requests.map((q) => q.target)).toEqual(targets);

      holding.release();
      const answered = await poll;
      expect([answered.status, answered.body.toString('utf8')]).toEqual([200, SYNC_BODY]);
      expect(holding.upstream.requests.slice(firstSeen).map((q) => q.target)).toEqual([`${SYNC}?timeout=60000&since=first`]);
      expectNoRestart(r);
    } finally {
      await second.close();
    }
  });

  test('a removed name: its requests get 421 M_UNRECOGNIZED and its SNI the default certificate; localhost still works', async () => {
    const spec: Spec = { serverName: 'example.com', hostname: 'localhost', upstream: holding.upstream.url, mServer: OLD_M_SERVER, workers: 2 };
    const r = await startEdge(spec);
    expect(await mServerOnNewConnections(r, 2, 'example.com')).toEqual([OLD_M_SERVER, OLD_M_SERVER]);
    const localhostSerial = (await openConn(r.port, r.ca, 'localhost')).leaf().serialNumber;
    const exampleSerial = (await openConn(r.port, r.ca, 'example.com')).leaf().serialNumber;
    expect(exampleSerial).not.toBe(localhostSerial);

    rewrite(r, yamlFor({ ...spec, serverName: 'localhost', hostname: undefined }, r.port));
    expect(await sighup(r)).toMatchObject({ msg: RELOADED, level: 'info', changes: ['names removed: example.com', 'server name: localhost'], deferred: [] });

    const forwardedBefore = holding.upstream.requests.length;
    for (let i = 0; i < 4; i++) {
      const conn = await openConn(r.port, null, 'example.com');
      expect(conn.leaf().serialNumber).toBe(localhostSerial);
      for (const target of ['/.well-known/matrix/server', `/_matrix/client/versions?removed=${i}`]) {
        const answer = await conn.get(target, 'example.com');
        expect(answer).toMatchObject({ status: 421, headers: { 'content-type': 'application/json' } });
        expect(JSON.parse(answer!.body)).toMatchObject({ errcode: 'M_UNRECOGNIZED' });
      }
    }
    expect(holding.upstream.requests.length).toBe(forwardedBefore);

    expect(await mServerOnNewConnections(r, 4)).toEqual(Array(4).fill(OLD_M_SERVER));
    const kept = await fresh(r, '/_matrix/client/versions?kept=1');
    expect([kept.status, kept.json().target]).toEqual([200, '/_matrix/client/versions?kept=1']);
    expect((await openConn(r.port, r.ca, 'localhost')).leaf().serialNumber).toBe(localhostSerial);
    expectNoRestart(r);
  });
});

test('`matrix-edge reload` with no edge running on the storage: exit 1, saying so', async () => {
  const dir = tempDir('matrix-edge-reload-none-');
  dirs.push(dir);
  const [port] = await freePorts(1);
  const config = writeConfig(dir, yamlFor({ serverName: 'localhost', upstream: 'http://127.0.0.1:9', mServer: OLD_M_SERVER, workers: 1 }, port!));
  const run = await runCli(['reload', '--config', config]);
  expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 1, stdout: '' });
  expect(run.stderr).toContain(`no edge is running on the storage ${path.join(dir, 'certs')}`);
});
