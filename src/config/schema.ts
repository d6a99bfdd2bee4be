/**
 * The schema of the raw YAML document (after `toJS()`): validation into the raw config that
 * expand.ts turns into a Plan, and the public names of the config's parts.
 *
 * Layout: defaults.ts (vocabulary and defaults), leaves.ts (generic leaf types), values.ts and
 * bodies.ts (specific values), sections.ts (the maps and the document), rules.ts (every rule that
 * relates keys, with its severity), issues.ts (zod issues → sentences at key paths),
 * json-schema.ts (the JSON Schema editors use).
 */
import { isMap } from './leaves';
import { toPathIssues } from './issues';
import type { PathIssue } from './rules';
import { configSchema, type RawConfig } from './sections';
import { show } from './units';

export { ACME_PRESETS, ALERT_FORMATS, CHALLENGE_TYPES, DEFAULTS, EAB_REQUIRED, ISSUERS, KEY_TYPES, LOG_COMPONENTS, LOG_LEVELS } from './defaults';
export type { AdminListenValue, AlertFormat, Issuer, LogComponent, LogLevel } from './defaults';
export type { JsonObject, JsonValue } from './bodies';
export { editDistance, formatPath, suggestKey } from './issues';
export type { PathSeg } from './leaves';
export type { PathIssue } from './rules';
export { configSchema, KNOWN_KEYS, type HstsValue, type RawConfig } from './sections';
export { checkUpstreamUrl, type ServerNameValue, type UpstreamValue } from './values';

export type ValidateResult =
  | { readonly ok: true; readonly config: RawConfig }
  | { readonly ok: false; readonly issues: readonly PathIssue[] };

/** Validate the plain-JS form of the YAML document. Never throws for bad input. */
export function validateConfig(data: unknown): ValidateResult {
  if (!isMap(data)) {
    return { ok: false, issues: [{ path: [], message: `the config must be a map of keys like 'server_name: example.com'; got ${show(data)}` }] };
  }
  // Every part of the schema words its own problems; this is the net under it.
  const result = configSchema.safeParse(data, { error: (issue) => `invalid value ${show(issue.input)}` });
  if (result.success) return { ok: true, config: result.data };
  return { ok: false, issues: toPathIssues(result.error.issues) };
}
