/**
 * The doctor's results and their two renderings: a table for people (every WARN/FAIL followed by
 * its fix on one line) and a JSON array for monitors. Pure.
 */

export type Status = 'PASS' | 'WARN' | 'FAIL';

/** What one check found, before it is given its name. */
export interface Verdict {
  readonly status: Status;
  readonly detail: string;
  /** One line saying what to do; null for PASS. */
  readonly fix: string | null;
}

export interface CheckResult extends Verdict {
  readonly check: string;
}

export const passed = (detail: string): Verdict => ({ status: 'PASS', detail, fix: null });
export const warned = (detail: string, fix: string): Verdict => ({ status: 'WARN', detail, fix });
export const failed = (detail: string, fix: string): Verdict => ({ status: 'FAIL', detail, fix });

export function named(check: string, verdict: Verdict): CheckResult {
  return { check, ...verdict };
}

/** 0 when nothing failed (warnings allowed), 1 when any check failed. */
export function exitCodeOf(results: readonly CheckResult[]): 0 | 1 {
  return results.some((r) => r.status === 'FAIL') ? 1 : 0;
}

export function formatJson(results: readonly CheckResult[]): string {
  return `${JSON.stringify(results.map(({ check, status, detail, fix }) => ({ check, status, detail, fix })), null, 2)}\n`;
}

export function formatTable(results: readonly CheckResult[]): string {
  const width = Math.max('CHECK'.length, ...results.map((r) => r.check.length));
  const indent = ' '.repeat(width + 2 + 'STATUS'.length + 2);
  const lines = [`${'CHECK'.padEnd(width)}  STATUS  DETAIL`];
  for (const r of results) {
    lines.push(`${r.check.padEnd(width)}  ${r.status}    ${r.detail}`);
    if (r.fix !== null) lines.push(`${indent}fix: ${r.fix}`);
  }
  const count = (s: Status): number => results.filter((r) => r.status === s).length;
  const warnings = count('WARN');
  lines.push('', `${count('PASS')} passed, ${warnings} warning${warnings === 1 ? '' : 's'}, ${count('FAIL')} failed`);
  return `${lines.join('\n')}\n`;
}
