/** Command-line flags and their environment equivalents. */

export const SCENARIOS = ['h1', 'h2', 'handshake', 'wellknown', 'upload', 'download', 'idle', 'startup'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface Options {
  readonly quick: boolean;
  /** Interleaved rounds (≥ 3 for a spread worth the name). */
  readonly rounds: number;
  /** Seconds per load measurement. */
  readonly seconds: number;
  /** Size of the upload and the download, MiB. */
  readonly transferMiB: number;
  /** Idle long-poll connections. */
  readonly idle: number;
  readonly scenarios: ReadonlySet<Scenario>;
  /** The extra round with matrix-edge at log level info. */
  readonly infoRound: boolean;
  /** matrix-edge `workers:` (auto, a count, or "none" to leave the key out). */
  readonly workers: string;
  /** Keep the run directory (configs, logs, storage) for a look afterwards. */
  readonly keep: boolean;
  /** The whole run is stopped after this many minutes. */
  readonly maxMinutes: number;
  readonly help: boolean;
}

export const USAGE = `Usage: npm run bench [-- FLAGS]      (or: sh bench/run.sh [FLAGS])

Measures direct (the upstream stand-in, plain HTTP: the limit), matrix-edge and Caddy on loopback,
interleaved, and writes bench/results/<timestamp>.json, .md and .svg (and bench/chart.svg when
every scenario ran at full size).

Flags (environment variable in brackets):
  --quick               2 s per measurement, 256 MiB transfers, 2,000 idle polls   [BENCH_QUICK=1]
  --rounds N            interleaved rounds (default 3)                              [BENCH_ROUNDS]
  --seconds S           seconds per load measurement (default 5; quick 2)           [BENCH_SECONDS]
  --transfer-mib N      upload/download size in MiB (default 1024; quick 256)       [BENCH_TRANSFER_MIB]
  --idle N              idle long-poll connections (default 5000; quick 2000)       [BENCH_IDLE]
  --only a,b            scenarios: ${SCENARIOS.join(', ')}   [BENCH_ONLY]
  --no-info             skip the extra round with matrix-edge at log level info     [BENCH_INFO=0]
  --workers W           matrix-edge workers: auto | N | none (default auto)         [BENCH_WORKERS]
  --keep                keep the run directory (configs, logs, storage)             [BENCH_KEEP=1]
  --max-minutes M       stop everything after M minutes (default 20)               [BENCH_MAX_MINUTES]
  --help
`;

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}: expected a positive number; got ${JSON.stringify(text)}`);
  return n;
}

export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const flags = new Map<string, string>();
  const bool = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [name, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    switch (name) {
      case '--quick':
      case '--no-info':
      case '--keep':
      case '--help':
      case '-h':
        bool.add(name === '-h' ? '--help' : name);
        break;
      case '--rounds':
      case '--seconds':
      case '--transfer-mib':
      case '--idle':
      case '--only':
      case '--workers':
      case '--max-minutes': {
        const value = inline ?? argv[++i];
        if (value === undefined) throw new Error(`${name} needs a value`);
        flags.set(name, value);
        break;
      }
      default:
        throw new Error(`unknown flag ${arg}\n\n${USAGE}`);
    }
  }
  const quick = bool.has('--quick') || env.BENCH_QUICK === '1';
  const only = flags.get('--only') ?? env.BENCH_ONLY;
  let scenarios: Set<Scenario> = new Set(SCENARIOS);
  if (only !== undefined && only !== '') {
    scenarios = new Set();
    for (const s of only.split(',').map((x) => x.trim())) {
      if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`--only: unknown scenario ${s}; known: ${SCENARIOS.join(', ')}`);
      scenarios.add(s as Scenario);
    }
  }
  const workers = flags.get('--workers') ?? env.BENCH_WORKERS ?? 'auto';
  if (!/^(auto|none|\d+)$/.test(workers)) throw new Error(`--workers: expected auto, none or a number; got ${workers}`);
  return {
    quick,
    rounds: Math.round(positive('--rounds', flags.get('--rounds') ?? env.BENCH_ROUNDS, 3)),
    seconds: Math.round(positive('--seconds', flags.get('--seconds') ?? env.BENCH_SECONDS, quick ? 2 : 5)),
    transferMiB: Math.round(positive('--transfer-mib', flags.get('--transfer-mib') ?? env.BENCH_TRANSFER_MIB, quick ? 256 : 1024)),
    idle: Math.round(positive('--idle', flags.get('--idle') ?? env.BENCH_IDLE, quick ? 2000 : 5000)),
    scenarios,
    infoRound: !bool.has('--no-info') && env.BENCH_INFO !== '0',
    workers,
    keep: bool.has('--keep') || env.BENCH_KEEP === '1',
    maxMinutes: positive('--max-minutes', flags.get('--max-minutes') ?? env.BENCH_MAX_MINUTES, 20),
    help: bool.has('--help'),
  };
}
