/**
 * The admin listener: plain HTTP on one address (loopback by default), for Prometheus and health
 * checks. `GET /metrics` (Prometheus text), `GET /healthz` (200 while the process runs), `GET
 * /readyz` (200 when ready, else 503 listing what is missing); anything else is a 404 Matrix error.
 */
import * as http from 'node:http';
import { isIPv6 } from 'node:net';
import type { Logger } from './log';
import type { Missing } from './readiness';

export interface AdminHandlers {
  metrics(): Promise<{ contentType: string; body: string }>;
  /** What keeps the edge from being ready (empty: ready). */
  missing(): Promise<readonly Missing[]>;
}

const BIND_PROBLEMS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'the address is already in use (another edge, or another exporter on that port?); choose another admin.listen',
  EACCES: 'permission denied (ports below 1024 need root); choose another admin.listen',
  EADDRNOTAVAIL: 'this machine has no such address; fix admin.listen',
};

export class AdminServer {
  private constructor(
    private readonly server: http.Server,
    /** Where it listens (the actual port when 0 was asked for). */
    readonly address: { readonly address: string; readonly port: number },
  ) {}

  /** Binds `host:port`; rejects with a one-line reason (naming admin.listen) when it cannot. */
  static async listen(host: string, port: number, handlers: AdminHandlers, log: Logger): Promise<AdminServer> {
    const server = http.createServer((req, res) => {
      void answer(req, res, handlers).catch((err: unknown) => {
        log.error({ err: String((err as { message?: unknown } | null)?.message ?? err), path: req.url }, 'admin request failed');
        if (!res.headersSent) json(res, 500, { errcode: 'M_UNKNOWN', error: 'internal error' });
        else res.destroy();
      });
    });
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const where = isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
        reject(new Error(`cannot listen for admin (metrics, health) on ${where}: ${BIND_PROBLEMS[err.code ?? ''] ?? err.message}`));
      });
      server.listen({ host, port, ipv6Only: isIPv6(host) }, () => resolve());
    });
    server.on('error', (err) => log.error({ err: err.message }, 'admin listener error'));
    const bound = server.address();
    const actual = typeof bound === 'object' && bound !== null ? bound.port : port;
    log.info({ address: host, port: actual, paths: ['/metrics', '/healthz', '/readyz'] }, 'admin listener serving metrics and health');
    return new AdminServer(server, { address: host, port: actual });
  }

  /** Stops listening and closes every connection (scrapes are short). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function answer(req: http.IncomingMessage, res: http.ServerResponse, handlers: AdminHandlers): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') return json(res, 404, notFound(req));
  switch (path) {
    case '/metrics': {
      const { contentType, body } = await handlers.metrics();
      return send(res, 200, contentType, body);
    }
    case '/healthz':
      return json(res, 200, { status: 'ok' });
    case '/readyz': {
      const missing = await handlers.missing();
      return json(res, missing.length === 0 ? 200 : 503, missing.length === 0 ? { status: 'ready' } : { status: 'not ready', missing });
    }
    default:
      return json(res, 404, notFound(req));
  }
}

function notFound(req: http.IncomingMessage): { errcode: string; error: string } {
  return { errcode: 'M_NOT_FOUND', error: `no ${req.method} ${(req.url ?? '/').split('?')[0]} here; the admin listener serves GET /metrics, /healthz and /readyz` };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  send(res, status, 'application/json', JSON.stringify(body));
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
