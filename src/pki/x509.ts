/**
 * Checks on X.509 leaves: does a key belong to it, does it cover a name. A leaf module anyone may
 * import.
 */
import type { KeyObject, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { ME_KEY_MISMATCH, ME_NOT_COVERED } from '../errors';

/** Whether `key` is the private key of `leaf`. */
export function keyMatches(leaf: X509Certificate, key: KeyObject): boolean {
  try {
    return leaf.checkPrivateKey(key);
  } catch {
    return false;
  }
}

/** Throws an error naming both sources unless `key` belongs to `leaf`. */
export function checkKeyMatches(leaf: X509Certificate, key: KeyObject, certLabel: string, keyLabel: string): void {
  if (!keyMatches(leaf, key)) throw new ME_KEY_MISMATCH(keyLabel, certLabel);
}

/**
 * Whether `leaf` is valid for `name` (a DNS name or an IP literal) by its SANs: no subject CN
 * fallback, wildcards only as a whole left-most label.
 */
export function coversName(leaf: X509Certificate, name: string): boolean {
  return isIP(name) !== 0
    ? leaf.checkIP(name) !== undefined
    : leaf.checkHost(name, { subject: 'never', partialWildcards: false }) !== undefined;
}

/** Throws an error naming `label` and the SANs unless `leaf` covers `name`. */
export function checkCovers(leaf: X509Certificate, name: string, label: string): void {
  if (!coversName(leaf, name)) throw new ME_NOT_COVERED(label, name, leaf.subjectAltName ?? 'none');
}
