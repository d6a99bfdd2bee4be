/**
 * zod issues → problems tied to key paths, with the sentences the schema wrote; unknown keys get a
 * "did you mean" suggestion from the keys known in that map (or elsewhere in the document).
 */
import type { z } from 'zod';
import type { PathSeg } from './leaves';
import type { PathIssue } from './rules';
import { KNOWN_KEYS } from './sections';

/** `['listen', 'https', 1]` → `listen.https[1]`; keys that are not plain words are quoted. */
export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** `['tls', 'files', 0]` → `tls.files[]`: the KNOWN_KEYS entry of the map at that path. */
function patternOf(path: readonly PathSeg[]): string {
  return path
    .map((seg) => (typeof seg === 'number' ? '[]' : `.${seg}`))
    .join('')
    .replace(/^\./, '');
}

function normalizeKey(key: string): string {
  return key.trim().toLowerCase().replace(/[-\s]/g, '_');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The key the admin probably meant: a close sibling ("upstrem" → "upstream"), else the same key in
 * another section ("max_body_size" at the top → "proxy.max_body_size").
 */
export function suggestKey(key: string, pattern: string): string | undefined {
  const wanted = normalizeKey(key);
  const siblings = KNOWN_KEYS[pattern] ?? [];
  // 1. A sibling within a small edit distance ("upstrem" → "upstream", "Server-Name" → "server_name").
  let best: { key: string; dist: number } | undefined;
  for (const candidate of siblings) {
    const norm = normalizeKey(candidate);
    const dist = editDistance(wanted, norm);
    if (dist <= (norm.length >= 6 ? 2 : 1) && dist < (best?.dist ?? Infinity)) best = { key: candidate, dist };
  }
  if (best) return best.key;
  // 2. A section and its key run together ("loglevel" → "log.level", "acme_email" → "acme.email").
  const squashed = wanted.replace(/_/g, '');
  for (const [other, keys] of Object.entries(KNOWN_KEYS)) {
    if (other === '' || other.includes('[]')) continue;
    const match = keys.find((k) => `${other}${k}`.replace(/_/g, '') === squashed);
    if (match !== undefined) return `${other}.${match}`;
  }
  // 3. The same key in another section ("max_body_size" at the top → "proxy.max_body_size").
  for (const [other, keys] of Object.entries(KNOWN_KEYS)) {
    if (other === pattern || other.includes('[]')) continue;
    const match = keys.find((k) => normalizeKey(k) === wanted);
    if (match !== undefined) return other === '' ? match : `${other}.${match}`;
  }
  // 4. A sibling the key abbreviates or extends ("certificate" → "cert").
  return siblings.find((candidate) => {
    const norm = normalizeKey(candidate);
    return Math.min(norm.length, wanted.length) >= 3 && (norm.startsWith(wanted) || wanted.startsWith(norm));
  });
}

function unknownKeyMessage(key: string, pattern: string): string {
  const suggestion = suggestKey(key, pattern);
  if (suggestion !== undefined) {
    const elsewhere = pattern !== '' && !suggestion.includes('.') && !(KNOWN_KEYS[pattern] ?? []).includes(suggestion);
    return `unknown key '${key}' (did you mean ${elsewhere ? 'the top-level ' : ''}'${suggestion}'?)`;
  }
  const known = KNOWN_KEYS[pattern];
  return known ? `unknown key '${key}'; allowed here: ${known.join(', ')}` : `unknown key '${key}'`;
}

/**
 * The one branch of a union that took the value's shape — its problems are all inside the value
 * (a list with a bad item, a map with a bad key) — if exactly one did. Otherwise the union's own
 * sentence, about the value as a whole, says it best.
 */
function branchInside(branches: readonly (readonly z.core.$ZodIssue[])[]): readonly z.core.$ZodIssue[] | undefined {
  const inside = branches.filter((b) => b.length > 0 && b.every((i) => i.path.length > 0 || i.code === 'unrecognized_keys'));
  return inside.length === 1 ? inside[0] : undefined;
}

function collect(issues: readonly z.core.$ZodIssue[], prefix: readonly PathSeg[], out: PathIssue[]): void {
  for (const issue of issues) {
    const path = [...prefix, ...issue.path.map((seg) => (typeof seg === 'number' ? seg : String(seg)))];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...path, key], at: 'key', message: unknownKeyMessage(key, patternOf(path)) });
      continue;
    }
    const inside = issue.code === 'invalid_union' ? branchInside(issue.errors) : undefined;
    if (inside !== undefined) collect(inside, path, out);
    else out.push({ path, message: issue.message });
  }
}

/** The problems of a failed parse, each once, in the order zod found them. */
export function toPathIssues(issues: readonly z.core.$ZodIssue[]): PathIssue[] {
  const all: PathIssue[] = [];
  collect(issues, [], all);
  const seen = new Set<string>();
  return all.filter((issue) => {
    const id = JSON.stringify([issue.path, issue.at ?? '', issue.message]);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}
