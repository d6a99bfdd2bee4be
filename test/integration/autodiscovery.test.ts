/**
 * docs/matrix.md S2 19: matrix-js-sdk's AutoDiscovery.findClientConfig(domain) against the edge (real TLS,
 * a fetch that trusts only the local CA) reports m.homeserver SUCCESS. matrix-js-sdk is ESM-only, so
 * it runs in a child process (test/support/proc-autodiscovery.mjs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { freePorts } from '../support/proc-edge';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { echo, startUpstream, type Upstream } from '../support/upstream';

const SCRIPT = path.join(__dirname, '../support/proc-autodiscovery.mjs');

let upstream: Upstream;
let edge: TestEdge;
let port: number;
let caFile: string;
const dirs: string[] = [];
const children = new Set<ChildProcess>();

const VERSIONS = { versions: ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'], unstable_features: {} };

function answerVersions(status: number, body: unknown): void {
  upstream.behaviour = (req, res, record) => {
    if (req.url !== '/_matrix/client/versions') return echo(req, res, record);
    void record().then(() => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  };
}

interface Discovery {
  config: Record<string, { state: string; error: string | null; base_url: string | null }>;
  fetched: string[];
  connects: string[];
}

function discover(domain: string): Promise<Discovery> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, domain, String(port), caFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (code !== 0 || line === undefined) {
        reject(new Error(`proc-autodiscovery exited ${code ?? signal}\nstdout: ${stdout}\nstderr: ${stderr}`));
        return;
      }
      resolve(JSON.parse(line.slice('RESULT '.length)) as Discovery);
    });
  });
}

beforeAll(async () => {
  upstream = await startUpstream();
  [port] = (await freePorts(1)) as [number];
  const dir = tempDir('matrix-edge-autodiscovery-');
  dirs.push(dir);
  // Real ports (keepPorts): the well-known base_url must carry the port the edge listens on.
  edge = await startTestEdge(
    `server_name: localhost
hostname: localhost
listen: { https: [${port}], http: null, address: [127.0.0.1] }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
`,
    { dir, keepPorts: true },
  );
  expect(edge.httpsPorts).toEqual([port]);
  caFile = path.join(dir, 'ca.pem');
  fs.writeFileSync(caFile, edge.ca);
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await edge?.stop(0);
  await upstream?.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

test('findClientConfig("localhost:PORT") → m.homeserver SUCCESS with the edge\'s base_url', async () => {
  answerVersions(200, VERSIONS);
  const before = upstream.requests.length;
  const result = await discover(`localhost:${port}`);
  expect(result.config['m.homeserver']).toEqual({ state: 'SUCCESS', error: null, base_url: `https://localhost:${port}` });
  expect(result.fetched).toEqual([
    `https://localhost:${port}/.well-known/matrix/client`,
    `https://localhost:${port}/_matrix/client/versions`,
  ]);
  expect(new Set(result.connects)).toEqual(new Set([`localhost:${port}`]));
  // The well-known was answered by the edge itself; /versions went through it to the homeserver.
  const reached = upstream.requests.slice(before);
  expect(reached.map((r) => `${r.method} ${r.target}`)).toEqual(['GET /_matrix/client/versions']);
  expect(reached[0]!.headers['x-forwarded-proto']).toBe('https');
  expect(reached[0]!.headers.host).toBe(`localhost:${port}`);
}, 30_000);

test('control: when the homeserver does not answer /versions, discovery fails (the SUCCESS above is earned)', async () => {
  answerVersions(404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  const result = await discover(`localhost:${port}`);
  expect(result.config['m.homeserver']!.state).toBe('FAIL_ERROR');
  expect(result.config['m.homeserver']!.base_url).toBe(`https://localhost:${port}`);
}, 30_000);
