/**
 * The running edge's control socket: a Unix socket in the storage directory (`<storage>/edge.sock`,
 * mode 0600 inside the 0700 storage), through which `matrix-edge certs` reads the live renewal
 * state, `matrix-edge renew` has the running edge renew — with its own listeners answering the
 * challenges, its storage lock, and the new certificate served at once — and `matrix-edge reload`
 * has it load its config again.
 *
 * Protocol: one JSON request line, one JSON answer line, then the connection closes.
 */
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from '../observe/log';
import { errorMessage } from '../errors';
import { securePrivateRoot } from '../store/private-dir';
import type { AttemptResult, NameStatus } from './source';

export type ControlRequest =
  | { readonly cmd: 'status' }
  | { readonly cmd: 'renew'; readonly names: readonly string[]; readonly force: boolean }
  | { readonly cmd: 'reload' };

/** How a reload went: applied (with what changed), or refused with nothing changed. */
export type ReloadOutcome =
  | { readonly ok: true; readonly source: string; readonly changes: readonly string[]; readonly deferred: readonly string[] }
  | { readonly ok: false; readonly source: string; readonly errors: readonly string[] };

export type ControlAnswer =
  | { readonly ok: true; readonly pid: number; readonly names: readonly NameStatus[] }
  | { readonly ok: true; readonly pid: number; readonly results: readonly AttemptResult[] }
  | { readonly ok: true; readonly pid: number; readonly reload: ReloadOutcome }
  | { readonly ok: false; readonly error: string };

/** What the running edge does for each request; methods throw an Error to refuse. */
export interface ControlHandler {
  status(): readonly NameStatus[];
  renew(names: readonly string[], force: boolean): Promise<readonly AttemptResult[]>;
  reload(): Promise<ReloadOutcome>;
}

/** Longest request line accepted. */
const MAX_REQUEST = 64 * 1024;

export function controlSocketPath(storage: string): string {
  return path.join(storage, 'edge.sock');
}

export class ControlSocket {
  private constructor(
    private readonly server: net.Server,
    readonly path: string,
  ) {}

  /**
   * Listens on `<storage>/edge.sock`. Another live edge on the same storage keeps its socket (this
   * one then serves none, with a warning); a stale socket file is replaced. Never throws.
   */
  static async open(storage: string, handler: ControlHandler, log: Logger): Promise<ControlSocket | null> {
    const file = controlSocketPath(storage);
    if (Buffer.byteLength(file) > 100) {
      log.warn({ path: file }, 'storage path too long for a control socket; `matrix-edge renew` and `certs` will not reach this edge');
      return null;
    }
    if (await isAlive(file)) {
      log.warn({ path: file }, 'another edge is serving the control socket of this storage; `matrix-edge renew` reaches that one');
      return null;
    }
    const server = net.createServer((socket) => serve(socket, handler, log));
    // A fresh storage may still be being created by the first certificate writes: make sure the
    // directory is there (0700), and try again once if it was being created under us.
    let failure: unknown = null;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await securePrivateRoot(storage);
        await fsp.rm(file, { force: true });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(file, () => {
            server.off('error', reject);
            resolve();
          });
        });
        await fsp.chmod(file, 0o600);
        failure = null;
        break;
      } catch (err) {
        failure = err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (failure !== null) {
      server.close();
      log.warn({ path: file, err: errorMessage(failure) }, 'cannot open the control socket; `matrix-edge renew` and `certs` will not reach this edge');
      return null;
    }
    server.on('error', (err) => log.error({ err: errorMessage(err) }, 'control socket error'));
    server.unref();
    log.info({ path: file }, 'control socket open: `matrix-edge certs`, `renew` and `reload` reach this edge');
    return new ControlSocket(server, file);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await fsp.rm(this.path, { force: true }).catch(() => undefined);
  }
}

function serve(socket: net.Socket, handler: ControlHandler, log: Logger): void {
  let buffered = '';
  socket.setEncoding('utf8');
  socket.setTimeout(10_000, () => socket.destroy());
  socket.on('error', () => undefined);
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    if (buffered.length > MAX_REQUEST) return void socket.destroy();
    const end = buffered.indexOf('\n');
    if (end === -1) return;
    socket.removeAllListeners('data');
    socket.setTimeout(0);
    void answer(buffered.slice(0, end), handler, log).then((reply) => socket.end(JSON.stringify(reply) + '\n'));
  });
}

async function answer(line: string, handler: ControlHandler, log: Logger): Promise<ControlAnswer> {
  let request: ControlRequest;
  try {
    request = JSON.parse(line) as ControlRequest;
  } catch {
    return { ok: false, error: 'the request is not JSON' };
  }
  try {
    if (request.cmd === 'status') return { ok: true, pid: process.pid, names: handler.status() };
    if (request.cmd === 'renew') {
      const names = Array.isArray(request.names) ? request.names.filter((n): n is string => typeof n === 'string') : [];
      log.info({ names: names.length === 0 ? 'all' : names, force: request.force === true }, 'renewal requested through the control socket');
      return { ok: true, pid: process.pid, results: await handler.renew(names, request.force === true) };
    }
    if (request.cmd === 'reload') {
      log.info('reload requested through the control socket');
      return { ok: true, pid: process.pid, reload: await handler.reload() };
    }
    return { ok: false, error: `unknown command ${JSON.stringify((request as { cmd?: unknown }).cmd)}` };
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
}

async function isAlive(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(file);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Sends one request to the edge running on `storage`. Resolves null when none is running (no
 * socket, or nobody listening); rejects when one answers with something unreadable.
 */
export function askEdge(storage: string, request: ControlRequest, timeoutMs: number): Promise<ControlAnswer | null> {
  const file = controlSocketPath(storage);
  return new Promise((resolve, reject) => {
    let connected = false;
    let data = '';
    const socket = net.connect(file);
    socket.setEncoding('utf8');
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the edge on ${file} did not answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    socket.once('connect', () => {
      connected = true;
      socket.write(JSON.stringify(request) + '\n');
    });
    socket.on('data', (chunk: string) => (data += chunk));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) resolve(null);
      else reject(new Error(`control socket ${file}: ${err.message}`));
    });
    socket.once('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data) as ControlAnswer);
      } catch {
        reject(new Error(`the edge on ${file} answered something unreadable: ${JSON.stringify(data.slice(0, 200))}`));
      }
    });
  });
}
