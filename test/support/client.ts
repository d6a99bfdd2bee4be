/** Real TLS clients for tests: HTTP/1.1 (node:https), HTTP/2 (node:http2) and raw bytes over TLS. */
import * as http2 from 'node:http2';
import * as https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface RequestOptions {
  readonly port: number;
  readonly ca: string;
  /** The request-target, sent byte for byte. */
  readonly path: string;
  readonly method?: string;
  readonly host?: string;
  /** SNI; default "localhost". Pass null for no SNI. */
  readonly servername?: string | null;
  /** Host header; default `localhost:<port>`. */
  readonly hostHeader?: string;
  readonly headers?: Record<string, string | string[]>;
  readonly body?: Buffer | string | Readable;
  readonly agent?: https.Agent | false;
  /** The client's own address (any 127.x.x.x is this machine: several clients with their own addresses). */
  readonly localAddress?: string;
}

function reply(status: number, headers: IncomingHttpHeaders, rawHeaders: string[], body: Buffer): Reply {
  return { status, headers, rawHeaders, body, json: <T>() => JSON.parse(body.toString('utf8')) as T };
}

export function request(o: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      host: o.host ?? '127.0.0.1',
      port: o.port,
      method: o.method ?? 'GET',
      path: o.path,
      ca: o.ca,
      servername: o.servername === null ? '' : (o.servername ?? 'localhost'),
      headers: { ...o.headers, host: o.hostHeader ?? `localhost:${o.port}` },
      agent: o.agent ?? false,
      ...(o.localAddress === undefined ? {} : { localAddress: o.localAddress }),
    };
    const req = https.request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(reply(res.statusCode!, res.headers, res.rawHeaders, Buffer.concat(chunks))));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (o.body instanceof Readable) o.body.pipe(req);
    else req.end(o.body);
  });
}

export interface H2Options extends Omit<RequestOptions, 'hostHeader' | 'agent'> {
  /** :authority; default `localhost:<port>`. */
  readonly authority?: string;
  readonly session?: http2.ClientHttp2Session;
}

export function connectH2(port: number, ca: string, servername = 'localhost', host = '127.0.0.1', localAddress?: string): http2.ClientHttp2Session {
  return http2.connect(`https://${host}:${port}`, { ca, servername, ...(localAddress === undefined ? {} : { localAddress }) });
}

export function h2request(o: H2Options): Promise<Reply> {
  const session = o.session ?? connectH2(o.port, o.ca, o.servername ?? 'localhost', o.host);
  return new Promise<Reply>((resolve, reject) => {
    const stream = session.request({
      ':method': o.method ?? 'GET',
      ':path': o.path,
      ':authority': o.authority ?? `localhost:${o.port}`,
      ...o.headers,
    });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader = {};
    stream.on('response', (h) => (head = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const { ':status': status, ...rest } = head;
      resolve(reply(Number(status), rest as IncomingHttpHeaders, [], Buffer.concat(chunks)));
    });
    stream.on('error', reject);
    if (o.body instanceof Readable) o.body.pipe(stream);
    else stream.end(o.body);
  }).finally(() => {
    if (o.session === undefined) session.close();
  });
}

/** Send raw bytes over TLS and collect everything the server sends until it closes or `idleMs` passes. */
export function rawTls(port: number, ca: string, bytes: string | Buffer, idleMs = 1000, servername = 'localhost'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, ALPNProtocols: ['http/1.1'] }, () => socket.write(bytes));
    const chunks: Buffer[] = [];
    const done = (): void => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    let timer = setTimeout(done, idleMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      clearTimeout(timer);
      timer = setTimeout(done, idleMs);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      done();
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The certificate a handshake with this SNI (null: none) presents, and the negotiated facts. */
export function handshake(
  port: number,
  opts: { servername: string | null; ca?: string; minVersion?: tls.SecureVersion; maxVersion?: tls.SecureVersion; alpn?: string[] },
): Promise<{ cert: tls.PeerCertificate; authorized: boolean; authorizationError: Error | null; alpn: string | false | null; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port,
        ...(opts.servername === null ? {} : { servername: opts.servername }),
        ca: opts.ca,
        rejectUnauthorized: false,
        minVersion: opts.minVersion,
        maxVersion: opts.maxVersion,
        ALPNProtocols: opts.alpn ?? ['h2', 'http/1.1'],
      },
      () => {
        const result = {
          cert: socket.getPeerCertificate(),
          authorized: socket.authorized,
          authorizationError: socket.authorizationError ?? null,
          alpn: socket.alpnProtocol,
          protocol: socket.getProtocol(),
        };
        socket.end();
        resolve(result);
      },
    );
    socket.on('error', reject);
  });
}

export interface KeptAliveAnswer {
  readonly status: number;
  /** Header names in lower case (the last of repeated ones). */
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * One kept-alive HTTPS/1.1 connection with a minimal client: requests go one after another on the
 * same socket (to show which connection — and so which worker — answers, and that it survives).
 */
export class KeepAliveConn {
  private buffered = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  closed = false;
  readonly ready: Promise<void>;

  constructor(
    readonly socket: tls.TLSSocket,
    /** A label the test chooses. */
    readonly id = 0,
  ) {
    this.ready = new Promise((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => undefined);
  }

  /** `ca` null: the certificate is not verified (to look at what a name no longer served gets). */
  static open(port: number, ca: string | null, o: { servername?: string; id?: number } = {}): KeepAliveConn {
    const verify = ca === null ? { rejectUnauthorized: false } : { ca };
    const socket = tls.connect({ host: '127.0.0.1', port, servername: o.servername ?? 'localhost', ALPNProtocols: ['http/1.1'], ...verify });
    return new KeepAliveConn(socket, o.id);
  }

  leaf(): X509Certificate {
    return new X509Certificate(this.socket.getPeerCertificate().raw);
  }

  /** GET on this connection (answers come in order); null when the connection ended first. */
  async get(target: string, host = 'localhost'): Promise<KeptAliveAnswer | null> {
    if (this.closed) return null;
    this.socket.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    for (;;) {
      const end = this.buffered.indexOf('\r\n\r\n');
      if (end !== -1) {
        const [statusLine, ...lines] = this.buffered.subarray(0, end).toString('latin1').split('\r\n');
        const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        const length = Number(headers['content-length'] ?? 0);
        if (this.buffered.length >= end + 4 + length) {
          const body = this.buffered.subarray(end + 4, end + 4 + length).toString('utf8');
          this.buffered = this.buffered.subarray(end + 4 + length);
          return { status: Number(statusLine!.split(' ')[1]), headers, body };
        }
      }
      if (this.closed) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
