/**
 * Inline /.well-known/matrix/{server,client,support}: answered by the edge from the plan, never
 * forwarded, so they keep answering while the homeserver is down. JSON, CORS `*` exactly once,
 * OPTIONS preflight, Cache-Control.
 */
import type { WellKnownKind, WellKnownPlan } from '../../config/plan';
import type { Exchange, Req, Res } from '../exchange';
import { CORS_HEADERS, sendMatrixError } from './errors';

interface Prepared {
  readonly body: Buffer | null;
  readonly headers: Readonly<Record<string, string | number>>;
}

export class WellKnownHandler {
  private readonly answers: Readonly<Record<WellKnownKind, Prepared>>;
  private readonly preflight: Readonly<Record<string, string | number>>;

  constructor(plan: WellKnownPlan) {
    const cache = `public, max-age=${plan.maxAgeSeconds}`;
    const prepare = (json: string | null): Prepared => {
      const body = json === null ? null : Buffer.from(json, 'utf8');
      return {
        body,
        headers: Object.freeze({
          ...CORS_HEADERS,
          'content-type': 'application/json',
          'content-length': body?.length ?? 0,
          'cache-control': cache,
        }),
      };
    };
    this.answers = Object.freeze({ server: prepare(plan.server), client: prepare(plan.client), support: prepare(plan.support) });
    this.preflight = Object.freeze({ ...CORS_HEADERS, 'access-control-max-age': 86400, 'content-length': 0 });
  }

  handle(req: Req, res: Res, ex: Exchange, which: WellKnownKind): void {
    const method = req.method;
    if (method === 'OPTIONS') {
      res.writeHead(204, this.preflight);
      res.end();
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      sendMatrixError(req, res, ex, 405, 'M_UNRECOGNIZED', `${method} is not allowed here`, { allow: 'GET, HEAD, OPTIONS' });
      return;
    }
    const answer = this.answers[which];
    if (answer.body === null) {
      sendMatrixError(req, res, ex, 404, 'M_NOT_FOUND', `/.well-known/matrix/${which} is not configured on this server`);
      return;
    }
    res.writeHead(200, answer.headers);
    if (method === 'HEAD') {
      res.end();
    } else {
      ex.bytes += answer.body.length;
      res.end(answer.body);
    }
  }
}
