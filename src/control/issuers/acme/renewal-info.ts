/**
 * ACME Renewal Information (RFC 9773) from the CA: the suggested renewal window of a certificate,
 * and when to ask again. The pure parts (certID, parsing, Retry-After) are in control/ari.ts.
 */
import type { X509Certificate } from 'node:crypto';
import type * as acme from 'acme-client';
import { ME_ACME_ANSWER, ME_ACME_RENEWAL_INFO, errorMessage } from '../../../errors';
import type { Logger } from '../../../observe/log';
import { ariCertId, parseRenewalInfo, retryAfterMs, type RenewalWindow } from '../../ari';
import type { RenewalAdvice } from '../../issuer';
import { directoryField, type AcmeCalls } from './client';

/** Without a Retry-After, ask again within a few hours (RFC 9773). */
const DEFAULT_RECHECK_MS = 6 * 3600_000;

/** The CA's window for `leaf`, or null when the CA offers no renewal information. Throws when it cannot be asked. */
export async function fetchRenewalInfo(
  calls: AcmeCalls,
  client: acme.Client,
  leaf: X509Certificate,
  log: { readonly logger: Logger; readonly issuer: string },
): Promise<RenewalAdvice | null> {
  const base = await directoryField(calls, client, 'renewalInfo');
  if (typeof base !== 'string') return null;
  let certId: string;
  try {
    certId = ariCertId(leaf.raw);
  } catch (err) {
    log.logger.debug({ issuer: log.issuer, err: errorMessage(err) }, 'no ARI certificate id (no authority key identifier)');
    return null;
  }
  const url = `${base.replace(/\/+$/, '')}/${certId}`;
  const response = await calls.step(`fetching renewal information ${url}`, async () => {
    const r = await calls.get(url);
    if (r.status !== 200) throw new ME_ACME_ANSWER(r.status);
    return r;
  });
  let window: RenewalWindow;
  try {
    window = parseRenewalInfo(response.data);
  } catch (err) {
    throw new ME_ACME_RENEWAL_INFO(url, errorMessage(err));
  }
  const header = response.headers['retry-after'];
  return { window, retryAfterMs: retryAfterMs(typeof header === 'string' ? header : undefined, Date.now(), DEFAULT_RECHECK_MS) };
}
