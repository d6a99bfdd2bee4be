/**
 * A second Storage + Locker, in memory, for tests: what runs on it runs on any storage that keeps
 * the contract of src/store/storage.ts — nothing may depend on files. Edges in one process share
 * one instance as processes share a storage directory.
 *
 * Keys follow the same rules as the file storage's (keySegments). Locks are granted in turn to
 * waiters; each grant carries a fencing token, and a write made under a lock that is no longer the
 * current grant of its key is refused — the check a Redis storage would make.
 */
import * as os from 'node:os';
import { keySegments } from '../../src/store/keys';
import type { HeldLock, KeyInfo, LockHolder, LockOptions, Storage, WriteOptions } from '../../src/store/storage';

interface Entry {
  readonly value: Buffer;
  readonly modifiedMs: number;
  readonly secret: boolean;
}

interface Grant {
  readonly token: number;
  readonly holder: LockHolder;
  released: boolean;
}

export class MemoryStorage implements Storage {
  private readonly entries = new Map<string, Entry>();
  private readonly grants = new Map<string, Grant>();
  private readonly waiters = new Map<string, Array<() => void>>();
  private lastModified = 0;
  private tokens = 0;
  /** Every write, in order (for tests that check what was written under which lock). */
  readonly writes: Array<{ readonly key: string; readonly token: number | null }> = [];

  describe(key?: string): string {
    return key === undefined ? 'memory:' : `memory:${key}`;
  }

  async load(key: string): Promise<Buffer | null> {
    keySegments(key);
    const entry = this.entries.get(key);
    return entry === undefined ? null : Buffer.from(entry.value);
  }

  async store(key: string, value: string | Uint8Array, options: WriteOptions = {}): Promise<void> {
    keySegments(key);
    this.fence(key, options.lock);
    // Strictly increasing, so a reader comparing modification times sees every write.
    this.lastModified = Math.max(Date.now(), this.lastModified + 1);
    this.entries.set(key, { value: Buffer.from(value), modifiedMs: this.lastModified, secret: options.secret === true });
    this.writes.push({ key, token: options.lock?.token ?? null });
  }

  async delete(key: string, options: Pick<WriteOptions, 'lock'> = {}): Promise<void> {
    keySegments(key);
    this.fence(key, options.lock);
    for (const k of [...this.entries.keys()]) if (k === key || k.startsWith(`${key}/`)) this.entries.delete(k);
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async list(prefix: string, recursive: boolean): Promise<string[]> {
    const base = prefix === '' ? '' : `${prefix}/`;
    const out = new Set<string>();
    for (const key of this.entries.keys()) {
      if (!key.startsWith(base)) continue;
      const rest = key.slice(base.length).split('/');
      if (recursive) for (let i = 1; i <= rest.length; i++) out.add(base + rest.slice(0, i).join('/'));
      else out.add(base + rest[0]!);
    }
    return [...out].sort();
  }

  async stat(key: string): Promise<KeyInfo | null> {
    keySegments(key);
    const entry = this.entries.get(key);
    if (entry !== undefined) return { key, modifiedMs: entry.modifiedMs, size: entry.value.length, terminal: true };
    const below = [...this.entries.entries()].filter(([k]) => k.startsWith(`${key}/`));
    if (below.length === 0) return null;
    return { key, modifiedMs: Math.max(...below.map(([, e]) => e.modifiedMs)), size: 0, terminal: false };
  }

  /** Whether `key` was written as a secret. */
  isSecret(key: string): boolean {
    return this.entries.get(key)?.secret === true;
  }

  async lock(key: string, options: LockOptions = {}): Promise<HeldLock> {
    const started = Date.now();
    let waiting = false;
    for (;;) {
      options.signal?.throwIfAborted();
      const current = this.grants.get(key);
      if (current === undefined || current.released) return this.grant(key, options.purpose);
      if (!waiting) {
        waiting = true;
        options.onWait?.(current.holder);
      }
      const left = options.timeoutMs === undefined ? Infinity : started + options.timeoutMs - Date.now();
      if (left <= 0) throw new Error(`timed out after ${options.timeoutMs} ms waiting for the lock ${key}`);
      await new Promise<void>((resolve, reject) => {
        const queue = this.waiters.get(key) ?? [];
        this.waiters.set(key, queue);
        const timer = Number.isFinite(left) ? setTimeout(wake, left) : null;
        const onAbort = (): void => {
          if (timer !== null) clearTimeout(timer);
          reject(options.signal!.reason);
        };
        options.signal?.addEventListener('abort', onAbort, { once: true });
        function wake(): void {
          if (timer !== null) clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          resolve();
        }
        queue.push(wake);
      });
    }
  }

  /** Who holds `key`, or null. */
  holder(key: string): LockHolder | null {
    const grant = this.grants.get(key);
    return grant === undefined || grant.released ? null : grant.holder;
  }

  private grant(key: string, purpose: string | undefined): HeldLock {
    const now = new Date().toISOString();
    const grant: Grant = {
      token: ++this.tokens,
      holder: { pid: process.pid, host: os.hostname(), created: now, updated: now, ...(purpose !== undefined ? { purpose } : {}) },
      released: false,
    };
    this.grants.set(key, grant);
    const storage = this;
    return {
      key,
      token: grant.token,
      async stillHeld() {
        return !grant.released && storage.grants.get(key) === grant;
      },
      async release() {
        if (grant.released) return;
        grant.released = true;
        if (storage.grants.get(key) === grant) storage.grants.delete(key);
        for (const wake of storage.waiters.get(key)?.splice(0) ?? []) wake();
      },
    };
  }

  /** Refuses a write under a lock that is no longer the current grant of its key (fencing). */
  private fence(key: string, lock: HeldLock | undefined): void {
    if (lock === undefined) return;
    const grant = this.grants.get(lock.key);
    if (grant === undefined || grant.released || grant.token !== lock.token) {
      throw new Error(`refused to write ${key}: the lock ${lock.key} (token ${lock.token}) is no longer held`);
    }
  }
}
