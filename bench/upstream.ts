/**
 * The homeserver stand-in, the same for direct, matrix-edge and Caddy: one Node `http` process on
 * 127.0.0.1 (`node bench/child.js bench/upstream.ts PORT`).
 *
 *   GET  /_matrix/client/versions              a fixed JSON body of ~200 bytes
 *   GET  /.well-known/matrix/server            a small JSON body (the "direct" figure for well-known)
 *   POST /_matrix/media/v3/upload              reads and counts the body, answers its size
 *   GET  /_matrix/media/v3/download/…?bytes=N  streams N bytes (backpressure respected)
 *   GET  /_matrix/client/v3/sync?timeout=…     held open until the client goes away (≤ 10 min)
 *   GET  /_bench/held                          {"held": n}: sync requests being held now
 *   GET  /_bench/stats                         {"held", "uploads", "uploadsShort"} (the soak)
 *
 * Opt-in for the soak (bench/soak.ts); without them the behaviour above is unchanged:
 *   sync …&bench_hold_ms=N        answered 200 after N ms instead (a long poll that returns)
 *   upload …?bench_bytes=N        a body that ended cleanly with another size is counted in
 *                                 uploadsShort and answered 400 (the edge must never deliver a
 *                                 cut upload as complete)
 */
import * as http from 'node:http';
import { resolve as pathResolve } from 'node:path';

export const VERSIONS_BODY = JSON.stringify({
  versions: ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'],
  unstable_features: { 'org.matrix.msc3916.stable': true, 'org.matrix.simplified_msc3575': true },
});

const WELL_KNOWN_BODY = JSON.stringify({ 'm.server': 'localhost:443' });
/**
 * How long a sync request is held. Longer than the `timeout=30000` the clients ask for, on
 * purpose: opening thousands of TLS connections can take a while, and none may come back before
 * the memory is read.
 */
const HOLD_MS = 600_000;
const CHUNK = Buffer.alloc(256 * 1024, 0x61);

function json(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function stream(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      const more = res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
      if (!more) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => (left = 0));
  pump();
}

/** A non-negative integer query parameter, or null. */
function intParam(query: string, name: string): number | null {
  const v = new URLSearchParams(query).get(name);
  const n = v === null ? NaN : Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

export function serve(port: number): http.Server {
  let held = 0;
  let uploads = 0;
  let uploadsShort = 0;
  const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/_matrix/client/versions') return json(res, 200, VERSIONS_BODY);
    if (path === '/.well-known/matrix/server') return json(res, 200, WELL_KNOWN_BODY);
    const query = q === -1 ? '' : url.slice(q + 1);
    if (path === '/_bench/held') return json(res, 200, JSON.stringify({ held }));
    if (path === '/_bench/stats') return json(res, 200, JSON.stringify({ held, uploads, uploadsShort }));
    if (path.startsWith('/_matrix/media/v3/upload')) {
      const expected = intParam(query, 'bench_bytes');
      let bytes = 0;
      req.on('data', (c: Buffer) => (bytes += c.length));
      req.on('end', () => {
        uploads++;
        if (expected !== null && bytes !== expected) {
          uploadsShort++;
          return json(res, 400, JSON.stringify({ errcode: 'M_BAD_BODY', bytes, expected }));
        }
        json(res, 200, JSON.stringify({ content_uri: 'mxc://localhost/bench', bytes }));
      });
      return;
    }
    if (path.startsWith('/_matrix/media/v3/download/')) {
      const bytes = Number(new URLSearchParams(query).get('bytes') ?? '0');
      return stream(res, Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : 0);
    }
    if (path === '/_matrix/client/v3/sync') {
      held++;
      let done = false;
      const release = (): void => {
        if (done) return;
        done = true;
        held--;
        clearTimeout(timer);
      };
      const timer = setTimeout(() => {
        release();
        json(res, 200, '{"next_batch":"s1"}');
      }, intParam(query, 'bench_hold_ms') ?? HOLD_MS);
      res.on('close', release);
      req.resume();
      return;
    }
    json(res, 404, '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}');
  });
  server.maxHeadersCount = 100;
  server.listen({ port, host: '127.0.0.1', backlog: 4096 });
  return server;
}

// Started as `node bench/child.js bench/upstream.ts PORT`.
if (process.argv[2] !== undefined && pathResolve(process.argv[2]) === __filename) {
  const port = Number(process.argv[3]);
  if (!Number.isInteger(port) || port <= 0) {
    process.stderr.write('usage: node bench/child.js bench/upstream.ts PORT\n');
    process.exit(2);
  }
  serve(port).on('listening', () => process.stdout.write(`upstream listening on 127.0.0.1:${port}\n`));
}
