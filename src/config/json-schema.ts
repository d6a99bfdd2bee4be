/**
 * The JSON Schema of the config (config/matrix-edge.schema.json), generated from the zod schema so
 * editors complete and check keys: `# yaml-language-server: $schema=...` in a YAML file points
 * the YAML language server (VS Code, Neovim, ...) at it. `npm run config-schema` writes the file;
 * a unit test fails when the committed file is not what this module generates.
 */
import { z } from 'zod';
import { configSchema } from './sections';

/** Where the file lives in the repository. */
export const CONFIG_SCHEMA_PATH = 'config/matrix-edge.schema.json';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const UNIQUE_ITEMS_ONLY = JSON.stringify({ type: 'array', items: {}, uniqueItems: true });

/**
 * A list's duplicate check runs beside its items (an intersection, see leaves.ts listOf), which
 * zod writes as `allOf: [the list, { type: array, items: {}, uniqueItems: true }]`; fold that into
 * the list itself so editors show one plain array type.
 */
function foldUniqueItems(node: Json): Json {
  if (Array.isArray(node)) return node.map(foldUniqueItems);
  if (node === null || typeof node !== 'object') return node;
  const out: { [key: string]: Json } = {};
  for (const [key, value] of Object.entries(node)) out[key] = foldUniqueItems(value);
  const allOf = out['allOf'];
  if (Array.isArray(allOf) && allOf.length === 2 && JSON.stringify(allOf[1]) === UNIQUE_ITEMS_ONLY) {
    const list = allOf[0];
    if (list !== null && typeof list === 'object' && !Array.isArray(list)) {
      delete out['allOf'];
      return { ...list, uniqueItems: true, ...out };
    }
  }
  return out;
}

/** The JSON Schema (draft-07, the draft editors support best) of what the config accepts as input. */
export function configJsonSchema(): { [key: string]: Json } {
  const generated = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-07', unrepresentable: 'throw' }) as { [key: string]: Json };
  const { $schema, title, description, ...rest } = foldUniqueItems(generated) as { [key: string]: Json };
  return { $schema: $schema ?? 'http://json-schema.org/draft-07/schema#', title: title ?? null, description: description ?? null, ...rest };
}

/** The file's text: two-space JSON and a final newline. */
export function renderConfigJsonSchema(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
