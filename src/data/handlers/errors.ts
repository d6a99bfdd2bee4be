/** Edge-generated answers: Matrix JSON errors (`{"errcode","error"}`) with CORS, never HTML. */
import type { Exchange, Req, Res } from '../exchange';

/** CORS headers as Synapse and Dendrite send them, so browsers can read edge-generated errors. */
export const CORS_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization, Date',
});

export function sendMatrixError(
  req: Req,
  res: Res,
  ex: Exchange,
  status: number,
  errcode: string,
  error: string,
  extra?: Record<string, string>,
): void {
  const body = JSON.stringify({ errcode, error });
  const headers: Record<string, string | number> = {
    ...CORS_HEADERS,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...extra,
  };
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
  } else {
    ex.bytes += Buffer.byteLength(body);
    res.end(body);
  }
}
