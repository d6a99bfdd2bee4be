/**
 * `matrix-edge doctor`: the federation and client self-test an admin runs after setup and a
 * monitor runs on a schedule. `doctor()` runs it and returns the results (used in-process by the
 * tests); `doctorCommand()` is the CLI around it: table or JSON on stdout, exit 0 / 1 / 2.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatIssue } from './config/describe';
import { loadConfigFile } from './config/load';
import type { Plan } from './config/plan';
import { parseServerName } from './config/servername';
import { runChecks, type Subject } from './doctor/checks';
import { systemRoots } from './doctor/net';
import { exitCodeOf, formatJson, formatTable, type CheckResult } from './doctor/report';
import { overrideKey, parseOverride, type Override } from './doctor/resolve';
import { clientBaseUrl, jsonObject } from './doctor/wellknown';
import { LOCAL_CA_KEYS } from './store/keys';

export const DOCTOR_TIMEOUT_MS = 10_000;

export function doctorHelp(defaultConfig: string): string {
  return `Usage: matrix-edge doctor [--config FILE] [--server-name NAME] [--resolve HOST:PORT:ADDR]...
                          [--ca-file PEM] [--json]

Tests the server name as other servers and clients see it: resolution as the Matrix spec says
(well-known, SRV _matrix-fed._tcp then _matrix._tcp, port 8448) and how long peers cache the
well-known; at every address found, TLS 1.2+, a certificate for the right name with its full
chain, the signing keys (server_name, signatures, valid_until_ts), the federation version, and
whether escaped paths (%2F, %23, %25, //) reach the homeserver unchanged; then the client
well-known with CORS, the homeserver's /_matrix/client/versions and the support well-known.
Prints every check with PASS, WARN or FAIL and, for each WARN and FAIL, the fix.

  --config FILE          The edge's config (default: ${defaultConfig}, unless --server-name is
                         given): the server name, and the well-known files the edge serves, which
                         then must be reachable.
  --server-name NAME     The server name to test instead.
  --resolve H:P:ADDR     Connect to ADDR for host H, port P (repeatable, like curl). ADDR may carry
                         its own port (127.0.0.1:8443). SRV records of H are then not looked up.
  --ca-file PEM          Trust the roots in PEM as well as the system's.
  --json                 An array of {check, status, detail, fix} instead of the table.

Every network step times out after 10 s. Exit 0 when nothing failed (warnings allowed), 1 when a
check failed, 2 for a usage or config error.
`;
}

export interface DoctorInput {
  /** The edge's config: the server name and what the edge serves come from it. */
  readonly config?: string;
  /** The server name to check (default: the config's). */
  readonly serverName?: string;
  /** --resolve HOST:PORT:ADDRESS[:PORT] values. */
  readonly resolve?: readonly string[];
  /** PEM files of extra trusted roots. */
  readonly caFiles?: readonly string[];
  readonly timeoutMs?: number;
}

export interface DoctorOutcome {
  /** 0: nothing failed; 1: a check failed; 2: usage or config error (no checks ran). */
  readonly exitCode: 0 | 1 | 2;
  readonly results: readonly CheckResult[];
  /** Usage and config errors, one sentence each. */
  readonly errors: readonly string[];
  /** What the run assumed that the reader should know (e.g. a local CA it trusted). */
  readonly notes?: readonly string[];
}

/**
 * With `tls.issuer: internal` the edge's certificates come from its own local CA, which no system
 * trusts: doctor trusts that root (from the edge's storage) so the rest of the checks mean
 * something, and says so — peers and clients must be given the root too.
 */
function localCaRoot(plan: Plan, errors: string[], notes: string[]): string[] {
  if (plan.tls.issuer !== 'internal') return [];
  const file = path.join(plan.storage, LOCAL_CA_KEYS.cert);
  if (!fs.existsSync(file)) {
    notes.push(`tls.issuer is internal but its local CA root ${file} does not exist yet (start the edge once): its certificates will not verify`);
    return [];
  }
  notes.push(`trusting the local CA root ${file} (tls.issuer: internal); other servers and clients verify the edge only if they trust it too`);
  return readCaFile(file, errors);
}

/** What the plan says the edge serves at the server name. */
function expectationsOf(plan: Plan): Subject['expect'] {
  const serves = (which: string): boolean => plan.routes.some((r) => r.action.type === 'well-known' && r.action.which === which);
  const client = jsonObject(Buffer.from(plan.wellKnown.client));
  const base = client.ok ? clientBaseUrl(client.value) : client;
  return {
    serverWellKnown: serves('server') ? plan.wellKnown.server : null,
    clientWellKnown: serves('client'),
    baseUrl: base.ok ? base.url : null,
  };
}

function readCaFile(file: string, errors: string[]): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    errors.push(`--ca-file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    return [];
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (pems.length === 0) errors.push(`--ca-file ${file}: no PEM certificate in it`);
  return pems;
}

export async function doctor(input: DoctorInput): Promise<DoctorOutcome> {
  const errors: string[] = [];
  const overrides = new Map<string, Override>();
  for (const text of input.resolve ?? []) {
    const parsed = parseOverride(text);
    if (parsed.ok) overrides.set(overrideKey(parsed.value.host, parsed.value.port), parsed.value);
    else errors.push(parsed.error);
  }
  const ca = [...systemRoots(), ...(input.caFiles ?? []).flatMap((file) => readCaFile(file, errors))];

  let plan: Plan | null = null;
  const notes: string[] = [];
  if (input.config !== undefined) {
    const loaded = loadConfigFile(input.config);
    if (loaded.ok) plan = loaded.plan;
    else errors.push(...loaded.errors.map(formatIssue));
  }
  if (plan !== null) ca.push(...localCaRoot(plan, errors, notes));
  const text = input.serverName ?? plan?.serverName;
  const name = text === undefined ? null : parseServerName(text);
  if (input.config === undefined && text === undefined) errors.push('give --server-name NAME or --config FILE');
  if (name !== null && !name.ok) errors.push(`--server-name: ${name.error}`);
  if (plan !== null && input.serverName !== undefined && input.serverName !== plan.serverName) {
    errors.push(`--server-name ${input.serverName} is not the config's server_name ${plan.serverName}; give one of them`);
  }
  if (errors.length > 0 || name === null || !name.ok) return { exitCode: 2, results: [], errors };

  const subject: Subject = { name: name.value, expect: plan === null ? null : expectationsOf(plan) };
  const results = await runChecks(subject, { overrides, ca, timeoutMs: input.timeoutMs ?? DOCTOR_TIMEOUT_MS });
  return { exitCode: exitCodeOf(results), results, errors: [], notes };
}

export interface DoctorArgs {
  readonly config: string;
  /** Whether --config was given (with --server-name, the default config is not read). */
  readonly configGiven: boolean;
  readonly json: boolean;
  /** Options with values, by name: --server-name, --resolve, --ca-file. */
  readonly values: Readonly<Record<string, readonly string[]>>;
}

export async function doctorCommand(args: DoctorArgs): Promise<number> {
  const serverName = args.values['--server-name']?.at(-1);
  let outcome: DoctorOutcome;
  try {
    outcome = await doctor({
      ...(args.configGiven || serverName === undefined ? { config: args.config } : {}),
      ...(serverName === undefined ? {} : { serverName }),
      resolve: args.values['--resolve'] ?? [],
      caFiles: args.values['--ca-file'] ?? [],
    });
  } catch (err) {
    process.stderr.write(`matrix-edge doctor: internal error: ${(err as Error).message}\n`);
    return 1;
  }
  for (const e of outcome.errors) process.stderr.write(`matrix-edge doctor: ${e}\n`);
  for (const n of outcome.notes ?? []) process.stderr.write(`matrix-edge doctor: note: ${n}\n`);
  if (outcome.exitCode !== 2) process.stdout.write(args.json ? formatJson(outcome.results) : formatTable(outcome.results));
  return outcome.exitCode;
}
