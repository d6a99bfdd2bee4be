/** The request/response types the handlers accept (HTTP/1.1 and HTTP/2 compatibility API alike). */
import type * as http from 'node:http';
import type * as http2 from 'node:http2';

export type Req = http.IncomingMessage | http2.Http2ServerRequest;

/** What the handlers use of a response; both http.ServerResponse and Http2ServerResponse fit. */
export interface Res {
  statusCode: number;
  readonly headersSent: boolean;
  readonly writableFinished: boolean;
  /** Whether end() was called (not whether the client got it all). */
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
  writeHead(statusCode: number, headers?: http.OutgoingHttpHeaders): unknown;
  setHeader(name: string, value: string): unknown;
  writeContinue(): void;
  write(chunk: Buffer | string): boolean;
  end(chunk?: Buffer | string): unknown;
  destroy(error?: Error): unknown;
  once(event: 'close' | 'drain' | 'finish', listener: () => void): unknown;
  off(event: 'close' | 'drain' | 'finish', listener: () => void): unknown;
  prependOnceListener(event: 'close', listener: () => void): unknown;
}

/** Per-request facts gathered for the access log. */
export class Exchange {
  route = '-';
  /** The id sent upstream with the request (request_id_header), when forwarded. */
  requestId: string | null = null;
  /** The upstream's name when the request is forwarded. */
  upstream: string | null = null;
  /** Milliseconds from the start of the request to the upstream's response headers; -1 when not proxied. */
  upstreamMs = -1;
  /** Response body bytes sent. */
  bytes = 0;
  /** Why the request failed, when it did (upstream error code, client abort). */
  failure: string | undefined = undefined;
  /** Why a forwarded exchange was aborted (client-gone, body-idle, …), when it was. */
  abort: string | undefined = undefined;
  /** Where a forwarded exchange was when it was aborted (queued, request, waiting, response). */
  phase: string | undefined = undefined;
  /** The client's address (IPv4-mapped IPv6 shown as IPv4), read while the socket is there. */
  readonly peer: string;
  /** @param from the request (or, for a request the parser refused, its connection as `{ socket }`) */
  constructor(
    readonly start: number,
    from: { readonly socket?: { readonly remoteAddress?: string | undefined } | null },
  ) {
    const a = from.socket?.remoteAddress ?? '';
    this.peer = a.startsWith('::ffff:') && a.indexOf('.') !== -1 ? a.slice(7) : a;
  }
}
