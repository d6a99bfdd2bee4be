/**
 * Storage locks on the real file system, within one process and across real child processes
 * (test/support/proc-lock.js, which runs src/store/file-lock.ts itself).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FileLocker } from '../../src/store/file-lock';
import type { HeldLock, LockHolder } from '../../src/store/storage';

const SCRIPT = path.join(__dirname, '../support/proc-lock.js');

let dir: string;
let storage: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-lock-'));
  storage = path.join(dir, 'storage');
});
afterEach(async () => {
  await killChildren();
  await fsp.rm(dir, { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await fsp.stat(p)).mode & 0o777;
const exists = (p: string): Promise<boolean> => fsp.access(p).then(() => true, () => false);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles within `ms` → 'pending' when it has not. */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<'pending' | { value: T }> {
  return Promise.race([promise.then((value) => ({ value })), sleep(ms).then(() => 'pending' as const)]);
}

/** A lock file as another process (possibly on another host) would have left it. */
async function plantLock(
  file: string,
  fields: { pid: number; host: string; nonce?: string; purpose?: string } | 'garbage',
  ageMs: number,
): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const created = new Date(Date.now() - ageMs);
  const text =
    fields === 'garbage'
      ? ''
      : JSON.stringify({ created: created.toISOString(), updated: created.toISOString(), nonce: 'planted', ...fields });
  await fsp.writeFile(file, text, { mode: 0o600 });
  await fsp.utimes(file, created, created);
}

// ---- child processes -------------------------------------------------------------------------

interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Resolves with the first stdout line starting with `prefix`. */
  line(prefix: string, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

const children = new Set<ChildProcess>();

async function killChildren(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      waits.push(new Promise((resolve) => child.once('exit', resolve)));
      child.kill('SIGKILL');
    }
  }
  children.clear();
  await Promise.all(waits);
}

function startChild(task: Record<string, unknown>): Child {
  const proc = spawn(process.execPath, [SCRIPT, JSON.stringify(task)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    for (const l of listeners) l();
  });
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    proc.once('close', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal, stderr });
      for (const l of listeners) l();
    });
  });
  const closed = (): boolean => proc.exitCode !== null || proc.signalCode !== null;
  return {
    proc,
    pid: proc.pid!,
    exited,
    line(prefix, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = stdout.split('\n').find((l) => l.startsWith(prefix));
          if (found !== undefined) done(() => resolve(found));
          else if (closed() && !proc.stdout!.readable) done(() => reject(new Error(`child exited before '${prefix}'\nstdout: ${stdout}\nstderr: ${stderr}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no '${prefix}' within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`))), timeoutMs);
        const done = (settle: () => void): void => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      });
    },
  };
}

// ---- one process -----------------------------------------------------------------------------

describe('FileLocker in one process', () => {
  it('acquires and releases, with a 0700 directory, a 0600 file and the holder recorded', async () => {
    const locks = new FileLocker(storage);
    const lock = await locks.lock('issue_cert_local_matrix.example.com', { purpose: 'issue matrix.example.com' });
    const file = locks.lockPath('issue_cert_local_matrix.example.com');
    expect(lock.key).toBe('issue_cert_local_matrix.example.com');
    expect(file).toBe(path.join(storage, 'locks', 'issue_cert_local_matrix.example.com.lock'));
    expect(await mode(storage)).toBe(0o700);
    expect(await mode(path.join(storage, 'locks'))).toBe(0o700);
    expect(await mode(file)).toBe(0o600);

    const recorded = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
    expect(recorded).toMatchObject({ pid: process.pid, host: os.hostname(), purpose: 'issue matrix.example.com' });
    expect(typeof recorded.nonce).toBe('string');
    expect(typeof recorded.created).toBe('string');

    const holder = await locks.holder('issue_cert_local_matrix.example.com');
    expect(holder).toMatchObject({ pid: process.pid, host: os.hostname(), purpose: 'issue matrix.example.com' });
    expect(await lock.stillHeld()).toBe(true);

    await lock.release();
    expect(await exists(file)).toBe(false);
    expect(await lock.stillHeld()).toBe(false);
    expect(await locks.holder('issue_cert_local_matrix.example.com')).toBeNull();
    await lock.release(); // twice is harmless
  });

  it('makes a second lock of the same key wait until release, calling onWait with the holder', async () => {
    const locks = new FileLocker(storage, { pollMs: 20 });
    const first = await locks.lock('k', { purpose: 'first' });
    const onWait = jest.fn<void, [LockHolder | null]>();
    const second = locks.lock('k', { purpose: 'second', onWait });
    expect(await settledWithin(second, 150)).toBe('pending');
    expect(onWait).toHaveBeenCalledTimes(1);
    expect(onWait.mock.calls[0]![0]).toMatchObject({ pid: process.pid, purpose: 'first' });

    const released = Date.now();
    await first.release();
    const lock = await second;
    expect(Date.now() - released).toBeLessThan(500);
    expect(await locks.holder('k')).toMatchObject({ purpose: 'second' });
    expect(onWait).toHaveBeenCalledTimes(1);
    await lock.release();
  });

  it('keeps different keys independent, and tryLock returns null while busy', async () => {
    const locks = new FileLocker(storage);
    const a = await locks.lock('a');
    const b = await new FileLocker(storage).lock('b', { timeoutMs: 500 });
    expect(await locks.tryLock('a')).toBeNull();
    expect(await locks.tryLock('b')).toBeNull();
    await a.release();
    const again = await locks.tryLock('a');
    expect(again).not.toBeNull();
    await again!.release();
    await b.release();
  });

  it('rejects keys that would leave the locks directory', async () => {
    const locks = new FileLocker(storage);
    for (const key of ['../x', 'a/b', '..', '', 'a\0b']) {
      await expect(locks.lock(key)).rejects.toThrow(/invalid lock key/);
    }
    expect(() => new FileLocker(storage, { staleMs: 1000, refreshMs: 600 })).toThrow(/refreshMs/);
  });

  it('takes over a lock from another host once its mtime is old, waits on a fresh one, and times out naming both', async () => {
    const locks = new FileLocker(storage, { staleMs: 30_000, pollMs: 50 });
    const file = locks.lockPath('k');

    await plantLock(file, { pid: 999_999, host: 'other-host.invalid', purpose: 'their issuance' }, 5_000);
    const onWait = jest.fn<void, [LockHolder | null]>();
    const started = Date.now();
    await expect(locks.lock('k', { purpose: 'ours', timeoutMs: 300, onWait })).rejects.toThrow(
      new RegExp(`timed out after 300 ms waiting for the lock ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, held by pid 999999 on host "other-host.invalid" \\(their issuance\\)`),
    );
    expect(Date.now() - started).toBeLessThan(1000);
    expect(onWait).toHaveBeenCalledWith(expect.objectContaining({ pid: 999_999, host: 'other-host.invalid' }));

    await plantLock(file, { pid: 999_999, host: 'other-host.invalid' }, 60_000);
    const onTakeover = jest.fn<void, [LockHolder | null, string]>();
    const lock = await locks.lock('k', { purpose: 'ours', timeoutMs: 1000, onTakeover });
    expect(onTakeover).toHaveBeenCalledWith(expect.objectContaining({ pid: 999_999 }), 'expired');
    expect(await locks.holder('k')).toMatchObject({ pid: process.pid, purpose: 'ours' });
    await lock.release();
    expect(await fsp.readdir(path.dirname(file))).toEqual([]);
  });

  it('treats an unreadable lock file as stale only by its mtime', async () => {
    const locks = new FileLocker(storage, { staleMs: 30_000 });
    const file = locks.lockPath('k');
    await plantLock(file, 'garbage', 0);
    expect(await locks.tryLock('k')).toBeNull();
    expect(await locks.holder('k')).toMatchObject({ pid: 0, host: '' });
    await plantLock(file, 'garbage', 31_000);
    const lock = await locks.tryLock('k');
    expect(lock).not.toBeNull();
    await lock!.release();
  });

  it('takes over at once a fresh lock naming our pid that this process does not hold (an earlier process had our pid)', async () => {
    const locks = new FileLocker(storage);
    const file = locks.lockPath('k');
    await plantLock(file, { pid: process.pid, host: os.hostname(), nonce: 'from-before' }, 0);
    const onTakeover = jest.fn();
    const lock = await locks.lock('k', { timeoutMs: 200, onTakeover });
    expect(onTakeover).toHaveBeenCalledWith(expect.objectContaining({ pid: process.pid }), 'earlier-process');
    await lock.release();
  });

  it('gives a stale lock to exactly one of many concurrent takers', async () => {
    for (let round = 0; round < 20; round++) {
      const takers = Array.from({ length: 8 }, () => new FileLocker(storage, { staleMs: 30_000 }));
      await plantLock(takers[0]!.lockPath('k'), { pid: 999_999, host: 'other-host.invalid' }, 60_000);
      const results = await Promise.all(takers.map((t) => t.tryLock('k')));
      const winners = results.filter((r): r is HeldLock => r !== null);
      expect(winners).toHaveLength(1);
      const stillHeld = await Promise.all(winners.map((w) => w.stillHeld()));
      expect(stillHeld).toEqual([true]);
      await winners[0]!.release();
      expect(await fsp.readdir(path.join(storage, 'locks'))).toEqual([]);
    }
  });

  it('is not blocked by a takeover guard a crashed taker left behind', async () => {
    const locks = new FileLocker(storage, { staleMs: 30_000, pollMs: 20 });
    const file = locks.lockPath('k');
    await plantLock(file, { pid: 999_999, host: 'other-host.invalid' }, 60_000);
    await plantLock(`${file}.takeover`, { pid: 999_999, host: 'other-host.invalid' }, 60_000);
    const lock = await locks.lock('k', { timeoutMs: 1000 });
    expect(await fsp.readdir(path.join(storage, 'locks'))).toEqual(['k.lock']);
    await lock.release();
  });

  it('release() leaves a lock file that is no longer ours, and stillHeld() reports the loss', async () => {
    const locks = new FileLocker(storage);
    const lock = await locks.lock('k');
    await plantLock(locks.lockPath('k'), { pid: 999_999, host: 'other-host.invalid', nonce: 'theirs' }, 0);
    expect(await lock.stillHeld()).toBe(false);
    await lock.release();
    expect(await locks.holder('k')).toMatchObject({ pid: 999_999 });
  });

  it('stops waiting when the signal aborts', async () => {
    const locks = new FileLocker(storage, { pollMs: 20 });
    const held = await locks.lock('k');
    const controller = new AbortController();
    const waiting = locks.lock('k', { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('shutting down')), 50);
    await expect(waiting).rejects.toThrow('shutting down');
    await held.release();
  });
});

// ---- across processes ------------------------------------------------------------------------

describe('FileLocker across processes', () => {
  it('excludes each other: 4 processes appending start/end under one lock never interleave', async () => {
    const file = path.join(dir, 'log.txt');
    const rounds = 4;
    const procs = Array.from({ length: 4 }, () =>
      startChild({ mode: 'loop', storage, key: 'issue_cert_local_shared', file, rounds, options: { pollMs: 10 } }),
    );
    const exits = await Promise.all(procs.map((p) => p.exited));
    for (const e of exits) expect(e).toEqual({ code: 0, signal: null, stderr: '' });

    const lines = (await fsp.readFile(file, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(4 * rounds * 2);
    for (let i = 0; i < lines.length; i += 2) {
      const [startWord, startPid] = lines[i]!.split(' ');
      const [endWord, endPid] = lines[i + 1]!.split(' ');
      expect([startWord, endWord, endPid]).toEqual(['start', 'end', startPid]);
    }
    for (const p of procs) expect(lines.filter((l) => l === `start ${p.pid}`)).toHaveLength(rounds);
    expect(await fsp.readdir(path.join(storage, 'locks'))).toEqual([]);
  });

  it('gives a stale lock to one process at a time when 6 processes take it over at once', async () => {
    const file = path.join(dir, 'log.txt');
    const sync = path.join(dir, 'sync');
    await fsp.mkdir(sync);
    const rounds = 12;
    const key = 'issue_cert_local_contended';
    const lockFile = new FileLocker(storage).lockPath(key);
    const procs = Array.from({ length: 6 }, () => startChild({ mode: 'take', storage, key, file, dir: sync, rounds }));
    for (let r = 0; r < rounds; r++) {
      await plantLock(lockFile, { pid: 999_999, host: 'other-host.invalid' }, 60_000);
      await fsp.writeFile(path.join(sync, `round-${r}`), '');
      const deadline = Date.now() + 5000;
      while ((await fsp.readdir(sync)).filter((f) => f.startsWith(`done-${r}-`)).length < procs.length) {
        if (Date.now() > deadline) throw new Error(`round ${r} did not finish:\n${await fsp.readFile(file, 'utf8').catch(() => '')}`);
        await sleep(5);
      }
      expect(await fsp.readdir(path.join(storage, 'locks'))).toEqual([]);
    }
    for (const e of await Promise.all(procs.map((p) => p.exited))) expect(e).toEqual({ code: 0, signal: null, stderr: '' });

    const lines = (await fsp.readFile(file, 'utf8')).trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(rounds * 2);
    for (let i = 0; i < lines.length; i += 2) {
      const [startWord, startPid] = lines[i]!.split(' ');
      expect(`${lines[i]} / ${lines[i + 1]}`).toBe(`start ${startPid} / end ${startPid}`);
      expect(startWord).toBe('start');
    }
  });

  it('takes over at once the lock of a SIGKILLed holder on this host', async () => {
    const holder = startChild({ mode: 'hold', storage, key: 'k' });
    await holder.line('ACQUIRED');
    const locks = new FileLocker(storage, { pollMs: 50 }); // staleMs stays 30 s
    expect(await locks.holder('k')).toMatchObject({ pid: holder.pid, host: os.hostname() });
    expect(await locks.tryLock('k')).toBeNull();

    holder.proc.kill('SIGKILL');
    expect((await holder.exited).signal).toBe('SIGKILL');
    const onTakeover = jest.fn();
    const started = Date.now();
    const lock = await locks.lock('k', { timeoutMs: 2000, onTakeover });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(onTakeover).toHaveBeenCalledWith(expect.objectContaining({ pid: holder.pid }), 'holder-dead');
    await lock.release();
  });

  it('never takes over a holder that keeps refreshing, even past staleMs', async () => {
    const holder = startChild({ mode: 'hold', storage, key: 'k', options: { staleMs: 600, refreshMs: 100 } });
    await holder.line('ACQUIRED');
    const locks = new FileLocker(storage, { staleMs: 600, refreshMs: 100, pollMs: 50 });
    await expect(locks.lock('k', { timeoutMs: 2000 })).rejects.toThrow(
      new RegExp(`timed out after 2000 ms waiting for the lock .*k\\.lock, held by pid ${holder.pid} on host`),
    );
    const info = await locks.holder('k');
    expect(info).toMatchObject({ pid: holder.pid });
    expect(Date.now() - Date.parse(info!.updated)).toBeLessThan(600);
    expect(Date.now() - Date.parse(info!.created)).toBeGreaterThan(2000);
  });

  it('takes over a live but hung holder after staleMs; the holder then sees the loss', async () => {
    const holder = startChild({ mode: 'hang', storage, key: 'k', ms: 2000, options: { staleMs: 600, refreshMs: 100 } });
    await holder.line('ACQUIRED');
    const locks = new FileLocker(storage, { staleMs: 600, refreshMs: 100, pollMs: 50 });
    const onTakeover = jest.fn();
    const started = Date.now();
    const lock = await locks.lock('k', { purpose: 'taker', timeoutMs: 3000, onTakeover });
    expect(Date.now() - started).toBeLessThan(1500);
    expect(onTakeover).toHaveBeenCalledWith(expect.objectContaining({ pid: holder.pid }), 'expired');

    expect(await holder.line('STILLHELD')).toBe('STILLHELD false');
    expect(await holder.line('LOST')).toBe('LOST true');
    expect((await holder.exited).code).toBe(0);
    // The former holder's release() left our lock alone.
    expect(await lock.stillHeld()).toBe(true);
    expect(await locks.holder('k')).toMatchObject({ pid: process.pid, purpose: 'taker' });
    await lock.release();
  });

  it('removes its lock files when the process exits without releasing', async () => {
    const child = startChild({ mode: 'exit', storage, key: 'k' });
    await child.line('ACQUIRED');
    expect((await child.exited).code).toBe(0);
    expect(await fsp.readdir(path.join(storage, 'locks'))).toEqual([]);
  });
});
