/**
 * The file storage's Locker: processes sharing one storage directory take turns through lock
 * files, `locks/<key>.lock` (directory 0700, file 0600), holding JSON
 * {pid, host, scope, created, updated, nonce, purpose}.
 *
 * - A lock is taken by creating its file with O_EXCL, and held while the file exists and carries
 *   the holder's nonce. The holder touches the file's mtime every `refreshMs`: its freshness.
 * - A busy lock is waited for (polled every `pollMs`) unless it is stale: written on this machine
 *   (same host name, boot and pid namespace) by a process that no longer exists — a SIGKILLed
 *   edge is taken over at once — or by an earlier process that had our pid; or, whoever wrote it,
 *   not refreshed for `staleMs` (a crashed machine, a hung process). A file that cannot be parsed
 *   is stale only by its mtime. A live holder that keeps refreshing is never taken over.
 * - Takers of one stale lock are serialised by a guard file, `<key>.lock.takeover` (O_EXCL, held
 *   for two file operations): under it a taker checks that the lock file is still the one it
 *   judged (same inode and nonce) and still stale, and deletes it; then every waiter competes to
 *   create the lock with O_EXCL again.
 *
 * The imperfection this accepts, as CertMagic's filestorage.go does (its earlier `.unlock` files
 * looped forever once they went stale themselves): checking a stale file and deleting it are two
 * operations. Between them the file can change only if its holder — already judged dead or hung —
 * releases it at that very moment and another process creates a fresh lock in the same instant;
 * the fresh lock is then deleted and two processes hold it. Likewise two takers may both remove a
 * guard that a crashed taker left behind. Closing these windows took moving files aside and
 * linking them back (this file had 700 lines) and still left the larger one no file lock closes:
 * a hung holder that wakes up after it was taken over. So callers check `stillHeld()` before acting
 * on what the lock protects, and a storage that must be exact uses fencing tokens (storage.ts).
 * Across machines the mtime is compared with the local clock: `staleMs` must exceed their skew.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ME_LOCK_FILE, ME_LOCK_KEY_INVALID, ME_LOCK_OPTIONS, ME_LOCK_RELEASE, ME_LOCK_TAKEOVER, ME_LOCK_TIMEOUT, errorMessage } from '../errors';
import { ensurePrivateDirectory } from './private-dir';
import { describeHolder, lockStaleness, localScope, parseLockFile, processIsAlive, type LockFileContent, type StaleReason } from './lock-file';
import type { HeldLock, LockHolder, LockOptions, Locker } from './storage';

export interface FileLockerOptions extends LockOptions {
  /** A lock whose file was not refreshed for this long is stale. Default 30_000. */
  readonly staleMs?: number;
  /** How often a holder refreshes its file. Default 5_000, or staleMs/3 when less (must be < staleMs/2). */
  readonly refreshMs?: number;
  /** How often a waiter looks again. Default 1_000. */
  readonly pollMs?: number;
  /** Called once by a held lock when its refresh finds that another process took it over. */
  readonly onLost?: (lockPath: string) => void;
}

const KEY = /^[A-Za-z0-9@._+-]{1,200}$/;
/** Rounds of create / inspect / take over within one attempt before the lock counts as busy. */
const ROUNDS = 5;

/**
 * Nonces of every lock file this process wrote, shared by every copy of this module in the process:
 * a file naming our pid with none of them is an earlier process's. Never forgotten (a few a day), so
 * a file we are releasing right now is never mistaken for one.
 */
const ownNonces = ((globalThis as Record<symbol, unknown>)[Symbol.for('matrix-edge.storage-lock.nonces')] ??= new Set<string>()) as Set<string>;
/** Held locks, released (synchronously) if the process exits normally without releasing them. */
const heldLocks = new Set<FileLock>();
let exitHook = false;

/** One look at a lock file, identity, mtime and content from the same descriptor. */
interface Seen {
  readonly dev: number;
  readonly ino: number;
  readonly mtimeMs: number;
  readonly content: LockFileContent | null;
}

async function inspect(file: string): Promise<Seen | null> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const stat = await handle.stat();
    return { dev: stat.dev, ino: stat.ino, mtimeMs: stat.mtimeMs, content: parseLockFile(await handle.readFile('utf8')) };
  } finally {
    await handle.close();
  }
}

/** Whether two looks saw the same lock file: same inode and the same nonce (or both unreadable). */
function sameFile(a: Seen | null, b: Seen): boolean {
  return a !== null && a.dev === b.dev && a.ino === b.ino && a.content?.nonce === b.content?.nonce;
}

function holderOf(seen: Seen): LockHolder {
  const updated = new Date(seen.mtimeMs).toISOString();
  const c = seen.content;
  if (c === null) return { pid: 0, host: '', created: updated, updated, purpose: 'unreadable lock file' };
  return { pid: c.pid, host: c.host, created: c.created, updated, ...(c.purpose !== undefined ? { purpose: c.purpose } : {}) };
}

function staleness(seen: Seen, staleMs: number): StaleReason | null {
  const scope = localScope();
  return lockStaleness({
    content: seen.content,
    mtimeMs: seen.mtimeMs,
    now: Date.now(),
    staleMs,
    hostname: os.hostname(),
    ...(scope !== undefined ? { scope } : {}),
    isAlive: processIsAlive,
    self: { pid: process.pid, holds: (nonce) => ownNonces.has(nonce) },
  });
}

/** Creates `file` with O_EXCL, mode 0600, recording this process; null when it exists. The descriptor stays open. */
async function create(file: string, purpose: string | undefined): Promise<{ nonce: string; handle: fsp.FileHandle } | null> {
  const nonce = randomBytes(16).toString('hex');
  const now = new Date().toISOString();
  const scope = localScope();
  const content: LockFileContent = {
    pid: process.pid,
    host: os.hostname(),
    ...(scope !== undefined ? { scope } : {}),
    created: now,
    updated: now,
    nonce,
    ...(purpose !== undefined ? { purpose } : {}),
  };
  // Known before the file exists: a file with our pid and an unknown nonce is an earlier process's.
  ownNonces.add(nonce);
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'wx', 0o600);
  } catch (err) {
    ownNonces.delete(nonce); // never written
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw new ME_LOCK_FILE('create', file, errorMessage(err));
  }
  try {
    await handle.chmod(0o600); // whatever the umask did
    // Not fsynced: after a power loss every holder is gone, and a torn file is stale by its mtime.
    await handle.writeFile(JSON.stringify(content) + '\n');
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fsp.unlink(file).catch(() => undefined);
    throw new ME_LOCK_FILE('write', file, errorMessage(err));
  }
  return { nonce, handle };
}

/** Deletes `file` if it still carries `nonce` (read, then unlink: see the module comment). */
async function removeIfOurs(file: string, nonce: string): Promise<void> {
  try {
    if (parseLockFile(await fsp.readFile(file, 'utf8'))?.nonce === nonce) await fsp.unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

class FileLock implements HeldLock {
  private released = false;
  private lost = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly key: string,
    readonly path: string,
    private readonly nonce: string,
    private readonly handle: fsp.FileHandle,
    private readonly onLost: ((lockPath: string) => void) | undefined,
    refreshMs: number,
  ) {
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
    heldLocks.add(this);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const lock of heldLocks) lock.releaseSync();
      });
    }
  }

  /** Touches our own file through its descriptor (never another holder's), once it is known to be ours. */
  private async refresh(): Promise<void> {
    try {
      if (!(await this.stillHeld())) return;
      const now = new Date();
      await this.handle.utimes(now, now);
    } catch {
      // A transient error (a network file system): the next refresh tries again; stale only after staleMs.
    }
  }

  async stillHeld(): Promise<boolean> {
    if (this.released || this.lost) return false;
    let nonce: string | null;
    try {
      nonce = parseLockFile(await fsp.readFile(this.path, 'utf8'))?.nonce ?? null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      nonce = null;
    }
    if (nonce === this.nonce) return true;
    if (!this.lost && !this.released) {
      this.lost = true;
      clearInterval(this.timer);
      try {
        this.onLost?.(this.path);
      } catch {
        // a logging callback must not break the lock
      }
    }
    return false;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    heldLocks.delete(this);
    try {
      await removeIfOurs(this.path, this.nonce);
    } catch (err) {
      throw new ME_LOCK_RELEASE(this.path, errorMessage(err));
    } finally {
      await this.handle.close().catch(() => undefined);
    }
  }

  /** For the process 'exit' handler: removes the file if it is still ours. */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    try {
      if (parseLockFile(fs.readFileSync(this.path, 'utf8'))?.nonce === this.nonce) fs.unlinkSync(this.path);
    } catch {
      // nothing more can be done while exiting; the lock turns stale
    }
  }
}

export class FileLocker implements Locker {
  /** Absolute path of the locks directory. */
  readonly dir: string;
  private readonly staleMs: number;
  private readonly refreshMs: number;
  private readonly pollMs: number;

  constructor(
    storageRoot: string,
    private readonly options: FileLockerOptions = {},
  ) {
    this.dir = path.join(path.resolve(storageRoot), 'locks');
    this.staleMs = options.staleMs ?? 30_000;
    this.refreshMs = options.refreshMs ?? Math.min(5_000, Math.floor(this.staleMs / 3));
    this.pollMs = options.pollMs ?? 1_000;
    const positive = (n: number): boolean => typeof n === 'number' && Number.isFinite(n) && n > 0;
    if (!positive(this.staleMs)) throw new ME_LOCK_OPTIONS(`staleMs must be a positive number of milliseconds, not ${this.staleMs}`);
    if (!positive(this.refreshMs) || this.refreshMs >= this.staleMs / 2) {
      throw new ME_LOCK_OPTIONS(`refreshMs (${this.refreshMs}) must be positive and less than half of staleMs (${this.staleMs})`);
    }
    if (!positive(this.pollMs)) throw new ME_LOCK_OPTIONS(`pollMs must be a positive number of milliseconds, not ${this.pollMs}`);
  }

  /** Absolute path of the lock file of `key` (validated). */
  lockPath(key: string): string {
    if (typeof key !== 'string' || !KEY.test(key) || key.includes('..')) throw new ME_LOCK_KEY_INVALID(JSON.stringify(key));
    return path.join(this.dir, `${key}.lock`);
  }

  async lock(key: string, options: LockOptions = {}): Promise<HeldLock> {
    const o = { ...this.options, ...options };
    const file = this.lockPath(key);
    const started = Date.now();
    let waiting = false;
    for (;;) {
      o.signal?.throwIfAborted();
      const result = await this.attempt(key, file, o);
      if ('lock' in result) return result.lock;
      if (!waiting) {
        waiting = true;
        o.onWait?.(result.busy);
      }
      let delay = this.pollMs;
      if (o.timeoutMs !== undefined) {
        const left = started + o.timeoutMs - Date.now();
        if (left <= 0) throw new ME_LOCK_TIMEOUT(o.timeoutMs, file, describeHolder(result.busy));
        delay = Math.min(delay, left);
      }
      await sleep(delay, o.signal);
    }
  }

  /** The lock if it is free or stale (taken over); null when it is busy. */
  async tryLock(key: string, options: LockOptions = {}): Promise<HeldLock | null> {
    const result = await this.attempt(key, this.lockPath(key), { ...this.options, ...options });
    return 'lock' in result ? result.lock : null;
  }

  /** Who holds `key`, or null when it is free. An unparsable lock file shows as pid 0. */
  async holder(key: string): Promise<LockHolder | null> {
    const seen = await inspect(this.lockPath(key));
    return seen === null ? null : holderOf(seen);
  }

  private async attempt(key: string, file: string, o: FileLockerOptions): Promise<{ lock: HeldLock } | { busy: LockHolder | null }> {
    await ensurePrivateDirectory(this.dir);
    let busy: LockHolder | null = null;
    for (let round = 0; round < ROUNDS; round++) {
      const created = await create(file, o.purpose);
      if (created !== null) return { lock: new FileLock(key, file, created.nonce, created.handle, o.onLost, this.refreshMs) };
      const seen = await inspect(file);
      if (seen === null) continue; // released meanwhile
      busy = holderOf(seen);
      const reason = staleness(seen, this.staleMs);
      if (reason === null) return { busy };
      if (await this.takeOver(file, seen)) {
        try {
          o.onTakeover?.(busy, reason);
        } catch {
          // a logging callback must not break the lock
        }
      }
    }
    return { busy };
  }

  /** Deletes the stale lock file `seen` under the takeover guard, unless it changed since. True when it did. */
  private async takeOver(file: string, seen: Seen): Promise<boolean> {
    const guardFile = `${file}.takeover`;
    const guard = await create(guardFile, `takeover of ${path.basename(file)}`);
    if (guard === null) {
      // Another taker is at work (the caller tries again), or one crashed holding the guard.
      const other = await inspect(guardFile);
      if (other !== null && staleness(other, this.staleMs) !== null && sameFile(await inspect(guardFile), other)) {
        await fsp.rm(guardFile, { force: true });
      }
      return false;
    }
    try {
      const now = await inspect(file);
      if (now === null || !sameFile(now, seen) || staleness(now, this.staleMs) === null) return false;
      await fsp.unlink(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw new ME_LOCK_TAKEOVER(file, errorMessage(err));
      });
      return true;
    } finally {
      await removeIfOurs(guardFile, guard.nonce).catch(() => undefined); // else it turns stale
      await guard.handle.close().catch(() => undefined);
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
