/**
 * Time from process start to the first verified HTTPS answer, against a real Pebble (Debian's
 * `pebble`, started by test/support/pebble.ts), with the layout of Dendrite's docs: `example.com`
 * answers the well-known files, `matrix.example.com` proxies /_matrix/* (Pebble's DNS sends every
 * name to 127.0.0.1).
 *   fresh:  empty storage; the server makes an ACME account and obtains both certificates;
 *   stored: a restart on the storage the fresh run left.
 * "Answer" = 200 for https://matrix.example.com:PORT/_matrix/client/versions, chain verified up to
 * Pebble's root; `allMs` also waits for https://example.com:PORT/.well-known/matrix/server.
 * Each server kind gets its own Pebble, because Pebble validates on fixed ports.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startPebble, type RunningPebble } from '../test/support/pebble';
import { freePorts, sleep, stop, tail, type Proc } from './procs';
import { caddyfile, probe, startCaddy, startEdge, writeEdgeConfig, type ServerSetup } from './servers';

export const ACME_SERVER_NAME = 'example.com';
export const ACME_HOSTNAME = 'matrix.example.com';

export interface StartupTarget {
  readonly kind: 'edge' | 'caddy';
  readonly setup: ServerSetup;
  readonly pebble: RunningPebble;
  /** Pebble's issuing root (PEM): what a client verifies the obtained chains against. */
  readonly root: string;
  readonly dir: string;
}

export async function prepareStartup(
  kind: 'edge' | 'caddy',
  o: { dir: string; upstreamPort: number; tls: { certFile: string; keyFile: string; caRootsFile: string } },
): Promise<StartupTarget> {
  fs.mkdirSync(o.dir, { recursive: true });
  const [a, b, http] = (await freePorts(3)) as [number, number, number];
  // No nonce rejections: Pebble's default refuses 5 % of nonces at random, which would add retries
  // to one run and not another.
  const pebble = await startPebble({ httpPort: http, tlsPort: a, tls: o.tls, env: { PEBBLE_WFE_NONCEREJECT: '0' } });
  const root = await pebble.issuingRoot();
  const setup: ServerSetup = {
    hostname: ACME_HOSTNAME,
    serverName: ACME_SERVER_NAME,
    ports: { https: [a, b], http },
    upstreamPort: o.upstreamPort,
    tls: { kind: 'acme', directory: pebble.directory, caRoot: pebble.caRootsFile },
    storage: path.join(o.dir, 'storage'),
    logLevel: 'warn',
  };
  return { kind, setup, pebble, root, dir: o.dir };
}

export interface StartupResult {
  /** Start → first verified 200 from the hostname, ms. */
  readonly firstMs: number;
  /** Start → both names answered (verified), ms. */
  readonly allMs: number;
}

async function untilAnswer(proc: Proc, port: number, name: string, urlPath: string, root: string, t0: number, timeoutMs: number): Promise<number> {
  for (;;) {
    if (!proc.running()) throw new Error(`${proc.name} exited before answering:\n${proc.logFile ? tail(proc.logFile) : ''}`);
    if ((await probe(port, name, urlPath, root, 1000)) === 200) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`${proc.name}: no verified answer from ${name} within ${timeoutMs} ms:\n${proc.logFile ? tail(proc.logFile) : ''}`);
    }
    await sleep(10);
  }
}

/** One start of `t`'s server: fresh (storage wiped first) or stored (storage kept). */
export async function timeToAnswer(
  t: StartupTarget,
  mode: 'fresh' | 'stored',
  o: { cli: string; workers: string | null; round: number },
): Promise<StartupResult> {
  if (mode === 'fresh') fs.rmSync(t.setup.storage, { recursive: true, force: true });
  fs.mkdirSync(t.setup.storage, { recursive: true });
  const logFile = path.join(t.dir, `${t.kind}-${mode}-${o.round}.log`);
  let configFile: string;
  if (t.kind === 'edge') {
    configFile = writeEdgeConfig(path.join(t.dir, 'edge.yaml'), t.setup, o.workers);
  } else {
    configFile = path.join(t.dir, 'Caddyfile');
    fs.writeFileSync(configFile, caddyfile(t.setup));
  }
  const port = t.setup.ports.https[0];
  const t0 = performance.now();
  const proc =
    t.kind === 'edge'
      ? startEdge(`matrix-edge (${mode} ACME start)`, o.cli, configFile, logFile)
      : startCaddy(`Caddy (${mode} ACME start)`, configFile, path.join(t.dir, 'caddy-home'), logFile);
  try {
    const firstMs = await untilAnswer(proc, port, ACME_HOSTNAME, '/_matrix/client/versions', t.root, t0, 90_000);
    const allMs = Math.max(firstMs, await untilAnswer(proc, port, ACME_SERVER_NAME, '/.well-known/matrix/server', t.root, t0, 90_000));
    return { firstMs, allMs };
  } finally {
    await stop(proc, 5000);
  }
}
