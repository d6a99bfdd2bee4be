import { loadConfigText } from '../../src/config/load';
import type { ConfigIssue, LoadResult, Plan } from '../../src/config/plan';
import { ERRORS, WARNINGS, usableChallenges } from '../../src/config/rules';
import { KNOWN_KEYS } from '../../src/config/schema';

const FILE = 'edge.yaml';
const load = (...lines: string[]): LoadResult => loadConfigText(`${lines.join('\n')}\n`, FILE, '/srv/edge');
const issue = (line: number, column: number, key: string, message: string): ConfigIssue => ({ file: FILE, line, column, key, message });

function planOf(...lines: string[]): { plan: Plan; warnings: readonly ConfigIssue[] } {
  const result = load(...lines);
  if (!result.ok) throw new Error(`rejected: ${JSON.stringify(result.errors)}`);
  return { plan: result.plan, warnings: result.warnings };
}

describe('storage', () => {
  test.each([
    ['redis://localhost:6379', 'Redis storage is not supported yet'],
    ['rediss://cache.example:6380/0', 'Redis storage is not supported yet'],
    ['s3://bucket/certs', "'s3://' storage is not supported"],
  ])('%s is an error, not a directory named after the scheme', (url, what) => {
    expect(load('server_name: example.com', `storage: "${url}"`)).toEqual({
      ok: false,
      errors: [issue(2, 10, 'storage', `${what}; expected a filesystem path for the storage directory, like ./certs or /var/lib/matrix-edge; got '${url}'`)],
      warnings: [],
    });
  });

  test('paths stay paths, relative or absolute, even one named redis', () => {
    expect(planOf('server_name: example.com', 'storage: redis').plan.storage).toBe('/srv/edge/redis');
    expect(planOf('server_name: example.com', 'storage: ./data/redis:6379').plan.storage).toBe('/srv/edge/data/redis:6379');
    expect(planOf('server_name: example.com', 'storage: /var/lib/matrix-edge').plan.storage).toBe('/var/lib/matrix-edge');
  });
});

describe('rules', () => {
  test('each rule states its severity and the keys it relates, all of them real keys', () => {
    expect(ERRORS.map((r) => r.severity)).toEqual(ERRORS.map(() => 'error'));
    expect(WARNINGS.map((r) => r.severity)).toEqual(WARNINGS.map(() => 'warning'));
    for (const rule of [...ERRORS, ...WARNINGS]) {
      expect(rule.keys.length).toBeGreaterThan(0);
      for (const key of rule.keys) expect(KNOWN_KEYS['']).toContain(key.split(/[.[]/)[0]);
    }
  });

  describe('http-01 needs listen.http: decided once, for the error, the warning and the plan', () => {
    test.each([
      [undefined, 80, ['http-01', 'tls-alpn-01'], false],
      [undefined, null, ['tls-alpn-01'], true],
      [['tls-alpn-01', 'http-01'], null, ['tls-alpn-01'], true],
      [['http-01'], null, [], true],
      [['http-01'], 8080, ['http-01'], false],
    ] as const)('challenges %p with listen.http %p', (challenges, http, usable, skipped) => {
      const raw = { listen: { http }, acme: challenges === undefined ? {} : { challenges: [...challenges] } };
      expect(usableChallenges(raw)).toEqual({ usable, skipped });
    });

    test('nothing usable is an error; a skipped http-01 the admin listed is a warning; the plan has what is usable', () => {
      const none = load('server_name: example.com', 'listen: { http: null }', 'acme: { challenges: [http-01] }');
      expect(none.ok).toBe(false);
      const listed = planOf('server_name: example.com', 'listen: { http: null }', 'acme: { challenges: [http-01, tls-alpn-01] }');
      expect(listed.plan.acme?.challenges).toEqual(['tls-alpn-01']);
      expect(listed.warnings.map((w) => w.key)).toEqual(['acme.challenges']);
      const defaults = planOf('server_name: example.com', 'listen: { http: null }');
      expect(defaults.plan.acme?.challenges).toEqual(['tls-alpn-01']);
      expect(defaults.warnings).toEqual([]);
      // Another issuer: no ACME, so nothing to decide and nothing to report.
      expect(planOf('server_name: example.com', 'listen: { http: null }', 'tls: { issuer: internal }').plan.acme).toBeNull();
    });
  });

  test('a rule of a map waits until the values it relates are valid', () => {
    const result = load('server_name: example.com', 'listen:', '  https: [443, 70000]', '  http: 443');
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors).toEqual([issue(3, 16, 'listen.https[1]', '70000 is not a port (1–65535)')]);
  });
});
