/**
 * A small raw HTTP/2 client (RFC 9113) over TLS for hostile-client tests: it sends exactly the
 * frames a test asks for, including what node:http2 refuses to send (malformed frames, invalid
 * header lists, floods), and records what the server answers.
 *
 * What it does on its own, like any client: the connection preface and a SETTINGS frame, ACKs of
 * the server's SETTINGS, PING answers, and (unless switched off, to play a client that does not
 * read) WINDOW_UPDATEs for the DATA it receives. It does not honour the server's flow-control
 * windows or frame size limits when sending: tests keep request bodies under 64 KiB or mean to
 * break them. Header blocks are HPACK-encoded by hpack.ts (literal, never normalised).
 */
import { EventEmitter } from 'node:events';
import * as tls from 'node:tls';
import { encodeHeaders, HpackDecoder, type Header } from './hpack';

export type { Header } from './hpack';

// prettier-ignore
export const FrameType = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

/** RFC 9113 §7. */
// prettier-ignore
export const ErrorCode = {
  NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, INTERNAL_ERROR: 0x2, FLOW_CONTROL_ERROR: 0x3, SETTINGS_TIMEOUT: 0x4, STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9, CONNECT_ERROR: 0xa, ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc, HTTP_1_1_REQUIRED: 0xd,
} as const;

/** RFC 9113 §6.5.2, and ENABLE_CONNECT_PROTOCOL from RFC 8441. */
// prettier-ignore
export const Setting = {
  HEADER_TABLE_SIZE: 0x1, ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6, ENABLE_CONNECT_PROTOCOL: 0x8,
} as const;

/** "PROTOCOL_ERROR" for 1, for readable assertion messages. */
export function errorName(code: number | null | undefined): string {
  return Object.entries(ErrorCode).find(([, v]) => v === code)?.[0] ?? String(code);
}

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** The SETTINGS_MAX_FRAME_SIZE every peer accepts; larger header blocks go on in CONTINUATION. */
const MAX_FRAME_SIZE = 16_384;

// ---------------------------------------------------------------------------------------------
// Frame writers. Each returns one whole frame and validates nothing, so tests can break the rules
// (stream 0 where a stream is required, wrong lengths, reserved bits, ...).

/** Any frame: 9-octet header (24-bit length, type, flags, 32-bit stream id incl. reserved bit) + payload. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > 0xffffff) throw new Error(`frame payload of ${payload.length} octets does not fit a 24-bit length`);
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([head, payload]);
}

const u32 = (...values: number[]): Buffer => Buffer.concat(values.map((v) => Buffer.from([v >>> 24, v >>> 16, v >>> 8, v].map((b) => b & 0xff))));

/** `padLength`: add the PADDED flag with this many zero octets of padding (0..255). */
function padded(body: Uint8Array, padLength: number | undefined, flags: number): [number, Buffer] {
  if (padLength === undefined) return [flags, Buffer.from(body)];
  return [flags | Flag.PADDED, Buffer.concat([Buffer.from([padLength]), body, Buffer.alloc(padLength)])];
}

/** Stream dependency; weight 1..256 (sent as weight - 1). */
export type Priority = { readonly dependsOn: number; readonly weight: number; readonly exclusive?: boolean };
const priorityFields = (p: Priority): Buffer => Buffer.concat([u32((p.exclusive ? 0x80000000 : 0) | p.dependsOn), Buffer.from([p.weight - 1])]);

export function dataFrame(streamId: number, data: Uint8Array, opts: { endStream?: boolean; padLength?: number } = {}): Buffer {
  const [flags, payload] = padded(data, opts.padLength, opts.endStream ? Flag.END_STREAM : 0);
  return frame(FrameType.DATA, flags, streamId, payload);
}

export interface HeadersOptions {
  readonly endStream?: boolean;
  /** Default true; false leaves the block open for CONTINUATION frames. */
  readonly endHeaders?: boolean;
  readonly priority?: Priority;
  readonly padLength?: number;
}

export function headersFrame(streamId: number, block: Uint8Array, opts: HeadersOptions = {}): Buffer {
  let flags = (opts.endStream ? Flag.END_STREAM : 0) | (opts.endHeaders === false ? 0 : Flag.END_HEADERS);
  let body = Buffer.from(block);
  if (opts.priority !== undefined) {
    flags |= Flag.PRIORITY;
    body = Buffer.concat([priorityFields(opts.priority), body]);
  }
  const [allFlags, payload] = padded(body, opts.padLength, flags);
  return frame(FrameType.HEADERS, allFlags, streamId, payload);
}

export const priorityFrame = (streamId: number, p: Priority): Buffer => frame(FrameType.PRIORITY, 0, streamId, priorityFields(p));
export const rstStreamFrame = (streamId: number, code: number): Buffer => frame(FrameType.RST_STREAM, 0, streamId, u32(code));
export const pingFrame = (data: Uint8Array = Buffer.alloc(8), ack = false): Buffer => frame(FrameType.PING, ack ? Flag.ACK : 0, 0, data);
export const windowUpdateFrame = (streamId: number, increment: number): Buffer => frame(FrameType.WINDOW_UPDATE, 0, streamId, u32(increment));
export const continuationFrame = (streamId: number, block: Uint8Array, endHeaders: boolean): Buffer =>
  frame(FrameType.CONTINUATION, endHeaders ? Flag.END_HEADERS : 0, streamId, block);
export const goawayFrame = (lastStreamId: number, code: number, debug = ''): Buffer =>
  frame(FrameType.GOAWAY, 0, 0, Buffer.concat([u32(lastStreamId, code), Buffer.from(debug, 'utf8')]));

export function settingsFrame(settings: ReadonlyArray<readonly [id: number, value: number]> = [], ack = false): Buffer {
  const payload = Buffer.concat(settings.map(([id, value]) => Buffer.concat([Buffer.from([id >> 8, id & 0xff]), u32(value)])));
  return frame(FrameType.SETTINGS, ack ? Flag.ACK : 0, 0, payload);
}

// ---------------------------------------------------------------------------------------------
// Frame reader

export type Frame = { readonly type: number; readonly flags: number; readonly streamId: number; readonly payload: Buffer };

/** Splits a byte stream into frames; keeps an incomplete tail for the next chunk. */
export class FrameReader {
  private buffered: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Frame[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const frames: Frame[] = [];
    for (let b = this.buffered; b.length >= 9 && b.length >= 9 + b.readUIntBE(0, 3); b = this.buffered) {
      const end = 9 + b.readUIntBE(0, 3);
      frames.push({ type: b[3]!, flags: b[4]!, streamId: b.readUInt32BE(5) & 0x7fffffff, payload: b.subarray(9, end) });
      this.buffered = b.subarray(end);
    }
    return frames;
  }
}

/** The payload less padding (and less the priority fields of HEADERS), per the frame's flags. */
function unpadded(f: Frame): Buffer {
  let body = f.payload;
  if (f.flags & Flag.PADDED) body = body.subarray(1, body.length - body[0]!);
  if (f.type === FrameType.HEADERS && f.flags & Flag.PRIORITY) body = body.subarray(5);
  return body;
}

// ---------------------------------------------------------------------------------------------
// Connection

export interface StreamState {
  readonly id: number;
  /** Every decoded header block received, in order: 1xx responses, the response, trailers. */
  readonly headerBlocks: Header[][];
  /** The final (non-1xx) response header block, and its :status, once received. */
  response: Header[] | null;
  status: number | null;
  readonly data: Buffer[];
  dataBytes: number;
  /** END_STREAM received. */
  ended: boolean;
  /** The error code of a RST_STREAM received, else null. */
  resetCode: number | null;
}

export type GoAway = { readonly lastStreamId: number; readonly code: number; readonly debug: string };

export interface ConnectOptions {
  readonly port: number;
  /** PEM of the CA to trust. */
  readonly ca: string;
  readonly host?: string;
  readonly servername?: string;
  /** The client's own address (any 127.x.x.x on loopback). */
  readonly localAddress?: string;
  /** The client's first SETTINGS (default: ENABLE_PUSH 0). */
  readonly settings?: ReadonlyArray<readonly [number, number]>;
  /** WINDOW_UPDATE for every DATA received (default true). Off: the server's windows only shrink. */
  readonly autoWindowUpdate?: boolean;
  /** Default timeout of the wait helpers, ms (default 5000). */
  readonly timeoutMs?: number;
}

/**
 * Besides the state below, a connection emits: 'frame' (every Frame received), 'response'
 * (stream id, headers), 'data' (stream id, bytes), 'end' (stream id), 'reset' (stream id, code),
 * 'goaway' (GoAway) and 'close'.
 */
export class H2Connection extends EventEmitter {
  readonly streams = new Map<number, StreamState>();
  /** The server's SETTINGS as last received. */
  readonly serverSettings = new Map<number, number>();
  /** How many frames of each type were received (floods are counted, not kept). */
  readonly received = new Map<number, number>();
  goaway: GoAway | null = null;
  settingsAcks = 0;
  pingAcks = 0;
  /** Octets handed to the socket (frames and raw bytes). */
  bytesSent = 0;
  isClosed = false;
  /** Why our side could not go on reading the server (bad HPACK, framing), or a socket error. */
  error: Error | null = null;
  autoWindowUpdate: boolean;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  readonly decoder = new HpackDecoder();
  private nextStreamId = 1;
  private readonly reader = new FrameReader();
  /** A header block still waiting for CONTINUATION frames. */
  private pending: { streamId: number; endStream: boolean; parts: Buffer[] } | null = null;
  /** Re-checked after every chunk of frames received and on close (see until()). */
  private readonly waiters = new Set<() => void>();
  private readonly timeoutMs: number;

  private constructor(
    readonly socket: tls.TLSSocket,
    o: ConnectOptions,
  ) {
    super();
    this.autoWindowUpdate = o.autoWindowUpdate ?? true;
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.reader.push(chunk)) this.onFrame(f);
      this.wake();
    });
    socket.on('error', (err) => (this.error ??= err));
    socket.once('close', () => {
      this.isClosed = true;
      this.wake();
      this.emit('close');
    });
  }

  /** TLS with ALPN h2, then the preface and SETTINGS; resolves once the server's SETTINGS arrived. */
  static async connect(o: ConnectOptions): Promise<H2Connection> {
    const socket = tls.connect({
      host: o.host ?? '127.0.0.1',
      port: o.port,
      ca: o.ca,
      servername: o.servername ?? 'localhost',
      ALPNProtocols: ['h2'],
      ...(o.localAddress === undefined ? {} : { localAddress: o.localAddress }),
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    if (socket.alpnProtocol !== 'h2') {
      socket.destroy();
      throw new Error(`server negotiated ${String(socket.alpnProtocol)}, not h2`);
    }
    const conn = new H2Connection(socket, o);
    conn.writeRaw(Buffer.concat([PREFACE, settingsFrame(o.settings ?? [[Setting.ENABLE_PUSH, 0]])]));
    await conn.until('the server SETTINGS', () => conn.received.has(FrameType.SETTINGS));
    return conn;
  }

  // --- sending -------------------------------------------------------------------------------

  /** Any bytes (frames from the writers above, or anything). False when the buffer is full (see flush) or closed. */
  writeRaw(bytes: Uint8Array): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    this.bytesSent += bytes.length;
    return this.socket.write(bytes);
  }

  /**
   * Resolves when the socket's write buffer has drained, or the connection is gone (a destroyed
   * socket waits for its close, so a write loop around flush() always yields to the event loop).
   */
  async flush(): Promise<void> {
    if (this.isClosed) return;
    if (this.socket.destroyed) await this.closed;
    else if (this.socket.writableNeedDrain) await Promise.race([new Promise((r) => this.socket.once('drain', r)), this.closed]);
  }

  /** The next client stream id (odd, increasing). */
  newStreamId(): number {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return id;
  }

  /**
   * HEADERS for a request: every field a literal without indexing, in the given order and case,
   * unchecked. END_STREAM unless `endStream: false` (a body follows). Returns the stream id (a new
   * one unless `streamId` is given).
   */
  request(headers: ReadonlyArray<readonly [string, string]>, opts: HeadersOptions & { streamId?: number } = {}): number {
    return this.headers(opts.streamId ?? this.newStreamId(), encodeHeaders(headers), { endStream: true, ...opts });
  }

  /** HEADERS carrying an encoded block; one larger than a frame goes on in CONTINUATION frames. */
  headers(streamId: number, block: Buffer, opts: HeadersOptions = {}): number {
    if (streamId >= this.nextStreamId) this.nextStreamId = streamId + 1 + (streamId % 2); // the next odd id above it
    const size = MAX_FRAME_SIZE - 5 - 256; // room for priority fields and padding
    const endHeaders = opts.endHeaders !== false;
    this.writeRaw(headersFrame(streamId, block.subarray(0, size), { ...opts, endHeaders: endHeaders && block.length <= size }));
    for (let at = size; at < block.length; at += size) {
      this.writeRaw(continuationFrame(streamId, block.subarray(at, at + size), endHeaders && at + size >= block.length));
    }
    return streamId;
  }

  data(streamId: number, bytes: Uint8Array | string, endStream = false, padLength?: number): void {
    this.writeRaw(dataFrame(streamId, typeof bytes === 'string' ? Buffer.from(bytes) : bytes, { endStream, padLength }));
  }

  rst(streamId: number, code: number = ErrorCode.CANCEL): void {
    this.writeRaw(rstStreamFrame(streamId, code));
  }

  // Other frames: writeRaw(frame(...)), writeRaw(pingFrame()), writeRaw(settingsFrame([...])), ...

  /** Drop the connection at once (no GOAWAY). */
  close(): void {
    this.socket.destroy();
  }

  // --- waiting -------------------------------------------------------------------------------

  /** The state of a stream (created empty on first use). */
  stream(id: number): StreamState {
    const s = this.streams.get(id) ?? { id, headerBlocks: [], response: null, status: null, data: [], dataBytes: 0, ended: false, resetCode: null };
    this.streams.set(id, s);
    return s;
  }

  /**
   * Resolves when `predicate` holds, re-checked whenever frames arrive and on close. Rejects,
   * naming `what`, on timeout, if the connection closes while it does not hold, or with the error
   * the predicate throws (to say it went the other way).
   */
  until(what: string, predicate: () => boolean, timeoutMs = this.timeoutMs): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (err: Error | null): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err === null) resolve();
        else reject(err);
      };
      const check = (): void => {
        try {
          if (predicate()) finish(null);
          else if (this.isClosed) finish(new Error(`connection closed while waiting for ${what} (${this.describe()})`));
        } catch (err) {
          finish(err as Error);
        }
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${this.describe()})`)), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * One event of a stream: its final response headers, its END_STREAM, or a RST_STREAM. Rejects,
   * saying what happened instead, if the stream is reset or ends the other way, or the connection
   * closes first.
   */
  async waitFor(streamId: number, event: 'response' | 'end' | 'reset', timeoutMs = this.timeoutMs): Promise<StreamState> {
    const s = this.stream(streamId);
    await this.until(
      `stream ${streamId} ${event}`,
      () => {
        if (event === 'response' ? s.response !== null : event === 'end' ? s.ended : s.resetCode !== null) return true;
        if (event !== 'reset' && s.resetCode !== null) throw new Error(`stream ${streamId} was reset with ${errorName(s.resetCode)} while waiting for its ${event}`);
        if (event === 'reset' && s.ended) throw new Error(`stream ${streamId} ended normally (status ${s.status}) instead of being reset`);
        return false;
      },
      timeoutMs,
    );
    return s;
  }

  /** Whatever comes first for a stream: 'end', 'reset', or 'closed' (the connection). */
  async settle(streamId: number, timeoutMs = this.timeoutMs): Promise<'end' | 'reset' | 'closed'> {
    const s = this.stream(streamId);
    await this.until(`stream ${streamId} to end or be reset`, () => s.ended || s.resetCode !== null, timeoutMs).catch((err: unknown) => {
      if (!this.isClosed) throw err;
    });
    return s.ended ? 'end' : s.resetCode !== null ? 'reset' : 'closed';
  }

  /** The GOAWAY received (now or later); rejects on timeout, or on a close without one. */
  async waitForGoaway(timeoutMs = this.timeoutMs): Promise<GoAway> {
    await this.until('GOAWAY', () => this.goaway !== null, timeoutMs);
    return this.goaway!;
  }

  /** A one-line summary for failure messages. */
  describe(): string {
    const g = this.goaway === null ? 'no GOAWAY' : `GOAWAY ${errorName(this.goaway.code)} last=${this.goaway.lastStreamId}`;
    return `${this.isClosed ? 'closed' : 'open'}, ${g}, ${this.streams.size} streams${this.error ? `, error: ${this.error.message}` : ''}`;
  }

  // --- receiving -----------------------------------------------------------------------------

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }

  private onFrame(f: Frame): void {
    this.received.set(f.type, (this.received.get(f.type) ?? 0) + 1);
    this.emit('frame', f);
    // §6.10: nothing may come between HEADERS and the CONTINUATION that ends its block.
    if (this.pending !== null && f.type !== FrameType.CONTINUATION) return this.fail(new Error(`frame type ${f.type} inside a header block`));
    switch (f.type) {
      case FrameType.DATA: {
        const s = this.stream(f.streamId);
        const body = Buffer.from(unpadded(f));
        s.data.push(body);
        s.dataBytes += body.length;
        this.emit('data', f.streamId, body);
        if (f.flags & Flag.END_STREAM) this.ended(s);
        // Flow control counts the whole payload, padding included (§6.9.1).
        if (this.autoWindowUpdate && f.payload.length > 0) {
          this.writeRaw(windowUpdateFrame(0, f.payload.length));
          if (!s.ended) this.writeRaw(windowUpdateFrame(f.streamId, f.payload.length));
        }
        return;
      }
      case FrameType.HEADERS:
        this.pending = { streamId: f.streamId, endStream: (f.flags & Flag.END_STREAM) !== 0, parts: [Buffer.from(unpadded(f))] };
        if (f.flags & Flag.END_HEADERS) this.endHeaderBlock();
        return;
      case FrameType.CONTINUATION:
        if (this.pending?.streamId !== f.streamId) return this.fail(new Error('CONTINUATION without an open header block'));
        this.pending.parts.push(Buffer.from(f.payload));
        if (f.flags & Flag.END_HEADERS) this.endHeaderBlock();
        return;
      case FrameType.RST_STREAM:
        this.stream(f.streamId).resetCode = f.payload.readUInt32BE(0);
        this.emit('reset', f.streamId, f.payload.readUInt32BE(0));
        return;
      case FrameType.SETTINGS:
        if (f.flags & Flag.ACK) this.settingsAcks++;
        else {
          for (let i = 0; i + 6 <= f.payload.length; i += 6) this.serverSettings.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2));
          this.writeRaw(settingsFrame([], true));
        }
        return;
      case FrameType.PING:
        if (f.flags & Flag.ACK) this.pingAcks++;
        else this.writeRaw(pingFrame(f.payload, true));
        return;
      case FrameType.GOAWAY:
        this.goaway = { lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString('utf8') };
        this.emit('goaway', this.goaway);
        return;
      default:
        return; // PRIORITY, WINDOW_UPDATE, unknown types; PUSH_PROMISE never comes (ENABLE_PUSH 0)
    }
  }

  private endHeaderBlock(): void {
    const { streamId, endStream, parts } = this.pending!;
    this.pending = null;
    let headers: Header[];
    try {
      headers = this.decoder.decode(Buffer.concat(parts));
    } catch (err) {
      return this.fail(err as Error);
    }
    const s = this.stream(streamId);
    s.headerBlocks.push(headers);
    const status = headerValue(headers, ':status');
    if (s.response === null && status !== undefined && !status.startsWith('1')) {
      s.response = headers;
      s.status = Number(status);
      this.emit('response', streamId, headers);
    }
    if (endStream) this.ended(s);
  }

  private ended(s: StreamState): void {
    s.ended = true;
    this.emit('end', s.id);
  }

  /** Our side cannot go on reading the server: note why and drop the connection. */
  private fail(err: Error): void {
    this.error ??= err;
    this.socket.destroy();
  }
}

/** The value of the first field of that name in a decoded block. */
export function headerValue(headers: readonly Header[] | null, name: string): string | undefined {
  return headers?.find(([n]) => n === name)?.[1];
}
