/**
 * The router: a small interpreter of the plan's ordered route list. Pure — it takes the request
 * line and the authority, and says what to do; handlers do it.
 */
import type { RoutePlan } from '../config/plan';
import { hasDotSegment, hostOf, pathOf, routingPath } from './paths';

export interface RouteTable {
  /** Served host names, lower case, no port. */
  readonly names: ReadonlySet<string>;
  readonly routes: readonly RoutePlan[];
}

export type Decision =
  | { readonly kind: 'route'; readonly route: RoutePlan; readonly host: string }
  | { readonly kind: 'reject'; readonly status: number; readonly errcode: string; readonly error: string };

function reject(status: number, errcode: string, error: string): Decision {
  return { kind: 'reject', status, errcode, error };
}

export function buildRouteTable(names: readonly string[], routes: readonly RoutePlan[]): RouteTable {
  return { names: new Set(names.map((n) => n.toLowerCase())), routes };
}

/**
 * Decide what a request gets.
 * @param method   request method as received
 * @param target   the request-target exactly as received
 * @param authority Host header (HTTP/1.1) or :authority (HTTP/2); undefined when absent
 */
export function decide(table: RouteTable, method: string, target: string, authority: string | undefined): Decision {
  if (method === 'CONNECT') return reject(405, 'M_UNRECOGNIZED', 'CONNECT is not supported: this is not a forward proxy');
  if (target.charCodeAt(0) !== 47 /* / */) {
    return reject(400, 'M_UNRECOGNIZED', 'Only origin-form request targets (starting with "/") are accepted: this is not a forward proxy');
  }
  if (authority === undefined || authority === '') return reject(400, 'M_UNRECOGNIZED', 'Missing Host header');
  const host = hostOf(authority);
  if (host === null) return reject(400, 'M_UNRECOGNIZED', 'Malformed Host header');
  if (!table.names.has(host)) return reject(421, 'M_UNRECOGNIZED', `This server does not serve the host '${host}'`);
  const rawPath = pathOf(target);
  if (hasDotSegment(rawPath)) return reject(400, 'M_UNRECOGNIZED', 'Paths with dot-segments ("." or "..", also percent-encoded) are not accepted');
  const path = routingPath(rawPath);
  for (const route of table.routes) {
    if (route.hosts !== null && !route.hosts.includes(host)) continue;
    const m = route.match;
    if (m.kind === 'exact' ? path === m.path : path.startsWith(m.prefix)) return { kind: 'route', route, host };
  }
  return reject(404, 'M_UNRECOGNIZED', 'Unrecognized request');
}
