import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { CertificateStore, type CertificateMeta } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { storageKey, validateName } from '../../src/store/keys';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-store-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await fsp.stat(p)).mode & 0o777;

async function listAll(root: string): Promise<string[]> {
  const entries = await fsp.readdir(root, { recursive: true });
  return entries.map(String).sort();
}

function metaFor(name: string): CertificateMeta {
  return {
    names: [name],
    issuer: 'local',
    serial: '01',
    notBefore: new Date().toISOString(),
    notAfter: new Date().toISOString(),
  };
}

/** A certificate store on files in `root`, and the file storage under it. */
function storeAt(root: string): CertificateStore & { files: FileStorage } {
  const files = new FileStorage(root);
  return Object.assign(new CertificateStore(files), { files });
}

describe('CertificateStore on FileStorage', () => {
  it('returns null when no certificate is stored', async () => {
    const store = storeAt(path.join(dir, 'certs'));
    expect(await store.loadCertificate('local', 'example.com')).toBeNull();
    expect(await store.files.load('acme/x/users/a@b.example/a.json')).toBeNull();
  });

  it('saves in the CertMagic layout with 0700 dirs, 0600 key, 0644 cert and json, and loads it back', async () => {
    const store = storeAt(path.join(dir, 'certs'));
    const ca = await LocalCa.open(store.files, silentLogger);
    const issued = await ca.issue(['matrix.example.com'], 3600e3);
    await store.saveCertificate('local', 'matrix.example.com', { ...issued, meta: metaFor('matrix.example.com') });

    const base = path.join(dir, 'certs', 'certificates', 'local', 'matrix.example.com');
    expect(await mode(path.join(dir, 'certs'))).toBe(0o700);
    expect(await mode(path.join(dir, 'certs', 'certificates'))).toBe(0o700);
    expect(await mode(path.join(dir, 'certs', 'certificates', 'local'))).toBe(0o700);
    expect(await mode(base)).toBe(0o700);
    expect(await mode(path.join(base, 'matrix.example.com.key'))).toBe(0o600);
    expect(await mode(path.join(base, 'matrix.example.com.crt'))).toBe(0o644);
    expect(await mode(path.join(base, 'matrix.example.com.json'))).toBe(0o644);

    const loaded = await store.loadCertificate('local', 'matrix.example.com');
    expect(loaded).not.toBeNull();
    expect(loaded!.certPem).toBe(issued.certPem);
    expect(loaded!.keyPem).toBe(issued.keyPem);
    expect(loaded!.chain).toHaveLength(1);
    expect(loaded!.meta.names).toEqual(['matrix.example.com']);
    expect(loaded!.meta.serial).toBe(loaded!.leaf.serialNumber);
    expect(loaded!.meta.notAfter).toBe(loaded!.leaf.validToDate.toISOString());
    expect(loaded!.locations.cert).toBe(path.join(base, 'matrix.example.com.crt'));

    const json = JSON.parse(await fsp.readFile(path.join(base, 'matrix.example.com.json'), 'utf8'));
    expect(json).toMatchObject({ names: ['matrix.example.com'], issuer: 'local' });
  });

  it('rejects a key that does not match the certificate, naming both files', async () => {
    const store = storeAt(dir);
    const ca = await LocalCa.open(store.files, silentLogger);
    const a = await ca.issue(['a.example'], 3600e3);
    const b = await ca.issue(['a.example'], 3600e3);
    await store.saveCertificate('local', 'a.example', { certPem: a.certPem, keyPem: b.keyPem, meta: metaFor('a.example') });
    const base = path.join(dir, 'certificates', 'local', 'a.example');
    const err = await store.loadCertificate('local', 'a.example').then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toContain(path.join(base, 'a.example.crt'));
    expect(err!.message).toContain(path.join(base, 'a.example.key'));
    expect(err!.message).toMatch(/does not match/);
  });

  it('rejects a certificate without its key and unparsable PEM', async () => {
    const store = storeAt(dir);
    await store.files.store('certificates/local/b.example/b.example.crt', 'not a certificate', { secret: false });
    await expect(store.loadCertificate('local', 'b.example')).rejects.toThrow(/b\.example\.key is missing/);
    await store.files.store('certificates/local/b.example/b.example.key', 'junk', { secret: true });
    await expect(store.loadCertificate('local', 'b.example')).rejects.toThrow(/b\.example\.crt contains no PEM certificate/);
  });

  it('writes atomically: replaces content and leaves no temp files behind', async () => {
    const store = storeAt(dir);
    for (let i = 0; i < 5; i++) {
      await store.files.store('pki/authorities/local/x.json', `{"n":${i}}`, { secret: false });
    }
    await store.files.store('acme/ca.example-directory/users/admin@example.com/admin.key', 'secret', { secret: true });
    expect((await store.files.load('pki/authorities/local/x.json'))!.toString()).toBe('{"n":4}');
    const files = await listAll(dir);
    expect(files.filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(files).toContain(path.join('pki', 'authorities', 'local', 'x.json'));
    expect(await mode(store.files.describe('acme/ca.example-directory/users/admin@example.com/admin.key'))).toBe(0o600);
    expect(await mode(store.files.describe('acme/ca.example-directory/users/admin@example.com'))).toBe(0o700);
  });

  it('records attempts in the json, keeping keys it does not own', async () => {
    const store = storeAt(dir);
    const ca = await LocalCa.open(store.files, silentLogger);
    const issued = await ca.issue(['c.example'], 3600e3);
    await store.saveCertificate('local', 'c.example', { ...issued, meta: metaFor('c.example') });
    const metaPath = 'certificates/local/c.example/c.example.json';
    const json = JSON.parse((await store.files.load(metaPath))!.toString());
    await store.files.store(metaPath, JSON.stringify({ ...json, sans: ['c.example'], issuer_data: { x: 1 } }), { secret: false });
    await store.recordAttempt('local', 'c.example', { at: '2030-01-01T00:00:00.000Z', error: 'boom' });
    let loaded = await store.loadCertificate('local', 'c.example');
    expect(loaded!.meta).toMatchObject({ lastAttempt: '2030-01-01T00:00:00.000Z', lastError: 'boom' });
    const after = JSON.parse((await store.files.load(metaPath))!.toString());
    expect(after).toMatchObject({ sans: ['c.example'], issuer_data: { x: 1 }, lastError: 'boom' });
    await store.recordAttempt('local', 'c.example', { at: '2030-01-02T00:00:00.000Z' });
    loaded = await store.loadCertificate('local', 'c.example');
    expect(loaded!.meta.lastError).toBeUndefined();
    // nothing stored → nothing recorded
    await store.recordAttempt('local', 'none.example', { at: '2030-01-01T00:00:00.000Z', error: 'x' });
    expect(await store.files.load('certificates/local/none.example/none.example.json')).toBeNull();
  });

  it('validates names and paths before using them as path parts', async () => {
    const store = storeAt(dir);
    for (const bad of ['../etc', 'a/b', 'Example.com', '', '..', 'a..b', 'exa mple.com', '-a.example', 'FE80::1']) {
      expect(() => validateName(bad)).toThrow(/invalid certificate name/);
      await expect(store.loadCertificate('local', bad)).rejects.toThrow(/invalid certificate name/);
    }
    for (const good of ['example.com', 'localhost', '127.0.0.1', '::1', '*.example.com', 'xn--bcher-kva.example']) {
      expect(() => validateName(good)).not.toThrow();
    }
    expect(storageKey('*.example.com')).toBe('wildcard_.example.com');
    expect(storageKey('::1')).toBe('--1');
    await expect(store.loadCertificate('../x', 'a.example')).rejects.toThrow(/invalid issuer/);
    for (const bad of ['../x', '/etc/passwd', 'a//b', 'a/./b', 'a/../b', '']) {
      await expect(store.files.load(bad)).rejects.toThrow(/invalid storage path/);
      await expect(store.files.store(bad, 'x', { secret: false })).rejects.toThrow(/invalid storage path/);
    }
  });
});
