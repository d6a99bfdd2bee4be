import { createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { canonicalJson, ed25519Verifies, judgeServerKeys, judgeVersion } from '../../src/doctor/keys';

// The spec's test key (appendices, "Cryptographic test vectors"): seed, server "domain", key ed25519:1.
const SEED = Buffer.from('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1', 'base64');
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, SEED]), format: 'der', type: 'pkcs8' });
const publicKey = Buffer.from(createPublicKey(privateKey).export({ format: 'jwk' }).x!, 'base64url').toString('base64').replace(/=+$/, '');
const unpadded = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');

describe('canonicalJson', () => {
  test.each([
    [{}, '{}'],
    [{ one: 1, two: 'Two' }, '{"one":1,"two":"Two"}'],
    [{ b: '2', a: '1' }, '{"a":"1","b":"2"}'],
    [
      { auth: { success: true, mxid: '@john.doe:example.com', profile: { display_name: 'John Doe', three_pids: [{ medium: 'email', address: 'john.doe@example.org' }, { medium: 'msisdn', address: '123456789' }] } } },
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    [{ a: '日本語' }, '{"a":"日本語"}'],
    [{ 本: 2, 日: 1 }, '{"日":1,"本":2}'],
    [{ a: null, b: [true, false, -5] }, '{"a":null,"b":[true,false,-5]}'],
    // Code-point order, not UTF-16 order: U+FB01 sorts before U+1F600.
    [{ '\u{1F600}': 1, '\uFB01': 2 }, '{"\uFB01":2,"\u{1F600}":1}'],
  ])('%j', (value, text) => {
    expect(canonicalJson(value)).toBe(text);
  });

  test('refuses numbers that are not safe integers', () => {
    expect(() => canonicalJson({ a: 1.5 })).toThrow('canonical JSON allows only integers');
    expect(() => canonicalJson({ a: 2 ** 53 })).toThrow();
  });
});

test('the spec signing vectors verify; anything else does not', () => {
  const empty = 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ';
  const data = 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw';
  expect(ed25519Verifies(publicKey, empty, canonicalJson({}))).toBe(true);
  expect(ed25519Verifies(publicKey, data, canonicalJson({ two: 'Two', one: 1 }))).toBe(true);
  expect(ed25519Verifies(publicKey, data, canonicalJson({ one: 1, two: 'Three' }))).toBe(false);
  expect(ed25519Verifies('not a key', empty, '{}')).toBe(false);
});

describe('judgeServerKeys', () => {
  const NOW = Date.parse('2026-01-01T00:00:00Z');
  function answer(overrides: Record<string, unknown> = {}, signWith: (text: string) => string = (t) => t): Buffer {
    const body = { server_name: 'domain', valid_until_ts: NOW + 86_400_000, verify_keys: { 'ed25519:1': { key: publicKey } }, old_verify_keys: {}, ...overrides };
    const sig = unpadded(sign(null, Buffer.from(signWith(canonicalJson(body))), privateKey));
    // `unsigned` is not covered by the signature.
    return Buffer.from(JSON.stringify({ ...body, signatures: { domain: { 'ed25519:1': sig } }, unsigned: { age: 1 } }));
  }

  test('a correctly signed, current answer passes', () => {
    expect(judgeServerKeys(answer(), 'domain', NOW)).toEqual({
      status: 'PASS',
      detail: 'server_name domain, 1 key (ed25519:1) signed, valid until 2026-01-02T00:00:00.000Z',
      fix: null,
    });
  });

  test('the wrong server_name fails', () => {
    expect(judgeServerKeys(answer({ server_name: 'other' }), 'domain', NOW)).toMatchObject({ status: 'FAIL', detail: 'server_name is "other", not "domain": peers reject these keys' });
  });

  test('a signature over something else fails', () => {
    expect(judgeServerKeys(answer({}, (t) => `${t} `), 'domain', NOW)).toMatchObject({ status: 'FAIL', detail: 'the signature by ed25519:1 does not verify: peers reject these keys' });
  });

  test('a key without a signature fails', () => {
    const body = JSON.parse(answer().toString()) as Record<string, unknown>;
    body['signatures'] = {};
    expect(judgeServerKeys(Buffer.from(JSON.stringify(body)), 'domain', NOW)).toMatchObject({ status: 'FAIL', detail: 'ed25519:1 has no signature: peers reject these keys' });
  });

  test('valid_until_ts: passed → FAIL, within the hour → WARN', () => {
    expect(judgeServerKeys(answer({ valid_until_ts: NOW - 1 }), 'domain', NOW)).toMatchObject({
      status: 'FAIL',
      detail: 'valid_until_ts 2025-12-31T23:59:59.999Z has passed: peers refuse to use these keys',
    });
    expect(judgeServerKeys(answer({ valid_until_ts: NOW + 59 * 60_000 }), 'domain', NOW)).toMatchObject({ status: 'WARN' });
  });

  test('not JSON, no keys', () => {
    expect(judgeServerKeys(Buffer.from('<html>'), 'domain', NOW)).toMatchObject({ status: 'FAIL', detail: expect.stringMatching(/^GET \/_matrix\/key\/v2\/server: the body is not JSON/) });
    expect(judgeServerKeys(answer({ verify_keys: {} }), 'domain', NOW)).toMatchObject({ status: 'FAIL', detail: 'verify_keys holds no ed25519 key' });
  });
});

test('judgeVersion', () => {
  expect(judgeVersion(Buffer.from('{"server":{"name":"Synapse","version":"1.140.0"}}'))).toEqual({ status: 'PASS', detail: 'Synapse 1.140.0', fix: null });
  expect(judgeVersion(Buffer.from('{}'))).toMatchObject({ status: 'WARN' });
  expect(judgeVersion(Buffer.from('nope'))).toMatchObject({ status: 'FAIL' });
});
