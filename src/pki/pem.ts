/**
 * PEM parsing: certificate chains and private keys, with errors that name where the text came
 * from (`label`, usually a file path). A leaf module anyone may import.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { ME_PEM_BAD_CERTIFICATE, ME_PEM_BAD_KEY, ME_PEM_EMPTY, ME_PEM_NO_CERTIFICATE, ME_PEM_NO_KEY, errorMessage } from '../errors';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Parses every PEM CERTIFICATE block of `pem`, leaf first. */
export function parseCertificateChain(pem: string, label: string): X509Certificate[] {
  if (pem.trim().length === 0) throw new ME_PEM_EMPTY(label);
  const blocks = pem.match(PEM_CERT);
  if (blocks === null) throw new ME_PEM_NO_CERTIFICATE(label);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new ME_PEM_BAD_CERTIFICATE(label, i + 1, errorMessage(err));
    }
  });
}

/** Parses a PEM private key (PKCS#8, SEC1 or PKCS#1). */
export function parsePrivateKey(pem: string, label: string): KeyObject {
  if (pem.trim().length === 0) throw new ME_PEM_EMPTY(label);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new ME_PEM_NO_KEY(label);
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new ME_PEM_BAD_KEY(label, errorMessage(err));
  }
}
