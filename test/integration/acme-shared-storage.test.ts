/**
 * matrix-edge processes sharing one storage directory, and crashes in the middle of ACME issuance,
 * with the real CLI (`matrix-edge start`, child processes) against a real Pebble behind
 * test/support/acme-front.ts (which records every newOrder):
 *
 *  1. Two edges started together on one storage, behind one HTTP-01 address (a test load balancer
 *     on Pebble's validation port asks edge A for the challenge answer, then edge B), order each
 *     name exactly once and end up serving the same certificate; the stored ACME account key and
 *     account URL belong together.
 *  2. An edge SIGKILLed at several points of its first issuance leaves storage that is consistent
 *     (every stored certificate loads, or there is none; the account key parses); the next start
 *     takes over the dead process's locks at once, reuses the account key and gets both
 *     certificates.
 *  3. A lock held by a live foreign process (test/support/proc-lock-holder.js) keeps the edge from
 *     ordering that name until the lock is released, or its holder dies.
 *
 * 1 and 3 also run in one process: two edges (or an edge and the test) sharing one in-memory
 * Storage (test/support/memory-storage.ts, injected through EdgeOptions.storage) — the same
 * properties hold on any storage, not only on files.
 *
 * Observations (who ordered, who waited) are printed with console.log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as acme from 'acme-client';
import { accountKeys, acmeIssuerId, issueLockKey } from '../../src/store/keys';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { startAcmeFront, type AcmeFront } from '../support/acme-front';
import { startTestEdge, type TestEdge } from '../support/edge';
import { MemoryStorage } from '../support/memory-storage';
import { freePort, pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import {
  ensureBuilt,
  freePorts,
  killAll,
  startEdgeProcess,
  tempDir,
  writeConfig,
  type EdgeProcess,
  type LogLine,
} from '../support/proc-edge';

jest.setTimeout(60_000);

const SERVER_NAME = 'example.com';
const HOSTNAME = 'matrix.example.com';
const NAMES = [SERVER_NAME, HOSTNAME] as const;
const EMAIL = 'test@example.com';

const WAITING = 'another process is obtaining this certificate; waiting for it';
const ALREADY_STORED = 'a renewed certificate was already in storage; no new order';
const ORDER_CREATED = 'ACME order created';

const HOLDER_SCRIPT = path.join(__dirname, '../support/proc-lock-holder.js');

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---- what an edge serves ---------------------------------------------------------------------

interface Served {
  readonly authorized: boolean;
  readonly error: string | null;
  readonly serial: string;
  readonly leaf: X509Certificate;
}

/** One TLS handshake with this SNI; null when the handshake fails (no certificate yet). */
function served(port: number, servername: string, ca: string): Promise<Served | null> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const peer = socket.getPeerCertificate(false);
      if (peer.raw === undefined) {
        socket.destroy();
        resolve(null);
        return;
      }
      const leaf = new X509Certificate(peer.raw);
      const result: Served = {
        authorized: socket.authorized,
        error: socket.authorizationError == null ? null : String(socket.authorizationError),
        serial: leaf.serialNumber,
        leaf,
      };
      socket.end();
      resolve(result);
    });
    socket.setTimeout(2000, () => {
      socket.destroy();
      resolve(null);
    });
    socket.on('error', () => resolve(null));
  });
}

/**
 * Polls until `port` serves, for every name, a certificate for that name that verifies against
 * `ca`; name → serial. Rejects after `timeoutMs` with what was served last.
 */
async function waitServing(port: number, names: readonly string[], ca: string, timeoutMs: number, label: string): Promise<Map<string, string>> {
  const deadline = Date.now() + timeoutMs;
  const last = new Map<string, string>();
  for (;;) {
    const serials = new Map<string, string>();
    for (const name of names) {
      const got = await served(port, name, ca);
      if (got === null) last.set(name, 'handshake failed');
      else if (!got.authorized) last.set(name, `not verified: ${got.error}`);
      else if (got.leaf.checkHost(name) !== name) last.set(name, `does not cover ${name}: ${got.leaf.subjectAltName}`);
      else serials.set(name, got.serial);
    }
    if (serials.size === names.length) return serials;
    if (Date.now() > deadline) {
      throw new Error(`${label} (https ${port}) did not serve verified certificates within ${timeoutMs} ms: ${JSON.stringify(Object.fromEntries(last))}`);
    }
    await sleep(200);
  }
}

// ---- configuration, logs, storage ------------------------------------------------------------

interface EdgePorts {
  readonly https: number;
  readonly http: number;
}

function edgeYaml(ports: EdgePorts, storage: string, directory: string, caRootsFile: string): string {
  return [
    `server_name: ${SERVER_NAME}`,
    `hostname: ${HOSTNAME}`,
    'listen:',
    `  https: [${ports.https}]`,
    `  http: ${ports.http}`,
    '  address: ["127.0.0.1"]',
    'tls:',
    '  issuer: acme',
    'acme:',
    `  ca: ${directory}`,
    `  ca_roots: [${JSON.stringify(caRootsFile)}]`,
    `  email: ${EMAIL}`,
    '  challenges: [http-01]',
    `storage: ${JSON.stringify(storage)}`,
    '',
  ].join('\n');
}

/** A log line in a few words, for the observations printed by the tests. */
function brief(label: string, line: LogLine): string {
  const fields = ['name', 'names', 'from', 'serial', 'challenge', 'holder', 'reusedKey']
    .filter((k) => line[k] !== undefined)
    .map((k) => `${k}=${JSON.stringify(line[k])}`);
  return `${label}: ${String(line.msg)} ${fields.join(' ')}`.trimEnd();
}

const NOTABLE = new Set([
  WAITING,
  ALREADY_STORED,
  ORDER_CREATED,
  'ACME challenge solved',
  'ACME certificate obtained',
  'certificate installed',
  'ACME account created; by configuring this CA you agree to its terms of service',
  'ACME account registered for the stored key',
  'another edge is serving the control socket of this storage; `matrix-edge renew` reaches that one',
]);

/** An edge's log lines: a child process's, or an in-process edge's. */
type Logged = { readonly logs: readonly LogLine[] };

function notable(label: string, edge: Logged): string[] {
  return edge.logs
    .filter((l) => NOTABLE.has(String(l.msg)) || (typeof l.level === 'number' ? l.level >= 40 : l.level !== 'info' && l.level !== 'debug'))
    .map((l) => brief(label, l));
}

/** Names of the 'ACME order created' lines an edge logged. */
function orderedNames(edge: Logged): string[] {
  return edge.logs.filter((l) => l.msg === ORDER_CREATED).flatMap((l) => (Array.isArray(l.names) ? (l.names as string[]) : []));
}

/**
 * Orders the CA created for `name` (201). A newOrder the CA refused (e.g. Pebble's random badNonce
 * rejections, which the ACME library retries at once) created nothing and is not counted.
 */
function frontOrdersFor(front: AcmeFront, name: string): number {
  return createdOrders(front).filter((o) => o.identifiers.some((i) => i.value === name)).length;
}

/** Every newOrder request for `name`, whatever the CA answered. */
function orderRequestsFor(front: AcmeFront, name: string): number {
  return front.orders.filter((o) => o.identifiers.some((i) => i.value === name)).length;
}

function createdOrders(front: AcmeFront): AcmeFront['orders'] {
  return front.orders.filter((o) => o.status === 201);
}

/** Every file under `dir`, relative, sorted ('' when dir does not exist). */
function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[])
    // A running edge may be replacing a file meanwhile: a temp file gone by now is not listed.
    .filter((rel) => fs.statSync(path.join(dir, rel), { throwIfNoEntry: false })?.isFile() === true)
    .sort();
}

/**
 * Checks what a crashed edge left in `storage`: for each certificates/<issuer>/<name>/ either no
 * .crt, or a .crt and .key that the CertificateStore loads; any other file a staged chain or a dot-temp file; the account key,
 * if any, parses; the account metadata, if any, is JSON with a location. Returns a description.
 */
async function checkConsistentStorage(storage: string, issuerId: string): Promise<{ certificates: string[]; accountKey: string | null; accountLocation: string | null; files: string[] }> {
  const store = new CertificateStore(new FileStorage(storage));
  const certificates: string[] = [];
  const issuerDir = path.join(storage, 'certificates', issuerId);
  const dirs = fs.existsSync(issuerDir) ? fs.readdirSync(issuerDir) : [];
  for (const name of dirs) {
    expect(NAMES).toContain(name);
    const files = fs.readdirSync(path.join(issuerDir, name)).sort();
    for (const file of files) {
      // The three files of the layout, the staged chain of an interrupted replacement ("<name>.new.crt",
      // which the reader adopts when it matches the key), or a temp file of an interrupted atomic
      // write (".<target>.<hex>.tmp").
      const known = [`${name}.crt`, `${name}.key`, `${name}.json`, `${name}.new.crt`].includes(file);
      const temp = /^\.[^/]+\.[0-9a-f]{12}\.tmp$/.test(file);
      expect({ file, known: known || temp }).toEqual({ file, known: true });
    }
    if (files.includes(`${name}.crt`)) {
      expect(files).toContain(`${name}.key`);
      const stored = await store.loadCertificate(issuerId, name);
      expect(stored).not.toBeNull();
      expect(stored!.leaf.checkHost(name)).toBe(name);
      certificates.push(name);
    } else {
      await expect(store.loadCertificate(issuerId, name)).resolves.toBeNull();
    }
  }
  const account = accountKeys(issuerId, EMAIL);
  const keyFile = path.join(storage, account.key);
  const metaFile = path.join(storage, account.meta);
  let accountKey: string | null = null;
  if (fs.existsSync(keyFile)) {
    accountKey = fs.readFileSync(keyFile, 'utf8');
    expect(() => createPrivateKey(accountKey!)).not.toThrow();
  }
  let accountLocation: string | null = null;
  if (fs.existsSync(metaFile)) {
    const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as { location?: unknown };
    expect(typeof meta.location).toBe('string');
    accountLocation = meta.location as string;
    // The key is written before the account is registered: metadata never comes without it.
    expect(accountKey).not.toBeNull();
  }
  return { certificates: certificates.sort(), accountKey, accountLocation, files: listFiles(storage) };
}

/** The account URL the CA has for `keyPem` (newAccount with onlyReturnExisting), or the CA's error. */
async function accountUrlOfKey(directory: string, caRootsFile: string, keyPem: string): Promise<string> {
  const agent = new https.Agent({ ca: fs.readFileSync(caRootsFile, 'utf8') });
  const previous = acme.axios.defaults.httpsAgent as unknown;
  acme.axios.defaults.httpsAgent = agent;
  try {
    const client = new acme.Client({ directoryUrl: directory, accountKey: keyPem });
    await client.createAccount({ onlyReturnExisting: true });
    return client.getAccountUrl();
  } catch (err) {
    return `error: ${(err as Error).message}`;
  } finally {
    acme.axios.defaults.httpsAgent = previous;
    agent.destroy();
  }
}

// ---- the HTTP-01 "load balancer" -------------------------------------------------------------

interface Balancer {
  /** Where it listens (127.0.0.1): Pebble's `httpPort`. */
  readonly port: number;
  /** Tried in this order; set once the edges' ports are known. */
  backends: ReadonlyArray<{ label: string; port: number }>;
  /** Which backend answered each challenge request (200), or 'none'. */
  readonly answers: Array<{ token: string; host: string | undefined; backend: string }>;
  close(): Promise<void>;
}

function forward(port: number, req: http.IncomingMessage): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const out = http.request(
      { host: '127.0.0.1', port, method: 'GET', path: req.url, headers: { host: req.headers.host ?? '' }, agent: false, timeout: 3000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    out.on('timeout', () => out.destroy(new Error('backend timed out')));
    out.on('error', reject);
    out.end();
  });
}

/**
 * Listens (on a port of its own choosing, so nothing else can take it) where Pebble validates
 * HTTP-01, and forwards each GET /.well-known/acme-challenge/<token> to the backends in turn until
 * one does not answer 404: two edges behind one address.
 */
async function startBalancer(): Promise<Balancer> {
  const answers: Balancer['answers'] = [];
  let backends: Balancer['backends'] = [];
  const server = http.createServer((req, res) => {
    void (async () => {
      const prefix = '/.well-known/acme-challenge/';
      if (req.method !== 'GET' || !(req.url ?? '').startsWith(prefix)) {
        res.writeHead(404, { 'content-length': 0 }).end();
        return;
      }
      for (const backend of backends) {
        const got = await forward(backend.port, req).catch(() => null);
        if (got === null || got.status === 404) continue;
        answers.push({ token: req.url!.slice(prefix.length), host: req.headers.host, backend: backend.label });
        res.writeHead(got.status, { 'content-type': String(got.headers['content-type'] ?? 'text/plain'), 'content-length': got.body.length });
        res.end(got.body);
        return;
      }
      answers.push({ token: req.url!.slice(prefix.length), host: req.headers.host, backend: 'none' });
      res.writeHead(404, { 'content-length': 0 }).end();
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    get backends() {
      return backends;
    },
    set backends(list) {
      backends = list;
    },
    answers,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ---- a live foreign lock holder ---------------------------------------------------------------

interface LockHolderProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the first stdout line starting with `prefix` (past or future). */
  line(prefix: string, timeoutMs?: number): Promise<string>;
  send(command: string): void;
  readonly exited: Promise<void>;
}

const holders = new Set<ChildProcess>();

function startLockHolder(storage: string, keys: readonly string[]): LockHolderProcess {
  const child = spawn(process.execPath, [HOLDER_SCRIPT, JSON.stringify({ storage, keys })], { stdio: ['pipe', 'pipe', 'pipe'] });
  holders.add(child);
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    for (const l of [...listeners]) l();
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  void exited.then(() => holders.delete(child));
  return {
    child,
    pid: child.pid!,
    exited,
    send: (command) => child.stdin!.write(`${command}\n`),
    line(prefix, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const found = stdout.split('\n').find((l) => l.startsWith(prefix));
          if (found === undefined) return false;
          listeners.delete(check);
          clearTimeout(timer);
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`lock holder printed no '${prefix}' within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
        }, timeoutMs);
        if (!check()) listeners.add(check);
      });
    },
  };
}

// ---- suite -----------------------------------------------------------------------------------

const run = pebbleInstalled() ? describe : describe.skip;

run('ACME with a storage directory shared between processes (real CLI, Pebble)', () => {
  let pebble: RunningPebble | null = null;
  let front: AcmeFront | null = null;
  let balancer: Balancer | null = null;
  const edges: EdgeProcess[] = [];
  const dirs: string[] = [];

  beforeAll(async () => {
    await ensureBuilt();
  }, 180_000);

  /** A fresh storage, ports, a Pebble validating on them behind the recording front, and one edge's config. */
  async function oneEdgeSetup(): Promise<{ ca: RunningPebble; acmeFront: AcmeFront; storage: string; ports: EdgePorts; issuerId: string; config: string }> {
    const dir = newDir();
    const storage = path.join(dir, 'storage');
    const [httpsPort, httpPort] = (await freePorts(2)) as [number, number];
    const ports: EdgePorts = { https: httpsPort, http: httpPort };
    const ca = await startPebble({ httpPort: ports.http, tlsPort: ports.https });
    pebble = ca; // stopped by afterEach
    const acmeFront = await startAcmeFront({ pebble: ca });
    front = acmeFront;
    const config = writeConfig(dir, edgeYaml(ports, storage, acmeFront.directory, ca.caRootsFile));
    return { ca, acmeFront, storage, ports, issuerId: acmeIssuerId(acmeFront.directory), config };
  }

  afterEach(async () => {
    await Promise.all(edges.splice(0).map((e) => e.kill()));
    await Promise.all(
      [...holders].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('close', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    await balancer?.close();
    balancer = null;
    await front?.close();
    front = null;
    await pebble?.stop();
    pebble = null;
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  afterAll(async () => {
    await killAll();
  });

  function newDir(): string {
    const dir = tempDir('matrix-edge-shared-');
    dirs.push(dir);
    return dir;
  }

  function start(config: string): EdgeProcess {
    const edge = startEdgeProcess(config);
    edges.push(edge);
    return edge;
  }

  it('two edge processes started together on one storage order each name once and serve the same certificates', async () => {
    const started = Date.now();
    const dir = newDir();
    const storage = path.join(dir, 'storage');
    balancer = await startBalancer();
    pebble = await startPebble({ httpPort: balancer.port, tlsPort: await freePort() });
    front = await startAcmeFront({ pebble });
    // Pebble's own ports are bound by now: these cannot collide with them.
    const [aHttps, aHttp, bHttps, bHttp] = (await freePorts(4)) as [number, number, number, number];
    const a: EdgePorts = { https: aHttps, http: aHttp };
    const b: EdgePorts = { https: bHttps, http: bHttp };
    balancer.backends = [
      { label: 'A', port: a.http },
      { label: 'B', port: b.http },
    ];
    const issuerId = acmeIssuerId(front.directory);
    const configA = writeConfig(dir, edgeYaml(a, storage, front.directory, pebble.caRootsFile), 'a.yaml');
    const configB = writeConfig(dir, edgeYaml(b, storage, front.directory, pebble.caRootsFile), 'b.yaml');

    // Same moment, same storage, same names.
    const edgeA = start(configA);
    const edgeB = start(configB);
    await Promise.all([edgeA.waitForLog('matrix-edge is serving'), edgeB.waitForLog('matrix-edge is serving')]);

    const root = await pebble.issuingRoot();
    // Whoever waited installs after the lock (1 s polls) or through the 10 s storage poll.
    const [servedA, servedB] = await Promise.all([
      waitServing(a.https, NAMES, root, 25_000, 'edge A'),
      waitServing(b.https, NAMES, root, 25_000, 'edge B'),
    ]);
    const issuedAfter = Date.now() - started;

    const observed = [...notable('A', edgeA), ...notable('B', edgeB)];
    const orders = front.orders.map((o) => `${o.identifiers.map((i) => i.value).join(',')} → ${o.status}`);
    console.log(
      [
        `two edges on one storage (${issuedAfter} ms until both served both names):`,
        `  newOrder requests at the CA: ${JSON.stringify(orders)}`,
        `  orders logged: A ${JSON.stringify(orderedNames(edgeA))}, B ${JSON.stringify(orderedNames(edgeB))}`,
        `  challenge answers through the balancer: ${JSON.stringify(balancer.answers.map((x) => `${x.host}→${x.backend}`))}`,
        ...observed.map((l) => `  ${l}`),
      ].join('\n'),
    );

    // Exactly one order per name, over both processes.
    for (const name of NAMES) expect({ name, orders: frontOrdersFor(front, name) }).toEqual({ name, orders: 1 });
    expect(createdOrders(front)).toHaveLength(2);
    expect([...orderedNames(edgeA), ...orderedNames(edgeB)].sort()).toEqual([...NAMES].sort());
    // Both serve the same certificate per name, the stored one.
    const store = new CertificateStore(new FileStorage(storage));
    for (const name of NAMES) {
      expect({ name, a: servedA.get(name), b: servedB.get(name) }).toEqual({ name, a: servedA.get(name), b: servedA.get(name) });
      const stored = await store.loadCertificate(issuerId, name);
      expect(stored?.meta.serial).toBe(servedA.get(name));
    }
    // One edge saw the other at work: it waited for the lock, or found the certificate stored once it had the lock.
    const sawOther = [...edgeA.logs, ...edgeB.logs].filter((l) => l.msg === WAITING || l.msg === ALREADY_STORED);
    expect(sawOther.length).toBeGreaterThan(0);
    // Every challenge was answered, through the one address, by the edge that ordered that name.
    const orderedBy = new Map<string, string>([
      ...orderedNames(edgeA).map((n) => [n, 'A'] as [string, string]),
      ...orderedNames(edgeB).map((n) => [n, 'B'] as [string, string]),
    ]);
    expect(balancer.answers.length).toBeGreaterThan(0);
    for (const answer of balancer.answers) {
      const name = (answer.host ?? '').replace(/:\d+$/, '');
      expect({ name, backend: answer.backend }).toEqual({ name, backend: orderedBy.get(name) });
    }
    // Both still running; every lock released (just after the install that made the handshake pass).
    expect(edgeA.child.exitCode).toBeNull();
    expect(edgeB.child.exitCode).toBeNull();
    const locks = (): string[] => listFiles(path.join(storage, 'locks')).filter((f) => f.endsWith('.lock'));
    for (const until = Date.now() + 3000; locks().length > 0 && Date.now() < until; ) await sleep(50);
    expect(locks()).toEqual([]);

    // The stored account: its key and its URL belong to the same account at the CA.
    const createdAccounts = [...edgeA.logs, ...edgeB.logs].filter((l) => String(l.msg).startsWith('ACME account'));
    const account = accountKeys(issuerId, EMAIL);
    const keyPem = fs.readFileSync(path.join(storage, account.key), 'utf8');
    const location = (JSON.parse(fs.readFileSync(path.join(storage, account.meta), 'utf8')) as { location: string }).location;
    const keyAccount = await accountUrlOfKey(front.directory, pebble.caRootsFile, keyPem);
    console.log(
      `  accounts registered: ${createdAccounts.length} (${createdAccounts.map((l) => String(l.account)).join(', ')}); stored location ${location}; CA's account for the stored key ${keyAccount}`,
    );
    expect({ storedLocation: location, accountOfStoredKey: keyAccount }).toEqual({ storedLocation: location, accountOfStoredKey: location });
    expect(Date.now() - started).toBeLessThan(55_000);
  });

  const killPoints = [
    { label: 'right after start', msg: 'obtaining certificates in the background; listeners are already serving' },
    { label: 'at the first order', msg: ORDER_CREATED },
    { label: 'after the first challenge', msg: 'ACME challenge solved' },
    { label: 'after the first certificate was obtained', msg: 'ACME certificate obtained' },
    { label: 'after the first certificate was stored and installed', msg: 'certificate installed' },
  ];

  it.each(killPoints)('SIGKILL $label: storage stays consistent and the next start finishes the job', async ({ label, msg }) => {
    const started = Date.now();
    const { ca, acmeFront, storage, ports, issuerId, config } = await oneEdgeSetup();

    const first = start(config);
    // SIGKILL from the stdout handler itself, the moment the line arrives.
    let tail = '';
    let killedAt: number | null = null;
    const needle = `"msg":${JSON.stringify(msg)}`;
    first.child.stdout!.on('data', (chunk: string | Buffer) => {
      if (killedAt !== null) return;
      tail = (tail + chunk.toString()).slice(-4096);
      if (tail.includes(needle)) {
        killedAt = Date.now();
        first.child.kill('SIGKILL');
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([first.exited, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 20_000)))]);
    clearTimeout(timer);
    expect(exit).not.toBeNull();
    expect(exit!.signal).toBe('SIGKILL');
    expect(killedAt).not.toBeNull();

    // What the dead process left.
    const left = await checkConsistentStorage(storage, issuerId);
    const locksLeft = listFiles(path.join(storage, 'locks'));
    const ordersBefore = createdOrders(acmeFront).length;
    console.log(
      [
        `SIGKILL ${label} (at '${msg}', ${killedAt! - started} ms after the test started):`,
        `  logs of the killed edge: ${JSON.stringify(first.logs.filter((l) => NOTABLE.has(String(l.msg))).map((l) => brief('', l).slice(2)))}`,
        `  storage left: ${JSON.stringify(left.files)}`,
        `  certificates stored: ${JSON.stringify(left.certificates)}; account key ${left.accountKey === null ? 'absent' : 'present'}; account location ${left.accountLocation ?? 'absent'}`,
        `  lock files left: ${JSON.stringify(locksLeft)}; orders so far: ${ordersBefore}`,
      ].join('\n'),
    );

    // The next start on the same storage: stale locks taken over at once (their holder is dead).
    const restartAt = Date.now();
    const second = start(config);
    await second.waitForLog('matrix-edge is serving');
    const root = await ca.issuingRoot();
    const serials = await waitServing(ports.https, NAMES, root, 20_000, 'restarted edge');
    const tookMs = Date.now() - restartAt;
    console.log(
      [
        `  restart: both names served after ${tookMs} ms; orders now ${createdOrders(acmeFront).length}`,
        ...notable('restart', second).map((l) => `  ${l}`),
      ].join('\n'),
    );
    // Never waited on the dead process's locks.
    expect(second.logs.filter((l) => l.msg === WAITING)).toEqual([]);
    expect(tookMs).toBeLessThan(20_000);
    // A certificate stored before the crash is served as is, not ordered again.
    for (const name of left.certificates) {
      expect(orderedNames(second)).not.toContain(name);
      expect(second.logs.some((l) => l.msg === 'certificate installed' && l.name === name && l.from === 'storage')).toBe(true);
    }
    for (const name of NAMES) {
      if (!left.certificates.includes(name)) expect(orderedNames(second)).toContain(name);
    }
    // The account key written before the crash is reused.
    const account = accountKeys(issuerId, EMAIL);
    const keyNow = fs.readFileSync(path.join(storage, account.key), 'utf8');
    if (left.accountKey !== null) expect(keyNow).toBe(left.accountKey);
    if (left.accountLocation !== null) {
      expect((JSON.parse(fs.readFileSync(path.join(storage, account.meta), 'utf8')) as { location: string }).location).toBe(left.accountLocation);
    }
    expect(second.logs.filter((l) => String(l.msg).startsWith('ACME account created'))).toHaveLength(left.accountKey === null ? 1 : 0);
    // Everything stored now loads and is what is served; no lock left, no stale lock file kept.
    const after = await checkConsistentStorage(storage, issuerId);
    expect(after.certificates).toEqual([...NAMES].sort());
    const store = new CertificateStore(new FileStorage(storage));
    for (const name of NAMES) expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(serials.get(name));
    // Locks of the names it ordered were taken over and released; no takeover debris. A name it
    // did not have to order keeps the dead process's lock file until someone needs that lock.
    const locksDir = path.join(storage, 'locks');
    const orderedLocks = orderedNames(second).map((name) => `${issueLockKey(issuerId, name)}.lock`);
    // The restarted edge may still hold a lock for a moment (its first look at the account, for
    // renewal information, comes after it serves): wait until it holds none.
    const heldBySecond = (f: string): boolean => {
      const text = fs.existsSync(path.join(locksDir, f)) ? fs.readFileSync(path.join(locksDir, f), 'utf8') : '';
      try {
        return (JSON.parse(text) as { pid?: number }).pid === second.pid;
      } catch {
        return false;
      }
    };
    for (const until = Date.now() + 3000; Date.now() < until && listFiles(locksDir).some((f) => orderedLocks.includes(f) || heldBySecond(f)); ) await sleep(50);
    const locksNow = listFiles(locksDir);
    expect(locksNow.filter((f) => !f.endsWith('.lock'))).toEqual([]);
    for (const file of orderedLocks) expect(locksNow).not.toContain(file);
    for (const file of locksNow) {
      expect((JSON.parse(fs.readFileSync(path.join(locksDir, file), 'utf8')) as { pid: number }).pid).toBe(first.pid);
    }
    expect(second.child.exitCode).toBeNull();
  });

  it('a lock held by a live process: no order until it is released, or its holder dies', async () => {
    const { ca, acmeFront, storage, ports, issuerId, config } = await oneEdgeSetup();
    const keys = Object.fromEntries(NAMES.map((n) => [n, issueLockKey(issuerId, n)])) as Record<(typeof NAMES)[number], string>;

    const holder = startLockHolder(storage, [keys[SERVER_NAME], keys[HOSTNAME]]);
    await holder.line('ACQUIRED');
    for (const name of NAMES) expect(fs.existsSync(path.join(storage, 'locks', `${keys[name]}.lock`))).toBe(true);

    const edge = start(config);
    await edge.waitForLog('matrix-edge is serving');
    // It waits for both names, naming the holder, and orders nothing while the holder lives.
    const deadline = Date.now() + 10_000;
    while (edge.logs.filter((l) => l.msg === WAITING).length < 2 && Date.now() < deadline) await sleep(50);
    const waiting = edge.logs.filter((l) => l.msg === WAITING);
    expect(waiting.map((l) => l.name).sort()).toEqual([...NAMES].sort());
    for (const line of waiting) expect((line.holder as { pid?: unknown } | null)?.pid).toBe(holder.pid);
    await sleep(3000); // three of the waiter's lock polls
    expect(acmeFront.orders).toEqual([]); // not even a refused newOrder request
    expect(orderedNames(edge)).toEqual([]);

    // Released by its live holder: that name is ordered; the other stays held.
    const releasedAt = Date.now();
    holder.send(`release ${keys[SERVER_NAME]}`);
    await holder.line(`RELEASED ${keys[SERVER_NAME]}`);
    const root = await ca.issuingRoot();
    await waitServing(ports.https, [SERVER_NAME], root, 10_000, 'edge');
    const firstMs = Date.now() - releasedAt;
    expect(frontOrdersFor(acmeFront, SERVER_NAME)).toBe(1);
    expect(orderRequestsFor(acmeFront, HOSTNAME)).toBe(0);
    await sleep(1500);
    expect(orderRequestsFor(acmeFront, HOSTNAME)).toBe(0);

    // The holder dies without releasing: its lock is taken over at once (dead pid), the name ordered.
    const killedAt = Date.now();
    holder.child.kill('SIGKILL');
    await holder.exited;
    expect(fs.existsSync(path.join(storage, 'locks', `${keys[HOSTNAME]}.lock`))).toBe(true);
    const serials = await waitServing(ports.https, NAMES, root, 10_000, 'edge');
    const secondMs = Date.now() - killedAt;
    console.log(
      [
        `live lock holder pid ${holder.pid}: ${SERVER_NAME} served ${firstMs} ms after the release, ${HOSTNAME} ${secondMs} ms after the holder was killed`,
        ...notable('edge', edge).map((l) => `  ${l}`),
      ].join('\n'),
    );
    for (const name of NAMES) expect({ name, orders: frontOrdersFor(acmeFront, name) }).toEqual({ name, orders: 1 });
    expect(firstMs).toBeLessThan(10_000);
    expect(secondMs).toBeLessThan(10_000);
    const store = new CertificateStore(new FileStorage(storage));
    for (const name of NAMES) expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(serials.get(name));
    const locks = (): string[] => listFiles(path.join(storage, 'locks')).filter((f) => f.endsWith('.lock'));
    for (const until = Date.now() + 3000; locks().length > 0 && Date.now() < until; ) await sleep(50);
    expect(locks()).toEqual([]);
  });
});

run('ACME with one storage shared by edges in one process (in-memory storage, Pebble)', () => {
  let pebble: RunningPebble | null = null;
  let front: AcmeFront | null = null;
  let balancer: Balancer | null = null;
  const edges: TestEdge[] = [];
  const dirs: string[] = [];

  afterEach(async () => {
    await Promise.all(edges.splice(0).map((e) => e.stop(0).catch(() => undefined)));
    await balancer?.close();
    balancer = null;
    await front?.close();
    front = null;
    await pebble?.stop();
    pebble = null;
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  function newDir(): string {
    const dir = tempDir('matrix-edge-shared-mem-');
    dirs.push(dir);
    return dir;
  }

  /** An edge in this process on `ports`, its data in `storage` (its own directory keeps only the control socket). */
  async function start(ports: EdgePorts, storage: MemoryStorage, directory: string, caRootsFile: string): Promise<TestEdge> {
    const dir = newDir();
    const edge = await startTestEdge(edgeYaml(ports, path.join(dir, 'storage'), directory, caRootsFile), { dir, keepPorts: true, edge: { storage } });
    edges.push(edge);
    return edge;
  }

  /** Every issuance lock of `names` is free (released just after the install that made the handshake pass). */
  async function locksReleased(storage: MemoryStorage, issuerId: string): Promise<void> {
    const held = (): string[] => NAMES.filter((name) => storage.holder(issueLockKey(issuerId, name)) !== null);
    for (const until = Date.now() + 3000; held().length > 0 && Date.now() < until; ) await sleep(50);
    expect(held()).toEqual([]);
  }

  it('two edges started together on one MemoryStorage order each name once and serve the same certificates', async () => {
    const started = Date.now();
    const storage = new MemoryStorage();
    balancer = await startBalancer();
    pebble = await startPebble({ httpPort: balancer.port, tlsPort: await freePort() });
    front = await startAcmeFront({ pebble });
    const [aHttps, aHttp, bHttps, bHttp] = (await freePorts(4)) as [number, number, number, number];
    const a: EdgePorts = { https: aHttps, http: aHttp };
    const b: EdgePorts = { https: bHttps, http: bHttp };
    balancer.backends = [
      { label: 'A', port: a.http },
      { label: 'B', port: b.http },
    ];
    const issuerId = acmeIssuerId(front.directory);

    // Same moment, same storage, same names.
    const [edgeA, edgeB] = await Promise.all([start(a, storage, front.directory, pebble.caRootsFile), start(b, storage, front.directory, pebble.caRootsFile)]);
    const root = await pebble.issuingRoot();
    const [servedA, servedB] = await Promise.all([waitServing(a.https, NAMES, root, 25_000, 'edge A'), waitServing(b.https, NAMES, root, 25_000, 'edge B')]);
    console.log(
      [
        `two in-process edges on one MemoryStorage (${Date.now() - started} ms until both served both names):`,
        `  orders logged: A ${JSON.stringify(orderedNames(edgeA))}, B ${JSON.stringify(orderedNames(edgeB))}`,
        ...[...notable('A', edgeA), ...notable('B', edgeB)].map((l) => `  ${l}`),
      ].join('\n'),
    );

    // Exactly one order per name, over both edges.
    for (const name of NAMES) expect({ name, orders: frontOrdersFor(front, name) }).toEqual({ name, orders: 1 });
    expect(createdOrders(front)).toHaveLength(2);
    expect([...orderedNames(edgeA), ...orderedNames(edgeB)].sort()).toEqual([...NAMES].sort());
    // Both serve the same certificate per name, the stored one.
    const store = new CertificateStore(storage);
    for (const name of NAMES) {
      expect({ name, a: servedA.get(name), b: servedB.get(name) }).toEqual({ name, a: servedA.get(name), b: servedA.get(name) });
      expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(servedA.get(name));
    }
    // One edge saw the other at work: it waited for the lock, or found the certificate stored once it had the lock.
    expect([...edgeA.logs, ...edgeB.logs].filter((l) => l.msg === WAITING || l.msg === ALREADY_STORED).length).toBeGreaterThan(0);
    // Every challenge was answered, through the one address, by the edge that ordered that name.
    const orderedBy = new Map<string, string>([
      ...orderedNames(edgeA).map((n) => [n, 'A'] as [string, string]),
      ...orderedNames(edgeB).map((n) => [n, 'B'] as [string, string]),
    ]);
    expect(balancer.answers.length).toBeGreaterThan(0);
    for (const answer of balancer.answers) {
      const name = (answer.host ?? '').replace(/:\d+$/, '');
      expect({ name, backend: answer.backend }).toEqual({ name, backend: orderedBy.get(name) });
    }
    await locksReleased(storage, issuerId);
    // One account, registered once: the stored key and URL belong together at the CA.
    expect([...edgeA.logs, ...edgeB.logs].filter((l) => String(l.msg).startsWith('ACME account created'))).toHaveLength(1);
    const account = accountKeys(issuerId, EMAIL);
    const keyPem = (await storage.load(account.key))!.toString('utf8');
    const location = (JSON.parse((await storage.load(account.meta))!.toString('utf8')) as { location: string }).location;
    expect(await accountUrlOfKey(front.directory, pebble.caRootsFile, keyPem)).toBe(location);
    // Every certificate write was made under that name's lock (a fencing storage would have checked it).
    expect(storage.writes.filter((w) => w.key.startsWith('certificates/') && w.key.endsWith('.crt') && w.token === null)).toEqual([]);
  });

  it('a lock held in the shared storage: no order until it is released', async () => {
    const storage = new MemoryStorage();
    const [httpsPort, httpPort] = (await freePorts(2)) as [number, number];
    const ports: EdgePorts = { https: httpsPort, http: httpPort };
    pebble = await startPebble({ httpPort: ports.http, tlsPort: ports.https });
    front = await startAcmeFront({ pebble });
    const issuerId = acmeIssuerId(front.directory);
    const held = new Map(await Promise.all(NAMES.map(async (name) => [name, await storage.lock(issueLockKey(issuerId, name), { purpose: 'the test' })] as const)));

    const edge = await start(ports, storage, front.directory, pebble.caRootsFile);
    // It waits for both names, naming the holder, and orders nothing while the locks are held.
    const deadline = Date.now() + 10_000;
    while (edge.logs.filter((l) => l.msg === WAITING).length < 2 && Date.now() < deadline) await sleep(50);
    const waiting = edge.logs.filter((l) => l.msg === WAITING);
    expect(waiting.map((l) => l.name).sort()).toEqual([...NAMES].sort());
    for (const line of waiting) expect((line.holder as { pid?: unknown } | null)?.pid).toBe(process.pid);
    await sleep(1500);
    expect(front.orders).toEqual([]);
    expect(orderedNames(edge)).toEqual([]);

    // Released: that name is ordered; the other stays held.
    await held.get(SERVER_NAME)!.release();
    const root = await pebble.issuingRoot();
    await waitServing(ports.https, [SERVER_NAME], root, 10_000, 'edge');
    expect(frontOrdersFor(front, SERVER_NAME)).toBe(1);
    await sleep(1000);
    expect(orderRequestsFor(front, HOSTNAME)).toBe(0);

    await held.get(HOSTNAME)!.release();
    const serials = await waitServing(ports.https, NAMES, root, 10_000, 'edge');
    for (const name of NAMES) expect({ name, orders: frontOrdersFor(front, name) }).toEqual({ name, orders: 1 });
    const store = new CertificateStore(storage);
    for (const name of NAMES) expect((await store.loadCertificate(issuerId, name))?.meta.serial).toBe(serials.get(name));
    await locksReleased(storage, issuerId);
  });
});
