/**
 * The plain-HTTP listener's one job besides ACME HTTP-01: send everyone to HTTPS with a 301
 * (Synapse does not follow 308), keeping host and request-target.
 */
import type { Exchange, Req, Res } from '../exchange';
import { hostOf } from '../paths';
import { sendMatrixError } from './errors';

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

export class PlainHttpHandler {
  /**
   * @param names     served host names (lower case)
   * @param httpsPort the port redirects point at (443 is left out of the Location)
   * @param challenges HTTP-01 tokens → key authorizations, kept current by the control plane
   */
  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly httpsPort: number,
    private readonly challenges: ReadonlyMap<string, string>,
  ) {}

  handle(req: Req, res: Res, ex: Exchange): void {
    const target = req.url ?? '';
    const authority = req.headers.host;
    const host = authority === undefined ? null : hostOf(authority);
    if (target.charCodeAt(0) !== 47 /* / */) {
      sendMatrixError(req, res, ex, 400, 'M_UNRECOGNIZED', 'Only origin-form request targets are accepted: this is not a forward proxy');
      return;
    }
    if (host === null) {
      sendMatrixError(req, res, ex, 400, 'M_UNRECOGNIZED', 'Missing or malformed Host header');
      return;
    }
    if (!this.names.has(host)) {
      sendMatrixError(req, res, ex, 421, 'M_UNRECOGNIZED', `This server does not serve the host '${host}'`);
      return;
    }
    if (target.startsWith(CHALLENGE_PREFIX)) {
      ex.route = 'acme-http-01';
      const keyAuthorization = this.challenges.get(target.slice(CHALLENGE_PREFIX.length));
      if (keyAuthorization === undefined) {
        sendMatrixError(req, res, ex, 404, 'M_NOT_FOUND', 'No such ACME challenge');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(keyAuthorization) });
      ex.bytes += Buffer.byteLength(keyAuthorization);
      res.end(keyAuthorization);
      return;
    }
    ex.route = 'redirect';
    const hostPart = host.indexOf(':') === -1 ? host : `[${host}]`;
    const port = this.httpsPort === 443 ? '' : `:${this.httpsPort}`;
    res.writeHead(301, { location: `https://${hostPart}${port}${target}`, 'content-length': 0 });
    res.end();
  }
}
