/**
 * HTTP/1.1 requests Node's parser refuses before any handler sees them (oversized or malformed
 * headers, unknown methods, a header section that never completes): answered with the same Matrix
 * JSON errors a handler would give, written straight to the connection, which then closes.
 */
import type { Duplex } from 'node:stream';
import { ALLOW_HEADER } from '../request-checks';
import { CORS_HEADERS } from './errors';

export interface ParserRefusal {
  readonly status: number;
  readonly reason: string;
  readonly errcode: string;
  readonly error: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a parser error code means to the client. */
export function parserRefusal(code: string | undefined, maxHeaderBytes: number): ParserRefusal {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, reason: 'Request Header Fields Too Large', errcode: 'M_TOO_LARGE', error: `The request's headers are larger than this server accepts (${maxHeaderBytes} bytes)` };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return { status: 408, reason: 'Request Timeout', errcode: 'M_UNKNOWN', error: 'The request headers did not arrive in time' };
    case 'HPE_INVALID_METHOD':
      return { status: 405, reason: 'Method Not Allowed', errcode: 'M_UNRECOGNIZED', error: 'The method is not supported here (methods are case-sensitive)', headers: { allow: ALLOW_HEADER } };
    default:
      return { status: 400, reason: 'Bad Request', errcode: 'M_UNRECOGNIZED', error: 'Malformed request' };
  }
}

/** Writes the refusal and closes; false when the connection can no longer take it. */
export function writeRefusal(socket: Duplex, refusal: ParserRefusal, hsts: string | null): boolean {
  if (!socket.writable) {
    socket.destroy();
    return false;
  }
  const body = JSON.stringify({ errcode: refusal.errcode, error: refusal.error });
  const headers: Record<string, string> = {
    ...CORS_HEADERS,
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    ...(hsts === null ? {} : { 'strict-transport-security': hsts }),
    ...refusal.headers,
    connection: 'close',
  };
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.end(`HTTP/1.1 ${refusal.status} ${refusal.reason}\r\n${head}\r\n${body}`);
  return true;
}
