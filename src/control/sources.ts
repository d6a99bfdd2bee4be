/**
 * Picks the certificate source the plan asks for (`tls.issuer`) and wires it to the store, the
 * clock and the logger.
 */
import type { Plan } from '../config/plan';
import type { Logger } from '../observe/log';
import type { ControlToData, Send } from '../plane/messages';
import { FileStore } from '../store/fs-store';
import { systemClock, type Clock } from './clock';
import { FilesSource } from './files-source';
import { AcmeIssuer } from './issuers/acme';
import { LocalCa } from './issuers/local-ca';
import { ManagedSource } from './managed-source';
import type { CertificateSource } from './source';

export interface CertificateSourceSetup {
  readonly source: CertificateSource;
  /** Lines worth printing at start, e.g. where the local CA's root certificate is. */
  readonly notes: string[];
}

/**
 * @param send where challenge answers (ACME) go: the data plane. Required for `tls.issuer: acme`.
 */
export async function createCertificateSource(
  plan: Plan,
  log: Logger,
  clock: Clock = systemClock,
  send?: Send<ControlToData>,
): Promise<CertificateSourceSetup> {
  const tls = plan.tls;
  switch (tls.issuer) {
    case 'internal': {
      const store = new FileStore(plan.storage);
      const ca = await LocalCa.open(store, log.child({ issuer: 'local' }), clock);
      const lifetimeMs = tls.leafLifetimeSeconds * 1000;
      const source = new ManagedSource({
        names: plan.names,
        store,
        issuer: { id: 'local', issue: (names) => ca.issue(names, lifetimeMs) },
        log,
        clock,
      });
      return {
        source,
        notes: [`local CA root: ${ca.rootPemPath} — trust it to verify this edge`],
      };
    }
    case 'files': {
      const source = new FilesSource({
        names: plan.names,
        files: tls.files,
        reloadIntervalMs: tls.reloadIntervalSeconds * 1000,
        log,
        clock,
      });
      const every = tls.reloadIntervalSeconds > 0 ? `, checked for changes every ${tls.reloadIntervalSeconds} s` : '';
      return {
        source,
        notes: [`certificates from ${tls.files.length} file pair(s) in tls.files${every}`],
      };
    }
    case 'acme': {
      const acme = plan.acme;
      if (acme === null) throw new Error('tls.issuer is acme but the plan has no acme section');
      if (send === undefined) throw new Error('tls.issuer acme needs a channel to the data plane for challenge answers');
      const store = new FileStore(plan.storage);
      const issuer = await AcmeIssuer.create({
        directory: acme.directory,
        email: acme.email,
        caRoots: acme.caRoots,
        store,
        send,
        log: log.child({ issuer: 'acme' }),
      });
      const source = new ManagedSource({ names: plan.names, store, issuer, log, clock });
      return {
        source,
        notes: [`certificates from the ACME CA ${acme.directory} (storage key ${issuer.id})`],
      };
    }
    default: {
      const unknown: never = tls;
      throw new Error(`unknown tls.issuer ${JSON.stringify((unknown as { issuer: unknown }).issuer)}`);
    }
  }
}
