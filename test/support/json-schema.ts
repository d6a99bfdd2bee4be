/**
 * A small JSON Schema (draft-07) checker for the keywords config/matrix-edge.schema.json uses, so
 * tests can hold documents against the generated file itself, as an editor would. `unsupported`
 * lists keywords of a schema this checker does not know, so a test can insist there are none.
 */

export type JsonSchema = { readonly [keyword: string]: unknown };

export interface SchemaError {
  /** Where in the document: `listen.https[1]`. */
  readonly at: string;
  readonly keyword: string;
}

const ANNOTATIONS = new Set(['$schema', '$id', 'title', 'description', 'default', 'examples', 'readOnly', 'definitions', '$defs']);
const ASSERTIONS = new Set([
  'type',
  'enum',
  'const',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'items',
  'minItems',
  'maxItems',
  'uniqueItems',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'anyOf',
  'allOf',
  'oneOf',
  'not',
  '$ref',
]);

/** Keywords in `schema` (at any depth) that `validate` does not implement. */
export function unsupported(schema: unknown, at = '#'): string[] {
  if (Array.isArray(schema)) return schema.flatMap((s, i) => unsupported(s, `${at}/${i}`));
  if (schema === null || typeof schema !== 'object') return [];
  const out: string[] = [];
  for (const [keyword, value] of Object.entries(schema)) {
    if (!ANNOTATIONS.has(keyword) && !ASSERTIONS.has(keyword)) out.push(`${at}/${keyword}`);
    if (keyword === 'properties' || keyword === 'definitions' || keyword === '$defs') {
      for (const [name, sub] of Object.entries(value as object)) out.push(...unsupported(sub, `${at}/${keyword}/${name}`));
    } else if (typeof value === 'object' && keyword !== 'enum' && keyword !== 'const' && keyword !== 'required' && keyword !== 'default') {
      out.push(...unsupported(value, `${at}/${keyword}`));
    }
  }
  return out;
}

function typeOf(value: unknown): string[] {
  if (value === null) return ['null'];
  if (Array.isArray(value)) return ['array'];
  if (typeof value === 'number') return Number.isInteger(value) ? ['integer', 'number'] : Number.isFinite(value) ? ['number'] : [];
  if (typeof value === 'object') return Object.getPrototypeOf(value) === Object.prototype ? ['object'] : [];
  return [typeof value];
}

function place(at: string, seg: string | number): string {
  if (typeof seg === 'number') return `${at}[${seg}]`;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg) ? (at === '' ? seg : `${at}.${seg}`) : `${at}[${JSON.stringify(seg)}]`;
}

/** Every violation of `schema` by `value`; empty when the value is valid. */
export function validate(root: JsonSchema, value: unknown): SchemaError[] {
  const errors: SchemaError[] = [];
  const resolve = (ref: string): JsonSchema => {
    const m = /^#\/(definitions|\$defs)\/(.+)$/.exec(ref);
    const target = m ? (root[m[1]!] as Record<string, JsonSchema> | undefined)?.[m[2]!] : undefined;
    if (target === undefined) throw new Error(`cannot resolve $ref ${ref}`);
    return target;
  };
  const check = (schema: JsonSchema, v: unknown, at: string): boolean => {
    const before = errors.length;
    const fail = (keyword: string): void => void errors.push({ at, keyword });
    const s = schema as Record<string, any>;
    if (s.$ref !== undefined && !check(resolve(s.$ref), v, at)) fail('$ref');
    if (s.type !== undefined) {
      const wanted: string[] = Array.isArray(s.type) ? s.type : [s.type];
      if (!typeOf(v).some((t) => wanted.includes(t))) return (fail('type'), false);
    }
    if (s.enum !== undefined && !s.enum.some((e: unknown) => e === v)) fail('enum');
    if (s.const !== undefined && s.const !== v) fail('const');
    if (typeof v === 'string') {
      if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) fail('pattern');
      if (s.minLength !== undefined && [...v].length < s.minLength) fail('minLength');
      if (s.maxLength !== undefined && [...v].length > s.maxLength) fail('maxLength');
    }
    if (typeof v === 'number') {
      if (s.minimum !== undefined && v < s.minimum) fail('minimum');
      if (s.maximum !== undefined && v > s.maximum) fail('maximum');
      if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) fail('exclusiveMinimum');
      if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) fail('exclusiveMaximum');
    }
    if (Array.isArray(v)) {
      if (s.minItems !== undefined && v.length < s.minItems) fail('minItems');
      if (s.maxItems !== undefined && v.length > s.maxItems) fail('maxItems');
      if (s.uniqueItems === true && new Set(v.map((x) => JSON.stringify(x))).size !== v.length) fail('uniqueItems');
      if (s.items !== undefined) v.forEach((item, i) => check(s.items, item, place(at, i)));
    }
    if (typeOf(v).includes('object')) {
      const obj = v as Record<string, unknown>;
      for (const key of s.required ?? []) if (!Object.hasOwn(obj, key)) errors.push({ at: place(at, key), keyword: 'required' });
      for (const [key, item] of Object.entries(obj)) {
        if (s.propertyNames !== undefined && !check(s.propertyNames, key, place(at, key))) fail('propertyNames');
        if (s.properties !== undefined && Object.hasOwn(s.properties, key)) check(s.properties[key], item, place(at, key));
        else if (s.additionalProperties === false) errors.push({ at: place(at, key), keyword: 'additionalProperties' });
        else if (typeof s.additionalProperties === 'object') check(s.additionalProperties, item, place(at, key));
      }
    }
    const passes = (sub: JsonSchema): boolean => trial(sub, v, at);
    if (s.allOf !== undefined) for (const sub of s.allOf) check(sub, v, at);
    if (s.anyOf !== undefined && !s.anyOf.some(passes)) fail('anyOf');
    if (s.oneOf !== undefined && s.oneOf.filter(passes).length !== 1) fail('oneOf');
    if (s.not !== undefined && passes(s.not)) fail('not');
    return errors.length === before;
  };
  /** Whether `v` satisfies `sub`, without recording its errors. */
  const trial = (sub: JsonSchema, v: unknown, at: string): boolean => {
    const mark = errors.length;
    const ok = check(sub, v, at);
    errors.length = mark;
    return ok;
  };
  check(root, value, '');
  return errors;
}
