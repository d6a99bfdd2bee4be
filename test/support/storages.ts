/**
 * Suites that run over both storage kinds: the file storage (the default composition, in
 * `<dir>/certs`) and the in-memory one (test/support/memory-storage.ts, injected through
 * EdgeOptions.storage). One MemoryStorage per directory, kept across an edge's restarts and shared
 * by every edge started on that directory.
 */
import * as path from 'node:path';
import type { EdgeOptions } from '../../src/edge';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import type { Storage } from '../../src/store/storage';
import { MemoryStorage } from './memory-storage';

export type StorageKind = 'file' | 'memory';
export const STORAGE_KINDS: readonly StorageKind[] = ['file', 'memory'];

export class TestStorages {
  private readonly memories = new Map<string, MemoryStorage>();

  constructor(readonly kind: StorageKind) {}

  /** The storage of the edges on `dir` (their plan.storage is `<dir>/certs`). */
  storage(dir: string): Storage {
    if (this.kind === 'file') return new FileStorage(path.join(dir, 'certs'));
    let memory = this.memories.get(dir);
    if (memory === undefined) {
      memory = new MemoryStorage();
      this.memories.set(dir, memory);
    }
    return memory;
  }

  /** What an edge on `dir` is started with: nothing for files (the default), the MemoryStorage otherwise. */
  edgeOptions(dir: string): EdgeOptions {
    return this.kind === 'file' ? {} : { storage: this.storage(dir) };
  }

  certificates(dir: string): CertificateStore {
    return new CertificateStore(this.storage(dir));
  }

  /** Forget the memory storages (after each test). */
  clear(): void {
    this.memories.clear();
  }
}
