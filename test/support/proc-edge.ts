/**
 * The real `matrix-edge` CLI as a child process (node bin/matrix-edge.js …) for tests that need
 * its exit codes, signals, stdout/stderr or its own memory. Every child started here is tracked;
 * call `killAll()` in afterAll so none outlives the test file, even when a test fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');
export const BIN = path.join(ROOT, 'bin/matrix-edge.js');
const DIST_CLI = path.join(ROOT, 'dist/cli.js');
const SRC = path.join(ROOT, 'src');

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function newestSourceMtime(): number {
  let newest = 0;
  for (const entry of fs.readdirSync(SRC, { recursive: true, encoding: 'utf8' })) {
    const stat = fs.statSync(path.join(SRC, entry));
    if (stat.isFile() && stat.mtimeMs > newest) newest = stat.mtimeMs;
  }
  return newest;
}

function distIsStale(): boolean {
  if (!fs.existsSync(DIST_CLI)) return true;
  return fs.statSync(DIST_CLI).mtimeMs < newestSourceMtime();
}

/**
 * Build dist/ with `npx tsc -p tsconfig.build.json` when dist/cli.js is missing or older than the
 * newest file in src/. Test files run in parallel workers, so the build is serialised by a lock
 * directory (mkdir is atomic).
 */
export async function ensureBuilt(): Promise<void> {
  if (!distIsStale()) return;
  const lock = path.join(os.tmpdir(), `matrix-edge-build-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}.lock`);
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - fs.statSync(lock).mtimeMs > 180_000) fs.rmSync(lock, { recursive: true, force: true });
      } catch {
        // the other build just finished
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${lock}`);
      await sleep(200);
    }
  }
  try {
    if (!distIsStale()) return;
    const result = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8', timeout: 170_000 });
    if (result.status !== 0) {
      throw new Error(`npx tsc -p tsconfig.build.json failed (${result.status ?? result.signal}):\n${result.stdout}${result.stderr}${result.error?.message ?? ''}`);
    }
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** `n` distinct loopback ports that were free a moment ago (bound to port 0 together, then closed). */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<net.Server>((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, host, () => resolve(s));
      }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/** Bind a plain TCP listener (rejects with the bind error, e.g. EADDRINUSE). */
export function occupy(port: number, host = '127.0.0.1'): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer((socket) => socket.destroy());
    s.once('error', reject);
    s.listen({ port, host, exclusive: true }, () => resolve(s));
  });
}

export function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves with the error code of a TCP connect to host:port ('connected' if it succeeded). */
export function tryConnect(port: number, host = '127.0.0.1', timeoutMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? err.message);
    });
  });
}

export function tempDir(prefix = 'matrix-edge-proc-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Writes a config file. A config (top-level `server_name:`) without a top-level `admin:` gets
 * `admin: { listen: 127.0.0.1:0 }` appended (line numbers unchanged), so edges started side by
 * side never race for the default admin port 9090.
 */
export function writeConfig(dir: string, yaml: string, name = 'matrix-edge.yaml'): string {
  const file = path.join(dir, name);
  const freeAdmin = /^server_name\s*:/m.test(yaml) && !/^admin\s*:/m.test(yaml);
  fs.writeFileSync(file, freeAdmin ? `${yaml}${yaml.endsWith('\n') ? '' : '\n'}admin: { listen: "127.0.0.1:0" }\n` : yaml);
  return file;
}

const children = new Set<ChildProcess>();

/** SIGKILL every child still running (for afterAll). */
export async function killAll(): Promise<void> {
  const waits: Promise<void>[] = [];
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      waits.push(new Promise((resolve) => child.once('exit', () => resolve())));
      child.kill('SIGKILL');
    }
  }
  children.clear();
  await Promise.all(waits);
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** performance.now() when the exit was seen. */
  readonly at: number;
}

export interface CliRun extends Exit {
  readonly stdout: string;
  readonly stderr: string;
}

function spawnCli(args: readonly string[], cwd: string): ChildProcess {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Run the CLI to completion (SIGKILL after `timeoutMs`, which then fails the run). */
export function runCli(args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<CliRun> {
  const child = spawnCli(args, opts.cwd ?? ROOT);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`matrix-edge ${args.join(' ')} did not exit within ${opts.timeoutMs ?? 20_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, at: performance.now(), stdout, stderr });
    });
  });
}

export type LogLine = Record<string, unknown> & { msg?: string };

export interface EdgeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every JSON log line printed on stdout so far. */
  readonly logs: LogLine[];
  /** Lines on stdout that were not JSON. */
  readonly otherStdout: string[];
  stderr(): string;
  /** Resolves with the first log line (past or future) whose msg is `msg`. */
  waitForLog(msg: string, timeoutMs?: number): Promise<LogLine>;
  /** Resolves when the process has exited (and its stdio is closed). */
  readonly exited: Promise<Exit>;
  /** SIGKILL if still running, and wait for the exit. */
  kill(): Promise<Exit>;
}

/** `matrix-edge start --config FILE` as a child process. */
export function startEdgeProcess(config: string, opts: { cwd?: string } = {}): EdgeProcess {
  const child = spawnCli(['start', '--config', config], opts.cwd ?? ROOT);
  const logs: LogLine[] = [];
  const otherStdout: string[] = [];
  let stderr = '';
  const waiters: Array<{ msg: string; resolve: (line: LogLine) => void }> = [];
  let pending = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    pending += s;
    let nl: number;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (text === '') continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        otherStdout.push(text);
        continue;
      }
      logs.push(line);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.msg === line.msg) waiters.splice(i, 1)[0]!.resolve(line);
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal, at: performance.now() }));
  });
  let exit: Exit | null = null;
  void exited.then((e) => (exit = e));

  const edge: EdgeProcess = {
    child,
    pid: child.pid!,
    logs,
    otherStdout,
    stderr: () => stderr,
    exited,
    waitForLog(msg, timeoutMs = 20_000) {
      const seen = logs.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise<LogLine>((resolve, reject) => {
        const entry = {
          msg,
          resolve: (line: LogLine) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          const i = waiters.indexOf(entry);
          if (i !== -1) waiters.splice(i, 1);
          reject(new Error(`no log line '${msg}' within ${timeoutMs} ms${describe()}`));
        }, timeoutMs);
        waiters.push(entry);
        void exited.then(() => {
          // Let the last stdout chunks be parsed before giving up.
          setImmediate(() => {
            const i = waiters.indexOf(entry);
            if (i === -1) return;
            waiters.splice(i, 1);
            clearTimeout(timer);
            reject(new Error(`the edge exited before logging '${msg}'${describe()}`));
          });
        });
      });
    },
    async kill() {
      if (exit === null && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      return exited;
    },
  };
  const describe = (): string =>
    `\nexit: ${JSON.stringify(exit)}\nstderr: ${stderr}\nlast logs: ${logs
      .slice(-5)
      .map((l) => JSON.stringify(l))
      .join('\n')}`;
  return edge;
}

/** Start the edge and wait for 'matrix-edge is serving'; kills it if it does not get there. */
export async function startServingEdge(config: string, timeoutMs = 30_000): Promise<{ edge: EdgeProcess; serving: LogLine }> {
  const edge = startEdgeProcess(config);
  try {
    const serving = await edge.waitForLog('matrix-edge is serving', timeoutMs);
    return { edge, serving };
  } catch (err) {
    await edge.kill();
    throw err;
  }
}

/** The local CA root a config with `storage: DIR` and the internal issuer writes. */
export function localCaRoot(storage: string): string {
  return fs.readFileSync(path.join(storage, 'pki/authorities/local/root.crt'), 'utf8');
}

/** A `/proc/<pid>/status` field in KiB (VmHWM = peak RSS, VmRSS = current RSS). */
export function procStatusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]);
}

/**
 * Reset the process's peak RSS to its current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux ≥ 4.0),
 * so a later VmHWM shows the peak of what happened in between. False when the kernel refuses.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}
