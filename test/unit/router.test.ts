import type { RoutePlan } from '../../src/config/plan';
import { hasDotSegment, hostOf, pathOf, routingPath } from '../../src/data/paths';
import { buildRouteTable, decide } from '../../src/data/router';

const proxy = { type: 'proxy', upstream: 'homeserver', maxBodyBytes: 1024 } as const;
const routes: RoutePlan[] = [
  { id: 'well-known:server', hosts: null, match: { kind: 'exact', path: '/.well-known/matrix/server' }, action: { type: 'well-known', which: 'server' } },
  { id: 'block:/_synapse/admin/', hosts: null, match: { kind: 'prefix', prefix: '/_synapse/admin/' }, action: { type: 'status', status: 404, errcode: 'M_NOT_FOUND', error: 'blocked' } },
  { id: 'proxy:/_matrix/', hosts: null, match: { kind: 'prefix', prefix: '/_matrix/' }, action: proxy },
  { id: 'only-b', hosts: ['b.example'], match: { kind: 'prefix', prefix: '/b-only/' }, action: proxy },
  { id: 'fallback', hosts: null, match: { kind: 'prefix', prefix: '/' }, action: { type: 'status', status: 404, errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } },
];
const table = buildRouteTable(['example.com', 'matrix.example.com', 'b.example'], routes);
const routeId = (target: string, host = 'example.com', method = 'GET'): string => {
  const d = decide(table, method, target, host);
  return d.kind === 'route' ? d.route.id : `reject ${d.status}`;
};

describe('paths', () => {
  test('pathOf cuts at the first ?', () => {
    expect(pathOf('/a/b?x=1?y')).toBe('/a/b');
    expect(pathOf('/a')).toBe('/a');
  });
  test.each([
    ['/_matrix/../_synapse/admin/v1/users', true],
    ['/_matrix/./client', true],
    ['/_matrix/%2e%2e/_synapse/admin/', true],
    ['/_matrix/%2E./x', true],
    ['/_matrix/..%2f_synapse/admin', true],
    ['/_matrix/..%5C_synapse/admin', true],
    ['/_matrix/..\\_synapse', true],
    ['/_matrix/client/..', true],
    ['/.well-known/matrix/server', false],
    ['/_matrix/media/v3/download/x/a..b', false],
    ['/_matrix/%2e%2ex/', false],
    ['/_matrix/client/v3/rooms/!r%3Ax/...', false],
  ])('hasDotSegment(%s) = %s', (path, expected) => {
    expect(hasDotSegment(path)).toBe(expected);
  });
  test('routingPath decodes unreserved escapes and collapses slashes, nothing else', () => {
    expect(routingPath('/_synapse/%61dmin/x')).toBe('/_synapse/admin/x');
    expect(routingPath('//_matrix//client')).toBe('/_matrix/client');
    expect(routingPath('/_matrix/a%2Fb%25c%3A')).toBe('/_matrix/a%2Fb%25c%3A');
  });
  test.each([
    ['Example.COM', 'example.com'],
    ['example.com:8448', 'example.com'],
    ['example.com.', 'example.com'],
    ['[::1]:8443', '::1'],
    ['127.0.0.1', '127.0.0.1'],
  ])('hostOf(%s) = %s', (authority, host) => {
    expect(hostOf(authority)).toBe(host);
  });
  test.each(['', 'example.com:', 'example.com:abc', '[::1', 'a b', 'user@example.com'])('hostOf(%j) is null', (authority) => {
    expect(hostOf(authority)).toBeNull();
  });
});

describe('decide', () => {
  test('well-known is an exact match', () => {
    expect(routeId('/.well-known/matrix/server')).toBe('well-known:server');
    expect(routeId('/.well-known/matrix/server/x')).toBe('fallback');
  });
  test('the first matching rule wins; block rules before proxy rules', () => {
    expect(routeId('/_matrix/client/versions')).toBe('proxy:/_matrix/');
    expect(routeId('/_synapse/admin/v1/users')).toBe('block:/_synapse/admin/');
    expect(routeId('/_synapse/%61dmin/v1/users')).toBe('block:/_synapse/admin/');
    expect(routeId('//_synapse//admin/v1/users')).toBe('block:/_synapse/admin/');
    expect(routeId('/_matrix')).toBe('fallback');
  });
  test('the three Host forms of one name route alike', () => {
    for (const host of ['example.com', 'example.com:8448', 'EXAMPLE.com:443']) {
      expect(routeId('/_matrix/key/v2/server', host)).toBe('proxy:/_matrix/');
    }
  });
  test('host-limited rules apply to their hosts only', () => {
    expect(routeId('/b-only/x', 'b.example')).toBe('only-b');
    expect(routeId('/b-only/x', 'example.com')).toBe('fallback');
  });
  test('rejections', () => {
    expect(routeId('/_matrix/x', 'evil.example')).toBe('reject 421');
    expect(decide(table, 'GET', '/_matrix/x', undefined)).toMatchObject({ kind: 'reject', status: 400 });
    expect(routeId('http://evil.example/_matrix/x')).toBe('reject 400');
    expect(routeId('*', 'example.com', 'OPTIONS')).toBe('reject 400');
    expect(routeId('evil.example:443', 'example.com', 'CONNECT')).toBe('reject 405');
    expect(routeId('/_matrix/../_synapse/admin/v1/users')).toBe('reject 400');
    expect(routeId('/_matrix/%2e%2e/_synapse/admin/v1/users')).toBe('reject 400');
  });
  test('the query takes no part in routing and dot-segment checks', () => {
    expect(routeId('/_matrix/x?next=/../_synapse/admin/')).toBe('proxy:/_matrix/');
  });
});
