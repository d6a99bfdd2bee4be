/**
 * The ClientHello reader the HTTPS listeners use to pick out TLS-ALPN-01 validations: real
 * ClientHellos captured from Node's TLS client, re-fragmented, truncated and mangled.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { CLIENT_HELLO_LIMIT, inspectClientHello, type ClientHelloVerdict } from '../../src/data/client-hello';

/** The first TLS record a client sends: start a TCP server, let tls.connect talk to it, keep the bytes. */
async function captureHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const received = new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (socket) => {
        let buffered = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          buffered = Buffer.concat([buffered, chunk]);
          // Node sends the hello as one record: wait for all of it (independent of the reader under test).
          if (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt16BE(3)) {
            socket.destroy();
            resolve(buffered.subarray(0, 5 + buffered.readUInt16BE(3)));
          }
        });
        socket.on('error', reject);
      });
    });
    const client = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    client.on('error', () => {}); // the capture server hangs up on it
    try {
      return await received;
    } finally {
      client.destroy();
    }
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Split one record's handshake payload into records of the given sizes (cycled), same header bytes. */
function refragment(hello: Buffer, sizes: readonly number[]): Buffer {
  const header = hello.subarray(0, 3);
  const payload = hello.subarray(5);
  const out: Buffer[] = [];
  let i = 0;
  for (let at = 0; at < payload.length; i++) {
    const size = Math.min(sizes[i % sizes.length]!, payload.length - at);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(size);
    out.push(header, len, payload.subarray(at, at + size));
    at += size;
  }
  return Buffer.concat(out);
}

/** Offsets into a captured hello's handshake body, found by walking it (test-side, independent). */
function layout(hello: Buffer): { extensionsAt: number; extensions: Array<{ type: number; at: number; length: number }> } {
  let p = 5 + 4 + 2 + 32;
  p += 1 + hello[p]!;
  p += 2 + hello.readUInt16BE(p);
  p += 1 + hello[p]!;
  const extensionsAt = p;
  const end = p + 2 + hello.readUInt16BE(p);
  const extensions: Array<{ type: number; at: number; length: number }> = [];
  for (p += 2; p < end; ) {
    const length = hello.readUInt16BE(p + 2);
    extensions.push({ type: hello.readUInt16BE(p), at: p, length });
    p += 4 + length;
  }
  return { extensionsAt, extensions };
}

const hello = (serverName: string | null, alpn: string[]): ClientHelloVerdict => ({ kind: 'hello', serverName, alpn });
const NOT_TLS: ClientHelloVerdict = { kind: 'not-tls' };

let acme: Buffer;
let browser: Buffer;
let bare: Buffer;
let tls12: Buffer;

beforeAll(async () => {
  acme = await captureHello({ servername: 'Example.COM', ALPNProtocols: ['acme-tls/1'] });
  browser = await captureHello({ servername: 'matrix.example.org', ALPNProtocols: ['h2', 'http/1.1'] });
  bare = await captureHello({}); // IP literal host: no SNI; no ALPN
  tls12 = await captureHello({ servername: 'localhost', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
});

describe('real ClientHellos from Node', () => {
  test('SNI (lower-cased) and the ALPN offer of an ACME validation', () => {
    expect(inspectClientHello(acme)).toEqual(hello('example.com', ['acme-tls/1']));
  });

  test('an ordinary HTTPS client', () => {
    expect(inspectClientHello(browser)).toEqual(hello('matrix.example.org', ['h2', 'http/1.1']));
  });

  test('no SNI and no ALPN', () => {
    expect(inspectClientHello(bare)).toEqual(hello(null, []));
  });

  test('a TLS 1.2-only client', () => {
    expect(inspectClientHello(tls12)).toEqual(hello('localhost', ['http/1.1']));
  });

  test('bytes after the hello (the next flight) do not matter', () => {
    expect(inspectClientHello(Buffer.concat([acme, Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0xde, 0xad])]))).toEqual(
      hello('example.com', ['acme-tls/1']),
    );
  });

  test('a large hello (many ALPN protocols) under the limit', async () => {
    const protocols = Array.from({ length: 50 }, (_, i) => `p${i}-${'x'.repeat(200)}`);
    const big = await captureHello({ servername: 'big.example', ALPNProtocols: protocols });
    expect(big.length).toBeGreaterThan(10_000);
    expect(big.length).toBeLessThan(CLIENT_HELLO_LIMIT);
    expect(inspectClientHello(big)).toEqual(hello('big.example', protocols));
    // ...and over a smaller limit it is passed through rather than waited for
    expect(inspectClientHello(big.subarray(0, 100), { limit: 4096 })).toEqual(NOT_TLS);
    expect(inspectClientHello(big, { limit: 4096 })).toEqual(NOT_TLS);
  });
});

describe('arriving in pieces', () => {
  test('every prefix of a hello needs more, with a lower bound that never overshoots', () => {
    for (const sample of [acme, browser, bare, tls12]) {
      const full = inspectClientHello(sample);
      expect(full.kind).toBe('hello');
      for (let n = 0; n < sample.length; n++) {
        const v = inspectClientHello(sample.subarray(0, n));
        expect(v.kind).toBe('need-more');
        if (v.kind === 'need-more') {
          expect(v.atLeast).toBeGreaterThan(n);
          expect(v.atLeast).toBeLessThanOrEqual(sample.length);
        }
      }
    }
  });

  test.each([[[1]], [[2]], [[3]], [[7]], [[64]], [[1, 200, 3]], [[1000]]])('the hello split into handshake records of %j bytes', (sizes) => {
    const split = refragment(acme, sizes);
    expect(split.length).toBeGreaterThan(acme.length);
    expect(inspectClientHello(split)).toEqual(hello('example.com', ['acme-tls/1']));
    // every prefix (a sample of them for the longest splits, each look being a walk from the start)
    const step = split.length > 4000 ? 3 : 1;
    for (let n = 0; n < split.length; n += step) {
      const v = inspectClientHello(split.subarray(0, n));
      expect(v.kind).toBe('need-more');
      if (v.kind === 'need-more') expect(v.atLeast).toBeGreaterThan(n);
    }
  });

  /** Feed `bytes` one at a time as a listener would: inspect once `atLeast` are in, resuming from the last progress. */
  function feed(bytes: Buffer, limit?: number): { verdict: ClientHelloVerdict; inspections: number } {
    let verdict = inspectClientHello(bytes.subarray(0, 0));
    let inspections = 1;
    for (let n = 1; n <= bytes.length && verdict.kind === 'need-more'; n++) {
      if (n < verdict.atLeast) continue;
      verdict = inspectClientHello(bytes.subarray(0, n), { from: verdict.progress, ...(limit === undefined ? {} : { limit }) });
      inspections++;
    }
    return { verdict, inspections };
  }

  const countRecords = (bytes: Buffer): number => {
    let records = 0;
    for (let at = 0; at < bytes.length; at += 5 + bytes.readUInt16BE(at + 3)) records++;
    return records;
  };

  test('fed byte by byte, re-inspecting only once `atLeast` bytes are in', () => {
    const split = refragment(browser, [5, 1, 300]);
    const { verdict, inspections } = feed(split);
    expect(verdict).toEqual(hello('matrix.example.org', ['h2', 'http/1.1']));
    // per record: its first header byte, its second, the rest of the header, the body; plus the start
    // and the handshake header
    expect(inspections).toBeLessThanOrEqual(4 * countRecords(split) + 2);
  });

  test('resuming from the progress gives what a fresh look gives', () => {
    for (const sample of [acme, refragment(acme, [1]), refragment(browser, [3, 50])]) {
      let progress: ClientHelloVerdict = inspectClientHello(sample.subarray(0, 0));
      for (let n = 1; n <= sample.length; n++) {
        const due = progress.kind === 'need-more' && n >= progress.atLeast;
        // each look a listener takes, compared with a fresh look at a sample of the prefixes
        const check = n % 7 === 0 || n === sample.length;
        if (!due && !check) continue;
        const resumed = progress.kind === 'need-more' ? inspectClientHello(sample.subarray(0, n), { from: progress.progress }) : progress;
        if (check) expect(resumed).toEqual(inspectClientHello(sample.subarray(0, n)));
        if (due) progress = resumed;
      }
      expect(progress.kind).toBe('hello');
    }
  });

  test('the worst fragmentation (one-byte records up to the limit) stays cheap', () => {
    const payload = Buffer.alloc(4000);
    payload[0] = 0x01; // a ClientHello longer than what fits under the limit in one-byte records
    payload.writeUIntBE(payload.length - 4, 1, 3);
    const worst = refragment(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0, 0]), payload]), [1]);
    const started = performance.now();
    const { verdict, inspections } = feed(worst);
    expect(verdict).toEqual(NOT_TLS);
    expect(inspections).toBeGreaterThan(5000);
    expect(performance.now() - started).toBeLessThan(500);
  });
});

describe('not a ClientHello: pass through', () => {
  test.each([
    ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n')],
    ['its first byte alone', Buffer.from('G')],
    ['an HTTP/2 preface', Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')],
    ['an SSLv2-style hello', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])],
    ['an alert record', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])],
    ['a handshake record with a foreign version', Buffer.from([0x16, 0x02])],
    ['a zero-length handshake record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])],
    ['a record longer than TLS allows', Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])],
    ['a ServerHello', Buffer.from([0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])],
    ['an empty ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00])],
    ['a ClientHello declared larger than the limit', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x40, 0x00])],
    ['a ClientHello declared 16 MiB', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff])],
  ])('%s', (_label, bytes) => {
    expect(inspectClientHello(bytes)).toEqual(NOT_TLS);
  });

  test('nothing yet: need more', () => {
    expect(inspectClientHello(Buffer.alloc(0))).toMatchObject({ kind: 'need-more', atLeast: 1 });
    expect(inspectClientHello(Buffer.from([0x16]))).toMatchObject({ kind: 'need-more', atLeast: 2 });
    expect(inspectClientHello(Buffer.from([0x16, 0x03]))).toMatchObject({ kind: 'need-more', atLeast: 5 });
  });

  test('another record type in the middle of a fragmented hello', () => {
    const split = refragment(acme, [10]);
    const mangled = Buffer.from(split);
    mangled[15] = 0x17; // second record: application data
    expect(inspectClientHello(mangled)).toEqual(NOT_TLS);
  });

  test('an extensions length that disagrees with the hello', () => {
    const { extensionsAt } = layout(acme);
    const longer = Buffer.from(acme);
    longer.writeUInt16BE(longer.readUInt16BE(extensionsAt) + 1, extensionsAt);
    expect(inspectClientHello(longer)).toEqual(NOT_TLS);
    const shorter = Buffer.from(acme);
    shorter.writeUInt16BE(shorter.readUInt16BE(extensionsAt) - 1, extensionsAt);
    expect(inspectClientHello(shorter)).toEqual(NOT_TLS);
  });

  test('a duplicated extension', () => {
    const { extensionsAt, extensions } = layout(browser);
    const sni = extensions.find((e) => e.type === 0)!;
    const copy = browser.subarray(sni.at, sni.at + 4 + sni.length);
    const body = Buffer.concat([browser.subarray(9, extensionsAt + 2), copy, browser.subarray(extensionsAt + 2)]);
    const grown = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0, 0, 0x01, 0, 0, 0]), body]);
    grown.writeUInt16BE(grown.length - 5, 3);
    grown.writeUIntBE(grown.length - 9, 6, 3);
    grown.writeUInt16BE(grown.readUInt16BE(extensionsAt) + copy.length, extensionsAt);
    expect(inspectClientHello(grown)).toEqual(NOT_TLS);
  });

  test('SNI and ALPN contents that OpenSSL would not take either', () => {
    const { extensions } = layout(acme);
    const sni = extensions.find((e) => e.type === 0)!;
    const alpn = extensions.find((e) => e.type === 16)!;
    const withNameByte = (at: number, byte: number): Buffer => {
      const b = Buffer.from(acme);
      b[at] = byte;
      return b;
    };
    const nameAt = sni.at + 4 + 2 + 1 + 2; // type, length, list length, name type, name length
    expect(inspectClientHello(withNameByte(nameAt, 0x00))).toEqual(NOT_TLS); // NUL in the name
    expect(inspectClientHello(withNameByte(nameAt, 0x20))).toEqual(NOT_TLS); // space
    expect(inspectClientHello(withNameByte(sni.at + 6, 0x01))).toEqual(NOT_TLS); // not host_name
    expect(inspectClientHello(withNameByte(alpn.at + 6, 0x00))).toEqual(NOT_TLS); // empty protocol name
  });

  test('mangled hellos never throw and never claim more than they carry', () => {
    let seed = 0x2545f491;
    const random = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x1_0000_0000;
    };
    const kinds = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const base = [acme, browser, bare, tls12][i % 4]!;
      const bytes = Buffer.from(base.subarray(0, 1 + Math.floor(random() * base.length)));
      const flips = 1 + Math.floor(random() * 4);
      for (let f = 0; f < flips; f++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      const v = inspectClientHello(bytes);
      kinds.add(v.kind);
      if (v.kind === 'need-more') expect(v.atLeast).toBeGreaterThan(bytes.length);
      if (v.kind === 'hello') {
        expect(v.serverName === null || /^[\x21-\x7e]+$/.test(v.serverName)).toBe(true);
        expect(v.serverName).toBe(v.serverName?.toLowerCase() ?? null);
      }
    }
    expect([...kinds].sort()).toEqual(['hello', 'need-more', 'not-tls']);
  });
});
