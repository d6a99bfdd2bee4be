import {
  cacheLifetime,
  clientBaseUrl,
  corsProblem,
  judgeCacheLifetime,
  judgePreflight,
  parseServerWellKnown,
  supportProblems,
} from '../../src/doctor/wellknown';

describe('parseServerWellKnown', () => {
  test('a valid m.server, with or without port', () => {
    expect(parseServerWellKnown(Buffer.from('{"m.server":"matrix.example.com:443"}'))).toEqual({
      ok: true,
      delegated: { host: 'matrix.example.com', kind: 'dns', port: 443 },
    });
    expect(parseServerWellKnown(Buffer.from('{"m.server":"matrix.example.com"}'))).toMatchObject({ ok: true, delegated: { host: 'matrix.example.com' } });
  });

  test.each([
    ['{"m.server": ', /^the body is not JSON \(/],
    ['["m.server"]', /^the body is JSON but not an object$/],
    ['{"server":"x"}', /^the JSON has no m\.server$/],
    ['{"m.server":443}', /^m\.server is 443, not a string$/],
    ['{"m.server":"https://matrix.example.com"}', /^m\.server "https:\/\/matrix\.example\.com" is not a server name: /],
  ])('%s: %s', (body, problem) => {
    const got = parseServerWellKnown(Buffer.from(body));
    expect(got.ok).toBe(false);
    expect(!got.ok && got.problem).toMatch(problem);
  });
});

describe('cacheLifetime (read as Synapse reads it)', () => {
  const NOW = Date.parse('2026-01-01T00:00:00Z');
  test.each([
    [{ cacheControl: 'public, max-age=3600' }, 3600, 'Cache-Control max-age=3600'],
    [{ cacheControl: 'max-age=3600, no-store' }, 0, 'Cache-Control no-store'],
    [{ cacheControl: 'Max-Age="60"' }, 60, 'Cache-Control max-age=60'],
    [{ expires: 'Thu, 01 Jan 2026 02:00:00 GMT' }, 7200, 'Expires Thu, 01 Jan 2026 02:00:00 GMT'],
    [{ expires: 'Thu, 01 Jan 2026 02:00:00 GMT', date: 'Thu, 01 Jan 2026 01:00:00 GMT' }, 3600, 'Expires Thu, 01 Jan 2026 02:00:00 GMT'],
    [{ expires: '0' }, 0, 'Expires 0 (unreadable: already expired)'],
    [{ cacheControl: 'public' }, null, 'no Cache-Control max-age and no Expires'],
    [{}, null, 'no Cache-Control max-age and no Expires'],
  ])('%j → %s s', (headers, seconds, source) => {
    expect(cacheLifetime(headers, NOW)).toEqual({ seconds, source });
  });

  test('judged: absent → WARN (24 h default), over 48 h → WARN, else PASS with the lifetime', () => {
    expect(judgeCacheLifetime({ seconds: null, source: 'no Cache-Control max-age and no Expires' })).toMatchObject({
      status: 'WARN',
      detail: "no Cache-Control max-age and no Expires: peers cache it for 24 h (the spec's default)",
    });
    expect(judgeCacheLifetime({ seconds: 72 * 3600, source: 'Cache-Control max-age=259200' })).toMatchObject({ status: 'WARN', detail: expect.stringMatching(/^peers cache it for 72 h .*48 h/) });
    expect(judgeCacheLifetime({ seconds: 48 * 3600, source: 's' })).toMatchObject({ status: 'PASS' });
    expect(judgeCacheLifetime({ seconds: 90, source: 'Cache-Control max-age=90' })).toEqual({ status: 'PASS', detail: 'peers cache it for 2 min (Cache-Control max-age=90)', fix: null });
  });
});

test('corsProblem: exactly one Access-Control-Allow-Origin: *', () => {
  expect(corsProblem(['Access-Control-Allow-Origin', '*'])).toBeNull();
  expect(corsProblem(['Content-Type', 'application/json'])).toMatch(/^no Access-Control-Allow-Origin header/);
  expect(corsProblem(['access-control-allow-origin', '*', 'Access-Control-Allow-Origin', '*'])).toBe(`Access-Control-Allow-Origin is "*" + "*", not one '*': browsers refuse it`);
  expect(corsProblem(['access-control-allow-origin', 'https://app.element.io'])).toMatch(/not one '\*'/);
});

test('judgePreflight: 2xx with origin, methods and headers', () => {
  const good = ['Access-Control-Allow-Origin', '*', 'Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, DELETE, OPTIONS', 'Access-Control-Allow-Headers', 'X-Requested-With, Content-Type, Authorization, Date'];
  expect(judgePreflight(204, good).status).toBe('PASS');
  expect(judgePreflight(405, ['Access-Control-Allow-Origin', '*'])).toMatchObject({
    status: 'WARN',
    detail: 'OPTIONS preflight: status 405, not 2xx; Access-Control-Allow-Methods lacks GET, OPTIONS; Access-Control-Allow-Headers lacks x-requested-with, content-type, authorization',
  });
});

test('clientBaseUrl', () => {
  expect(clientBaseUrl({ 'm.homeserver': { base_url: 'https://matrix.example.com/' } })).toEqual({ ok: true, url: 'https://matrix.example.com' });
  expect(clientBaseUrl({})).toEqual({ ok: false, problem: 'the JSON has no m.homeserver object' });
  expect(clientBaseUrl({ 'm.homeserver': {} })).toEqual({ ok: false, problem: 'm.homeserver has no base_url string' });
  expect(clientBaseUrl({ 'm.homeserver': { base_url: 'matrix.example.com' } })).toMatchObject({ ok: false });
});

test('supportProblems: contacts with role and matrix_id/email_address, or support_page', () => {
  expect(supportProblems({ contacts: [{ role: 'm.role.admin', matrix_id: '@admin:example.com' }] })).toEqual([]);
  expect(supportProblems({ support_page: 'https://example.com/support' })).toEqual([]);
  expect(supportProblems({})).toEqual(['neither contacts nor support_page']);
  expect(supportProblems({ contacts: [{ matrix_id: 'admin' }, { role: 'm.role.security' }, 'x'], support_page: 7 })).toEqual([
    'support_page is not a URL',
    'contacts[0] has no role',
    'contacts[0].matrix_id is not a user ID',
    'contacts[1] has neither matrix_id nor email_address',
    'contacts[2] is not an object',
  ]);
});
