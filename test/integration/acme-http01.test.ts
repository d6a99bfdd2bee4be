/**
 * First issuance over HTTP-01 from a real Pebble, through the real edge: both names served with
 * chains that verify against Pebble's issuing root; a restart on the same storage reuses the
 * account and the stored certificates (no new account, no new order). On the file storage (its
 * layout and modes on disk checked too) and on the in-memory one.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { alpnCertificate } from '../../src/control/issuers/acme/client';
import { AcmeIssuer } from '../../src/control/issuers/acme/issuer';
import { planeSolvers } from '../../src/control/solver';
import { EdgeError, ME_ACME_CHALLENGE } from '../../src/errors';
import { silentLogger } from '../../src/observe/log';
import type { ControlToData } from '../../src/plane/messages';
import { accountKeys, acmeIssuerId, certificateKeys } from '../../src/store/keys';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import type { MemoryStorage } from '../support/memory-storage';
import { freePort, pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import { servedChain } from '../support/served-leaf';
import { STORAGE_KINDS, TestStorages } from '../support/storages';

jest.setTimeout(90_000);

const SERVER_NAME = 'example.com';
const HOSTNAME = 'matrix.example.com';
const EMAIL = 'test@example.com';

const run = pebbleInstalled() ? describe : describe.skip;

run('ACME HTTP-01 against Pebble', () => {
  describe.each(STORAGE_KINDS)('on %s storage', (kind) => {
    const storages = new TestStorages(kind);
    let pebble: RunningPebble | null = null;
    let edge: TestEdge | null = null;
    let dir: string;

    afterEach(async () => {
      await edge?.stop(0).catch(() => undefined);
      edge = null;
      await pebble?.stop();
      pebble = null;
      fs.rmSync(dir, { recursive: true, force: true });
      storages.clear();
    });

    it('obtains certificates for both names, serves verified chains, and reuses account and certificates after a restart', async () => {
      dir = tempDir('matrix-edge-acme-');
      const httpsPort = await freePort();
      const httpPort = await freePort();
      pebble = await startPebble({ httpPort, tlsPort: httpsPort });
      const yaml = [
        `server_name: ${SERVER_NAME}`,
        `hostname: ${HOSTNAME}`,
        'listen:',
        `  https: [${httpsPort}]`,
        `  http: ${httpPort}`,
        '  address: ["127.0.0.1"]',
        'tls:',
        '  issuer: acme',
        'acme:',
        `  ca: ${pebble.directory}`,
        `  ca_roots: [${JSON.stringify(pebble.caRootsFile)}]`,
        `  email: ${EMAIL}`,
        '',
      ].join('\n');

      const started = Date.now();
      edge = await startTestEdge(yaml, { dir, keepPorts: true, edge: storages.edgeOptions(dir) });
      // The listeners are up before any certificate: issuance runs in the background.
      const listening = Date.now();
      await edge.edge.certificates.managed!.whenReady();
      console.log(`HTTP-01 (${kind} storage): listeners up ${listening - started} ms after start; both certificates installed after ${Date.now() - started} ms`);
      const firstLogs = edge.logs;
      expect(edge.httpsPorts).toEqual([httpsPort]);
      expect(edge.httpPort).toBe(httpPort);
      const issuerId = acmeIssuerId(pebble.directory);
      expect(issuerId).toBe(`127.0.0.1-${new URL(pebble.directory).port}-dir`);

      const root = await pebble.issuingRoot();
      const rootCert = new X509Certificate(root);
      const serials = new Map<string, string>();
      for (const name of [HOSTNAME, SERVER_NAME]) {
        const got = await servedChain(httpsPort, name, root);
        expect({ name, authorized: got.authorized, error: got.error }).toEqual({ name, authorized: true, error: null });
        const leaf = got.chain[0]!;
        expect(leaf.checkHost(name)).toBe(name);
        // Pebble's chain: leaf, intermediate; the intermediate is signed by the issuing root.
        expect(got.chain.length).toBeGreaterThanOrEqual(2);
        expect(got.chain.some((c) => c.checkIssued(rootCert) && c.verify(rootCert.publicKey))).toBe(true);
        expect(leaf.publicKey.asymmetricKeyType).toBe('ec');
        expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
        serials.set(name, leaf.serialNumber);
      }
      expect(new Set(serials.values()).size).toBe(2);

      // Account stored once, in CertMagic's layout, its key a secret; its terms-of-service URL logged at creation.
      const storage = storages.storage(dir);
      const account = accountKeys(issuerId, EMAIL);
      expect(account).toEqual({
        key: `acme/${issuerId}/users/${EMAIL}/test.key`,
        meta: `acme/${issuerId}/users/${EMAIL}/test.json`,
      });
      const keyFile = path.join(edge.plan.storage, account.key);
      const metaFile = path.join(edge.plan.storage, account.meta);
      if (kind === 'file') expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
      else expect((storage as MemoryStorage).isSecret(account.key)).toBe(true);
      const accountUrl = (JSON.parse((await storage.load(account.meta))!.toString('utf8')) as { location: string }).location;
      expect(accountUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);
      const created = firstLogs.filter((l) => String(l.msg).startsWith('ACME account created'));
      expect(created).toHaveLength(1);
      expect(created[0]!.termsOfService).toEqual(expect.any(String));
      expect(created[0]!.account).toBe(accountUrl);
      for (const name of [HOSTNAME, SERVER_NAME]) {
        expect(await storage.exists(certificateKeys(issuerId, name).cert)).toBe(true);
        if (kind === 'file') expect(fs.existsSync(path.join(edge.plan.storage, 'certificates', issuerId, name, `${name}.crt`))).toBe(true);
      }
      const accountDir = path.posix.dirname(account.key);
      const before = {
        key: await storage.stat(account.key),
        meta: await storage.stat(account.meta),
        keyPem: (await storage.load(account.key))!.toString('utf8'),
        metaText: (await storage.load(account.meta))!.toString('utf8'),
        files: await storage.list(accountDir, false),
        inodes: kind === 'file' ? [fs.statSync(keyFile).ino, fs.statSync(metaFile).ino] : [],
      };
      expect(firstLogs.filter((l) => l.msg === 'ACME order created')).toHaveLength(2);
      expect(Date.now() - started).toBeLessThan(30_000);

      // Restart on the same storage: same account, no order, the stored certificates served.
      await edge.stop(0);
      edge = null;
      edge = await startTestEdge(yaml, { dir, keepPorts: true, edge: storages.edgeOptions(dir) });
      const secondLogs = edge.logs;
      // Stored certificates are installed before start resolves: no wait.
      expect(secondLogs.filter((l) => l.msg === 'certificate installed' && l.component === 'certs').map((l) => l.from)).toEqual(['storage', 'storage']);
      expect(secondLogs.filter((l) => String(l.msg).startsWith('ACME'))).toEqual([]);
      for (const name of [HOSTNAME, SERVER_NAME]) {
        const got = await servedChain(httpsPort, name, root);
        expect(got.authorized).toBe(true);
        expect(got.chain[0]!.serialNumber).toBe(serials.get(name));
      }
      // Neither the account key nor its metadata was written again.
      expect((await storage.stat(account.key))!.modifiedMs).toBe(before.key!.modifiedMs);
      expect((await storage.stat(account.meta))!.modifiedMs).toBe(before.meta!.modifiedMs);
      if (kind === 'file') expect([fs.statSync(keyFile).ino, fs.statSync(metaFile).ino]).toEqual(before.inodes);
      expect((await storage.load(account.key))!.toString('utf8')).toBe(before.keyPem);
      expect((await storage.load(account.meta))!.toString('utf8')).toBe(before.metaText);
      expect(await storage.list(accountDir, false)).toEqual(before.files);

      // The optional ability to revoke: the stored account revokes its certificate; a second time the CA says so.
      const issuer = await AcmeIssuer.create({ directory: pebble.directory, email: EMAIL, caRoots: [pebble.caRootsFile], storage, solvers: new Map(), log: silentLogger });
      const stored = (await storages.certificates(dir).loadCertificate(issuerId, SERVER_NAME))!;
      expect(issuer.revoke).toBeDefined();
      await issuer.revoke(stored.certPem);
      const again = await issuer.revoke(stored.certPem).then(() => null, (err: unknown) => err as EdgeError);
      expect(again?.code).toBe('ME_ACME_STEP');
      expect(again?.problemType).toBe('alreadyRevoked');
    });

    it('failed challenges: HTTP-01 then TLS-ALPN-01 are tried, the error carries the CA problem document, every answer is withdrawn', async () => {
      dir = tempDir('matrix-edge-acme-');
      // Nothing listens on this port: Pebble's validation cannot connect.
      const deadPort = await freePort();
      pebble = await startPebble({ httpPort: deadPort, tlsPort: await freePort() });
      const sent: ControlToData[] = [];
      const storage = storages.storage(dir);
      const issuer = await AcmeIssuer.create({
        directory: pebble.directory,
        email: null,
        caRoots: [pebble.caRootsFile],
        storage,
        solvers: planeSolvers((m) => sent.push(m), alpnCertificate),
        log: silentLogger,
      });
      const failure = await issuer.issue([SERVER_NAME]).then(
        () => null,
        (err: unknown) => err,
      );
      expect(failure).toBeInstanceOf(EdgeError);
      expect((failure as EdgeError).code).toBe(ME_ACME_CHALLENGE.code);
      expect((failure as EdgeError).category).toBe('challenge');
      const problem = (failure as EdgeError).problem;
      expect(problem).toEqual(expect.objectContaining({ type: expect.stringMatching(/^urn:ietf:params:acme:error:/) }));
      expect((failure as EdgeError).message).toMatch(/tls-alpn-01 challenge for example\.com .*problem document: \{/);
      expect(sent.map((m) => m.type)).toEqual(['challenge-add', 'challenge-remove', 'alpn-challenge-add', 'alpn-challenge-remove']);
      const [add, remove] = sent as [Extract<ControlToData, { type: 'challenge-add' }>, Extract<ControlToData, { type: 'challenge-remove' }>];
      expect(remove.token).toBe(add.token);
      expect(add.keyAuthorization.startsWith(`${add.token}.`)).toBe(true);
      // The account was created without an email, stored as "default".
      expect(accountKeys(issuer.id, null).key).toBe(`acme/${issuer.id}/users/default/default.key`);
      expect(await storage.exists(accountKeys(issuer.id, null).key)).toBe(true);
      if (kind === 'file') expect(fs.existsSync(path.join(dir, 'certs', accountKeys(issuer.id, null).key))).toBe(true);
    });
  });
});
