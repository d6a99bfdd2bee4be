/**
 * `matrix-edge certs` and `matrix-edge renew` as real processes against a real edge process and
 * Pebble (HTTP-01 on the config's http port): renewal through the running edge's control socket
 * (served at once, same pid), the status table and JSON, and — with the edge stopped — status from
 * storage and a renewal that binds the listeners itself; exit 2 for unknown names and tls.files.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { acmeIssuerId } from '../../src/store/keys';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';
import { pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';
import { ensureBuilt, freePorts, killAll, runCli, startServingEdge, tempDir, tryConnect, writeConfig, type EdgeProcess } from '../support/proc-edge';
import { servedLeaf, waitForLeaf } from '../support/served-leaf';

jest.setTimeout(45_000);

const SERVER_NAME = 'example.com';
const HOSTNAME = 'matrix.example.com';
const NAMES = [HOSTNAME, SERVER_NAME];

const dirs: string[] = [];

beforeAll(async () => {
  await ensureBuilt();
}, 180_000);

afterAll(async () => {
  await killAll();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function newDir(): string {
  const dir = tempDir('matrix-edge-cli-certs-');
  dirs.push(dir);
  return dir;
}

/** When a third of the certificate's lifetime is left, as the edge prints it. */
function oneThirdLeft(leaf: X509Certificate): string {
  const notBefore = leaf.validFromDate.getTime();
  const notAfter = leaf.validToDate.getTime();
  return new Date(notAfter - (notAfter - notBefore) / 3).toISOString();
}

/** The table rows of `matrix-edge certs` (columns are separated by two or more spaces). */
function tableRows(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('from '))
    .map((l) => l.split(/ {2,}/));
}

if (!pebbleInstalled()) console.warn('cli-certs.test.ts: Pebble tests skipped: pebble is not installed (run scripts/test-deps.sh)');
const withPebble = pebbleInstalled() ? describe : describe.skip;

withPebble('certs and renew with Pebble (tests run in order on one storage)', () => {
  let pebble: RunningPebble;
  let edge: EdgeProcess | null = null;
  let httpsPort: number;
  let config: string;
  let storage: string;
  let issuerId: string;
  /** Serial served per name, as last seen. */
  const serials = new Map<string, string>();

  const storedLeaf = (name: string): X509Certificate =>
    new X509Certificate(fs.readFileSync(path.join(storage, 'certificates', issuerId, name, `${name}.crt`)));

  beforeAll(async () => {
    const [https, http] = await freePorts(2);
    httpsPort = https!;
    // No authorization reuse: every order is validated on the listeners, so a renewal proves they were bound.
    pebble = await startPebble({ httpPort: http!, tlsPort: httpsPort, env: { PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' } });
    issuerId = acmeIssuerId(pebble.directory);
    const dir = newDir();
    storage = path.join(dir, 'certs');
    config = writeConfig(
      dir,
      [
        `server_name: ${SERVER_NAME}`,
        `hostname: ${HOSTNAME}`,
        `listen: { https: [${httpsPort}], http: ${http}, address: [127.0.0.1] }`,
        'upstream: http://127.0.0.1:9',
        'tls: { issuer: acme }',
        'acme:',
        `  ca: ${pebble.directory}`,
        `  ca_roots: [${JSON.stringify(pebble.caRootsFile)}]`,
        '  email: test@example.com',
        '  challenges: [http-01]',
        'storage: ./certs',
        '',
      ].join('\n'),
    );
    edge = (await startServingEdge(config)).edge;
    // The commands below reach this edge through its control socket.
    expect(edge.logs.filter((l) => l.component === 'control').map((l) => l.msg)).toEqual([
      'control socket open: `matrix-edge certs`, `renew` and `reload` reach this edge',
    ]);
    for (const name of NAMES) serials.set(name, (await waitForLeaf(httpsPort, name, () => true, 30_000)).serialNumber);
  }, 45_000);

  afterAll(async () => {
    await edge?.kill();
    await pebble?.stop();
  });

  test('renew --force NAME against the running edge: exit 0, the edge serves the new certificate at once, same pid', async () => {
    const before = new Map(serials);
    const run = await runCli(['renew', '--config', config, '--force', HOSTNAME], { timeoutMs: 40_000 });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout).toContain(`renewed by the running edge (pid ${edge!.pid})`);
    const match = new RegExp(`^${HOSTNAME.replace(/\./g, '\\.')}: renewed \\(serial ([0-9A-F]+)\\)$`, 'm').exec(run.stdout);
    expect(match).not.toBeNull();
    const renewed = match![1]!;
    expect(renewed).not.toBe(before.get(HOSTNAME));
    expect(run.stdout).not.toMatch(/^example\.com:/m); // only the name asked for

    // Served on the running edge's https port, without a restart.
    expect((await servedLeaf(httpsPort, HOSTNAME))!.serialNumber).toBe(renewed);
    expect((await servedLeaf(httpsPort, SERVER_NAME))!.serialNumber).toBe(before.get(SERVER_NAME));
    expect(edge!.child.exitCode).toBeNull();
    expect(edge!.logs.filter((l) => l.msg === 'matrix-edge is serving')).toHaveLength(1);
    expect(edge!.logs.some((l) => l.msg === 'renewal requested through the control socket')).toBe(true);
    expect(storedLeaf(HOSTNAME).serialNumber).toBe(renewed);
    serials.set(HOSTNAME, renewed);
  });

  test('certs against the running edge: both names with issuer, served serial, NOT AFTER, NEXT RENEWAL, WHY; --json agrees', async () => {
    const run = await runCli(['certs', '--config', config]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.stdout.split('\n')[0]).toBe(`from the running edge (pid ${edge!.pid})`);
    const [header, ...rows] = tableRows(run.stdout);
    expect(header).toEqual(['NAME', 'ISSUER', 'SERIAL', 'NOT AFTER', 'NEXT RENEWAL', 'WHY', 'LAST ERROR']);
    expect(rows.map((r) => r[0])).toEqual(NAMES);
    for (const row of rows) {
      const name = row[0]!;
      const leaf = (await servedLeaf(httpsPort, name))!;
      expect(leaf.serialNumber).toBe(serials.get(name));
      expect(row).toEqual([name, issuerId, leaf.serialNumber, leaf.validToDate.toISOString(), oneThirdLeft(leaf), '1/3 of lifetime left', '-']);
    }

    const json = await runCli(['certs', '--config', config, '--json']);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout) as { from: string; names: Array<{ name: string; serial: string; issuer: string; nextReason: string }> };
    expect(parsed.from).toBe(`the running edge (pid ${edge!.pid})`);
    expect(parsed.names.map((n) => [n.name, n.serial, n.issuer])).toEqual(NAMES.map((n) => [n, serials.get(n), issuerId]));
  });

  test('edge stopped: certs reads the storage and still lists both names', async () => {
    edge!.child.kill('SIGTERM');
    expect((await edge!.exited).code).toBe(0);
    edge = null;
    const run = await runCli(['certs', '--config', config]);
    expect(run.code).toBe(0);
    expect(run.stdout.split('\n')[0]).toBe(`from the storage ${storage} (no edge is running on it)`);
    const rows = tableRows(run.stdout).slice(1);
    expect(rows.map((r) => r.slice(0, 6))).toEqual(
      NAMES.map((n) => {
        const leaf = storedLeaf(n);
        return [n, issuerId, serials.get(n), leaf.validToDate.toISOString(), oneThirdLeft(leaf), '1/3 of lifetime left'];
      }),
    );
    const json = JSON.parse((await runCli(['certs', '--config', config, '--json'])).stdout) as { from: string; names: Array<{ serial: string }> };
    expect(json.from).toMatch(/no edge is running/);
    expect(json.names.map((n) => n.serial)).toEqual(NAMES.map((n) => serials.get(n)));
  });

  test('renew --force with no edge running binds the listeners itself and renews every name into storage', async () => {
    expect(await tryConnect(httpsPort)).toBe('ECONNREFUSED');
    const run = await runCli(['renew', '--config', config, '--force'], { timeoutMs: 40_000 });
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain('running edge');
    for (const name of NAMES) {
      const match = new RegExp(`^${name.replace(/\./g, '\\.')}: renewed \\(serial ([0-9A-F]+)\\)$`, 'm').exec(run.stdout);
      expect(match).not.toBeNull();
      const stored = storedLeaf(name).serialNumber;
      expect(stored).toBe(match![1]);
      expect(stored).not.toBe(serials.get(name));
      serials.set(name, stored);
    }
    // The listeners are released again, and the control socket was never opened.
    expect(await tryConnect(httpsPort)).toBe('ECONNREFUSED');
    expect(fs.existsSync(path.join(storage, 'edge.sock'))).toBe(false);
  });

  test('renew not-a-name: exit 2 naming it and the configured names', async () => {
    const run = await runCli(['renew', '--config', config, 'not-a-name']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(`not a configured name: not-a-name (configured: ${HOSTNAME}, ${SERVER_NAME})`);
    expect(storedLeaf(HOSTNAME).serialNumber).toBe(serials.get(HOSTNAME));
  });
});

describe('renew with tls.issuer: files', () => {
  test('exit 2: nothing to renew here', async () => {
    const dir = newDir();
    const issued = await (await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger)).issue(['localhost'], 24 * 3600_000);
    fs.writeFileSync(path.join(dir, 'fullchain.pem'), issued.certPem);
    fs.writeFileSync(path.join(dir, 'privkey.pem'), issued.keyPem, { mode: 0o600 });
    const [https, http] = await freePorts(2);
    const file = writeConfig(
      dir,
      `server_name: localhost
listen: { https: [${https}], http: ${http}, address: [127.0.0.1] }
upstream: http://127.0.0.1:9
tls:
  issuer: files
  files:
    - { cert: fullchain.pem, key: privkey.pem }
storage: ./certs
`,
    );
    for (const args of [['renew'], ['renew', '--force']]) {
      const run = await runCli([...args, '--config', file]);
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/tls\.issuer is files/);
    }
    expect(await tryConnect(https!)).toBe('ECONNREFUSED');
  });
});
