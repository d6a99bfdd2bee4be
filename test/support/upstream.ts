/**
 * A homeserver stand-in on loopback that records exactly what reached it: request-target
 * bytes, raw headers, HTTP version and a digest of the body. Tests can replace its behaviour.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Recorded {
  readonly method: string;
  /** The request-target exactly as the upstream's parser saw it. */
  readonly target: string;
  readonly httpVersion: string;
  readonly rawHeaders: readonly string[];
  readonly headers: http.IncomingHttpHeaders;
  readonly bodyLength: number;
  readonly bodySha256: string;
}

export type Behaviour = (req: http.IncomingMessage, res: http.ServerResponse, record: () => Promise<Recorded>) => void;

/** Default: read the body, answer 200 JSON describing what arrived. */
export const echo: Behaviour = (_req, res, record) => {
  record().then(
    (r) => {
      const body = JSON.stringify(r);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    },
    // The body was cut (the edge aborted the request): nothing to answer; `cuts` has it.
    () => undefined,
  );
};

/** A request whose body never ended normally (the connection was reset or closed mid-body). */
export interface Cut {
  readonly method: string;
  readonly target: string;
}

export interface Upstream {
  readonly url: string;
  readonly port: number;
  /** Requests whose body ended normally (the upstream would have committed them). */
  readonly requests: Recorded[];
  /** Requests whose body was cut: never complete from the upstream's view. */
  readonly cuts: Cut[];
  /** Requests that have arrived (headers read) and whose exchange is not over yet. */
  readonly open: number;
  /** Connections open to the stand-in now. */
  readonly connections: number;
  behaviour: Behaviour;
  /** Resolves with the next request's record once its body has been read. */
  next(): Promise<Recorded>;
  close(): Promise<void>;
}

export async function startUpstream(host = '127.0.0.1'): Promise<Upstream> {
  const requests: Recorded[] = [];
  const cuts: Cut[] = [];
  const waiters: Array<(r: Recorded) => void> = [];
  const sockets = new Set<Socket>();
  let open = 0;
  const upstream: Upstream = {
    url: '',
    port: 0,
    requests,
    cuts,
    get open() {
      return open;
    },
    get connections() {
      return sockets.size;
    },
    behaviour: echo,
    next: () => new Promise((resolve) => waiters.push(resolve)),
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 60_000 }, (req, res) => {
    open++;
    res.once('close', () => open--);
    // complete: the parser saw the whole message (whether or not the behaviour read it).
    req.once('close', () => {
      if (!req.complete) cuts.push({ method: req.method!, target: req.url! });
    });
    let recorded: Promise<Recorded> | null = null;
    const record = (): Promise<Recorded> =>
      (recorded ??= new Promise((resolve, reject) => {
        const hash = createHash('sha256');
        let length = 0;
        req.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          length += chunk.length;
        });
        req.on('error', reject);
        req.on('end', () => {
          const r: Recorded = {
            method: req.method!,
            target: req.url!,
            httpVersion: req.httpVersion,
            rawHeaders: req.rawHeaders,
            headers: req.headers,
            bodyLength: length,
            bodySha256: hash.digest('hex'),
          };
          requests.push(r);
          waiters.shift()?.(r);
          resolve(r);
        });
      }));
    upstream.behaviour(req, res, record);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(upstream, { port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` });
  return upstream;
}
