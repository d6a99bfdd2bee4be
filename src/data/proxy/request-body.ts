/**
 * The request body as the upstream request reads it. It ends only when the client's body really
 * ended — HTTP/1.1: the message is complete; HTTP/2: END_STREAM, not a reset or a lost connection
 * (Node ends an HTTP/2 request stream on RST_STREAM as if it were complete) — and, with a declared
 * Content-Length, only with exactly that many bytes. Otherwise it fails, which aborts the upstream
 * request: its connection is destroyed and a chunked body never gets its terminating chunk, so the
 * homeserver never commits a cut upload.
 *
 * It also bounds the client: past `limit` bytes it fails as too large; with no bytes for `idleMs`
 * while the edge is ready to take them it fails as idle (time spent waiting on the upstream to read
 * — backpressure — does not count).
 */
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { Readable } from 'node:stream';
import type { Req } from '../exchange';

export type BodyFailure = 'too-large' | 'idle' | 'cut';

export class BodyError extends Error {
  readonly code = 'EDGE_BODY';
  constructor(
    readonly failure: BodyFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface RequestBodyOptions {
  /** Largest body accepted, bytes. */
  readonly limit: number;
  /** The declared Content-Length, or -1 when the body is chunked / of unknown length. */
  readonly declared: number;
  /** Longest wait for the client's next body bytes while the edge is ready for them, ms. */
  readonly idleMs: number;
  /** Told once, before the stream is destroyed, why the body failed. */
  readonly onFailure: (err: BodyError) => void;
}

const HIGH_WATER_MARK = 64 * 1024;

/** Whether the client's body ended as the protocol says a complete body ends. */
function endedCleanly(req: Req): boolean {
  if (req.httpVersionMajor === 2) {
    const h2 = req as Http2ServerRequest;
    return !h2.aborted && !h2.stream.destroyed;
  }
  return (req as IncomingMessage).complete;
}

export class RequestBody extends Readable {
  /** Body bytes received from the client. */
  received = 0;
  private settled = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly req: Req,
    private readonly o: RequestBodyOptions,
  ) {
    super({ highWaterMark: HIGH_WATER_MARK });
    req.on('data', this.onData);
    req.once('end', this.onEnd);
    req.once('error', this.onLost);
    req.once('close', this.onLost);
    this.timer = setTimeout(this.onIdle, o.idleMs);
    this.timer.unref();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.settled) this.settle();
    callback(err);
  }

  override _read(): void {
    if (!this.settled) this.req.resume();
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.settled) return;
    this.received += chunk.length;
    if (this.received > this.o.limit) return this.fail('too-large', `request body exceeds ${this.o.limit} bytes`);
    if (this.o.declared >= 0 && this.received > this.o.declared) return this.fail('cut', 'request body longer than its Content-Length');
    this.timer.refresh();
    if (!this.push(chunk)) this.req.pause();
  };

  private readonly onEnd = (): void => {
    if (this.settled) return;
    if (!endedCleanly(this.req)) return this.fail('cut', 'the client went away before its request body ended');
    if (this.o.declared >= 0 && this.received !== this.o.declared) {
      return this.fail('cut', `request body of ${this.received} bytes, ${this.o.declared} declared`);
    }
    this.settle();
    this.push(null);
  };

  private readonly onLost = (): void => {
    if (!this.settled) this.fail('cut', 'the client went away before its request body ended');
  };

  private readonly onIdle = (): void => {
    if (this.settled) return;
    // Waiting because the upstream is not reading (backpressure) is not the client's stall.
    if (this.req.isPaused() || this.readableLength >= HIGH_WATER_MARK) {
      this.timer.refresh();
      return;
    }
    this.fail('idle', `no request body bytes for ${this.o.idleMs} ms`);
  };

  private settle(): void {
    this.settled = true;
    clearTimeout(this.timer);
    this.req.off('data', this.onData);
    this.req.off('end', this.onEnd);
    this.req.off('error', this.onLost);
    this.req.off('close', this.onLost);
  }

  private fail(failure: BodyFailure, message: string): void {
    this.settle();
    const err = new BodyError(failure, message);
    this.o.onFailure(err);
    this.destroy(err);
  }
}
