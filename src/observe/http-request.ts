/**
 * One small HTTP(S) request with a deadline, on a connection of its own (no keep-alive pool that
 * could hold the process open): the readiness probe and the alert webhooks. Never hangs: the
 * whole exchange (connect, headers, body) must finish within `timeoutMs`.
 */
import * as http from 'node:http';
import * as https from 'node:https';

export interface HttpAnswer {
  readonly status: number;
  /** The start of the body (at most 4 KiB), for error messages. */
  readonly body: string;
}

const BODY_KEPT = 4096;

export function httpRequest(
  url: string,
  options: { readonly method: string; readonly headers?: Record<string, string>; readonly body?: string; readonly timeoutMs: number },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const headers: Record<string, string> = { ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = client.request(target, { method: options.method, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < BODY_KEPT) body += chunk.slice(0, BODY_KEPT - body.length);
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body });
      });
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(new Error('the answer was cut off'));
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    timer.unref();
    function fail(err: Error): void {
      clearTimeout(timer);
      reject(err);
    }
    req.on('error', fail);
    req.end(options.body);
  });
}
