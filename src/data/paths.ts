/**
 * Pure helpers on raw request-targets. The edge routes on a normalised copy of the path and
 * forwards the original bytes; nothing here rebuilds a target (no WHATWG URL).
 */

/** The path part of an origin-form target: everything before the first '?'. */
export function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

const DOT_CHECK_DECODE = /%(2e|2f|5c)/gi;
const DOT_CHECK_MAP: Record<string, string> = { '2e': '.', '2f': '/', '5c': '\\' };

/**
 * True when the path has a `.` or `..` segment, also when spelt with %2e, or separated by an
 * encoded slash or backslash (`/_matrix/..%2f_synapse/admin`): such a path means something else
 * to an upstream that resolves dot-segments, so it is never forwarded.
 */
export function hasDotSegment(path: string): boolean {
  if (path.indexOf('.') === -1 && path.indexOf('%') === -1) return false;
  const decoded = path.indexOf('%') === -1 ? path : path.replace(DOT_CHECK_DECODE, (_m, hex: string) => DOT_CHECK_MAP[hex.toLowerCase()]!);
  for (const segment of decoded.split(/[/\\]/)) {
    if (segment === '.' || segment === '..') return true;
  }
  return false;
}

const UNRESERVED_ESCAPE = /%([0-9a-fA-F]{2})/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * The path as routing sees it: percent-escapes of unreserved characters decoded (RFC 3986
 * §6.2.2.2: `/_synapse/%61dmin` is `/_synapse/admin`) and runs of '/' collapsed, so a blocked
 * prefix cannot be reached by spelling it differently. Cheap when there is nothing to do.
 */
export function routingPath(path: string): string {
  let p = path;
  if (p.indexOf('%') !== -1) {
    p = p.replace(UNRESERVED_ESCAPE, (m, hex: string) => {
      const c = String.fromCharCode(parseInt(hex, 16));
      return UNRESERVED.test(c) ? c : m;
    });
  }
  if (p.indexOf('//') !== -1) p = p.replace(/\/{2,}/g, '/');
  return p;
}

/**
 * Host name (lower case, no port, no trailing dot) from a Host header or :authority value,
 * or null when it is not a well-formed authority.
 */
export function hostOf(authority: string): string | null {
  if (authority.length === 0 || authority.length > 300) return null;
  let host: string;
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const end = authority.indexOf(']');
    if (end === -1) return null;
    const rest = authority.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
    host = authority.slice(1, end);
  } else {
    const colon = authority.indexOf(':');
    if (colon === -1) host = authority;
    else {
      if (!/^\d{1,5}$/.test(authority.slice(colon + 1))) return null;
      host = authority.slice(0, colon);
    }
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.length === 0 || /[^A-Za-z0-9.\-:_]/.test(host)) return null;
  return host.toLowerCase();
}
