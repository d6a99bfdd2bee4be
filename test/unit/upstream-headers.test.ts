/** The upstream request's header list (prepareUpstreamHeaders), table by table, without sockets. */
import { prepareUpstreamHeaders, relayedResponseHeaders, type UpstreamHeadersInput } from '../../src/data/proxy/headers';

const base: UpstreamHeadersInput = {
  rawHeaders: [],
  connection: undefined,
  h2: false,
  authority: undefined,
  peer: '192.0.2.7',
  trusted: false,
  requestIdHeader: 'x-request-id',
  newId: () => 'new-id',
};

function prepare(over: Partial<UpstreamHeadersInput>): { pairs: Array<[string, string]>; requestId: string | null } {
  const { headers, requestId } = prepareUpstreamHeaders({ ...base, ...over });
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i]!, headers[i + 1]!]);
  return { pairs, requestId };
}

const TAIL: Array<[string, string]> = [
  ['x-forwarded-for', '192.0.2.7'],
  ['x-forwarded-proto', 'https'],
  ['x-request-id', 'new-id'],
];

describe('prepareUpstreamHeaders', () => {
  test.each<[string, Partial<UpstreamHeadersInput>, Array<[string, string]>]>([
    ['order and case kept', { rawHeaders: ['Host', 'example.com:8448', 'X-B', '2', 'x-a', '1'] }, [['Host', 'example.com:8448'], ['X-B', '2'], ['x-a', '1'], ...TAIL]],
    [
      'hop-by-hop headers dropped',
      { rawHeaders: ['host', 'h', 'Connection', 'keep-alive', 'Keep-Alive', 'timeout=5', 'TE', 'trailers', 'Transfer-Encoding', 'chunked', 'Upgrade', 'h2c', 'Proxy-Authorization', 'Basic x', 'Expect', '100-continue', 'HTTP2-Settings', 'AAA'] },
      [['host', 'h'], ...TAIL],
    ],
    [
      'headers named in Connection dropped',
      { rawHeaders: ['host', 'h', 'connection', 'x-hop, close', 'x-hop', 'secret', 'x-kept', '1'], connection: 'x-hop, close' },
      [['host', 'h'], ['x-kept', '1'], ...TAIL],
    ],
    [
      'Connection never removes Host or Content-Length',
      { rawHeaders: ['Host', 'h', 'content-length', '3', 'Connection', 'Host, Content-Length'], connection: 'Host, Content-Length' },
      [['Host', 'h'], ['content-length', '3'], ...TAIL],
    ],
    [
      'every forwarding-header family from an untrusted peer dropped',
      {
        rawHeaders: [
          'host', 'h',
          'X-Forwarded-For', '1.2.3.4', 'X-Forwarded-Host', 'evil.example', 'X-Forwarded-Proto', 'http', 'X-Forwarded-Port', '80', 'X-Forwarded-Prefix', '/x',
          'Forwarded', 'for=1.2.3.4', 'X-Real-IP', '1.2.3.4', 'True-Client-IP', '1.2.3.4', 'CF-Connecting-IP', '1.2.3.4', 'Fastly-Client-IP', '1.2.3.4',
          'X-Client-IP', '1.2.3.4', 'X-Cluster-Client-IP', '1.2.3.4', 'Client-IP', '1.2.3.4', 'X-Original-URL', '/_synapse/admin', 'X-Rewrite-URL', '/_synapse/admin',
          'X-Original-Host', 'evil', 'X-Host', 'evil', 'X-Originating-IP', '1.2.3.4',
        ],
      },
      [['host', 'h'], ...TAIL],
    ],
    [
      'a trusted proxy keeps its forwarding headers; X-Forwarded-For is appended to and X-Forwarded-Proto set',
      { trusted: true, rawHeaders: ['host', 'h', 'X-Forwarded-For', '203.0.113.9', 'X-Forwarded-Host', 'a.example', 'X-Real-IP', '203.0.113.9', 'X-Forwarded-Proto', 'http'] },
      [['host', 'h'], ['X-Forwarded-Host', 'a.example'], ['X-Real-IP', '203.0.113.9'], ['x-forwarded-for', '203.0.113.9, 192.0.2.7'], ['x-forwarded-proto', 'https'], ['x-request-id', 'new-id']],
    ],
    [
      'several X-Forwarded-For from a trusted proxy joined in order',
      { trusted: true, rawHeaders: ['X-Forwarded-For', 'a', 'x-forwarded-for', 'b'] },
      [['x-forwarded-for', 'a, b, 192.0.2.7'], ['x-forwarded-proto', 'https'], ['x-request-id', 'new-id']],
    ],
    [
      'HTTP/2: pseudo-headers dropped, :authority becomes Host, cookies joined',
      { h2: true, authority: 'example.com', rawHeaders: [':method', 'GET', ':path', '/', ':authority', 'example.com', 'cookie', 'a=1', 'x-y', 'z', 'cookie', 'b=2'] },
      [['x-y', 'z'], ['host', 'example.com'], ['cookie', 'a=1; b=2'], ...TAIL],
    ],
    [
      'HTTP/2 with a Host header of its own keeps it and adds none',
      { h2: true, authority: 'a.example', rawHeaders: [':authority', 'a.example', 'host', 'b.example'] },
      [['host', 'b.example'], ...TAIL],
    ],
    ['request ids off: no header', { requestIdHeader: null, rawHeaders: ['host', 'h'] }, [['host', 'h'], TAIL[0]!, TAIL[1]!]],
  ])('%s', (_name, input, expected) => {
    expect(prepare(input).pairs).toEqual(expected);
  });

  test("request ids: a trusted proxy's short visible id is kept, anyone else's replaced", () => {
    expect(prepare({ trusted: true, rawHeaders: ['X-Request-Id', 'abc-123'] })).toEqual({
      pairs: [['x-forwarded-for', '192.0.2.7'], ['x-forwarded-proto', 'https'], ['x-request-id', 'abc-123']],
      requestId: 'abc-123',
    });
    expect(prepare({ rawHeaders: ['X-Request-Id', 'abc-123'] }).requestId).toBe('new-id');
    expect(prepare({ trusted: true, rawHeaders: ['X-Request-Id', 'has space'] }).requestId).toBe('new-id');
    expect(prepare({ trusted: true, rawHeaders: ['X-Request-Id', 'x'.repeat(201)] }).requestId).toBe('new-id');
  });
});

describe('relayedResponseHeaders', () => {
  test('hop-by-hop response headers and those named in Connection are not relayed', () => {
    expect(
      relayedResponseHeaders({
        'content-type': 'application/json',
        connection: 'keep-alive, x-internal',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        'x-internal': 'secret',
        'set-cookie': ['a=1', 'b=2'],
        absent: undefined,
      }),
    ).toEqual({ 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
  });
});
