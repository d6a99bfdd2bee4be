/**
 * Storage on the local file system: a key is a path under the root (`certificates/local/a.example/
 * a.example.crt`). Directories are 0700, secrets 0600, other files 0644. Every write is atomic: a
 * temp file in the same directory, fsync, rename over the target, fsync the directory. Locks are
 * lock files under `locks/` (file-lock.ts).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FileLocker, type FileLockerOptions } from './file-lock';
import { keySegments } from './keys';
import { ensurePrivateDirectory, securePrivateRoot, syncDirectory } from './private-dir';
import type { HeldLock, KeyInfo, LockOptions, Storage, WriteOptions } from './storage';

export const SECRET_MODE = 0o600;
export const PUBLIC_MODE = 0o644;

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export class FileStorage implements Storage {
  /** Absolute storage root. */
  readonly root: string;
  readonly locks: FileLocker;

  constructor(root: string, lockOptions: FileLockerOptions = {}) {
    this.root = path.resolve(root);
    this.locks = new FileLocker(this.root, lockOptions);
  }

  /** Absolute path of a key (validated). */
  private file(key: string): string {
    return path.join(this.root, ...keySegments(key));
  }

  describe(key?: string): string {
    return key === undefined ? this.root : this.file(key);
  }

  async load(key: string): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.file(key));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** Atomic replacement; missing directories are created 0700. The lock is not checked (no fencing here). */
  async store(key: string, value: string | Uint8Array, options: WriteOptions = {}): Promise<void> {
    const target = this.file(key);
    const dir = path.dirname(target);
    await ensurePrivateDirectory(dir);
    const mode = options.secret === true ? SECRET_MODE : PUBLIC_MODE;
    const temp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
    let renamed = false;
    try {
      const handle = await fsp.open(temp, 'wx', mode);
      try {
        await handle.chmod(mode); // the umask may have narrowed or widened what open() gave
        await handle.writeFile(value);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fsp.rename(temp, target);
      renamed = true;
      await syncDirectory(dir);
    } finally {
      if (!renamed) await fsp.rm(temp, { force: true }).catch(() => undefined);
    }
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.file(key), { recursive: true, force: true });
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async list(prefix: string, recursive: boolean): Promise<string[]> {
    const base = prefix === '' ? this.root : this.file(prefix);
    let entries: string[];
    try {
      entries = (await fsp.readdir(base, { recursive, encoding: 'utf8' })).map((e) => e.split(path.sep).join('/'));
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    return entries.sort().map((e) => (prefix === '' ? e : `${prefix}/${e}`));
  }

  async stat(key: string): Promise<KeyInfo | null> {
    try {
      const s = await fsp.stat(this.file(key));
      return { key, modifiedMs: s.mtimeMs, size: s.size, terminal: !s.isDirectory() };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  lock(key: string, options?: LockOptions): Promise<HeldLock> {
    return this.locks.lock(key, options);
  }

  /**
   * Creates the root (0700) when it is not there, and narrows one that others can read or enter
   * to 0700 (it holds private keys). Returns the mode it had when it was narrowed, else null.
   */
  ensureRoot(): Promise<number | null> {
    return securePrivateRoot(this.root);
  }
}
