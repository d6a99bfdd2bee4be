/**
 * HPACK (RFC 7541) for the raw HTTP/2 test client (h2raw.ts).
 *
 * The encoder side is deliberately dumb: it writes exactly the representations a test asks for
 * (literal or indexed, raw or Huffman, with or without indexing, table size updates) and never
 * checks or normalises anything, so tests can send what a well-behaved encoder never would:
 * uppercase names, connection-specific headers, pseudo-headers out of order, HPACK bombs. It keeps
 * no dynamic table: a test that indexes a field knows it becomes index 62 (the newest entry).
 *
 * The decoder side is complete and strict (static and dynamic tables, eviction, size updates,
 * Huffman), because it must read whatever nghttp2 sends: a decoding error there is a real finding.
 *
 * Strings are handled as latin1 (one char per octet) so that any octet can be sent and octet
 * counts (entry sizes, lengths) stay exact; pass a Buffer to send other bytes.
 */

export type Header = [name: string, value: string];

export class HpackError extends Error {}

/** RFC 7541 Appendix A: index 1 is the first entry. */
export const STATIC_TABLE: readonly Header[] = (
  [
    [':authority'], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
    [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
    [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset'],
    ['accept-encoding', 'gzip, deflate'], ['accept-language'], ['accept-ranges'], ['accept'],
    ['access-control-allow-origin'], ['age'], ['allow'], ['authorization'], ['cache-control'],
    ['content-disposition'], ['content-encoding'], ['content-language'], ['content-length'],
    ['content-location'], ['content-range'], ['content-type'], ['cookie'], ['date'], ['etag'], ['expect'],
    ['expires'], ['from'], ['host'], ['if-match'], ['if-modified-since'], ['if-none-match'], ['if-range'],
    ['if-unmodified-since'], ['last-modified'], ['link'], ['location'], ['max-forwards'],
    ['proxy-authenticate'], ['proxy-authorization'], ['range'], ['referer'], ['refresh'], ['retry-after'],
    ['server'], ['set-cookie'], ['strict-transport-security'], ['transfer-encoding'], ['user-agent'],
    ['vary'], ['via'], ['www-authenticate'],
  ] as Array<[string, string?]>
).map(([name, value]) => [name, value ?? ''] as Header);

/** Index of the newest dynamic-table entry (the first index after the static table). */
export const FIRST_DYNAMIC_INDEX = STATIC_TABLE.length + 1;

// ---------------------------------------------------------------------------------------------
// Huffman code (RFC 7541 Appendix B)

/**
 * Code length in bits of each symbol 0..255 and EOS (256), from Appendix B. The HPACK code is
 * canonical (within one length, codes are consecutive in symbol order, shorter lengths first), so
 * the codes themselves follow from the lengths: storing 257 small numbers instead of 257 hex codes
 * keeps the table reviewable. test/unit/hpack.test.ts checks codes against the RFC's examples.
 */
// prettier-ignore
const CODE_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //   0-15
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //  16-31
   6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6, //  32-47  ' ' .. '/'
   5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10, //  48-63  '0' .. '?'
  13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, //  64-79  '@' .. 'O'
   7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6, //  80-95  'P' .. '_'
  15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5, //  96-111 '`' .. 'o'
   6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28, // 112-127 'p' .. DEL
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128-143
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144-159
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160-175
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176-191
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192-207
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208-223
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224-239
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240-255
  30,                                                             // EOS
];
const EOS = 256;

/** The code of each symbol (right-aligned), derived from CODE_LENGTHS as RFC 7541 defines it. */
export const HUFFMAN_CODES: readonly number[] = (() => {
  const order = CODE_LENGTHS.map((_n, symbol) => symbol).sort((a, b) => CODE_LENGTHS[a]! - CODE_LENGTHS[b]! || a - b);
  const codes: number[] = [];
  let code = 0;
  let length = CODE_LENGTHS[order[0]!]!;
  for (const symbol of order) {
    code *= 2 ** (CODE_LENGTHS[symbol]! - length); // moving to a longer length appends zeros
    length = CODE_LENGTHS[symbol]!;
    codes[symbol] = code++;
  }
  return codes;
})();

/**
 * The decoding tree as flat arrays: node n has children at tree[2n] (bit 0) and tree[2n + 1]
 * (bit 1); a child value below 0 is a leaf for symbol -value - 1, 0 means "no such code".
 */
const TREE: number[] = (() => {
  const tree = [0, 0];
  let nodes = 1;
  for (let symbol = 0; symbol <= EOS; symbol++) {
    let node = 0;
    for (let bit = CODE_LENGTHS[symbol]! - 1; bit >= 0; bit--) {
      const slot = 2 * node + (Math.floor(HUFFMAN_CODES[symbol]! / 2 ** bit) & 1);
      if (bit === 0) tree[slot] = -symbol - 1;
      else {
        if (tree[slot] === 0) {
          tree[slot] = nodes++;
          tree.push(0, 0);
        }
        node = tree[slot]!;
      }
    }
  }
  return tree;
})();

/** Decode a Huffman string; errors as §5.2 requires (EOS inside, padding > 7 bits or not all ones). */
export function huffmanDecode(input: Uint8Array): Buffer {
  const out: number[] = [];
  let node = 0;
  let pendingBits = 0; // bits read since the last complete symbol
  let pendingAllOnes = true;
  for (const byte of input) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >> bit) & 1;
      const next = TREE[2 * node + one]!;
      pendingBits++;
      pendingAllOnes &&= one === 1;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) throw new HpackError('Huffman string contains EOS');
        out.push(symbol);
        node = 0;
        pendingBits = 0;
        pendingAllOnes = true;
      } else if (next === 0) {
        throw new HpackError('invalid Huffman code');
      } else node = next;
    }
  }
  if (pendingBits > 7) throw new HpackError('Huffman padding longer than 7 bits');
  if (!pendingAllOnes) throw new HpackError('Huffman padding is not a prefix of EOS');
  return Buffer.from(out);
}

/** Encode with the Huffman code, padded with the most significant bits of EOS (all ones). */
export function huffmanEncode(input: Uint8Array): Buffer {
  const out: number[] = [];
  // Numbers, not 32-bit ints: a 30-bit code plus 7 pending bits does not fit in `|` arithmetic.
  let acc = 0;
  let bits = 0;
  for (const byte of input) {
    acc = acc * 2 ** CODE_LENGTHS[byte]! + HUFFMAN_CODES[byte]!;
    bits += CODE_LENGTHS[byte]!;
    while (bits >= 8) {
      bits -= 8;
      out.push(Math.floor(acc / 2 ** bits) & 0xff);
      acc %= 2 ** bits;
    }
  }
  if (bits > 0) out.push(((acc << (8 - bits)) | (0xff >> bits)) & 0xff);
  return Buffer.from(out);
}

// ---------------------------------------------------------------------------------------------
// Primitive representations (§5.1 integers, §5.2 strings)

/** An integer with an N-bit prefix; `first` carries the representation's pattern bits. */
export function encodeInteger(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

function encodeString(value: string | Buffer, huffman: boolean): Buffer {
  const raw = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  const bytes = huffman ? huffmanEncode(raw) : raw;
  return Buffer.concat([encodeInteger(bytes.length, 7, huffman ? 0x80 : 0), bytes]);
}

/** Reads primitives from one header block, failing on truncation. */
class Reader {
  offset = 0;
  constructor(private readonly buf: Uint8Array) {}
  get done(): boolean {
    return this.offset >= this.buf.length;
  }
  peek(): number {
    if (this.done) throw new HpackError('header block truncated');
    return this.buf[this.offset]!;
  }
  integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.peek() & max;
    this.offset++;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      const b = this.peek();
      this.offset++;
      value += (b & 127) * 2 ** shift;
      // No legitimate length or index comes near this: a guard against endless continuation bytes.
      if (value > 2 ** 32) throw new HpackError('integer overflow');
      if ((b & 128) === 0) return value;
    }
  }
  string(): string {
    const huffman = (this.peek() & 0x80) !== 0;
    const length = this.integer(7);
    if (this.offset + length > this.buf.length) throw new HpackError('string runs past the header block');
    const bytes = this.buf.subarray(this.offset, this.offset + length);
    this.offset += length;
    return (huffman ? huffmanDecode(bytes) : Buffer.from(bytes)).toString('latin1');
  }
}

// ---------------------------------------------------------------------------------------------
// Encoder: one function per representation (§6); concatenate the results into a header block.

export type Indexing = 'incremental' | 'none' | 'never';

/** §6.1 Indexed Header Field: 1..61 static, 62.. dynamic (62 = newest). */
export function indexedField(index: number): Buffer {
  return encodeInteger(index, 7, 0x80);
}

/**
 * §6.2 literal field. `name` is a string (literal name) or an index whose name is reused.
 * Indexing: 'incremental' (adds to the peer's dynamic table), 'none' (default), 'never'.
 */
export function literalField(
  name: string | Buffer | number,
  value: string | Buffer,
  opts: { indexing?: Indexing; huffman?: boolean } = {},
): Buffer {
  const indexing = opts.indexing ?? 'none';
  const [prefixBits, pattern] = indexing === 'incremental' ? [6, 0x40] : indexing === 'never' ? [4, 0x10] : [4, 0x00];
  const huffman = opts.huffman ?? false;
  const head = typeof name === 'number' ? encodeInteger(name, prefixBits, pattern) : Buffer.concat([Buffer.from([pattern]), encodeString(name, huffman)]);
  return Buffer.concat([head, encodeString(value, huffman)]);
}

/** §6.3 Dynamic Table Size Update (only valid at the start of a header block). */
export function sizeUpdate(size: number): Buffer {
  return encodeInteger(size, 5, 0x20);
}

/** Every field as a literal without indexing, in the given order, names and values verbatim. */
export function encodeHeaders(headers: ReadonlyArray<readonly [string, string]>, opts: { indexing?: Indexing; huffman?: boolean } = {}): Buffer {
  return Buffer.concat(headers.map(([name, value]) => literalField(name, value, opts)));
}

// ---------------------------------------------------------------------------------------------
// Decoder

/** An entry's size counts 32 octets of overhead (§4.1). */
const entrySize = ([name, value]: Header): number => name.length + value.length + 32;

export class HpackDecoder {
  /** Newest first: dynamic index 62 is entries[0]. */
  private readonly entries: Header[] = [];
  private size = 0;
  private maxSize: number;

  /**
   * @param limit the SETTINGS_HEADER_TABLE_SIZE this side advertised: the most a size update
   *        may ask for (and the initial table size)
   */
  constructor(private limit = 4096) {
    this.maxSize = limit;
  }

  /** The current table (newest first) and its size in octets, for tests. */
  get table(): { entries: readonly Header[]; size: number; maxSize: number } {
    return { entries: this.entries, size: this.size, maxSize: this.maxSize };
  }

  /** A new advertised limit (after sending SETTINGS_HEADER_TABLE_SIZE). */
  setLimit(limit: number): void {
    this.limit = limit;
    if (this.maxSize > limit) this.resize(limit);
  }

  /** Decode one complete header block (HEADERS + CONTINUATION payloads joined). */
  decode(block: Uint8Array): Header[] {
    const r = new Reader(block);
    const headers: Header[] = [];
    while (!r.done) {
      const b = r.peek();
      if (b & 0x80) {
        const index = r.integer(7);
        if (index === 0) throw new HpackError('indexed field with index 0');
        headers.push([...this.lookup(index)] as Header);
      } else if (b & 0x40) {
        const field = this.literal(r, 6);
        headers.push(field);
        this.add(field);
      } else if (b & 0x20) {
        // §4.2: size updates come first in a block, before any field.
        if (headers.length > 0) throw new HpackError('dynamic table size update after a header field');
        const size = r.integer(5);
        if (size > this.limit) throw new HpackError(`dynamic table size update to ${size} over the limit of ${this.limit}`);
        this.resize(size);
      } else {
        headers.push(this.literal(r, 4)); // without indexing (0000) or never indexed (0001)
      }
    }
    return headers;
  }

  private literal(r: Reader, prefixBits: number): Header {
    const nameIndex = r.integer(prefixBits);
    const name = nameIndex === 0 ? r.string() : this.lookup(nameIndex)[0];
    return [name, r.string()];
  }

  private lookup(index: number): Header {
    const entry = index <= STATIC_TABLE.length ? STATIC_TABLE[index - 1] : this.entries[index - FIRST_DYNAMIC_INDEX];
    if (entry === undefined) throw new HpackError(`index ${index} is in neither table (dynamic holds ${this.entries.length})`);
    return entry;
  }

  /** §4.4: evict oldest entries to make room; an entry larger than the table just empties it. */
  private add(field: Header): void {
    const size = entrySize(field);
    if (size > this.maxSize) {
      this.entries.length = 0;
      this.size = 0;
      return;
    }
    while (this.size + size > this.maxSize) this.size -= entrySize(this.entries.pop()!);
    this.entries.unshift(field);
    this.size += size;
  }

  private resize(maxSize: number): void {
    this.maxSize = maxSize;
    while (this.size > maxSize) this.size -= entrySize(this.entries.pop()!);
  }
}
