/**
 * YAML text → LoadResult. Parses with positions, validates (schema.ts), expands (expand.ts), and
 * ties every problem to FILE:LINE:COL and a dotted key path. Never throws for bad input.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from 'yaml';
import { expandConfig } from './expand';
import type { ConfigIssue, LoadResult } from './plan';
import { formatPath, validateConfig, type PathIssue, type PathSeg } from './schema';

/** Read and load a config file. `file` is reported as given; relative paths resolve against its directory. */
export function loadConfigFile(file: string): LoadResult {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return { ok: false, errors: [{ file, key: '', message: readProblem(err, file) }], warnings: [] };
  }
  return loadConfigText(text, file, path.dirname(path.resolve(file)));
}

function readProblem(err: unknown, file: string): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = path.resolve(file);
  if (code === 'ENOENT') return `cannot read the config: there is no file ${where} (pass another one with --config)`;
  if (code === 'EACCES' || code === 'EPERM') return `cannot read the config: permission denied for ${where}`;
  if (code === 'EISDIR') return `cannot read the config: ${where} is a directory, not a YAML file`;
  return `cannot read the config: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * Load config text. Pure: no file-system access. `file` labels issues (and names the plan's source);
 * `baseDir` is the directory relative paths in the config resolve against.
 */
export function loadConfigText(text: string, file: string, baseDir: string): LoadResult {
  try {
    return load(text, file, baseDir);
  } catch (err) {
    // A bug here must still reach the admin as a config error, not a stack trace.
    const message = `internal error while loading the config: ${err instanceof Error ? err.message : String(err)}`;
    return { ok: false, errors: [{ file, key: '', message }], warnings: [] };
  }
}

type Doc = Document.Parsed;

function load(text: string, file: string, baseDir: string): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });

  const at = (offset: number | undefined, key: string, message: string): ConfigIssue => {
    if (offset === undefined) return { file, key, message };
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, key, message };
  };
  const fromPath = (issue: PathIssue): ConfigIssue => at(locate(doc, issue.path, issue.at), formatPath(issue.path), issue.message);

  const warnings: ConfigIssue[] = doc.warnings.map((w) => at(w.pos[0], '', `YAML: ${w.message}`));
  const fail = (errors: ConfigIssue[]): LoadResult => ({ ok: false, errors: sortByPlace(errors), warnings });

  if (doc.errors.length > 0) {
    return fail(
      doc.errors.map((e) => {
        if (e.code === 'DUPLICATE_KEY') {
          const keyPath = pathOfKeyAt(doc.contents, e.pos[0], []);
          const name = keyPath?.[keyPath.length - 1];
          const message = `duplicate key${name === undefined ? '' : ` '${name}'`}; a key may appear only once in a map`;
          return at(e.pos[0], keyPath ? formatPath(keyPath) : '', message);
        }
        if (e.code === 'MULTIPLE_DOCS') {
          return at(e.pos[0], '', "the file holds more than one YAML document ('---'); put the whole config in one");
        }
        return at(e.pos[0], '', `YAML syntax error: ${e.message}`);
      }),
    );
  }

  const structural: ConfigIssue[] = [];
  visit(doc, {
    Alias(_key, node) {
      if (node.resolve(doc) === undefined) {
        structural.push(at(node.range?.[0], '', `the alias *${node.source} refers to no anchor &${node.source} defined before it`));
      }
    },
    Pair(_key, pair) {
      if (pair.key !== null && !isScalar(pair.key) && !isAlias(pair.key)) {
        structural.push(at(start(pair.key), '', 'a key must be a plain name, not a list or a map'));
      }
    },
  });
  if (structural.length > 0) return fail(structural);

  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && contents.value === null)) {
    return fail([{ file, key: '', message: 'the config is empty; server_name is required' }]);
  }

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return fail([at(contents.range?.[0], '', `cannot read the YAML: ${err instanceof Error ? err.message : String(err)}`)]);
  }

  const validated = validateConfig(data);
  if (!validated.ok) return fail(validated.issues.map(fromPath));

  const source = path.isAbsolute(file) ? path.normalize(file) : path.join(path.resolve(baseDir), path.basename(file));
  const expanded = expandConfig(validated.config, { source, baseDir: path.resolve(baseDir) });
  return { ok: true, plan: expanded.plan, warnings: sortByPlace([...warnings, ...expanded.warnings.map(fromPath)]) };
}

/** Issues in document order; those tied to no place come last. Stable otherwise. */
function sortByPlace(issues: ConfigIssue[]): ConfigIssue[] {
  const rank = (i: ConfigIssue): [number, number] => [i.line ?? Number.MAX_SAFE_INTEGER, i.column ?? 0];
  return issues
    .map((issue, index) => ({ issue, index }))
    .sort((a, b) => {
      const [la, ca] = rank(a.issue);
      const [lb, cb] = rank(b.issue);
      return la - lb || ca - cb || a.index - b.index;
    })
    .map((x) => x.issue);
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}

function start(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return range?.[0];
}

/** Start of a value node, or undefined for an empty value (`key:` with nothing after it). */
function valueStart(node: unknown): number | undefined {
  if (isScalar(node) && node.value === null && node.range && node.range[0] === node.range[1]) return undefined;
  return start(node);
}

/**
 * Offset of the node at `segs`: the value (or, with at = 'key', the key) of the deepest path
 * segment that exists. A missing key thus points at the map that should hold it.
 */
function locate(doc: Doc, segs: readonly PathSeg[], at: 'key' | undefined): number | undefined {
  let node: unknown = doc.contents;
  let best = start(node);
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(seg));
      if (pair === undefined) break;
      const keyAt = start(pair.key);
      if (i === segs.length - 1 && at === 'key') return keyAt ?? best;
      best = valueStart(pair.value) ?? keyAt ?? best;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) break;
      best = valueStart(item) ?? best;
      node = item;
    } else {
      break;
    }
  }
  return best;
}

/** Key path of the map key that starts at `offset` (for duplicate-key errors). */
function pathOfKeyAt(node: unknown, offset: number, prefix: PathSeg[]): PathSeg[] | undefined {
  if (isMap(node)) {
    for (const pair of node.items) {
      const here = [...prefix, keyText(pair.key)];
      if (start(pair.key) === offset) return here;
      const inner = pathOfKeyAt(pair.value, offset, here);
      if (inner) return inner;
    }
  } else if (isSeq(node)) {
    for (let i = 0; i < node.items.length; i++) {
      const inner = pathOfKeyAt(node.items[i], offset, [...prefix, i]);
      if (inner) return inner;
    }
  }
  return undefined;
}
