import { formatDuration, formatSize, parseDuration, parseSize } from '../../src/config/units';

describe('parseSize', () => {
  test.each([
    ['50MiB', 50 * 1024 * 1024],
    ['10MB', 10_000_000],
    ['512KiB', 512 * 1024],
    ['1GiB', 1024 ** 3],
    ['2gb', 2_000_000_000],
    ['100B', 100],
    ['1.5KiB', 1536],
    ['64 KiB', 65536],
    ['4096', 4096],
    [4096, 4096],
    [0, 0],
  ])('%p is %d bytes', (input, bytes) => {
    expect(parseSize(input)).toEqual({ ok: true, value: bytes });
  });

  test.each([
    ['10 potatoes', "unknown size unit 'potatoes' in '10 potatoes'; use B, KB, MB, GB, KiB, MiB or GiB"],
    ['10M', "unknown size unit 'M' in '10M'; use B, KB, MB, GB, KiB, MiB or GiB"],
    ['-5MiB', "sizes cannot be negative; got '-5MiB'"],
    ['1.5', "a size without a unit is a whole number of bytes; got '1.5'"],
    ['MiB', "expected a size like 50MiB, 10MB, 512KiB or a whole number of bytes; got 'MiB'"],
    [1.5, 'expected a size like 50MiB, 10MB, 512KiB or a whole number of bytes; got 1.5'],
    [-1, 'expected a size like 50MiB, 10MB, 512KiB or a whole number of bytes; got -1'],
    [true, 'expected a size like 50MiB, 10MB, 512KiB or a whole number of bytes; got true'],
    [null, 'expected a size like 50MiB, 10MB, 512KiB or a whole number of bytes; got an empty value'],
  ])('%p is rejected', (input, error) => {
    expect(parseSize(input)).toEqual({ ok: false, error });
  });

  test('a size beyond safe integers is rejected', () => {
    expect(parseSize('9999999999TiB')).toEqual({ ok: false, error: "'9999999999TiB' is too large" });
  });
});

describe('parseDuration', () => {
  test.each([
    ['330s', 330_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['7d', 604_800_000],
    ['250ms', 250],
    ['1.5h', 5_400_000],
    ['30', 30_000],
    [30, 30_000],
    [0.5, 500],
    ['0s', 0],
    [' 10s ', 10_000],
  ])('%p is %d ms', (input, ms) => {
    expect(parseDuration(input)).toEqual({ ok: true, value: ms });
  });

  test.each([
    ['5min', "unknown duration unit 'min' in '5min'; use ms, s, m, h or d"],
    ['5 minutes', "unknown duration unit 'minutes' in '5 minutes'; use ms, s, m, h or d"],
    ['-5s', "durations cannot be negative; got '-5s'"],
    [-1, 'durations cannot be negative; got -1'],
    ['1h30m', "expected a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds); got '1h30m'"],
    ['soon', "expected a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds); got 'soon'"],
    [[1], 'expected a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds); got a list'],
    [Infinity, 'expected a duration like 250ms, 330s, 5m, 1h, 7d (a plain number is seconds); got Infinity'],
  ])('%p is rejected', (input, error) => {
    expect(parseDuration(input)).toEqual({ ok: false, error });
  });
});

describe('formatting', () => {
  test.each([
    [604_800_000, '7d'],
    [3_600_000, '1h'],
    [330_000, '330s'],
    [300_000, '5m'],
    [250, '250ms'],
    [0, '0s'],
  ])('duration %d ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(text)).toEqual({ ok: true, value: ms });
  });

  test.each([
    [50 * 1024 * 1024, '50MiB'],
    [10_000_000, '10MB'],
    [512 * 1024, '512KiB'],
    [1000, '1KB'],
    [1234, '1234 bytes'],
  ])('size %d is %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });
});
