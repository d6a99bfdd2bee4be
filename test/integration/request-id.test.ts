/**
 * Request ids and per-component log levels, through a real edge (real TLS) to a recording
 * upstream: each forwarded request carries an id upstream (X-Request-Id unless configured
 * otherwise) and its access-log line names the same id; a client's own id is replaced unless the
 * client is a trusted proxy; `log.levels` quiets one component without the others.
 */
import { request } from '../support/client';
import { startTestEdge, type TestEdge } from '../support/edge';
import { startUpstream, type Upstream } from '../support/upstream';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let upstream: Upstream;
const edges: TestEdge[] = [];

beforeAll(async () => {
  upstream = await startUpstream();
});
afterAll(async () => {
  for (const edge of edges) await edge.stop();
  await upstream.close();
});

async function edgeWith(extra: string): Promise<TestEdge> {
  const edge = await startTestEdge(
    `
server_name: localhost
listen: { https: [8443], http: null }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
${extra}
`,
    { planLog: true },
  );
  edges.push(edge);
  return edge;
}

/** GET through `edge`; what the upstream saw of the id header, and the id in the access log. */
async function idsOf(edge: TestEdge, probe: string, header: string, sent?: string): Promise<{ upstream: string[]; logged: unknown }> {
  const path = `/_matrix/client/versions?probe=${probe}`;
  const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, path, ...(sent === undefined ? {} : { headers: { [header]: sent } }) });
  expect(reply.status).toBe(200);
  const seen = upstream.requests.find((r) => r.target === path)!;
  const values: string[] = [];
  for (let i = 0; i < seen.rawHeaders.length; i += 2) if (seen.rawHeaders[i]!.toLowerCase() === header.toLowerCase()) values.push(seen.rawHeaders[i + 1]!);
  await new Promise((r) => setTimeout(r, 50));
  const line = edge.logs.find((l) => l.component === 'access' && l.path === path);
  return { upstream: values, logged: line?.request_id };
}

test('every forwarded request gets a fresh id, sent upstream once and written in its access-log line', async () => {
  const edge = await edgeWith('');
  const a = await idsOf(edge, 'fresh-a', 'X-Request-Id');
  const b = await idsOf(edge, 'fresh-b', 'X-Request-Id');
  expect(a.upstream).toHaveLength(1);
  expect(a.upstream[0]).toMatch(UUID);
  expect(a.logged).toBe(a.upstream[0]);
  expect(b.upstream[0]).toMatch(UUID);
  expect(b.upstream[0]).not.toBe(a.upstream[0]);
});

test("a client's own id is replaced, and a trusted proxy's is kept", async () => {
  const untrusting = await edgeWith('');
  const replaced = await idsOf(untrusting, 'untrusted', 'X-Request-Id', 'client-chosen-id');
  expect(replaced.upstream).toHaveLength(1);
  expect(replaced.upstream[0]).toMatch(UUID);
  expect(replaced.logged).toBe(replaced.upstream[0]);

  const trusting = await edgeWith('proxy: { trusted_proxies: [127.0.0.1] }');
  const kept = await idsOf(trusting, 'trusted', 'X-Request-Id', 'lb-7f3a9c');
  expect(kept.upstream).toEqual(['lb-7f3a9c']);
  expect(kept.logged).toBe('lb-7f3a9c');
});

test('the header name is configurable; false adds none and leaves a client\'s header alone', async () => {
  const named = await edgeWith('proxy: { request_id_header: X-Correlation-Id }');
  const ids = await idsOf(named, 'named', 'X-Correlation-Id');
  expect(ids.upstream[0]).toMatch(UUID);
  expect(upstream.requests.find((r) => r.target.endsWith('probe=named'))!.headers['x-request-id']).toBeUndefined();

  const none = await edgeWith('proxy: { request_id_header: false }');
  const nothing = await idsOf(none, 'none', 'X-Request-Id', 'client-chosen-id');
  expect(nothing.upstream).toEqual(['client-chosen-id']);
  expect(nothing.logged).toBeUndefined();
});

test('log.levels quiets one component: no access lines at warn, the certificate lines still at info', async () => {
  const edge = await edgeWith('log: { level: info, levels: { access: warn } }');
  const reply = await request({ port: edge.httpsPorts[0]!, ca: edge.ca, path: '/_matrix/client/versions?probe=quiet' });
  expect(reply.status).toBe(200);
  await new Promise((r) => setTimeout(r, 50));
  expect(edge.logs.filter((l) => l.component === 'access')).toEqual([]);
  expect(edge.logs.some((l) => l.component === 'certs' && l.level === 'info')).toBe(true);
});
