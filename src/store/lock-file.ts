/**
 * The lock file's record and the pure decision whether a lock is stale (see file-lock.ts).
 */
import * as fs from 'node:fs';
import type { LockHolder } from './storage';

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
  /** It names this process's pid on this machine but a nonce this process never wrote: an earlier process had our pid. */
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
  /** This process: its pid, and whether it wrote the lock file with a given nonce. */
  readonly self?: { readonly pid: number; readonly holds: (nonce: string) => boolean };
}

/** Why the lock described by `input` is stale, or null when it is not. */
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
  const { pid, host, scope, created, updated, nonce, purpose } = value as Record<string, unknown>;
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

let machineScope: string | undefined | null = null;

/** `<boot id>/<pid namespace>` on Linux (undefined elsewhere): where a pid identifies one process. */
export function localScope(): string | undefined {
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

/** "pid 123 on host h (purpose), since …, last refreshed …" for messages. */
export function describeHolder(holder: LockHolder | null): string {
  if (holder === null) return 'an unknown holder';
  if (holder.pid === 0) return `an unreadable lock file last modified ${holder.updated}`;
  const purpose = holder.purpose !== undefined ? ` (${holder.purpose})` : '';
  return `pid ${holder.pid} on host ${JSON.stringify(holder.host)}${purpose}, since ${holder.created}, last refreshed ${holder.updated}`;
}
