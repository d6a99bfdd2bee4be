/**
 * docs/matrix.md S2 23: long polls. `/sync?timeout=30000` answered after 35 s is relayed with the default
 * upstream timeout (≥ 300 s); the timeout is configurable (a shorter one gives a Matrix JSON 504).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadConfigText } from '../../src/config/load';
import { h2request, request } from '../support/client';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { echo, startUpstream, type Upstream } from '../support/upstream';

let upstream: Upstream;
const edges: TestEdge[] = [];
const dirs: string[] = [];
const timers = new Set<NodeJS.Timeout>();

/** A sync response of some size, so truncation would show. */
const SYNC_BODY = Buffer.from(
  JSON.stringify({
    next_batch: 's72595_4483_1934',
    rooms: {
      join: Object.fromEntries(
        Array.from({ length: 200 }, (_, i) => [
          `!room${i}:example.com`,
          { timeline: { events: [{ type: 'm.room.message', content: { body: `message ${i} ✓ é`, msgtype: 'm.text' } }] } },
        ]),
      ),
    },
  }),
);
const SYNC_SHA = createHash('sha256').update(SYNC_BODY).digest('hex');

/** Upstream answers /sync after `delayMs`; everything else is echoed. */
function answerSyncAfter(delayMs: number): void {
  upstream.behaviour = (req, res, record) => {
    if (!req.url!.startsWith('/_matrix/client/v3/sync')) return echo(req, res, record);
    void record().then(() => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': SYNC_BODY.length });
        res.end(SYNC_BODY);
      }, delayMs);
      timers.add(timer);
    });
  };
}

async function edgeWith(proxy: string): Promise<TestEdge> {
  const dir = tempDir('matrix-edge-longpoll-');
  dirs.push(dir);
  const edge = await startTestEdge(
    `server_name: localhost
listen: { https: [8443], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
${proxy}`,
    { dir },
  );
  edges.push(edge);
  return edge;
}

beforeAll(async () => {
  upstream = await startUpstream();
});

afterAll(async () => {
  for (const t of timers) clearTimeout(t);
  await Promise.all(edges.map((e) => e.stop(0)));
  await upstream.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

test('the default upstream timeout is at least 300 s', () => {
  const dir = tempDir('matrix-edge-longpoll-');
  dirs.push(dir);
  const result = loadConfigText('server_name: example.com\n', path.join(dir, 'matrix-edge.yaml'), dir);
  if (!result.ok) throw new Error(`minimal config rejected: ${JSON.stringify(result.errors)}`);
  expect(result.plan.upstreams).toHaveLength(1);
  expect(result.plan.upstreams[0]!.timeoutMs).toBeGreaterThanOrEqual(300_000);
});

test(
  'a /sync long poll answered after 35 s is relayed intact with the default timeout (HTTP/1.1 and HTTP/2)',
  async () => {
    const edge = await edgeWith('');
    expect(edge.plan.upstreams[0]!.timeoutMs).toBeGreaterThanOrEqual(300_000);
    answerSyncAfter(35_000);
    const port = edge.httpsPorts[0]!;
    const target = '/_matrix/client/v3/sync?timeout=30000&since=s72594_4483_1934';
    const started = performance.now();
    const [h1, h2] = await Promise.all([
      request({ port, ca: edge.ca, path: target, headers: { authorization: 'Bearer syt_a' } }),
      h2request({ port, ca: edge.ca, path: target, headers: { authorization: 'Bearer syt_b' } }),
    ]);
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(34_900);
    for (const reply of [h1, h2]) {
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toBe('application/json');
      expect(reply.body.length).toBe(SYNC_BODY.length);
      expect(createHash('sha256').update(reply.body).digest('hex')).toBe(SYNC_SHA);
    }
    const syncs = upstream.requests.filter((r) => r.target.startsWith('/_matrix/client/v3/sync'));
    expect(syncs.map((r) => r.target)).toEqual([target, target]);
  },
  60_000,
);

test('the upstream timeout is configurable: 2 s, answered after 3 s → Matrix JSON 504', async () => {
  const edge = await edgeWith('proxy: { upstream_timeout: 2s }\n');
  expect(edge.plan.upstreams[0]!.timeoutMs).toBe(2000);
  answerSyncAfter(3000);
  const started = performance.now();
  const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, path: '/_matrix/client/v3/sync?timeout=30000' });
  const took = performance.now() - started;
  expect(reply.status).toBe(504);
  expect(reply.headers['content-type']).toBe('application/json');
  expect(reply.json()).toMatchObject({ errcode: 'M_UNKNOWN' });
  expect(took).toBeGreaterThanOrEqual(1900);
  expect(took).toBeLessThan(3000);
}, 15_000);
