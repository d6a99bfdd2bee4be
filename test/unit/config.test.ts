import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describePlan, formatIssue } from '../../src/config/describe';
import { loadConfigFile, loadConfigText } from '../../src/config/load';
import { suggestKey } from '../../src/config/schema';
import type { ConfigIssue, LoadResult, Plan } from '../../src/config/plan';

const REPO = path.resolve(__dirname, '../..');
const BASE = '/srv/edge';
const FILE = 'edge.yaml';

function load(yaml: string): LoadResult {
  return loadConfigText(yaml, FILE, BASE);
}

function planOf(yaml: string): { plan: Plan; warnings: readonly ConfigIssue[] } {
  const result = load(yaml);
  if (!result.ok) throw new Error(`expected the config to load, got:\n${result.errors.map(formatIssue).join('\n')}`);
  return { plan: result.plan, warnings: result.warnings };
}

function errorsOf(yaml: string): readonly ConfigIssue[] {
  const result = load(yaml);
  if (result.ok) throw new Error('expected the config to be rejected');
  return result.errors;
}

/** Lines joined with "\n" so positions in the test read as line numbers. */
function yaml(...lines: string[]): string {
  return `${lines.join('\n')}\n`;
}

const issue = (line: number, column: number, key: string, message: string): ConfigIssue => ({ file: FILE, line, column, key, message });

const LETSENCRYPT = 'https://acme-v02.api.letsencrypt.org/directory';
const DEFAULT_ROUTE_IDS = [
  'well-known:server',
  'well-known:client',
  'well-known:support',
  'block:/_synapse/admin/',
  'block:/_dendrite/',
  'proxy:/_matrix/',
  'proxy:/_synapse/client/',
  'fallback',
];

describe('defaults', () => {
  test('a minimal config expands to the documented defaults', () => {
    const { plan, warnings } = planOf('server_name: example.com\n');
    expect(warnings).toEqual([]);
    const proxy = { type: 'proxy', upstream: 'homeserver', maxBodyBytes: 50 * 1024 * 1024 } as const;
    const expected: Plan = {
      source: '/srv/edge/edge.yaml',
      serverName: 'example.com',
      hostname: 'example.com',
      names: ['example.com'],
      listen: {
        https: [
          { port: 443, addresses: ['0.0.0.0', '::'] },
          { port: 8448, addresses: ['0.0.0.0', '::'] },
        ],
        http: { port: 80, addresses: ['0.0.0.0', '::'] },
      },
      upstreams: [
        {
          name: 'homeserver',
          url: 'http://localhost:8008',
          dial: 'http://127.0.0.1:8008',
          timeoutMs: 330_000,
          connectTimeoutMs: 10_000,
          connections: 4096,
          queueTimeoutMs: 10_000,
        },
      ],
      routes: [
        { id: 'well-known:server', hosts: null, match: { kind: 'exact', path: '/.well-known/matrix/server' }, action: { type: 'well-known', which: 'server' } },
        { id: 'well-known:client', hosts: null, match: { kind: 'exact', path: '/.well-known/matrix/client' }, action: { type: 'well-known', which: 'client' } },
        { id: 'well-known:support', hosts: null, match: { kind: 'exact', path: '/.well-known/matrix/support' }, action: { type: 'well-known', which: 'support' } },
        {
          id: 'block:/_synapse/admin/',
          hosts: null,
          match: { kind: 'prefix', prefix: '/_synapse/admin/' },
          action: { type: 'status', status: 404, errcode: 'M_NOT_FOUND', error: '/_synapse/admin/ is not exposed on this server' },
        },
        {
          id: 'block:/_dendrite/',
          hosts: null,
          match: { kind: 'prefix', prefix: '/_dendrite/' },
          action: { type: 'status', status: 404, errcode: 'M_NOT_FOUND', error: '/_dendrite/ is not exposed on this server' },
        },
        { id: 'proxy:/_matrix/', hosts: null, match: { kind: 'prefix', prefix: '/_matrix/' }, action: proxy },
        { id: 'proxy:/_synapse/client/', hosts: null, match: { kind: 'prefix', prefix: '/_synapse/client/' }, action: proxy },
        {
          id: 'fallback',
          hosts: null,
          match: { kind: 'prefix', prefix: '/' },
          action: { type: 'status', status: 404, errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' },
        },
      ],
      wellKnown: {
        server: '{"m.server":"example.com:443"}',
        client: '{"m.homeserver":{"base_url":"https://example.com"}}',
        support: null,
        maxAgeSeconds: 3600,
      },
      tls: { issuer: 'acme' },
      acme: { email: null, directory: LETSENCRYPT, caRoots: [], eab: null, profile: null, challenges: ['http-01', 'tls-alpn-01'], keyType: 'p256', fallbacks: [] },
      storage: '/srv/edge/certs',
      limits: {
        handshakeTimeoutMs: 10_000,
        headerTimeoutMs: 30_000,
        idleTimeoutMs: 120_000,
        maxHeaderBytes: 32_768,
        maxConnections: 10_000,
        maxStreams: 128,
        bodyIdleTimeoutMs: 60_000,
        sendTimeoutMs: 60_000,
        perConnection: 100,
        perAddress: 512,
      },
      hsts: 'max-age=31536000',
      strictSniHost: false,
      trustedProxies: [],
      drainTimeoutMs: 10_000,
      log: { level: 'info', format: 'auto', levels: {} },
      requestIdHeader: 'x-request-id',
      workers: null,
      admin: { port: 9090, addresses: ['127.0.0.1'] },
      alerts: null,
    };
    expect(plan).toEqual(expected);
  });

  test('the plan is plain data: it survives a JSON round trip unchanged', () => {
    const { plan } = planOf('server_name: example.com\n');
    expect(JSON.parse(JSON.stringify(plan))).toEqual(plan);
  });

  test('hostname comes first in names, then the host of server_name, lower case and without port', () => {
    const { plan } = planOf(yaml('server_name: Example.COM:8448', 'hostname: Matrix.Example.com'));
    expect(plan.serverName).toBe('Example.COM:8448');
    expect(plan.hostname).toBe('matrix.example.com');
    expect(plan.names).toEqual(['matrix.example.com', 'example.com']);
  });

  test('hostname equal to the server name host gives one name', () => {
    const { plan } = planOf(yaml('server_name: example.com:8448', 'hostname: EXAMPLE.com'));
    expect(plan.names).toEqual(['example.com']);
  });

  test('an IPv6 server name: hostname keeps brackets (URL form), names hold the bare address', () => {
    const { plan } = planOf(yaml('server_name: "[2001:db8::1]:8448"', 'tls: { issuer: internal }'));
    expect(plan.hostname).toBe('[2001:db8::1]');
    expect(plan.names).toEqual(['2001:db8::1']);
    expect(plan.wellKnown.server).toBe('{"m.server":"[2001:db8::1]:443"}');
    expect(plan.wellKnown.client).toBe('{"m.homeserver":{"base_url":"https://[2001:db8::1]"}}');
  });

  test('empty sections mean all defaults', () => {
    const { plan } = planOf(yaml('server_name: example.com', 'listen:', 'proxy:', 'tls:', 'log:'));
    expect(plan.listen.https.map((l) => l.port)).toEqual([443, 8448]);
    expect(plan.tls).toEqual({ issuer: 'acme' });
  });
});

describe('the bundled config', () => {
  const file = path.join(REPO, 'config/matrix-edge.yaml');

  test('serves localhost with the internal CA on unprivileged ports', () => {
    const result = loadConfigFile(file);
    if (!result.ok) throw new Error(result.errors.map(formatIssue).join('\n'));
    const { plan } = result;
    expect(result.warnings).toEqual([]);
    expect(plan.source).toBe(file);
    expect(plan.names).toEqual(['localhost']);
    expect(plan.listen.https.map((l) => l.port)).toEqual([8443, 8448]);
    expect(plan.listen.http?.port).toBe(8080);
    expect(plan.upstreams).toEqual([expect.objectContaining({ name: 'homeserver', url: 'http://localhost:8008', dial: 'http://127.0.0.1:8008' })]);
    expect(plan.routes.map((r) => r.id)).toEqual(DEFAULT_ROUTE_IDS);
    expect(plan.tls).toEqual({ issuer: 'internal', leafLifetimeSeconds: 7 * 86400 });
    expect(plan.acme).toBeNull();
    expect(plan.storage).toBe(path.join(REPO, 'certs'));
    // 443 is not served, so clients and peers are sent to the first https port.
    expect(plan.wellKnown.server).toBe('{"m.server":"localhost:8443"}');
    expect(plan.wellKnown.client).toBe('{"m.homeserver":{"base_url":"https://localhost:8443"}}');
  });

  test('every shipped YAML file loads without errors or warnings', () => {
    const dirs = [path.join(REPO, 'config'), path.join(REPO, 'config/examples')];
    const files = dirs.flatMap((dir) =>
      fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml')).map((f) => path.join(dir, f)),
    );
    expect(files.map((f) => path.relative(REPO, f)).sort()).toEqual(
      expect.arrayContaining(['config/examples/files.yaml', 'config/examples/production.yaml', 'config/matrix-edge.yaml']),
    );
    for (const f of files) {
      const result = loadConfigFile(f);
      const problems = [...(result.ok ? [] : result.errors), ...result.warnings].map(formatIssue);
      expect({ file: f, problems }).toEqual({ file: f, problems: [] });
      expect(result.ok).toBe(true);
    }
  });

  test('the production example delegates example.com to matrix.example.com with ACME', () => {
    const result = loadConfigFile(path.join(REPO, 'config/examples/production.yaml'));
    if (!result.ok) throw new Error('rejected');
    expect(result.plan.names).toEqual(['matrix.example.com', 'example.com']);
    expect(result.plan.listen.https.map((l) => l.port)).toEqual([443, 8448]);
    expect(result.plan.tls).toEqual({ issuer: 'acme' });
    expect(result.plan.acme?.email).toBe('admin@example.com');
    expect(result.plan.wellKnown.server).toBe('{"m.server":"matrix.example.com:443"}');
  });

  test('the files example uses the files issuer with absolute paths', () => {
    const result = loadConfigFile(path.join(REPO, 'config/examples/files.yaml'));
    if (!result.ok) throw new Error('rejected');
    expect(result.plan.tls.issuer).toBe('files');
    expect(result.plan.listen.http).toBeNull();
    expect(result.plan.acme).toBeNull();
  });
});

describe('errors carry file, line, column and key', () => {
  test('a port out of range', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  https: [443, 70000]'))).toEqual([
      issue(3, 16, 'listen.https[1]', '70000 is not a port (1–65535)'),
    ]);
  });

  test('a port that is not a number, a duplicate port, an empty list', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  https:', '    - 443', '    - "8448"', '    - 443'))).toEqual([
      issue(5, 7, 'listen.https[1]', "expected a port number (1–65535); got '8448'"),
      issue(6, 7, 'listen.https[2]', '443 is listed twice'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'listen: { https: [] }'))).toEqual([
      issue(2, 18, 'listen.https', 'list at least one of ports like [443, 8448]'),
    ]);
  });

  test('the plain-HTTP port may not be an https port', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  https: [443]', '  http: 443'))).toEqual([
      issue(4, 9, 'listen.http', 'port 443 is also an https port; choose another port for plain HTTP, or null to disable it'),
    ]);
  });

  test('a bind address that is not an IP literal', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  address: [127.0.0.1, localhost]'))).toEqual([
      issue(3, 24, 'listen.address[1]', "'localhost' is not an IP address; bind addresses are IP literals like 0.0.0.0, ::, 127.0.0.1 or ::1"),
    ]);
  });

  test('an unknown key points at the key and suggests the close one', () => {
    expect(errorsOf(yaml('server_name: example.com', 'upstrem: http://localhost:8008'))).toEqual([
      issue(2, 1, 'upstrem', "unknown key 'upstrem' (did you mean 'upstream'?)"),
    ]);
  });

  test('unknown keys in sections and in list entries', () => {
    expect(
      errorsOf(
        yaml(
          'server_name: example.com',
          'listen:',
          '  adress: "::"',
          'tls:',
          '  issuer: files',
          '  files:',
          '    - certificate: /a.pem',
          '      cert: /a.pem',
          '      key: /a.key',
        ),
      ),
    ).toEqual([
      issue(3, 3, 'listen.adress', "unknown key 'adress' (did you mean 'address'?)"),
      issue(7, 7, 'tls.files[0].certificate', "unknown key 'certificate' (did you mean 'cert'?)"),
    ]);
  });

  test('a key from another section is suggested with its section', () => {
    expect(errorsOf(yaml('server_name: example.com', 'max_body_size: 10MiB', 'acme:', '  issuer: acme'))).toEqual([
      issue(2, 1, 'max_body_size', "unknown key 'max_body_size' (did you mean 'proxy.max_body_size'?)"),
      issue(4, 3, 'acme.issuer', "unknown key 'issuer' (did you mean 'tls.issuer'?)"),
    ]);
  });

  test('suggestions: edit distance, section run together, abbreviation, other section', () => {
    expect(suggestKey('Server-Name', '')).toBe('server_name');
    expect(suggestKey('issuer', 'tls')).toBe('issuer');
    expect(suggestKey('acme_email', '')).toBe('acme.email');
    expect(suggestKey('loglevel', '')).toBe('log.level');
    expect(suggestKey('forward', 'proxy')).toBe('forward_prefixes');
    expect(suggestKey('email', '')).toBe('acme.email');
    expect(suggestKey('upstream', 'proxy')).toBe('upstream');
    expect(suggestKey('zzz', 'proxy')).toBeUndefined();
  });

  test('a top-level key inside a section is pointed back to the top level', () => {
    expect(errorsOf(yaml('server_name: example.com', 'proxy:', '  upstream: http://localhost:8008'))).toEqual([
      issue(3, 3, 'proxy.upstream', "unknown key 'upstream' (did you mean the top-level 'upstream'?)"),
    ]);
  });

  test('an unknown key with no close match lists the keys allowed there', () => {
    expect(errorsOf(yaml('server_name: example.com', 'log:', '  colour: true'))).toEqual([
      issue(3, 3, 'log.colour', "unknown key 'colour'; allowed here: level, format, levels"),
    ]);
  });

  test('a value outside an enumeration', () => {
    expect(errorsOf(yaml('server_name: example.com', 'tls:', '  issuer: interal'))).toEqual([
      issue(3, 11, 'tls.issuer', "expected one of acme, internal, files; got 'interal'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'log: { level: loud }'))).toEqual([
      issue(2, 15, 'log.level', "expected one of trace, debug, info, warn, error, fatal; got 'loud'"),
    ]);
  });

  test('a missing required key points at the map that should hold it', () => {
    expect(errorsOf(yaml('# comment', 'listen:', '  http: 8080'))).toEqual([
      issue(2, 1, 'server_name', 'missing; set it to the name in your user IDs, e.g. example.com for @alice:example.com'),
    ]);
    expect(
      errorsOf(yaml('server_name: example.com', 'tls:', '  issuer: files', '  files:', '    - cert: /etc/ssl/a.pem')),
    ).toEqual([issue(5, 7, 'tls.files[0].key', 'missing; give the path of the PEM private key')]);
  });

  test('a section that is not a map', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen: 443'))).toEqual([
      issue(2, 9, 'listen', 'expected a map with keys https, http, address; got 443'),
    ]);
  });

  test('a bad server name', () => {
    expect(errorsOf(yaml('server_name: exa_mple.com'))).toEqual([
      issue(
        1,
        14,
        'server_name',
        "'exa_mple.com' is not a valid host name: '_' is not allowed in a DNS name (letters, digits, '-' and '.' only)",
      ),
    ]);
    expect(errorsOf(yaml('server_name:'))).toEqual([
      issue(1, 1, 'server_name', 'expected a server name like example.com or example.com:8448; got an empty value'),
    ]);
  });

  test('a hostname with a port', () => {
    expect(errorsOf(yaml('server_name: example.com', 'hostname: matrix.example.com:443'))).toEqual([
      issue(
        2,
        11,
        'hostname',
        "'matrix.example.com:443' carries a port; give the host name alone (ports belong in listen.https and well_known.server)",
      ),
    ]);
  });

  test.each([
    ['ftp://localhost:8008', "expected an http:// or https:// URL like http://localhost:8008; the scheme 'ftp' is not supported"],
    ['localhost:8008', "expected an http:// or https:// URL like http://localhost:8008; got 'localhost:8008'"],
    ['http://user:pw@localhost:8008', 'the upstream URL cannot carry a user name or password'],
    [
      'http://localhost:8008/_matrix',
      "the upstream URL cannot carry a path ('/_matrix'): requests are forwarded with their path unchanged; use http://localhost:8008",
    ],
    ['http://localhost:8008/?', 'the upstream URL cannot carry a query (?...)'],
    ['http://localhost:8008#top', 'the upstream URL cannot carry a fragment (#...)'],
  ])('upstream %s is rejected', (url, message) => {
    expect(errorsOf(yaml('server_name: example.com', `upstream: "${url}"`))).toEqual([issue(2, 11, 'upstream', message)]);
  });

  test('sizes and durations in context', () => {
    expect(
      errorsOf(
        yaml(
          'server_name: example.com',
          'proxy:',
          '  max_body_size: 10 potatoes',
          '  upstream_timeout: 500ms',
          '  drain_timeout: forever',
          'tls:',
          '  issuer: internal',
          '  internal_lifetime: 400d',
          'well_known:',
          '  max_age: 1500ms',
        ),
      ),
    ).toEqual([
      issue(3, 18, 'proxy.max_body_size', "unknown size unit 'potatoes' in '10 potatoes'; use B, KB, MB, GB, KiB, MiB or GiB"),
      issue(4, 21, 'proxy.upstream_timeout', "must be at least 1s; got '500ms'"),
      issue(5, 18, 'proxy.drain_timeout', "expected a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds); got 'forever'"),
      issue(8, 22, 'tls.internal_lifetime', "must be at most 365d; got '400d'"),
      issue(10, 12, 'well_known.max_age', "must be whole seconds; got '1500ms'"),
    ]);
  });

  test('internal_lifetime below 1h is rejected', () => {
    expect(errorsOf(yaml('server_name: example.com', 'tls: { issuer: internal, internal_lifetime: 30m }'))).toEqual([
      issue(2, 45, 'tls.internal_lifetime', "must be at least 1h; got '30m'"),
    ]);
  });

  test('trusted proxies and prefixes are validated', () => {
    expect(
      errorsOf(
        yaml(
          'server_name: example.com',
          'proxy:',
          '  trusted_proxies: [10.0.0.0/8, 1.2.3.4/33, fd00::/8, proxy.lan]',
          '  forward_prefixes: [_x/, /a/../b/, "/a?b"]',
          '  block_prefixes: [/ok/, "/with space/"]',
        ),
      ),
    ).toEqual([
      issue(3, 33, 'proxy.trusted_proxies[1]', "'1.2.3.4/33': the prefix length must be 0–32"),
      issue(3, 55, 'proxy.trusted_proxies[3]', "'proxy.lan' is not an IP address or CIDR range (like 192.0.2.1, 10.0.0.0/8 or fd00::/8)"),
      issue(4, 22, 'proxy.forward_prefixes[0]', "a path prefix must start with '/'; got '_x/'"),
      issue(4, 27, 'proxy.forward_prefixes[1]', "a path prefix cannot contain '.' or '..' segments; got '/a/../b/'"),
      issue(4, 37, 'proxy.forward_prefixes[2]', "a path prefix cannot contain '?', '#' or whitespace; got '/a?b'"),
      issue(5, 26, 'proxy.block_prefixes[1]', "a path prefix cannot contain '?', '#' or whitespace; got '/with space/'"),
    ]);
  });

  test('a prefix both forwarded and blocked', () => {
    expect(
      errorsOf(yaml('server_name: example.com', 'proxy:', '  forward_prefixes: [/_admin/]', '  block_prefixes: [/_admin/]')),
    ).toEqual([
      issue(4, 20, 'proxy.block_prefixes[0]', "'/_admin/' is also in forward_prefixes; a prefix is either forwarded or blocked, not both"),
    ]);
  });

  test('tls.files is required with issuer files and forbidden otherwise', () => {
    expect(errorsOf(yaml('server_name: example.com', 'tls:', '  issuer: files'))).toEqual([
      issue(3, 3, 'tls.files', 'required when tls.issuer is files: list at least one - { cert: /path/fullchain.pem, key: /path/privkey.pem }'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'tls:', '  issuer: files', '  files: []'))).toEqual([
      issue(4, 10, 'tls.files', 'required when tls.issuer is files: list at least one - { cert: /path/fullchain.pem, key: /path/privkey.pem }'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'tls:', '  files:', '    - { cert: /a.pem, key: /a.key }'))).toEqual([
      issue(4, 5, 'tls.files', 'only used when tls.issuer is files (it is acme here); remove tls.files or set tls.issuer: files'),
    ]);
  });

  test('acme values', () => {
    expect(errorsOf(yaml('server_name: example.com', 'acme:', '  email: admin', '  ca: http://ca.example/dir'))).toEqual([
      issue(3, 10, 'acme.email', "expected an email address like admin@example.com; got 'admin'"),
      issue(
        4,
        7,
        'acme.ca',
        "expected one of letsencrypt, letsencrypt-staging, zerossl, google, buypass or an https:// directory URL; got 'http://ca.example/dir'",
      ),
    ]);
  });

  test('YAML syntax errors carry their line', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  https: [443, 8448', 'upstream: http://localhost:8008'))).toEqual([
      expect.objectContaining({ file: FILE, line: 4, column: 1, key: '', message: expect.stringMatching(/^YAML syntax error: /) }),
    ]);
  });

  test('tabs used as indentation', () => {
    expect(errorsOf('server_name: example.com\nlisten:\n\thttp: 80\n')).toEqual([
      expect.objectContaining({ line: 3, column: 1, message: 'YAML syntax error: Tabs are not allowed as indentation' }),
    ]);
  });

  test('duplicate keys', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen:', '  http: 80', '  http: 8080'))).toEqual([
      issue(4, 3, 'listen.http', "duplicate key 'http'; a key may appear only once in a map"),
    ]);
  });

  test('an alias with no anchor', () => {
    expect(errorsOf(yaml('server_name: *name'))).toEqual([
      issue(1, 14, '', 'the alias *name refers to no anchor &name defined before it'),
    ]);
  });

  test('a key that is a list', () => {
    expect(errorsOf(yaml('server_name: example.com', '? [complex, key]', ': 1'))).toEqual([
      issue(2, 3, '', 'a key must be a plain name, not a list or a map'),
    ]);
  });

  test('more than one YAML document', () => {
    expect(errorsOf(yaml('server_name: example.com', '---', 'server_name: example.org'))).toEqual([
      issue(2, 1, '', "the file holds more than one YAML document ('---'); put the whole config in one"),
    ]);
  });

  test('an empty file, a file of comments only', () => {
    const empty = { file: FILE, key: '', message: 'the config is empty; server_name is required' };
    expect(errorsOf('')).toEqual([empty]);
    expect(errorsOf('# nothing here\n\n')).toEqual([empty]);
  });

  test('a document that is not a map', () => {
    expect(errorsOf(yaml('- server_name: example.com'))).toEqual([
      issue(1, 1, '', "the config must be a map of keys like 'server_name: example.com'; got a list"),
    ]);
    expect(errorsOf('example.com\n')).toEqual([
      issue(1, 1, '', "the config must be a map of keys like 'server_name: example.com'; got 'example.com'"),
    ]);
  });

  test('a missing file is an error with no line', () => {
    const missing = path.join(os.tmpdir(), 'matrix-edge-no-such-dir', 'nope.yaml');
    expect(loadConfigFile(missing)).toEqual({
      ok: false,
      errors: [{ file: missing, key: '', message: `cannot read the config: there is no file ${missing} (pass another one with --config)` }],
      warnings: [],
    });
  });

  test('a directory is not a config file', () => {
    const result = loadConfigFile(os.tmpdir());
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]?.message).toMatch(/is a directory, not a YAML file$/);
  });
});

describe('robustness', () => {
  const bomb = yaml(
    'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]',
    'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
    'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
    'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
    'server_name: example.com',
  );
  test.each([
    ['{'],
    [':'],
    ['[[['],
    ['server_name: example.com\n__proto__: { polluted: true }\n'],
    ['server_name: example.com\n? [complex, key]\n: 1\n'],
    ['server_name: !!binary aGVsbG8=\n'],
    ['\u0000\u0001'],
    [bomb],
  ])('%p is rejected without throwing', (text) => {
    const result = load(text);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors.length).toBeGreaterThan(0);
      for (const e of result.errors) expect(e.message).not.toMatch(/Invalid input|expected nonoptional/);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('every error is reported at once', () => {
  test('errors from different sections, in document order', () => {
    const errors = errorsOf(
      yaml(
        'server_name: example.com:99999', // 1
        'listen:', // 2
        '  https: [443, 0]', // 3
        'upstream: ftp://hs', // 4
        'tls:', // 5
        '  issuer: interal', // 6
        'proxy:', // 7
        '  connections: many', // 8
        'loglevel: debug', // 9
      ),
    );
    expect(errors.map((e) => `${e.line}:${e.column} ${e.key}`)).toEqual([
      '1:14 server_name',
      '3:16 listen.https[1]',
      '4:11 upstream',
      '6:11 tls.issuer',
      '8:16 proxy.connections',
      '9:1 loglevel',
    ]);
    expect(errors[0]?.message).toBe("the port 99999 in 'example.com:99999' is not a port (1–65535)");
    expect(errors[4]?.message).toBe("expected a whole number of connections (1–100000); got 'many'");
    expect(errors[5]?.message).toBe("unknown key 'loglevel' (did you mean 'log.level'?)");
  });
});

describe('well-known', () => {
  test('m.server without a port is a warning', () => {
    const { plan, warnings } = planOf(yaml('server_name: example.com', 'well_known:', '  server: matrix.example.com'));
    expect(plan.wellKnown.server).toBe('{"m.server":"matrix.example.com"}');
    expect(warnings).toEqual([
      issue(
        3,
        11,
        'well_known.server',
        'm.server has no port: peers will look up SRV _matrix-fed._tcp.matrix.example.com and then use port 8448',
      ),
    ]);
  });

  test('m.server breaking the grammar is an error', () => {
    expect(errorsOf(yaml('server_name: example.com', 'well_known:', '  server: "matrix.example.com:443:1"'))).toEqual([
      issue(
        3,
        11,
        'well_known.server',
        "'matrix.example.com:443:1': an IPv6 address must be written in brackets, e.g. [2001:db8::1]:8448",
      ),
    ]);
  });

  test('m.server pointing at a port of ours that is not served is a warning', () => {
    const { warnings } = planOf(
      yaml('server_name: example.com', 'listen: { https: [443] }', 'well_known: { server: "example.com:8448" }'),
    );
    expect(warnings).toEqual([
      issue(3, 23, 'well_known.server', 'm.server sends peers to port 8448 of a name served here, but listen.https is [443]'),
    ]);
  });

  test('default m.server and base_url use the first https port when 443 is not served', () => {
    const { plan } = planOf(yaml('server_name: example.com', 'hostname: matrix.example.com', 'listen: { https: [8448, 9443] }'));
    expect(plan.wellKnown.server).toBe('{"m.server":"matrix.example.com:8448"}');
    expect(plan.wellKnown.client).toBe('{"m.homeserver":{"base_url":"https://matrix.example.com:8448"}}');
  });

  test('client extra keys are emitted verbatim next to the default base_url', () => {
    const { plan } = planOf(
      yaml(
        'server_name: example.com',
        'hostname: matrix.example.com',
        'well_known:',
        '  client:',
        '    m.identity_server: { base_url: "https://id.example.com" }',
        '    org.matrix.msc4143.rtc_foci:',
        '      - type: livekit',
        '        livekit_service_url: https://livekit.example.com',
        '    io.element.e2ee: { default: false, count: 3, ratio: 0.5, none: null }',
      ),
    );
    expect(plan.wellKnown.client).toBe(
      '{"m.homeserver":{"base_url":"https://matrix.example.com"},' +
        '"m.identity_server":{"base_url":"https://id.example.com"},' +
        '"org.matrix.msc4143.rtc_foci":[{"type":"livekit","livekit_service_url":"https://livekit.example.com"}],' +
        '"io.element.e2ee":{"default":false,"count":3,"ratio":0.5,"none":null}}',
    );
  });

  test('a given m.homeserver keeps its keys; its base_url wins over the default', () => {
    const { plan: filled } = planOf(
      yaml('server_name: example.com', 'well_known:', '  client:', '    m.homeserver: { server_name: example.com }'),
    );
    expect(filled.wellKnown.client).toBe('{"m.homeserver":{"base_url":"https://example.com","server_name":"example.com"}}');
    const { plan: given } = planOf(
      yaml('server_name: example.com', 'well_known:', '  client:', '    m.homeserver: { base_url: "https://hs.example.net/" }'),
    );
    expect(given.wellKnown.client).toBe('{"m.homeserver":{"base_url":"https://hs.example.net/"}}');
  });

  test('client validation', () => {
    expect(errorsOf(yaml('server_name: example.com', 'well_known:', '  client: [a]'))).toEqual([
      issue(3, 11, 'well_known.client', 'expected a map of keys to add to /.well-known/matrix/client; got a list'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'well_known:', '  client:', '    m.homeserver: https://x'))).toEqual([
      issue(
        4,
        19,
        'well_known.client["m.homeserver"]',
        'expected a map like { base_url: "https://matrix.example.com" }; got \'https://x\'',
      ),
    ]);
    expect(
      errorsOf(yaml('server_name: example.com', 'well_known:', '  client:', '    m.homeserver:', '      base_url: matrix.example.com')),
    ).toEqual([
      issue(5, 17, 'well_known.client["m.homeserver"].base_url', "expected an http:// or https:// URL; got 'matrix.example.com'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'well_known:', '  client: { x.y: .inf }'))).toEqual([
      issue(3, 18, 'well_known.client["x.y"]', 'Infinity cannot be written in JSON; use a finite number or a string'),
    ]);
  });

  test('a valid support body is served verbatim, null answers 404', () => {
    const { plan } = planOf(
      yaml(
        'server_name: example.com',
        'well_known:',
        '  support:',
        '    contacts:',
        '      - { role: m.role.admin, matrix_id: "@admin:example.com" }',
        '      - { role: m.role.security, email_address: security@example.com, x.custom: 1 }',
        '    support_page: https://example.com/help',
        '    org.example.extra: true',
        '  max_age: 5m',
      ),
    );
    expect(plan.wellKnown.support).toBe(
      '{"contacts":[{"role":"m.role.admin","matrix_id":"@admin:example.com"},' +
        '{"role":"m.role.security","email_address":"security@example.com","x.custom":1}],' +
        '"support_page":"https://example.com/help","org.example.extra":true}',
    );
    expect(plan.wellKnown.maxAgeSeconds).toBe(300);
    expect(planOf(yaml('server_name: example.com', 'well_known: { support: null }')).plan.wellKnown.support).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'well_known:', '  support:')).plan.wellKnown.support).toBeNull();
    expect(
      planOf(yaml('server_name: example.com', 'well_known: { support: { support_page: "https://x.example" } }')).plan.wellKnown.support,
    ).toBe('{"support_page":"https://x.example"}');
  });

  test('support validation', () => {
    expect(errorsOf(yaml('server_name: example.com', 'well_known:', '  support: { motd: hi }'))).toEqual([
      issue(3, 12, 'well_known.support', 'give contacts, support_page or both (or null to answer 404)'),
    ]);
    expect(
      errorsOf(
        yaml(
          'server_name: example.com',
          'well_known:',
          '  support:',
          '    contacts:',
          '      - matrix_id: "@admin:example.com"',
          '      - role: m.role.admin',
          '        matrix_id: admin',
          '      - role: m.role.security',
          '      - { role: m.role.admin, email_address: nobody }',
          '    support_page: example.com/help',
        ),
      ),
    ).toEqual([
      issue(5, 9, 'well_known.support.contacts[0].role', 'missing; give a role like m.role.admin or m.role.security'),
      issue(7, 20, 'well_known.support.contacts[1].matrix_id', "expected a Matrix user ID like @admin:example.com; got 'admin'"),
      issue(8, 9, 'well_known.support.contacts[2]', 'each contact needs matrix_id, email_address or both'),
      issue(9, 46, 'well_known.support.contacts[3].email_address', "expected an email address like admin@example.com; got 'nobody'"),
      issue(10, 19, 'well_known.support.support_page', "expected an http:// or https:// URL; got 'example.com/help'"),
    ]);
  });
});

describe('routes', () => {
  test('forwarding /_synapse/admin/ removes its default block and forwards it after the defaults', () => {
    const { plan, warnings } = planOf(
      yaml('server_name: example.com', 'proxy:', '  forward_prefixes: [/_synapse/admin/, /_mas/]', '  block_prefixes: [/_matrix/client/v3/admin/]'),
    );
    expect(warnings).toEqual([]);
    expect(plan.routes.map((r) => r.id)).toEqual([
      'well-known:server',
      'well-known:client',
      'well-known:support',
      'block:/_dendrite/',
      'block:/_matrix/client/v3/admin/',
      'proxy:/_matrix/',
      'proxy:/_synapse/client/',
      'proxy:/_synapse/admin/',
      'proxy:/_mas/',
      'fallback',
    ]);
    expect(plan.routes[4]?.action).toEqual({
      type: 'status',
      status: 404,
      errcode: 'M_NOT_FOUND',
      error: '/_matrix/client/v3/admin/ is not exposed on this server',
    });
    expect(plan.routes[7]?.action).toEqual({ type: 'proxy', upstream: 'homeserver', maxBodyBytes: 50 * 1024 * 1024 });
  });

  test('a forwarded prefix under a blocked one is a warning: it would never be forwarded', () => {
    const { warnings } = planOf(yaml('server_name: example.com', 'proxy:', '  forward_prefixes: [/_synapse/admin/v1/]'));
    expect(warnings).toEqual([
      issue(
        3,
        22,
        'proxy.forward_prefixes[0]',
        "'/_synapse/admin/v1/' lies under the blocked prefix '/_synapse/admin/' and will never be forwarded; forward '/_synapse/admin/' itself to expose it",
      ),
    ]);
  });

  test('max_body_size reaches every proxy route', () => {
    const { plan } = planOf(yaml('server_name: example.com', 'proxy: { max_body_size: 10MB, forward_prefixes: [/x/] }'));
    const proxied = plan.routes.filter((r) => r.action.type === 'proxy');
    expect(proxied).toHaveLength(3);
    for (const r of proxied) expect(r.action).toEqual({ type: 'proxy', upstream: 'homeserver', maxBodyBytes: 10_000_000 });
  });
});

describe('paths, issuers, proxy settings', () => {
  test('relative paths resolve against the config directory', () => {
    const { plan } = planOf(
      yaml(
        'server_name: example.com',
        'storage: data/certs',
        'acme:',
        '  ca: "https://localhost:14000/dir"',
        '  ca_roots: [pebble.minica.pem, /etc/ssl/root.pem, ../up.pem]',
      ),
    );
    expect(plan.storage).toBe('/srv/edge/data/certs');
    expect(plan.acme).toMatchObject({
      email: null,
      directory: 'https://localhost:14000/dir',
      caRoots: ['/srv/edge/pebble.minica.pem', '/etc/ssl/root.pem', '/srv/up.pem'],
    });
    const files = planOf(
      yaml('server_name: example.com', 'storage: ../state', 'tls:', '  issuer: files', '  files: [{ cert: tls/a.crt, key: /k/a.key }]', '  reload_interval: 5m'),
    ).plan;
    expect(files.storage).toBe('/srv/state');
    expect(files.tls).toEqual({ issuer: 'files', files: [{ cert: '/srv/edge/tls/a.crt', key: '/k/a.key' }], reloadIntervalSeconds: 300 });
  });

  test('the source is the config file as an absolute path', () => {
    expect(loadConfigText('server_name: a.example\n', 'config/edge.yaml', '/opt/me/config')).toMatchObject({
      ok: true,
      plan: { source: '/opt/me/config/edge.yaml' },
    });
    expect(loadConfigText('server_name: a.example\n', '/etc/edge.yaml', '/etc')).toMatchObject({ plan: { source: '/etc/edge.yaml' } });
  });

  test.each([
    ['letsencrypt', 'https://acme-v02.api.letsencrypt.org/directory', ''],
    ['letsencrypt-staging', 'https://acme-staging-v02.api.letsencrypt.org/directory', ''],
    ['zerossl', 'https://acme.zerossl.com/v2/DV90', ', eab: { kid: k1, hmac_key: abcdefghijklmnop_-12 }'],
    ['google', 'https://dv.acme-v02.api.pki.goog/directory', ', eab: { kid: k1, hmac_key: abcdefghijklmnop_-12 }'],
    ['buypass', 'https://api.buypass.com/acme/directory', ''],
  ])('acme.ca preset %s', (ca, directory, eab) => {
    expect(planOf(yaml('server_name: example.com', `acme: { ca: ${ca}, email: a@example.com${eab} }`)).plan.acme).toEqual({
      email: 'a@example.com',
      directory,
      caRoots: [],
      eab: eab === '' ? null : { kid: 'k1', hmacKey: 'abcdefghijklmnop_-12' },
      profile: null,
      challenges: ['http-01', 'tls-alpn-01'],
      keyType: 'p256',
      fallbacks: [],
    });
  });

  test.each(['zerossl', 'google'])('acme.ca %s without eab is an error naming where the credentials come from', (ca) => {
    const errors = errorsOf(yaml('server_name: example.com', 'acme:', `  ca: ${ca}`));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ line: 3, key: 'acme.ca' });
    expect(errors[0]!.message).toMatch(/requires External Account Binding: add acme\.eab: \{ kid: \.\.\., hmac_key: \.\.\. \}/);
  });

  test('acme: eab, profile, challenges, key type and fallback CAs reach the plan', () => {
    const { plan, warnings } = planOf(
      yaml(
        'server_name: example.com',
        'acme:',
        '  email: a@example.com',
        '  ca: https://ca.example.net/dir',
        '  ca_roots: [roots.pem]',
        '  eab: { kid: kid-1, hmac_key: zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W }',
        '  profile: shortlived',
        '  challenges: [tls-alpn-01, http-01]',
        '  key_type: rsa2048',
        '  fallback:',
        '    - ca: letsencrypt',
        '    - ca: zerossl',
        '      email: b@example.com',
        '      eab: { kid: z, hmac_key: 0123456789abcdefABCDEF== }',
      ),
    );
    expect(warnings).toEqual([]);
    expect(plan.acme).toEqual({
      email: 'a@example.com',
      directory: 'https://ca.example.net/dir',
      caRoots: [path.resolve('/srv/edge', 'roots.pem')],
      eab: { kid: 'kid-1', hmacKey: 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W' },
      profile: 'shortlived',
      challenges: ['tls-alpn-01', 'http-01'],
      keyType: 'rsa2048',
      fallbacks: [
        { email: 'a@example.com', directory: 'https://acme-v02.api.letsencrypt.org/directory', caRoots: [], eab: null, profile: null },
        { email: 'b@example.com', directory: 'https://acme.zerossl.com/v2/DV90', caRoots: [], eab: { kid: 'z', hmacKey: '0123456789abcdefABCDEF' }, profile: null },
      ],
    });
  });

  test('acme: bad values name the key', () => {
    const errors = errorsOf(
      yaml(
        'server_name: example.com',
        'acme:',
        '  eab: { kid: "", hmac_key: "not base64!" }',
        '  challenges: [dns-01]',
        '  key_type: ed25519',
        '  profile: "short lived"',
        '  fallback:',
        '    - ca: google',
        '      emial: x@example.com',
      ),
    );
    expect(errors.map((e) => `${e.line} ${e.key}: ${e.message}`)).toEqual([
      expect.stringMatching(/^3 acme\.eab\.kid: expected the key identifier/),
      expect.stringMatching(/^3 acme\.eab\.hmac_key: expected the HMAC key your CA issued: base64url/),
      "4 acme.challenges[0]: expected one of http-01, tls-alpn-01; got 'dns-01'",
      "5 acme.key_type: expected one of p256, p384, rsa2048, rsa4096; got 'ed25519'",
      expect.stringMatching(/^6 acme\.profile: expected a profile name/),
      expect.stringMatching(/^8 acme\.fallback\[0\]\.ca: Google Trust Services requires External Account Binding: add eab: /),
      expect.stringMatching(/^9 acme\.fallback\[0\]\.emial: unknown key 'emial' \(did you mean 'email'\?\)/),
    ]);
  });

  test('workers: auto (one per CPU, decided at start) or a count', () => {
    expect(planOf(yaml('server_name: example.com')).plan.workers).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'workers: auto')).plan.workers).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'workers: 3')).plan.workers).toBe(3);
    expect(errorsOf(yaml('server_name: example.com', 'workers: 0'))).toEqual([
      expect.objectContaining({ line: 2, key: 'workers', message: 'expected auto (one per CPU) or a whole number of worker processes (1–256); got 0' }),
    ]);
  });

  test('acme: http-01 alone with listen.http null is an error; with both, tls-alpn-01 is used alone', () => {
    expect(errorsOf(yaml('server_name: example.com', 'listen: { http: null }', 'acme: { challenges: [http-01] }'))).toEqual([
      expect.objectContaining({ key: 'acme.challenges', message: expect.stringMatching(/listen\.http: null disables/) }),
    ]);
    expect(planOf(yaml('server_name: example.com', 'listen: { http: null }')).plan.acme!.challenges).toEqual(['tls-alpn-01']);
    const both = planOf(yaml('server_name: example.com', 'listen: { http: null }', 'acme: { challenges: [http-01, tls-alpn-01] }'));
    expect(both.plan.acme!.challenges).toEqual(['tls-alpn-01']);
    expect(both.warnings).toEqual([expect.objectContaining({ key: 'acme.challenges', message: expect.stringMatching(/http-01 is skipped/) })]);
  });

  test('an acme section with another issuer is ignored with a warning', () => {
    const { plan, warnings } = planOf(yaml('server_name: example.com', 'tls: { issuer: internal }', 'acme:', '  email: a@example.com'));
    expect(plan.acme).toBeNull();
    expect(plan.tls).toEqual({ issuer: 'internal', leafLifetimeSeconds: 604800 });
    expect(warnings).toEqual([issue(3, 1, 'acme', 'ignored: the acme section is only used when tls.issuer is acme (it is internal)')]);
  });

  test('issuer-specific tls settings with another issuer are ignored with a warning', () => {
    const { warnings } = planOf(yaml('server_name: example.com', 'tls:', '  issuer: internal', '  reload_interval: 10s'));
    expect(warnings).toEqual([issue(4, 3, 'tls.reload_interval', 'ignored: only used when tls.issuer is files (it is internal)')]);
  });

  test('acme for localhost is a warning', () => {
    const { warnings } = planOf(yaml('server_name: localhost'));
    expect(warnings).toEqual([
      issue(1, 14, 'server_name', 'public ACME CAs do not issue certificates for localhost; use tls.issuer: internal for local development'),
    ]);
  });

  test('proxy settings, listen variants and log level reach the plan', () => {
    const { plan } = planOf(
      yaml(
        'server_name: example.com',
        'listen:',
        '  https: 8443',
        '  http: null',
        '  address: 127.0.0.1',
        'upstream: https://synapse.internal',
        'proxy:',
        '  upstream_timeout: 10m',
        '  connect_timeout: 2.5s',
        '  connections: 64',
        '  trusted_proxies: [10.0.0.0/8, "::1"]',
        '  drain_timeout: 0',
        '  queue_timeout: 3s',
        '  body_idle_timeout: 20s',
        '  send_timeout: 45s',
        '  max_requests_per_connection: 10',
        '  max_requests_per_address: 40',
        'limits:',
        '  handshake_timeout: 5s',
        '  header_timeout: 15s',
        '  idle_timeout: 5m',
        '  max_header_size: 64KiB',
        '  max_connections: 2000',
        '  max_streams: 64',
        'log: { level: debug }',
      ),
    );
    expect(plan.listen).toEqual({ https: [{ port: 8443, addresses: ['127.0.0.1'] }], http: null });
    expect(plan.upstreams).toEqual([
      {
        name: 'homeserver',
        url: 'https://synapse.internal',
        dial: 'https://synapse.internal:443',
        timeoutMs: 600_000,
        connectTimeoutMs: 2500,
        connections: 64,
        queueTimeoutMs: 3000,
      },
    ]);
    expect(plan.limits).toEqual({
      handshakeTimeoutMs: 5000,
      headerTimeoutMs: 15_000,
      idleTimeoutMs: 300_000,
      maxHeaderBytes: 65_536,
      maxConnections: 2000,
      maxStreams: 64,
      bodyIdleTimeoutMs: 20_000,
      sendTimeoutMs: 45_000,
      perConnection: 10,
      perAddress: 40,
    });
    expect(plan.trustedProxies).toEqual(['10.0.0.0/8', '::1']);
    expect(plan.drainTimeoutMs).toBe(0);
    expect(plan.log.level).toBe('debug');
  });

  test('log format and per-component levels, and the request-id header, reach the plan', () => {
    const { plan } = planOf(
      yaml('server_name: example.com', 'log: { level: warn, format: pretty, levels: { access: error, certs: debug } }', 'proxy: { request_id_header: X-Correlation-Id }'),
    );
    expect(plan.log).toEqual({ level: 'warn', format: 'pretty', levels: { access: 'error', certs: 'debug' } });
    expect(plan.requestIdHeader).toBe('x-correlation-id');
    expect(planOf(yaml('server_name: example.com', 'proxy: { request_id_header: false }')).plan.requestIdHeader).toBeNull();
  });

  test('an unknown log component, a bad component level and a bad header name are errors at their place', () => {
    expect(errorsOf(yaml('server_name: example.com', 'log:', '  levels:', '    acess: debug', '    certs: chatty'))).toEqual([
      issue(4, 12, 'log.levels.acess', "unknown component 'acess'; the components are access, data, tls, workers, certs, control, admin, alerts"),
      issue(5, 12, 'log.levels.certs', "expected one of trace, debug, info, warn, error, fatal; got 'chatty'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'proxy: { request_id_header: "X Request" }'))).toEqual([
      issue(2, 29, 'proxy.request_id_header', "expected a header name like X-Request-Id, or false to send none; got 'X Request'"),
    ]);
  });

  test('the dial address replaces localhost only', () => {
    const dial = (url: string): string => planOf(yaml('server_name: example.com', `upstream: "${url}"`)).plan.upstreams[0]!.dial;
    expect(dial('http://localhost:8008/')).toBe('http://127.0.0.1:8008');
    expect(dial('http://LOCALHOST')).toBe('http://127.0.0.1:80');
    expect(dial('http://[::1]:8008')).toBe('http://[::1]:8008');
    expect(dial('http://10.1.2.3:6167')).toBe('http://10.1.2.3:6167');
  });
});

describe('describe', () => {
  test('formatIssue leaves out absent parts', () => {
    expect(formatIssue({ file: 'config/matrix-edge.yaml', line: 12, column: 3, key: 'listen.https[1]', message: '70000 is not a port (1–65535)' })).toBe(
      'config/matrix-edge.yaml:12:3 listen.https[1]: 70000 is not a port (1–65535)',
    );
    expect(formatIssue({ file: 'a.yaml', line: 4, key: '', message: 'bad' })).toBe('a.yaml:4: bad');
    expect(formatIssue({ file: 'a.yaml', key: '', message: 'cannot read' })).toBe('a.yaml: cannot read');
    expect(formatIssue({ file: 'a.yaml', key: 'upstream', message: 'bad' })).toBe('a.yaml upstream: bad');
    expect(formatIssue({ file: '', key: '', message: 'just this' })).toBe('just this');
  });

  test('describePlan shows names, issuer, listeners, upstream, routes in order, bodies, and the rest', () => {
    const result = loadConfigFile(path.join(REPO, 'config/examples/production.yaml'));
    if (!result.ok) throw new Error('rejected');
    const warning = issue(1, 1, 'x', 'something to know');
    const text = describePlan(result.plan, [warning]);
    const lines = text.split('\n');
    const has = (re: RegExp): void => expect(lines.some((l) => re.test(l))).toBe(true);
    has(/^Server name\s+example\.com$/);
    has(/^Served names\s+matrix\.example\.com, example\.com/);
    has(/^Issuer\s+acme https:\/\/acme-v02\.api\.letsencrypt\.org\/directory$/);
    has(/^\s+https\s+443\s+0\.0\.0\.0, ::$/);
    has(/^\s+https\s+8448\s+0\.0\.0\.0, ::$/);
    has(/^\s+http\s+80\s+0\.0\.0\.0, ::/);
    has(/^\s+homeserver\s+http:\/\/localhost:8008\s+http:\/\/127\.0\.0\.1:8008\s+330s\s+10s\s+4096\s+10s$/);
    has(/^HSTS\s+max-age=31536000$/);
    has(/^Limits\s+TLS handshake 10s, request headers 30s, idle connection 2m$/);
    has(/^Well-known bodies \(Cache-Control: max-age=3600\)$/);
    expect(text).toContain(`/.well-known/matrix/server   ${result.plan.wellKnown.server}\n`);
    expect(text).toContain(`/.well-known/matrix/client   ${result.plan.wellKnown.client}\n`);
    expect(text).toContain(`/.well-known/matrix/support  ${result.plan.wellKnown.support}\n`);
    has(/^Trusted proxies\s+none/);
    has(/^Storage\s+\/var\/lib\/matrix-edge$/);
    expect(text).toContain('1 warning:\n  edge.yaml:1:1 x: something to know\n');
    // Routes appear as a table in plan order.
    const routeRows = lines.filter((l) => /^\s+\d+\s+\S+/.test(l)).map((l) => l.trim().split(/\s+/)[1]);
    expect(routeRows).toEqual(DEFAULT_ROUTE_IDS);
    expect(text).toMatch(/block:\/_synapse\/admin\/\s+\*\s+prefix \/_synapse\/admin\/\s+404 M_NOT_FOUND/);
  });

  test('describePlan marks a disabled HTTP listener and a missing support body', () => {
    const { plan } = planOf(yaml('server_name: example.com', 'listen: { http: null }', 'tls: { issuer: internal }'));
    const text = describePlan(plan, []);
    expect(text).toMatch(/http\s+-\s+disabled/);
    expect(text).toContain('/.well-known/matrix/support  404 (not configured)');
    expect(text).toContain('No warnings.');
  });
});

describe('admin and alerts', () => {
  test('admin: on 127.0.0.1:9090 by default; null or false turn it off; addresses, ports and localhost', () => {
    expect(planOf('server_name: example.com\n').plan.admin).toEqual({ port: 9090, addresses: ['127.0.0.1'] });
    expect(planOf(yaml('server_name: example.com', 'admin:')).plan.admin).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'admin: false')).plan.admin).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'admin: { listen: null }')).plan.admin).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'admin: {}')).plan.admin).toEqual({ port: 9090, addresses: ['127.0.0.1'] });
    expect(planOf(yaml('server_name: example.com', 'admin: { listen: "[::1]:0" }')).plan.admin).toEqual({ port: 0, addresses: ['::1'] });
    expect(planOf(yaml('server_name: example.com', 'admin: { listen: 9100 }')).plan.admin).toEqual({ port: 9100, addresses: ['127.0.0.1'] });
    expect(planOf(yaml('server_name: example.com', 'admin: { listen: "localhost:9100" }')).plan.admin).toEqual({ port: 9100, addresses: ['127.0.0.1'] });
  });

  test('admin on a non-loopback address is allowed, with a warning that the metrics are then public', () => {
    const { plan, warnings } = planOf(yaml('server_name: example.com', 'admin:', '  listen: 0.0.0.0:9090'));
    expect(plan.admin).toEqual({ port: 9090, addresses: ['0.0.0.0'] });
    expect(warnings).toEqual([
      issue(3, 11, 'admin.listen', '0.0.0.0 is not a loopback address: /metrics, /healthz and /readyz are public to anyone who can reach port 9090; bind 127.0.0.1 or firewall the port'),
    ]);
  });

  test('admin errors carry file, line, column and key', () => {
    expect(errorsOf(yaml('server_name: example.com', 'admin:', '  listen: "0.0.0.0"'))).toEqual([
      issue(3, 11, 'admin.listen', "expected an address and port like 127.0.0.1:9090 or [::1]:9090 (or just a port, on 127.0.0.1); got '0.0.0.0'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'admin:', '  listen: metrics.example.com:9090'))).toEqual([
      issue(3, 11, 'admin.listen', "'metrics.example.com' is not an IP address; the admin listener binds an IP literal like 127.0.0.1 or [::1]"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'admin: { listen: "127.0.0.1:70000" }'))).toEqual([
      issue(2, 18, 'admin.listen', '70000 is not a port (0–65535)'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'admin:', '  port: 9090'))).toEqual([
      issue(3, 3, 'admin.port', "unknown key 'port'; allowed here: listen"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'admin: 9090'))).toEqual([issue(2, 8, 'admin', 'expected a map with keys listen; got 9090')]);
  });

  test('alerts: off by default; a generic webhook with the default thresholds', () => {
    expect(planOf('server_name: example.com\n').plan.alerts).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'alerts:')).plan.alerts).toBeNull();
    const { plan, warnings } = planOf(yaml('server_name: example.com', 'alerts:', '  webhook: https://hooks.example.com/edge'));
    expect(warnings).toEqual([]);
    expect(plan.alerts).toEqual({ target: { format: 'generic', url: 'https://hooks.example.com/edge' }, afterFailures: 3, daysLeft: [14, 7, 2] });
  });

  test('alerts to a Matrix room: the homeserver defaults to the upstream, the token file resolves against the config', () => {
    const { plan, warnings } = planOf(
      yaml(
        'server_name: example.com',
        'upstream: http://localhost:8008',
        'alerts:',
        '  format: matrix',
        '  room_id: "!ops:example.com"',
        '  access_token_file: secrets/alert-token',
        '  after_failures: 5',
        '  days_left: [3, 10]',
      ),
    );
    expect(warnings).toEqual([]);
    expect(plan.alerts).toEqual({
      target: { format: 'matrix', homeserver: 'http://localhost:8008', roomId: '!ops:example.com', accessTokenFile: '/srv/edge/secrets/alert-token', accessToken: null },
      afterFailures: 5,
      daysLeft: [10, 3],
    });
    const inline = planOf(
      yaml('server_name: example.com', 'alerts:', '  format: matrix', '  homeserver: https://matrix.example.com/', '  room_id: "!ops:example.com"', '  access_token: syt_abc'),
    );
    expect(inline.plan.alerts?.target).toEqual({ format: 'matrix', homeserver: 'https://matrix.example.com', roomId: '!ops:example.com', accessTokenFile: null, accessToken: 'syt_abc' });
    expect(inline.warnings).toEqual([
      issue(6, 17, 'alerts.access_token', 'the access token is written in the config; prefer access_token_file (a file only this service can read) so the secret stays out of the YAML'),
    ]);
  });

  test('alerts errors carry file, line, column and key', () => {
    expect(errorsOf(yaml('server_name: example.com', 'alerts:', '  days_left: [7]'))).toEqual([
      issue(3, 3, 'alerts.webhook', 'required: the http(s) URL alerts are POSTed to as JSON (or set format: matrix to post to a Matrix room)'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'alerts:', '  format: matrix', '  webhook: https://hooks.example.com/'))).toEqual([
      issue(3, 3, 'alerts.room_id', 'required with format matrix: the room alerts are posted to, like "!abcdef:example.com"'),
      issue(3, 3, 'alerts.access_token_file', 'required with format matrix: a file holding the access token of the account that posts (or access_token inline)'),
      issue(4, 12, 'alerts.webhook', 'only used with alerts.format: generic (it is matrix here)'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'alerts:', '  format: matrix', '  room_id: "#ops:example.com"', '  access_token_file: /t'))).toEqual([
      issue(4, 12, 'alerts.room_id', 'expected a room ID like "!abcdef:example.com", not an alias: find the ID in the room\'s settings (Advanced); got \'#ops:example.com\''),
    ]);
    expect(
      errorsOf(yaml('server_name: example.com', 'alerts:', '  format: matrix', '  room_id: "!ops:example.com"', '  access_token: a', '  access_token_file: /t')),
    ).toEqual([issue(5, 17, 'alerts.access_token', 'give access_token_file or access_token, not both')]);
    expect(errorsOf(yaml('server_name: example.com', 'alerts:', '  webhook: ftp://x', '  after_failures: 0', '  days_left: [14, 0, 14]', '  format: slack'))).toEqual([
      issue(3, 12, 'alerts.webhook', "expected the URL alerts are POSTed to, an http:// or https:// URL; got 'ftp://x'"),
      issue(4, 19, 'alerts.after_failures', 'expected a whole number of failed renewals in a row (1–100); got 0'),
      issue(5, 19, 'alerts.days_left[1]', 'expected a whole number of days (1–365); got 0'),
      issue(5, 22, 'alerts.days_left[2]', '14 is listed twice'),
      issue(6, 11, 'alerts.format', "expected one of generic, matrix; got 'slack'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'alerts:', '  webhok: https://x'))).toEqual([
      issue(3, 3, 'alerts.webhok', "unknown key 'webhok' (did you mean 'webhook'?)"),
      issue(3, 3, 'alerts.webhook', 'required: the http(s) URL alerts are POSTed to as JSON (or set format: matrix to post to a Matrix room)'),
    ]);
  });

  test('check shows the admin address and the alerts, never an inline token', () => {
    const text = describePlan(
      planOf(yaml('server_name: example.com', 'alerts:', '  format: matrix', '  room_id: "!ops:example.com"', '  access_token: syt_secret')).plan,
      [],
    );
    expect(text).toMatch(/^Admin\s+http:\/\/127\.0\.0\.1:9090  \(\/metrics, \/healthz, \/readyz\)$/m);
    expect(text).toMatch(/^Alerts\s+Matrix room !ops:example\.com via http:\/\/localhost:8008 \(token inline in the config\)$/m);
    expect(text).toMatch(/^\s+after 3 failed renewals in a row, at 14, 7, 2 days left, and on recovery$/m);
    expect(text).not.toContain('syt_secret');
    const off = describePlan(planOf(yaml('server_name: example.com', 'admin: false')).plan, []);
    expect(off).toMatch(/^Admin\s+off$/m);
    expect(off).toMatch(/^Alerts\s+off \(set alerts\.webhook, or alerts\.format: matrix, to be told when renewals fail\)$/m);
    expect(describePlan(planOf(yaml('server_name: example.com', 'admin: { listen: "[::1]:9100" }')).plan, [])).toMatch(/^Admin\s+http:\/\/\[::1\]:9100 /m);
  });
});

describe('limits and HSTS', () => {
  test('HSTS: default one year, a map, true, and false for none', () => {
    expect(planOf(yaml('server_name: example.com')).plan.hsts).toBe('max-age=31536000');
    expect(planOf(yaml('server_name: example.com', 'tls: { hsts: true }')).plan.hsts).toBe('max-age=31536000');
    expect(planOf(yaml('server_name: example.com', 'tls: { hsts: false }')).plan.hsts).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'tls: { hsts: null }')).plan.hsts).toBeNull();
    expect(planOf(yaml('server_name: example.com', 'tls: { hsts: { max_age: 730d, include_subdomains: true, preload: true } }')).plan.hsts).toBe(
      'max-age=63072000; includeSubDomains; preload',
    );
    expect(planOf(yaml('server_name: example.com', 'tls: { hsts: { max_age: 1h } }')).plan.hsts).toBe('max-age=3600');
  });

  test('bad HSTS settings name the key', () => {
    expect(errorsOf(yaml('server_name: example.com', 'tls: { hsts: { preload: true } }'))).toEqual([
      issue(2, 25, 'tls.hsts.preload', 'preload lists only accept include_subdomains: true with a max_age of at least 365d; set both, or drop preload'),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'tls: { hsts: { maxage: 1d } }'))).toEqual([
      issue(2, 16, 'tls.hsts.maxage', "unknown key 'maxage' (did you mean 'max_age'?)"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'tls: { hsts: yes }'))).toEqual([
      issue(2, 14, 'tls.hsts', "expected false (no HSTS) or a map like { max_age: 365d, include_subdomains: false, preload: false }; got 'yes'"),
    ]);
  });

  test('limits out of range are errors with file, line and key', () => {
    expect(errorsOf(yaml('server_name: example.com', 'limits:', '  max_header_size: 1KiB', '  max_streams: 0', '  idle_timeout: 0s'))).toEqual([
      issue(3, 20, 'limits.max_header_size', "must be between 4KiB and 1MiB; got '1KiB'"),
      issue(4, 16, 'limits.max_streams', 'expected a whole number of streams (1–10000); got 0'),
      issue(5, 17, 'limits.idle_timeout', "must be at least 1s; got '0s'"),
    ]);
    expect(errorsOf(yaml('server_name: example.com', 'limits: { max_conections: 5 }'))).toEqual([
      issue(2, 11, 'limits.max_conections', "unknown key 'max_conections' (did you mean 'max_connections'?)"),
    ]);
  });
});
