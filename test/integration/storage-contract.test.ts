/**
 * The Storage contract (src/store/storage.ts), on the file storage and on the in-memory one, and
 * the CertificateStore's guarantees on top of either: what the managed certificates rely on holds
 * whatever keeps the bytes.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { CertificateStore, type CertificateMeta } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { certificateKeys } from '../../src/store/keys';
import type { Storage } from '../../src/store/storage';
import { MemoryStorage } from '../support/memory-storage';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-storage-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const kinds: Array<[string, () => Storage]> = [
  ['FileStorage', () => new FileStorage(path.join(dir, 'storage'), { pollMs: 10 })],
  ['MemoryStorage', () => new MemoryStorage()],
];

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(kinds)('%s', (_kind, make) => {
  it('keeps values under keys: load, store, exists, stat, list, delete', async () => {
    const s = make();
    expect(await s.load('a/b/c.crt')).toBeNull();
    expect(await s.exists('a/b/c.crt')).toBe(false);
    expect(await s.stat('a/b/c.crt')).toBeNull();
    expect(await s.list('a', false)).toEqual([]);

    await s.store('a/b/c.crt', 'one');
    await s.store('a/b/d.key', Buffer.from('two'), { secret: true });
    await s.store('a/e.json', '{}');
    expect((await s.load('a/b/c.crt'))!.toString()).toBe('one');
    expect(await s.exists('a/b/d.key')).toBe(true);
    expect(await s.list('a', false)).toEqual(['a/b', 'a/e.json']);
    expect(await s.list('a', true)).toEqual(['a/b', 'a/b/c.crt', 'a/b/d.key', 'a/e.json']);
    const info = (await s.stat('a/b/c.crt'))!;
    expect(info).toMatchObject({ key: 'a/b/c.crt', size: 3, terminal: true });
    expect((await s.stat('a/b'))!.terminal).toBe(false);

    // A replacement is seen by its modification time.
    await sleep(5);
    await s.store('a/b/c.crt', 'three');
    expect((await s.load('a/b/c.crt'))!.toString()).toBe('three');
    expect((await s.stat('a/b/c.crt'))!.modifiedMs).toBeGreaterThan(info.modifiedMs);

    await s.delete('a/b/c.crt');
    expect(await s.load('a/b/c.crt')).toBeNull();
    await s.delete('a/b/c.crt'); // no error when absent
    await s.delete('a');
    expect(await s.list('', true)).toEqual(expect.not.arrayContaining(['a/e.json']));
    expect(await s.exists('a/b/d.key')).toBe(false);
  });

  it('refuses keys that are not relative, clean paths', async () => {
    const s = make();
    for (const bad of ['../x', '/etc/passwd', 'a//b', 'a/./b', 'a/../b', '']) {
      await expect(s.load(bad)).rejects.toThrow(/invalid storage path/);
      await expect(s.store(bad, 'x')).rejects.toThrow(/invalid storage path/);
    }
  });

  it('locks: one holder at a time, a waiter told who holds it and let in on release', async () => {
    const s = make();
    const first = await s.lock('issue_cert_local_a.example', { purpose: 'first' });
    expect(first.key).toBe('issue_cert_local_a.example');
    const onWait = jest.fn();
    let got = false;
    const second = s.lock('issue_cert_local_a.example', { purpose: 'second', onWait }).then((l) => ((got = true), l));
    await sleep(100);
    expect(got).toBe(false);
    expect(onWait).toHaveBeenCalledTimes(1);
    expect(onWait.mock.calls[0]![0]).toMatchObject({ pid: process.pid, purpose: 'first' });
    expect(await first.stillHeld()).toBe(true);
    const other = await s.lock('issue_cert_local_b.example', { timeoutMs: 500 }); // another key: independent
    await first.release();
    expect(await first.stillHeld()).toBe(false);
    const lock = await second;
    expect(await lock.stillHeld()).toBe(true);
    await expect(s.lock('issue_cert_local_a.example', { timeoutMs: 50 })).rejects.toThrow(/timed out after 50 ms waiting for the lock/);
    await lock.release();
    await other.release();
  });

  it('CertificateStore: saves, loads with key/leaf match, records metadata, and reports the modification time', async () => {
    const storage = make();
    const store = new CertificateStore(storage);
    const ca = await LocalCa.open(storage, silentLogger);
    const issued = await ca.issue(['a.example'], 3600e3);
    const serial = new X509Certificate(issued.certPem).serialNumber;
    const meta: CertificateMeta = { names: ['a.example'], issuer: 'local', serial, notBefore: '', notAfter: '' };
    expect(await store.loadCertificate('local', 'a.example')).toBeNull();
    expect(await store.modified('local', 'a.example')).toBe(0);
    const lock = await storage.lock('issue_cert_local_a.example');
    await store.saveCertificate('local', 'a.example', { ...issued, meta }, lock);
    await lock.release();
    const loaded = (await store.loadCertificate('local', 'a.example'))!;
    expect(loaded.certPem).toBe(issued.certPem);
    expect(loaded.meta.serial).toBe(serial);
    expect(loaded.locations.cert).toBe(storage.describe(certificateKeys('local', 'a.example').cert));
    expect(await store.modified('local', 'a.example')).toBeGreaterThan(0);
    expect(await storage.exists(certificateKeys('local', 'a.example').staged)).toBe(false);

    await store.updateMeta('local', 'a.example', { nextRenewal: '2030-01-01T00:00:00.000Z' });
    await store.recordAttempt('local', 'a.example', { at: '2030-01-02T00:00:00.000Z', error: 'boom' });
    expect((await store.loadCertificate('local', 'a.example'))!.meta).toMatchObject({ nextRenewal: '2030-01-01T00:00:00.000Z', lastError: 'boom' });

    // A key that does not match the chain is refused, naming both.
    const other = await ca.issue(['a.example'], 3600e3);
    await storage.store(certificateKeys('local', 'a.example').key, other.keyPem, { secret: true });
    await expect(store.loadCertificate('local', 'a.example')).rejects.toThrow(/does not match/);
    // …unless the matching chain is staged beside (a replacement interrupted between key and chain).
    await storage.store(certificateKeys('local', 'a.example').staged, other.certPem);
    expect((await store.loadCertificate('local', 'a.example'))!.certPem).toBe(other.certPem);
    expect((await storage.load(certificateKeys('local', 'a.example').cert))!.toString()).toBe(other.certPem);
    expect(await storage.exists(certificateKeys('local', 'a.example').staged)).toBe(false);
  });
});

describe('MemoryStorage fencing', () => {
  it('refuses a write under a lock that is no longer held', async () => {
    const s = new MemoryStorage();
    const lock = await s.lock('k');
    await s.store('x/y', '1', { lock });
    await lock.release();
    await expect(s.store('x/y', '2', { lock })).rejects.toThrow(/no longer held/);
    const next = await s.lock('k');
    expect(next.token).toBeGreaterThan(lock.token!);
    expect(s.writes).toEqual([{ key: 'x/y', token: lock.token }]);
    await next.release();
  });
});
