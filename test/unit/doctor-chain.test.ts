import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { judgeHandshake } from '../../src/doctor/chain';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';

const DAY = 86_400_000;
let dir: string;
let root: X509Certificate;
let leaf: X509Certificate;
let ipLeaf: X509Certificate;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-doctor-chain-'));
  const ca = await LocalCa.open(new FileStorage(dir), silentLogger);
  root = new X509Certificate(ca.rootPem);
  leaf = new X509Certificate((await ca.issue(['matrix.example.com'], DAY)).certPem);
  ipLeaf = new X509Certificate((await ca.issue(['127.0.0.1'], DAY)).certPem);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const rootName = (): string => root.subject.split('\n').find((l) => l.startsWith('CN='))!.slice(3);

test('a leaf issued by a trusted root passes, with or without the root in the served chain', () => {
  for (const served of [[leaf], [leaf, root]]) {
    const verdict = judgeHandshake({ served, protocol: 'TLSv1.3' }, [root], 'matrix.example.com', Date.now());
    expect(verdict).toEqual({
      status: 'PASS',
      detail: `TLSv1.3; certificate for matrix.example.com valid until ${leaf.validToDate.toISOString()}; chain matrix.example.com ← ${rootName()} (trusted)`,
      fix: null,
    });
  }
  expect(judgeHandshake({ served: [ipLeaf], protocol: 'TLSv1.2' }, [root], '127.0.0.1', Date.now()).status).toBe('PASS');
});

test("missing intermediate: the leaf's issuer is neither served nor trusted", () => {
  expect(judgeHandshake({ served: [leaf], protocol: 'TLSv1.3' }, [], 'matrix.example.com', Date.now())).toEqual({
    status: 'FAIL',
    detail: `missing intermediate: the certificate's issuer (${rootName()}) is neither in the served chain nor a trusted root`,
    fix: 'serve the full chain: the certificate followed by its intermediates (fullchain.pem, not cert.pem)',
  });
});

test('an untrusted root at the end of the chain, and a self-signed certificate', () => {
  expect(judgeHandshake({ served: [leaf, root], protocol: 'TLSv1.3' }, [], 'matrix.example.com', Date.now())).toMatchObject({
    status: 'FAIL',
    detail: `the chain ends at the root ${rootName()}, which is not a trusted root`,
  });
  expect(judgeHandshake({ served: [root], protocol: 'TLSv1.3' }, [], rootName(), Date.now())).toMatchObject({ status: 'FAIL' });
});

test('wrong name, expired, not yet valid, old protocol', () => {
  const now = Date.now();
  const judge = (name: string, at: number, protocol = 'TLSv1.3') => judgeHandshake({ served: [leaf], protocol }, [root], name, at);
  expect(judge('other.example.com', now)).toMatchObject({ status: 'FAIL', detail: 'the certificate is for DNS:matrix.example.com, not other.example.com' });
  expect(judge('matrix.example.com', leaf.validToDate.getTime() + 1)).toMatchObject({ status: 'FAIL', detail: `the certificate expired on ${leaf.validToDate.toISOString()}` });
  expect(judge('matrix.example.com', leaf.validFromDate.getTime() - 1)).toMatchObject({ status: 'FAIL', detail: expect.stringMatching(/^the certificate is not valid before /) });
  expect(judge('matrix.example.com', now, 'TLSv1.1')).toEqual({ status: 'FAIL', detail: 'negotiated TLSv1.1', fix: 'allow TLS 1.2 and 1.3 only' });
});
