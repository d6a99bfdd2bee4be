/**
 * The homeserver's published signing keys (GET /_matrix/key/v2/server) and version, judged as a
 * peer would: canonical JSON (spec appendix "Canonical JSON": sorted keys, no whitespace, UTF-8,
 * integers only), every verify_keys entry's ed25519 signature over the response without
 * `signatures` and `unsigned`, server_name, valid_until_ts. Pure (Node's crypto only).
 */
import { createPublicKey, verify } from 'node:crypto';
import { failed, passed, warned, type Verdict } from './report';
import { jsonObject } from './wellknown';

/** Canonical JSON of a parsed JSON value; throws on numbers that are not safe integers. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error(`canonical JSON allows only integers in the safe range; got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    // Sorted by code point: UTF-8 byte order is code-point order (UTF-16 order is not).
    const keys = Object.keys(value).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const entries = keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  throw new Error(`not a JSON value: ${typeof value}`);
}

/** Whether `signature` (unpadded base64) by the ed25519 `publicKey` (unpadded base64) signs `data`. */
export function ed25519Verifies(publicKey: string, signature: string, data: string): boolean {
  try {
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey, 'base64').toString('base64url') }, format: 'jwk' });
    return verify(null, Buffer.from(data, 'utf8'), key, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

const HOUR_MS = 3600_000;

export function judgeServerKeys(body: Buffer, serverName: string, nowMs: number): Verdict {
  const parsed = jsonObject(body);
  if (!parsed.ok) return failed(`GET /_matrix/key/v2/server: ${parsed.problem}`, 'make /_matrix/key/v2/server reach the homeserver unchanged');
  const json = parsed.value;
  if (json['server_name'] !== serverName) {
    return failed(
      `server_name is ${JSON.stringify(json['server_name'])}, not "${serverName}": peers reject these keys`,
      `set the homeserver's server name to ${serverName} (Synapse: server_name; Dendrite: global.server_name), or point the delegation at the homeserver that has it`,
    );
  }
  const verifyKeys = json['verify_keys'];
  const all = typeof verifyKeys === 'object' && verifyKeys !== null ? Object.keys(verifyKeys) : [];
  const keyIds = all.filter((k) => k.startsWith('ed25519:'));
  if (keyIds.length === 0) return failed('verify_keys holds no ed25519 key', "check the homeserver's signing key configuration");
  const signed = Object.fromEntries(Object.entries(json).filter(([k]) => k !== 'signatures' && k !== 'unsigned'));
  let data: string;
  try {
    data = canonicalJson(signed);
  } catch (err) {
    return failed(`the answer cannot be put in canonical JSON: ${(err as Error).message}`, 'make /_matrix/key/v2/server reach the homeserver unchanged');
  }
  const sigs = (json['signatures'] as Record<string, Record<string, unknown>> | undefined)?.[serverName] ?? {};
  const bad: string[] = [];
  for (const id of keyIds) {
    const key = (verifyKeys as Record<string, { key?: unknown }>)[id]?.key;
    const sig = sigs[id];
    if (typeof sig !== 'string') bad.push(`${id} has no signature`);
    else if (typeof key !== 'string' || !ed25519Verifies(key, sig, data)) bad.push(`the signature by ${id} does not verify`);
  }
  if (bad.length > 0) {
    return failed(
      `${bad.join('; ')}: peers reject these keys`,
      'the answer was changed on its way or the signing key is broken: make sure nothing rewrites the JSON between homeserver and peers, and check the homeserver\'s signing key file',
    );
  }
  const until = json['valid_until_ts'];
  const keys = `${keyIds.length} key${keyIds.length === 1 ? '' : 's'} (${keyIds.join(', ')}) signed`;
  if (typeof until !== 'number' || Number.isNaN(new Date(until).getTime())) {
    return failed(`${keys}, but valid_until_ts is missing or not a timestamp`, 'upgrade or fix the homeserver: valid_until_ts is required');
  }
  const when = new Date(until).toISOString();
  const stale = 'the homeserver (or a cache in front of it) serves an old answer: restart the homeserver and make sure nothing caches /_matrix/key/v2/server';
  if (until <= nowMs) return failed(`valid_until_ts ${when} has passed: peers refuse to use these keys`, stale);
  if (until - nowMs < HOUR_MS) return warned(`valid_until_ts ${when} is less than an hour away`, stale);
  return passed(`server_name ${serverName}, ${keys}, valid until ${when}`);
}

/** GET /_matrix/federation/v1/version: {"server": {"name", "version"}}. */
export function judgeVersion(body: Buffer): Verdict {
  const parsed = jsonObject(body);
  const fix = 'make /_matrix/federation/v1/version reach the homeserver';
  if (!parsed.ok) return failed(`GET /_matrix/federation/v1/version: ${parsed.problem}`, fix);
  const server = parsed.value['server'] as { name?: unknown; version?: unknown } | undefined;
  if (typeof server?.name !== 'string' || typeof server.version !== 'string') {
    return warned('the answer has no server.name and server.version', 'harmless for federation; a homeserver normally names itself here');
  }
  return passed(`${server.name} ${server.version}`);
}
