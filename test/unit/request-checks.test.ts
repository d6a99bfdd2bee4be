/** What every HTTPS request must be before routing (src/data/request-checks.ts) and log-safe text. */
import { checkHeaderSize, checkMethod, h1HeaderBytes } from '../../src/data/request-checks';
import { logSafe } from '../../src/observe/log-safe';

describe('checkMethod', () => {
  test.each(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'])('%s is accepted', (method) => {
    expect(checkMethod(method)).toBeNull();
  });

  test.each(['get', 'Post', 'TRACE', 'PROPFIND', 'FOO', 'CONNECT'])('%s is refused with 405 and Allow', (method) => {
    expect(checkMethod(method)).toEqual({
      status: 405,
      errcode: 'M_UNRECOGNIZED',
      error: `The method ${method} is not supported here (methods are case-sensitive)`,
      headers: { allow: 'GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH' },
    });
  });

  test.each(['G ET', 'GET\r\n', '', 'GÉT', '(GET)'])('%j is not a method: 400', (method) => {
    expect(checkMethod(method)?.status).toBe(400);
  });
});

describe('header size', () => {
  test('an HTTP/2 header list is counted as HTTP/1.1 would carry it', () => {
    // "GET /x HTTP/1.1\r\n" + "a: b\r\n" + "host: h\r\n" + "\r\n"
    expect(h1HeaderBytes([':method', 'GET', ':path', '/x', ':authority', 'h', 'a', 'b'], 'GET', '/x', 'h')).toBe(17 + 6 + 9 + 2);
    // An explicit host header is counted once.
    expect(h1HeaderBytes(['host', 'h'], 'GET', '/x', 'h')).toBe(17 + 9 + 2);
  });

  test('over the limit is 431 M_TOO_LARGE; at the limit passes', () => {
    expect(checkHeaderSize(32768, 32768)).toBeNull();
    expect(checkHeaderSize(32769, 32768)).toEqual({ status: 431, errcode: 'M_TOO_LARGE', error: "The request's headers are larger than this server accepts (32768 bytes)" });
  });
});

describe('logSafe', () => {
  test('control characters, C1, line separators and bidi overrides become visible escapes', () => {
    expect(logSafe('matrix.example.com')).toBe('matrix.example.com');
    expect(logSafe('a\u009b31mb')).toBe('a\\u009b31mb');
    expect(logSafe('x\r\ny\u0000\u007f')).toBe('x\\u000d\\u000ay\\u0000\\u007f');
    expect(logSafe('\u202egnp.exe\u2028')).toBe('\\u202egnp.exe\\u2028');
    expect(logSafe('é ✓ 😀')).toBe('é ✓ 😀');
    expect(logSafe(undefined)).toBeUndefined();
  });
});
