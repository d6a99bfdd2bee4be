/**
 * Cross-process locks in the certificate storage, so matrix-edge processes sharing one storage
 * directory never order the same certificate twice:
 *
 *   locks/<key>.lock   JSON {pid, host, scope, created, updated, nonce, purpose}
 *
 * The directory is 0700 and lock files 0600. A lock is taken by creating its file with O_EXCL
 * ('wx'); it is held while the file exists and carries our nonce. The file's mtime is the lock's
 * freshness: the holder touches it (futimes on its own open descriptor) every `refreshMs`.
 *
 * A lock is stale, and may be taken over, when
 *  - its mtime is older than `staleMs` (the holder crashed on another machine, or hangs), or
 *  - it was written on this machine (same host name, boot and pid namespace) by a process that no
 *    longer exists (a SIGKILLed holder is taken over at once), or by an earlier process that had
 *    our pid (pid 1 in a restarted container).
 * A lock file that cannot be parsed (a holder crashed between creating and writing it, or is
 * writing it right now) is stale only by its mtime.
 *
 * Takeover is serialised between takers by a guard file, `locks/<key>.lock.takeover`, created with
 * O_EXCL and held only for a few file operations (a guard left by a crashed taker is stale by the
 * same rules and removed). Under the guard, the taker checks that the lock file is still the very
 * file it judged (same inode, same nonce) and still stale, moves it aside under a unique name,
 * checks that again on what it moved, and deletes it; when it moved something else it links it
 * back without clobbering anything. Then it creates its own file with O_EXCL like any other
 * acquirer.
 *
 * Residual windows (documented rather than closed; no lock built on files and clocks closes them):
 *  - A holder that stops refreshing for longer than `staleMs` (a hung process, a stopped
 *    container, a suspended machine) is taken over, and learns about it only at its next refresh
 *    or `stillHeld()`. Callers must check `stillHeld()` before acting on what the lock protects
 *    (before ordering a certificate and before saving it). Likewise `release()` reads the nonce and
 *    then unlinks: if the lock was taken over in between (possible only once it was stale), the new
 *    holder's file is removed.
 *  - While a taker has moved a file aside to check it, the lock path is free. If what it moved was
 *    a live lock and someone creates the lock in that window, the live lock cannot be put back: its
 *    holder loses it, and its refresh and `stillHeld()` report so. That takes a stale holder that
 *    refreshes between the taker's check and its move, or two takers that both believe they hold
 *    the guard (possible only after a crashed taker's guard was removed by both at once).
 *  - Across machines the mtime (set by the file server) is compared with the local clock:
 *    `staleMs` must exceed the clock skew between them.
 *  - A taker that crashes between moving a file aside and deleting it leaves a `*.stale` file in
 *    the locks directory; it is never read again.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { errorMessage } from '../errors';
import { DIR_MODE, SECRET_MODE, storageKey } from './fs-store';

export interface LockOptions {
  /** A lock whose file was not refreshed for this long is stale and may be taken over. Default 30_000. */
  readonly staleMs?: number;
  /** How often the holder refreshes its lock file. Default 5_000, or staleMs/3 when less (must be < staleMs/2). */
  readonly refreshMs?: number;
  /** How often a waiter retries. Default 1_000. */
  readonly pollMs?: number;
  /** Give up waiting after this long (rejects with an Error naming the lock file and its holder). Default: wait forever. */
  readonly timeoutMs?: number;
  /** Called once when the lock is busy and we start waiting, with the holder's info (for a log line). */
  readonly onWait?: (holder: LockHolder | null) => void;
  /** Called when we take over a stale lock, with its former holder (null when its file was unreadable). */
  readonly onTakeover?: (holder: LockHolder | null, reason: StaleReason) => void;
  /** Called once by a held lock when its refresh finds that another process has taken it over. */
  readonly onLost?: (lockPath: string) => void;
  readonly signal?: AbortSignal;
}

export interface LockHolder {
  /** 0 when the lock file cannot be parsed (see `purpose`). */
  pid: number;
  /** os.hostname() of the holder; '' when the lock file cannot be parsed. */
  host: string;
  /** ISO 8601: when the lock was taken. */
  created: string;
  /** ISO 8601: when the holder last refreshed the lock (the file's mtime). */
  updated: string;
  purpose?: string;
}

export interface HeldLock {
  readonly path: string;
  /** false once another process took it over (we were considered stale). */
  stillHeld(): Promise<boolean>;
  release(): Promise<void>;
}

/** Everything a lock file records. */
export interface LockFileContent {
  readonly pid: number;
  readonly host: string;
  /** Boot and pid namespace of the holder (Linux), so a pid is only checked where it means something. */
  readonly scope?: string;
  readonly created: string;
  readonly updated: string;
  readonly nonce: string;
  readonly purpose?: string;
}

/** Why a lock may be taken over. */
export type StaleReason =
  /** Its file was not refreshed for longer than staleMs. */
  | 'expired'
  /** Its holder ran on this machine and no longer exists. */
  | 'holder-dead'
  /** It names this process's pid on this machine but none of our locks: an earlier process had our pid. */
  | 'earlier-process';

export interface StalenessInput {
  /** The parsed lock file, or null when it cannot be parsed. */
  readonly content: LockFileContent | null;
  /** The lock file's mtime (ms since the epoch). */
  readonly mtimeMs: number;
  readonly now: number;
  readonly staleMs: number;
  /** This machine: os.hostname(), and the boot/pid-namespace scope when known. */
  readonly hostname: string;
  readonly scope?: string;
  /** Whether a process with this pid exists on this machine. */
  readonly isAlive: (pid: number) => boolean;
  /** This process: its pid, and whether it holds the lock with a given nonce. */
  readonly self?: { readonly pid: number; readonly holds: (nonce: string) => boolean };
}

/** Why the lock described by `input` is stale, or null when it is not (a pure decision). */
export function lockStaleness(input: StalenessInput): StaleReason | null {
  if (input.now - input.mtimeMs > input.staleMs) return 'expired';
  const content = input.content;
  if (content === null || content.host !== input.hostname) return null;
  // The same host name in another pid namespace (a container) or after a reboot: its pid means
  // nothing here, only the mtime counts.
  if (content.scope !== undefined && input.scope !== undefined && content.scope !== input.scope) return null;
  if (input.self !== undefined && content.pid === input.self.pid) {
    return input.self.holds(content.nonce) ? null : 'earlier-process';
  }
  return input.isAlive(content.pid) ? null : 'holder-dead';
}

/** A lock file's content, or null when it is not a complete lock file (empty, partly written, garbage). */
export function parseLockFile(text: string): LockFileContent | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  const { pid, host, scope, created, updated, nonce, purpose } = v;
  // pid 0 and negative pids address process groups in kill(): never accept them.
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
  if (typeof host !== 'string' || typeof nonce !== 'string' || nonce.length === 0) return null;
  if (typeof created !== 'string') return null;
  return {
    pid,
    host,
    created,
    updated: typeof updated === 'string' ? updated : created,
    nonce,
    ...(typeof scope === 'string' ? { scope } : {}),
    ...(typeof purpose === 'string' ? { purpose } : {}),
  };
}

/**
 * Whether a process with this pid exists on this machine: kill(pid, 0) succeeds or fails with
 * EPERM (it exists but is not ours). On Linux a zombie (killed, not yet reaped) counts as gone.
 */
export function processIsAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
  if (process.platform === 'linux') {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'Z' || state === 'X') return false;
    } catch {
      // no procfs access: kill() said it exists
    }
  }
  return true;
}

const KEY = /^[A-Za-z0-9@._+-]{1,200}$/;

function validateKey(key: string): void {
  if (typeof key !== 'string' || !KEY.test(key) || key.includes('..')) {
    throw new Error(
      `invalid lock key ${JSON.stringify(key)}: expected 1-200 characters of [A-Za-z0-9@._+-], no '/' and no '..'`,
    );
  }
}

const ISSUER_ID = /^[a-z0-9][a-z0-9._@+-]*$/;

/**
 * The lock key for issuing `name` with `issuerId`: `issue_cert_<issuer>_<name>` with the name's
 * storage path part (`*` → `wildcard_`, `:` → `-`). Throws on an invalid issuer id or name. Keys
 * too long for a file name are shortened, keeping them unique with a hash of the whole key.
 */
export function lockKeyForName(issuerId: string, name: string): string {
  if (typeof issuerId !== 'string' || !ISSUER_ID.test(issuerId) || issuerId.includes('..') || issuerId.length > 255) {
    throw new Error(`invalid issuer id ${JSON.stringify(issuerId)}: expected lower-case letters, digits, '.', '-', '_'`);
  }
  const key = `issue_cert_${issuerId}_${storageKey(name)}`;
  if (key.length <= 200) return key;
  return `${key.slice(0, 183)}_${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

const DEFAULT_STALE_MS = 30_000;
const DEFAULT_REFRESH_MS = 5_000;
const DEFAULT_POLL_MS = 1_000;
/** Rounds of create / inspect / take over within one attempt before reporting the lock busy. */
const ATTEMPT_ROUNDS = 5;

interface Settings {
  readonly staleMs: number;
  readonly refreshMs: number;
  readonly pollMs: number;
  readonly timeoutMs: number | undefined;
  readonly onWait: LockOptions['onWait'];
  readonly onTakeover: LockOptions['onTakeover'];
  readonly onLost: LockOptions['onLost'];
  readonly signal: AbortSignal | undefined;
}

function settings(base: LockOptions, over: LockOptions | undefined): Settings {
  const staleMs = over?.staleMs ?? base.staleMs ?? DEFAULT_STALE_MS;
  const refreshMs = over?.refreshMs ?? base.refreshMs ?? Math.min(DEFAULT_REFRESH_MS, Math.floor(staleMs / 3));
  const pollMs = over?.pollMs ?? base.pollMs ?? DEFAULT_POLL_MS;
  const timeoutMs = over?.timeoutMs ?? base.timeoutMs;
  const positive = (n: number): boolean => typeof n === 'number' && Number.isFinite(n) && n > 0;
  if (!positive(staleMs)) throw new RangeError(`lock staleMs must be a positive number of milliseconds, not ${staleMs}`);
  if (!positive(refreshMs) || refreshMs >= staleMs / 2) {
    throw new RangeError(`lock refreshMs (${refreshMs}) must be positive and less than half of staleMs (${staleMs})`);
  }
  if (!positive(pollMs)) throw new RangeError(`lock pollMs must be a positive number of milliseconds, not ${pollMs}`);
  if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs >= 0)) {
    throw new RangeError(`lock timeoutMs must be a number of milliseconds >= 0, not ${timeoutMs}`);
  }
  return {
    staleMs,
    refreshMs,
    pollMs,
    timeoutMs,
    onWait: over?.onWait ?? base.onWait,
    onTakeover: over?.onTakeover ?? base.onTakeover,
    onLost: over?.onLost ?? base.onLost,
    signal: over?.signal ?? base.signal,
  };
}

let machineScope: string | undefined | null = null;

/** `<boot id>/<pid namespace>` on Linux (undefined elsewhere): where a pid identifies one process. */
function localScope(): string | undefined {
  if (machineScope === null) {
    try {
      const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      const ns = fs.readlinkSync('/proc/self/ns/pid');
      machineScope = boot.length > 0 ? `${boot}/${ns}` : undefined;
    } catch {
      machineScope = undefined;
    }
  }
  return machineScope;
}

/**
 * Nonces of the locks this process holds (or is creating), shared by every copy of this module in
 * the process, so a lock file naming our pid but none of these nonces is known to be an earlier
 * process's.
 */
const ownNonces: Set<string> = ((globalThis as Record<symbol, unknown>)[Symbol.for('matrix-edge.storage-lock.nonces')] ??=
  new Set<string>()) as Set<string>;

/** Locks this module holds, released (synchronously) when the process exits normally. */
const heldLocks = new Set<Held>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const lock of heldLocks) lock.releaseSync();
  });
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** One look at a lock file: its identity, mtime and content, all from the same open descriptor. */
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
    if (isNotFound(err)) return null;
    throw err;
  }
  try {
    const stat = await handle.stat();
    const text = await handle.readFile('utf8');
    return { dev: stat.dev, ino: stat.ino, mtimeMs: stat.mtimeMs, content: parseLockFile(text) };
  } finally {
    await handle.close();
  }
}

/** Whether two looks saw the same lock file: same inode and the same nonce (or both unreadable). */
function sameFile(a: Seen, b: Seen): boolean {
  return a.dev === b.dev && a.ino === b.ino && (a.content?.nonce ?? null) === (b.content?.nonce ?? null);
}

function holderOf(seen: Seen): LockHolder {
  const updated = new Date(seen.mtimeMs).toISOString();
  const c = seen.content;
  if (c === null) return { pid: 0, host: '', created: updated, updated, purpose: 'unreadable lock file' };
  return { pid: c.pid, host: c.host, created: c.created, updated, ...(c.purpose !== undefined ? { purpose: c.purpose } : {}) };
}

/** "pid 123 on host h (purpose), since …, last refreshed …" for messages. */
export function describeHolder(holder: LockHolder | null): string {
  if (holder === null) return 'an unknown holder';
  if (holder.pid === 0) return `an unreadable lock file last modified ${holder.updated}`;
  const purpose = holder.purpose !== undefined ? ` (${holder.purpose})` : '';
  return `pid ${holder.pid} on host ${JSON.stringify(holder.host)}${purpose}, since ${holder.created}, last refreshed ${holder.updated}`;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
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

/** The nonce in the lock file at `file`; null when it is missing or cannot be parsed. */
async function nonceAt(file: string): Promise<string | null> {
  try {
    return parseLockFile(await fsp.readFile(file, 'utf8'))?.nonce ?? null;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/**
 * Creates a lock file (ours: this pid, host, scope and a fresh nonce) with O_EXCL, mode 0600.
 * Null when it exists. The descriptor stays open for refreshing the file's mtime.
 */
async function createLockFile(
  file: string,
  purpose: string | undefined,
): Promise<{ nonce: string; handle: fsp.FileHandle } | null> {
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
  // Registered before the file exists: a file with our pid and an unknown nonce is an earlier process's.
  ownNonces.add(nonce);
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'wx', SECRET_MODE);
  } catch (err) {
    ownNonces.delete(nonce);
    if (errCode(err) === 'EEXIST') return null;
    throw new Error(`cannot create the lock file ${file}: ${errorMessage(err)}`);
  }
  try {
    await handle.chmod(SECRET_MODE); // the umask may have narrowed or widened what open() gave
    // Not fsynced: after a power loss every holder is gone, and a torn file is stale by its mtime.
    await handle.writeFile(JSON.stringify(content) + '\n');
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fsp.unlink(file).catch(() => undefined);
    ownNonces.delete(nonce);
    throw new Error(`cannot write the lock file ${file}: ${errorMessage(err)}`);
  }
  return { nonce, handle };
}

class Held implements HeldLock {
  private released = false;
  private lost = false;
  private refreshing = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly path: string,
    private readonly nonce: string,
    private readonly handle: fsp.FileHandle,
    private readonly onLost: ((lockPath: string) => void) | undefined,
    refreshMs: number,
  ) {
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
    heldLocks.add(this);
    installExitHook();
  }

  /** Touches our own file (its descriptor, so never another holder's) after checking it is still ours. */
  private async refresh(): Promise<void> {
    if (this.refreshing || this.released || this.lost) return;
    this.refreshing = true;
    try {
      if (!(await this.check())) return;
      const now = new Date();
      await this.handle.utimes(now, now);
    } catch {
      // A transient error (e.g. of a network file system): the next refresh tries again, and the
      // lock turns stale only after staleMs.
    } finally {
      this.refreshing = false;
    }
  }

  /** Whether the lock file still carries our nonce; marks the lock lost (once) when not. */
  private async check(): Promise<boolean> {
    let nonce = await nonceAt(this.path);
    if (nonce === null) {
      // A taker may have moved our file aside for a moment to check it (see the module comment).
      await new Promise((resolve) => setTimeout(resolve, 25));
      nonce = await nonceAt(this.path);
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

  async stillHeld(): Promise<boolean> {
    if (this.released || this.lost) return false;
    return this.check();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    heldLocks.delete(this);
    try {
      if ((await nonceAt(this.path)) === this.nonce) {
        await fsp.unlink(this.path).catch((err: unknown) => {
          if (!isNotFound(err)) throw err;
        });
      }
    } catch (err) {
      throw new Error(`cannot release the lock ${this.path}: ${errorMessage(err)}`);
    } finally {
      await this.handle.close().catch(() => undefined);
      ownNonces.delete(this.nonce);
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

export class StorageLocks {
  /** Absolute path of the locks directory. */
  readonly dir: string;
  private readonly options: LockOptions;

  constructor(storageRoot: string, options: LockOptions = {}) {
    this.dir = path.join(path.resolve(storageRoot), 'locks');
    settings(options, undefined); // throws on invalid options now rather than at the first acquire
    this.options = options;
  }

  /** Absolute path of the lock file of `key` (validated). */
  lockPath(key: string): string {
    validateKey(key);
    return path.join(this.dir, `${key}.lock`);
  }

  /** Waits until the lock `key` (e.g. "issue_cert_matrix.example.com") is ours. */
  async acquire(key: string, purpose?: string, options?: LockOptions): Promise<HeldLock> {
    const s = settings(this.options, options);
    const file = this.lockPath(key);
    const started = Date.now();
    let waiting = false;
    for (;;) {
      s.signal?.throwIfAborted();
      const result = await this.attempt(file, purpose, s);
      if ('lock' in result) return result.lock;
      if (!waiting) {
        waiting = true;
        s.onWait?.(result.busy);
      }
      let delay = s.pollMs;
      if (s.timeoutMs !== undefined) {
        const left = started + s.timeoutMs - Date.now();
        if (left <= 0) {
          throw new Error(`timed out after ${s.timeoutMs} ms waiting for the lock ${file}, held by ${describeHolder(result.busy)}`);
        }
        delay = Math.min(delay, left);
      }
      await sleep(delay, s.signal);
    }
  }

  /** The lock if it is free or stale (taken over); null when busy. */
  async tryAcquire(key: string, purpose?: string): Promise<HeldLock | null> {
    const result = await this.attempt(this.lockPath(key), purpose, settings(this.options, undefined));
    return 'lock' in result ? result.lock : null;
  }

  /** Holder info of `key`, or null when free. An unparsable lock file shows as pid 0. */
  async holder(key: string): Promise<LockHolder | null> {
    const seen = await inspect(this.lockPath(key));
    return seen === null ? null : holderOf(seen);
  }

  private staleness(seen: Seen, staleMs: number): StaleReason | null {
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

  private async attempt(file: string, purpose: string | undefined, s: Settings): Promise<{ lock: HeldLock } | { busy: LockHolder | null }> {
    await this.ensureDir();
    let busy: LockHolder | null = null;
    for (let round = 0; round < ATTEMPT_ROUNDS; round++) {
      const lock = await this.create(file, purpose, s);
      if (lock !== null) return { lock };
      const seen = await inspect(file);
      if (seen === null) continue; // released in the meantime
      busy = holderOf(seen);
      const reason = this.staleness(seen, s.staleMs);
      if (reason === null) return { busy };
      await this.takeOver(file, seen, reason, s);
    }
    return { busy };
  }

  /** Creates the lock file with O_EXCL; null when it exists. */
  private async create(file: string, purpose: string | undefined, s: Settings): Promise<HeldLock | null> {
    const created = await createLockFile(file, purpose);
    return created === null ? null : new Held(file, created.nonce, created.handle, s.onLost, s.refreshMs);
  }

  /**
   * Removes the stale lock file `seen`, unless it changed since it was judged. Takers are
   * serialised by a guard file (`<key>.lock.takeover`, O_EXCL, held for a few file operations), so
   * in the normal case no other taker touches the lock file meanwhile; a guard left by a crashed
   * taker is itself removed once stale. The caller then competes for the lock with O_EXCL.
   */
  private async takeOver(file: string, seen: Seen, reason: StaleReason, s: Settings): Promise<void> {
    const guardFile = `${file}.takeover`;
    const guard = await createLockFile(guardFile, `takeover of ${path.basename(file)}`);
    if (guard === null) {
      // Another taker is at work (the caller retries), or one crashed while holding the guard.
      const other = await inspect(guardFile);
      if (other !== null && this.staleness(other, s.staleMs) !== null) await this.removeIfUnchanged(guardFile, other, s.staleMs);
      return;
    }
    try {
      // A taker that judged the same stale file may have replaced it before we got the guard: act
      // only on the file we judged. Under the guard no other taker touches the lock file, and no
      // acquirer can replace it while it exists.
      const current = await inspect(file);
      if (current === null || !sameFile(current, seen) || this.staleness(current, s.staleMs) === null) return;
      if (await this.removeIfUnchanged(file, current, s.staleMs)) {
        try {
          s.onTakeover?.(holderOf(seen), reason);
        } catch {
          // a logging callback must not break the lock
        }
      }
    } finally {
      try {
        if ((await nonceAt(guardFile)) === guard.nonce) await fsp.unlink(guardFile);
      } catch {
        // left behind, it turns stale (our pid is then gone, or its mtime ages)
      } finally {
        await guard.handle.close().catch(() => undefined);
        ownNonces.delete(guard.nonce);
      }
    }
  }

  /**
   * Deletes the file at `file` if it is still `seen` (same inode and nonce) and still stale: moves
   * whatever is there aside under a unique name, checks it, and deletes it or links it back without
   * clobbering a file created meanwhile. True when it deleted `seen`.
   */
  private async removeIfUnchanged(file: string, seen: Seen, staleMs: number): Promise<boolean> {
    const aside = `${file}.${randomBytes(6).toString('hex')}.stale`;
    try {
      await fsp.rename(file, aside);
    } catch (err) {
      if (isNotFound(err)) return false; // removed by its holder, or by a taker
      throw new Error(`cannot take over the stale lock ${file}: ${errorMessage(err)}`);
    }
    let moved: Seen | null = null;
    try {
      moved = await inspect(aside);
    } catch {
      moved = null;
    }
    if (moved !== null && sameFile(moved, seen) && this.staleness(moved, staleMs) !== null) {
      await fsp.rm(aside, { force: true });
      return true;
    }
    // We moved a live lock (its holder refreshed meanwhile, or, when two takers both believed they
    // held the guard, the other's fresh lock): put it back without clobbering a lock created in the
    // meantime.
    try {
      await fsp.link(aside, file);
    } catch (err) {
      if (errCode(err) !== 'EEXIST') {
        // No hard links on this file system: rename back if the path is still free (a short window).
        if ((await inspect(file).catch(() => 'error' as const)) === null) await fsp.rename(aside, file).catch(() => undefined);
      }
      // EEXIST: a lock was created while the one we moved was aside; that one is lost for its
      // holder, whose refresh and stillHeld() now report it.
    }
    await fsp.rm(aside, { force: true });
    return false;
  }

  /** Creates the locks directory and missing parents with mode 0700. */
  private async ensureDir(): Promise<void> {
    const first = await fsp.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
    if (first === undefined) return;
    // chmod what was created, whatever the umask did to it.
    let p = this.dir;
    for (;;) {
      await fsp.chmod(p, DIR_MODE);
      if (p === first || path.dirname(p) === p) break;
      p = path.dirname(p);
    }
  }
}
