/**
 * One measurement of one scenario against one target. Targets: `direct` (the upstream stand-in,
 * plain HTTP on 127.0.0.1: what the load tool and the upstream manage without anything in
 * between), `edge` (matrix-edge), `caddy`, and `edge-info` (matrix-edge at log level info).
 */
import * as path from 'node:path';
import { idleLongPolls } from './idle';
import { cpuMeter, passiveOpens, resetPeaks, sampleRss, treeMemory, type Proc } from './procs';
import type { Scenario } from './options';
import { curl, h2load, wrk } from './tools';

export type Target = 'direct' | 'edge' | 'caddy' | 'edge-info';
export type Metrics = Record<string, number>;

export interface Served {
  readonly proc: Proc;
  /** The HTTPS port the load goes to. */
  readonly port: number;
}

export interface Context {
  readonly runDir: string;
  readonly seconds: number;
  readonly transferBytes: number;
  readonly uploadFile: string;
  readonly idle: number;
  readonly caFile: string;
  /** The no-resumption shim for wrk (one full TLS handshake per new connection). */
  readonly shim: string;
  readonly upstreamPort: number;
  readonly upstreamPid: number;
  readonly servers: Partial<Record<Exclude<Target, 'direct'>, Served>>;
}

/** The name the load tools use: the one that resolves to 127.0.0.1 on this machine. */
export const LOAD_NAME = 'localhost';
export const VERSIONS_PATH = '/_matrix/client/versions';
export const WELL_KNOWN_PATH = '/.well-known/matrix/server';

function served(ctx: Context, target: Target): Served {
  if (target === 'direct') throw new Error('direct has no server process');
  const s = ctx.servers[target];
  if (s === undefined) throw new Error(`${target} is not running`);
  return s;
}

export function url(ctx: Context, target: Target, urlPath: string): string {
  return target === 'direct' ? `http://127.0.0.1:${ctx.upstreamPort}${urlPath}` : `https://${LOAD_NAME}:${served(ctx, target).port}${urlPath}`;
}

function check(what: string, errors: number, requests: number): void {
  // A handful of errors when a run ends mid-request is noise; more means the figure is wrong.
  if (errors > Math.max(5, requests * 0.001)) throw new Error(`${what}: ${errors} errors in ${requests} requests`);
}

async function transfer(ctx: Context, target: Target, direction: 'upload' | 'download'): Promise<Metrics> {
  const targetUrl =
    direction === 'upload'
      ? url(ctx, target, '/_matrix/media/v3/upload?filename=bench.bin')
      : url(ctx, target, `/_matrix/media/v3/download/localhost/bench?bytes=${ctx.transferBytes}`);
  const options = {
    url: targetUrl,
    expectBytes: ctx.transferBytes,
    ...(direction === 'upload' ? { upload: ctx.uploadFile } : {}),
    ...(target === 'direct' ? {} : { ca: ctx.caFile }),
  };
  if (target === 'direct') {
    const meter = cpuMeter({ upstream: ctx.upstreamPid });
    const r = await curl(options);
    return { mbps: r.mbps, seconds: r.seconds, ...meter.stop() };
  }
  const pid = served(ctx, target).proc.pid;
  const baseKiB = treeMemory(pid).rssKiB;
  const reset = resetPeaks(pid);
  const sampler = sampleRss(pid, 50);
  const meter = cpuMeter({ server: pid, upstream: ctx.upstreamPid });
  const r = await curl(options).finally(() => sampler.stop());
  const cpu = meter.stop();
  const sampledKiB = sampler.stop();
  const mem = treeMemory(pid);
  return {
    ...cpu,
    mbps: r.mbps,
    seconds: r.seconds,
    // Sum over the process tree of each process's peak RSS during the transfer (VmHWM, reset
    // before it), MiB. Falls back to the sampled peak when the kernel refused the reset.
    peakRssMiB: (reset ? mem.hwmKiB : sampledKiB) / 1024,
    sampledPeakRssMiB: sampledKiB / 1024,
    baseRssMiB: baseKiB / 1024,
    processes: mem.pids.length,
  };
}

export async function measure(ctx: Context, scenario: Exclude<Scenario, 'startup'>, target: Target): Promise<Metrics> {
  if (scenario === 'upload' || scenario === 'download' || scenario === 'idle') return measureOne(ctx, scenario, target);
  // Load runs: also the CPU the server's processes, the upstream and the whole machine used.
  const pids: Record<string, number> = { upstream: ctx.upstreamPid };
  if (target !== 'direct') pids.server = served(ctx, target).proc.pid;
  const meter = cpuMeter(pids);
  const m = await measureOne(ctx, scenario, target);
  const cpu = meter.stop();
  const out: Metrics = { ...m, ...cpu };
  if (cpu.serverCores !== undefined && m.rps! > 0) out.serverCpuUsPerRequest = (cpu.serverCores * 1e6) / m.rps!;
  return out;
}

async function measureOne(ctx: Context, scenario: Exclude<Scenario, 'startup'>, target: Target): Promise<Metrics> {
  const s = ctx.seconds;
  switch (scenario) {
    case 'h1': {
      const opens = passiveOpens();
      const r = await wrk({ url: url(ctx, target, VERSIONS_PATH), connections: 32, seconds: s });
      check(`h1 ${target}`, r.errors, r.requests);
      return { rps: r.rps, p50: r.p50, p99: r.p99, requests: r.requests, errors: r.errors, accepted: passiveOpens() - opens };
    }
    case 'h2': {
      // HTTP/2 with 32 connections × 10 streams; the plain upstream speaks only HTTP/1.1, so its
      // "direct" figure is h2load --h1 with 32 connections, one request at a time each.
      const opens = passiveOpens();
      const r = await h2load({
        url: url(ctx, target, VERSIONS_PATH),
        connections: 32,
        streams: target === 'direct' ? 1 : 10,
        h1: target === 'direct',
        seconds: s,
        logFile: path.join(ctx.runDir, 'h2load.log'),
      });
      check(`h2 ${target}`, r.errors, r.requests);
      return { rps: r.rps, p50: r.p50, p99: r.p99, requests: r.requests, errors: r.errors, accepted: passiveOpens() - opens };
    }
    case 'handshake': {
      // One new connection per request: wrk with `Connection: close` (the server closes after each
      // answer) and the no-resumption shim, so each is a full TLS 1.3 handshake. Direct: a new
      // plain TCP connection per request.
      const opens = passiveOpens();
      const r = await wrk({ url: url(ctx, target, VERSIONS_PATH), connections: 16, seconds: s, headers: ['Connection: close'], preload: ctx.shim });
      const accepted = passiveOpens() - opens;
      check(`handshake ${target}`, r.errors, r.requests);
      return { rps: r.rps, p50: r.p50, p99: r.p99, requests: r.requests, errors: r.errors, acceptedPerRequest: accepted / r.requests };
    }
    case 'wellknown': {
      const opens = passiveOpens();
      const r = await wrk({ url: url(ctx, target, WELL_KNOWN_PATH), connections: 32, seconds: s });
      check(`wellknown ${target}`, r.errors, r.requests);
      return { rps: r.rps, p50: r.p50, p99: r.p99, requests: r.requests, errors: r.errors, accepted: passiveOpens() - opens };
    }
    case 'upload':
    case 'download':
      return transfer(ctx, target, scenario);
    case 'idle': {
      const srv = served(ctx, target);
      const r = await idleLongPolls({
        server: srv.proc,
        port: srv.port,
        name: LOAD_NAME,
        caFile: ctx.caFile,
        upstreamPort: ctx.upstreamPort,
        count: ctx.idle,
        logDir: ctx.runDir,
      });
      return { kibPerConn: r.kibPerConn, baseRssMiB: r.baseKiB / 1024, heldRssMiB: r.heldKiB / 1024, openMs: r.openMs, connections: r.connections };
    }
  }
}
