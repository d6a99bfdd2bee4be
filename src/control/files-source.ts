/**
 * `tls.issuer: files`: certificates the admin provides as PEM files. Each configured name is served
 * with the file whose SANs cover it (exact match first, then a single-label wildcard). The files are
 * checked every reload interval; a replaced pair is served once it is valid, a broken replacement is
 * logged and the previous certificate stays.
 */
import type { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { isIP } from 'node:net';
import type { FilesCertificate } from '../config/plan';
import type { Logger } from '../observe/log';
import type { CertificateMaterial } from '../plane/messages';
import { ME_ALREADY_STARTED, ME_FILES_INVALID, ME_FILES_NOT_COVERED, ME_FILES_UNREADABLE, ME_SOURCE_CONFIG, errorMessage } from '../errors';
import { parseCertificateChain, parsePrivateKey } from '../pki/pem';
import { checkKeyMatches } from '../pki/x509';
import { systemClock, type Clock, type Timer } from './clock';
import type { CertificateSource } from './source';

export const EXPIRY_WARNING_MS = 14 * 24 * 60 * 60 * 1000;

export interface FilesSourceOptions {
  /** Names to serve, e.g. plan.names. */
  readonly names: readonly string[];
  readonly files: readonly FilesCertificate[];
  /** How often the files are checked for changes; 0 disables reloading. */
  readonly reloadIntervalMs: number;
  readonly log: Logger;
  readonly clock?: Clock;
}

interface San {
  readonly type: 'dns' | 'ip' | 'other';
  /** As printed by Node: "DNS:example.com", "IP Address:127.0.0.1". */
  readonly text: string;
  /** DNS names lower-cased; IPs as printed. */
  readonly value: string;
}

interface LoadedPair {
  readonly certPem: string;
  readonly keyPem: string;
  readonly leaf: X509Certificate;
  readonly sans: readonly San[];
}

type ExpiryLevel = 0 | 1 | 2; // ok, within 14 days, expired

interface FileState {
  readonly index: number;
  readonly file: FilesCertificate;
  loaded: LoadedPair;
  /** mtime/size/inode of both files when last read. */
  signature: string;
  /** Last reload problem logged, so a persisting one is logged once. */
  lastProblem: string | null;
  /** Configured names served with this file, in plan order. */
  assigned: string[];
  warned: ExpiryLevel;
}

export class FilesSource implements CertificateSource {
  readonly id = 'files';
  /** Renewed by whatever writes the files, not here. */
  readonly managed = null;
  private readonly options: FilesSourceOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private states: FileState[] = [];
  private install: ((material: CertificateMaterial) => void) | null = null;
  private timer: Timer | null = null;
  private stopped = false;

  constructor(options: FilesSourceOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
  }

  async start(install: (material: CertificateMaterial) => void): Promise<void> {
    if (this.install !== null) throw new ME_ALREADY_STARTED('files');
    this.install = install;
    const { files, names } = this.options;
    if (files.length === 0) throw new ME_SOURCE_CONFIG('tls.files lists no certificate');

    const loaded = await Promise.allSettled(
      files.map(async (file, index) => {
        // Stat before reading, so a change made during the read is seen by the next check.
        const signature = await fileSignature(file).catch(() => 'unknown');
        return { signature, pair: await readPair(file, index) };
      }),
    );
    const failures = loaded.flatMap((r) => (r.status === 'rejected' ? [errorMessage(r.reason)] : []));
    if (failures.length > 0) throw new ME_FILES_INVALID(failures.join('; '));
    this.states = loaded.map((r, index) => {
      const { signature, pair } = (r as PromiseFulfilledResult<{ signature: string; pair: LoadedPair }>).value;
      return { index, file: files[index]!, loaded: pair, signature, lastProblem: null, assigned: [], warned: 0 };
    });

    const uncovered: string[] = [];
    for (const name of [...new Set(names)]) {
      const state =
        this.states.find((s) => coverage(s.loaded.sans, name) === 'exact') ??
        this.states.find((s) => coverage(s.loaded.sans, name) === 'wildcard');
      if (state === undefined) uncovered.push(name);
      else state.assigned.push(name);
    }
    if (uncovered.length > 0) {
      const seen = [...new Set(this.states.flatMap((s) => s.loaded.sans.map((san) => san.value)))];
      throw new ME_FILES_NOT_COVERED(uncovered.map((name) => `no certificate in tls.files covers ${name} (SANs seen: ${seen.join(', ') || 'none'})`).join('; '));
    }

    for (const state of this.states) {
      if (state.assigned.length === 0) {
        this.log.warn(
          { cert: state.file.cert, sans: state.loaded.sans.map((s) => s.value) },
          `tls.files[${state.index}] covers none of the configured names; it is not served`,
        );
        continue;
      }
      this.installState(state, 'certificate installed');
    }
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
  }

  private arm(): void {
    if (this.stopped || !(this.options.reloadIntervalMs > 0)) return;
    this.timer = this.clock.setTimer(() => {
      this.timer = null;
      void this.reload()
        .catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'certificate file check crashed'))
        .finally(() => this.arm());
    }, this.options.reloadIntervalMs);
  }

  /** One check of every file pair: reinstall the changed ones that are valid. Exposed for tests. */
  async reload(): Promise<void> {
    for (const state of this.states) {
      if (this.stopped) return;
      if (state.assigned.length === 0) continue;
      const where = { cert: state.file.cert, key: state.file.key };
      let signature: string;
      try {
        signature = await fileSignature(state.file);
      } catch (err) {
        this.problem(state, `tls.files[${state.index}]: ${errorMessage(err)}`);
        continue;
      }
      if (signature === state.signature) {
        this.warnExpiry(state);
        continue;
      }
      state.signature = signature;
      let pair: LoadedPair;
      try {
        pair = await readPair(state.file, state.index);
        const missing = state.assigned.filter((name) => coverage(pair.sans, name) === null);
        if (missing.length > 0) {
          throw new ME_FILES_NOT_COVERED(
            `tls.files[${state.index}].cert ${state.file.cert} no longer covers ${missing.join(', ')} ` +
              `(SANs seen: ${pair.sans.map((s) => s.value).join(', ') || 'none'})`,
          );
        }
      } catch (err) {
        this.problem(state, errorMessage(err));
        continue;
      }
      if (this.stopped) return;
      state.loaded = pair;
      state.lastProblem = null;
      state.warned = 0;
      this.log.info(where, 'certificate files changed; reloading');
      this.installState(state, 'certificate reloaded');
    }
  }

  private problem(state: FileState, message: string): void {
    if (state.lastProblem === message) return;
    state.lastProblem = message;
    this.log.error(
      { cert: state.file.cert, key: state.file.key, err: message, serving: state.loaded.leaf.serialNumber },
      'certificate files cannot be used; still serving the previous certificate',
    );
  }

  private installState(state: FileState, message: string): void {
    const { leaf, certPem, keyPem } = state.loaded;
    const material: CertificateMaterial = {
      names: [...state.assigned],
      certPem,
      keyPem,
      notAfter: leaf.validToDate.toISOString(),
    };
    this.log.info(
      { names: material.names, cert: state.file.cert, serial: leaf.serialNumber, notAfter: material.notAfter, issuer: 'files' },
      message,
    );
    this.warnExpiry(state);
    this.install?.(material);
  }

  private warnExpiry(state: FileState): void {
    const notAfter = state.loaded.leaf.validToDate.getTime();
    const now = this.clock.now();
    const level: ExpiryLevel = notAfter <= now ? 2 : notAfter - now < EXPIRY_WARNING_MS ? 1 : 0;
    if (level <= state.warned) return;
    state.warned = level;
    this.log.warn(
      { cert: state.file.cert, names: state.assigned, notAfter: new Date(notAfter).toISOString() },
      level === 2
        ? 'certificate has expired: replace the files (they are re-read automatically)'
        : 'certificate expires within 14 days: replace the files (they are re-read automatically)',
    );
  }
}

/** Whether a certificate with these SANs covers `name`: exactly, by a single-label wildcard, or not. */
function coverage(sans: readonly San[], name: string): 'exact' | 'wildcard' | null {
  const lower = name.toLowerCase();
  if (isIP(lower) !== 0) {
    const wanted = canonicalIp(lower);
    return sans.some((s) => s.type === 'ip' && canonicalIp(s.value) === wanted) ? 'exact' : null;
  }
  if (sans.some((s) => s.type === 'dns' && s.value === lower)) return 'exact';
  const dot = lower.indexOf('.');
  if (dot <= 0) return null;
  const parent = lower.slice(dot + 1);
  if (!parent.includes('.')) return null; // *.com covers nothing
  return sans.some((s) => s.type === 'dns' && s.value === `*.${parent}`) ? 'wildcard' : null;
}

/** An IP literal in one canonical spelling (IPv6 fully expanded, lower case). */
function canonicalIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  const halves = ip.toLowerCase().split('::');
  const parse = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const left = parse(halves[0]!);
  const right = halves.length > 1 ? parse(halves[1]!) : [];
  const groups = halves.length > 1 ? [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return groups.map((g) => (g.includes('.') ? g : parseInt(g, 16).toString(16))).join(':');
}

/** Splits Node's subjectAltName text ("DNS:a, DNS:\"b,c\"", "IP Address:1.2.3.4") into entries. */
function parseSans(leaf: X509Certificate): San[] {
  const text = leaf.subjectAltName;
  if (text === undefined || text === '') return [];
  const entries = text.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? [];
  return entries.map((raw) => {
    const entry = raw.trim();
    const colon = entry.indexOf(':');
    const kind = colon < 0 ? '' : entry.slice(0, colon);
    let value = colon < 0 ? entry : entry.slice(colon + 1);
    if (value.startsWith('"')) {
      try {
        value = String(JSON.parse(value));
      } catch {
        // keep as printed
      }
    }
    if (kind === 'DNS') return { type: 'dns', text: entry, value: value.toLowerCase() };
    if (kind === 'IP Address') return { type: 'ip', text: entry, value };
    return { type: 'other', text: entry, value: entry };
  });
}

async function readText(path: string, label: string): Promise<string> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch (err) {
    throw new ME_FILES_UNREADABLE(`${label} ${path}`, errorMessage(err));
  }
}

/** Reads and checks one {cert, key} pair; every Error names the file(s) at fault. */
async function readPair(file: FilesCertificate, index: number): Promise<LoadedPair> {
  const certLabel = `tls.files[${index}].cert`;
  const keyLabel = `tls.files[${index}].key`;
  const [certPem, keyPem] = await Promise.all([readText(file.cert, certLabel), readText(file.key, keyLabel)]);
  const chain = parseCertificateChain(certPem, `${certLabel} ${file.cert}`);
  const key = parsePrivateKey(keyPem, `${keyLabel} ${file.key}`);
  const leaf = chain[0]!;
  checkKeyMatches(leaf, key, `${certLabel} ${file.cert}`, `${keyLabel} ${file.key}`);
  return { certPem, keyPem, leaf, sans: parseSans(leaf) };
}

async function fileSignature(file: FilesCertificate): Promise<string> {
  const stat = async (path: string): Promise<string> => {
    try {
      const s = await fsp.stat(path);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (err) {
      throw new ME_FILES_UNREADABLE(path, errorMessage(err));
    }
  };
  return `${await stat(file.cert)}|${await stat(file.key)}`;
}
