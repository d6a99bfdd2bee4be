import { X509Certificate, createPrivateKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ManualClock } from '../../src/control/clock';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'matrix-edge-ca-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await fsp.stat(p)).mode & 0o777;
const openssl = ['/usr/bin/openssl', '/usr/local/bin/openssl'].find((p) => existsSync(p));

describe('LocalCa', () => {
  it('creates the root once and reuses it on a second open', async () => {
    const root = path.join(dir, 'certs');
    const ca1 = await LocalCa.open(new FileStorage(root), silentLogger);
    const crtPath = path.join(root, 'pki', 'authorities', 'local', 'root.crt');
    const keyPath = path.join(root, 'pki', 'authorities', 'local', 'root.key');
    expect(ca1.rootPemPath).toBe(crtPath);
    expect(path.isAbsolute(ca1.rootPemPath)).toBe(true);
    const crtBytes = await fsp.readFile(crtPath);
    const keyBytes = await fsp.readFile(keyPath);

    const ca2 = await LocalCa.open(new FileStorage(root), silentLogger);
    expect(await fsp.readFile(crtPath)).toEqual(crtBytes);
    expect(await fsp.readFile(keyPath)).toEqual(keyBytes);
    expect(ca2.rootPem).toBe(ca1.rootPem);

    expect(await mode(path.join(root, 'pki'))).toBe(0o700);
    expect(await mode(path.join(root, 'pki', 'authorities', 'local'))).toBe(0o700);
    expect(await mode(keyPath)).toBe(0o600);
    expect(await mode(crtPath)).toBe(0o644);

    // A leaf from the first instance verifies against the reopened root.
    const leaf = new X509Certificate((await ca1.issue(['a.example'], DAY)).certPem);
    expect(leaf.verify(ca2.root.publicKey)).toBe(true);
  });

  it('makes a self-signed ECDSA P-256 CA root valid for 10 years', async () => {
    const clock = new ManualClock(Date.UTC(2031, 5, 1, 12, 0, 0));
    const ca = await LocalCa.open(new FileStorage(dir), silentLogger, clock);
    const root = new X509Certificate(await fsp.readFile(ca.rootPemPath));
    expect(root.ca).toBe(true);
    expect(root.subject).toBe('CN=matrix-edge Local Authority - 2031 ECC Root');
    expect(root.issuer).toBe(root.subject);
    expect(root.verify(root.publicKey)).toBe(true);
    expect(root.publicKey.asymmetricKeyType).toBe('ec');
    expect(root.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(root.validFromDate.getTime()).toBe(clock.now());
    expect(root.validToDate.getTime()).toBe(clock.now() + 3650 * DAY);
    const key = createPrivateKey(await fsp.readFile(path.join(dir, 'pki', 'authorities', 'local', 'root.key')));
    expect(root.checkPrivateKey(key)).toBe(true);
    if (openssl) {
      const text = execFileSync(openssl, ['x509', '-noout', '-text', '-in', ca.rootPemPath], { encoding: 'utf8' });
      expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
      expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
      expect(text).toMatch(/ecdsa-with-SHA256/);
    }
  });

  it('issues leaves that verify against the root, with SANs, EKU serverAuth and the right validity', async () => {
    const clock = new ManualClock(Date.UTC(2031, 0, 10, 8, 30, 0));
    const ca = await LocalCa.open(new FileStorage(dir), silentLogger, clock);
    const names = ['matrix.example.com', 'example.com', '127.0.0.1', '::1'];
    const { certPem, keyPem } = await ca.issue(names, 7 * DAY);
    expect(certPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(1); // leaf only
    const leaf = new X509Certificate(certPem);
    expect(leaf.verify(ca.root.publicKey)).toBe(true);
    expect(leaf.checkIssued(ca.root)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(leaf.subject).toBe('CN=matrix.example.com');
    expect(leaf.issuer).toBe(ca.root.subject);
    expect(leaf.checkHost('matrix.example.com')).toBe('matrix.example.com');
    expect(leaf.checkHost('example.com')).toBe('example.com');
    expect(leaf.checkHost('other.example.com')).toBeUndefined();
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.checkIP('::1')).toBe('::1');
    expect(leaf.checkIP('127.0.0.2')).toBeUndefined();
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // Node lists the extended key usages here
    expect(leaf.validFromDate.getTime()).toBe(clock.now() - 5 * MINUTE);
    expect(leaf.validToDate.getTime()).toBe(clock.now() + 7 * DAY);
    const serial = BigInt('0x' + leaf.serialNumber);
    expect(serial > 0n).toBe(true);
    expect(serial < 2n ** 128n).toBe(true);
    expect(serial > 2n ** 64n).toBe(true); // random, not a counter (fails with p = 2^-63)

    if (openssl) {
      const leafPath = path.join(dir, 'leaf.crt');
      await fsp.writeFile(leafPath, certPem);
      const at = String(Math.floor(clock.now() / 1000));
      const out = execFileSync(
        openssl,
        ['verify', '-attime', at, '-purpose', 'sslserver', '-CAfile', ca.rootPemPath, leafPath],
        { encoding: 'utf8' },
      );
      expect(out).toMatch(/OK/);
      const text = execFileSync(openssl, ['x509', '-noout', '-text', '-in', leafPath], { encoding: 'utf8' });
      expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
      expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
      expect(text).toMatch(/DNS:matrix.example.com, DNS:example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1/);
    }
  });

  it('issues a fresh key and serial on every call, and uses the first name as CN for IP-only leaves', async () => {
    const ca = await LocalCa.open(new FileStorage(dir), silentLogger);
    const a = await ca.issue(['10.1.2.3'], DAY);
    const b = await ca.issue(['10.1.2.3'], DAY);
    expect(a.keyPem).not.toBe(b.keyPem);
    const la = new X509Certificate(a.certPem);
    const lb = new X509Certificate(b.certPem);
    expect(la.serialNumber).not.toBe(lb.serialNumber);
    expect(la.subject).toBe('CN=10.1.2.3');
    expect(la.checkIP('10.1.2.3')).toBe('10.1.2.3');
    expect(la.checkHost('10.1.2.3', { subject: 'never' })).toBeUndefined(); // an iPAddress SAN, not a dNSName
    const v6 = new X509Certificate((await ca.issue(['2001:db8::ffff:1', '::ffff:192.0.2.1', 'fe80::'], DAY)).certPem);
    expect(v6.checkIP('2001:db8::ffff:1')).toBeDefined();
    expect(v6.checkIP('2001:db8:0:0:0:0:ffff:1')).toBeDefined();
    expect(v6.checkIP('::ffff:192.0.2.1')).toBeDefined();
    expect(v6.checkIP('fe80::')).toBeDefined();
  });

  it('never issues a leaf past the root’s expiry', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const store = new FileStorage(dir);
    const ca = await LocalCa.open(store, silentLogger, clock);
    clock.advance(3649 * DAY);
    const leaf = new X509Certificate((await ca.issue(['a.example'], 90 * DAY)).certPem);
    expect(leaf.validToDate.getTime()).toBe(ca.root.validToDate.getTime());
    clock.advance(2 * DAY);
    await expect(LocalCa.open(store, silentLogger, clock)).rejects.toThrow(/expired.*remove .*root\.crt/);
  });

  it('refuses a root whose key is missing or does not match', async () => {
    const store = new FileStorage(dir);
    await LocalCa.open(store, silentLogger);
    const keyPath = path.join(dir, 'pki', 'authorities', 'local', 'root.key');
    const other = await LocalCa.open(new FileStorage(path.join(dir, 'other')), silentLogger);
    await fsp.copyFile(path.join(dir, 'other', 'pki', 'authorities', 'local', 'root.key'), keyPath);
    await expect(LocalCa.open(store, silentLogger)).rejects.toThrow(/root\.key does not match the certificate in .*root\.crt/);
    await fsp.rm(keyPath);
    await expect(LocalCa.open(store, silentLogger)).rejects.toThrow(/root\.key is missing/);
    expect(other.rootPem).not.toBe('');
  });
});
