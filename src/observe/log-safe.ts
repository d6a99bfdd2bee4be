/**
 * Text from clients (Host, path, method, SNI) on its way into a log line: control characters (C0,
 * DEL, C1 — U+009B is a terminal's CSI), line separators and bidirectional overrides are written as
 * visible `\uXXXX` escapes, so a request cannot move a terminal's cursor, recolour it, forge a line
 * or reorder what an operator reads.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_TEST = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

export function logSafe(text: string): string;
export function logSafe(text: string | undefined): string | undefined;
export function logSafe(text: string | undefined): string | undefined {
  if (text === undefined || !UNSAFE_TEST.test(text)) return text;
  return text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
