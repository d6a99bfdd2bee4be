/**
 * The certificate a federation address presents, judged as a peer would: TLS 1.2 or newer, valid
 * now, valid for the expected name, and a chain from it to a trusted root built only from what
 * the server sent (no AIA fetching, as Synapse and Dendrite do not fetch either). Pure.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { failed, passed, type Verdict } from './report';

export interface Handshake {
  /** What the server sent, leaf first (as Node links it; may end with the trusted root it found). */
  readonly served: readonly X509Certificate[];
  /** Negotiated protocol, e.g. "TLSv1.3". */
  readonly protocol: string | null;
}

function commonName(dn: string): string {
  const cn = dn.split('\n').find((line) => line.startsWith('CN='));
  return cn === undefined ? dn.replace(/\n/g, ', ') : cn.slice(3);
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

const FULL_CHAIN = 'serve the full chain: the certificate followed by its intermediates (fullchain.pem, not cert.pem)';

/** The chain from the leaf to a trusted root, or the verdict saying where it breaks. */
function chainTo(served: readonly X509Certificate[], trusted: readonly X509Certificate[]): string[] | Verdict {
  const leaf = served[0]!;
  const path = [commonName(leaf.subject)];
  const seen = new Set([leaf.fingerprint256]);
  for (let cur = leaf; ; ) {
    const root = trusted.find((t) => issuedBy(cur, t));
    if (root !== undefined) {
      if (root.fingerprint256 !== cur.fingerprint256) path.push(commonName(root.subject));
      path[path.length - 1] += ' (trusted)';
      return path;
    }
    const next = served.find((c) => !seen.has(c.fingerprint256) && issuedBy(cur, c));
    if (next === undefined) {
      if (issuedBy(cur, cur)) {
        const what = cur === leaf ? 'the certificate is self-signed' : `the chain ends at the root ${commonName(cur.subject)}`;
        return failed(`${what}, which is not a trusted root`, 'use a certificate from a publicly trusted CA (pass --ca-file to trust a private one)');
      }
      if (cur === leaf) {
        return failed(`missing intermediate: the certificate's issuer (${commonName(leaf.issuer)}) is neither in the served chain nor a trusted root`, FULL_CHAIN);
      }
      return failed(`the chain ends at ${commonName(cur.subject)}, whose issuer ${commonName(cur.issuer)} is neither served nor a trusted root`, FULL_CHAIN);
    }
    seen.add(next.fingerprint256);
    path.push(commonName(next.subject));
    cur = next;
  }
}

export function judgeHandshake(hs: Handshake, trusted: readonly X509Certificate[], name: string, nowMs: number): Verdict {
  if (hs.protocol !== 'TLSv1.2' && hs.protocol !== 'TLSv1.3') {
    return failed(`negotiated ${hs.protocol ?? 'an unknown protocol'}`, 'allow TLS 1.2 and 1.3 only');
  }
  const leaf = hs.served[0];
  if (leaf === undefined) return failed('the server presented no certificate', 'configure a certificate for this listener');
  const covered = isIP(name) !== 0 ? leaf.checkIP(name) : leaf.checkHost(name);
  if (covered === undefined) {
    return failed(
      `the certificate is for ${leaf.subjectAltName ?? commonName(leaf.subject)}, not ${name}`,
      `serve a certificate whose subjectAltName covers ${name} (matrix-edge: make ${name} its hostname or server_name, so it gets one)`,
    );
  }
  if (leaf.validToDate.getTime() <= nowMs) {
    return failed(`the certificate expired on ${leaf.validToDate.toISOString()}`, 'renew it (matrix-edge: matrix-edge renew --force; tls.files: replace the files)');
  }
  if (leaf.validFromDate.getTime() > nowMs) {
    return failed(`the certificate is not valid before ${leaf.validFromDate.toISOString()}`, "check this machine's clock and the server's");
  }
  const chain = chainTo(hs.served, trusted);
  if (!Array.isArray(chain)) return chain;
  return passed(`${hs.protocol}; certificate for ${name} valid until ${leaf.validToDate.toISOString()}; chain ${chain.join(' ← ')}`);
}
