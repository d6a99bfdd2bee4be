/** What an HTTPS listener presents for an SNI name: the leaf, or the whole chain with its verification. */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';

export interface ServedChain {
  /** Whether the chain verified against the `ca` given. */
  readonly authorized: boolean;
  readonly error: string | null;
  /** Leaf first. */
  readonly chain: X509Certificate[];
}

/** One handshake with this SNI: the presented chain (leaf first), and whether it verified against `ca`. */
export function servedChain(port: number, servername: string, ca: string): Promise<ServedChain> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const chain: X509Certificate[] = [];
      let cert: tls.DetailedPeerCertificate | null = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (cert !== null && cert.raw !== undefined && !seen.has(cert.fingerprint256)) {
        seen.add(cert.fingerprint256);
        chain.push(new X509Certificate(cert.raw));
        cert = cert.issuerCertificate ?? null;
      }
      const result = { authorized: socket.authorized, error: socket.authorizationError == null ? null : String(socket.authorizationError), chain };
      socket.end();
      resolve(result);
    });
    socket.on('error', reject);
  });
}

/** The leaf certificate an HTTPS listener presents for an SNI name (no verification), or null when the handshake fails. */
export function servedLeaf(port: number, servername: string, timeoutMs = 3000): Promise<X509Certificate | null> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(null);
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(raw === undefined ? null : new X509Certificate(raw));
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
}

/** Polls until `port` serves a certificate for `servername` that `accept` takes (default: any covering the name). */
export async function waitForLeaf(
  port: number,
  servername: string,
  accept: (leaf: X509Certificate) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<X509Certificate> {
  const deadline = Date.now() + timeoutMs;
  let last: X509Certificate | null = null;
  for (;;) {
    last = await servedLeaf(port, servername);
    if (last !== null && last.checkHost(servername) !== undefined && accept(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`port ${port} did not serve the expected certificate for ${servername} within ${timeoutMs} ms (last: ${last?.serialNumber ?? 'none'})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
