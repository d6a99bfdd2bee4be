/**
 * docs/matrix.md S2 24 and 25 with memory bounds: large uploads and downloads stream through the edge
 * (a child process, so its peak RSS is its own) without whole-body buffering. The numbers are
 * printed for the README.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import {
  ensureBuilt,
  freePorts,
  killAll,
  localCaRoot,
  procStatusKiB,
  resetPeakRss,
  startServingEdge,
  tempDir,
  writeConfig,
  type EdgeProcess,
} from '../support/proc-edge';
import { startUpstream, type Behaviour, type Upstream } from '../support/upstream';

jest.setTimeout(60_000);

const MiB = 1024 * 1024;
const UPLOAD = 60 * MiB;
/**
 * Peak-RSS growth allowed while one transfer passes through a fresh edge process (`workers: 1`, so
 * the process measured is the one forwarding). Chunks already forwarded are freed by the data
 * plane's Buffer reclaim (a young-generation collection once 8 MiB are held): measured 15–23 MiB for
 * these transfers, against 45–85 MiB without it (which this bound fails). The backpressure tests
 * below are the proof that nothing piles up (≈ 9 MiB in flight of 60 / 200 MiB).
 */
const GROWTH_LIMIT_MIB = 48;
const UPLOAD_GROWTH_LIMIT_MIB = GROWTH_LIMIT_MIB;
const DOWNLOAD_GROWTH_LIMIT_MIB = GROWTH_LIMIT_MIB;
const DOWNLOAD = 200 * MiB;
const CHUNK = 64 * 1024;

let upstream: Upstream;
const dirs: string[] = [];
interface Edge {
  readonly edge: EdgeProcess;
  readonly port: number;
  readonly ca: string;
}
/** Upload limit raised to 100 MiB. */
let big: Edge;
/** Default upload limit (50 MiB). */
let small: Edge;
/** Request-targets whose headers reached the upstream. */
const arrivals: string[] = [];

async function startEdge(proxy: string): Promise<Edge> {
  const dir = tempDir('matrix-edge-stream-');
  dirs.push(dir);
  const [port] = await freePorts(1);
  const file = writeConfig(
    dir,
    `server_name: localhost
listen: { https: [${port}], http: null, address: [127.0.0.1] }
upstream: ${upstream.url}
tls: { issuer: internal }
storage: ./certs
workers: 1
${proxy}`,
  );
  const { edge } = await startServingEdge(file);
  return { edge, port: port!, ca: localCaRoot(path.join(dir, 'certs')) };
}

/** The download in progress: bytes the upstream has handed to its socket, and the digest once done. */
let download: { sent: number; sha256: Promise<string> } | null = null;

/** The upstream's download: `size` bytes in 64 KiB chunks, each stamped with its index, written with backpressure. */
function serveDownload(res: ServerResponse, size: number): void {
  const template = randomBytes(CHUNK);
  const hash = createHash('sha256');
  const state = { sent: 0, sha256: Promise.resolve('') };
  state.sha256 = new Promise<string>((resolve, reject) => {
    let index = 0;
    let closed = false;
    res.once('close', () => {
      closed = true;
      if (state.sent < size) reject(new Error(`download cut after ${state.sent} bytes`));
    });
    const pump = (): void => {
      while (!closed && state.sent < size) {
        const n = Math.min(CHUNK, size - state.sent);
        const chunk = Buffer.allocUnsafe(n);
        template.copy(chunk, 0, 0, n);
        chunk.writeUInt32BE(index++, 0);
        hash.update(chunk);
        state.sent += n;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      if (!closed) res.end(() => resolve(hash.digest('hex')));
    };
    pump();
  });
  state.sha256.catch(() => undefined);
  download = state;
}

const DOWNLOAD_HEADERS = {
  'content-type': 'application/octet-stream',
  'content-disposition': 'attachment; filename="big file.bin"',
  'content-security-policy': "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';",
  'cross-origin-resource-policy': 'cross-origin',
  'content-encoding': 'identity',
};

/** Like upstream.ts's echo, but a request the edge aborts (an upload cut at the limit) is dropped quietly. */
const echo: Behaviour = (_req, res, record) => {
  record().then(
    (r) => {
      const body = JSON.stringify(r);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    },
    () => res.destroy(),
  );
};

/** An upload the upstream does not read until `release()`. */
let stalled: ((release: () => void) => void) | null = null;

beforeAll(async () => {
  await ensureBuilt();
  upstream = await startUpstream();
  upstream.behaviour = (req, res, record) => {
    arrivals.push(req.url!);
    const match = /^\/_matrix\/client\/v1\/media\/download\/localhost\/(\d+)$/.exec(req.url!);
    if (match !== null) {
      const size = Number(match[1]);
      res.writeHead(200, { ...DOWNLOAD_HEADERS, 'content-length': size });
      serveDownload(res, size);
    } else if (req.url!.includes('stall') && stalled !== null) {
      req.pause();
      stalled(() => {
        echo(req, res, record);
        req.resume();
      });
    } else echo(req, res, record);
  };
  [big, small] = await Promise.all([startEdge('proxy: { max_body_size: 100MiB }\n'), startEdge('')]);
}, 120_000);

afterAll(async () => {
  await killAll();
  await upstream?.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

interface Streamed {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly length: number;
  readonly sha256: string;
  /** The first 64 KiB of the body, for JSON answers. */
  readonly head: Buffer;
}

/** One request over a fresh TLS connection; the response body is hashed as it streams, never held. */
function streamRequest(o: {
  port: number;
  ca: string;
  method?: string;
  path: string;
  headers?: Record<string, string | number>;
  body?: Readable;
  /** Do not read the response body until this resolves. */
  hold?: Promise<void>;
}): Promise<Streamed> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = https.request(
      {
        host: '127.0.0.1',
        port: o.port,
        servername: 'localhost',
        ca: o.ca,
        method: o.method ?? 'GET',
        path: o.path,
        headers: { host: `localhost:${o.port}`, ...o.headers },
        agent: false,
      },
      (res) => {
        answered = true;
        res.pause();
        void (o.hold ?? Promise.resolve()).then(() => res.resume());
        const hash = createHash('sha256');
        let length = 0;
        const head: Buffer[] = [];
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          if (length < 65536) head.push(chunk.subarray(0, 65536 - length));
          length += chunk.length;
        });
        res.on('end', () => {
          resolve({ status: res.statusCode!, headers: res.headers, length, sha256: hash.digest('hex'), head: Buffer.concat(head) });
          // An early answer (413) leaves the upload unfinished: stop sending it.
          if (!req.writableFinished) req.destroy();
        });
        res.on('error', reject);
      },
    );
    req.on('error', (err) => {
      // Writing the rest of a refused upload may fail after the answer arrived; that is expected.
      if (!answered) reject(err);
    });
    if (o.body) {
      o.body.on('error', reject);
      o.body.pipe(req);
    } else req.end();
  });
}

/** An upload body from a generator: random chunks (64 KiB by default), hashed as they are produced. */
function generatedBody(size: number, chunkSize = CHUNK): { body: Readable; sha256: () => string; produced: () => number } {
  const hash = createHash('sha256');
  let produced = 0;
  function* chunks(): Generator<Buffer> {
    for (let sent = 0; sent < size; sent += chunkSize) {
      const chunk = randomBytes(Math.min(chunkSize, size - sent));
      hash.update(chunk);
      produced += chunk.length;
      yield chunk;
    }
  }
  return { body: Readable.from(chunks(), { objectMode: false }), sha256: () => hash.digest('hex'), produced: () => produced };
}

interface Peak {
  readonly beforeKiB: number;
  readonly afterKiB: number;
  readonly growthMiB: number;
  readonly reset: boolean;
}

async function measurePeak(pid: number, run: () => Promise<void>): Promise<Peak> {
  const reset = resetPeakRss(pid);
  const beforeKiB = procStatusKiB(pid, 'VmHWM');
  await run();
  const afterKiB = procStatusKiB(pid, 'VmHWM');
  return { beforeKiB, afterKiB, growthMiB: (afterKiB - beforeKiB) / 1024, reset };
}

function report(what: string, bytes: number, peak: Peak, ms: number): void {
  console.log(
    `${what}: ${bytes / MiB} MiB in ${Math.round(ms)} ms; edge peak RSS (VmHWM) ${(peak.beforeKiB / 1024).toFixed(1)} → ` +
      `${(peak.afterKiB / 1024).toFixed(1)} MiB, growth ${peak.growthMiB.toFixed(1)} MiB` +
      (peak.reset ? '' : ' (peak not resettable: growth over the earlier peak)'),
  );
}

/** A fresh edge (limit 100 MiB), warmed up with a 1 MiB upload and download, for one memory measurement. */
async function freshEdge(): Promise<Edge> {
  const e = await startEdge('proxy: { max_body_size: 100MiB }\n');
  const { body, sha256 } = generatedBody(MiB);
  const up = await streamRequest({ port: e.port, ca: e.ca, method: 'POST', path: '/_matrix/media/v3/upload', headers: { 'content-length': MiB }, body });
  expect(up.status).toBe(200);
  expect(JSON.parse(up.head.toString()).bodySha256).toBe(sha256());
  const down = await streamRequest({ port: e.port, ca: e.ca, path: `/_matrix/client/v1/media/download/localhost/${MiB}` });
  expect(down.status).toBe(200);
  expect(down.sha256).toBe(await download!.sha256);
  return e;
}

/** Polls `read` until it has not changed for `quietMs`; returns the settled value. */
async function settled(read: () => number, quietMs = 1000, maxMs = 15_000): Promise<number> {
  const until = performance.now() + maxMs;
  let last = read();
  let since = performance.now();
  while (performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = read();
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return now;
  }
  throw new Error(`still moving after ${maxMs} ms (at ${last})`);
}

describe('memory: each transfer on a fresh edge process', () => {
  test('a 60 MiB upload with Content-Length streams through intact, Content-Length kept', async () => {
    const e = await freshEdge();
    const { body, sha256 } = generatedBody(UPLOAD);
    let reply!: Streamed;
    const started = performance.now();
    const peak = await measurePeak(e.edge.pid, async () => {
      reply = await streamRequest({
        port: e.port,
        ca: e.ca,
        method: 'POST',
        path: '/_matrix/media/v3/upload?filename=big.bin',
        headers: { 'content-type': 'application/octet-stream', 'content-length': UPLOAD },
        body,
      });
    });
    report('upload, Content-Length', UPLOAD, peak, performance.now() - started);
    await e.edge.kill();
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.head.toString()) as { bodyLength: number; bodySha256: string; headers: IncomingHttpHeaders; target: string };
    expect(seen.target).toBe('/_matrix/media/v3/upload?filename=big.bin');
    expect(seen.headers['content-length']).toBe(String(UPLOAD));
    expect(seen.headers['transfer-encoding']).toBeUndefined();
    expect(seen.bodyLength).toBe(UPLOAD);
    expect(seen.bodySha256).toBe(sha256());
    expect(peak.growthMiB).toBeLessThan(UPLOAD_GROWTH_LIMIT_MIB);
  });

  test('a 60 MiB chunked upload streams through intact', async () => {
    const e = await freshEdge();
    const { body, sha256 } = generatedBody(UPLOAD);
    let reply!: Streamed;
    const started = performance.now();
    const peak = await measurePeak(e.edge.pid, async () => {
      reply = await streamRequest({
        port: e.port,
        ca: e.ca,
        method: 'POST',
        path: '/_matrix/media/v3/upload?filename=chunked.bin',
        headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
        body,
      });
    });
    report('upload, chunked', UPLOAD, peak, performance.now() - started);
    await e.edge.kill();
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.head.toString()) as { bodyLength: number; bodySha256: string; headers: IncomingHttpHeaders };
    expect(seen.headers['transfer-encoding']).toBe('chunked');
    expect(seen.bodyLength).toBe(UPLOAD);
    expect(seen.bodySha256).toBe(sha256());
    expect(peak.growthMiB).toBeLessThan(UPLOAD_GROWTH_LIMIT_MIB);
  });

  test('a 200 MiB download streams through intact with its headers unchanged', async () => {
    const e = await freshEdge();
    let reply!: Streamed;
    const started = performance.now();
    const peak = await measurePeak(e.edge.pid, async () => {
      reply = await streamRequest({ port: e.port, ca: e.ca, path: `/_matrix/client/v1/media/download/localhost/${DOWNLOAD}` });
    });
    report('download', DOWNLOAD, peak, performance.now() - started);
    await e.edge.kill();
    expect(reply.status).toBe(200);
    expect(reply.length).toBe(DOWNLOAD);
    expect(reply.sha256).toBe(await download!.sha256);
    expect(reply.headers['content-length']).toBe(String(DOWNLOAD));
    for (const [name, value] of Object.entries(DOWNLOAD_HEADERS)) expect(reply.headers[name]).toBe(value);
    expect(peak.growthMiB).toBeLessThan(DOWNLOAD_GROWTH_LIMIT_MIB);
  });
});

describe('backpressure: a stalled side stops the other one, nothing piles up in the edge', () => {
  test('an upstream that does not read holds the client\'s 60 MiB upload back; released, it arrives intact', async () => {
    let release!: () => void;
    const arrived = new Promise<void>((resolve) => {
      stalled = (r) => {
        release = r;
        resolve();
      };
    });
    const { body, sha256, produced } = generatedBody(UPLOAD);
    const replying = streamRequest({
      port: big.port,
      ca: big.ca,
      method: 'POST',
      path: '/_matrix/media/v3/upload?filename=stall.bin',
      headers: { 'content-type': 'application/octet-stream', 'content-length': UPLOAD },
      body,
    });
    await arrived;
    const rssBefore = procStatusKiB(big.edge.pid, 'VmRSS');
    const pushed = await settled(produced);
    const rssStalled = procStatusKiB(big.edge.pid, 'VmRSS');
    console.log(
      `upload stalled upstream: the client could push ${(pushed / MiB).toFixed(1)} of ${UPLOAD / MiB} MiB; ` +
        `edge RSS ${(rssBefore / 1024).toFixed(1)} → ${(rssStalled / 1024).toFixed(1)} MiB`,
    );
    release();
    const reply = await replying;
    stalled = null;
    expect(pushed).toBeLessThan(UPLOAD - 16 * MiB);
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.head.toString()) as { bodyLength: number; bodySha256: string; headers: IncomingHttpHeaders };
    expect(seen.headers['content-length']).toBe(String(UPLOAD));
    expect(seen.bodyLength).toBe(UPLOAD);
    expect(seen.bodySha256).toBe(sha256());
  });

  test('a client that does not read holds the upstream\'s 200 MiB download back; resumed, it arrives intact', async () => {
    let resume!: () => void;
    const hold = new Promise<void>((resolve) => (resume = resolve));
    download = null;
    const replying = streamRequest({ port: big.port, ca: big.ca, path: `/_matrix/client/v1/media/download/localhost/${DOWNLOAD}`, hold });
    const current = (): typeof download => download;
    let state = current();
    while (state === null || state.sent === 0) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      state = current();
    }
    const rssBefore = procStatusKiB(big.edge.pid, 'VmRSS');
    const sent = await settled(() => state.sent);
    const rssStalled = procStatusKiB(big.edge.pid, 'VmRSS');
    console.log(
      `download stalled client: the upstream could push ${(sent / MiB).toFixed(1)} of ${DOWNLOAD / MiB} MiB; ` +
        `edge RSS ${(rssBefore / 1024).toFixed(1)} → ${(rssStalled / 1024).toFixed(1)} MiB`,
    );
    resume();
    const reply = await replying;
    expect(sent).toBeLessThan(DOWNLOAD / 4);
    expect(reply.status).toBe(200);
    expect(reply.length).toBe(DOWNLOAD);
    expect(reply.sha256).toBe(await state.sha256);
  });
});

describe('with the default 50 MiB limit a 60 MiB upload gets 413 M_TOO_LARGE', () => {
  /**
   * Streams `attempts` over-limit uploads one after another (1 MiB chunks, as from a file stream) and
   * returns what each client saw: the status, or the socket error that came instead of an answer.
   */
  async function overLimit(attempts: number, headers: Record<string, string | number>, tag: string): Promise<Array<number | string>> {
    const outcomes: Array<number | string> = [];
    for (let i = 0; i < attempts; i++) {
      const { body } = generatedBody(UPLOAD, MiB);
      try {
        const reply = await streamRequest({
          port: small.port,
          ca: small.ca,
          method: 'POST',
          path: `/_matrix/media/v3/upload?filename=${tag}-${i}.bin`,
          headers: { 'content-type': 'application/octet-stream', ...headers },
          body,
        });
        outcomes.push(reply.status);
        if (reply.status === 413) {
          expect(reply.headers['content-type']).toBe('application/json');
          expect(reply.headers['access-control-allow-origin']).toBe('*');
          expect(JSON.parse(reply.head.toString())).toMatchObject({ errcode: 'M_TOO_LARGE' });
        }
      } catch (err) {
        outcomes.push((err as NodeJS.ErrnoException).code ?? String(err));
      } finally {
        body.destroy();
      }
    }
    console.log(`413 ${tag}: ${JSON.stringify(outcomes)}`);
    return outcomes;
  }

  test('declared by Content-Length: every client gets the 413 (none sees a reset instead), nothing goes upstream', async () => {
    const before = arrivals.length;
    const outcomes = await overLimit(10, { 'content-length': UPLOAD }, 'declared');
    expect(arrivals.slice(before)).toEqual([]);
    expect(outcomes).toEqual(new Array(10).fill(413));
  });

  test('chunked: cut off at the limit, every client gets the 413, nothing completes upstream', async () => {
    const outcomes = await overLimit(6, { 'transfer-encoding': 'chunked' }, 'chunked');
    expect(upstream.requests.some((r) => r.target.includes('chunked-'))).toBe(false);
    expect(outcomes).toEqual(new Array(6).fill(413));
  });

  test('an upload of exactly the default limit passes', async () => {
    const size = 50 * MiB;
    const { body, sha256 } = generatedBody(size);
    const reply = await streamRequest({
      port: small.port,
      ca: small.ca,
      method: 'POST',
      path: '/_matrix/media/v3/upload?filename=at-limit.bin',
      headers: { 'content-length': size },
      body,
    });
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.head.toString()) as { bodyLength: number; bodySha256: string };
    expect(seen.bodyLength).toBe(size);
    expect(seen.bodySha256).toBe(sha256());
  });
});
