/**
 * The two servers under test, as real processes with their own config files:
 *   matrix-edge: `node bench/.build/bin/matrix-edge.js start --config edge.yaml` (a build snapshot)
 *   Caddy:       `caddy run --config Caddyfile --adapter caddyfile`, the Caddyfile shaped like
 *                Dendrite's docs (docs/caddy/monolith/Caddyfile): `header` + `respond` for the
 *                well-known files, `reverse_proxy /_matrix/* <upstream>` for the homeserver.
 * Both bind 127.0.0.1 only, on the same pattern of ports (two HTTPS ports, one plain HTTP port).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { start, sleep, stop, tail, type Proc } from './procs';

export const ROOT = path.resolve(__dirname, '..');

export interface Ports {
  /** HTTPS ports: the load goes to the first. */
  readonly https: readonly [number, number];
  readonly http: number;
}

export type TlsSetup =
  | { readonly kind: 'files'; readonly cert: string; readonly key: string }
  | { readonly kind: 'acme'; readonly directory: string; readonly caRoot: string };

export interface ServerSetup {
  /** Where clients and servers reach the homeserver (the proxied site). */
  readonly hostname: string;
  /** The Matrix server name (the well-known site); may equal hostname. */
  readonly serverName: string;
  readonly ports: Ports;
  readonly upstreamPort: number;
  readonly tls: TlsSetup;
  readonly storage: string;
  readonly logLevel: 'info' | 'warn';
}

// ---------------------------------------------------------------------------------------------
// matrix-edge

/**
 * Compile src/ into bench/.build/dist (with bin/matrix-edge.js copied to bench/.build/bin), a snapshot of this moment's sources for the whole run (the
 * edge's processes, its workers and the restarts of the startup scenario all load the same code,
 * whatever happens to dist/ meanwhile). Node resolves its dependencies from the repository's
 * node_modules, which is above the snapshot.
 */
export function buildEdgeSnapshot(): { cli: string; ok: boolean; output: string } {
  const out = path.join(ROOT, 'bench/.build/dist');
  fs.rmSync(path.join(ROOT, 'bench/.build'), { recursive: true, force: true });
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', out], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  if (!fs.existsSync(path.join(out, 'cli.js'))) {
    throw new Error(`npx tsc -p tsconfig.build.json failed to produce ${out}/cli.js:\n${r.stdout}${r.stderr}${r.error?.message ?? ''}`);
  }
  // The command is bin/matrix-edge.js (it requires ../dist/cli.js and runs main): the same file
  // beside the snapshot runs the snapshot.
  const cli = path.join(ROOT, 'bench/.build/bin/matrix-edge.js');
  fs.mkdirSync(path.dirname(cli), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'bin/matrix-edge.js'), cli);
  return { cli, ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
}

export function edgeConfig(s: ServerSetup, workers: string | null): Record<string, unknown> {
  const config: Record<string, unknown> = {
    server_name: s.serverName,
    hostname: s.hostname,
    listen: { https: [...s.ports.https], http: s.ports.http, address: ['127.0.0.1'] },
    upstream: `http://127.0.0.1:${s.upstreamPort}`,
    well_known: { server: `${s.hostname}:${s.ports.https[0]}` },
    tls: s.tls.kind === 'files' ? { issuer: 'files', files: [{ cert: s.tls.cert, key: s.tls.key }] } : { issuer: 'acme' },
    ...(s.tls.kind === 'acme' ? { acme: { ca: s.tls.directory, ca_roots: [s.tls.caRoot], email: 'bench@example.com' } } : {}),
    storage: s.storage,
    // 1 GiB uploads must pass (the default is 50 MiB), and the 5,000 held long polls must reach
    // the upstream rather than queue behind the default 256 upstream connections (Caddy has no
    // such limits).
    proxy: { max_body_size: '4GiB', connections: 20_000 },
    log: { level: s.logLevel },
    // No admin listener, as Caddy runs with `admin off`; several instances run at once here.
    admin: null,
  };
  if (workers !== null) config.workers = /^\d+$/.test(workers) ? Number(workers) : workers;
  return config;
}

/** Writes the config (JSON is YAML) and returns its path. */
export function writeEdgeConfig(file: string, s: ServerSetup, workers: string | null): string {
  fs.writeFileSync(file, `${JSON.stringify(edgeConfig(s, workers), null, 2)}\n`);
  return file;
}

/** `matrix-edge check`: null when valid, else its output. */
export function checkEdgeConfig(cli: string, file: string): string | null {
  const r = spawnSync(process.execPath, [cli, 'check', '--config', file], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 ? null : `${r.stdout}${r.stderr}`.trim();
}

export function startEdge(name: string, cli: string, configFile: string, logFile: string): Proc {
  return start(name, process.execPath, [cli, 'start', '--config', configFile], { cwd: ROOT, logFile });
}

// ---------------------------------------------------------------------------------------------
// Caddy

/** Caddy's data and config directories (autosave.json, locks) kept inside the run directory. */
export function caddyEnv(home: string): NodeJS.ProcessEnv {
  fs.mkdirSync(home, { recursive: true });
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    XDG_DATA_HOME: path.join(home, 'data'),
    XDG_CONFIG_HOME: path.join(home, 'config'),
  };
}

export function caddyfile(s: ServerSetup): string {
  const [a, b] = s.ports.https;
  const global = [
    '{',
    // No admin endpoint: several Caddy processes run side by side here (Dendrite's docs show it commented out).
    '\tadmin off',
    `\thttp_port ${s.ports.http}`,
    `\thttps_port ${a}`,
    '\tskip_install_trust',
    '\tstorage file_system {',
    `\t\troot ${s.storage}`,
    '\t}',
    ...(s.tls.kind === 'acme' ? [`\tacme_ca ${s.tls.directory}`, `\tacme_ca_root ${s.tls.caRoot}`] : []),
    '\tlog {',
    `\t\tlevel ${s.logLevel.toUpperCase()}`,
    '\t}',
    '}',
    '',
  ];
  const site = (host: string): string => `${host}:${a}, ${host}:${b}`;
  const tls = s.tls.kind === 'files' ? [`\ttls ${s.tls.cert} ${s.tls.key}`] : [];
  const wellKnown = [
    '\theader /.well-known/matrix/* Content-Type application/json',
    '\theader /.well-known/matrix/* Access-Control-Allow-Origin *',
    `\trespond /.well-known/matrix/server \`{"m.server": "${s.hostname}:${a}"}\``,
    `\trespond /.well-known/matrix/client \`{"m.homeserver": {"base_url": "https://${s.hostname}:${a}"}}\``,
  ];
  const proxy = [`\treverse_proxy /_matrix/* 127.0.0.1:${s.upstreamPort}`];
  if (s.serverName === s.hostname) {
    // One name (the load scenarios: only `localhost` resolves here): one site with both parts.
    return [...global, `${site(s.hostname)} {`, '\tbind 127.0.0.1', ...tls, ...wellKnown, ...proxy, '}', ''].join('\n');
  }
  // Dendrite's layout: the server name answers the well-known files, the hostname proxies.
  return [
    ...global,
    `${site(s.serverName)} {`,
    '\tbind 127.0.0.1',
    ...tls,
    ...wellKnown,
    '}',
    '',
    `${site(s.hostname)} {`,
    '\tbind 127.0.0.1',
    ...tls,
    ...proxy,
    '}',
    '',
  ].join('\n');
}

export function startCaddy(name: string, file: string, home: string, logFile: string): Proc {
  return start(name, 'caddy', ['run', '--config', file, '--adapter', 'caddyfile'], { env: caddyEnv(home), cwd: home, logFile });
}

// ---------------------------------------------------------------------------------------------
// Readiness

/** One HTTPS GET to 127.0.0.1 with SNI/Host `name`, verified against `ca`: the status, or null. */
export function probe(port: number, name: string, urlPath: string, ca: string | Buffer, timeoutMs = 2000): Promise<number | null> {
  return new Promise((resolve) => {
    const req = https.get(
      { host: '127.0.0.1', port, servername: name, path: urlPath, ca, agent: false, timeout: timeoutMs, headers: { host: `${name}:${port}` } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? null));
        res.on('error', () => resolve(null));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(null));
  });
}

/** Polls `probe` every `everyMs` until it answers 200; rejects when `proc` exits or time runs out. */
export async function waitForAnswer(
  proc: Proc,
  o: { port: number; name: string; path: string; ca: string | Buffer; timeoutMs: number; everyMs?: number },
): Promise<void> {
  const deadline = performance.now() + o.timeoutMs;
  for (;;) {
    if (!proc.running()) throw new Error(`${proc.name} exited before answering:\n${proc.logFile ? tail(proc.logFile) : ''}`);
    if ((await probe(o.port, o.name, o.path, o.ca, 1000)) === 200) return;
    if (performance.now() > deadline) {
      throw new Error(`${proc.name} gave no verified 200 for https://${o.name}:${o.port}${o.path} within ${o.timeoutMs} ms:\n${proc.logFile ? tail(proc.logFile) : ''}`);
    }
    await sleep(o.everyMs ?? 10);
  }
}

export { stop as stopServer };
