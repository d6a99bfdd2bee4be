/** Small shared test helpers: captured logs and polling with a deadline (never a blind sleep). */
import { createLogger, type Logger } from '../../src/observe/log';

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

/** A debug-level logger whose JSON lines are collected in `lines`. */
export function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

/** Resolves once `predicate()` holds; rejects naming `what` after `timeoutMs`. */
export async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
