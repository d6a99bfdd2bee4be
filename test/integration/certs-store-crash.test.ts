/**
 * A certificate replacement killed (SIGKILL) at random instants always leaves a usable pair: the
 * old certificate with its key or the new one with its key — never a key beside another chain.
 */
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { CertificateStore } from '../../src/store/certificate-store';
import { FileStorage } from '../../src/store/file-storage';
import { certificateKeys } from '../../src/store/keys';

jest.setTimeout(60_000);

const CHILD = path.join(__dirname, '../support/proc-save.js');

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-save-crash-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function runAndKill(args: string[], afterMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), afterMs));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`writer exited ${code} ${signal}: ${stderr}`));
    });
  });
}

it('a replacement killed at any instant leaves the old pair or the new pair, loadable', async () => {
  const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger);
  const pairs = await Promise.all(
    [0, 1, 2].map(async () => {
      const { certPem, keyPem } = await ca.issue(['a.example'], 24 * 3600_000);
      return { certPem, keyPem, serial: new X509Certificate(certPem).serialNumber };
    }),
  );
  const pairsFile = path.join(dir, 'pairs.json');
  fs.writeFileSync(pairsFile, JSON.stringify(pairs));
  const storage = path.join(dir, 'certs');
  const store = new CertificateStore(new FileStorage(storage));
  const serials = new Set(pairs.map((p) => p.serial));
  const seen = new Set<string>();
  await store.saveCertificate('local', 'a.example', { ...pairs[0]!, meta: { names: ['a.example'], issuer: 'local', serial: pairs[0]!.serial, notBefore: '', notAfter: '' } });
  for (let round = 0; round < 16; round++) {
    // Kill points spread over the first ~60 ms of rewriting (many saves, each a few fsyncs).
    await runAndKill([storage, 'local', 'a.example', pairsFile], (round * 4) % 60);
    const loaded = await store.loadCertificate('local', 'a.example');
    expect(loaded).not.toBeNull();
    expect(serials.has(loaded!.leaf.serialNumber)).toBe(true);
    seen.add(loaded!.leaf.serialNumber);
  }
  // The kills landed at different points of the loop, not always on the same pair.
  expect(seen.size).toBeGreaterThan(1);
});

it('recovers the staged chain when the key was replaced and the chain was not', async () => {
  const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger);
  const a = await ca.issue(['a.example'], 24 * 3600_000);
  const b = await ca.issue(['a.example'], 24 * 3600_000);
  const files = new FileStorage(path.join(dir, 'certs'));
  const store = new CertificateStore(files);
  await store.saveCertificate('local', 'a.example', { ...a, meta: { names: ['a.example'], issuer: 'local', serial: '', notBefore: '', notAfter: '' } });
  const rel = certificateKeys('local', 'a.example');
  // The state a crash between the key and the chain leaves: new chain staged, new key, old chain.
  await files.store(rel.staged, b.certPem, { secret: false });
  await files.store(rel.key, b.keyPem, { secret: true });
  const loaded = await store.loadCertificate('local', 'a.example');
  expect(loaded!.certPem).toBe(b.certPem);
  expect(fs.readFileSync(files.describe(rel.cert), 'utf8')).toBe(b.certPem);
  expect(fs.existsSync(files.describe(rel.staged))).toBe(false);
  // Staged chain beside the old, intact pair (crash before the key): the old pair is served.
  await files.store(rel.staged, a.certPem, { secret: false });
  expect((await store.loadCertificate('local', 'a.example'))!.certPem).toBe(b.certPem);
});
