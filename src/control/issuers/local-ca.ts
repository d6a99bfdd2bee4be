/**
 * The built-in local CA (`tls.issuer: internal`), like Caddy's `tls internal`: one self-signed
 * ECDSA P-256 root, kept in the store at pki/authorities/local/root.{crt,key} (Caddy's path, so a
 * Caddy root can be imported), and a fresh short-lived leaf per issuance.
 *
 * Certificates are built with Node's crypto alone: the TBSCertificate is DER-encoded by the small
 * encoder below and signed with crypto.sign. (@peculiar/x509 cannot be loaded without a Reflect
 * metadata polyfill, which is not a dependency of this project.)
 */
import {
  X509Certificate,
  createHash,
  generateKeyPair,
  randomBytes,
  sign,
  type KeyObject,
} from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type { Logger } from '../../observe/log';
import { systemClock, type Clock } from '../clock';
import { parseCertificateChain, parsePrivateKey } from '../../pki/pem';
import { checkKeyMatches } from '../../pki/x509';
import { ME_LOCAL_CA_REQUEST, ME_LOCAL_CA_ROOT_EXPIRED, ME_LOCAL_CA_ROOT_KEY_MISSING, ME_LOCAL_CA_ROOT_NOT_CA } from '../../errors';
import { LOCAL_CA_KEYS } from '../../store/keys';
import type { Storage } from '../../store/storage';

const generateKeyPairAsync = promisify(generateKeyPair);

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
export const ROOT_LIFETIME_MS = 3650 * DAY;
/** Leaves start this much in the past so clients with a slightly slow clock accept them. */
export const LEAF_BACKDATE_MS = 5 * MINUTE;

export interface IssuedCertificate {
  /** PEM chain: the leaf only (clients trust the root). */
  readonly certPem: string;
  /** PEM PKCS#8 private key of the leaf. */
  readonly keyPem: string;
}

export class LocalCa {
  /** Where the root certificate PEM is (its path in the file storage): what testers add to their trust store. */
  readonly rootPemPath: string;
  readonly rootPem: string;
  readonly root: X509Certificate;

  private constructor(
    private readonly rootKey: KeyObject,
    rootPem: string,
    rootPemPath: string,
    private readonly rootSubjectDer: Buffer,
    private readonly rootKeyId: Buffer | null,
    private readonly clock: Clock,
  ) {
    this.rootPem = rootPem;
    this.rootPemPath = rootPemPath;
    this.root = new X509Certificate(rootPem);
  }

  /** Loads the root from the storage, or creates it (once) when there is none. */
  static async open(storage: Storage, log: Logger, clock: Clock = systemClock): Promise<LocalCa> {
    const certPath = storage.describe(LOCAL_CA_KEYS.cert);
    const keyPath = storage.describe(LOCAL_CA_KEYS.key);
    let certPem: string;
    let keyPem: string;
    const existing = await storage.load(LOCAL_CA_KEYS.cert);
    if (existing === null) {
      ({ certPem, keyPem } = await createRoot(clock.now()));
      // Key first: an interrupted creation leaves a key without a certificate, which is redone.
      await storage.store(LOCAL_CA_KEYS.key, keyPem, { secret: true });
      await storage.store(LOCAL_CA_KEYS.cert, certPem, { secret: false });
      log.info({ root: certPath }, 'created the local CA root certificate');
    } else {
      certPem = existing.toString('utf8');
      const key = await storage.load(LOCAL_CA_KEYS.key);
      if (key === null) throw new ME_LOCAL_CA_ROOT_KEY_MISSING(certPath, keyPath);
      keyPem = key.toString('utf8');
    }

    const root = parseCertificateChain(certPem, certPath)[0]!;
    const rootKey = parsePrivateKey(keyPem, keyPath);
    checkKeyMatches(root, rootKey, certPath, keyPath);
    if (!root.ca) throw new ME_LOCAL_CA_ROOT_NOT_CA(certPath);
    const notAfter = root.validToDate.getTime();
    if (notAfter <= clock.now()) {
      throw new ME_LOCAL_CA_ROOT_EXPIRED(certPath, root.validToDate.toISOString(), certPath, keyPath);
    }
    if (notAfter - clock.now() < 30 * DAY) {
      log.warn({ root: certPath, notAfter: root.validToDate.toISOString() }, 'the local CA root expires within 30 days');
    }
    const { subject, subjectKeyId } = inspectCertificate(root.raw);
    const onlyRootPem = root.toString();
    return new LocalCa(rootKey, onlyRootPem, certPath, subject, subjectKeyId, clock);
  }

  /**
   * Issues a fresh ECDSA P-256 leaf for `names` (DNS names or IP literals; the first becomes the
   * CN), valid from now − 5 min for `lifetimeMs` (never past the root's expiry), for serverAuth.
   */
  async issue(names: readonly string[], lifetimeMs: number): Promise<IssuedCertificate> {
    if (names.length === 0) throw new ME_LOCAL_CA_REQUEST('a certificate needs at least one name');
    if (!(lifetimeMs > 0)) throw new ME_LOCAL_CA_REQUEST(`leaf lifetime ${lifetimeMs} ms is not positive`);
    const now = this.clock.now();
    const notBefore = now - LEAF_BACKDATE_MS;
    const notAfter = Math.min(now + lifetimeMs, this.root.validToDate.getTime());

    const { publicKey, privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const extensions = [
      extension(OID.basicConstraints, true, seq()),
      extension(OID.keyUsage, true, keyUsageBits([KU_DIGITAL_SIGNATURE])),
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
      extension(OID.subjectAltName, false, seq(...names.map(generalName))),
      extension(OID.subjectKeyIdentifier, false, octetString(keyIdOf(spki))),
    ];
    if (this.rootKeyId !== null) {
      extensions.push(extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, this.rootKeyId))));
    }
    const der = buildCertificate({
      serial: randomSerial(),
      issuer: this.rootSubjectDer,
      subject: nameDer(names[0]!),
      notBefore,
      notAfter,
      spki,
      extensions,
      signingKey: this.rootKey,
    });
    return {
      certPem: toPem('CERTIFICATE', der),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    };
  }
}

async function createRoot(now: number): Promise<{ certPem: string; keyPem: string }> {
  const { publicKey, privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const year = new Date(now).getUTCFullYear();
  const subject = nameDer(`matrix-edge Local Authority - ${year} ECC Root`);
  const der = buildCertificate({
    serial: randomSerial(),
    issuer: subject,
    subject,
    notBefore: now,
    notAfter: now + ROOT_LIFETIME_MS,
    spki,
    extensions: [
      extension(OID.basicConstraints, true, seq(derBoolean(true))),
      extension(OID.keyUsage, true, keyUsageBits([KU_KEY_CERT_SIGN, KU_CRL_SIGN])),
      extension(OID.subjectKeyIdentifier, false, octetString(keyIdOf(spki))),
    ],
    signingKey: privateKey,
  });
  return {
    certPem: toPem('CERTIFICATE', der),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

// ---------------------------------------------------------------------------------------------
// X.509 (RFC 5280) building blocks: a minimal DER encoder and reader.

const OID = {
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  ed25519: '1.3.101.112',
} as const;

const KU_DIGITAL_SIGNATURE = 0;
const KU_KEY_CERT_SIGN = 5;
const KU_CRL_SIGN = 6;

function tlv(tag: number, content: Buffer): Buffer {
  const len = content.length;
  let header: Buffer;
  if (len < 0x80) {
    header = Buffer.from([tag, len]);
  } else {
    const bytes: number[] = [];
    for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
    header = Buffer.from([tag, 0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([header, content]);
}

const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const octetString = (content: Buffer): Buffer => tlv(0x04, content);
const bitString = (content: Buffer, unusedBits = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), content]));
const derBoolean = (value: boolean): Buffer => tlv(0x01, Buffer.from([value ? 0xff : 0x00]));
const explicit = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);

/** A non-negative INTEGER from big-endian magnitude bytes. */
function unsignedInteger(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let bytes = magnitude.subarray(i);
  if (bytes.length === 0) bytes = Buffer.from([0]);
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(0x02, bytes);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const first = arcs[0]! * 40n + arcs[1]!;
  const out: number[] = [];
  for (const arc of [first, ...arcs.slice(2)]) {
    const groups: number[] = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) groups.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5); whole seconds. */
function time(ms: number): Buffer {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z'; // YYYYMMDDHHMMSSZ
  const year = Number(iso.slice(0, 4));
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(digits.slice(2), 'ascii'));
  return tlv(0x18, Buffer.from(digits, 'ascii'));
}

/** A Name with a single CN, as UTF8String. */
function nameDer(commonName: string): Buffer {
  return seq(set(seq(oid(OID.commonName), tlv(0x0c, Buffer.from(commonName, 'utf8')))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), derBoolean(true), octetString(value)) : seq(oid(id), octetString(value));
}

/** KeyUsage named BIT STRING with trailing zero bits removed (DER). */
function keyUsageBits(bits: number[]): Buffer {
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (highest & 7));
}

/** GeneralName: dNSName [2] for names, iPAddress [7] for IP literals. */
function generalName(name: string): Buffer {
  const family = isIP(name);
  if (family !== 0) return tlv(0x87, ipBytes(name, family));
  if (!/^[\x21-\x7e]+$/.test(name)) throw new ME_LOCAL_CA_REQUEST(`${JSON.stringify(name)} is not a DNS name`);
  return tlv(0x82, Buffer.from(name, 'ascii'));
}

function ipBytes(ip: string, family: number): Buffer {
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  let text = ip.split('%')[0]!;
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text); // ::ffff:192.0.2.1
  if (v4 !== null) {
    const [a, b, c, d] = v4.slice(2).map(Number) as [number, number, number, number];
    text = `${v4[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const halves = text.split('::');
  let groups: number[];
  if (halves.length === 1) {
    groups = parse(halves[0]!);
  } else {
    const left = parse(halves[0]!);
    const right = parse(halves[1]!);
    groups = [...left, ...new Array<number>(Math.max(0, 8 - left.length - right.length)).fill(0), ...right];
  }
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) {
    throw new Error(`local CA: cannot encode IPv6 address ${ip}`);
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** Method (1) of RFC 5280 4.2.1.2: SHA-1 of the subjectPublicKey BIT STRING's bytes. */
function keyIdOf(spki: Buffer): Buffer {
  const outer = readTlv(spki, 0);
  const [, key] = children(spki, outer);
  if (key === undefined || key.tag !== 0x03) throw new Error('local CA: malformed SubjectPublicKeyInfo');
  return createHash('sha1').update(spki.subarray(key.start + key.headerLength + 1, key.end)).digest();
}

/** 16 random bytes with the top bit clear: a positive 128-bit serial (RFC 5280 allows 20 octets). */
function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes;
}

function signatureAlgorithm(key: KeyObject): { algorithm: Buffer; digest: string | null } {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'secp384r1') return { algorithm: seq(oid(OID.ecdsaWithSha384)), digest: 'sha384' };
    if (curve === 'secp521r1') return { algorithm: seq(oid(OID.ecdsaWithSha512)), digest: 'sha512' };
    return { algorithm: seq(oid(OID.ecdsaWithSha256)), digest: 'sha256' };
  }
  if (type === 'rsa') return { algorithm: seq(oid(OID.sha256WithRsa), tlv(0x05, Buffer.alloc(0))), digest: 'sha256' };
  if (type === 'ed25519') return { algorithm: seq(oid(OID.ed25519)), digest: null };
  throw new Error(`local CA: cannot sign with a ${type ?? 'unknown'} key`);
}

interface CertificateFields {
  readonly serial: Buffer;
  readonly issuer: Buffer;
  readonly subject: Buffer;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly spki: Buffer;
  readonly extensions: readonly Buffer[];
  readonly signingKey: KeyObject;
}

function buildCertificate(f: CertificateFields): Buffer {
  const { algorithm, digest } = signatureAlgorithm(f.signingKey);
  const tbs = seq(
    explicit(0, unsignedInteger(Buffer.from([2]))), // v3
    unsignedInteger(f.serial),
    algorithm,
    f.issuer,
    seq(time(f.notBefore), time(f.notAfter)),
    f.subject,
    f.spki,
    explicit(3, seq(...f.extensions)),
  );
  const signature = sign(digest, tbs, f.signingKey); // ECDSA: DER Ecdsa-Sig-Value
  return seq(tbs, algorithm, bitString(signature));
}

function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly headerLength: number;
  readonly end: number;
}

function readTlv(buf: Buffer, start: number): Tlv {
  if (start + 2 > buf.length) throw new Error('DER: truncated');
  const tag = buf[start]!;
  let len = buf[start + 1]!;
  let headerLength = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + 2 + n > buf.length) throw new Error('DER: bad length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + 2 + i]!;
    headerLength += n;
  }
  const end = start + headerLength + len;
  if (end > buf.length) throw new Error('DER: truncated');
  return { tag, start, headerLength, end };
}

function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.start + parent.headerLength; p < parent.end; ) {
    const t = readTlv(buf, p);
    out.push(t);
    p = t.end;
  }
  return out;
}

/**
 * The subject Name (exact DER, to become the leaves' issuer) and the SubjectKeyIdentifier (for their
 * AuthorityKeyIdentifier) of a certificate — ours or one imported from Caddy.
 */
function inspectCertificate(der: Buffer): { subject: Buffer; subjectKeyId: Buffer | null } {
  const cert = readTlv(der, 0);
  const tbs = children(der, cert)[0];
  if (tbs === undefined) throw new Error('DER: certificate without TBSCertificate');
  const fields = children(der, tbs);
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0; // optional [0] version
  // serial, signature, issuer, validity, subject, spki, then optional [1] [2] [3]
  const subject = fields[offset + 4];
  if (subject === undefined) throw new Error('DER: certificate without subject');
  let subjectKeyId: Buffer | null = null;
  const extField = fields.slice(offset + 6).find((t) => t.tag === 0xa3);
  if (extField !== undefined) {
    const list = children(der, extField)[0];
    for (const ext of list === undefined ? [] : children(der, list)) {
      const parts = children(der, ext);
      const id = parts[0];
      const value = parts[parts.length - 1];
      if (id === undefined || value === undefined) continue;
      if (!der.subarray(id.start, id.end).equals(oid(OID.subjectKeyIdentifier))) continue;
      const inner = readTlv(der, value.start + value.headerLength);
      if (inner.tag === 0x04) subjectKeyId = Buffer.from(der.subarray(inner.start + inner.headerLength, inner.end));
    }
  }
  return { subject: Buffer.from(der.subarray(subject.start, subject.end)), subjectKeyId };
}
