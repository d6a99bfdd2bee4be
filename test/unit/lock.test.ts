import { issueLockKey } from '../../src/store/keys';
import { lockStaleness, parseLockFile, type LockFileContent, type StalenessInput } from '../../src/store/lock-file';

const NOW = Date.parse('2025-01-01T00:00:00Z');

const content = (over: Partial<LockFileContent> = {}): LockFileContent => ({
  pid: 4242,
  host: 'edge-a',
  created: '2025-01-01T00:00:00.000Z',
  updated: '2025-01-01T00:00:00.000Z',
  nonce: 'n1',
  ...over,
});

const input = (over: Partial<StalenessInput> = {}): StalenessInput => ({
  content: content(),
  mtimeMs: NOW - 1000,
  now: NOW,
  staleMs: 30_000,
  hostname: 'edge-a',
  isAlive: () => true,
  ...over,
});

describe('lockStaleness', () => {
  it('is fresh while refreshed within staleMs and the holder lives', () => {
    expect(lockStaleness(input())).toBeNull();
    expect(lockStaleness(input({ mtimeMs: NOW - 30_000 }))).toBeNull();
  });

  it('expires by mtime whoever holds it, even a live holder on this host (hung)', () => {
    expect(lockStaleness(input({ mtimeMs: NOW - 30_001 }))).toBe('expired');
    expect(lockStaleness(input({ mtimeMs: NOW - 60_000, hostname: 'elsewhere' }))).toBe('expired');
  });

  it('takes a dead holder on this host over at once, never one on another host', () => {
    const dead = (): boolean => false;
    expect(lockStaleness(input({ isAlive: dead }))).toBe('holder-dead');
    expect(lockStaleness(input({ isAlive: dead, hostname: 'edge-b' }))).toBeNull();
  });

  it('checks the pid only with the same boot and pid namespace when both are known', () => {
    const dead = (): boolean => false;
    expect(lockStaleness(input({ isAlive: dead, content: content({ scope: 'boot1/pid:[1]' }), scope: 'boot1/pid:[1]' }))).toBe('holder-dead');
    expect(lockStaleness(input({ isAlive: dead, content: content({ scope: 'boot1/pid:[2]' }), scope: 'boot1/pid:[1]' }))).toBeNull();
    expect(lockStaleness(input({ isAlive: dead, content: content({ scope: 'boot0/pid:[1]' }), scope: 'boot1/pid:[1]' }))).toBeNull();
    expect(lockStaleness(input({ isAlive: dead, scope: 'boot1/pid:[1]' }))).toBe('holder-dead');
  });

  it('counts an unreadable lock file as stale only by mtime', () => {
    const isAlive = jest.fn(() => false);
    expect(lockStaleness(input({ content: null, isAlive }))).toBeNull();
    expect(lockStaleness(input({ content: null, isAlive, mtimeMs: NOW - 31_000 }))).toBe('expired');
    expect(isAlive).not.toHaveBeenCalled();
  });

  it('treats our own pid with a nonce we do not hold as an earlier process', () => {
    const self = { pid: 4242, holds: (nonce: string) => nonce === 'mine' };
    expect(lockStaleness(input({ self, content: content({ nonce: 'mine' }) }))).toBeNull();
    expect(lockStaleness(input({ self, content: content({ nonce: 'old' }) }))).toBe('earlier-process');
    expect(lockStaleness(input({ self, content: content({ nonce: 'old' }), hostname: 'edge-b' }))).toBeNull();
  });
});

describe('parseLockFile', () => {
  it('parses a complete lock file', () => {
    const text = JSON.stringify({ ...content({ purpose: 'issue' }), extra: 1 });
    expect(parseLockFile(text)).toEqual(content({ purpose: 'issue' }));
  });

  it('rejects empty, partial and garbage files, and pids that address process groups', () => {
    expect(parseLockFile('')).toBeNull();
    expect(parseLockFile('{"pid": 12, "ho')).toBeNull();
    expect(parseLockFile('[1,2]')).toBeNull();
    expect(parseLockFile('null')).toBeNull();
    for (const pid of [0, -1, 1.5, '12', null]) {
      expect(parseLockFile(JSON.stringify({ ...content(), pid }))).toBeNull();
    }
    expect(parseLockFile(JSON.stringify({ ...content(), nonce: '' }))).toBeNull();
  });
});

describe('issueLockKey', () => {
  it('builds a path-safe key', () => {
    expect(issueLockKey('acme-v02.api.letsencrypt.org-directory', 'matrix.example.com')).toBe(
      'issue_cert_acme-v02.api.letsencrypt.org-directory_matrix.example.com',
    );
    expect(issueLockKey('local', '*.example.com')).toBe('issue_cert_local_wildcard_.example.com');
    expect(issueLockKey('local', '2001:db8::1')).toBe('issue_cert_local_2001-db8--1');
  });

  it('rejects names and issuers that could leave the locks directory', () => {
    expect(() => issueLockKey('local', '../etc')).toThrow(/invalid certificate name/);
    expect(() => issueLockKey('local', 'a/b.example.com')).toThrow(/invalid certificate name/);
    expect(() => issueLockKey('../x', 'example.com')).toThrow(/invalid issuer id/);
    expect(() => issueLockKey('a/b', 'example.com')).toThrow(/invalid issuer id/);
    expect(() => issueLockKey('a..b', 'example.com')).toThrow(/invalid issuer id/);
  });

  it('keeps long keys short enough for a file name, and distinct', () => {
    const label = 'a'.repeat(63);
    const long1 = `${label}.${label}.${label}.${'b'.repeat(61)}`;
    const long2 = `${label}.${label}.${label}.${'c'.repeat(61)}`;
    const k1 = issueLockKey('local', long1);
    const k2 = issueLockKey('local', long2);
    expect(k1.length).toBeLessThanOrEqual(200);
    expect(k1).not.toBe(k2);
  });
});
