/**
 * What every HTTPS request must be before routing looks at it, the same on HTTP/1.1 and HTTP/2:
 * a method HTTP/1.1 can carry to the homeserver, and a header section within the one configured
 * size. Pure: data in, a refusal (or null) out.
 */

/** Methods the edge forwards or answers. Methods are case-sensitive: `get` is not GET. */
export const ALLOWED_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);
export const ALLOW_HEADER = [...ALLOWED_METHODS].join(', ');

/** RFC 9110 §5.6.2 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export interface Refusal {
  readonly status: number;
  readonly errcode: string;
  readonly error: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export function checkMethod(method: string): Refusal | null {
  if (ALLOWED_METHODS.has(method)) return null;
  if (!TOKEN.test(method)) return { status: 400, errcode: 'M_UNRECOGNIZED', error: 'Malformed request method' };
  return {
    status: 405,
    errcode: 'M_UNRECOGNIZED',
    error: `The method ${method} is not supported here (methods are case-sensitive)`,
    headers: { allow: ALLOW_HEADER },
  };
}

/**
 * The size of an HTTP/2 request's header section as HTTP/1.1 would carry it — request line, one
 * `name: value` line per field, Host from `:authority`, the blank line — so one limit means the
 * same on both protocols (Node's HTTP/1.1 parser counts these bytes).
 */
export function h1HeaderBytes(rawHeaders: readonly string[], method: string, target: string, authority: string | undefined): number {
  let bytes = method.length + 1 + target.length + 11; // " HTTP/1.1\r\n"
  let host = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    if (name === 'host') host = true;
    bytes += name.length + rawHeaders[i + 1]!.length + 4;
  }
  if (!host && authority !== undefined) bytes += authority.length + 8;
  return bytes + 2;
}

export function checkHeaderSize(bytes: number, limit: number): Refusal | null {
  if (bytes <= limit) return null;
  return { status: 431, errcode: 'M_TOO_LARGE', error: `The request's headers are larger than this server accepts (${limit} bytes)` };
}
