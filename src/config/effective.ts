/**
 * The effective value of keys that both the expansion and the rules read: what was given, else
 * the default. Reading them here keeps the plan and the warnings in agreement by construction.
 */
import { DEFAULTS, DEFAULT_BLOCKED_PREFIXES, DEFAULT_PROXY_PREFIXES, type Issuer } from './defaults';
import type { RawConfig } from './sections';
import type { ParsedHost } from './servername';

/** A section of the raw config, absent or empty (`listen:`) read as `{}`. */
export type Section<K extends keyof RawConfig> = Partial<NonNullable<RawConfig[K]>>;

export function sectionOf<K extends keyof RawConfig>(raw: RawConfig, key: K): Section<K> {
  return (raw[key] ?? {}) as Section<K>;
}

// The readers below take just the keys they read, so the schema's own rules can use them too.

export function issuerOf(raw: { readonly tls?: { readonly issuer?: Issuer | undefined } | null | undefined }): Issuer {
  return raw.tls?.issuer ?? DEFAULTS.issuer;
}

export function httpsPortsOf(raw: RawConfig): readonly number[] {
  return raw.listen?.https ?? DEFAULTS.https;
}

/** The plain-HTTP port, or null when `listen.http: null` turns the listener off. */
export function httpPortOf(raw: { readonly listen?: { readonly http?: number | null | undefined } | null | undefined }): number | null {
  const http = raw.listen?.http;
  return http === undefined ? DEFAULTS.http : http;
}

/** The host clients and servers reach: `hostname`, else the host part of `server_name`. */
export function hostOf(raw: RawConfig): ParsedHost {
  return raw.hostname ?? { host: raw.server_name.host, kind: raw.server_name.kind };
}

/** The names served here (each gets a certificate): bare, lower case, hostname first. */
export function servedNames(raw: RawConfig): string[] {
  const names = [hostOf(raw).host.toLowerCase()];
  const serverHost = raw.server_name.host.toLowerCase();
  if (!names.includes(serverHost)) names.push(serverHost);
  return names;
}

/** Prefixes answered 404: the defaults not forwarded explicitly, then proxy.block_prefixes. */
export function blockedPrefixes(raw: RawConfig): string[] {
  const forward = raw.proxy?.forward_prefixes ?? [];
  const blocks = DEFAULT_BLOCKED_PREFIXES.filter((p) => !forward.includes(p));
  for (const prefix of raw.proxy?.block_prefixes ?? []) if (!blocks.includes(prefix)) blocks.push(prefix);
  return blocks;
}

/** Prefixes forwarded to the homeserver: the defaults, then proxy.forward_prefixes. */
export function proxiedPrefixes(raw: RawConfig): string[] {
  const proxied = [...DEFAULT_PROXY_PREFIXES];
  for (const prefix of raw.proxy?.forward_prefixes ?? []) if (!proxied.includes(prefix)) proxied.push(prefix);
  return proxied;
}
