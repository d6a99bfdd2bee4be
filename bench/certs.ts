/**
 * Certificates for the scenarios without ACME: a throw-away local CA and one ECDSA P-256 leaf,
 * made with the openssl command line. The leaf covers `localhost` (the name the load tools
 * connect to: it is the one name that resolves to 127.0.0.1 here) and IP 127.0.0.1; Pebble's own
 * HTTPS uses it too. matrix-edge gets it through `tls.issuer: files`, Caddy through `tls CERT KEY`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Certs {
  /** The CA's certificate (PEM): what clients trust. */
  readonly caFile: string;
  /** The leaf certificate (PEM), served by both servers. */
  readonly certFile: string;
  /** The leaf's private key (PKCS#8 PEM). */
  readonly keyFile: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeCerts(dir: string, names: readonly string[] = ['localhost']): Certs {
  fs.mkdirSync(dir, { recursive: true });
  const p256 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  openssl(['genpkey', ...p256, '-out', 'ca.key'], dir);
  openssl(
    [
      'req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', '3',
      '-subj', '/CN=matrix-edge bench CA',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-out', 'ca.crt',
    ],
    dir,
  );
  openssl(['genpkey', ...p256, '-out', 'leaf.key'], dir);
  openssl(['req', '-new', '-key', 'leaf.key', '-subj', `/CN=${names[0]}`, '-out', 'leaf.csr'], dir);
  const san = [...names.map((n) => `DNS:${n}`), 'IP:127.0.0.1'].join(',');
  fs.writeFileSync(
    path.join(dir, 'leaf.ext'),
    [
      `subjectAltName=${san}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      '',
    ].join('\n'),
  );
  openssl(
    ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-sha256', '-days', '3', '-extfile', 'leaf.ext', '-out', 'leaf.crt'],
    dir,
  );
  fs.chmodSync(path.join(dir, 'leaf.key'), 0o600);
  return { caFile: path.join(dir, 'ca.crt'), certFile: path.join(dir, 'leaf.crt'), keyFile: path.join(dir, 'leaf.key') };
}
