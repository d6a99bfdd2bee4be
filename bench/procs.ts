/**
 * Child processes of the harness: started in a process group of their own (so a server's worker
 * processes go with it), their output sent to a file (no pipe for the harness to drain while it
 * measures), tracked so that every one is killed on exit, Ctrl-C or a crash. Also: the process
 * tree of a server and its memory from /proc, and free loopback ports.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logFile: string | null;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

const tracked = new Set<Proc>();

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface StartOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** stdout and stderr go here (appended); null: discarded. */
  readonly logFile?: string | null;
  /** An IPC channel (for node children that report with process.send). */
  readonly ipc?: boolean;
}

/** Start `command` in its own process group, tracked until it exits. */
export function start(name: string, command: string, args: readonly string[], opts: StartOptions = {}): Proc {
  const logFile = opts.logFile ?? null;
  const out = logFile === null ? 'ignore' : fs.openSync(logFile, 'a');
  const stdio: Array<'ignore' | 'ipc' | number> = ['ignore', out, out];
  if (opts.ipc) stdio.push('ipc');
  const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio, detached: true });
  if (typeof out === 'number') fs.closeSync(out);
  if (child.pid === undefined) {
    throw new Error(`cannot start ${name} (${command}): ${logFile ? tail(logFile) : 'no pid'}`);
  }
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    child.once('error', () => {
      done = true;
      resolve({ code: null, signal: null });
    });
  });
  const proc: Proc = { name, child, pid: child.pid, logFile, exited, running: () => !done };
  tracked.add(proc);
  void exited.then(() => {
    // The group may still hold worker processes of a primary that died: take them down too.
    killGroup(proc.pid, 'SIGKILL');
    tracked.delete(proc);
  });
  return proc;
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

/** SIGTERM (a graceful stop), then SIGKILL to the whole group after `graceMs`. */
export async function stop(proc: Proc, graceMs = 5000): Promise<void> {
  if (proc.running()) {
    try {
      process.kill(proc.pid, 'SIGTERM');
    } catch {
      // gone
    }
    const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), graceMs);
    await proc.exited;
    clearTimeout(timer);
  }
  killGroup(proc.pid, 'SIGKILL');
  tracked.delete(proc);
}

/** SIGKILL now, group and all. */
export async function kill(proc: Proc): Promise<void> {
  killGroup(proc.pid, 'SIGKILL');
  await proc.exited;
}

/** Kill every process this harness started (synchronous: usable from process.on('exit')). */
export function killAllSync(): void {
  for (const proc of tracked) killGroup(proc.pid, 'SIGKILL');
  tracked.clear();
  // Processes started by helpers that do not go through start() (test/support/pebble.ts): every
  // descendant of this process was started by it.
  for (const pid of descendants(process.pid)) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Run a command to completion; stdout and stderr captured; SIGKILL after `timeoutMs`. */
export function run(
  command: string,
  args: readonly string[],
  opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string },
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  // Bounded: the tools print a few KB; a runaway one must not fill the harness's memory.
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    if (stdout.length < 4_000_000) stdout += s;
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 200_000) stderr += s;
  });
  const proc: Proc = {
    name: command,
    child,
    pid: child.pid ?? -1,
    logFile: null,
    exited: new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal }))),
    running: () => child.exitCode === null && child.signalCode === null,
  };
  if (child.pid !== undefined) tracked.add(proc);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup(proc.pid, 'SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${opts.timeoutMs} ms\n${stderr.slice(-2000)}`));
    }, opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      tracked.delete(proc);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      tracked.delete(proc);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/** Kill everything on exit, Ctrl-C, SIGTERM and crashes. */
export function installCleanup(onSignal: (signal: string) => Promise<void>): void {
  process.on('exit', killAllSync);
  let signalled = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (signalled) {
        killAllSync();
        process.exit(130);
      }
      signalled = true;
      process.stderr.write(`\nbench: ${signal}: stopping every process it started\n`);
      const hard = setTimeout(() => {
        killAllSync();
        process.exit(130);
      }, 5000);
      void onSignal(signal).finally(() => {
        clearTimeout(hard);
        killAllSync();
        process.exit(130);
      });
    });
  }
}

/** The last `bytes` of a file, for error messages. */
export function tail(file: string, bytes = 3000): string {
  try {
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(Math.min(bytes, size));
    fs.readSync(fd, buf, 0, buf.length, size - buf.length);
    fs.closeSync(fd);
    return buf.toString('utf8');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

/** `pid` and all its descendants (from the PPid of every process in /proc). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

export interface TreeMemory {
  readonly pids: readonly number[];
  /** Sum of VmRSS over the tree, KiB. */
  readonly rssKiB: number;
  /** Sum of VmHWM (peak RSS since start or the last resetPeaks) over the tree, KiB. */
  readonly hwmKiB: number;
}

export function treeMemory(pid: number): TreeMemory {
  const pids = descendants(pid);
  let rssKiB = 0;
  let hwmKiB = 0;
  for (const p of pids) {
    rssKiB += statusKiB(p, 'VmRSS') ?? 0;
    hwmKiB += statusKiB(p, 'VmHWM') ?? 0;
  }
  return { pids, rssKiB, hwmKiB };
}

/** Reset every process's peak RSS to its current RSS (`5 > /proc/PID/clear_refs`). */
export function resetPeaks(pid: number): boolean {
  let ok = true;
  for (const p of descendants(pid)) {
    try {
      fs.writeFileSync(`/proc/${p}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

/** Samples the tree's summed RSS every `everyMs` until stopped; returns the largest sum seen. */
export function sampleRss(pid: number, everyMs = 50): { stop(): number } {
  let max = 0;
  const tick = (): void => {
    max = Math.max(max, treeMemory(pid).rssKiB);
  };
  tick();
  const timer = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return max;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Ports

/**
 * `n` distinct loopback ports, free on TCP and UDP (Caddy also binds UDP for HTTP/3) a moment ago,
 * picked below the kernel's ephemeral range: the harness opens and closes tens of thousands of
 * client connections, and a server restarted on a port inside that range could find it taken by
 * one of them.
 */
export async function freePorts(n: number): Promise<number[]> {
  const dgram = await import('node:dgram');
  let low = 32768;
  try {
    low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: keep the default
  }
  const top = Math.max(2048, low - 1);
  const bottom = Math.max(1024, top - 10_000);
  const held: Array<{ close(): Promise<void> }> = [];
  const ports: number[] = [];
  try {
    for (let tries = 0; ports.length < n && tries < 500; tries++) {
      const port = bottom + Math.floor(Math.random() * (top - bottom));
      if (ports.includes(port)) continue;
      const tcp = await new Promise<net.Server | null>((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(null));
        s.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(s));
      });
      if (tcp === null) continue;
      held.push({ close: () => new Promise<void>((resolve) => tcp.close(() => resolve())) });
      const udp = await new Promise<import('node:dgram').Socket | null>((resolve) => {
        const u = dgram.createSocket('udp4');
        u.once('error', () => resolve(null));
        u.bind(port, '127.0.0.1', () => resolve(u));
      });
      if (udp === null) continue;
      held.push({ close: () => new Promise<void>((resolve) => udp.close(() => resolve())) });
      ports.push(port);
    }
  } finally {
    await Promise.all(held.map((h) => h.close()));
  }
  if (ports.length < n) throw new Error(`could not find ${n} free ports in ${bottom}–${top}`);
  return ports;
}

// ---------------------------------------------------------------------------------------------
// CPU time

let clockTicks = 0;
function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds used so far by `pid` and its live descendants. */
export function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of descendants(pid)) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // after "pid (comm) ": state(0) ppid(1) … utime(11) stime(12)
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return ticks / ticksPerSecond();
}

/** Busy and total CPU seconds of the whole machine so far (/proc/stat), summed over CPUs. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = v[3]! + v[4]!;
  return { busy: (total - idle) / ticksPerSecond(), total: total / ticksPerSecond() };
}

/** Starts a CPU meter; `stop` returns the cores used (CPU seconds per wall second) meanwhile. */
export function cpuMeter(pids: Record<string, number>): { stop(): Record<string, number> } {
  const t0 = performance.now();
  const m0 = machineCpuSeconds();
  const p0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, treeCpuSeconds(pid)]));
  return {
    stop() {
      const wall = (performance.now() - t0) / 1000;
      const m1 = machineCpuSeconds();
      const out: Record<string, number> = { machineBusyCores: (m1.busy - m0.busy) / wall };
      for (const [k, pid] of Object.entries(pids)) out[`${k}Cores`] = (treeCpuSeconds(pid) - p0[k]!) / wall;
      return out;
    },
  };
}

/** /proc/net/snmp Tcp PassiveOpens: connections accepted on this machine so far. */
export function passiveOpens(): number {
  const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('PassiveOpens')]);
}
