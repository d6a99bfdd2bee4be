/**
 * Certificate sources: where the control plane gets the certificates it hands to the data plane.
 * `internal` (local CA), `files` (admin-provided PEM) and, later, `acme` all implement this.
 */
import type { CertificateMaterial } from '../plane/messages';

export interface CertificateSource {
  /** Storage key of this source in logs and `certs` output, e.g. "local". */
  readonly id: string;
  /**
   * Produce a certificate for every configured name, then keep them fresh. `install` is called
   * once per certificate at start and again whenever one is replaced (renewal, file change).
   * Resolves once every name has a certificate; rejects with a clear Error when one cannot be had.
   */
  start(install: (material: CertificateMaterial) => void): Promise<void>;
  /** Stop timers and watchers; never throws. */
  stop(): void;
}
