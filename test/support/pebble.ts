/**
 * A real Pebble (Let's Encrypt's test CA) for integration tests, on loopback with its own ports:
 * `pebble-challtestsrv` as its DNS (every name → 127.0.0.1, no AAAA, its challenge servers off) and
 * `pebble` validating HTTP-01 on `httpPort` and TLS-ALPN-01 on `tlsPort` (the edge's listeners).
 * Pebble's own HTTPS uses a certificate from a throw-away local CA; `caRootsFile` is what the edge
 * trusts through `acme.ca_roots`. Install with scripts/test-deps.sh (Debian package `pebble`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';

export const PEBBLE = '/usr/bin/pebble';
export const CHALLTESTSRV = '/usr/bin/pebble-challtestsrv';

export interface PebbleOptions {
  /** Where Pebble validates HTTP-01: the edge's plain-HTTP port. */
  readonly httpPort: number;
  /** Where Pebble validates TLS-ALPN-01: the edge's HTTPS port. */
  readonly tlsPort: number;
  /** Certificate lifetime, seconds (Pebble's `certificateValidityPeriod`). */
  readonly validitySeconds?: number;
  /** Require External Account Binding; the MAC keys are in `eabKeys`. */
  readonly eab?: boolean;
  /** Extra environment for pebble, e.g. { PEBBLE_WFE_NONCEREJECT: '30' }. */
  readonly env?: Record<string, string>;
  /** Port of the ACME API (default: a free one), e.g. to point an edge at it before Pebble runs. */
  readonly listenPort?: number;
  /**
   * Pebble's own HTTPS certificate (default: a fresh one from a new throw-away CA), e.g. to keep
   * the edge's `acme.ca_roots` valid across Pebble restarts. The files are left in place on stop.
   */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caRootsFile: string };
}

export interface RunningPebble {
  /** The ACME directory URL. */
  readonly directory: string;
  /** PEM file that verifies Pebble's own HTTPS (for acme.ca_roots). */
  readonly caRootsFile: string;
  /** Pebble's own HTTPS certificate (PEM, for localhost and 127.0.0.1, issued under `caRootsFile`). */
  readonly certFile: string;
  /** Private key (PEM) of `certFile`. */
  readonly keyFile: string;
  /** Where Pebble's ACME API listens: "127.0.0.1:<port>". */
  readonly listenAddress: string;
  /** kid → base64url HMAC key, when started with `eab: true`. */
  readonly eabKeys: Readonly<Record<string, string>>;
  /** Everything pebble wrote to stdout/stderr so far. */
  output(): string;
  /** PEM of the root that issued (via an intermediate) the certificates: management GET /roots/0. */
  issuingRoot(): Promise<string>;
  /** Kills both processes and removes the temp dir; never throws. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bind 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A free UDP+TCP port for the DNS server: free on TCP, checked on UDP too. */
async function freeDnsPort(): Promise<number> {
  const dgram = await import('node:dgram');
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    const ok = await new Promise<boolean>((resolve) => {
      const socket = dgram.createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free UDP/TCP port for pebble-challtestsrv DNS');
}

export function pebbleInstalled(): boolean {
  return fs.existsSync(PEBBLE) && fs.existsSync(CHALLTESTSRV);
}

function get(url: string, ca: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

interface Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  output: string;
}

function launch(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Proc {
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc: Proc = {
    child,
    output: '',
    exited: new Promise((resolve) => child.once('close', () => resolve())),
  };
  const keep = (c: Buffer): void => {
    proc.output += c.toString('utf8');
    if (proc.output.length > 200_000) proc.output = proc.output.slice(-100_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('error', (err) => keep(Buffer.from(`spawn error: ${err.message}\n`)));
  return proc;
}

async function kill(proc: Proc): Promise<void> {
  if (proc.child.exitCode === null && proc.child.signalCode === null) {
    proc.child.kill('SIGTERM');
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 2000);
    await proc.exited;
    clearTimeout(timer);
  } else {
    await proc.exited;
  }
}

/**
 * Pebble's own HTTPS certificate (for localhost and 127.0.0.1) from a throw-away local CA (Node
 * crypto only), written under `dir`; `caRootsFile` verifies it.
 */
export async function pebbleTls(dir: string): Promise<{ certFile: string; keyFile: string; caRootsFile: string }> {
  const ca = await LocalCa.open(new FileStorage(path.join(dir, 'ca')), silentLogger);
  const api = await ca.issue(['localhost', '127.0.0.1'], 24 * 3600_000);
  const certFile = path.join(dir, 'pebble.crt');
  const keyFile = path.join(dir, 'pebble.key');
  fs.writeFileSync(certFile, api.certPem);
  fs.writeFileSync(keyFile, api.keyPem, { mode: 0o600 });
  return { certFile, keyFile, caRootsFile: ca.rootPemPath };
}

export async function startPebble(opts: PebbleOptions): Promise<RunningPebble> {
  if (!pebbleInstalled()) throw new Error(`${PEBBLE} is not installed: run scripts/test-deps.sh (apt-get install -y pebble)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-pebble-'));
  const procs: Proc[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => kill(p).catch(() => undefined)));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Pebble's own HTTPS certificate: the one given, or a fresh one from a throw-away local CA.
    const { certFile, keyFile, caRootsFile } = opts.tls ?? (await pebbleTls(dir));

    const [dnsPort, managementPort, listenPort, pebbleManagementPort] = [
      await freeDnsPort(),
      await freePort(),
      opts.listenPort ?? (await freePort()),
      await freePort(),
    ];
    const eabKeys: Record<string, string> = opts.eab
      ? { 'kid-1': 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W', 'kid-2': 'b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH' }
      : {};
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${listenPort}`,
        managementListenAddress: `127.0.0.1:${pebbleManagementPort}`,
        certificate: certFile,
        privateKey: keyFile,
        httpPort: opts.httpPort,
        tlsPort: opts.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: opts.eab === true,
        ...(opts.eab ? { externalAccountMACKeys: eabKeys } : {}),
        ...(opts.validitySeconds !== undefined ? { certificateValidityPeriod: opts.validitySeconds } : {}),
      },
    };
    const configFile = path.join(dir, 'pebble-config.json');
    fs.writeFileSync(configFile, JSON.stringify(config, null, 2));

    const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir };
    const dns = launch(
      CHALLTESTSRV,
      [
        '-dns01', `127.0.0.1:${dnsPort}`,
        '-http01', '',
        '-https01', '',
        '-tlsalpn01', '',
        '-management', `127.0.0.1:${managementPort}`,
        '-defaultIPv4', '127.0.0.1',
        '-defaultIPv6', '',
      ],
      baseEnv,
      dir,
    );
    procs.push(dns);
    const pebble = launch(
      PEBBLE,
      ['-config', configFile, '-dnsserver', `127.0.0.1:${dnsPort}`],
      { ...baseEnv, PEBBLE_VA_NOSLEEP: '1', ...opts.env },
      dir,
    );
    procs.push(pebble);

    const directory = `https://127.0.0.1:${listenPort}/dir`;
    const caPem = fs.readFileSync(caRootsFile, 'utf8');
    const deadline = Date.now() + 15_000;
    for (;;) {
      for (const p of procs) {
        if (p.child.exitCode !== null || p.child.signalCode !== null) {
          throw new Error(`${p === pebble ? 'pebble' : 'pebble-challtestsrv'} exited early:\n${p.output}`);
        }
      }
      const ok = await get(directory, caPem, 1000).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`pebble did not answer at ${directory} within 15 s:\n${pebble.output}\n${dns.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    return {
      directory,
      caRootsFile,
      certFile,
      keyFile,
      listenAddress: `127.0.0.1:${listenPort}`,
      eabKeys,
      output: () => `${pebble.output}\n--- pebble-challtestsrv ---\n${dns.output}`,
      async issuingRoot() {
        const r = await get(`https://127.0.0.1:${pebbleManagementPort}/roots/0`, caPem);
        if (r.status !== 200) throw new Error(`pebble management /roots/0 answered ${r.status}: ${r.body}`);
        return r.body;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
