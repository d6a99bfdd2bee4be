/**
 * One forwarded exchange, from dispatch to its end. It ends exactly once, in one of two ways, and
 * both sides learn which: completed (the whole request delivered, the whole response relayed) or
 * aborted (the upstream request aborted and its connection destroyed; the client's response cut or
 * answered with a Matrix JSON error). What ends it:
 * - the client goes away at any phase, by any means (the response's `close` before we ended it):
 *   upstream aborted at once, 499 in the access log with the phase;
 * - the request body fails (cut, idle, too large; see RequestBody): upstream aborted, 408/413 when
 *   nothing was answered yet;
 * - the client stops reading the response for `sendTimeoutMs`: both sides cut — the edge never
 *   waits for a `drain` without a bound (a reset HTTP/2 stream never drains);
 * - no upstream connection frees up within the queue timeout: 503;
 * - the upstream fails: 502/504 before response headers, a cut response after them.
 */
import type { Dispatcher } from 'undici';
import type { Exchange, Req, Res } from '../exchange';
import { matrixError, sendMatrixError } from '../handlers/errors';
import { relayedResponseHeaders } from './headers';
import type { BodyError, RequestBody } from './request-body';
import type { Share } from './shares';
import type { AbortCause, UpstreamPool, Waiting } from './upstream-pool';

/** Where an exchange was when it ended early, for the access log. */
export type Phase = 'queued' | 'request' | 'waiting' | 'response';

class ClientGone extends Error {
  readonly code = 'EDGE_CLIENT_GONE';
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

export interface ForwardingLimits {
  /** The client reads nothing of the response for this long → cut, ms. */
  readonly sendTimeoutMs: number;
  /** No upstream connection for this long → 503, ms (0: wait for one without a bound of our own). */
  readonly queueTimeoutMs: number;
}

export class Forwarding implements Dispatcher.DispatchHandler {
  phase: Phase = 'queued';
  /** The request body as it goes upstream, when there is one. */
  body: RequestBody | null = null;
  private controller: Dispatcher.DispatchController | null = null;
  private over = false;
  private waiting: Waiting | null = null;
  private queueTimer: NodeJS.Timeout | null = null;
  private sendTimer: NodeJS.Timeout | null = null;
  private paused = false;

  constructor(
    private readonly req: Req,
    private readonly res: Res,
    private readonly ex: Exchange,
    private readonly upstream: UpstreamPool,
    private readonly share: Share,
    private readonly limits: ForwardingLimits,
  ) {
    // Before the access log's listener: the exchange learns it ended before its line is written.
    res.prependOnceListener('close', this.onClientClose);
  }

  /** Hand the request to the upstream pool; it waits there for a free connection. */
  start(options: Dispatcher.DispatchOptions): void {
    this.upstream.began();
    this.waiting = { since: performance.now() };
    this.upstream.queued(this.waiting);
    if (this.limits.queueTimeoutMs > 0) {
      this.queueTimer = setTimeout(this.onQueueTimeout, this.limits.queueTimeoutMs);
      this.queueTimer.unref();
    }
    try {
      this.upstream.dispatch(options, this);
    } catch (err) {
      this.onResponseError(null, err as Error);
    }
  }

  /**
   * End the exchange once: give back its share and its place in the pool's figures. `cause` is why
   * it was aborted, or null when it completed. Returns false when it had already ended.
   */
  private finish(cause: AbortCause | null): boolean {
    if (this.over) return false;
    this.over = true;
    this.leaveQueue();
    if (this.sendTimer !== null) clearTimeout(this.sendTimer);
    this.res.off('drain', this.onDrain);
    this.upstream.ended();
    this.share.release();
    if (cause !== null) {
      this.upstream.abortedBy(cause);
      this.ex.abort = cause;
      this.ex.phase = this.phase;
    }
    return true;
  }

  private leaveQueue(): void {
    if (this.waiting === null) return;
    this.upstream.dequeued(this.waiting);
    this.waiting = null;
    if (this.queueTimer !== null) clearTimeout(this.queueTimer);
  }

  private readonly onClientClose = (): void => {
    if (!this.finish('client-gone')) return;
    this.ex.failure ??= 'client closed the connection';
    const gone = new ClientGone('client closed the connection');
    // Queued: undici aborts it when a connection takes it (onRequestStart), before any byte is sent.
    this.controller?.abort(gone);
    this.body?.destroy();
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.over) {
      controller.abort(new ClientGone('the exchange ended while it waited for an upstream connection'));
      return;
    }
    this.leaveQueue();
    this.phase = 'request';
  }

  onRequestSent(): void {
    if (!this.over) this.phase = 'waiting';
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (this.over) return;
    if (statusCode < 200) {
      this.informational(statusCode, headers);
      return;
    }
    this.ex.upstreamMs = performance.now() - this.ex.start;
    this.phase = 'response';
    const res = this.res;
    if (statusMessage && 'statusMessage' in res && this.req.httpVersionMajor === 1) res.statusMessage = statusMessage;
    try {
      res.writeHead(statusCode, relayedResponseHeaders(headers));
    } catch (err) {
      // An upstream header Node refuses to send (e.g. invalid characters): fail like a bad gateway.
      this.ex.failure = `unrelayable upstream response: ${(err as Error).message}`;
      this.finish('upstream-error');
      controller.abort(err as Error);
      sendMatrixError(this.req, res, this.ex, 502, 'M_UNKNOWN', 'The homeserver sent a response that cannot be relayed');
    }
  }

  /**
   * A 1xx answer before the final one. 103 Early Hints is relayed (its Link headers) to clients
   * that can take it; the others are the upstream's own business and dropped.
   */
  private informational(statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    const link = headers['link'];
    if (statusCode !== 103 || link === undefined || this.req.httpVersion === '1.0') return;
    try {
      (this.res as Res & { writeEarlyHints(hints: Record<string, string | string[]>): void }).writeEarlyHints({ link });
    } catch {
      // A Link value Node will not send: the hint is only a hint.
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.over) return;
    this.ex.bytes += chunk.length;
    if (this.res.write(chunk) || this.paused) return;
    this.paused = true;
    controller.pause();
    this.res.once('drain', this.onDrain);
    this.sendTimer = setTimeout(this.onSendTimeout, this.limits.sendTimeoutMs);
    this.sendTimer.unref();
  }

  private readonly onDrain = (): void => {
    if (this.over) return;
    this.paused = false;
    if (this.sendTimer !== null) clearTimeout(this.sendTimer);
    this.controller?.resume();
  };

  private readonly onSendTimeout = (): void => {
    if (!this.finish('send-timeout')) return;
    this.ex.failure = `the client read nothing of the response for ${this.limits.sendTimeoutMs} ms`;
    const err = new Error(this.ex.failure);
    this.controller?.abort(err);
    // With an error: HTTP/2 resets the stream with INTERNAL_ERROR (NO_ERROR would look complete).
    this.res.destroy(err);
  };

  onResponseEnd(): void {
    if (this.over) return;
    this.res.end();
    this.finish(null);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    const code = (err as { code?: string }).code ?? err.name;
    if (!this.finish(TIMEOUT_CODES.has(code) ? 'upstream-timeout' : 'upstream-error')) return;
    this.body?.destroy();
    this.ex.failure ??= `${code}: ${err.message}`;
    const { req, res, ex } = this;
    if (res.headersSent) {
      // The status line is gone: the only honest signal left is to cut the response short.
      res.destroy(err);
      return;
    }
    if (TIMEOUT_CODES.has(code)) sendMatrixError(req, res, ex, 504, 'M_UNKNOWN', 'The homeserver did not answer in time');
    else if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
      sendMatrixError(req, res, ex, 400, 'M_UNRECOGNIZED', `Malformed request: ${err.message}`, { connection: 'close' });
    } else sendMatrixError(req, res, ex, 502, 'M_UNKNOWN', 'The homeserver is unreachable');
  }

  /** The request body failed (RequestBody): told before the body stream is destroyed. */
  bodyFailed(err: BodyError): void {
    const cause: AbortCause = err.failure === 'too-large' ? 'body-too-large' : err.failure === 'idle' ? 'body-idle' : 'body-cut';
    if (!this.finish(cause)) return;
    this.ex.failure = err.message;
    this.controller?.abort(err);
    const { req, res, ex } = this;
    if (res.headersSent || res.destroyed) {
      res.destroy(err);
      return;
    }
    if (err.failure === 'too-large') refuseTooLarge(req, res, ex);
    else if (err.failure === 'idle') {
      sendMatrixError(req, res, ex, 408, 'M_UNKNOWN', `The request body stalled: ${err.message}`, closeH1(req));
    } else res.destroy(err);
  }

  private readonly onQueueTimeout = (): void => {
    if (this.waiting === null || !this.finish('queue-timeout')) return;
    this.ex.failure = `no upstream connection was free within ${this.limits.queueTimeoutMs} ms`;
    this.body?.destroy();
    sendMatrixError(this.req, this.res, this.ex, 503, 'M_UNKNOWN', 'The homeserver is busy; try again shortly', { 'retry-after': '1', ...closeH1(this.req) });
  };
}

/** `Connection: close` for HTTP/1.1 answers given while the request body may still be arriving. */
function closeH1(req: Req): Record<string, string> | undefined {
  return req.httpVersionMajor === 1 && !req.complete ? { connection: 'close' } : undefined;
}

const TOO_LARGE = 'Request body is larger than this server accepts';

/** How long a refused upload is still read (and discarded) so its client gets the answer. */
const LINGER_MS = 30_000;

/**
 * 413 M_TOO_LARGE for an upload over the limit. Over HTTP/1.1 the client is usually still
 * sending: closing at once (as Node does after a response to `Connection: close`) resets the
 * connection over the unread data, and the client may never read the answer. So the whole answer
 * is written at once but the response is ended only when the rest of the body has been read and
 * discarded — lingering close, RFC 9112 §9.6 — or after LINGER_MS, when the connection is cut.
 * HTTP/2 ends just the stream.
 */
export function refuseTooLarge(req: Req, res: Res, ex: Exchange): void {
  if (req.httpVersionMajor !== 1 || req.complete) {
    sendMatrixError(req, res, ex, 413, 'M_TOO_LARGE', TOO_LARGE);
    return;
  }
  const { body, headers } = matrixError('M_TOO_LARGE', TOO_LARGE);
  res.writeHead(413, headers);
  res.write(body);
  ex.bytes += body.length;
  const socket = req.socket;
  const cut = setTimeout(() => socket.destroy(), LINGER_MS);
  cut.unref();
  const finish = (): void => {
    clearTimeout(cut);
    res.end();
  };
  req.once('end', finish);
  req.once('close', finish);
  req.resume();
}
