/**
 * The Matrix server-name grammar (spec, Appendices → "Server names"):
 *
 *     server_name = hostname [ ":" port ]
 *     port        = 1*5DIGIT
 *     hostname    = IPv4address / "[" IPv6address "]" / dns-name
 *     dns-name    = 1*255 ( DIGIT / ALPHA / "-" / "." )
 *
 * On top of the grammar, DNS names must also be usable as certificate names: no empty labels,
 * labels of at most 63 characters that neither start nor end with '-'. Dotted quads must be real
 * IPv4 addresses and bracketed literals real IPv6 addresses.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { fail, ok, show, type Parsed } from './units';

export type HostKind = 'dns' | 'ipv4' | 'ipv6';

export interface ParsedHost {
  /** The host as written, IPv6 without brackets (case kept; lower-case it for comparisons). */
  readonly host: string;
  readonly kind: HostKind;
}

export interface ParsedServerName extends ParsedHost {
  readonly port?: number;
}

/** Why `name` is not a usable DNS name, or undefined when it is one. */
export function dnsNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > 255) return `a DNS name has at most 255 characters; this one has ${name.length}`;
  const bad = /[^A-Za-z0-9.-]/.exec(name);
  if (bad) return `'${bad[0]}' is not allowed in a DNS name (letters, digits, '-' and '.' only)`;
  for (const label of name.split('.')) {
    if (label === '') return 'a DNS name cannot have an empty label (leading, trailing or doubled dot)';
    if (label.length > 63) return `the label '${label.slice(0, 20)}...' is longer than 63 characters`;
    if (label.startsWith('-') || label.endsWith('-')) return `the label '${label}' starts or ends with '-'`;
  }
  return undefined;
}

/** True for a DNS name matching the grammar and the label rules above. */
export function isDnsName(name: string): boolean {
  return dnsNameProblem(name) === undefined;
}

/** True for an IPv4 or IPv6 literal (IPv6 without brackets). */
export function isIpLiteral(text: string): boolean {
  return isIP(text) !== 0;
}

/** Looks like an IPv4 literal (digits and dots only, four parts) whether or not it is a valid one. */
function looksLikeIPv4(text: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(text);
}

function parsePort(text: string, whole: string): Parsed<number> {
  if (!/^\d{1,5}$/.test(text)) return fail(`the port in ${show(whole)} is not a port (1–65535)`);
  const port = Number(text);
  if (port < 1 || port > 65535) return fail(`the port ${port} in ${show(whole)} is not a port (1–65535)`);
  return ok(port);
}

function parseIPv6(inner: string, whole: string): Parsed<ParsedHost> {
  if (inner.length < 2 || inner.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(inner) || !isIPv6(inner)) {
    return fail(`${show(whole)} does not hold a valid IPv6 address between the brackets`);
  }
  return ok({ host: inner, kind: 'ipv6' });
}

function parseBareHost(host: string, whole: string): Parsed<ParsedHost> {
  if (looksLikeIPv4(host)) {
    if (!isIPv4(host)) return fail(`${show(host)} is not a valid IPv4 address`);
    return ok({ host, kind: 'ipv4' });
  }
  const problem = dnsNameProblem(host);
  if (problem !== undefined) {
    return fail(`${show(whole)} is not a valid host name: ${problem}`);
  }
  return ok({ host, kind: 'dns' });
}

/** Parse a server name (`example.com`, `example.com:8448`, `192.0.2.1`, `[2001:db8::1]:8448`). */
export function parseServerName(text: string): Parsed<ParsedServerName> {
  if (text.length === 0) return fail('the server name is empty');
  if (/\s/.test(text)) return fail(`${show(text)} contains whitespace`);
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return fail(`${show(text)} opens '[' for an IPv6 address but never closes it`);
    const host = parseIPv6(text.slice(1, close), text);
    if (!host.ok) return host;
    const rest = text.slice(close + 1);
    if (rest === '') return ok(host.value);
    if (!rest.startsWith(':')) return fail(`${show(text)}: only ':<port>' may follow the IPv6 address`);
    const port = parsePort(rest.slice(1), text);
    if (!port.ok) return port;
    return ok({ ...host.value, port: port.value });
  }
  const colons = text.split(':').length - 1;
  if (colons > 1) {
    return fail(`${show(text)}: an IPv6 address must be written in brackets, e.g. [2001:db8::1]:8448`);
  }
  const [hostText, portText] = colons === 1 ? text.split(':') : [text, undefined];
  const host = parseBareHost(hostText!, text);
  if (!host.ok) return host;
  if (portText === undefined) return ok(host.value);
  const port = parsePort(portText, text);
  if (!port.ok) return port;
  return ok({ ...host.value, port: port.value });
}

/**
 * Parse a host name with no port: a DNS name, an IPv4 literal, or an IPv6 literal with or without
 * brackets.
 */
export function parseHostname(text: string): Parsed<ParsedHost> {
  if (text.length === 0) return fail('the host name is empty');
  if (isIPv6(text)) return ok({ host: text, kind: 'ipv6' });
  const parsed = parseServerName(text);
  if (!parsed.ok) return parsed;
  if (parsed.value.port !== undefined) {
    return fail(`${show(text)} carries a port; give the host name alone (ports belong in listen.https and well_known.server)`);
  }
  return ok({ host: parsed.value.host, kind: parsed.value.kind });
}

/** The host as it appears in a server name or URL authority: IPv6 in brackets. */
export function formatHost(host: ParsedHost): string {
  return host.kind === 'ipv6' ? `[${host.host}]` : host.host;
}

/** A parsed server name back into text. */
export function formatServerName(name: ParsedServerName): string {
  return name.port === undefined ? formatHost(name) : `${formatHost(name)}:${name.port}`;
}

/** True for a Matrix user ID: `@localpart:server_name`, at most 255 characters. */
export function isMatrixUserId(text: string): boolean {
  if (text.length > 255) return false;
  const m = /^@([^:\s]+):(\S+)$/.exec(text);
  return m !== null && parseServerName(m[2]!).ok;
}
