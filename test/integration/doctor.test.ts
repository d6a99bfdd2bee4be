/**
 * `matrix-edge doctor` against real edges with Pebble-issued certificates, in front of the
 * homeserver stand-in: a correct setup passes; each fault fails with its cause and fix.
 *
 * Everything listens on 127.0.0.1; the doctor reaches it through --resolve (example.com:443 is
 * pointed at the port that plays the server name's web server). Well-known faults are served by a
 * small HTTPS server of this test (with Pebble's example.com certificate) standing at
 * example.com:443 while the doctor reads the edge's config — exactly what an admin sees when the
 * server name's DNS points at another web server than the edge. Broken certificates and a
 * path-normalising hop get edges of their own (tls.issuer files, from the same Pebble certificates).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { doctor, type DoctorOutcome } from '../../src/cli-doctor';
import { acmeIssuerId } from '../../src/store/keys';
import type { ManagedCertificates } from '../../src/control/source';
import type { CheckResult } from '../../src/doctor/report';
import { startTestEdge, tempDir, type TestEdge } from '../support/edge';
import { startHomeserver, type Homeserver } from '../support/homeserver';
import { freePort, pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import { ensureBuilt, runCli } from '../support/proc-edge';

jest.setTimeout(90_000);

const SERVER = 'example.com';
const HOST = 'matrix.example.com';

interface Closable {
  close(): Promise<void>;
}

function listen(server: http.Server): Promise<{ port: number } & Closable> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((done) => (server.closeAllConnections(), server.close(() => done()))),
      }),
    );
  });
}

const run = pebbleInstalled() ? describe : describe.skip;

run('matrix-edge doctor', () => {
  const closing: Closable[] = [];
  const dirs: string[] = [];
  let pebble: RunningPebble;
  let hs: Homeserver;
  let edge: TestEdge;
  let port: number;
  let config: string;
  let rootFile: string;
  /** PEM chain (leaf first) and key Pebble issued for each name. */
  const issued: Record<string, { chain: string; key: string }> = {};
  /** The HTTPS server standing at example.com:443 in the well-known tests. */
  let wellKnown: { port: number; answer: { status: number; body: string } };

  const newDir = (): string => {
    const dir = tempDir('matrix-edge-doctor-');
    dirs.push(dir);
    return dir;
  };
  const check = (outcome: DoctorOutcome, prefix: string): CheckResult => {
    const found = outcome.results.find((r) => r.check.startsWith(prefix));
    if (found === undefined) throw new Error(`no check ${prefix} in ${JSON.stringify(outcome.results, null, 2)}`);
    return found;
  };
  /** The doctor pointed at an edge's port: example.com:443 and matrix.example.com:<port> both go there. */
  const atEdge = (edgePort: number): string[] => [`${SERVER}:443:127.0.0.1:${edgePort}`, `${HOST}:${edgePort}:127.0.0.1`];
  const runDoctor = (resolve: string[], extra: { config?: string; serverName?: string } = { config }): Promise<DoctorOutcome> =>
    doctor({ ...extra, resolve, caFiles: [rootFile], timeoutMs: 5000 });

  /** An edge serving the Pebble certificates from files (`chain` picks what is served), forwarding to `upstream`. */
  async function filesEdge(upstream: string, chain: (pem: string) => string): Promise<{ port: number; config: string }> {
    const dir = newDir();
    const files = [HOST, SERVER].map((name) => {
      const cert = path.join(dir, `${name}.crt`);
      const key = path.join(dir, `${name}.key`);
      fs.writeFileSync(cert, chain(issued[name]!.chain));
      fs.writeFileSync(key, issued[name]!.key, { mode: 0o600 });
      return `    - { cert: ${JSON.stringify(cert)}, key: ${JSON.stringify(key)} }`;
    });
    const edgePort = await freePort();
    await startEdge(dir, edgePort, null, upstream, ['tls:', '  issuer: files', '  files:', ...files]);
    return { port: edgePort, config: path.join(dir, 'matrix-edge.yaml') };
  }

  /** A real edge for example.com and matrix.example.com on 127.0.0.1:<httpsPort>, its config in dir/matrix-edge.yaml. */
  async function startEdge(dir: string, httpsPort: number, httpPort: number | null, upstream: string, tls: string[]): Promise<TestEdge> {
    const yaml = [`server_name: ${SERVER}`, `hostname: ${HOST}`, 'listen:', `  https: [${httpsPort}]`, `  http: ${httpPort}`, '  address: ["127.0.0.1"]'];
    const started = await startTestEdge([...yaml, `upstream: ${upstream}`, ...tls, ''].join('\n'), { dir, keepPorts: true });
    closing.push({ close: () => started.stop(0) });
    return started;
  }

  beforeAll(async () => {
    await ensureBuilt();
    const dir = newDir();
    hs = await startHomeserver(SERVER);
    closing.push(hs);
    port = await freePort();
    const httpPort = await freePort();
    pebble = await startPebble({ httpPort, tlsPort: port });
    closing.push({ close: () => pebble.stop() });
    const acme = ['tls:', '  issuer: acme', 'acme:', `  ca: ${pebble.directory}`, `  ca_roots: [${JSON.stringify(pebble.caRootsFile)}]`, '  email: doctor@example.com'];
    edge = await startEdge(dir, port, httpPort, hs.url, acme);
    await edge.edge.certificates.managed!.whenReady();
    config = path.join(dir, 'matrix-edge.yaml');
    rootFile = path.join(dir, 'pebble-root.pem');
    fs.writeFileSync(rootFile, await pebble.issuingRoot());
    for (const name of [HOST, SERVER]) {
      const base = path.join(edge.plan.storage, 'certificates', acmeIssuerId(pebble.directory), name, name);
      issued[name] = { chain: fs.readFileSync(`${base}.crt`, 'utf8'), key: fs.readFileSync(`${base}.key`, 'utf8') };
    }

    const served = { status: 404, body: '' };
    const clientBody = JSON.stringify({ 'm.homeserver': { base_url: `https://${HOST}:${port}` } });
    const wk = await listen(
      https.createServer({ cert: issued[SERVER]!.chain, key: issued[SERVER]!.key }, (req, res) => {
        const [status, body] = req.url === '/.well-known/matrix/server' ? [served.status, served.body] : req.url === '/.well-known/matrix/client' ? [200, clientBody] : [404, '{}'];
        res.writeHead(status, {
          'content-type': 'application/json',
          'cache-control': 'max-age=3600',
          'access-control-allow-origin': '*',
          'access-control-allow-methods': 'GET, OPTIONS',
          'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization',
        });
        res.end(body);
      }),
    );
    closing.push(wk);
    wellKnown = { port: wk.port, answer: served };
  }, 180_000);

  afterAll(async () => {
    for (const c of closing.reverse()) await c.close().catch(() => undefined);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    if (hs !== undefined) hs.faults = {};
  });

  test('a correct setup passes every check, in-process and as a process (--json)', async () => {
    const outcome = await runDoctor(atEdge(port));
    expect(outcome.errors).toEqual([]);
    expect(outcome.results.filter((r) => r.status !== 'PASS')).toEqual([]);
    expect(outcome.exitCode).toBe(0);
    const label = `${HOST}:${port}`;
    expect(outcome.results.map((r) => r.check)).toEqual([
      'well-known server',
      'well-known server cache',
      'resolution',
      `tls ${label}`,
      `keys ${label}`,
      `version ${label}`,
      `paths ${label}`,
      'well-known client',
      'well-known client CORS',
      'client versions',
      'well-known support',
    ]);
    expect(check(outcome, 'resolution').detail).toBe(
      `${SERVER} → well-known m.server ${label} → ${label} (SNI ${HOST}, Host ${label})`,
    );
    expect(check(outcome, 'well-known server cache').detail).toBe('peers cache it for 1 h (Cache-Control max-age=3600)');
    expect(check(outcome, 'tls ').detail).toMatch(/^TLSv1\.3; certificate for matrix\.example\.com valid until .*; chain matrix\.example\.com ← .+ ← .+ \(trusted\)$/);
    expect(check(outcome, 'keys ').detail).toMatch(/^server_name example\.com, 1 key \(ed25519:standin\) signed, valid until /);
    expect(check(outcome, 'paths ').detail).toBe('%2F, %23, %25 and // reached the homeserver unchanged');
    // The probes reached the stand-in byte for byte.
    expect(hs.targets.filter((t) => t.includes('doctor')).map((t) => t.replace(/doctor-[0-9a-f]+/, 'doctor-N'))).toEqual(
      expect.arrayContaining([
        '/_matrix/client/v3/rooms/%21doctor-N%3Aexample.com/state/m.room.name/doctor%2Fslash',
        '/_matrix/client/v3/rooms/%21doctor-N%23hash%3Aexample.com/state/m.room.name/doctor',
        '/_matrix/client/v3/rooms/%21doctor-N%3Aexample.com/state/m.room.name/doctor%252Fpct',
        '/_matrix/client/v3/rooms/%21doctor-N%3Aexample.com/state//m.room.name/doctor',
      ]),
    );

    const flags = atEdge(port).flatMap((r) => ['--resolve', r]);
    const cli = await runCli(['doctor', '--config', config, ...flags, '--ca-file', rootFile, '--json'], { timeoutMs: 30_000 });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    const json = JSON.parse(cli.stdout) as CheckResult[];
    expect(json.map((r) => [r.check, r.status, r.fix])).toEqual(outcome.results.map((r) => [r.check, 'PASS', null]));
  });

  test('keys with the wrong server_name, an expired or soon-expiring valid_until_ts, a bad signature', async () => {
    const keys = async (): Promise<{ result: CheckResult; exitCode: number }> => {
      const outcome = await runDoctor(atEdge(port));
      return { result: check(outcome, 'keys '), exitCode: outcome.exitCode };
    };
    hs.faults = { keyServerName: 'wrong.example' };
    let got = await keys();
    expect(got.exitCode).toBe(1);
    expect(got.result).toMatchObject({ status: 'FAIL', detail: 'server_name is "wrong.example", not "example.com": peers reject these keys' });
    expect(got.result.fix).toMatch(/set the homeserver's server name to example\.com/);

    hs.faults = { validUntilTs: Date.now() - 60_000 };
    got = await keys();
    expect(got.result).toMatchObject({ status: 'FAIL', detail: expect.stringMatching(/^valid_until_ts .* has passed: peers refuse to use these keys$/) });
    expect(got.result.fix).toMatch(/restart the homeserver/);

    hs.faults = { validUntilTs: Date.now() + 20 * 60_000 };
    got = await keys();
    expect(got).toMatchObject({ exitCode: 0, result: { status: 'WARN', detail: expect.stringMatching(/less than an hour away/) } });

    hs.faults = { badSignature: true };
    got = await keys();
    expect(got.result).toMatchObject({ status: 'FAIL', detail: 'the signature by ed25519:standin does not verify: peers reject these keys' });
  });

  test('expired keys through the real CLI: exit 1, the table names the cause and the fix', async () => {
    hs.faults = { validUntilTs: Date.now() - 60_000 };
    const flags = atEdge(port).flatMap((r) => ['--resolve', r]);
    const cli = await runCli(['doctor', '--config', config, ...flags, '--ca-file', rootFile], { timeoutMs: 30_000 });
    expect(cli.code).toBe(1);
    expect(cli.stdout).toMatch(new RegExp(`^keys ${HOST}:${port}\\s+FAIL\\s+valid_until_ts .* has passed`, 'm'));
    expect(cli.stdout).toMatch(/^\s+fix: the homeserver \(or a cache in front of it\) serves an old answer/m);
    expect(cli.stdout).toMatch(/10 passed, 0 warnings, 1 failed\n$/);
  });

  describe('well-known variations (a web server of this test stands at example.com:443)', () => {
    /** Peers that get no delegation fall back to example.com:8448, which here is the edge (as is the client base_url). */
    const resolve = (...more: string[]): string[] => [
      `${SERVER}:443:127.0.0.1:${wellKnown.port}`,
      `${SERVER}:8448:127.0.0.1:${port}`,
      `${HOST}:${port}:127.0.0.1`,
      ...more,
    ];
    const serve = (status: number, body: string): void => {
      Object.assign(wellKnown.answer, { status, body });
    };

    test('bad JSON: a FAIL naming the cause; resolution goes on to SRV and 8448 as the spec says', async () => {
      serve(200, '{"m.server": ');
      const outcome = await runDoctor(resolve());
      expect(outcome.exitCode).toBe(1);
      const wk = check(outcome, 'well-known server');
      expect(wk.status).toBe('FAIL');
      expect(wk.detail).toMatch(/^https:\/\/example\.com\/\.well-known\/matrix\/server: the body is not JSON \(.*\): peers fall back to SRV and port 8448$/);
      expect(wk.fix).toBe(`serve {"m.server":"${HOST}:${port}"} at https://example.com/.well-known/matrix/server, as JSON`);
      expect(check(outcome, 'resolution').detail).toBe(
        `${SERVER} → no delegation → SRV not looked up (--resolve names ${SERVER}): port 8448 → ${SERVER}:8448 (SNI ${SERVER}, Host ${SERVER})`,
      );
      expect(check(outcome, `tls ${SERVER}:8448`).status).toBe('PASS');

      serve(200, '{"server": "matrix.example.com:443"}');
      expect(check(await runDoctor(resolve()), 'well-known server').detail).toMatch(/: the JSON has no m\.server: peers fall back/);
    });

    test('missing (404): a FAIL when the config says the edge serves it, a valid outcome without the config', async () => {
      serve(404, '{"errcode":"M_NOT_FOUND"}');
      const withConfig = await runDoctor(resolve());
      expect(check(withConfig, 'well-known server')).toEqual({
        check: 'well-known server',
        status: 'FAIL',
        detail: 'https://example.com/.well-known/matrix/server answered 404: peers fall back to SRV and port 8448',
        fix: `make https://example.com/.well-known/matrix/server reach this edge (it answers {"m.server":"${HOST}:${port}"}): point ${SERVER} at it, or serve that JSON there`,
      });
      expect(withConfig.exitCode).toBe(1);

      const without = await runDoctor(resolve(), { serverName: SERVER });
      expect(check(without, 'well-known server').status).toBe('PASS');
      expect(without.results.filter((r) => r.status !== 'PASS')).toEqual([]);
      expect(without.exitCode).toBe(0);
    });

    test('m.server pointing at a closed port: the connection failure names host:port and the errno', async () => {
      const closed = await freePort();
      serve(200, JSON.stringify({ 'm.server': `${HOST}:${closed}` }));
      const outcome = await runDoctor(resolve(`${HOST}:${closed}:127.0.0.1`));
      expect(outcome.exitCode).toBe(1);
      const tls = check(outcome, `tls ${HOST}:${closed}`);
      expect(tls.status).toBe('FAIL');
      expect(tls.detail).toBe(`cannot connect to ${HOST}:${closed} (127.0.0.1:${closed}): ECONNREFUSED`);
      expect(tls.fix).toMatch(new RegExp(`^open port ${closed} of ${HOST} to the edge`));
      expect(check(outcome, 'well-known server')).toMatchObject({ status: 'WARN', detail: expect.stringMatching(`the config says ${HOST}:${port}`) });
    });

    test('a certificate for another name: the delegated name is not covered', async () => {
      serve(200, JSON.stringify({ 'm.server': `other.example.net:${port}` }));
      const outcome = await runDoctor(resolve(`other.example.net:${port}:127.0.0.1`));
      const tls = check(outcome, `tls other.example.net:${port}`);
      expect(tls).toMatchObject({ status: 'FAIL', detail: `the certificate is for DNS:${HOST}, not other.example.net` });
      expect(tls.fix).toMatch(/^serve a certificate whose subjectAltName covers other\.example\.net/);
      expect(outcome.exitCode).toBe(1);
    });
  });

  test('missing intermediate: an edge serving the leaf without its chain', async () => {
    const leafOnly = await filesEdge(hs.url, (pem) => pem.slice(0, pem.indexOf('-----END CERTIFICATE-----') + 26));
    const name = `${HOST}:${leafOnly.port}`;
    const outcome = await runDoctor([`${name}:127.0.0.1`, `${HOST}:443:127.0.0.1:${leafOnly.port}`], { serverName: name });
    const tls = check(outcome, `tls ${name}`);
    expect(tls.status).toBe('FAIL');
    expect(tls.detail).toMatch(/^missing intermediate: the certificate's issuer \(Pebble Intermediate CA \w+\) is neither in the served chain nor a trusted root$/);
    expect(tls.fix).toBe('serve the full chain: the certificate followed by its intermediates (fullchain.pem, not cert.pem)');
    // The client well-known on the same listener cannot be verified either.
    expect(check(outcome, 'well-known client')).toMatchObject({
      status: 'WARN',
      detail: `GET https://${HOST}/.well-known/matrix/client via ${HOST}:443 (127.0.0.1:${leafOnly.port}): unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE) — a missing intermediate, or an untrusted CA: clients cannot discover the homeserver`,
      fix: `serve a certificate for ${HOST} with its full chain on port 443`,
    });
    expect(outcome.exitCode).toBe(1);
  });

  test('tls.issuer internal: the local CA root in the storage is trusted, and the note says so', async () => {
    const dir = newDir();
    const edgePort = await freePort();
    await startEdge(dir, edgePort, null, hs.url, ['tls: { issuer: internal }', 'storage: ./certs']);
    const internalConfig = path.join(dir, 'matrix-edge.yaml');
    const outcome = await doctor({ config: internalConfig, resolve: atEdge(edgePort), timeoutMs: 5000 });
    const tls = check(outcome, `tls ${HOST}:${edgePort}`);
    expect(tls.status).toBe('PASS');
    expect(tls.detail).toMatch(/chain matrix\.example\.com ← .+ \(trusted\)$/);
    expect(outcome.notes).toEqual([
      `trusting the local CA root ${path.join(dir, 'certs/pki/authorities/local/root.crt')} (tls.issuer: internal); other servers and clients verify the edge only if they trust it too`,
    ]);
  });

  test('a hop that decodes and normalises paths between the edge and the homeserver', async () => {
    const hop = await listen(
      http.createServer((req, res) => {
        // What a "helpful" proxy does: unescape until nothing changes, drop the fragment, merge slashes.
        let target = req.url!;
        for (let prev = ''; prev !== target; ) [prev, target] = [target, decodeURIComponent(target)];
        target = target.split('#')[0]!.replace(/\/{2,}/g, '/');
        const upstream = http.request({ host: '127.0.0.1', port: hs.port, path: target, method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode!, answer.headers);
          answer.pipe(res);
        });
        req.pipe(upstream);
      }),
    );
    closing.push(hop);
    const broken = await filesEdge(`http://127.0.0.1:${hop.port}`, (pem) => pem);
    const outcome = await runDoctor(atEdge(broken.port), { config: broken.config });
    const paths = check(outcome, `paths ${HOST}:${broken.port}`);
    expect(paths.status).toBe('FAIL');
    expect(paths.detail).toBe(
      'a hop between the client and the homeserver rewrites escaped paths: %2F was decoded to /; ' +
        '%23 was decoded to # and the rest of the path was lost; %25 was decoded twice (%252F arrived as /); // was merged into /',
    );
    expect(paths.fix).toMatch(/^forward the request-target byte for byte/);
    expect(outcome.results.filter((r) => r.status !== 'PASS').map((r) => r.check)).toEqual([`paths ${HOST}:${broken.port}`]);
  });

  test('--help, and usage errors: exit 2 with one line each, and no checks run', async () => {
    const help = await runCli(['doctor', '--help']);
    expect(help).toMatchObject({ code: 0, stderr: '' });
    expect(help.stdout).toMatch(/^Usage: matrix-edge doctor \[--config FILE\] \[--server-name NAME\] \[--resolve HOST:PORT:ADDR\]\.\.\./);

    expect(await doctor({ resolve: ['example.com:443'], serverName: SERVER })).toEqual({
      exitCode: 2,
      results: [],
      errors: ['--resolve example.com:443: expected HOST:PORT:ADDRESS, e.g. example.com:443:192.0.2.1 (ADDRESS may carry a port: 127.0.0.1:8443)'],
    });
    const cli = await runCli(['doctor', '--server-name', 'exa_mple.com', '--ca-file', '/nonexistent.pem']);
    expect(cli.code).toBe(2);
    expect(cli.stdout).toBe('');
    expect(cli.stderr).toBe(
      'matrix-edge doctor: --ca-file /nonexistent.pem: cannot read it (ENOENT)\n' +
        "matrix-edge doctor: --server-name: 'exa_mple.com' is not a valid host name: '_' is not allowed in a DNS name (letters, digits, '-' and '.' only)\n",
    );
  });
});
