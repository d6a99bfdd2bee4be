/**
 * Leaf builders: real zod types (so the schema describes itself as JSON Schema) whose every
 * problem is worded by one function of the value as written — the sentence the admin reads.
 *
 * The zod type carries the shape an editor can check (type, range, pattern, enumeration); where a
 * value needs more than a pattern can say (a duration's range, a server name's grammar), a
 * `.transform()` parses it with the same parser that words its errors.
 */
import { z } from 'zod';
import { formatDuration, formatSize, parseDuration, parseSize, show, type Parsed } from './units';

export type PathSeg = string | number;

/** Words every problem with one value: the sentence an admin reads, from the value as written. */
export type Says = (value: unknown) => string;

/**
 * zod params for a leaf: every issue zod raises there is worded by `says`, and a failed check
 * aborts, so one value gets one sentence and the rules of its map wait until it is valid.
 */
export function by(says: Says): { readonly error: (issue: z.core.$ZodRawIssue) => string; readonly abort: true } {
  return { error: (issue) => says(issue.input), abort: true };
}

/** Like `by`, without the abort: for values whose map has a rule that only looks at which keys are present. */
export function byEach(says: Says): { readonly error: (issue: z.core.$ZodRawIssue) => string } {
  return { error: (issue) => says(issue.input) };
}

export function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** What a YAML document gives for `!!binary`, `!!set` or `!!omap`: an object, but no plain map. */
export const NOT_PLAIN: unique symbol = Symbol('not a plain map');

/**
 * Preprocess for open maps: a non-plain object becomes NOT_PLAIN, which the map's type check
 * rejects (z.object would otherwise read the keys of its prototype). `show` of it is "a map".
 */
export function plainMapOnly(value: unknown): unknown {
  if (!isMap(value)) return value;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null ? value : NOT_PLAIN;
}

/** Where a transform reports a problem (zod's transform context). */
export interface IssueSink {
  addIssue(issue: { code: 'custom'; message: string; path?: PathSeg[]; fatal?: boolean }): void;
}

/** A transform that parses the value, turning a parser's sentence into the leaf's issue. */
export function parsedBy<I, O>(parse: (value: I) => Parsed<O>): (value: I, ctx: IssueSink) => O {
  return (value, ctx) => {
    const parsed = parse(value);
    if (parsed.ok) return parsed.value;
    ctx.addIssue({ code: 'custom', message: parsed.error });
    return z.NEVER;
  };
}

/** The first failure of `parse` as the sentence, for the `says` of a leaf that parses. */
export function failureOf<T>(parsed: Parsed<T>, fallback: string): string {
  return parsed.ok ? fallback : parsed.error;
}

// ---------------------------------------------------------------------------------------------
// Numbers

/** A TCP port, 1–65535 (`min` 0 for listeners where 0 picks a free port). */
export function portNumber(min: 0 | 1 = 1) {
  const says: Says = (v) =>
    typeof v === 'number' ? `${v} is not a port (${min}–65535)` : `expected a port number (${min}–65535); got ${show(v)}`;
  return z.number(by(says)).int(by(says)).min(min, by(says)).max(65535, by(says));
}

/** A whole number in [min, max]; `what` names the unit in the error ("connections"). */
export function count(min: number, max: number, what: string) {
  const says: Says = (v) => `expected a whole number of ${what} (${min}–${max}); got ${show(v)}`;
  return z.number(by(says)).int(by(says)).min(min, by(says)).max(max, by(says));
}

/** What parseSize accepts as text: a number and a unit, or a whole number of bytes. */
const SIZE_PATTERN = /^\s*(?:(?:\d+(?:\.\d+)?|\.\d+)\s*(?:[Bb]|[KkMmGgTt][Ii]?[Bb])|(?:\d+(?:\.0+)?|\.0+))\s*$/;

/** A size like 32KiB or a number of bytes, parsed to bytes, within [min, max]. */
export function size(min: number, max?: number) {
  const range = max === undefined ? `at least ${min === 1 ? '1 byte' : formatSize(min)}` : `between ${formatSize(min)} and ${formatSize(max)}`;
  const says: Says = (v) => {
    const bytes = parseSize(v);
    if (!bytes.ok) return bytes.error;
    return `must be ${range}; got ${show(v)}`;
  };
  let bytes = z.number(by(says)).int(by(says)).min(min, by(says));
  if (max !== undefined) bytes = bytes.max(max, by(says));
  return z
    .union([bytes, z.string(by(says)).regex(SIZE_PATTERN, by(says))], by(says))
    .transform((v, ctx): number => {
      const parsed = parseSize(v);
      if (parsed.ok && parsed.value >= min && (max === undefined || parsed.value <= max)) return parsed.value;
      ctx.addIssue({ code: 'custom', message: says(v) });
      return z.NEVER;
    });
}

/** What parseDuration accepts as text: a number with an optional unit (none: seconds). */
const DURATION_PATTERN = /^\s*(?:\d+(?:\.\d+)?|\.\d+)\s*(?:ms|s|m|h|d)?\s*$/;

export interface DurationRule {
  readonly min: number;
  readonly max: number;
  readonly wholeSeconds?: boolean;
  /** One sentence for every range problem, instead of the "at least / at most / whole seconds" ones. */
  readonly outOfRange?: string;
}

/** Why `ms` (parsed from `value`) breaks `rule`, or undefined. */
function durationProblem(ms: number, value: unknown, rule: DurationRule): string | undefined {
  const bad = ms < rule.min || ms > rule.max || (rule.wholeSeconds === true && ms % 1000 !== 0);
  if (!bad) return undefined;
  if (rule.outOfRange !== undefined) return `${rule.outOfRange}; got ${show(value)}`;
  if (ms < rule.min) return `must be at least ${formatDuration(rule.min)}; got ${show(value)}`;
  if (ms > rule.max) return `must be at most ${formatDuration(rule.max)}; got ${show(value)}`;
  return `must be whole seconds; got ${show(value)}`;
}

/** A duration like 330s, 5m or 7d (a bare number is seconds), parsed to milliseconds. */
export function duration(rule: DurationRule) {
  const says: Says = (v) => {
    const ms = parseDuration(v);
    if (!ms.ok) return ms.error;
    return durationProblem(ms.value, v, rule) ?? `invalid duration ${show(v)}`;
  };
  return z
    .union([z.number(by(says)).min(0, by(says)), z.string(by(says)).regex(DURATION_PATTERN, by(says))], by(says))
    .transform((v, ctx): number => {
      const ms = parseDuration(v);
      const problem = ms.ok ? durationProblem(ms.value, v, rule) : ms.error;
      if (ms.ok && problem === undefined) return ms.value;
      ctx.addIssue({ code: 'custom', message: problem ?? says(v) });
      return z.NEVER;
    });
}

// ---------------------------------------------------------------------------------------------
// Text

/** One of a fixed set of words. */
export function oneOf<const T extends string>(allowed: readonly T[]) {
  const says: Says = (v) => `expected one of ${allowed.join(', ')}; got ${show(v)}`;
  return z.enum(allowed as unknown as [T, ...T[]], by(says));
}

/** Non-blank, no NUL: what a file-system path needs to be. */
const PATH_PATTERN = /^[^\0]*[^\0\s][^\0]*$/;

function pathSays(what: string): Says {
  return (v) => {
    if (v === undefined) return `missing; give the path of ${what}`;
    if (typeof v !== 'string' || v.trim() === '') return `expected the path of ${what}; got ${show(v)}`;
    return 'a path cannot contain a NUL character';
  };
}

/** A file-system path (relative paths resolve against the config file's directory). */
export function filePath(what: string) {
  return z.string(by(pathSays(what))).regex(PATH_PATTERN, by(pathSays(what)));
}

/** The path check alone, for values that word their problems themselves (storage). */
export function checkPath(value: unknown, what: string): Parsed<string> {
  if (typeof value === 'string' && PATH_PATTERN.test(value)) return { ok: true, value };
  return { ok: false, error: pathSays(what)(value) };
}

/** http(s)://host...: what base URLs, webhooks and support pages must look like. */
export function isHttpUrl(text: string): boolean {
  if (!/^https?:\/\//i.test(text) || !URL.canParse(text)) return false;
  const u = new URL(text);
  return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
}

const HTTP_URL_PATTERN = /^[Hh][Tt][Tt][Pp][Ss]?:\/\//;

/** An http:// or https:// URL with a host. */
export function httpUrl(says: Says) {
  return z.string(by(says)).regex(HTTP_URL_PATTERN, by(says)).refine(isHttpUrl, by(says));
}

const emailSays: Says = (v) => `expected an email address like admin@example.com; got ${show(v)}`;

export const email = z.string(by(emailSays)).regex(/^[^@\s]+@[^@\s]+$/, by(emailSays));

// ---------------------------------------------------------------------------------------------
// Lists

export interface ListOptions<T extends z.ZodType> {
  /** "ports like [443, 8448]": completes "expected a list of ..." and "list at least one of ...". */
  readonly what: string;
  readonly item: T;
  readonly nonEmpty?: boolean;
  /** A lone item is accepted as a list of one (`https: 443`). */
  readonly single?: boolean;
}

/**
 * A list checked item by item; an item equal to an earlier valid one is "listed twice". The
 * duplicate check runs beside the items (an intersection), so it reports even when another item
 * is invalid; the generated JSON Schema folds it into `uniqueItems`.
 */
export function listOf<T extends z.ZodType>(opts: ListOptions<T>) {
  const listSays: Says = (v) =>
    Array.isArray(v) && v.length === 0 ? `list at least one of ${opts.what}` : `expected a list of ${opts.what}; got ${show(v)}`;
  const items = z.array(opts.item, by(listSays));
  const unique = z
    .array(z.unknown(), by(listSays))
    .superRefine((list, ctx) => {
      const seen: string[] = [];
      list.forEach((item, i) => {
        if (!opts.item.safeParse(item).success) return;
        const key = JSON.stringify(item);
        // Fatal like any other problem of the list: the rules of its map wait until it is fixed.
        if (seen.includes(key)) ctx.addIssue({ code: 'custom', path: [i], message: `${show(item)} is listed twice`, fatal: true });
        else seen.push(key);
      });
    })
    .meta({ uniqueItems: true });
  const list = z.intersection(opts.nonEmpty ? items.min(1, by(listSays)) : items, unique);
  if (!opts.single) return list.transform((v): z.output<T>[] => v);
  const oneSays: Says = (v) => (v !== null && !isMap(v) && !Array.isArray(v) ? sentenceOf(opts.item, v) : listSays(v));
  return z.union([opts.item, list], by(oneSays)).transform((v): z.output<T>[] => (Array.isArray(v) ? v : [v]));
}

/** The sentence `schema` has for `value` (its first issue's message). */
function sentenceOf(schema: z.ZodType, value: unknown): string {
  const result = schema.safeParse(value);
  return result.success ? `invalid value ${show(value)}` : (result.error.issues[0]?.message ?? `invalid value ${show(value)}`);
}
