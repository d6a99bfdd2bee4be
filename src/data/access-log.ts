/**
 * The access log and the request figures: one entry per request, when its response closes — also
 * for requests Node's parser refused before any handler saw them. A response the edge did not end
 * (the client went away, or was cut off) is 499, with the phase and cause when it was forwarded.
 */
import type { Logger } from '../observe/log';
import { logSafe } from '../observe/log-safe';
import type { Exchange, Req, Res } from './exchange';
import type { TrafficStats } from './stats';

const MAX_LOGGED_PATH = 2048;

export interface AccessRecord {
  readonly method: string | undefined;
  readonly host: string | undefined;
  readonly path: string | undefined;
  readonly status: number;
  readonly proto: string;
}

export class AccessLog {
  constructor(
    private readonly log: Logger,
    private readonly stats: TrafficStats,
  ) {}

  /** A request answered through a handler (its response has closed). */
  request(req: Req, res: Res, ex: Exchange, scheme: 'https' | 'http'): void {
    const status = res.writableEnded ? res.statusCode : 499;
    this.write(ex, {
      method: req.method,
      host: req.headers.host ?? (req.headers[':authority'] as string | undefined),
      path: req.url,
      status,
      proto: `${scheme}/${req.httpVersion}`,
    });
  }

  /** One entry and the figures for an exchange. */
  write(ex: Exchange, r: AccessRecord): void {
    this.stats.request(ex.route, r.status);
    if (ex.upstream !== null && ex.upstreamMs >= 0) this.stats.upstreamAnswered(ex.upstream, ex.upstreamMs);
    const failed = r.status >= 500 || ex.failure !== undefined;
    // The entry is built only when it is written: at level warn most requests cost no log work.
    if (!this.log.isLevelEnabled(failed ? 'warn' : 'info')) return;
    const path = r.path !== undefined && r.path.length > MAX_LOGGED_PATH ? `${r.path.slice(0, MAX_LOGGED_PATH)}…` : r.path;
    const entry = {
      method: logSafe(r.method),
      host: logSafe(r.host),
      path: logSafe(path),
      status: r.status,
      bytes: ex.bytes,
      ms: Math.round((performance.now() - ex.start) * 10) / 10,
      upstream_ms: ex.upstreamMs < 0 ? undefined : Math.round(ex.upstreamMs * 10) / 10,
      route: ex.route,
      request_id: logSafe(ex.requestId ?? undefined),
      proto: r.proto,
      peer: ex.peer,
      abort: ex.abort,
      phase: ex.phase,
      error: logSafe(ex.failure),
    };
    if (failed) this.log.warn(entry, 'request');
    else this.log.info(entry, 'request');
  }
}
