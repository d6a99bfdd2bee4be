/**
 * A challenge Solver (CertMagic's Solver): makes the answer to one ACME challenge available where
 * the CA will look, and withdraws it. One per challenge type; the issuer asks the solver of the
 * type it tries and never publishes an answer itself. Both kinds here publish through the plane's
 * `send`: HTTP-01 answers are served by the plain-HTTP listener, TLS-ALPN-01 certificates by the
 * HTTPS listeners, in every data-plane worker.
 */
import type { ChallengeType } from '../config/plan';
import type { ControlToData, Send } from '../plane/messages';

/** One challenge of one authorization. */
export interface Challenge {
  readonly type: ChallengeType;
  /** The identifier being validated (a DNS name or an IP literal). */
  readonly name: string;
  readonly token: string;
  readonly keyAuthorization: string;
}

export interface Solver {
  /** Publishes the answer; resolves once the CA may validate. */
  present(challenge: Challenge): Promise<void>;
  /** Withdraws the answer (whatever the validation's outcome). */
  cleanUp(challenge: Challenge): Promise<void>;
}

/** The certificate that answers a TLS-ALPN-01 challenge (RFC 8737), made by the ACME library. */
export type AlpnCertificateMaker = (name: string, keyAuthorization: string) => Promise<{ certPem: string; keyPem: string }>;

/** HTTP-01: `GET /.well-known/acme-challenge/<token>` answers the key authorization. */
export function http01Solver(send: Send<ControlToData>): Solver {
  return {
    present: async ({ token, keyAuthorization }) => send({ type: 'challenge-add', token, keyAuthorization }),
    cleanUp: async ({ token }) => send({ type: 'challenge-remove', token }),
  };
}

/** TLS-ALPN-01: a handshake for `name` offering `acme-tls/1` gets the validation certificate. */
export function tlsAlpn01Solver(send: Send<ControlToData>, makeCertificate: AlpnCertificateMaker): Solver {
  return {
    present: async ({ name, keyAuthorization }) => {
      const { certPem, keyPem } = await makeCertificate(name, keyAuthorization);
      send({ type: 'alpn-challenge-add', name, certPem, keyPem });
    },
    cleanUp: async ({ name }) => send({ type: 'alpn-challenge-remove', name }),
  };
}

/** The solver of each challenge type, publishing through the data plane. */
export function planeSolvers(send: Send<ControlToData>, makeAlpnCertificate: AlpnCertificateMaker): ReadonlyMap<ChallengeType, Solver> {
  return new Map<ChallengeType, Solver>([
    ['http-01', http01Solver(send)],
    ['tls-alpn-01', tlsAlpn01Solver(send, makeAlpnCertificate)],
  ]);
}
