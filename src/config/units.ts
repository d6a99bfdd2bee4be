/**
 * Sizes ("50MiB", "10MB", "512KiB", a plain integer = bytes) and durations ("250ms", "330s", "5m",
 * "1h", "7d", a plain number = seconds). Pure; errors are sentences meant for the admin.
 */

/** The outcome of parsing one value: the value, or a sentence saying what is allowed. */
export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

export function ok<T>(value: T): Parsed<T> {
  return { ok: true, value };
}

export function fail<T = never>(error: string): Parsed<T> {
  return { ok: false, error };
}

/** A short rendering of any config value for error messages: `'text'`, `42`, `a list`, `a map`. */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'an empty value';
  if (typeof value === 'string') {
    const text = value.length > 60 ? `${value.slice(0, 57)}...` : value;
    return `'${text}'`;
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  return typeof value;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

const SIZE_HELP = 'a size like 50MiB, 10MB, 512KiB or a whole number of bytes';

/** Parse a size into bytes (an integer). Units are case-insensitive; KB = 1000, KiB = 1024. */
export function parseSize(input: unknown): Parsed<number> {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) return fail(`expected ${SIZE_HELP}; got ${show(input)}`);
    return ok(input);
  }
  if (typeof input !== 'string') return fail(`expected ${SIZE_HELP}; got ${show(input)}`);
  const text = input.trim();
  if (text.startsWith('-')) return fail(`sizes cannot be negative; got ${show(input)}`);
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)$/.exec(text);
  if (!m) return fail(`expected ${SIZE_HELP}; got ${show(input)}`);
  const amount = Number(m[1]);
  const unit = m[2] ?? '';
  let factor = 1;
  if (unit !== '') {
    const f = SIZE_UNITS[unit.toLowerCase()];
    if (f === undefined) {
      return fail(`unknown size unit '${unit}' in ${show(input)}; use B, KB, MB, GB, KiB, MiB or GiB`);
    }
    factor = f;
  } else if (!Number.isInteger(amount)) {
    return fail(`a size without a unit is a whole number of bytes; got ${show(input)}`);
  }
  const bytes = Math.round(amount * factor);
  if (!Number.isSafeInteger(bytes)) return fail(`${show(input)} is too large`);
  return ok(bytes);
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const DURATION_HELP = 'a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds)';

/** Parse a duration into milliseconds (an integer). */
export function parseDuration(input: unknown): Parsed<number> {
  if (typeof input === 'number') {
    if (!Number.isFinite(input)) return fail(`expected ${DURATION_HELP}; got ${show(input)}`);
    if (input < 0) return fail(`durations cannot be negative; got ${show(input)}`);
    return ok(Math.round(input * 1000));
  }
  if (typeof input !== 'string') return fail(`expected ${DURATION_HELP}; got ${show(input)}`);
  const text = input.trim();
  if (text.startsWith('-')) return fail(`durations cannot be negative; got ${show(input)}`);
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)$/.exec(text);
  if (!m) return fail(`expected ${DURATION_HELP}; got ${show(input)}`);
  const amount = Number(m[1]);
  const unit = m[2] ?? '';
  const factor = unit === '' ? 1000 : DURATION_UNITS[unit];
  if (factor === undefined) {
    return fail(`unknown duration unit '${unit}' in ${show(input)}; use ms, s, m, h or d`);
  }
  const ms = Math.round(amount * factor);
  if (!Number.isSafeInteger(ms)) return fail(`${show(input)} is too long`);
  return ok(ms);
}

/** Render milliseconds in the largest unit that divides them exactly: 7d, 1h, 330s, 250ms. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const f = DURATION_UNITS[unit]!;
    if (ms % f === 0) return `${ms / f}${unit}`;
  }
  return `${ms}ms`;
}

/** Render bytes in the largest unit that divides them exactly: 50MiB, 10MB, 1234 bytes. */
export function formatSize(bytes: number): string {
  if (bytes === 0) return '0 bytes';
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB', 'TB', 'GB', 'MB', 'KB'] as const) {
    const f = SIZE_UNITS[unit.toLowerCase()]!;
    if (bytes % f === 0) return `${bytes / f}${unit}`;
  }
  return `${bytes} bytes`;
}
