/**
 * The HPACK code of the raw HTTP/2 test client (test/support/hpack.ts) against RFC 7541's own
 * examples: Appendix C.4 (requests, Huffman) and C.6 (responses, Huffman, a 256-octet table with
 * evictions), plus the Huffman code and the decoder's error cases.
 */
import {
  encodeHeaders,
  encodeInteger,
  HpackDecoder,
  HpackError,
  HUFFMAN_CODES,
  huffmanDecode,
  huffmanEncode,
  indexedField,
  literalField,
  sizeUpdate,
  type Header,
} from '../support/hpack';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** The dynamic table as the RFC prints it: [name, value, size], newest first, and the total. */
function table(d: HpackDecoder): { entries: Array<[string, string, number]>; size: number } {
  const t = d.table;
  return { entries: t.entries.map(([n, v]) => [n, v, n.length + v.length + 32]), size: t.size };
}

describe('Huffman code (Appendix B)', () => {
  test('the codes derived from the lengths are the RFC ones', () => {
    // A sample across lengths 5..30, from Appendix B.
    const expected: Array<[number, number]> = [
      [0, 0x1ff8], [32, 0x14], [48, 0x0], [58, 0x5c], [65, 0x21], [88, 0xfc], [92, 0x7fff0], [97, 0x3],
      [123, 0x7ffe], [127, 0xffffffc], [128, 0xfffe6], [195, 0x7fff1], [203, 0x7ffffde], [255, 0x3ffffee], [256, 0x3fffffff],
    ];
    for (const [symbol, code] of expected) expect([symbol, HUFFMAN_CODES[symbol]]).toEqual([symbol, code]);
  });

  test.each([
    ['www.example.com', 'f1e3 c2e5 f23a 6ba0 ab90 f4ff'],
    ['no-cache', 'a8eb 1064 9cbf'],
    ['custom-key', '25a8 49e9 5ba9 7d7f'],
    ['custom-value', '25a8 49e9 5bb8 e8b4 bf'],
    ['302', '6402'],
    ['private', 'aec3 771a 4b'],
    ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff'],
    ['https://www.example.com', '9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3'],
  ])('%s (C.4 / C.6 strings) decodes and encodes', (text, coded) => {
    expect(huffmanDecode(hex(coded)).toString('latin1')).toBe(text);
    expect(huffmanEncode(Buffer.from(text, 'latin1')).toString('hex')).toBe(hex(coded).toString('hex'));
  });

  test('every octet round-trips', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_v, i) => i));
    expect(huffmanDecode(huffmanEncode(all))).toEqual(all);
    for (let i = 0; i < 256; i++) expect(huffmanDecode(huffmanEncode(Buffer.from([i, i, i])))).toEqual(Buffer.from([i, i, i]));
  });

  test('padding longer than 7 bits, padding not made of ones, and EOS are errors (§5.2)', () => {
    expect(() => huffmanDecode(hex('6402 ff'))).toThrow(HpackError); // '302' + a whole octet of padding
    expect(() => huffmanDecode(Buffer.from([0x00]))).toThrow(/padding/); // '0' then 3 zero bits
    expect(() => huffmanDecode(hex('ffff ffff'))).toThrow(/EOS/);
  });
});

describe('integers (§5.1, C.1)', () => {
  test.each([
    [10, 5, '0a'],
    [1337, 5, '1f9a0a'],
    [42, 8, '2a'],
  ])('%d with a %d-bit prefix is %s', (value, prefix, coded) => {
    expect(encodeInteger(value, prefix).toString('hex')).toBe(coded);
  });
});

describe('C.4 requests with Huffman coding', () => {
  const blocks = [
    '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
    '8286 84be 5886 a8eb 1064 9cbf',
    '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
  ];
  const first: Header[] = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']];
  const lists: Header[][] = [
    first,
    [...first, ['cache-control', 'no-cache']],
    [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
  ];
  const tables = [
    { entries: [[':authority', 'www.example.com', 57]], size: 57 },
    { entries: [['cache-control', 'no-cache', 53], [':authority', 'www.example.com', 57]], size: 110 },
    { entries: [['custom-key', 'custom-value', 54], ['cache-control', 'no-cache', 53], [':authority', 'www.example.com', 57]], size: 164 },
  ];

  test('three requests on one connection decode, with the dynamic table after each as printed', () => {
    const d = new HpackDecoder(4096);
    blocks.forEach((block, i) => {
      expect(d.decode(hex(block))).toEqual(lists[i]);
      expect(table(d)).toEqual(tables[i]);
    });
  });
});

describe('C.6 responses with Huffman coding (256-octet table: evictions)', () => {
  const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
  const date2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
  const url = 'https://www.example.com';
  const cookie = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
  const blocks = [
    '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
    '4883 640e ffc1 c0bf',
    '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
  ];
  const lists: Header[][] = [
    [[':status', '302'], ['cache-control', 'private'], ['date', date1], ['location', url]],
    [[':status', '307'], ['cache-control', 'private'], ['date', date1], ['location', url]],
    [[':status', '200'], ['cache-control', 'private'], ['date', date2], ['location', url], ['content-encoding', 'gzip'], ['set-cookie', cookie]],
  ];
  const tables = [
    { entries: [['location', url, 63], ['date', date1, 65], ['cache-control', 'private', 52], [':status', '302', 42]], size: 222 },
    { entries: [[':status', '307', 42], ['location', url, 63], ['date', date1, 65], ['cache-control', 'private', 52]], size: 222 },
    { entries: [['set-cookie', cookie, 98], ['content-encoding', 'gzip', 52], ['date', date2, 65]], size: 215 },
  ];

  test('three responses decode, evicting the oldest entries as printed', () => {
    const d = new HpackDecoder(256);
    blocks.forEach((block, i) => {
      expect(d.decode(hex(block))).toEqual(lists[i]);
      expect(table(d)).toEqual(tables[i]);
    });
  });
});

describe('decoder rules', () => {
  test('size updates: evict, must come first, may not pass the advertised limit', () => {
    const d = new HpackDecoder(4096);
    d.decode(literalField('x-a', 'a'.repeat(100), { indexing: 'incremental' }));
    expect(d.table.entries).toHaveLength(1);
    expect(d.decode(Buffer.concat([sizeUpdate(0), sizeUpdate(4096), indexedField(2)]))).toEqual([[':method', 'GET']]);
    expect(d.table.entries).toHaveLength(0);
    expect(() => d.decode(Buffer.concat([indexedField(2), sizeUpdate(100)]))).toThrow(/after a header field/);
    expect(() => d.decode(sizeUpdate(4097))).toThrow(/over the limit/);
  });

  test('an entry larger than the table empties it without error (§4.4)', () => {
    const d = new HpackDecoder(100);
    d.decode(literalField('a', 'b', { indexing: 'incremental' }));
    expect(d.decode(literalField('x-big', 'v'.repeat(100), { indexing: 'incremental' }))).toEqual([['x-big', 'v'.repeat(100)]]);
    expect(d.table).toEqual({ entries: [], size: 0, maxSize: 100 });
  });

  test('bad indexes and truncated blocks are errors', () => {
    const d = new HpackDecoder();
    expect(() => d.decode(Buffer.from([0x80]))).toThrow(/index 0/);
    expect(() => d.decode(indexedField(62))).toThrow(/neither table/);
    expect(() => d.decode(hex('4088 25a8'))).toThrow(/runs past/);
    expect(() => d.decode(Buffer.from([0x7f]))).toThrow(/truncated/);
  });

  test('the encoder writes every representation as asked (C.2 examples), and they read back', () => {
    expect(literalField('custom-key', 'custom-header', { indexing: 'incremental' }).toString('hex')).toBe('400a637573746f6d2d6b65790d637573746f6d2d686561646572');
    expect(literalField(4, '/sample/path').toString('hex')).toBe('040c2f73616d706c652f70617468');
    expect(literalField('password', 'secret', { indexing: 'never' }).toString('hex')).toBe('100870617373776f726406736563726574');
    expect(indexedField(2).toString('hex')).toBe('82');
    const list: Header[] = [[':path', '/'], ['X-Upper', 'v'], ['connection', 'close'], [':method', 'get']];
    expect(new HpackDecoder().decode(encodeHeaders(list))).toEqual(list);
    expect(new HpackDecoder().decode(encodeHeaders(list, { huffman: true, indexing: 'never' }))).toEqual(list);
  });
});
