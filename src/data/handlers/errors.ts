/** Edge-generated answers: Matrix JSON errors (`{"errcode","error"}`) with CORS, never HTML. */
import type { Exchange, Req, Res } from '../exchange';

/** CORS headers as Synapse and Dendrite send them, so browsers can read edge-generated errors. */
export const CORS_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization, Date',
});

/** The body and headers of a Matrix JSON error, for handlers that send it themselves. */
export function matrixError(
  errcode: string,
  error: string,
  extra?: Record<string, string>,
  fields?: Record<string, number | string>,
): { body: Buffer; headers: Record<string, string | number> } {
  const body = Buffer.from(JSON.stringify({ errcode, error, ...fields }), 'utf8');
  const headers: Record<string, string | number> = {
    ...CORS_HEADERS,
    'content-type': 'application/json',
    'content-length': body.length,
    'cache-control': 'no-store',
    ...extra,
  };
  return { body, headers };
}

export function sendMatrixError(
  req: Req,
  res: Res,
  ex: Exchange,
  status: number,
  errcode: string,
  error: string,
  extra?: Record<string, string>,
  fields?: Record<string, number | string>,
): void {
  const { body, headers } = matrixError(errcode, error, extra, fields);
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
  } else {
    ex.bytes += body.length;
    res.end(body);
  }
}
