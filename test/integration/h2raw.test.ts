/**
 * The raw HTTP/2 test client (test/support/h2raw.ts) against a plain node:http2 server (nghttp2)
 * on loopback: it must read what a real server sends — Huffman-coded and indexed response headers,
 * resets, GOAWAY, flow control — before hostile tests can trust what it reports.
 */
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { LocalCa } from '../../src/control/issuers/local-ca';
import { silentLogger } from '../../src/observe/log';
import { FileStorage } from '../../src/store/file-storage';
import { tempDir } from '../support/edge';
import { ErrorCode, H2Connection, headerValue, priorityFrame, Setting, windowUpdateFrame } from '../support/h2raw';
import { huffmanEncode } from '../support/hpack';

let dir: string;
let ca: string;
let server: http2.Http2SecureServer;
let port: number;
/** The handler of the current test; each test sets its own. */
let handle: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
const sessions = new Set<http2.ServerHttp2Session>();
const conns: H2Connection[] = [];

beforeAll(async () => {
  dir = tempDir('matrix-edge-h2raw-');
  const authority = await LocalCa.open(new FileStorage(dir), silentLogger);
  const leaf = await authority.issue(['localhost'], 3_600_000);
  ca = authority.rootPem;
  server = http2.createSecureServer({ cert: leaf.certPem, key: leaf.keyPem });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined); // a stream the test resets errors on the server side
    handle(stream, headers);
  });
  server.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterEach(() => {
  for (const c of conns.splice(0)) c.close();
});

afterAll(async () => {
  for (const s of sessions) s.destroy();
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function connect(opts: { autoWindowUpdate?: boolean; settings?: Array<[number, number]> } = {}): Promise<H2Connection> {
  const conn = await H2Connection.connect({ port, ca, ...opts });
  conns.push(conn);
  return conn;
}

const get = (path: string): Array<[string, string]> => [
  [':method', 'GET'],
  [':scheme', 'https'],
  [':authority', `localhost:${port}`],
  [':path', path],
];

/** Every header block the connection's decoder is given, raw. */
function captureBlocks(conn: H2Connection): Buffer[] {
  const blocks: Buffer[] = [];
  const decode = conn.decoder.decode.bind(conn.decoder);
  conn.decoder.decode = (block) => (blocks.push(Buffer.from(block)), decode(block));
  return blocks;
}

test('a GET and its response: Huffman-coded header values decode, the body arrives, the stream ends', async () => {
  const value = 'a fairly long header value, which nghttp2 sends Huffman-coded';
  handle = (stream, headers) => {
    stream.respond({ ':status': 200, 'x-echo-path': headers[':path'] as string, 'x-long': value });
    stream.end('hello');
  };
  const conn = await connect();
  const blocks = captureBlocks(conn);
  const events: string[] = [];
  conn.on('response', (sid: number, h: Array<[string, string]>) => events.push(`response ${sid} ${headerValue(h, ':status')}`));
  conn.on('data', (sid: number, bytes: Buffer) => events.push(`data ${sid} ${bytes.toString()}`));
  conn.on('end', (sid: number) => events.push(`end ${sid}`));
  const id = conn.request(get('/some/path?q=1'));
  const s = await conn.waitFor(id, 'end');
  expect(events).toEqual([`response ${id} 200`, `data ${id} hello`, `end ${id}`]);
  expect(s.status).toBe(200);
  expect(headerValue(s.response, 'x-long')).toBe(value);
  expect(headerValue(s.response, 'x-echo-path')).toBe('/some/path?q=1');
  expect(Buffer.concat(s.data).toString()).toBe('hello');
  expect(s.resetCode).toBeNull();
  // The value really came Huffman-coded (so the decoder, not a raw copy, produced it).
  expect(blocks[0]!.includes(huffmanEncode(Buffer.from(value)))).toBe(true);
});

test('headers the server indexed are reused from the dynamic table across several responses', async () => {
  handle = (stream, headers) => {
    stream.respond({ ':status': 200, 'x-session': 'the-same-value-every-time', 'x-n': headers[':path']!.slice(1) as string });
    stream.end();
  };
  const conn = await connect();
  const blocks = captureBlocks(conn);
  for (let n = 1; n <= 5; n++) {
    const s = await conn.waitFor(conn.request(get(`/${n}`)), 'end');
    expect([s.status, headerValue(s.response, 'x-session'), headerValue(s.response, 'x-n')]).toEqual([200, 'the-same-value-every-time', String(n)]);
  }
  expect(conn.decoder.table.entries).toContainEqual(['x-session', 'the-same-value-every-time']);
  // Later blocks name the indexed fields by index: much shorter than the first.
  expect(blocks).toHaveLength(5);
  expect(blocks[4]!.length).toBeLessThan(blocks[0]!.length / 2);
});

test('a server RST_STREAM is reported with its code; waiting for a response on it rejects saying so', async () => {
  handle = (stream) => stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  const conn = await connect();
  const id = conn.request(get('/reset'));
  expect((await conn.waitFor(id, 'reset')).resetCode).toBe(ErrorCode.ENHANCE_YOUR_CALM);
  await expect(conn.waitFor(id, 'response', 500)).rejects.toThrow(/reset with ENHANCE_YOUR_CALM/);
  // The connection carries on.
  handle = (stream) => stream.respond({ ':status': 204 }, { endStream: true });
  expect((await conn.waitFor(conn.request(get('/next')), 'end')).status).toBe(204);
});

test('HEADERS with priority and padding, a PRIORITY frame, and a block split over CONTINUATION frames are all understood', async () => {
  handle = (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(`${String(headers['x-big'] ?? '').length} ${String(headers['x-last'] ?? '-')}`);
  };
  const conn = await connect({ settings: [[Setting.ENABLE_PUSH, 0], [Setting.MAX_HEADER_LIST_SIZE, 1 << 20]] });
  conn.writeRaw(priorityFrame(1, { dependsOn: 0, weight: 200 }));
  const small = conn.request(get('/small'), { priority: { dependsOn: 0, weight: 16, exclusive: true }, padLength: 20 });
  expect(Buffer.concat((await conn.waitFor(small, 'end')).data).toString()).toBe('0 -');
  // 40 000 octets of header block: one HEADERS and two CONTINUATION frames.
  const big = conn.request([...get('/big'), ['x-big', 'v'.repeat(40_000)], ['x-last', 'here']], { padLength: 3 });
  expect(Buffer.concat((await conn.waitFor(big, 'end')).data).toString()).toBe('40000 here');
});

test('a request body sent in DATA frames reaches the server', async () => {
  handle = (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(Buffer.concat(chunks).toString().toUpperCase());
    });
  };
  const conn = await connect();
  const id = conn.request([[':method', 'POST'], ...get('/upload').slice(1)], { endStream: false });
  conn.data(id, 'abc');
  conn.data(id, 'def', true, 10); // padded: the server must strip it
  const s = await conn.waitFor(id, 'end');
  expect([s.status, Buffer.concat(s.data).toString()]).toEqual([200, 'ABCDEF']);
});

test('with WINDOW_UPDATEs off, the server is blocked once the initial window is full; granting window lets it finish', async () => {
  const size = 1 << 20;
  let response: http2.ServerHttp2Stream | undefined;
  handle = (stream) => {
    response = stream;
    stream.respond({ ':status': 200 });
    stream.end(Buffer.alloc(size, 1));
  };
  const conn = await connect({ autoWindowUpdate: false });
  const id = conn.request(get('/big'));
  const s = conn.stream(id);
  await conn.until('the initial window of data', () => s.dataBytes === 65_535);
  // The server holds the rest: its view of our window is 0 and its response is not finished.
  const serverSession = [...sessions].find((x) => x.state.remoteWindowSize === 0);
  expect(serverSession).toBeDefined();
  expect(response!.writableFinished).toBe(false);
  expect(s.ended).toBe(false);
  conn.writeRaw(Buffer.concat([windowUpdateFrame(0, size), windowUpdateFrame(id, size)]));
  conn.autoWindowUpdate = true;
  await conn.waitFor(id, 'end');
  expect(s.dataBytes).toBe(size);
});

test('PINGs are answered, server SETTINGS acknowledged, and a GOAWAY is reported with its code', async () => {
  const conn = await connect({ settings: [[Setting.ENABLE_PUSH, 0], [Setting.INITIAL_WINDOW_SIZE, 1 << 20]] });
  handle = (stream) => stream.respond({ ':status': 200 }, { endStream: true });
  await conn.waitFor(conn.request(get('/')), 'end');
  // Ours is the session that got our SETTINGS (an earlier test's may still be closing).
  const session = [...sessions].find((x) => !x.closed && x.remoteSettings.initialWindowSize === 1 << 20)!;
  expect(session).toBeDefined();
  expect(session.pendingSettingsAck).toBe(false); // ours acknowledged the server's SETTINGS
  expect(await new Promise<boolean>((resolve) => session.ping((err) => resolve(err === null)))).toBe(true);
  session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 1);
  const goaway = await conn.waitForGoaway();
  expect([goaway.code, goaway.lastStreamId]).toEqual([ErrorCode.ENHANCE_YOUR_CALM, 1]);
  session.destroy();
  await conn.closed; // the 'closed' promise resolves when the server drops the connection
  expect(conn.isClosed).toBe(true);
});
