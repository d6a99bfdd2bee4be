/** Private keys for ACME accounts and certificates. */
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyType } from '../../../config/plan';

const generateKeyPairAsync = promisify(generateKeyPair);

/** A fresh private key (PKCS#8 PEM) of the configured type. */
export async function generateCertificateKey(type: KeyType): Promise<string> {
  const pair =
    type === 'p256' || type === 'p384'
      ? await generateKeyPairAsync('ec', { namedCurve: type === 'p256' ? 'P-256' : 'P-384' })
      : await generateKeyPairAsync('rsa', { modulusLength: type === 'rsa2048' ? 2048 : 4096 });
  return pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}
