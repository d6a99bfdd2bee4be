/**
 * Picks the certificate source the plan asks for (`tls.issuer`) and wires it to the store, the
 * clock and the logger.
 */
import type { Plan } from '../config/plan';
import { ME_ACME_FALLBACK_TWICE, ME_SOURCE_CONFIG } from '../errors';
import type { Logger } from '../observe/log';
import type { ControlToData, Send } from '../plane/messages';
import { CertificateStore } from '../store/certificate-store';
import { FileStorage } from '../store/file-storage';
import type { Storage } from '../store/storage';
import { systemClock, type Clock } from './clock';
import { FilesSource } from './files-source';
import { alpnCertificate } from './issuers/acme/client';
import { AcmeIssuer } from './issuers/acme/issuer';
import { LocalCa } from './issuers/local-ca';
import { ManagedSource } from './managed/source';
import { planeSolvers } from './solver';
import type { CertificateSource } from './source';

/** Timing knobs of managed certificates (tests shorten them; production uses the defaults). */
export interface CertificateTiming {
  readonly storePollMs?: number;
  readonly retryBaseMs?: number;
  readonly random?: () => number;
}

export interface CertificateSourceSetup {
  readonly source: CertificateSource;
  /** Lines worth printing at start, e.g. where the local CA's root certificate is. */
  readonly notes: string[];
}

/**
 * @param send where challenge answers (ACME) go: the data plane. Required for `tls.issuer: acme`.
 * @param storage where certificates, accounts and locks are kept (default: files in plan.storage).
 */
export async function createCertificateSource(
  plan: Plan,
  log: Logger,
  clock: Clock = systemClock,
  send?: Send<ControlToData>,
  timing: CertificateTiming = {},
  storage: Storage = new FileStorage(plan.storage),
): Promise<CertificateSourceSetup> {
  const tls = plan.tls;
  switch (tls.issuer) {
    case 'internal': {
      const store = new CertificateStore(storage);
      const ca = await LocalCa.open(storage, log.child({ issuer: 'local' }), clock);
      const lifetimeMs = tls.leafLifetimeSeconds * 1000;
      const source = new ManagedSource({
        ...timing,
        names: plan.names,
        store,
        issuers: [{ id: 'local', issue: (names) => ca.issue(names, lifetimeMs) }],
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
      if (acme === null) throw new ME_SOURCE_CONFIG('tls.issuer is acme but the plan has no acme section');
      if (send === undefined) throw new ME_SOURCE_CONFIG('tls.issuer acme needs a channel to the data plane for challenge answers');
      const store = new CertificateStore(storage);
      const solvers = planeSolvers(send, alpnCertificate);
      const issuers: AcmeIssuer[] = [];
      for (const ca of [acme, ...acme.fallbacks]) {
        const issuer = await AcmeIssuer.create({
          directory: ca.directory,
          email: ca.email,
          caRoots: ca.caRoots,
          eab: ca.eab,
          profile: ca.profile,
          challenges: acme.challenges,
          keyType: acme.keyType,
          storage,
          solvers,
          log: log.child({ issuer: 'acme' }),
        });
        if (issuers.some((i) => i.id === issuer.id)) throw new ME_ACME_FALLBACK_TWICE(ca.directory);
        issuers.push(issuer);
      }
      const source = new ManagedSource({ ...timing, names: plan.names, store, issuers, log, clock, background: true });
      const fallbacks = issuers.slice(1).map((i) => i.id);
      return {
        source,
        notes: [
          `certificates from the ACME CA ${acme.directory} (storage key ${issuers[0]!.id}; challenges ${acme.challenges.join(', ')})` +
            (fallbacks.length > 0 ? `; fallback CAs ${fallbacks.join(', ')}` : ''),
        ],
      };
    }
    default: {
      const unknown: never = tls;
      throw new ME_SOURCE_CONFIG(`unknown tls.issuer ${JSON.stringify((unknown as { issuer: unknown }).issuer)}`);
    }
  }
}
