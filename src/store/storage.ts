/**
 * What the edge keeps between runs, and how processes sharing it take turns: CertMagic's six
 * verbs over '/'-separated keys (`certificates/<issuer>/<name>/<name>.crt`, see keys.ts), and a
 * Locker. Nothing above src/store/ knows whether the bytes live in files, in Redis or in memory.
 */

/** What `stat` knows about a key. */
export interface KeyInfo {
  readonly key: string;
  /** Last modification, ms since the epoch: how a reader notices that another process wrote it. */
  readonly modifiedMs: number;
  readonly size: number;
  /** false when the key is only a prefix of other keys (a directory). */
  readonly terminal: boolean;
}

export interface WriteOptions {
  /** The value is a secret (a private key): kept from other users (the file storage writes it 0600). */
  readonly secret?: boolean;
  /**
   * The lock this write is made under. A storage with fencing tokens refuses the write once the
   * lock was lost (taken over by another process); one without (the file storage) ignores it.
   */
  readonly lock?: HeldLock;
}

export interface Storage extends Locker {
  /** The value of `key`, or null when there is none. */
  load(key: string): Promise<Buffer | null>;
  /** Replaces the value of `key` atomically: a reader sees the old value or the new one, never a mix. */
  store(key: string, value: string | Uint8Array, options?: WriteOptions): Promise<void>;
  /** Removes `key` (and every key under it); no error when there is none. */
  delete(key: string, options?: Pick<WriteOptions, 'lock'>): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Keys directly under `prefix` (every key below it when `recursive`); [] when there are none. */
  list(prefix: string, recursive: boolean): Promise<string[]>;
  /** null when there is no such key. */
  stat(key: string): Promise<KeyInfo | null>;
  /** Where `key` (or, without one, the storage itself) lives, for log lines and messages: a path, a URL. */
  describe(key?: string): string;
}

/** Who holds a lock, as far as the locker knows. */
export interface LockHolder {
  /** 0 when the lock's record cannot be read. */
  readonly pid: number;
  /** '' when the lock's record cannot be read. */
  readonly host: string;
  /** ISO 8601: when the lock was taken. */
  readonly created: string;
  /** ISO 8601: when the holder last showed it was alive. */
  readonly updated: string;
  readonly purpose?: string;
}

export interface LockOptions {
  /** Recorded with the lock, for whoever waits on it (e.g. "certificate for a.example"). */
  readonly purpose?: string;
  /** Give up waiting after this long (rejects naming the lock and its holder). Default: wait forever. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Called once when the lock is busy and waiting starts, with its holder. */
  readonly onWait?: (holder: LockHolder | null) => void;
  /** Called when a stale lock is taken over, with its former holder and why it was stale. */
  readonly onTakeover?: (holder: LockHolder | null, reason: string) => void;
}

export interface Locker {
  /** Waits until the lock `key` (see keys.ts: `issue_cert_<issuer>_<name>`, …) is ours. */
  lock(key: string, options?: LockOptions): Promise<HeldLock>;
}

export interface HeldLock {
  readonly key: string;
  /**
   * A number that grows with every grant of this lock, for storages that check it on writes
   * (fencing); undefined when the locker has none (the file locker).
   */
  readonly token?: number;
  /** false once the lock was lost: released, or taken over because this process looked dead or hung. */
  stillHeld(): Promise<boolean>;
  release(): Promise<void>;
}
