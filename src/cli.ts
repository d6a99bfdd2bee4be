/** The `matrix-edge` command line: start, check, certs, renew, doctor. */
import { parseArgs as nodeParseArgs } from 'node:util';
import { describePlan, formatIssue } from './config/describe';
import { loadConfigFile } from './config/load';
import type { LoadResult } from './config/plan';
import { listCertificates, reloadEdge, renewCertificates } from './cli-certs';
import { doctorCommand, doctorHelp } from './cli-doctor';
import { startEdge } from './edge';
import { createPlanLogger } from './observe/log';

const DEFAULT_CONFIG = 'config/matrix-edge.yaml';

const USAGE = `Usage: matrix-edge <command> [--config FILE]

Commands:
  start   Run the edge: TLS listeners, forwarding to the homeserver, inline well-known.
  check   Validate the config and print the effective plan (exit 0), or every error (exit 2).
  certs   List every name's certificate: issuer, serial, expiry, next renewal and why, last error.
  renew   Renew certificates now (all names, or those given); a running edge does it and serves them.
  reload  Have the running edge load its config again and apply it without dropping connections.
  doctor  Test federation and client discovery from outside: resolution, TLS, keys, paths, well-known.

Options:
  --config FILE   The YAML config (default: ${DEFAULT_CONFIG})
  --help          This text; \`matrix-edge <command> --help\` for one command.
`;

const COMMAND_HELP: Record<string, string> = {
  start: `Usage: matrix-edge start [--config FILE]

Runs the edge with the config (default: ${DEFAULT_CONFIG}). The config is validated first:
any error is printed with file, line and key, and nothing is bound (exit 2). A listener that
cannot be bound or a certificate that cannot be had stops the start with one line (exit 1).
SIGTERM or SIGINT stop accepting, let in-flight requests finish (proxy.drain_timeout), exit 0.
SIGHUP loads the config again and applies it live, like \`matrix-edge reload\`.
`,
  check: `Usage: matrix-edge check [--config FILE]

Validates the config (default: ${DEFAULT_CONFIG}) without binding anything. Prints the
effective plan (names, listeners, upstream, routes, well-known bodies, certificate names) and
exits 0, or prints every error as FILE:LINE:COLUMN KEY: MESSAGE and exits 2.
`,
  certs: `Usage: matrix-edge certs [--config FILE] [--json]

Lists every configured name with the certificate served for it: issuer, serial, expiry, the
next renewal time and why (the CA's ARI window or the 1/3-of-lifetime rule), and the last
error. Asks the edge running on the same storage when there is one, else reads the storage.
Exit 0; 1 when a name has no certificate or its last renewal failed.
`,
  renew: `Usage: matrix-edge renew [--config FILE] [--force] [NAME...]

Renews the certificates of the given names (default: every name) now, when they are due —
or at once with --force. The edge running on the same storage does the renewal (its listeners
answer the CA's challenges, it holds the storage lock, and it serves the new certificate at once,
without a restart). With no edge running, the listeners are bound for the time of the renewal.
Exit 0 when every renewal succeeded, 1 otherwise.
`,
  reload: `Usage: matrix-edge reload [--config FILE]

Validates the config (default: ${DEFAULT_CONFIG}), then has the edge running on its storage
load its own config file again and apply it live: routes, well-known answers, upstreams, names
(new ones get certificates, removed ones stop being served) and listeners change for new
requests, while open connections, long polls and HTTP/2 streams carry on. storage, workers,
admin, alerts and log take effect at the next restart. The same as sending the edge SIGHUP.
Exit 0 when applied; 2 when the config has errors (nothing changes); 1 when no edge runs on the
storage or the edge could not apply it.
`,
  doctor: doctorHelp(DEFAULT_CONFIG),
};

interface Args {
  readonly command: string | undefined;
  readonly config: string;
  readonly configGiven: boolean;
  readonly help: boolean;
  readonly force: boolean;
  readonly json: boolean;
  /** Extra words after the command (renew's names). */
  readonly rest: readonly string[];
  /** Values of the options that take one, by name (repeatable). */
  readonly values: Readonly<Record<string, readonly string[]>>;
  readonly problem?: string;
}

/** Options only some commands take; a trailing '=' marks one that takes a value. */
const COMMAND_FLAGS: Readonly<Record<string, readonly string[]>> = {
  renew: ['--force'],
  certs: ['--json'],
  doctor: ['--json', '--server-name=', '--resolve=', '--ca-file='],
};

/** Every option of every command, for node:util.parseArgs; which command takes which is checked after. */
const OPTIONS = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
  'server-name': { type: 'string', multiple: true },
  resolve: { type: 'string', multiple: true },
  'ca-file': { type: 'string', multiple: true },
} as const;

/** node:util.parseArgs' error for an option, in our words. */
function optionProblem(err: Error & { code?: string }): string {
  // "Option '-c, --config <value>' argument missing", "Unknown option '--bogus'": the long name.
  const quoted = /'([^']+)'/.exec(err.message)?.[1] ?? '';
  const option = /--[\w-]+/.exec(quoted)?.[0] ?? /-\w/.exec(quoted)?.[0];
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined) {
    return option === '--config' || option === '-c' ? `${option} needs a file name` : `${option} needs a value`;
  }
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined) return `unknown option ${option}`;
  return err.message;
}

export function parseArgs(argv: readonly string[]): Args {
  let parsed;
  try {
    parsed = nodeParseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (err) {
    return { command: argv.find((a) => !a.startsWith('-')), config: DEFAULT_CONFIG, configGiven: false, help: false, force: false, json: false, rest: [], values: {}, problem: optionProblem(err as Error) };
  }
  const [command, ...more] = parsed.positionals;
  const o = parsed.values;
  const values: Record<string, string[]> = {};
  for (const name of ['server-name', 'resolve', 'ca-file'] as const) if (o[name] !== undefined) values[`--${name}`] = [...o[name]];
  const args: Args = {
    command,
    config: o.config ?? DEFAULT_CONFIG,
    configGiven: o.config !== undefined,
    help: o.help === true,
    force: o.force === true,
    json: o.json === true,
    rest: command === 'renew' ? more.map((n) => n.toLowerCase()) : [],
    values,
  };
  // Options a command does not take, and words after one that takes none, are mistakes.
  const known = command === undefined ? [] : (COMMAND_FLAGS[command] ?? []);
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option' || ['config', 'help'].includes(token.name)) continue;
    const flag = `--${token.name}`;
    if (!known.includes(flag) && !known.includes(`${flag}=`)) return { ...args, problem: `unknown option ${token.rawName}` };
  }
  if (command !== 'renew' && more.length > 0) return { ...args, problem: `unexpected argument ${more[0]}` };
  return args;
}

function reportConfig(result: LoadResult, outcome = 'nothing was started'): void {
  for (const w of result.warnings) process.stderr.write(`warning: ${formatIssue(w)}\n`);
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(`error: ${formatIssue(e)}\n`);
    const n = result.errors.length;
    process.stderr.write(`matrix-edge: the config has ${n} error${n === 1 ? '' : 's'}; ${outcome}\n`);
  }
}

export async function main(argv: readonly string[]): Promise<number | undefined> {
  const args = parseArgs(argv);
  if (args.problem !== undefined) {
    process.stderr.write(`matrix-edge: ${args.problem}\n\n${USAGE}`);
    return 2;
  }
  if (args.command === undefined || args.command === 'help') {
    (args.help || args.command === 'help' ? process.stdout : process.stderr).write(USAGE);
    return args.help || args.command === 'help' ? 0 : 2;
  }
  const help = COMMAND_HELP[args.command];
  if (help === undefined) {
    process.stderr.write(`matrix-edge: unknown command '${args.command}'\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(help);
    return 0;
  }
  if (args.command === 'doctor') return doctorCommand(args);
  const result = loadConfigFile(args.config);
  if (args.command === 'check') {
    if (!result.ok) {
      reportConfig(result);
      return 2;
    }
    process.stdout.write(describePlan(result.plan, result.warnings));
    return 0;
  }
  if (args.command === 'certs' || args.command === 'renew' || args.command === 'reload') {
    if (!result.ok) {
      reportConfig(result, args.command === 'reload' ? 'the running edge keeps its config' : 'nothing was started');
      return 2;
    }
    if (args.command === 'reload') return reloadEdge(result.plan);
    return args.command === 'certs'
      ? listCertificates(result.plan, { json: args.json })
      : renewCertificates(result.plan, { names: args.rest, force: args.force });
  }
  return start(result);
}

async function start(result: LoadResult): Promise<number> {
  if (!result.ok) {
    reportConfig(result);
    return 2;
  }
  const plan = result.plan;
  const log = createPlanLogger(plan.log);
  for (const w of result.warnings) log.warn({ key: w.key, line: w.line }, formatIssue(w));
  let edge;
  try {
    edge = await startEdge(plan, log);
  } catch (err) {
    log.flush();
    process.stderr.write(`matrix-edge: cannot start: ${(err as Error).message}\n`);
    return 1;
  }
  for (const note of edge.notes) log.info(note);
  log.info(
    { listeners: edge.listeners, names: plan.names, upstream: plan.upstreams[0]?.url, workers: edge.workers, node: process.version },
    'matrix-edge is serving',
  );
  const running = edge;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting at once');
        log.flush();
        process.exit(1);
      }
      stopping = true;
      running.stop(plan.drainTimeoutMs, () =>
        log.info({ signal, drain_ms: plan.drainTimeoutMs }, 'stopping: no new connections, draining in-flight requests'),
      ).then(
        () => {
          log.info('stopped');
          log.flush();
          resolve(0);
        },
        (err: unknown) => {
          log.error({ err }, 'error while stopping');
          log.flush();
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    // The edge logs the outcome itself.
    process.on('SIGHUP', () => void running.reload());
  });
}
