/**
 * The `pretty` log format: pino's JSON lines turned into aligned text for a terminal —
 * `14:38:29.716 INFO  certs   certificate installed  names=[example.org] notAfter=…` — coloured by
 * level when writing to a terminal. A line that is not JSON passes through unchanged.
 */
import type pino from 'pino';
import { logSafe } from './log-safe';

const COLOURS: Readonly<Record<string, string>> = {
  trace: '\x1b[90m',
  debug: '\x1b[36m',
  info: '\x1b[32m',
  warn: '\x1b[33m',
  error: '\x1b[31m',
  fatal: '\x1b[41;97m',
};
const RESET = '\x1b[0m';
/** Fields shown in the line's head rather than as key=value. */
const HEAD = new Set(['level', 'time', 'pid', 'msg', 'component', 'worker']);

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? logSafe(v) : logSafe(JSON.stringify(v));
  return JSON.stringify(v) ?? String(v);
}

/** One JSON log line as text; null when it is not a JSON object. */
export function formatPretty(line: string, colour: boolean): string | null {
  let entry: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
    entry = parsed as Record<string, unknown>;
  } catch {
    return null;
  }
  const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '';
  const level = String(entry.level ?? '');
  const shownLevel = level.toUpperCase().padEnd(5);
  const who = `${String(entry.component ?? '')}${entry.worker === undefined ? '' : ` w${String(entry.worker)}`}`.padEnd(9);
  const rest = Object.entries(entry)
    .filter(([k]) => !HEAD.has(k))
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
  const head = colour && COLOURS[level] !== undefined ? `${COLOURS[level]}${shownLevel}${RESET}` : shownLevel;
  return `${time} ${head} ${who} ${String(entry.msg ?? '')}${rest === '' ? '' : `  ${rest}`}\n`;
}

/** A pino destination that writes the pretty form of every line to `out`. */
export function prettyStream(out: pino.DestinationStream, colour = process.stdout.isTTY === true): pino.DestinationStream {
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) {
        if (line === '') continue;
        out.write(formatPretty(line, colour) ?? `${line}\n`);
      }
    },
  };
}
