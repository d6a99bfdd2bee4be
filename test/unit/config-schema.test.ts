import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { CONFIG_SCHEMA_PATH, renderConfigJsonSchema } from '../../src/config/json-schema';
import { loadConfigText } from '../../src/config/load';
import { unsupported, validate, type JsonSchema } from '../support/json-schema';

const REPO = path.resolve(__dirname, '../..');
const SCHEMA_FILE = path.join(REPO, CONFIG_SCHEMA_PATH);
const committed = (): JsonSchema => JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')) as JsonSchema;

/** config/matrix-edge.yaml and every config/examples/*.yaml. */
function shippedConfigs(): string[] {
  const examples = path.join(REPO, 'config/examples');
  return [
    path.join(REPO, 'config/matrix-edge.yaml'),
    ...fs
      .readdirSync(examples)
      .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
      .map((f) => path.join(examples, f)),
  ];
}

const yaml = (...lines: string[]): string => `${lines.join('\n')}\n`;

describe('config/matrix-edge.schema.json', () => {
  test('is what the zod schema generates (else: run npm run config-schema)', () => {
    const current = fs.existsSync(SCHEMA_FILE) ? fs.readFileSync(SCHEMA_FILE, 'utf8') : '';
    if (current !== renderConfigJsonSchema()) {
      throw new Error(`${CONFIG_SCHEMA_PATH} is out of date with src/config: run npm run config-schema and commit the result`);
    }
  });

  test('uses only keywords the checker of these tests implements', () => {
    expect(unsupported(committed())).toEqual([]);
  });

  test('describes every key, closes every map, and enumerates the fixed choices', () => {
    const schema = committed() as { properties: Record<string, { description?: string }>; additionalProperties: unknown; required: string[] };
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(['server_name']);
    for (const [key, sub] of Object.entries(schema.properties)) expect({ key, described: typeof sub.description }).toEqual({ key, described: 'string' });
    const text = JSON.stringify(schema);
    expect(text).toContain('"enum":["acme","internal","files"]');
    expect(text).toContain('"enum":["letsencrypt","letsencrypt-staging","zerossl","google","buypass"]');
    expect(text).toContain('"enum":["trace","debug","info","warn","error","fatal"]');
  });

  test.each(shippedConfigs().map((f) => [path.relative(REPO, f), f]))('%s starts with its yaml-language-server $schema line and is valid', (_name, file) => {
    const text = fs.readFileSync(file, 'utf8');
    const first = text.split('\n', 1)[0]!;
    const m = /^# yaml-language-server: \$schema=(\S+)$/.exec(first);
    expect(m).not.toBeNull();
    expect(path.resolve(path.dirname(file), m![1]!)).toBe(SCHEMA_FILE);
    expect(validate(committed(), parse(text))).toEqual([]);
  });

  test('accepts the other forms the loader accepts', () => {
    const docs = [
      yaml('server_name: example.com'),
      yaml('server_name: "[2001:db8::1]:8448"', 'listen:', 'tls:', 'proxy:', 'log:', 'alerts:', 'admin:'),
      yaml('server_name: example.com', 'listen: { https: 8443, http: null, address: "::1" }', 'acme: { challenges: tls-alpn-01 }'),
      yaml('server_name: example.com', 'proxy: { max_body_size: 1000, upstream_timeout: 90, request_id_header: false }', 'limits: { max_header_size: "64 KiB" }'),
      yaml('server_name: example.com', 'tls: { hsts: false, issuer: internal, internal_lifetime: 1h }', 'admin: false', 'workers: 2'),
      yaml('server_name: example.com', 'tls: { hsts: { max_age: 730d, include_subdomains: true, preload: true } }', 'admin: { listen: 9100 }'),
      yaml('server_name: example.com', 'acme: { ca: "https://ca.example/dir", eab: { kid: k, hmac_key: abcdefghijklmnop== }, fallback: [{ ca: letsencrypt }] }'),
      yaml('server_name: example.com', 'log: { levels: { access: warn, certs: debug } }', 'alerts: { webhook: "https://hooks.example.com/x", days_left: 7 }'),
      yaml('server_name: example.com', 'well_known: { client: { m.homeserver: { base_url: "https://hs.example" }, x.y: [1, { z: null }] }, support: null }'),
    ];
    for (const doc of docs) {
      expect({ doc, loads: loadConfigText(doc, 'edge.yaml', '/srv').ok }).toEqual({ doc, loads: true });
      expect({ doc, errors: validate(committed(), parse(doc)) }).toEqual({ doc, errors: [] });
    }
  });

  test.each([
    ['an unknown top-level key', yaml('server_name: example.com', 'upstrem: http://localhost:8008'), 'upstrem', 'additionalProperties'],
    ['an unknown key in a section', yaml('server_name: example.com', 'listen: { adress: "::" }'), 'listen', 'anyOf'],
    ['no server_name', yaml('listen: { http: 8080 }'), 'server_name', 'required'],
    ['a port out of range', yaml('server_name: example.com', 'listen: { https: [443, 70000] }'), 'listen', 'anyOf'],
    ['a port as text', yaml('server_name: example.com', 'listen: { http: "80" }'), 'listen', 'anyOf'],
    ['a duplicate port', yaml('server_name: example.com', 'listen: { https: [443, 443] }'), 'listen', 'anyOf'],
    ['an issuer outside the enumeration', yaml('server_name: example.com', 'tls: { issuer: interal }'), 'tls', 'anyOf'],
    ['a size with an unknown unit', yaml('server_name: example.com', 'proxy: { max_body_size: 10 potatoes }'), 'proxy', 'anyOf'],
    ['a duration with an unknown unit', yaml('server_name: example.com', 'proxy: { drain_timeout: forever }'), 'proxy', 'anyOf'],
    ['a server name with an underscore', yaml('server_name: exa_mple.com'), 'server_name', 'pattern'],
    ['an upstream that is not http(s)', yaml('server_name: example.com', 'upstream: ftp://hs'), 'upstream', 'pattern'],
    ['Redis storage', yaml('server_name: example.com', 'storage: redis://localhost:6379'), 'storage', 'pattern'],
    ['workers as text', yaml('server_name: example.com', 'workers: many'), 'workers', 'anyOf'],
    ['an unknown log component', yaml('server_name: example.com', 'log: { levels: { acess: debug } }'), 'log', 'anyOf'],
    ['a non-finite number in the client body', yaml('server_name: example.com', 'well_known: { client: { x: .inf } }'), 'well_known', 'anyOf'],
  ])('rejects %s, as the loader does', (_what, doc, at, keyword) => {
    expect(loadConfigText(doc, 'edge.yaml', '/srv').ok).toBe(false);
    expect(validate(committed(), parse(doc))).toContainEqual({ at, keyword });
  });
});
