/**
 * Certificate selection for the HTTPS listeners: one SecureContext per served name, chosen by
 * SNI; the first name's certificate is the default for clients that send no SNI (and for SNI
 * names the edge does not serve — it never mints a certificate for them, and the router refuses
 * their requests). Replacing a certificate affects new handshakes only: open connections keep
 * the context they negotiated, so nothing is dropped.
 */
import { constants } from 'node:crypto';
import * as tls from 'node:tls';
import type { CertificateMaterial } from '../plane/messages';

/**
 * TLS 1.3 suites, AES-128-GCM first: as safe as AES-256-GCM for this use (it is Mozilla's first
 * choice too) and cheaper per byte; OpenSSL's default order puts AES-256 first.
 */
const TLS13_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];
/** TLS 1.2: forward secrecy (ECDHE) and AEAD only — no CBC, no static RSA, no DHE. */
const TLS12_SUITES = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];
/** Key-exchange groups in order of preference: the post-quantum hybrid first, then X25519 and P-256. */
export const TLS_GROUPS = 'X25519MLKEM768:X25519:P-256';

/** TLS settings common to every context: TLS 1.2 and 1.3 only, the server's suite order, no renegotiation. */
export const TLS_BASE: tls.SecureContextOptions = Object.freeze({
  minVersion: 'TLSv1.2',
  honorCipherOrder: true,
  ciphers: [...TLS13_SUITES, ...TLS12_SUITES].join(':'),
  ecdhCurve: TLS_GROUPS,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
});

export class CertificateTable {
  private readonly contexts = new Map<string, tls.SecureContext>();
  private readonly materials = new Map<string, CertificateMaterial>();
  private readonly defaultListeners = new Set<(material: CertificateMaterial) => void>();

  /** @param defaultName the name whose certificate answers no-SNI clients (the hostname) */
  constructor(private defaultName: string) {}

  /**
   * A new plan's names: certificates of names no longer served are forgotten (their SNI gets the
   * default certificate, and the router refuses their requests); the first name becomes the default.
   */
  serveOnly(names: readonly string[]): void {
    const keep = new Set(names.map((n) => n.toLowerCase()));
    for (const name of [...this.contexts.keys()]) {
      if (keep.has(name)) continue;
      this.contexts.delete(name);
      this.materials.delete(name);
    }
    const defaultName = names[0]!.toLowerCase();
    if (defaultName === this.defaultName) return;
    this.defaultName = defaultName;
    const material = this.materials.get(defaultName);
    if (material !== undefined) for (const listener of this.defaultListeners) listener(material);
  }

  /** Install (or replace) a certificate for the names it carries. Throws on an unusable key/chain. */
  install(material: CertificateMaterial): void {
    const context = tls.createSecureContext({ ...TLS_BASE, cert: material.certPem, key: material.keyPem });
    for (const name of material.names) {
      const key = name.toLowerCase();
      this.contexts.set(key, context);
      this.materials.set(key, material);
    }
    if (material.names.some((n) => n.toLowerCase() === this.defaultName)) {
      for (const listener of this.defaultListeners) listener(material);
    }
  }

  /** Whether a handshake for `a` and one for `b` get the same certificate (each name lower case or not). */
  sameCertificate(a: string, b: string): boolean {
    const fallback = this.contexts.get(this.defaultName);
    return (this.contexts.get(a.toLowerCase()) ?? fallback) === (this.contexts.get(b.toLowerCase()) ?? fallback);
  }

  /** The material served for no-SNI clients, if installed yet. */
  defaultMaterial(): CertificateMaterial | undefined {
    return this.materials.get(this.defaultName);
  }

  /** Called whenever the default certificate changes (listeners update their own default context). */
  onDefaultChange(listener: (material: CertificateMaterial) => void): () => void {
    this.defaultListeners.add(listener);
    return () => this.defaultListeners.delete(listener);
  }

  /** The SNICallback for tls/http2 servers. */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    const ctx = this.contexts.get(servername.toLowerCase()) ?? this.contexts.get(this.defaultName);
    if (ctx === undefined) cb(new Error(`no certificate installed yet for ${servername}`));
    else cb(null, ctx);
  };
}
