/**
 * The soak's misbehaving clients. Each operation is one client doing one wrong thing, and settles
 * with what it saw and whether that is what the edge's defaults promise:
 *   cancel   HTTP/2 RST_STREAM(CANCEL) on a shared session / HTTP/1.1 socket destroy, at a random
 *            phase (at once, while the upstream holds the request, mid-upload, mid-download)
 *   cut      the whole connection dropped mid-body (upload or download)
 *   stall    an upload that sends part of its body and stops: 408 after proxy.body_idle_timeout
 *   stop     a download whose client stops reading: cut after proxy.send_timeout
 *   greedy   110 long polls at once on one HTTP/2 connection: 429 beyond the per-connection share
 * Each is bounded by its own deadline.
 */
import type * as http2 from 'node:http2';
import { constants as h2c } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import {
  describe,
  downloadPath,
  h1Request,
  h2Connect,
  h2Request,
  Once,
  readH1,
  readH2,
  sendBody,
  sleep,
  syncPath,
  uploadPath,
  type Answer,
  type Target,
} from './soak-ops';
import { errorName } from '../test/support/h2raw';

export interface Misbehaviour {
  readonly outcome: string;
  /** What the edge promises this client (a 408, a 429, a cut); false: an anomaly worth a look. */
  readonly expected: boolean;
}

export interface EdgeTimeouts {
  readonly bodyIdleMs: number;
  readonly sendTimeoutMs: number;
}

const MiB = 1024 * 1024;
const rand = (a: number, b: number): number => a + Math.random() * (b - a);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const expected = (outcome: string): Misbehaviour => ({ outcome, expected: true });
const anomaly = (outcome: string): Misbehaviour => ({ outcome, expected: false });

/** Settles `out` with an anomaly after `ms` unless it has settled; `onTimeout` then tears down. */
function deadline(out: Once<Misbehaviour>, ms: number, onTimeout: () => void): void {
  const timer = setTimeout(() => {
    if (out.settled) return;
    out.settle(anomaly('no outcome before the deadline'));
    onTimeout();
  }, ms);
  void out.promise.then(() => clearTimeout(timer));
}

type Phase = 'at once' | 'while held' | 'mid-upload' | 'mid-download';

/** HTTP/2: RST_STREAM(CANCEL) at a random phase, on a session shared with other such cancels. */
export function cancelH2(session: http2.ClientHttp2Session, t: Target): Promise<Misbehaviour> {
  const phase = pick<Phase>(['at once', 'while held', 'mid-upload', 'mid-download']);
  const out = new Once<Misbehaviour>();
  let stream: http2.ClientHttp2Stream;
  let cutAt = Infinity;
  try {
    if (phase === 'mid-upload') {
      const bytes = Math.round(rand(1, 4) * MiB);
      stream = h2Request(session, t, 'POST', uploadPath(bytes), { 'content-length': bytes }, false);
      void sendBody(stream, Math.round(bytes * rand(0.05, 0.9))).then(() => cancel());
    } else if (phase === 'mid-download') {
      const bytes = Math.round(rand(2, 10) * MiB);
      cutAt = bytes * rand(0.05, 0.9);
      stream = h2Request(session, t, 'GET', downloadPath(bytes));
    } else {
      stream = h2Request(session, t, 'GET', syncPath(rand(5000, 30000)));
    }
  } catch (err) {
    return Promise.resolve(anomaly(`request refused by the client's session: ${describe(err as Error)}`));
  }
  const cancel = (): void => {
    if (out.settled) return;
    out.settle(expected(`cancelled ${phase}`));
    stream.close(h2c.NGHTTP2_CANCEL);
  };
  readH2(stream, (n) => n >= cutAt && cancel()).then(
    (a) => out.settle(anomaly(`answered before the cancel (${a.status})`)),
    (err: Error) => out.settle(anomaly(`failed before the cancel: ${describe(err)}`)),
  );
  if (phase === 'at once') cancel();
  else if (phase === 'while held') setTimeout(cancel, rand(200, 4000));
  deadline(out, 60_000, () => stream.close(h2c.NGHTTP2_CANCEL));
  return out.promise;
}

/** HTTP/1.1: the socket destroyed at once or while the upstream holds the request. */
export function cancelH1(t: Target, localAddress: string): Promise<Misbehaviour> {
  const phase = pick<Phase>(['at once', 'while held']);
  const out = new Once<Misbehaviour>();
  const req = h1Request(t, { agent: false, localAddress, method: 'GET', path: syncPath(rand(5000, 30000)) });
  const cancel = (): void => {
    if (out.settled) return;
    out.settle(expected(`cancelled ${phase}`));
    req.destroy();
  };
  req.on('response', (res: IncomingMessage) => {
    res.resume();
    out.settle(anomaly(`answered before the cancel (${res.statusCode})`));
    req.destroy();
  });
  req.on('error', (err) => out.settle(anomaly(`failed before the cancel: ${describe(err)}`)));
  req.once('finish', () => setTimeout(cancel, phase === 'at once' ? rand(0, 5) : rand(200, 4000)));
  req.end();
  deadline(out, 60_000, () => req.destroy());
  return out.promise;
}

/** The connection dropped mid-body: an upload or a download, HTTP/1.1 or HTTP/2 (its own session). */
export function cut(t: Target, localAddress: string, proto: 'h1' | 'h2'): Promise<Misbehaviour> {
  const upload = Math.random() < 0.5;
  const bytes = Math.round(rand(1, 8) * MiB);
  const at = Math.round(bytes * rand(0.05, 0.9));
  const what = upload ? 'mid-upload' : 'mid-download';
  const out = new Once<Misbehaviour>();
  let drop: () => void;
  let answer: Promise<{ status: number }>;
  if (proto === 'h1') {
    const req = h1Request(t, { agent: false, localAddress, method: upload ? 'POST' : 'GET', path: upload ? uploadPath(bytes) : downloadPath(bytes), headers: upload ? { 'content-length': bytes } : {} });
    drop = () => req.destroy();
    answer = new Promise((resolve, reject) => {
      req.on('response', (res: IncomingMessage) => readH1(res, (n) => n >= at && dropNow()).then(resolve, reject));
      req.on('error', reject);
    });
    if (upload) void sendBody(req, at).then(() => dropNow());
    else req.end();
  } else {
    const session = h2Connect(t, localAddress);
    const stream = h2Request(session, t, upload ? 'POST' : 'GET', upload ? uploadPath(bytes) : downloadPath(bytes), upload ? { 'content-length': bytes } : {}, !upload);
    drop = () => session.destroy();
    answer = readH2(stream, (n) => n >= at && dropNow());
    if (upload) void sendBody(stream, at).then(() => dropNow());
  }
  function dropNow(): void {
    if (out.settled) return;
    out.settle(expected(`disconnected ${what}`));
    drop();
  }
  answer.then(
    (a) => out.settle(anomaly(`answered before the disconnect (${a.status})`)),
    (err: Error) => out.settle(anomaly(`failed before the disconnect: ${describe(err)}`)),
  );
  deadline(out, 60_000, () => undefined);
  return out.promise.finally(() => drop());
}

/** An upload that stops after part of its body; the edge's promise: 408 after body_idle_timeout. */
export function stallUpload(t: Target, localAddress: string, proto: 'h1' | 'h2', limits: EdgeTimeouts): Promise<Misbehaviour> {
  const bytes = 2 * MiB;
  const part = Math.round(rand(16, 512) * 1024);
  const declared = Math.random() < 0.5;
  const out = new Once<Misbehaviour>();
  const began = performance.now();
  const onAnswer = (status: number): void => {
    const s = Math.round((performance.now() - began) / 1000);
    out.settle(status === 408 ? expected('408') : anomaly(`status ${status} after ${s} s`));
  };
  let close: () => void;
  if (proto === 'h1') {
    const headers: Record<string, string | number> = declared ? { 'content-length': bytes } : { 'transfer-encoding': 'chunked' };
    const req = h1Request(t, { agent: false, localAddress, method: 'POST', path: uploadPath(bytes), headers });
    close = () => req.destroy();
    req.on('response', (res: IncomingMessage) => {
      res.resume();
      onAnswer(res.statusCode ?? 0);
    });
    req.on('error', (err) => out.settle(anomaly(`failed: ${describe(err)}`)));
    void sendBody(req, part);
  } else {
    const session = h2Connect(t, localAddress);
    close = () => session.destroy();
    const stream = h2Request(session, t, 'POST', uploadPath(bytes), declared ? { 'content-length': bytes } : {}, false);
    stream.on('response', (h) => onAnswer(Number(h[':status'])));
    stream.on('close', () => out.settle(anomaly(`stream closed without an answer (${stream.rstCode})`)));
    stream.on('error', () => undefined);
    void sendBody(stream, part);
  }
  deadline(out, limits.bodyIdleMs + 30_000, () => undefined);
  return out.promise.finally(() => close());
}

/**
 * A download whose client stops reading after the response headers. After send_timeout + 20 s the
 * client reads again: what it then gets must end short (the edge cut it), not the whole body.
 */
export async function stopReading(t: Target, localAddress: string, proto: 'h1' | 'h2', limits: EdgeTimeouts): Promise<Misbehaviour> {
  const bytes = 20 * MiB;
  const pauseMs = limits.sendTimeoutMs + 20_000;
  let close: () => void;
  let read: () => Promise<Answer>;
  let headers: Promise<number>;
  if (proto === 'h1') {
    const req = h1Request(t, { agent: false, localAddress, method: 'GET', path: downloadPath(bytes) });
    close = () => req.destroy();
    let res: IncomingMessage | null = null;
    headers = new Promise((resolve, reject) => {
      req.on('response', (r: IncomingMessage) => {
        r.pause();
        res = r;
        resolve(r.statusCode ?? 0);
      });
      req.on('error', reject);
    });
    read = () => {
      if (res!.complete || res!.destroyed) return Promise.reject(new Error('cut'));
      const reading = readH1(res!);
      res!.resume();
      return reading;
    };
    req.end();
  } else {
    const session = h2Connect(t, localAddress, 256 * 1024);
    close = () => session.destroy();
    const stream = h2Request(session, t, 'GET', downloadPath(bytes));
    stream.pause();
    const reading = readH2(stream);
    reading.catch(() => undefined);
    headers = new Promise((resolve, reject) => {
      stream.on('response', (h) => resolve(Number(h[':status'])));
      reading.catch(reject);
    });
    read = () => (stream.resume(), reading);
  }
  try {
    const status = await Promise.race([headers, sleep(30_000).then(() => -1)]);
    if (status !== 200) return anomaly(status === -1 ? 'no response headers within 30 s' : `status ${status}`);
    await sleep(pauseMs);
    const rest = await Promise.race([read(), sleep(30_000).then(() => null)]);
    if (rest === null) return anomaly(`neither cut nor finished 30 s after reading again`);
    // An HTTP/2 stream reset with NO_ERROR ends like a complete one: only its length tells.
    if (rest.bytes < bytes) return expected(`cut after send_timeout (ended after ${proto === 'h2' ? `RST_STREAM ${errorName(rest.rstCode)}` : 'a clean end'}, short)`);
    return anomaly(`not cut: the whole ${rest.bytes} bytes arrived after a ${pauseMs / 1000} s pause`);
  } catch (err) {
    return describe(err as Error).startsWith('cut') || /ECONNRESET|aborted|reset/.test(describe(err as Error)) ? expected('cut after send_timeout') : anomaly(`failed: ${describe(err as Error)}`);
  } finally {
    close();
  }
}

/**
 * 110 long polls at once on one new HTTP/2 connection: the per-connection share (100) is held, the
 * rest answered 429 at once. One client, one outcome: what its streams got.
 */
export async function greedy(t: Target, localAddress: string, streams = 110): Promise<Misbehaviour> {
  const session = h2Connect(t, localAddress);
  try {
    const statuses = await Promise.all(
      Array.from({ length: streams }, () => {
        const stream = h2Request(session, t, 'GET', syncPath(3000));
        const timer = setTimeout(() => stream.close(h2c.NGHTTP2_CANCEL), 30_000);
        return readH2(stream)
          .then(
            (a) => String(a.status),
            (err: Error) => describe(err),
          )
          .finally(() => clearTimeout(timer));
      }),
    );
    const got: Record<string, number> = {};
    for (const s of statuses) got[s] = (got[s] ?? 0) + 1;
    const only200and429 = Object.keys(got).every((s) => s === '200' || s === '429');
    return only200and429 && (got['429'] ?? 0) > 0 ? expected('429 past its share') : anomaly(`streams got ${JSON.stringify(got)}`);
  } finally {
    session.destroy();
  }
}
