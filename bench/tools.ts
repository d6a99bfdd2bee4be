/**
 * The load tools and what their output says: wrk (HTTP/1.1), h2load (HTTP/2; latencies from its
 * per-request log), curl (1 GiB transfers), and the no-resumption shim for new-connection runs.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { percentile } from './stats';
import { run } from './procs';

export interface LoadResult {
  /** Requests per second. */
  readonly rps: number;
  /** Median and 99th percentile latency, ms. */
  readonly p50: number;
  readonly p99: number;
  readonly requests: number;
  /** Non-2xx answers, socket errors, failed requests. */
  readonly errors: number;
  readonly seconds: number;
}

/** "2.34ms", "512.00us", "1.02s", "1.50m" → ms */
export function parseWrkTime(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (m === null) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

export function parseWrk(out: string): LoadResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const done = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const p = (q: string): number => parseWrkTime(new RegExp(`^\\s+${q}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  // wrk counts the server closing a `Connection: close` connection as a read error; connect,
  // write and timeout errors are real ones.
  const errors = non2xx + (socket ? Number(socket[1]) + Number(socket[3]) + Number(socket[4]) : 0);
  return {
    rps,
    p50: p('50'),
    p99: p('99'),
    requests: done ? Number(done[1]) : NaN,
    errors,
    seconds: done ? parseWrkTime(`${done[2]}${done[3]}`) / 1000 : NaN,
  };
}

export interface WrkOptions {
  readonly url: string;
  readonly connections: number;
  readonly seconds: number;
  readonly headers?: readonly string[];
  /** LD_PRELOAD (the no-resumption shim). */
  readonly preload?: string;
}

export async function wrk(o: WrkOptions): Promise<LoadResult & { output: string }> {
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '--timeout', '10s'];
  for (const h of o.headers ?? []) args.push('-H', h);
  args.push(o.url);
  const env = o.preload ? { ...process.env, LD_PRELOAD: o.preload } : process.env;
  const r = await run('wrk', args, { timeoutMs: (o.seconds + 60) * 1000, env });
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr}${r.stdout}`);
  return { ...parseWrk(r.stdout), output: r.stdout };
}

export interface H2loadOptions {
  readonly url: string;
  readonly connections: number;
  readonly streams: number;
  readonly seconds: number;
  /** HTTP/1.1 instead of HTTP/2 (`--h1`). */
  readonly h1?: boolean;
  /** Per-request log (for percentiles). */
  readonly logFile: string;
}

export function parseH2load(out: string): { rps: number; succeeded: number; failed: number; non2xx: number } {
  const rps = Number(/finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  return {
    rps,
    succeeded: req ? Number(req[4]) : NaN,
    failed: req ? Number(req[5]) + Number(req[6]) + Number(req[7]) : NaN,
    non2xx: codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : NaN,
  };
}

/** Latencies (ms) from h2load's --log-file: start µs, status, µs until the response ended. */
function h2loadLatencies(file: string): Float64Array {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const out = new Float64Array(lines.length);
  let n = 0;
  for (const line of lines) {
    const tab = line.lastIndexOf('\t');
    if (tab === -1) continue;
    out[n++] = Number(line.slice(tab + 1)) / 1000;
  }
  return out.subarray(0, n);
}

export async function h2load(o: H2loadOptions): Promise<LoadResult & { output: string }> {
  const args = [`-c${o.connections}`, `-m${o.streams}`, '-D', `${o.seconds}`, '-t1', `--log-file=${o.logFile}`];
  if (o.h1) args.push('--h1');
  args.push(o.url);
  fs.rmSync(o.logFile, { force: true });
  const r = await run('h2load', args, { timeoutMs: (o.seconds + 60) * 1000 });
  if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${r.stderr}${r.stdout}`);
  const parsed = parseH2load(r.stdout);
  const lat = h2loadLatencies(o.logFile);
  fs.rmSync(o.logFile, { force: true });
  return {
    rps: parsed.rps,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    requests: parsed.succeeded,
    errors: parsed.failed + parsed.non2xx,
    seconds: o.seconds,
    output: r.stdout,
  };
}

export interface TransferResult {
  readonly bytes: number;
  readonly seconds: number;
  /** 10^6 bytes per second. */
  readonly mbps: number;
  readonly status: number;
}

/** One curl transfer over HTTP/1.1: an upload (POST of `file`) or a download (to /dev/null). */
export async function curl(o: { url: string; upload?: string; ca?: string; expectBytes: number }): Promise<TransferResult> {
  const args = ['-sS', '--http1.1', '-o', '/dev/null', '--max-time', '600', '-w', '%{http_code} %{time_total} %{size_upload} %{size_download}'];
  if (o.ca) args.push('--cacert', o.ca);
  if (o.upload) args.push('-X', 'POST', '-T', o.upload, '-H', 'Expect:', '-H', 'Content-Type: application/octet-stream');
  args.push(o.url);
  const r = await run('curl', args, { timeoutMs: 620_000 });
  const [status, total, up, down] = r.stdout.trim().split(' ').map(Number) as [number, number, number, number];
  const bytes = o.upload ? up : down;
  if (r.code !== 0 || status !== 200 || bytes !== o.expectBytes) {
    throw new Error(`curl ${o.upload ? 'upload' : 'download'} ${o.url}: exit ${r.code}, status ${status}, ${bytes} of ${o.expectBytes} bytes\n${r.stderr}`);
  }
  return { bytes, seconds: total, mbps: bytes / total / 1e6, status };
}

/** Compile bench/no-resume.c into `dir`; returns the .so path. */
export function buildNoResumeShim(dir: string): string {
  const out = path.join(dir, 'no-resume.so');
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', out, path.join(__dirname, 'no-resume.c'), '-ldl'], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

/**
 * Proof that `wrk` + the shim makes one full TLS handshake per request: a Node TLS server counts
 * connections and resumed sessions during a 1 s run with `Connection: close`.
 */
export async function checkNoResume(shim: string, cert: string, key: string): Promise<{ connections: number; resumed: number; requests: number }> {
  let connections = 0;
  let resumed = 0;
  let requests = 0;
  const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (_req, res) => {
    requests++;
    res.end('{}');
  });
  server.on('secureConnection', (socket) => {
    connections++;
    if (socket.isSessionReused()) resumed++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  try {
    await wrk({ url: `https://localhost:${port}/`, connections: 4, seconds: 1, headers: ['Connection: close'], preload: shim });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return { connections, resumed, requests };
}

export function toolVersions(): Record<string, string> {
  const first = (cmd: string, args: string[]): string => {
    try {
      const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return out.split('\n')[0]!.trim();
    } catch (err) {
      // wrk -v exits 1 after printing its version
      const e = err as { stdout?: string };
      return (e.stdout ?? '').split('\n')[0]!.trim() || 'unknown';
    }
  };
  return {
    caddy: first('caddy', ['version']),
    wrk: first('wrk', ['-v']),
    h2load: first('h2load', ['--version']),
    curl: first('curl', ['--version']),
    pebble: first('dpkg-query', ['-W', '-f=${Version}', 'pebble']),
  };
}
