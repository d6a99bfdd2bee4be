/**
 * Server-name resolution as the Matrix server-server API ("Resolving server names", v1.8+) lays it
 * out, as pure decisions: the caller does the look-ups and feeds their outcomes back in.
 *
 *   1. IP literal [port]        → that address, port or 8448; no SNI; certificate for the IP;
 *                                 Host = the server name as given (port kept).
 *   2. DNS name + port          → A/AAAA of the name, that port; SNI and certificate = the name;
 *                                 Host = name:port.
 *   3. DNS name, no port        → GET https://<name>/.well-known/matrix/server (443, 30x followed).
 *      A valid m.server = <delegated>[:port]:
 *        IP literal             → as 1, Host = the delegated IP (port kept when given).
 *        name + port            → A/AAAA of the delegated name, that port; SNI, certificate and
 *                                 Host = delegated (Host with the port).
 *        name, no port          → SRV _matrix-fed._tcp.<delegated>, then the deprecated
 *                                 _matrix._tcp.<delegated>, else A/AAAA and 8448; SNI, certificate
 *                                 and Host = the delegated name (never the SRV target).
 *      No valid answer (404, bad JSON, no m.server, unreachable) → the same SRV/8448 steps on
 *      <name> itself (steps 4–6), certificate and Host = <name>.
 */
import { isIP } from 'node:net';
import { formatHost, formatServerName, parseServerName, type ParsedServerName } from '../config/servername';
import { fail, ok, type Parsed } from '../config/units';

export const DEFAULT_FEDERATION_PORT = 8448;

/** One place to connect to, with what the spec says to send and expect there. */
export interface Target {
  /** Name to look up (A/AAAA), or an IP literal (no brackets). */
  readonly host: string;
  readonly port: number;
  /** SNI to send; null for IP literals (no SNI). */
  readonly sni: string | null;
  /** The name or IP the certificate must be valid for. */
  readonly certName: string;
  readonly hostHeader: string;
}

export type Step =
  | { readonly kind: 'targets'; readonly targets: readonly Target[]; readonly via: string }
  | { readonly kind: 'well-known'; readonly hostname: string }
  | { readonly kind: 'srv'; readonly hostname: string };

function direct(name: ParsedServerName, via: string): Step {
  const port = name.port ?? DEFAULT_FEDERATION_PORT;
  const ip = name.kind !== 'dns';
  const target: Target = {
    host: name.host,
    port,
    sni: ip ? null : name.host,
    certName: name.host,
    hostHeader: formatServerName(name),
  };
  return { kind: 'targets', targets: [target], via };
}

/** Steps 1–3: where resolution of the server name starts. */
export function firstStep(name: ParsedServerName): Step {
  if (name.kind !== 'dns') return direct(name, 'IP literal');
  if (name.port !== undefined) return direct(name, 'explicit port');
  return { kind: 'well-known', hostname: name.host };
}

/** After the well-known: the delegated server name (null when there was no valid answer). */
export function afterWellKnown(hostname: string, delegated: ParsedServerName | null): Step {
  if (delegated === null) return { kind: 'srv', hostname };
  if (delegated.kind !== 'dns') return direct(delegated, `well-known m.server ${formatServerName(delegated)} (IP literal)`);
  if (delegated.port !== undefined) return direct(delegated, `well-known m.server ${formatServerName(delegated)}`);
  return { kind: 'srv', hostname: delegated.host };
}

export interface SrvRecord {
  readonly name: string;
  readonly port: number;
  readonly priority: number;
  readonly weight: number;
}

export interface SrvOutcome {
  readonly targets: readonly Target[];
  readonly via: string;
  /** Set when only the deprecated _matrix._tcp record exists. */
  readonly deprecated: boolean;
}

/** SRV records that point somewhere ("." means "no service"), lowest priority first, heaviest first. */
function usable(records: readonly SrvRecord[] | null): SrvRecord[] {
  return (records ?? [])
    .filter((r) => r.name !== '' && r.name !== '.')
    .sort((a, b) => a.priority - b.priority || b.weight - a.weight);
}

/**
 * Steps 4–6 (and 3's no-port branch): `_matrix-fed._tcp` records, else `_matrix._tcp`, else
 * <hostname>:8448. SNI, certificate and Host stay <hostname> whatever the SRV target is.
 */
export function afterSrv(hostname: string, fed: readonly SrvRecord[] | null, legacy: readonly SrvRecord[] | null): SrvOutcome {
  const toTargets = (records: SrvRecord[]): Target[] =>
    records.map((r) => ({ host: r.name.replace(/\.$/, ''), port: r.port, sni: hostname, certName: hostname, hostHeader: hostname }));
  const current = usable(fed);
  if (current.length > 0) return { targets: toTargets(current), via: `SRV _matrix-fed._tcp.${hostname}`, deprecated: false };
  const old = usable(legacy);
  if (old.length > 0) return { targets: toTargets(old), via: `SRV _matrix._tcp.${hostname} (deprecated)`, deprecated: true };
  const fallback: Target = { host: hostname, port: DEFAULT_FEDERATION_PORT, sni: hostname, certName: hostname, hostHeader: hostname };
  return { targets: [fallback], via: `no SRV record: ${hostname} port ${DEFAULT_FEDERATION_PORT}`, deprecated: false };
}

/** `--resolve HOST:PORT:ADDR[:CONNECT_PORT]`: connections to HOST:PORT go to ADDR (and CONNECT_PORT). */
export interface Override {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  readonly connectPort: number;
}

export function overrideKey(host: string, port: number): string {
  return `${host.toLowerCase()}:${port}`;
}

const PORT = /^\d{1,5}$/;

function portOf(text: string): number | null {
  const n = Number(text);
  return PORT.test(text) && n >= 1 && n <= 65535 ? n : null;
}

/**
 * Parse one --resolve value. Like curl's, with one addition: the address may carry its own port
 * (`example.com:443:127.0.0.1:8443`), so a name's port can be pointed at a listener on another
 * port, as curl's --connect-to does. IPv6 addresses may be bracketed (`[::1]`, `[::1]:8443`).
 */
export function parseOverride(text: string): Parsed<Override> {
  const usage = `--resolve ${text}: expected HOST:PORT:ADDRESS, e.g. example.com:443:192.0.2.1 (ADDRESS may carry a port: 127.0.0.1:8443)`;
  const m = /^([^:[\]]+):(\d+):(.+)$/.exec(text);
  if (m === null) return fail(usage);
  const [, host, portText, rest] = m as unknown as [string, string, string, string];
  const port = portOf(portText);
  if (!parseServerName(host).ok || port === null) return fail(usage);
  let address = rest;
  let connectPort: number | null = port;
  const inBrackets = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (inBrackets !== null) {
    address = inBrackets[1]!;
    connectPort = inBrackets[2] === undefined ? port : portOf(inBrackets[2]);
  } else if (isIP(rest) === 0 && rest.includes(':')) {
    const colon = rest.lastIndexOf(':');
    address = rest.slice(0, colon);
    connectPort = portOf(rest.slice(colon + 1));
  }
  if (isIP(address) === 0 || connectPort === null) return fail(usage);
  return ok({ host: host.toLowerCase(), port, address, connectPort });
}

/** A host as it appears in a URL authority: IPv6 in brackets. */
function bracketed(host: string): string {
  return formatHost({ host, kind: isIP(host) === 6 ? 'ipv6' : 'dns' });
}

/** The authority of an https URL for a host and port: port left out when it is 443. */
export function authority(host: string, port: number): string {
  return port === 443 ? bracketed(host) : `${bracketed(host)}:${port}`;
}

/** How a target is named in the report: host:port. */
export function targetLabel(target: Pick<Target, 'host' | 'port'>): string {
  return `${bracketed(target.host)}:${target.port}`;
}
